"""models.common's BatchNorm and conv2d / Conv2D: Keras' BatchNormalization and ops.conv,
computed on torch by torch's own kernels without Keras' layout copies and composed ops.

The same weights and inputs give the same outputs, gradients (and BatchNorm's moving
statistics) as Keras' own layer or op, at float32 and under bf16 mixed precision."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from nebula_keras3.models.common import BatchNorm, Conv2D, conv2d


def _pair(dtype_policy):
    kw = dict(momentum=0.9, epsilon=1e-5, dtype=dtype_policy)
    ours, theirs = BatchNorm(**kw), keras.layers.BatchNormalization(**kw)
    rng = np.random.default_rng(0)
    for layer in (ours, theirs):
        layer.build((None, 6, 6, 5))
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        value = rng.uniform(0.5, 1.5, 5).astype("float32") if name != "beta" else rng.normal(size=5).astype("float32")
        getattr(ours, name).assign(value)
        getattr(theirs, name).assign(value)
    return ours, theirs


def _grads(layer, x, training):
    """Output, and the gradient of sum(output * w) with respect to the input, gamma and beta."""
    w = np.random.default_rng(1).normal(size=x.shape).astype("float32")
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        y = layer(xt, training=training)
        (y.float() * torch.tensor(w)).sum().backward()
        return (y.detach().float().numpy(), xt.grad.numpy(), layer.gamma.value.grad.numpy(),
                layer.beta.value.grad.numpy())
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=training)
            loss = tf.reduce_sum(tf.cast(y, "float32") * w)
        gx, gg, gb = tape.gradient(loss, [xt, layer.gamma.value, layer.beta.value])
        return np.asarray(tf.cast(y, "float32")), gx.numpy(), gg.numpy(), gb.numpy()
    import jax

    y = np.asarray(layer(x, training=training)).astype("float32")
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def loss(x, trainable):
        out, _ = layer.stateless_call(trainable, non_trainable, x, training=training)
        return (out.astype("float32") * w).sum()

    gx, (gg, gb) = jax.grad(loss, argnums=(0, 1))(x, trainable)
    return y, np.asarray(gx), np.asarray(gg), np.asarray(gb)


@pytest.mark.parametrize("policy, tol", [("float32", 1e-5), ("mixed_bfloat16", 5e-2)])
@pytest.mark.parametrize("training", [True, False])
def test_same_results_as_keras_batch_normalization(policy, tol, training):
    ours, theirs = _pair(policy)
    x = np.random.default_rng(2).normal(1.0, 2.0, (4, 6, 6, 5)).astype("float32")
    got, want = _grads(ours, x, training), _grads(theirs, x, training)
    for name, a, b in zip(("output", "d input", "d gamma", "d beta"), got, want):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max())), err_msg=name)
    for name in ("moving_mean", "moving_variance"):  # float32 statistics whatever the compute dtype
        np.testing.assert_allclose(keras.ops.convert_to_numpy(getattr(ours, name)),
                                   keras.ops.convert_to_numpy(getattr(theirs, name)), rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    if training:  # the statistics moved
        assert not np.allclose(keras.ops.convert_to_numpy(ours.moving_mean), keras.ops.convert_to_numpy(_pair(policy)[0].moving_mean))


def test_round_trip_and_fallbacks(tmp_path):
    x = keras.Input((4, 4, 3))
    model = keras.Model(x, BatchNorm(name="bn")(x))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.get_layer("bn")) is BatchNorm
    # 2-D inputs (a Dense stem's BatchNorm) take Keras' own path on every backend
    dense = BatchNorm()
    out = dense(np.ones((3, 7), "float32"), training=True)
    assert tuple(out.shape) == (3, 7)


@pytest.mark.parametrize("size, k, strides, padding", [
    (9, 3, 1, "same"), (8, 4, 2, "same"), (9, 4, 2, "same"), (7, 2, 1, "same"), (5, 4, 1, "valid"), (8, 1, 1, "same"),
])
def test_conv2d_equals_ops_conv(size, k, strides, padding):
    """Odd and even kernels, stride 1 and 2: TensorFlow's "same" padding (the odd pixel after)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, size, size, 3)).astype("float32")
    kernel = rng.normal(size=(k, k, 3, 4)).astype("float32")
    got = keras.ops.convert_to_numpy(conv2d(x, kernel, strides=strides, padding=padding))
    want = keras.ops.convert_to_numpy(keras.ops.conv(x, kernel, strides=strides, padding=padding))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv2d_layer_matches_keras_conv2d_forward_and_gradients():
    ours = Conv2D(4, 3, strides=2, padding="same")
    theirs = keras.layers.Conv2D(4, 3, strides=2, padding="same")
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 3)).astype("float32")
    ours.build(x.shape)
    theirs.build(x.shape)
    for a, b in zip(ours.weights, theirs.weights):
        b.assign(a)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(theirs(x)),
                               rtol=1e-5, atol=1e-5)
    if keras.backend.backend() == "torch":  # the gradient through torch's kernel
        import torch

        grads = []
        for layer in (ours, theirs):
            xt = torch.tensor(x, requires_grad=True)
            (layer(xt) ** 2).sum().backward()
            grads.append((xt.grad.numpy(), layer.kernel.value.grad.numpy()))
        for a, b in zip(*grads):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
