"""DCGAN generator: latent vector -> RGB image in [-1, 1]."""

from __future__ import annotations

import keras

from nebula_keras3.export import layout  # exported tensor names: G maps Z to IMAGES
from nebula_keras3.models.common import seeded
from nebula_keras3.models.dcgan.layers import SubPixelConv2DTranspose, batch_norm, channel_mults, conv_init


@keras.saving.register_keras_serializable(package="nebula_keras3")
class DCGANGenerator(keras.Model):
    """Transposed-conv generator; at 64 px exactly pytorch/examples' ``Generator``.

    Shapes at 64 px, ngf=64 (channels last):
        z [B, 100] -> [B, 1, 1, 100]
        ConvT 4x4/1 valid + BN + ReLU   -> [B, 4, 4, 512]
        ConvT 4x4/2 same  + BN + ReLU   -> [B, 8, 8, 256]
                                        -> [B, 16, 16, 128]
                                        -> [B, 32, 32, 64]
        ConvT 4x4/2 same + tanh         -> [B, 64, 64, 3]
    Convolutions have no bias (BatchNorm follows), as in the reference.

    Args:
        image_size: 32, 64, 128 or 256.
        latent_dim: length of the latent vector z.
        ngf: width of the last hidden stage.
        upsample: how the stride-2 transposed convolutions run: "auto" (the backend's
            faster form, see ``SUBPIXEL_BACKENDS``), "transpose" or "subpixel". Every form has
            the same variables and output, so it is not part of the trained weights.
        seed: seed for the weight initialisers (None: Keras' global RNG).
    """

    def __init__(self, image_size=64, latent_dim=100, ngf=64, seed=None, upsample="auto", **kwargs):
        mults = channel_mults(image_size)
        z = keras.Input(shape=(latent_dim,), name=layout.Z)
        x = keras.layers.Reshape((1, 1, latent_dim), name="z_as_map")(z)
        for i, mult in enumerate(mults):
            first = i == 0
            init = conv_init(seeded(seed, i))
            if first:  # [B, 1, 1, latent] -> [B, 4, 4, C]
                x = keras.layers.Conv2DTranspose(
                    ngf * mult, 4, strides=1, padding="valid", use_bias=False,
                    kernel_initializer=init, name=f"up{i}_convt",
                )(x)
            else:  # [B, H, W, 2C] -> [B, 2H, 2W, C]
                x = SubPixelConv2DTranspose(
                    ngf * mult, implementation=upsample, use_bias=False, kernel_initializer=init,
                    name=f"up{i}_convt",
                )(x)
            x = batch_norm(f"up{i}_bn", seeded(seed, 100 + i))(x)
            x = keras.layers.ReLU(name=f"up{i}_relu")(x)
        x = SubPixelConv2DTranspose(
            3,
            implementation=upsample,
            use_bias=False,
            kernel_initializer=conv_init(seeded(seed, 99)),
            name="to_rgb_convt",
        )(x)
        images = keras.layers.Activation("tanh", dtype="float32", name=layout.IMAGES)(x)
        kwargs.setdefault("name", "generator")
        super().__init__(inputs=z, outputs=images, **kwargs)
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.ngf = ngf
        self.seed = seed
        self.upsample = upsample

    def get_config(self):
        return {
            "image_size": self.image_size,
            "latent_dim": self.latent_dim,
            "ngf": self.ngf,
            "seed": self.seed,
            "upsample": self.upsample,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
