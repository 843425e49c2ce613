"""What the model families can be built with: sizes, families, modes, and the stage count.

Read by the model constructors and by the training config (its validation and
the CLI's choices). Imports no Keras.
"""

from __future__ import annotations

import math

SUPPORTED_SIZES = (32, 64, 128, 256)  # image sizes every model family builds
MODELS = ("dcgan", "nebula")  # generator families
DISCRIMINATORS = ("dcgan", "resnet")
UPSAMPLE_MODES = ("nearest", "subpixel", "bilinear")  # nebula generator
G_ACTIVATIONS = ("glu", "lrelu")  # nebula generator


def num_stages(image_size: int) -> int:
    """Stride-2 stages between 4x4 and the image: 64 px -> 4 (4-8-16-32-64)."""
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(
            f"image_size must be one of {SUPPORTED_SIZES}, got {image_size}"
        )
    return stages_to_4x4(image_size)


def stages_to_4x4(side: int) -> int:
    """Stride-2 stages from a ``side`` px map down to 4x4 (a power of two >= 8): 32 -> 3."""
    return int(math.log2(side)) - 2


def coarse_sizes(image_size: int) -> tuple[int, ...]:
    """Sides a multi-scale D's coarse stack can judge: powers of two from 8 px, below the image."""
    return tuple(2**k for k in range(3, int(math.log2(image_size))))
