"""DCGAN discriminator: RGB image in [-1, 1] -> one real/fake logit."""

from __future__ import annotations

import keras

from nebula_keras3.export import layout  # exported tensor names: the generator output IMAGES is the D input
from nebula_keras3.models.common import SpectralNormalization
from nebula_keras3.models.dcgan.layers import Stride2Conv2D, WholeMapConv2D, batch_norm, channel_mults, conv_init


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

    Args:
        image_size: 32, 64, 128 or 256.
        ndf: width of the first stage.
        spectral_norm: wrap every conv in ``SpectralNormalization`` and drop the
            BatchNorms (SNGAN's "standard CNN"); off in the reference.
        seed: seed for the weight initialisers (None: Keras' global RNG).
    """

    def __init__(self, image_size=64, ndf=64, spectral_norm=False, seed=None, **kwargs):
        def sn(layer):
            return SpectralNormalization(layer, name=f"{layer.name}_sn") if spectral_norm else layer

        mults = list(reversed(channel_mults(image_size)))  # [1, 2, 4, 8] at 64 px
        images = keras.Input(shape=(image_size, image_size, 3), name=layout.IMAGES)
        x = images
        for i, mult in enumerate(mults):
            x = sn(Stride2Conv2D(  # 4x4 / 2, "same"; as a patch matmul on JAX
                ndf * mult,
                use_bias=False,
                kernel_initializer=conv_init(None if seed is None else seed + i),
                name=f"down{i}_conv",
            ))(x)
            if i > 0 and not spectral_norm:
                x = batch_norm(f"down{i}_bn", None if seed is None else seed + 100 + i)(x)
            x = keras.layers.LeakyReLU(negative_slope=0.2, name=f"down{i}_lrelu")(x)
        x = sn(WholeMapConv2D(  # 4x4 valid over the 4x4 map: one matmul
            1,
            4,
            use_bias=False,
            kernel_initializer=conv_init(None if seed is None else seed + 99),
            name="to_logit_conv",
        ))(x)
        logits = keras.layers.Flatten(dtype="float32", name="logit")(x)
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
