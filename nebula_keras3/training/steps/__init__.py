"""The GAN's train step, one module per backend, picked once at import time.

Like ``keras/src/backend/{jax,tensorflow,torch}/trainer.py``: the three steps sit
side by side, do the same thing in the same order, and hold only their gradient
mechanics. Everything else is one set of ``GAN`` methods they all call
(``unpack``, ``draw``, ``augment_with``, ``real_fake_loss``, ``generator_loss``,
``r1_due``/``r1_penalty``, ``ada_next``/``update_ada``, ``ema_decay_at``/``ema_blend``, ``step_logs``):

1. draws = z ~ N(0, I) and the DiffAugment parameters (with ADA also each op's
   per-image gate, on with probability p), from the GAN's seed generator;
   fake = G(z)                                                        (one G forward)
2. D update on aug(real) and aug(stop_grad(fake)):
       d_loss = BCE(1, D(real)) + BCE(0, D(fake))          (loss="bce", pytorch DCGAN)
              | E[relu(1 - D(real))] + E[relu(1 + D(fake))]          (loss="hinge")
   plus, on every r1_every-th step when r1_gamma > 0, the lazy R1 penalty
       (gamma / 2) * r1_every * E||grad_x D(aug(real))||^2       (input gradients:
   TF nested tape, torch autograd.grad(create_graph=True), JAX nested grad; other
   steps skip it through tf.cond / a python if / lax.cond); then, with ADA
   (ada_target > 0), sign(D(aug(real))) of this pass is added to the accumulator and
   every ADA_INTERVAL-th step moves p (the per-image probability of each augmentation
   op, used by the next step's draws) toward E[sign(D(real))] = ada_target
3. G update through the freshly updated D on aug(fake) with fresh parameters:
       g_loss = BCE(1, D(fake)) | -E[D(fake)]
4. EMA (ema_decay > 0): every variable of ``generator_ema`` (weights and BatchNorm
   statistics) <- d * ema + (1 - d) * G's, d = min(ema_decay, (1 + t) / (10 + t))
and report d_loss (adversarial part), g_loss, D(x) = mean sigmoid(D(real)) and
D(G(z)) = mean sigmoid(D(fake)) as seen by the D update (and ada_p with ADA).

Each optimizer keeps its own state and step counter; the GAN's ``optimizer`` is
a ``keras.optimizers.MultiOptimizer`` that only *holds* both (so JAX's ``fit``
threads both states through the jitted step) and counts GAN steps (t above).
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
