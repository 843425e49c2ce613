"""``GAN(keras.Model)``: a generator and a discriminator trained by ``fit``.

The backend-specific ``train_step`` lives in ``nebula_keras3.training.steps``
(one small module per backend, picked at import time); this class holds what
the three share: models, random draws, augmentation, losses, R1, EMA, logs,
optimizers, (de)serialisation. The step files hold only gradient mechanics.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from nebula_keras3.sampling.grid import to_uint8
from nebula_keras3.sampling.latents import batch_seeds, latents_from_seeds
from nebula_keras3.training import steps
from nebula_keras3.training.augment import ADA_LOG, DiffAugment, ada_adjust
from nebula_keras3.training.config import ADA_DEFAULT_POLICY, ADA_KIMG, LOSSES


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
        discriminator: a Keras model ``images -> logits [B, 1]`` (or [B, k], one per scale: the losses average them).
        seed: seed of the training-time random draws (latents, augmentation; works inside jit).
        loss: "bce" (non-saturating, DCGAN's) or "hinge".
        augment: DiffAugment policy, e.g. "color,translation,cutout"; "" = off.
        r1_gamma: weight of the R1 penalty on D's input gradient at (augmented) reals; 0 = off.
        r1_every: lazy R1 (StyleGAN2): every k-th step adds ``(gamma / 2) * k * E||grad_x D(x)||^2``.
        ema_decay: keep an exponential moving average of G's weights and BatchNorm
            statistics (``generator_ema``); 0 = off. Decay ramps up as min(decay, (1 + t) / (10 + t)).
        ada_target: adaptive augmentation (StyleGAN2-ADA) toward E[sign(D(real))] = ada_target;
            0 = off (the policy's ops always on). On, each op of ``augment`` (or of
            ``ADA_DEFAULT_POLICY`` when ``augment`` is "") is applied per image with probability
            ``ada_p``, a non-trainable variable the train step adjusts (``augment.ada_adjust``).
        ada_kimg: thousands of images over which ``ada_p`` can go from 0 to 1.

    ``compile(d_optimizer, g_optimizer)`` then ``fit(batches)``; each step logs
    ``d_loss`` (adversarial part), ``g_loss``, ``d_real`` = mean sigmoid D(x) and
    ``d_fake`` = mean sigmoid D(G(z)) as seen by the D update; with ADA also ``ada_p``
    (the augmentation probability after the step).
    """

    train_step = steps.train_step

    def __init__(self, generator, discriminator, seed=None, loss="bce", augment="", r1_gamma=0.0, r1_every=1,
                 ema_decay=0.0, ada_target=0.0, ada_kimg=ADA_KIMG, **kwargs):
        kwargs.setdefault("name", "gan")
        super().__init__(**kwargs)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if r1_gamma < 0 or int(r1_every) < 1:
            raise ValueError(f"need r1_gamma >= 0 and r1_every >= 1, got {r1_gamma} and {r1_every}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if not 0.0 <= ada_target <= 1.0 or not ada_kimg > 0:
            raise ValueError(f"need ada_target in [0, 1] (0 = off) and ada_kimg > 0, got {ada_target} and {ada_kimg}")
        self.generator = generator
        self.discriminator = discriminator
        self.seed = seed
        self.loss_name = loss
        self.augment_policy = augment or ""
        self.ada_target = float(ada_target)
        self.ada_kimg = float(ada_kimg)
        self.diffaugment = DiffAugment(self.augment_policy or (ADA_DEFAULT_POLICY if self.uses_ada else ""))
        self.r1_gamma = float(r1_gamma)
        self.r1_every = int(r1_every)
        self.ema_decay = float(ema_decay)
        self.latent_dim = int(generator.input_shape[-1])
        self.image_size = int(generator.output_shape[1])
        self.seed_generator = keras.random.SeedGenerator(seed, name="latent_seed")
        # ADA's state, non-trainable so it rides in checkpoints and through JAX's jitted step:
        # p, and the sum of sign(D(real)) and the image count since p was last adjusted.
        self.ada_p = self.ada_sign_sum = self.ada_count = None
        if self.uses_ada:
            with keras.name_scope("ada"):
                self.ada_p, self.ada_sign_sum, self.ada_count = (
                    keras.Variable(0.0, dtype="float32", trainable=False, name=name)
                    for name in ("p", "sign_sum", "count")
                )
        # EMA copy of G: same config, its own (non-trainable) variables, so it lives in
        # gan.variables and hence in checkpoints; starts equal to G.
        self.generator_ema = None
        if self.ema_decay > 0:
            name = f"{generator.name}_ema"
            with keras.name_scope(name):  # variable paths generator_ema/..., distinct from G's
                self.generator_ema = generator.__class__.from_config({**generator.get_config(), "name": name})
            self.generator_ema.trainable = False
            for e, v in zip(self.generator_ema.variables, generator.variables):
                e.assign(np.array(ops.convert_to_numpy(v)))  # a copy: JAX must not see one buffer twice
        # Both sub-models are built from keras.Input: nothing for fit() to infer.
        self.built = True

    def call(self, z, training=False):
        return self.generator(z, training=training)

    @property
    def inference_generator(self):
        """The generator to sample from: the EMA copy when enabled, else G."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def export_generator(self):
        """A standalone generator with the inference weights, named and configured like G."""
        if self.generator_ema is None:
            return self.generator
        clone = self.generator.__class__.from_config(self.generator.get_config())
        for c, e in zip(clone.variables, self.generator_ema.variables):
            c.assign(e.value)
        return clone

    # -- shared by the three train steps ------------------------------------------------
    @staticmethod
    def unpack(data):
        """The real batch [B, S, S, 3] in [-1, 1] from what fit hands the step."""
        return data[0] if isinstance(data, (tuple, list)) else data

    def sample_latents(self, batch_size):
        """z ~ N(0, I) of shape [batch_size, latent_dim] from the GAN's seed generator."""
        return keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)

    def draw(self, batch_size, ada_p=None):
        """Every random draw of one step, in a fixed order, from the GAN's seed generator.

        ``z`` [B, latent]; DiffAugment parameters for the reals and fakes of the D update
        and the fakes of the G update (empty dicts when augmentation is off); with ADA
        also each op's per-image gates, on with probability ``ada_p`` (default: the
        variable's value; JAX passes the value it threads). Under JAX the caller wraps
        this in a StatelessScope holding the seed state.
        """
        z = self.sample_latents(batch_size)
        if not self.diffaugment:
            return {"z": z, "real": {}, "fake": {}, "gen": {}}
        if self.uses_ada and ada_p is None:
            ada_p = self.ada_p.value
        draws = {"z": z}
        for key in ("real", "fake", "gen"):
            draws[key] = self.diffaugment.draw(batch_size, self.image_size, self.seed_generator,
                                               p=ada_p if self.uses_ada else None)
        return draws

    def augment_with(self, images, params):
        """DiffAugment ``images`` with drawn ``params`` (identity when augmentation is off)."""
        return self.diffaugment.apply(images, params) if self.diffaugment else images

    def real_fake_loss(self, real_logits, fake_logits):
        """D's adversarial loss: BCE(1, D(x)) + BCE(0, D(G(z))), or hinge E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
        if self.loss_name == "hinge":
            return ops.mean(ops.relu(1.0 - real_logits)) + ops.mean(ops.relu(1.0 + fake_logits))
        return self.gan_loss(ops.ones_like(real_logits), real_logits) + self.gan_loss(
            ops.zeros_like(fake_logits), fake_logits
        )

    def generator_loss(self, gen_logits):
        """G's loss: non-saturating BCE(1, D(G(z))), or hinge -E[D(G(z))]."""
        if self.loss_name == "hinge":
            return -ops.mean(gen_logits)
        return self.gan_loss(ops.ones_like(gen_logits), gen_logits)

    @property
    def uses_ada(self) -> bool:
        return self.ada_target > 0

    @property
    def ada_variables(self) -> tuple:
        """``(ada_p, ada_sign_sum, ada_count)``, or () when ADA is off."""
        return (self.ada_p, self.ada_sign_sum, self.ada_count) if self.uses_ada else ()

    def ada_next(self, ada_values, step, real_logits):
        """``ada_variables``' values after step ``step`` saw ``real_logits`` (``augment.ada_adjust``)."""
        return ada_adjust(*ada_values, step, real_logits, self.ada_target, self.ada_kimg)

    def update_ada(self, step, real_logits):
        """Stateful ADA update (TF and torch; JAX threads ``ada_next``); returns the new p, None when off."""
        if not self.uses_ada:
            return None
        new = self.ada_next([v.value for v in self.ada_variables], step, real_logits)
        for v, x in zip(self.ada_variables, new):
            v.assign(x)
        return new[0]

    @property
    def uses_r1(self) -> bool:
        return self.r1_gamma > 0

    def r1_due(self, step):
        """Whether step ``step`` (GAN steps done before it) adds the lazy R1 penalty."""
        return ops.equal(ops.mod(step, self.r1_every), 0)

    def r1_penalty(self, input_grads):
        """(gamma / 2) * k * E_batch ||grad_x D(x)||^2 from ``input_grads`` [B, S, S, 3]."""
        sq = ops.sum(ops.square(input_grads), axis=(1, 2, 3))  # [B]
        return (0.5 * self.r1_gamma * self.r1_every) * ops.mean(sq)

    def ema_decay_at(self, step):
        """EMA decay for the update after step ``step``: min(decay, (1 + t) / (10 + t))."""
        t = ops.cast(step, "float32")
        return ops.minimum(self.ema_decay, (1.0 + t) / (10.0 + t))

    @staticmethod
    def ema_blend(average, value, decay):
        """decay * average + (1 - decay) * value (weights and BatchNorm statistics alike)."""
        return decay * average + (1.0 - decay) * ops.cast(value, average.dtype)

    def update_ema(self, step):
        """Stateful EMA update (TF and torch; JAX applies ``ema_blend`` to its state values)."""
        if self.generator_ema is None:
            return
        decay = self.ema_decay_at(step)
        for e, v in zip(self.generator_ema.variables, self.generator.variables):
            e.assign(self.ema_blend(e.value, v.value, decay))

    @staticmethod
    def step_logs(d_loss, g_loss, real_logits, fake_logits, ada_p=None):
        logs = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real": ops.mean(ops.sigmoid(real_logits)),
            "d_fake": ops.mean(ops.sigmoid(fake_logits)),
        }
        if ada_p is not None:
            logs[ADA_LOG] = ada_p
        return logs

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
        images = self.inference_generator.predict_on_batch(z)
        return to_uint8(ops.convert_to_numpy(images))

    # -- serialisation ---------------------------------------------------------------
    def get_config(self):
        return {
            "generator": keras.saving.serialize_keras_object(self.generator),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "seed": self.seed,
            "loss": self.loss_name,
            "augment": self.augment_policy,
            "r1_gamma": self.r1_gamma,
            "r1_every": self.r1_every,
            "ema_decay": self.ema_decay,
            "ada_target": self.ada_target,
            "ada_kimg": self.ada_kimg,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["generator"] = keras.saving.deserialize_keras_object(config["generator"])
        config["discriminator"] = keras.saving.deserialize_keras_object(config["discriminator"])
        return cls(**config)
