"""nebula-keras3: train nebula-image GANs with one Keras 3 codebase; export and serve them.

Importing the package is cheap (no Keras); import submodules for the API.
"""

__version__ = "0.1.0"
