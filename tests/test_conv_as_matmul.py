"""The matmul forms of the nebula G's upsample conv and the DCGAN D's stride-2 and logit convs are exact.

Each form must give the output and the gradients (w.r.t. input and kernel) of the plain Keras
computation it replaces, to 1e-5, on whichever backend runs the suite.
"""

import keras
import numpy as np
import pytest

from nebula_keras3.models.dcgan.layers import Stride2Conv2D, WholeMapConv2D
from nebula_keras3.models.nebula.layers import FORMS, NearestUpsampleConv2D
from tests.test_subpixel import MAP_SIZES, _value_and_grads


def _assert_same(got, want):
    for name, g, w in zip(("output", "input gradient", "kernel gradient"), got, want):
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, atol=1e-5 * max(1.0, np.abs(w).max()), rtol=0, err_msg=name)


def _assert_layer_equals_reference(layer, ref, x_shape, out_hw, rng):
    """Both layers get one random kernel; output and gradients of x [x_shape] -> [B, *out_hw, filters] agree."""
    for lay in (ref, layer):
        lay.build((None, *x_shape[1:]))
    kernel = rng.normal(size=(*layer.kernel_size, x_shape[-1], layer.filters)).astype("float32")
    ref.kernel.assign(kernel)
    layer.kernel.assign(kernel)
    x = rng.normal(size=x_shape).astype("float32")
    upstream = rng.normal(size=(x_shape[0], *out_hw, layer.filters)).astype("float32")
    _assert_same(_value_and_grads(layer, x, upstream), _value_and_grads(ref, x, upstream))


def _reference_upsample_conv(cout):
    """UpSampling2D(nearest) + Conv2D 3x3 'same', one layer whose kernel is the conv's."""

    class Ref(keras.layers.Conv2D):
        def call(self, x):
            return super().call(keras.ops.repeat(keras.ops.repeat(x, 2, axis=1), 2, axis=2))

    return Ref(cout, 3, padding="same", use_bias=False)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("cin,cout", [(3, 2), (16, 8)])
@pytest.mark.parametrize("h,w", MAP_SIZES)
def test_nearest_upsample_conv_forms_equal_upsample_then_conv(cin, cout, form, h, w):
    rng = np.random.default_rng(cin * 7 + cout)
    ref, layer = _reference_upsample_conv(cout), NearestUpsampleConv2D(cout, use_bias=False, implementation=form)
    _assert_layer_equals_reference(layer, ref, (2, h, w, cin), (2 * h, 2 * w), rng)


@pytest.mark.parametrize("form", ["direct", "matmul"])
@pytest.mark.parametrize("cin,cout", [(3, 4), (8, 16)])
def test_stride2_conv_forms_equal_keras_conv(cin, cout, form):
    rng = np.random.default_rng(cin + cout)
    ref = keras.layers.Conv2D(cout, 4, strides=2, padding="same", use_bias=False)
    layer = Stride2Conv2D(cout, use_bias=False, implementation=form)
    _assert_layer_equals_reference(layer, ref, (2, 8, 6, cin), (4, 3), rng)


@pytest.mark.parametrize("cin,cout", [(16, 1), (5, 3)])
def test_whole_map_conv_equals_keras_valid_conv(cin, cout):
    rng = np.random.default_rng(cin * cout)
    ref = keras.layers.Conv2D(cout, 4, padding="valid", use_bias=False)
    layer = WholeMapConv2D(cout, 4, use_bias=False)
    _assert_layer_equals_reference(layer, ref, (3, 4, 4, cin), (1, 1), rng)


def test_layers_refuse_other_shapes_and_forms():
    with pytest.raises(ValueError, match="must cover its input map"):
        WholeMapConv2D(1, 4).build((None, 8, 8, 3))
    with pytest.raises(ValueError, match="stride-1 'valid'"):
        WholeMapConv2D(1, 4, padding="same")
    with pytest.raises(ValueError, match="no dilation, no groups"):
        WholeMapConv2D(2, 4, groups=2)
    with pytest.raises(ValueError, match="3x3, stride-1"):
        NearestUpsampleConv2D(4, kernel_size=5)
    with pytest.raises(ValueError, match="implementation"):
        NearestUpsampleConv2D(4, implementation="fast")
    with pytest.raises(ValueError, match="4x4, stride-2"):
        Stride2Conv2D(4, kernel_size=3)
    with pytest.raises(ValueError, match="implementation"):
        Stride2Conv2D(4, implementation="fast")


def test_layers_rebuild_from_their_json_config():
    # A config read back from JSON holds [1, 1] where the constructor got (1, 1) or 1.
    import json

    from nebula_keras3.models.dcgan.layers import SubPixelConv2DTranspose

    for layer in (NearestUpsampleConv2D(4), Stride2Conv2D(4, implementation="matmul"), WholeMapConv2D(1, 4),
                  SubPixelConv2DTranspose(4)):
        config = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
        back = keras.saving.deserialize_keras_object(config)
        assert type(back) is type(layer) and back.get_config() == layer.get_config()


def test_export_forms_are_forms_of_their_layers():
    from nebula_keras3.models.dcgan import layers as dcgan_layers
    from nebula_keras3.models.nebula import layers as nebula_layers

    declared = {cls: getattr(cls, "export_form", None) for module in (dcgan_layers, nebula_layers)
                for cls in vars(module).values() if isinstance(cls, type)}
    assert declared[dcgan_layers.SubPixelConv2DTranspose] in dcgan_layers.FORMS
    assert declared[NearestUpsampleConv2D] in FORMS
    # the other layers (Stride2Conv2D, WholeMapConv2D, ...) are not changed by an export
    assert {cls for cls, form in declared.items() if form} == {dcgan_layers.SubPixelConv2DTranspose,
                                                               NearestUpsampleConv2D}


def test_export_forms_apply_inside_the_block_only_and_give_the_same_images():
    from nebula_keras3.models import NebulaGenerator
    from nebula_keras3.models.export_forms import export_forms
    from nebula_keras3.models.nebula.layers import EXPORT_FORM

    g = NebulaGenerator(32, latent_dim=8, ngf=2, seed=0)
    ups = [layer for layer in g.layers if isinstance(layer, NearestUpsampleConv2D)]
    assert ups and EXPORT_FORM != "auto"
    z = np.random.default_rng(0).normal(size=(2, 8)).astype("float32")
    trained_form = keras.ops.convert_to_numpy(g(z))
    with export_forms(g):
        assert {layer.form for layer in ups} == {EXPORT_FORM}
        exported_form = keras.ops.convert_to_numpy(g(z))
    assert {layer.implementation for layer in ups} == {"auto"}
    np.testing.assert_allclose(exported_form, trained_form, atol=1e-5)
    with pytest.raises(KeyError), export_forms(g):
        raise KeyError("a failed export")
    assert {layer.implementation for layer in ups} == {"auto"}
