"""Pieces shared by the DCGAN generator and discriminator."""

from __future__ import annotations

import keras

from nebula_keras3.models.common import BatchNorm, Conv2D, conv2d
from nebula_keras3.models.conv_as_matmul import (
    TRANSPOSE_TAPS,
    as_pair,
    check_plain_conv,
    checked_implementation,
    phase_kernels,
    phase_upsample,
    stride2_conv,
)
from nebula_keras3.models.options import num_stages

MAX_CHANNEL_MULT = 8  # the 64 px reference tops out at ngf*8 / ndf*8; larger sizes stay there


def conv_init(seed=None):
    """DCGAN weights: N(0, 0.02) for every (transposed) convolution."""
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.02, seed=seed)


def batch_norm(name: str, seed=None) -> BatchNorm:
    """BatchNorm as torch.nn.BatchNorm2d: gamma N(1, 0.02), beta 0, eps 1e-5, momentum 0.1."""
    return BatchNorm(
        momentum=0.9,
        epsilon=1e-5,
        gamma_initializer=keras.initializers.RandomNormal(mean=1.0, stddev=0.02, seed=seed),
        beta_initializer="zeros",
        name=name,
    )


def channel_mults(image_size: int) -> list[int]:
    """Width multipliers of the 4x4 .. image_size/2 feature maps, widest first.

    64 px: [8, 4, 2, 1] (exactly the reference); 32 px: [4, 2, 1]; 128 px: [8, 8, 4, 2, 1].
    """
    n = num_stages(image_size)
    return [min(2 ** (n - 1 - i), MAX_CHANNEL_MULT) for i in range(n)]


# The form ``implementation="auto"`` picks (others: "transpose"). Measured per layer with
# bench/upsample_bench.py and per-layer timings (forward + backward at 64 px, batch 64, 2 CPU
# cores; the whole step: docs/RESULTS.md, "JAX's layer forms"): XLA's CPU backward of
# conv_transpose is the slowest form by far, so JAX runs the phase matmuls (4 taps per
# pixel) on layers with at least PHASE_MIN_FILTERS outputs and the 3x3 sub-pixel conv on
# the thin to-RGB layer, where 3-column matmuls are slow; torch's and TensorFlow's own
# transposed convolutions beat both other forms there.
PHASE_MIN_FILTERS = 16


def auto_form(backend: str, filters: int) -> str:
    if backend != "jax":
        return "transpose"
    return "phase" if filters >= PHASE_MIN_FILTERS else "subpixel"


FORMS = ("transpose", "subpixel", "phase")
# The form exported graphs (SavedModel, ONNX) compute (nebula_keras3.models.export_forms):
# ONNX Runtime's ConvTranspose beats the sub-pixel conv and the phase forms here, and a 2x2-conv
# phase form was no faster (bench/sample_bench.py; docs/RESULTS.md, "Sampling throughput").
EXPORT_FORM = "transpose"

# Kernel tap of the 4x4 transposed kernel used by output phase a (rows of the
# table) at 3x3 offset d (columns, d = di + 1); 4 is a zero tap (no contribution).
# Output row 2i + a reads input row i + di through tap a + 1 - 2*di when 0 <= tap < 4.
_SUBPIXEL_TAPS = ((3, 1, 4), (4, 2, 0))


@keras.saving.register_keras_serializable(package="nebula_keras3")
class SubPixelConv2DTranspose(keras.layers.Conv2DTranspose):
    """``Conv2DTranspose(filters, 4, strides=2, padding="same")``, computed in one of three exact forms.

    Same variables, names and output as the Keras layer. ``implementation``:

    * ``"transpose"``: ``ops.conv_transpose`` (what ``Conv2DTranspose`` does);
    * ``"subpixel"``: a 3x3 "same" convolution to 4*filters channels, then depth-to-space,
      with the 3x3 kernel gathered from the same 4x4 kernel variable on every call
      (exactly equal; gradients flow back to the 4x4 kernel)::

          x [B, H, W, Cin] --conv 3x3--> [B, H, W, 2*2*Cout] --depth-to-space--> [B, 2H, 2W, Cout]

    * ``"phase"``: each output phase as a 2x2 patch matmul on the input
      (``nebula_keras3.models.conv_as_matmul``; the transposed convolution's own 4 taps per pixel);
    * ``"auto"`` (default): ``auto_form`` of the running backend and ``filters``.
    """

    export_form = EXPORT_FORM

    def __init__(self, filters, kernel_size=4, strides=2, padding="same", implementation="auto", **kwargs):
        if as_pair(kernel_size) != (4, 4) or as_pair(strides) != (2, 2) or padding != "same":
            raise ValueError("SubPixelConv2DTranspose is the 4x4, stride-2, 'same' transposed convolution")
        check_plain_conv("SubPixelConv2DTranspose", kwargs, no="output_padding")
        super().__init__(filters, kernel_size, strides=strides, padding=padding, **kwargs)
        self.implementation = checked_implementation(implementation, FORMS)

    @property
    def form(self) -> str:
        """The form ``call`` computes: ``implementation`` with "auto" resolved for the backend."""
        return auto_form(keras.backend.backend(), self.filters) if self.implementation == "auto" else self.implementation

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
        form = self.form
        if form == "transpose":
            return super().call(inputs)
        from keras import ops

        if form == "phase":
            kernel = ops.transpose(self.kernel, (0, 1, 3, 2))  # [4, 4, Cin, Cout]
            x = phase_upsample(inputs, phase_kernels(kernel, TRANSPOSE_TAPS))  # [B, 2H, 2W, Cout]
        else:
            x = conv2d(inputs, self.subpixel_kernel(), strides=1, padding="same")  # [B, H, W, 4*Cout]
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


# The form ``Stride2Conv2D(implementation="auto")`` picks per backend (others: "direct").
# Per-layer timing, dcgan64 D layers forward + backward, batch 64, 2 CPU cores: JAX's patch
# matmul beats its direct conv, most on the 3-channel first layer (the whole step:
# docs/RESULTS.md, "JAX's layer forms").
DOWN_AUTO_FORMS = {"jax": "matmul"}
DOWN_FORMS = ("direct", "matmul")


@keras.saving.register_keras_serializable(package="nebula_keras3")
class Stride2Conv2D(Conv2D):
    """``Conv2D(filters, 4, strides=2, padding="same")`` (the DCGAN discriminator's), in one of two exact forms.

    Same variables and output as the Keras layer. ``implementation``: ``"direct"``
    (``ops.conv``), ``"matmul"`` (``conv_as_matmul.stride2_conv``: space-to-depth, then one
    patch matmul), or ``"auto"`` (``DOWN_AUTO_FORMS`` for the running backend, else direct).
    """

    def __init__(self, filters, kernel_size=4, strides=2, padding="same", implementation="auto", **kwargs):
        if as_pair(kernel_size) != (4, 4) or as_pair(strides) != (2, 2) or padding != "same":
            raise ValueError("Stride2Conv2D is the 4x4, stride-2, 'same' convolution")
        check_plain_conv("Stride2Conv2D", kwargs)
        super().__init__(filters, 4, strides=2, padding="same", **kwargs)
        self.implementation = checked_implementation(implementation, DOWN_FORMS)

    @property
    def form(self) -> str:
        """The form ``call`` computes: ``implementation`` with "auto" resolved for the backend."""
        return DOWN_AUTO_FORMS.get(keras.backend.backend(), "direct") if self.implementation == "auto" else self.implementation

    def convolution_op(self, inputs, kernel):  # Conv2D.call adds the bias and activation
        if self.form == "matmul" and inputs.shape[1] is not None and inputs.shape[1] % 2 == 0 \
                and inputs.shape[2] is not None and inputs.shape[2] % 2 == 0:
            return stride2_conv(inputs, kernel)
        return super().convolution_op(inputs, kernel)

    def get_config(self):
        return {**super().get_config(), "implementation": self.implementation}


@keras.saving.register_keras_serializable(package="nebula_keras3")
class WholeMapConv2D(Conv2D):
    """``Conv2D(filters, k, padding="valid")`` on a k x k map, computed as the one matmul it is.

    [B, k, k, C] -> flatten -> [B, k*k*C] @ kernel [k*k*C, filters] -> [B, 1, 1, filters]; the
    same variable (kernel [k, k, C, filters]) and output as the Keras layer, on every backend.
    The DCGAN discriminator's logit layer: as a convolution, its 1-output-channel kernel breaks
    torch 2.13's CPU float16/bfloat16 backward where oneDNN has no 16-bit kernels and
    ``slow_conv2d`` runs instead ("grad_weight must be contiguous", CPUs without AVX-512).
    """

    def __init__(self, filters, kernel_size=4, strides=1, padding="valid", **kwargs):
        if padding != "valid" or as_pair(strides) != (1, 1):
            raise ValueError("WholeMapConv2D is the stride-1 'valid' convolution over its whole input map")
        check_plain_conv("WholeMapConv2D", kwargs)
        super().__init__(filters, kernel_size, strides=1, padding="valid", **kwargs)

    def build(self, input_shape):
        if tuple(input_shape[1:3]) != tuple(self.kernel_size):
            raise ValueError(f"WholeMapConv2D's kernel {self.kernel_size} must cover its input map, "
                             f"got {tuple(input_shape[1:3])}")
        super().build(input_shape)

    def convolution_op(self, inputs, kernel):  # Conv2D.call adds the bias and activation
        kernel = keras.ops.reshape(kernel, (-1, self.filters))  # rows in (h, w, c) order, as the flattened map
        y = keras.ops.matmul(keras.ops.reshape(inputs, (-1, kernel.shape[0])), kernel)
        return keras.ops.reshape(y, (-1, 1, 1, self.filters))
