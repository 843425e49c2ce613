"""The sub-pixel form of the generator's 4x4 stride-2 transposed convolution is exact.

``SubPixelConv2DTranspose(implementation="subpixel")`` must give the output and the
gradients (w.r.t. input and the shared 4x4 kernel) of ``Conv2DTranspose`` to 1e-5,
on whichever backend runs the suite; the generator keeps its variables whatever form runs.
"""

import keras
import numpy as np
import pytest
from keras import ops

from nebula_keras3.models import DCGANGenerator
from nebula_keras3.models.conv_as_matmul import FLAT_BACKWARD_MIN_SIZE
from nebula_keras3.models.dcgan.layers import FORMS, SubPixelConv2DTranspose, auto_form


def _layer_pair(cin, cout, seed, form="subpixel"):
    ref = keras.layers.Conv2DTranspose(cout, 4, strides=2, padding="same", use_bias=False)
    sub = SubPixelConv2DTranspose(cout, use_bias=False, implementation=form)
    ref.build((None, 5, 6, cin))
    sub.build((None, 5, 6, cin))
    kernel = np.random.default_rng(seed).normal(size=(4, 4, cout, cin)).astype("float32")
    ref.kernel.assign(kernel)
    sub.kernel.assign(kernel)
    return ref, sub


def _value_and_grads(layer, x, upstream):
    """Output, d<out, upstream>/dx and d<out, upstream>/dkernel on the running backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * upstream)
        gx, gk = tape.gradient(loss, [x, layer.kernel.value])
    elif backend == "jax":
        import jax

        def f(x, k):
            y, _ = layer.stateless_call([k], [], x)
            return ops.sum(y * upstream), y

        (_, y), (gx, gk) = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(x, layer.kernel.value)
    else:
        import torch

        x = torch.tensor(x, requires_grad=True)
        layer.kernel.value.grad = None
        y = layer(x)
        (y * torch.tensor(upstream)).sum().backward()
        gx, gk = x.grad, layer.kernel.value.grad
    return [np.asarray(ops.convert_to_numpy(t)) for t in (y, gx, gk)]


# A small map, and one from which JAX's phase form takes phase_upsample_flat's backward.
MAP_SIZES = [(5, 6), (FLAT_BACKWARD_MIN_SIZE, FLAT_BACKWARD_MIN_SIZE + 1)]


@pytest.mark.parametrize("form", [f for f in FORMS if f != "transpose"])
@pytest.mark.parametrize("cin,cout", [(3, 2), (16, 8), (8, 3)])
@pytest.mark.parametrize("h,w", MAP_SIZES)
def test_subpixel_equals_conv_transpose_forward_and_gradients(cin, cout, form, h, w):
    ref, sub = _layer_pair(cin, cout, seed=cin + cout, form=form)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, h, w, cin)).astype("float32")
    upstream = rng.normal(size=(2, 2 * h, 2 * w, cout)).astype("float32")
    got = _value_and_grads(sub, x, upstream)
    want = _value_and_grads(ref, x, upstream)
    for name, g, w in zip(("output", "input gradient", "kernel gradient"), got, want):
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, atol=1e-5 * max(1.0, np.abs(w).max()), rtol=0, err_msg=name)


def test_generator_forms_share_variables_and_output():
    auto = DCGANGenerator(32, latent_dim=8, ngf=4, seed=3)
    forms = {u: DCGANGenerator(32, latent_dim=8, ngf=4, seed=3, upsample=u) for u in FORMS}
    for g in forms.values():
        assert [v.path for v in g.weights] == [v.path for v in auto.weights]
        g.set_weights(auto.get_weights())
    z = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
    outs = {u: ops.convert_to_numpy(g(z, training=False)) for u, g in forms.items()}
    np.testing.assert_allclose(outs["subpixel"], outs["transpose"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(outs["phase"], outs["transpose"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(ops.convert_to_numpy(auto(z, training=False)), outs["transpose"], atol=1e-5, rtol=0)
    for layer in auto.layers:
        if isinstance(layer, SubPixelConv2DTranspose):
            assert layer.form == auto_form(keras.backend.backend(), layer.filters)


def test_subpixel_layer_refuses_other_shapes():
    with pytest.raises(ValueError, match="4x4, stride-2"):
        SubPixelConv2DTranspose(4, kernel_size=3)
    with pytest.raises(ValueError, match="implementation"):
        SubPixelConv2DTranspose(4, implementation="fast")
