"""Keras pieces both model families use: spectral normalisation, per-layer seeds, and BatchNorm
and Conv2D that run on torch's own kernels without Keras' composed ops and layout copies."""

from __future__ import annotations

import keras
from keras import ops


def l2_normalize(x, eps=1e-12):
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x)), eps))


def seeded(seed, offset):
    """Seed for one layer's initialiser (None stays None: Keras' global RNG)."""
    return None if seed is None else seed + offset


@keras.saving.register_keras_serializable(package="nebula_keras3")
class SpectralNormalization(keras.layers.SpectralNormalization):
    """``keras.layers.SpectralNormalization`` with torch's ``spectral_norm`` semantics.

    Keras' layer *overwrites* the wrapped kernel with ``kernel / sigma`` on every
    training call. Under JAX's ``stateless_call`` that write to a trainable variable
    is dropped (the forward uses W / sigma(W), the stored kernel stays raw), while
    TF and torch keep it, so the three backends would train different models.
    Here the kernel is never written: every call (training or not) convolves with
    ``W / sigma`` where ``sigma = v W u^T`` (u, v from power iteration, held
    constant in the gradient as in Miyato et al. and torch), and only the
    power-iteration vector ``u`` -- a non-trainable variable, hence threaded by
    ``stateless_call`` under JAX -- is updated, in training calls only.

    Supports ``Conv2D`` and ``Dense`` (what the discriminators use).
    """

    def build(self, input_shape):
        if not isinstance(self.layer, (keras.layers.Conv2D, keras.layers.Dense)):
            raise ValueError(f"SpectralNormalization here wraps Conv2D or Dense, not {type(self.layer).__name__}")
        super().build(input_shape)

    def _sigma_and_u(self, training):
        weights = ops.reshape(self.kernel.value, (-1, self.kernel_shape[-1]))  # [k*k*in, out]
        u = self.vector_u.value  # [1, out]
        for _ in range(self.power_iterations):
            v = l2_normalize(ops.matmul(u, ops.transpose(weights)))  # [1, k*k*in]
            u = l2_normalize(ops.matmul(v, weights))  # [1, out]
        u, v = ops.stop_gradient(u), ops.stop_gradient(v)
        sigma = ops.matmul(ops.matmul(v, weights), ops.transpose(u))[0, 0]  # top singular value
        if training:
            self.vector_u.assign(u)
        return sigma

    def normalized_kernel(self, training=False):
        return self.kernel.value / self._sigma_and_u(training)

    def call(self, inputs, training=False):
        kernel = self.normalized_kernel(training)
        layer = self.layer
        if isinstance(layer, keras.layers.Conv2D):
            y = layer.convolution_op(inputs, kernel)  # the wrapped layer's own (fastest) form
        else:
            y = ops.matmul(inputs, kernel)
        if layer.use_bias:
            y = y + layer.bias
        if layer.activation is not None:
            y = layer.activation(y)
        return y


@keras.saving.register_keras_serializable(package="nebula_keras3")
class BatchNorm(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` (same arguments, variables and results) that runs as
    one fused ``torch.nn.functional.batch_norm`` kernel on the torch backend.

    Keras' torch backend builds BatchNorm from elementwise ops (mean, square, subtract, scale,
    shift) on an input first cast to float32, and autograd differentiates each of them: at
    64 px under bf16 those ops and casts took about as long as the convolutions around them
    (docs/RESULTS.md, "Paired rounds (nebula64)"). torch's kernel reads the bf16 or float32 input once, keeps the
    statistics in float32 and has a fused backward. The moving statistics follow Keras'
    update (``moving = momentum * moving + (1 - momentum) * batch``, the biased batch
    variance). 4-D channels-last inputs without mask or renorm on torch take this path;
    everything else, and every other backend, is Keras' own layer.
    """

    def _fused(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "torch" and mask is None and not self.renorm
                and len(inputs.shape) == 4 and self.axis in (-1, 3) and self.center and self.scale
                and keras.backend.standardize_dtype(inputs.dtype) in ("float32", "bfloat16", "float16"))

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import torch
        import torch.nn.functional as F

        x = inputs.permute(0, 3, 1, 2)  # [B, C, H, W], a view: channels-last memory, as torch's kernels like
        gamma, beta = self.gamma.value, self.beta.value  # float32 (not autocast)
        if training and self.trainable:
            # momentum 1: torch leaves the batch mean and the unbiased batch variance in these.
            mean = torch.zeros_like(self.moving_mean.value)
            var = torch.ones_like(self.moving_variance.value)
            y = F.batch_norm(x, mean, var, gamma, beta, training=True, momentum=1.0, eps=self.epsilon)
            n = x.numel() // x.shape[1]
            with torch.no_grad():
                var = var * ((n - 1) / n)  # biased, as Keras' moments
                self.moving_mean.assign(self.moving_mean.value * self.momentum + mean * (1.0 - self.momentum))
                self.moving_variance.assign(self.moving_variance.value * self.momentum + var * (1.0 - self.momentum))
        else:
            y = F.batch_norm(x, self.moving_mean.value, self.moving_variance.value, gamma, beta,
                             training=False, eps=self.epsilon)
        return ops.cast(y.permute(0, 2, 3, 1), self.compute_dtype)


def conv2d(inputs, kernel, strides=1, padding="valid"):
    """``ops.conv(inputs, kernel, strides, padding)`` for channels-last ``inputs`` [B, H, W, Cin]
    and a ``[kh, kw, Cin, Cout]`` kernel, the same result on every backend.

    On torch, Keras' ``ops.conv`` copies the input twice per call (a permute made contiguous
    in NCHW, then copied back to channels-last memory for oneDNN), about a tenth of a nebula64
    or dcgan64 step. The permuted view of a channels-last tensor already is channels-last NCHW
    memory, so here it goes to ``torch.nn.functional.conv2d`` as it is, with "same" padding
    as TensorFlow pads (the extra pixel of an odd total after).
    """
    if keras.backend.backend() != "torch":
        return ops.conv(inputs, kernel, strides=strides, padding=padding)
    import torch.nn.functional as F

    inputs, kernel = ops.convert_to_tensor(inputs), ops.convert_to_tensor(kernel)
    sh, sw = (strides, strides) if isinstance(strides, int) else tuple(strides)
    kh, kw = kernel.shape[0], kernel.shape[1]
    x = inputs.permute(0, 3, 1, 2)  # [B, Cin, H, W], channels-last memory
    pad = (0, 0)
    if padding == "same":
        (top, bottom), (left, right) = (_same_padding(n, k, s) for n, k, s in
                                        ((x.shape[2], kh, sh), (x.shape[3], kw, sw)))
        if top != bottom or left != right:
            x = F.pad(x, (left, right, top, bottom))
        else:
            pad = (top, left)
    elif padding != "valid":
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    y = F.conv2d(x, kernel.permute(3, 2, 0, 1), stride=(sh, sw), padding=pad)  # [B, Cout, H', W']
    return y.permute(0, 2, 3, 1)


def _same_padding(size: int, k: int, s: int) -> tuple[int, int]:
    total = max((-(-size // s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


@keras.saving.register_keras_serializable(package="nebula_keras3")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` (same arguments, variables and results) convolving with
    :func:`conv2d`: without Keras' two layout copies per call on torch."""

    def convolution_op(self, inputs, kernel):
        if tuple(self.dilation_rate) != (1, 1) or self.groups != 1 or self.data_format != "channels_last":
            return super().convolution_op(inputs, kernel)
        return conv2d(inputs, kernel, strides=self.strides, padding=self.padding)
