"""Keras pieces both model families use: spectral normalisation and per-layer seeds."""

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
