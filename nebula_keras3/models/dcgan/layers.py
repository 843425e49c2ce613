"""Pieces shared by the DCGAN generator and discriminator."""

from __future__ import annotations

import math

import keras

from nebula_keras3.training.config import SUPPORTED_SIZES  # noqa: F401 (one home, keras-free)
MAX_CHANNEL_MULT = 8  # the 64 px reference tops out at ngf*8 / ndf*8; larger sizes stay there


def conv_init(seed=None):
    """DCGAN weights: N(0, 0.02) for every (transposed) convolution."""
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.02, seed=seed)


def batch_norm(name: str, seed=None) -> keras.layers.BatchNormalization:
    """BatchNorm as torch.nn.BatchNorm2d: gamma N(1, 0.02), beta 0, eps 1e-5, momentum 0.1."""
    return keras.layers.BatchNormalization(
        momentum=0.9,
        epsilon=1e-5,
        gamma_initializer=keras.initializers.RandomNormal(mean=1.0, stddev=0.02, seed=seed),
        beta_initializer="zeros",
        name=name,
    )


def num_stages(image_size: int) -> int:
    """Stride-2 stages between 4x4 and the image: 64 px -> 4 (4-8-16-32-64)."""
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(
            f"image_size must be one of {SUPPORTED_SIZES}, got {image_size}"
        )
    return int(math.log2(image_size)) - 2


def channel_mults(image_size: int) -> list[int]:
    """Width multipliers of the 4x4 .. image_size/2 feature maps, widest first.

    64 px: [8, 4, 2, 1] (exactly the reference); 32 px: [4, 2, 1]; 128 px: [8, 8, 4, 2, 1].
    """
    n = num_stages(image_size)
    return [min(2 ** (n - 1 - i), MAX_CHANNEL_MULT) for i in range(n)]
