"""DCGAN generator/discriminator: shapes at every size, the 64 px reference recipe."""

import keras
import numpy as np
import pytest
from conftest import forward_runs_at

from nebula_keras3.models import DCGANDiscriminator, DCGANGenerator


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_shapes_at_every_size(size):
    g = DCGANGenerator(size, latent_dim=12, ngf=4, seed=0)
    d = DCGANDiscriminator(size, ndf=4, seed=0)
    assert g.output_shape == (None, size, size, 3)
    assert d.output_shape == (None, 1)
    if not forward_runs_at(size):
        return
    z = np.random.default_rng(0).normal(size=(2, 12)).astype("float32")
    x = keras.ops.convert_to_numpy(g(z))
    assert x.shape == (2, size, size, 3)
    assert np.abs(x).max() <= 1.0  # tanh
    assert keras.ops.convert_to_numpy(d(x)).shape == (2, 1)


def test_64px_matches_the_reference_recipe():
    g = DCGANGenerator(64, seed=0)
    d = DCGANDiscriminator(64, seed=0)
    # pytorch/examples dcgan: netG 3,576,704 and netD 2,765,568 trainable parameters.
    assert sum(int(np.prod(v.shape)) for v in g.trainable_variables) == 3_576_704
    assert sum(int(np.prod(v.shape)) for v in d.trainable_variables) == 2_765_568
    convts = [l for l in g.layers if isinstance(l, keras.layers.Conv2DTranspose)]
    assert [l.filters for l in convts] == [512, 256, 128, 64, 3]
    assert all(l.kernel_size == (4, 4) and not l.use_bias for l in convts)
    convs = [l for l in d.layers if isinstance(l, keras.layers.Conv2D)]
    assert [l.filters for l in convs] == [64, 128, 256, 512, 1]
    bns = [l for l in d.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns) == 3  # none after the first conv
    assert all(abs(l.epsilon - 1e-5) < 1e-12 and abs(l.momentum - 0.9) < 1e-12 for l in bns)
    leaky = [l for l in d.layers if isinstance(l, keras.layers.LeakyReLU)]
    assert all(abs(l.negative_slope - 0.2) < 1e-12 for l in leaky)
    # Weights ~ N(0, 0.02); BatchNorm gamma ~ N(1, 0.02).
    k = keras.ops.convert_to_numpy(convts[1].kernel)
    assert abs(k.mean()) < 2e-3 and abs(k.std() - 0.02) < 2e-3
    gamma = keras.ops.convert_to_numpy(g.get_layer("up1_bn").gamma)
    assert abs(gamma.mean() - 1.0) < 5e-3 and abs(gamma.std() - 0.02) < 5e-3


def test_multi_scale_discriminator_also_judges_the_pooled_image():
    """coarse_size adds a second logit that sees only the image's block means; the first is the plain D's."""
    plain = DCGANDiscriminator(32, ndf=4, seed=0)
    d = DCGANDiscriminator(32, ndf=4, seed=0, coarse_size=8, coarse_ndf=4)
    assert d.output_shape == (None, 2)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (4, 32, 32, 3)).astype("float32")
    logits = keras.ops.convert_to_numpy(d(x))
    np.testing.assert_allclose(logits[:, :1], keras.ops.convert_to_numpy(plain(x)), rtol=1e-5, atol=1e-6)
    # A +-0.2 checkerboard has mean 0 over every 4x4 block: only the full-size logit sees it.
    checker = 0.2 * (np.indices((32, 32)).sum(axis=0) % 2 * 2 - 1)[None, :, :, None]
    moved = keras.ops.convert_to_numpy(d((x + checker).astype("float32")))
    np.testing.assert_allclose(moved[:, 1], logits[:, 1], rtol=1e-3, atol=0)  # logits are ~1e-4 at init
    assert np.linalg.norm(moved[:, 0] - logits[:, 0]) > 0.05 * np.linalg.norm(logits[:, 0])
    # Its own layers, fresh names and seeds: nothing of the full-size stack is shared.
    coarse = [v for v in d.trainable_variables if "coarse" in v.path]
    assert len(coarse) == len(d.trainable_variables) - len(plain.trainable_variables) > 0
    assert DCGANDiscriminator.from_config(d.get_config()).output_shape == (None, 2)
    with pytest.raises(ValueError, match=r"coarse discriminator's size must be one of \(8, 16\)"):
        DCGANDiscriminator(32, ndf=4, coarse_size=32)


def test_unsupported_size_is_a_clear_error():
    with pytest.raises(ValueError, match="image_size must be one of"):
        DCGANGenerator(48)


def test_get_config_is_the_constructor_arguments():
    g = DCGANGenerator(32, latent_dim=7, ngf=3, seed=5)
    assert g.get_config() == {"image_size": 32, "latent_dim": 7, "ngf": 3, "seed": 5, "upsample": "auto",
                              "name": "generator"}
    clone = DCGANGenerator.from_config(g.get_config())
    assert clone.output_shape == g.output_shape
    d = DCGANDiscriminator(32, ndf=3, seed=5)
    assert DCGANDiscriminator.from_config(d.get_config()).get_config() == d.get_config()


# Saved models name their classes by these registered names; moving a class between modules
# keeps them (package + class name), renaming one or its package would orphan every saved file.
REGISTERED = {
    "BatchNorm", "Conv2D", "DCGANDiscriminator", "DCGANGenerator", "DepthToSpace", "GLU", "GlobalSumPooling2D", "ICNR",
    "NearestUpsampleConv2D", "NebulaGenerator", "ResNetDiscriminator", "SpectralNormalization",
    "Stride2Conv2D", "SubPixelConv2DTranspose", "WholeMapConv2D",
}


def test_registered_names_are_stable():
    import nebula_keras3.models.dcgan
    import nebula_keras3.models.nebula  # noqa: F401

    ours = {k for k, v in keras.saving.get_custom_objects().items() if v.__module__.startswith("nebula_keras3.models")}
    assert ours == {f"nebula_keras3>{name}" for name in REGISTERED}


def test_models_package_and_options_import_no_keras_and_the_families_stay_apart():
    """The training config reads the model options without Keras; neither family imports the other."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, nebula_keras3.models, nebula_keras3.models.options, nebula_keras3.training.config; "
            "print('keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
    models = Path(__file__).resolve().parents[1] / "nebula_keras3" / "models"
    for family, other in (("dcgan", "nebula"), ("nebula", "dcgan")):
        for path in (models / family).glob("*.py"):
            imported = [n.module or "" for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)]
            imported += [a.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import)
                         for a in n.names]
            assert not [m for m in imported if m.startswith(f"nebula_keras3.models.{other}")], path
            assert not [m for m in imported if m.startswith("nebula_keras3.training")], path


@pytest.mark.backend_independent  # Keras' class registry
def test_loaders_register_the_classes_they_load_in_a_fresh_process(tmp_path):
    """The sampler and the exporter load a saved nebula generator with nothing else imported first."""
    import subprocess
    import sys

    from conftest import make_generator_run

    run = make_generator_run(tmp_path / "run", model="nebula")
    code = (
        "from nebula_keras3.sampling.keras_sampler import KerasSampler\n"
        f"print(type(KerasSampler({str(run)!r}).model).__name__)\n"
        "from nebula_keras3.export.api import load_generator\n"
        f"print(type(load_generator({str(run)!r})[0]).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["NebulaGenerator", "NebulaGenerator"]
