"""DCGAN discriminator: RGB image in [-1, 1] -> one real/fake logit (one per scale with a coarse stack)."""

from __future__ import annotations

import keras

from nebula_keras3.export import layout  # exported tensor names: the generator output IMAGES is the D input
from nebula_keras3.models.common import SpectralNormalization, seeded
from nebula_keras3.models.dcgan.layers import Stride2Conv2D, WholeMapConv2D, batch_norm, channel_mults, conv_init
from nebula_keras3.models.options import coarse_sizes, stages_to_4x4


@keras.saving.register_keras_serializable(package="nebula_keras3")
class DCGANDiscriminator(keras.Model):
    """Strided-conv discriminator; at 64 px exactly pytorch/examples' ``Discriminator``.

    Shapes at 64 px, ndf=64 (channels last):
        x [B, 64, 64, 3]
        Conv 4x4/2 same + LeakyReLU(0.2)        -> [B, 32, 32, 64]   (no BatchNorm)
        Conv 4x4/2 same + BN + LeakyReLU(0.2)   -> [B, 16, 16, 128]
                                                -> [B, 8, 8, 256]
                                                -> [B, 4, 4, 512]
        Conv 4x4/1 valid                        -> [B, 1, 1, 1] -> logit [B, 1]
    The reference ends in a sigmoid and BCELoss; we return the logit and use
    BCE-with-logits, the same loss computed stably.

    With ``coarse_size`` a second, independent stack of the same form judges the image
    average-pooled to ``coarse_size`` px (a multi-scale discriminator, as pix2pixHD's coarse
    D): its own gradient on the layout and colour of the whole image, which the full-size
    stack can satisfy with fine detail alone. At 128 px, ndf 16, coarse_size 32, coarse_ndf 64:
        avgpool 4x4                             -> [B, 32, 32, 3]
        Conv 4x4/2 + LeakyReLU                  -> [B, 16, 16, 64]
        Conv 4x4/2 + BN + LeakyReLU             -> [B, 8, 8, 128] -> [B, 4, 4, 256]
        Conv 4x4/1 valid                        -> coarse logit [B, 1]
    and the model returns both logits, [B, 2] (full size first); the losses average over them.

    Args:
        image_size: 32, 64, 128 or 256.
        ndf: width of the first stage.
        spectral_norm: wrap every conv in ``SpectralNormalization`` and drop the
            BatchNorms (SNGAN's "standard CNN"); off in the reference.
        seed: seed for the weight initialisers (None: Keras' global RNG).
        coarse_size: side of the pooled image a second stack judges (``coarse_sizes``); 0: none
            (one logit).
        coarse_ndf: width of the coarse stack's first stage, doubling per stage.
    """

    def __init__(self, image_size=64, ndf=64, spectral_norm=False, seed=None, coarse_size=0, coarse_ndf=64,
                 **kwargs):
        if coarse_size and coarse_size not in coarse_sizes(image_size):
            raise ValueError(f"the coarse discriminator's size must be one of {coarse_sizes(image_size)} px at "
                             f"{image_size} px, got {coarse_size}")
        if coarse_size and coarse_ndf < 1:
            raise ValueError(f"the coarse discriminator's width must be positive, got {coarse_ndf}")

        def sn(layer):
            return SpectralNormalization(layer, name=f"{layer.name}_sn") if spectral_norm else layer

        def stack(x, widths, prefix, seed_offset):
            """Stride-2 stages down to 4x4, then the whole-map conv: [B, r, r, 3] -> [B, 1]."""
            for i, width in enumerate(widths):
                x = sn(Stride2Conv2D(  # 4x4 / 2, "same"; as a patch matmul on JAX
                    width, use_bias=False, kernel_initializer=conv_init(seeded(seed, seed_offset + i)),
                    name=f"{prefix}{i}_conv",
                ))(x)
                if i > 0 and not spectral_norm:
                    x = batch_norm(f"{prefix}{i}_bn", seeded(seed, seed_offset + 100 + i))(x)
                x = keras.layers.LeakyReLU(negative_slope=0.2, name=f"{prefix}{i}_lrelu")(x)
            x = sn(WholeMapConv2D(  # 4x4 valid over the 4x4 map: one matmul
                1, 4, use_bias=False, kernel_initializer=conv_init(seeded(seed, seed_offset + 99)),
                name="to_logit_conv" if prefix == "down" else f"{prefix}_to_logit_conv",
            ))(x)
            return keras.layers.Flatten(dtype="float32", name="logit" if prefix == "down" else f"{prefix}_logit")(x)

        images = keras.Input(shape=(image_size, image_size, 3), name=layout.IMAGES)
        mults = list(reversed(channel_mults(image_size)))  # [1, 2, 4, 8] at 64 px
        logits = stack(images, [ndf * m for m in mults], "down", 0)  # [B, 1]
        if coarse_size:
            pooled = keras.layers.AveragePooling2D(image_size // coarse_size, name="coarse_pool")(images)
            coarse = stack(pooled, [coarse_ndf * 2**i for i in range(stages_to_4x4(coarse_size))], "coarse", 200)
            logits = keras.layers.Concatenate(dtype="float32", name="logits")([logits, coarse])  # [B, 2]
        kwargs.setdefault("name", "discriminator")
        super().__init__(inputs=images, outputs=logits, **kwargs)
        self.image_size = image_size
        self.ndf = ndf
        self.spectral_norm = spectral_norm
        self.seed = seed
        self.coarse_size = coarse_size
        self.coarse_ndf = coarse_ndf

    def get_config(self):
        return {
            "image_size": self.image_size,
            "ndf": self.ndf,
            "spectral_norm": self.spectral_norm,
            "seed": self.seed,
            "coarse_size": self.coarse_size,
            "coarse_ndf": self.coarse_ndf,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
