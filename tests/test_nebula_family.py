"""The nebula family: models, their layers, settings, export (its training recipe: test_nebula_training)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import forward_runs_at, make_generator_run, same_worker_path_as_torch, tiny_config

from nebula_keras3.models import NebulaGenerator, ResNetDiscriminator
from nebula_keras3.models.nebula.generator import generator_widths
from nebula_keras3.models.common import SpectralNormalization
from nebula_keras3.models.nebula.layers import DepthToSpace, depth_to_space
from nebula_keras3.training.gan import GAN

def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def values(variables):
    return [to_np(v).copy() for v in variables]


def images(n=8, size=32, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype("float32")


def small_gan(*, d=None, lr=2e-4, g_lr=None, d_optimizer=None, **gan_kwargs):
    g = NebulaGenerator(32, latent_dim=8, ngf=4, seed=0)
    d = d or ResNetDiscriminator(32, ndf=4, seed=1)
    gan = GAN(g, d, seed=0, **gan_kwargs)
    gan.compile(d_optimizer=d_optimizer or keras.optimizers.Adam(lr, beta_1=0.5),
                g_optimizer=keras.optimizers.Adam(lr if g_lr is None else g_lr, beta_1=0.5))
    return gan


# ----------------------------------------------------------------- models


@pytest.mark.parametrize("size,upsample", [(32, "nearest"), (64, "subpixel"), (128, "bilinear"), (256, "subpixel")])
def test_shapes_at_every_size_without_transposed_convs(size, upsample):
    g = NebulaGenerator(size, latent_dim=12, ngf=2, upsample=upsample, seed=0)
    d = ResNetDiscriminator(size, ndf=2, seed=0)
    assert g.output_shape == (None, size, size, 3) and d.output_shape == (None, 1)
    assert not [l for l in g.layers if isinstance(l, keras.layers.Conv2DTranspose)]
    # one x2 stage per doubling from 4x4, widths from generator_widths
    widths = generator_widths(size, 2)
    convs = [l for l in g.layers if isinstance(l, keras.layers.Conv2D) and l.name.startswith("up")]
    per_stage = 4 * 2 if upsample == "subpixel" else 2  # GLU doubles, sub-pixel x4
    assert [l.filters for l in convs] == [w * per_stage for w in widths[1:]]
    if not forward_runs_at(size):
        return
    z = np.random.default_rng(0).normal(size=(2, 12)).astype("float32")
    x = to_np(g(z))
    assert x.shape == (2, size, size, 3) and x.dtype == np.float32 and np.abs(x).max() <= 1.0
    assert to_np(d(x)).shape == (2, 1)


def test_64px_defaults_parameter_counts():
    # nebula64's G (ngf 16 -> 256..16 channels) and the ResNet D option at ndf 32 -> 32..256
    # (counted once here so a change of architecture is a deliberate edit of these numbers).
    g = NebulaGenerator(64, seed=0)
    d = ResNetDiscriminator(64, seed=0)
    count = lambda m: sum(int(np.prod(v.shape)) for v in m.trainable_variables)  # noqa: E731
    assert generator_widths(64, 16) == [256, 128, 64, 32, 16]
    # nebula128 and nebula256 keep nebula64's maps up to 64 px and add narrow stages above them
    assert generator_widths(128, 8) == [256, 128, 64, 32, 16, 8]
    assert generator_widths(256, 8) == [256, 256, 128, 64, 32, 16, 8]
    assert generator_widths(256, 4) == generator_widths(128, 8) + [4]  # grow256 on grow128
    assert count(g) == 1_802_963
    assert count(d) == 1_216_097
    sn = [l for l in d.layers if isinstance(l, SpectralNormalization)]
    assert len(sn) == 4 * 2 + 4 + 1  # two convs per block, four 1x1 skips, the dense


def test_dcgan_discriminator_spectral_norm_option():
    from nebula_keras3.models import DCGANDiscriminator

    d = DCGANDiscriminator(32, ndf=4, spectral_norm=True, seed=0)
    assert len([l for l in d.layers if isinstance(l, SpectralNormalization)]) == 4
    assert not [l for l in d.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert DCGANDiscriminator.from_config(d.get_config()).get_config() == d.get_config()
    assert not DCGANDiscriminator(32, ndf=4).spectral_norm  # the reference stays as it was


@pytest.mark.parametrize("levels", [1, 2])
def test_rgb_skip_draws_the_smaller_image_and_adds_corrections(levels):
    # --rgb-skip k: tanh(bilinear x2 ... of the 1/2^k-size to_rgb + each stage's to_rgb above),
    # the latter zero at initialisation, so a new model draws the upscale of its smallest image.
    g = NebulaGenerator(32, latent_dim=8, ngf=4, rgb_skip=levels, seed=0)
    assert g.output_shape == (None, 32, 32, 3)
    base = 32 >> levels
    assert g.get_layer("to_rgb_conv").output.shape[1:] == (base, base, 3)
    small = keras.Model(g.input, g.get_layer("to_rgb_conv").output)
    z = np.random.default_rng(0).normal(size=(2, 8)).astype("float32")
    upscaled = small(z)
    for _ in range(levels):
        upscaled = keras.layers.UpSampling2D(2, interpolation="bilinear")(upscaled)
    upscaled = to_np(upscaled)
    np.testing.assert_allclose(to_np(g(z)), np.tanh(upscaled), atol=1e-6)
    # each correction counts: once trained away from zero it changes the image
    for size in (32 >> level for level in range(levels)):
        full = g.get_layer(f"to_rgb{size}_conv")
        full.kernel.assign(np.full(full.kernel.shape, 0.05, "float32"))
        assert np.abs(to_np(g(z)) - np.tanh(upscaled)).max() > 1e-3
        full.kernel.assign(np.zeros(full.kernel.shape, "float32"))
    assert NebulaGenerator.from_config(g.get_config()).get_config() == g.get_config()
    with pytest.raises(ValueError, match="rgb_skip must be 0..3 levels at 32 px, got 4"):
        NebulaGenerator(32, latent_dim=8, ngf=4, rgb_skip=4)


def test_depth_to_space_order_and_icnr_start():
    x = np.arange(2 * 3 * 3 * 8, dtype="float32").reshape(2, 3, 3, 8)
    got = to_np(depth_to_space(keras.ops.convert_to_tensor(x)))
    want = np.zeros((2, 6, 6, 2), "float32")
    for i in range(2):
        for j in range(2):
            want[:, i::2, j::2, :] = x[..., (i * 2 + j) * 2:(i * 2 + j + 1) * 2]
    np.testing.assert_array_equal(got, want)
    # ICNR: the four phases start equal, so a sub-pixel stage starts as nearest upsampling
    g = NebulaGenerator(32, latent_dim=8, ngf=4, upsample="subpixel", sle=False, seed=0)
    shuffle = g.get_layer("up8_shuffle")
    sub = keras.Model(g.input, shuffle.output)
    y = to_np(sub(np.ones((1, 8), "float32")))  # [1, 8, 8, C]
    np.testing.assert_array_equal(y[:, 0::2, 0::2], y[:, 1::2, 1::2])
    assert isinstance(shuffle, DepthToSpace)


def test_keras_round_trip(tmp_path):
    g = NebulaGenerator(32, latent_dim=8, ngf=4, upsample="subpixel", activation="glu", sle=True, seed=3)
    d = ResNetDiscriminator(32, ndf=4, spectral_norm=True, seed=4)
    assert g.get_config() == {"image_size": 32, "latent_dim": 8, "ngf": 4, "upsample": "subpixel",
                              "activation": "glu", "sle": True, "rgb_skip": 0, "seed": 3,
                              "name": "generator"}
    assert d.get_config() == {"image_size": 32, "ndf": 4, "spectral_norm": True, "seed": 4, "name": "discriminator"}
    z = np.random.default_rng(1).normal(size=(3, 8)).astype("float32")
    x = images(3)
    for model, inp in ((g, z), (d, x)):
        model.save(tmp_path / f"{model.name}.keras")
        loaded = keras.saving.load_model(tmp_path / f"{model.name}.keras")
        assert loaded.get_config() == model.get_config()
        np.testing.assert_allclose(to_np(loaded(inp)), to_np(model(inp)), atol=1e-6)


def test_bad_settings_are_clear_errors():
    for bad, match in ((dict(loss="wgan"), "unknown loss"), (dict(diffaugment="color,blur"), "unknown DiffAugment"),
                       (dict(ema_decay=1.0), "ema-decay"), (dict(r1_every=0), "r1-every"),
                       (dict(model="stylegan"), "unknown model"), (dict(upsample="bicubic"), "unknown upsample"),
                       (dict(d_coarse_size=32), "d-coarse-size must be one of 8, 16 at 32 px"),
                       (dict(d_coarse_size=16, discriminator="resnet"), "not 'resnet'"),
                       (dict(d_coarse_size=16, d_coarse_ndf=0), "d-coarse-ndf must be positive"),
                       (dict(rgb_skip=1), "rgb-skip is an option of the nebula generator"),
                       (dict(rgb_skip=4, model="nebula"), r"rgb-skip must be 0..3 levels at 32 px")):
        with pytest.raises(ValueError, match=match):
            tiny_config(**bad).validate()


# ----------------------------------------------------------------- export and sampling


@same_worker_path_as_torch
@pytest.mark.parametrize("upsample,rgb_skip", [("bilinear", 0), ("nearest", 2)])
def test_bilinear_resizes_export_with_parity(tmp_path, upsample, rgb_skip):
    # The bilinear stages (and --rgb-skip's bilinear upscale of the half-size image) export as
    # standard ONNX Resize (half-pixel linear) + Conv; ONNX Runtime and the SavedModel must
    # resize exactly as Keras does, edges included.
    pytest.importorskip("tf2onnx")
    onnx = pytest.importorskip("onnx")
    from nebula_keras3.export.api import export_generator

    run = make_generator_run(tmp_path / "run", image_size=32, latent_dim=16, ngf=4, model="nebula",
                             upsample=upsample, rgb_skip=rgb_skip)
    result = export_generator(run, saved_model_base=tmp_path / "models", onnx_path=tmp_path / "neb.onnx")
    assert max(r["max_uint8"] for r in result.parity.values()) <= 1
    assert result.saved_model_check and all(v <= 1 for v in result.saved_model_check.values())
    ops = {n.op_type for n in onnx.load(result.onnx_path).graph.node}
    assert "Resize" in ops and not ops & {"ConvTranspose", "Tile"}


def test_nebula_generator_exports_to_standard_onnx_and_saved_model_with_parity(tmp_path):
    pytest.importorskip("tf2onnx")
    onnx = pytest.importorskip("onnx")
    from click.testing import CliRunner

    from nebula_keras3.export.api import export_generator
    from nebula_keras3.sampling.cli import sample_command

    run = make_generator_run(tmp_path / "run", image_size=32, latent_dim=16, ngf=4, model="nebula")
    result = export_generator(run, saved_model_base=tmp_path / "models", onnx_path=tmp_path / "neb.onnx")
    assert max(r["max_uint8"] for r in result.parity.values()) <= 1
    # the SavedModel's signatures (traced in the export form too) against Keras in its trained form
    assert result.saved_model_check and all(v <= 1 for v in result.saved_model_check.values())
    m = onnx.load(result.onnx_path)
    assert {n.domain for n in m.graph.node} <= {"", "ai.onnx"}  # standard ops only
    # the upsampling layers' export form: one 2x2 conv per layer, no upsampled copy of the map
    assert not {n.op_type for n in m.graph.node} & {"ConvTranspose", "Tile", "Resize"}
    out = {}
    for flag, src in (("--onnx", result.onnx_path), ("--model", run)):
        r = CliRunner().invoke(sample_command, [flag, str(src), "-n", "5", "--seed", "3", "--npy",
                                                str(tmp_path / f"{flag[2:]}.npy")], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        out[flag] = np.load(tmp_path / f"{flag[2:]}.npy")
    assert np.abs(out["--onnx"].astype(int) - out["--model"]).max() <= 1
