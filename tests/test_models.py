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
