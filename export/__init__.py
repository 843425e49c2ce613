"""Export a trained generator: TF Serving SavedModel and ONNX (``nebula export``).

Importing this package is cheap; see :mod:`nebula_keras3.export.api`.
"""
