"""The GAN's train step, one module per backend, picked once at import time.

Like ``keras/src/backend/{jax,tensorflow,torch}/trainer.py``: the three steps sit
side by side and do the same thing in the same order (pytorch/examples' DCGAN):

1. z ~ N(0, I) from the GAN's seed generator; fake = G(z)            (one G forward)
2. D update, maximising log D(x) + log(1 - D(G(z))):
       d_loss = BCE(1, D(real)) + BCE(0, D(stop_grad(fake)))       (two BN batches)
3. G update with the freshly updated D, maximising log D(G(z)):
       g_loss = BCE(1, D(fake))
and report d_loss, g_loss, D(x) = mean sigmoid(D(real)) and D(G(z)) = mean
sigmoid(D(fake)) as seen by the D update.

Each optimizer keeps its own state and step counter; the GAN's ``optimizer`` is
a ``keras.optimizers.MultiOptimizer`` that only *holds* both (so JAX's ``fit``
threads both states through the jitted step) and counts GAN steps.
"""

import keras

_backend = keras.backend.backend()
if _backend == "jax":
    from nebula_keras3.training.steps.jax import train_step
elif _backend == "tensorflow":
    from nebula_keras3.training.steps.tensorflow import train_step
elif _backend == "torch":
    from nebula_keras3.training.steps.torch import train_step
else:  # pragma: no cover - Keras would have refused the backend already
    raise ImportError(f"nebula_keras3 supports jax, tensorflow and torch, not {_backend!r}")

__all__ = ["train_step"]
