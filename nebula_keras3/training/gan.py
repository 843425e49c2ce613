"""``GAN(keras.Model)``: a generator and a discriminator trained by ``fit``.

The backend-specific ``train_step`` lives in ``nebula_keras3.training.steps``
(one small module per backend, picked at import time); this class holds what
the three share: models, losses, latent sampling, optimizers, (de)serialisation.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from nebula_keras3.sampling.grid import to_uint8
from nebula_keras3.sampling.latents import batch_seeds, latents_from_seeds
from nebula_keras3.training import steps


def reference_adam(learning_rate=2e-4, beta_1=0.5, beta_2=0.999, name=None):
    """torch.optim.Adam as pytorch/examples' DCGAN uses it (eps 1e-8, not Keras' 1e-7)."""
    return keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=1e-8, name=name)


def _unwrapped(optimizer):
    """The optimizer a LossScaleOptimizer wraps (fp16), else the optimizer itself."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


class _OptimizerHolder(keras.optimizers.MultiOptimizer):
    """Holds D's and G's optimizers and counts GAN steps; the train steps apply them.

    ``variables``: its step counter, both Adams' slots, then the loss scale and its
    counter of each ``LossScaleOptimizer`` (fp16) — everything JAX's ``fit`` must
    thread through the step and a checkpoint must hold. (``MultiOptimizer`` itself
    refuses a LossScaleOptimizer, so it is given the inner Adams.)
    """

    def __init__(self, selector, loss_scalers, name=None):
        super().__init__(selector, name=name)
        self._loss_scalers = list(loss_scalers)

    @property
    def variables(self):
        held = super().variables
        for scaler in self._loss_scalers:
            inner = {id(v) for v in scaler.inner_optimizer.variables}
            held.extend(v for v in scaler.variables if id(v) not in inner)
        return held


class _SubModelSelector:
    """MultiOptimizer map: D's variables -> d_optimizer, everything else -> g_optimizer."""

    def __init__(self, d_variables, d_optimizer, g_optimizer):
        self._d_ids = {id(v) for v in d_variables}
        self._d_optimizer, self._g_optimizer = d_optimizer, g_optimizer

    def __call__(self, variable):
        return self._d_optimizer if id(variable) in self._d_ids else self._g_optimizer


@keras.saving.register_keras_serializable(package="nebula_keras3")
class GAN(keras.Model):
    """Generator + discriminator with an overridden, per-backend ``train_step``.

    Args:
        generator: a Keras model ``z [B, latent_dim] -> images [B, S, S, 3]`` in [-1, 1].
        discriminator: a Keras model ``images -> logits [B, 1]``.
        seed: seed of the training-time latent generator (works inside jit).

    ``compile(d_optimizer, g_optimizer, loss)`` then ``fit(batches)``; each step
    logs ``d_loss``, ``g_loss``, ``d_real`` = D(x) and ``d_fake`` = D(G(z)).
    """

    train_step = steps.train_step

    def __init__(self, generator, discriminator, seed=None, **kwargs):
        kwargs.setdefault("name", "gan")
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.seed = seed
        self.latent_dim = int(generator.input_shape[-1])
        self.seed_generator = keras.random.SeedGenerator(seed, name="latent_seed")
        # Both sub-models are built from keras.Input: nothing for fit() to infer.
        self.built = True

    def call(self, z, training=False):
        return self.generator(z, training=training)

    # -- shared by the three train steps ------------------------------------------------
    def sample_latents(self, batch_size):
        """z ~ N(0, I) of shape [batch_size, latent_dim] from the GAN's seed generator."""
        return keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)

    def real_fake_loss(self, real_logits, fake_logits):
        """D's loss: BCE(1, D(x)) + BCE(0, D(G(z)))."""
        return self.gan_loss(ops.ones_like(real_logits), real_logits) + self.gan_loss(
            ops.zeros_like(fake_logits), fake_logits
        )

    def generator_loss(self, gen_logits):
        """G's non-saturating loss: BCE(1, D(G(z)))."""
        return self.gan_loss(ops.ones_like(gen_logits), gen_logits)

    # -- compile ---------------------------------------------------------------------
    def compile(self, d_optimizer=None, g_optimizer=None, loss=None, **kwargs):
        """Set both optimizers (default: the reference's Adam) and the loss (BCE on logits)."""
        self.d_optimizer = d_optimizer or reference_adam(name="d_adam")
        self.g_optimizer = g_optimizer or reference_adam(name="g_adam")
        self.gan_loss = keras.losses.get(loss) if loss is not None else (
            keras.losses.BinaryCrossentropy(from_logits=True)
        )
        loss_scalers = [
            o for o in (self.d_optimizer, self.g_optimizer) if o is not _unwrapped(o)
        ]
        holder = _OptimizerHolder(
            _SubModelSelector(
                self.discriminator.trainable_variables,
                _unwrapped(self.d_optimizer),
                _unwrapped(self.g_optimizer),
            ),
            loss_scalers,
            name="gan_optimizers",
        )
        super().compile(optimizer=holder, **kwargs)
        # Build both optimizers now so checkpoints can be restored before fit().
        for optimizer, model in ((self.d_optimizer, self.discriminator), (self.g_optimizer, self.generator)):
            optimizer.build(model.trainable_variables)
        self.optimizer.build(self.trainable_variables)

    def get_compile_config(self):
        if not getattr(self, "compiled", False):
            return None
        return {
            "d_optimizer": keras.saving.serialize_keras_object(self.d_optimizer),
            "g_optimizer": keras.saving.serialize_keras_object(self.g_optimizer),
            "loss": keras.saving.serialize_keras_object(self.gan_loss),
        }

    def compile_from_config(self, config):
        self.compile(
            d_optimizer=keras.saving.deserialize_keras_object(config["d_optimizer"]),
            g_optimizer=keras.saving.deserialize_keras_object(config["g_optimizer"]),
            loss=keras.saving.deserialize_keras_object(config["loss"]),
        )

    @property
    def steps_done(self) -> int:
        """GAN steps taken (each = one D update and one G update)."""
        return int(ops.convert_to_numpy(self.optimizer.iterations)) if self.compiled else 0

    # -- inference -------------------------------------------------------------------
    def generate(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` uint8 images [n, S, S, 3] for image seeds ``seed .. seed+n-1``.

        Uses the portable latent draw, so the same seed gives the same image as
        ``nebula sample`` and the exported models.
        """
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        z = latents_from_seeds(batch_seeds(seed, n), self.latent_dim)
        images = self.generator.predict_on_batch(z)
        return to_uint8(ops.convert_to_numpy(images))

    # -- serialisation ---------------------------------------------------------------
    def get_config(self):
        return {
            "generator": keras.saving.serialize_keras_object(self.generator),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "seed": self.seed,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["generator"] = keras.saving.deserialize_keras_object(config["generator"])
        config["discriminator"] = keras.saving.deserialize_keras_object(config["discriminator"])
        return cls(**config)
