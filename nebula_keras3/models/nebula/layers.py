"""Layers of the nebula family: nearest-upsample conv, depth-to-space, ICNR, GLU, sum pooling."""

from __future__ import annotations

import keras
from keras import ops

from nebula_keras3.models.common import Conv2D, conv2d
from nebula_keras3.models.conv_as_matmul import (
    NEAREST_TAPS,
    as_pair,
    check_plain_conv,
    checked_implementation,
    phase_conv_upsample,
    phase_kernels,
    phase_upsample,
)

# The form each backend computes ``NearestUpsampleConv2D`` in under ``implementation="auto"``
# (others: "direct"). bench/upsample_bench.py, nebula64 G forward + backward, 2 CPU cores:
# JAX's phase matmuls beat its upsample-then-convolve; torch and TensorFlow convolve faster
# (docs/RESULTS.md, "JAX's layer forms").
AUTO_FORMS = {"jax": "phase"}
FORMS = ("direct", "phase", "phase_conv")
# The form exported graphs (SavedModel, ONNX) compute (nebula_keras3.models.export_forms): the
# 2x2-conv phase form does 4/9 of the direct form's multiply-adds in one Conv and a shuffle, with
# no Tile, and is the fastest form in ONNX Runtime and in a TensorFlow graph (docs/RESULTS.md,
# "Sampling throughput"; bench/sample_bench.py runs each form). Training keeps AUTO_FORMS: the
# 2x2-conv form's backward was no faster on any backend (bench/train_bench.py nearest=phase_conv).
EXPORT_FORM = "phase_conv"


def depth_to_space(x, block=2):
    """[B, H, W, b*b*C] -> [B, b*H, b*W, C]; channel (i*b + j)*C + c lands at (b*h + i, b*w + j).

    Plain reshape/transpose (exports as ONNX Reshape + Transpose, TF's DepthToSpace order).
    """
    _, h, w, c = x.shape
    c //= block * block
    x = ops.reshape(x, (-1, h, w, block, block, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # [B, H, b, W, b, C]
    return ops.reshape(x, (-1, h * block, w * block, c))


@keras.saving.register_keras_serializable(package="nebula_keras3")
class DepthToSpace(keras.layers.Layer):
    """Sub-pixel shuffle ``[B, H, W, 4C] -> [B, 2H, 2W, C]`` (see ``depth_to_space``)."""

    def __init__(self, block=2, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def call(self, x):
        return depth_to_space(x, self.block)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        k = self.block
        return (b, None if h is None else h * k, None if w is None else w * k, c // (k * k))

    def get_config(self):
        return {**super().get_config(), "block": self.block}


@keras.saving.register_keras_serializable(package="nebula_keras3")
class NearestUpsampleConv2D(Conv2D):
    """Nearest x2 upsampling then ``Conv2D(filters, 3, padding="same")``, as one layer.

    ``[B, H, W, Cin] -> [B, 2H, 2W, filters]``; the variables are a plain 3x3 ``Conv2D``'s.
    ``implementation``: ``"direct"`` (repeat rows and columns, then convolve at 2H x 2W),
    ``"phase"`` (``nebula_keras3.models.conv_as_matmul``: the same output from four 2x2 patch
    matmuls on the H x W map, 4/9 of the multiply-adds), ``"phase_conv"`` (the four phases as
    one 2x2 convolution to 4*filters channels, the same count), or ``"auto"`` (``AUTO_FORMS``).
    """

    export_form = EXPORT_FORM

    def __init__(self, filters, kernel_size=3, padding="same", implementation="auto", **kwargs):
        if as_pair(kernel_size) != (3, 3) or padding != "same" or as_pair(kwargs.get("strides", 1)) != (1, 1):
            raise ValueError("NearestUpsampleConv2D is a 3x3, stride-1, 'same' convolution after x2 upsampling")
        check_plain_conv("NearestUpsampleConv2D", kwargs)
        super().__init__(filters, 3, padding="same", **kwargs)
        self.implementation = checked_implementation(implementation, FORMS)

    @property
    def form(self) -> str:
        """The form ``call`` computes: ``implementation`` with "auto" resolved for the backend."""
        return AUTO_FORMS.get(keras.backend.backend(), "direct") if self.implementation == "auto" else self.implementation

    def convolution_op(self, inputs, kernel):  # Conv2D.call adds the bias and activation
        if self.form == "direct":
            up = ops.repeat(ops.repeat(inputs, 2, axis=1), 2, axis=2)  # [B, 2H, 2W, Cin]
            return conv2d(up, kernel, strides=1, padding="same")
        upsample = phase_upsample if self.form == "phase" else phase_conv_upsample
        return upsample(inputs, phase_kernels(kernel, NEAREST_TAPS))  # [B, 2H, 2W, filters]

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, self.filters)

    def get_config(self):
        return {**super().get_config(), "implementation": self.implementation}


@keras.saving.register_keras_serializable(package="nebula_keras3")
class ICNR(keras.initializers.Initializer):
    """ICNR (Aitken et al. 2017): a sub-pixel conv kernel whose ``block**2`` phases start equal.

    Draws a kernel for ``C`` outputs from ``initializer`` and repeats it so that channel
    ``(i*b + j)*C + c`` holds filter ``c``: depth-to-space of the output then equals
    nearest-neighbour upsampling of one conv, so training starts without checkerboard.
    """

    def __init__(self, initializer="glorot_uniform", block=2):
        self.initializer = keras.initializers.get(initializer)
        self.block = block

    def __call__(self, shape, dtype=None):
        *rest, out = shape
        phases = self.block * self.block
        base = self.initializer((*rest, out // phases), dtype=dtype)
        return ops.tile(base, (1,) * len(rest) + (phases,))

    def get_config(self):
        return {"initializer": keras.initializers.serialize(self.initializer), "block": self.block}

    @classmethod
    def from_config(cls, config):
        return cls(keras.initializers.deserialize(config["initializer"]), config["block"])


@keras.saving.register_keras_serializable(package="nebula_keras3")
class GLU(keras.layers.Layer):
    """Gated linear unit over channels: ``[B, H, W, 2C] -> a * sigmoid(b)``, [B, H, W, C]."""

    def call(self, x):
        a, b = ops.split(x, 2, axis=-1)
        return a * ops.sigmoid(b)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 2)


@keras.saving.register_keras_serializable(package="nebula_keras3")
class GlobalSumPooling2D(keras.layers.Layer):
    """``[B, H, W, C] -> [B, C]``: sum over the spatial axes (SNGAN's discriminator head)."""

    def call(self, x):
        return ops.sum(x, axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])
