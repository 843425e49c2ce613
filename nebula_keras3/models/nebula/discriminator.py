"""ResNet discriminator (SNGAN-style): RGB image in [-1, 1] -> one real/fake logit."""

from __future__ import annotations

import keras

from nebula_keras3.export import layout  # exported tensor names: the generator output IMAGES is the D input
from nebula_keras3.models.common import Conv2D, SpectralNormalization, seeded
from nebula_keras3.models.nebula.layers import GlobalSumPooling2D
from nebula_keras3.models.options import num_stages

MAX_WIDTH_MULT = 8  # ndf * 8 at most (the 4x4 blocks)


def discriminator_widths(image_size: int, ndf: int) -> list[int]:
    """Output channels of the residual blocks, full size first: 64 px, ndf 32 -> [32, 64, 128, 256]."""
    return [ndf * min(2**i, MAX_WIDTH_MULT) for i in range(num_stages(image_size))]


@keras.saving.register_keras_serializable(package="nebula_keras3")
class ResNetDiscriminator(keras.Model):
    """Residual blocks with average-pool downsampling, LeakyReLU 0.2, no BatchNorm.

    Shapes at 64 px, ndf=32 (channels last):
        x [B, 64, 64, 3]
        optimized block: conv3x3 -> lrelu -> avgpool -> conv3x3   (+ avgpool -> conv1x1)  -> [B, 32, 32, 32]
        block: lrelu -> conv3x3 -> lrelu -> avgpool -> conv3x3    (+ avgpool -> conv1x1)  -> [B, 16, 16, 64]
                                                                                        -> [B, 8, 8, 128]
                                                                                        -> [B, 4, 4, 256]
        lrelu -> sum over H, W [B, 256] -> dense                                        -> logit [B, 1]
    Unlike SNGAN's blocks the second conv runs after the pooling (a quarter of the
    pixels), to keep its step close to a DCGAN-64 step on CPU (docs/RESULTS.md,
    "Training throughput per backend").

    Args:
        image_size: 32, 64, 128 or 256.
        ndf: channels of the first block (doubling per block, up to ndf * 8).
        spectral_norm: wrap every conv and the dense in ``SpectralNormalization``.
        seed: seed for the weight initialisers (None: Keras' global RNG).
    """

    def __init__(self, image_size=64, ndf=32, spectral_norm=True, seed=None, **kwargs):
        counter = iter(range(10_000))

        def conv(filters, size, name):
            layer = Conv2D(
                filters, size, padding="same",
                kernel_initializer=keras.initializers.GlorotUniform(seeded(seed, next(counter))), name=name,
            )
            return SpectralNormalization(layer, name=f"{name}_sn") if spectral_norm else layer

        def lrelu(name):
            return keras.layers.LeakyReLU(negative_slope=0.2, name=name)

        def pool(name):
            return keras.layers.AveragePooling2D(2, name=name)

        images = keras.Input(shape=(image_size, image_size, 3), name=layout.IMAGES)
        x, c_in = images, 3
        for i, c in enumerate(discriminator_widths(image_size, ndf)):
            name = f"block{i}"
            h = x if i == 0 else lrelu(f"{name}_lrelu0")(x)  # "optimized" first block: no pre-activation
            h = conv(c, 3, f"{name}_conv0")(h)  # [B, r, r, c]
            h = lrelu(f"{name}_lrelu1")(h)
            h = pool(f"{name}_pool")(h)  # [B, r/2, r/2, c]
            h = conv(c, 3, f"{name}_conv1")(h)
            s = pool(f"{name}_skip_pool")(x)  # [B, r/2, r/2, c_in]
            if c_in != c:
                s = conv(c, 1, f"{name}_skip_conv")(s)
            x, c_in = keras.layers.Add(name=f"{name}_add")([h, s]), c  # [B, r/2, r/2, c]
        x = lrelu("head_lrelu")(x)
        x = GlobalSumPooling2D(name="head_sum")(x)  # [B, c] (SNGAN sums; a mean would shrink logits 16x)
        dense = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seeded(seed, 999)),
                                   name="logit_dense")
        logits = (SpectralNormalization(dense, name="logit_dense_sn") if spectral_norm else dense)(x)
        logits = keras.layers.Activation("linear", dtype="float32", name="logit")(logits)  # [B, 1]
        kwargs.setdefault("name", "discriminator")
        super().__init__(inputs=images, outputs=logits, **kwargs)
        self.image_size = image_size
        self.ndf = ndf
        self.spectral_norm = spectral_norm
        self.seed = seed

    def get_config(self):
        return {
            "image_size": self.image_size,
            "ndf": self.ndf,
            "spectral_norm": self.spectral_norm,
            "seed": self.seed,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
