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


# Backends on which the generator's stride-2 transposed convolutions run in their
# sub-pixel form (see SubPixelConv2DTranspose). Measured on 2 CPU cores, G forward +
# backward at 64 px, batch 64: XLA's CPU backward of conv_transpose takes seconds per
# layer, the sub-pixel form's does not; on torch and TensorFlow the sub-pixel form took
# 1.7-2.1x the time of their own transposed convolution.
SUBPIXEL_BACKENDS = frozenset({"jax"})

# Kernel tap of the 4x4 transposed kernel used by output phase a (rows of the
# table) at 3x3 offset d (columns, d = di + 1); 4 is a zero tap (no contribution).
# Output row 2i + a reads input row i + di through tap a + 1 - 2*di when 0 <= tap < 4.
_SUBPIXEL_TAPS = ((3, 1, 4), (4, 2, 0))


@keras.saving.register_keras_serializable(package="nebula_keras3")
class SubPixelConv2DTranspose(keras.layers.Conv2DTranspose):
    """``Conv2DTranspose(filters, 4, strides=2, padding="same")``, optionally computed as sub-pixel conv.

    Same variables, names and output as the Keras layer. ``implementation``:

    * ``"transpose"``: ``ops.conv_transpose`` (what ``Conv2DTranspose`` does);
    * ``"subpixel"``: a 3x3 "same" convolution to 4*filters channels, then depth-to-space,
      with the 3x3 kernel gathered from the same 4x4 kernel variable on every call
      (exactly equal; gradients flow back to the 4x4 kernel)::

          x [B, H, W, Cin] --conv 3x3--> [B, H, W, 2*2*Cout] --depth-to-space--> [B, 2H, 2W, Cout]

    * ``"auto"`` (default): ``"subpixel"`` on the backends in ``SUBPIXEL_BACKENDS``.
    """

    def __init__(self, filters, kernel_size=4, strides=2, padding="same", implementation="auto", **kwargs):
        def pair(v):
            return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

        if pair(kernel_size) != (4, 4) or pair(strides) != (2, 2) or padding != "same":
            raise ValueError("SubPixelConv2DTranspose is the 4x4, stride-2, 'same' transposed convolution")
        if implementation not in ("auto", "transpose", "subpixel"):
            raise ValueError(f"implementation must be auto, transpose or subpixel, got {implementation!r}")
        if kwargs.get("data_format") not in (None, "channels_last") or kwargs.get("dilation_rate") not in (
            None, 1, (1, 1)
        ) or kwargs.get("output_padding") is not None:
            raise ValueError("SubPixelConv2DTranspose supports channels_last, no dilation, no output_padding")
        super().__init__(filters, kernel_size, strides=strides, padding=padding, **kwargs)
        self.implementation = implementation

    @property
    def uses_subpixel(self) -> bool:
        if self.implementation == "auto":
            return keras.backend.backend() in SUBPIXEL_BACKENDS
        return self.implementation == "subpixel"

    def subpixel_kernel(self):
        """The 3x3 kernel [3, 3, Cin, 2*2*Cout] (channels ordered row phase, column phase, Cout)."""
        from keras import ops

        k = self.kernel  # [4, 4, Cout, Cin]
        k = ops.pad(k, [[0, 1], [0, 1], [0, 0], [0, 0]])  # [5, 5, Cout, Cin], tap 4 is zero
        taps = ops.convert_to_tensor(_SUBPIXEL_TAPS, dtype="int32")  # [2 phases, 3 offsets]
        k = ops.take(k, ops.reshape(taps, (-1,)), axis=0)  # [2*3, 5, Cout, Cin]
        k = ops.take(k, ops.reshape(taps, (-1,)), axis=1)  # [2*3, 2*3, Cout, Cin]
        cout, cin = k.shape[2], k.shape[3]
        k = ops.reshape(k, (2, 3, 2, 3, cout, cin))  # [a, dy, b, dx, Cout, Cin]
        k = ops.transpose(k, (1, 3, 5, 0, 2, 4))  # [dy, dx, Cin, a, b, Cout]
        return ops.reshape(k, (3, 3, cin, 4 * cout))

    def call(self, inputs):
        if not self.uses_subpixel:
            return super().call(inputs)
        from keras import ops

        x = ops.conv(inputs, self.subpixel_kernel(), strides=1, padding="same")  # [B, H, W, 4*Cout]
        h, w = x.shape[1], x.shape[2]
        x = ops.reshape(x, (-1, h, w, 2, 2, self.filters))  # [B, H, W, a, b, Cout]
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # [B, H, a, W, b, Cout]
        x = ops.reshape(x, (-1, 2 * h, 2 * w, self.filters))  # [B, 2H, 2W, Cout]
        if self.use_bias:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def get_config(self):
        config = super().get_config()
        config["implementation"] = self.implementation
        return config
