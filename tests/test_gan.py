"""GAN(keras.Model): the per-backend train step, optimizers, generate, .keras round trip."""

import keras
import numpy as np
import pytest

from nebula_keras3.models import DCGANDiscriminator, DCGANGenerator
from nebula_keras3.training.gan import GAN


def make_gan(d_lr=2e-4, g_lr=2e-4, seed=0, coarse_size=0):
    g = DCGANGenerator(32, latent_dim=8, ngf=4, seed=seed)
    d = DCGANDiscriminator(32, ndf=4, seed=seed + 1, coarse_size=coarse_size, coarse_ndf=4)
    gan = GAN(g, d, seed=seed)
    gan.compile(
        d_optimizer=keras.optimizers.Adam(d_lr, beta_1=0.5),
        g_optimizer=keras.optimizers.Adam(g_lr, beta_1=0.5),
    )
    return gan


def images(n=16, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 32, 32, 3)).astype("float32")


def numpy_values(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def changed(before, variables):
    return [not np.array_equal(b, keras.ops.convert_to_numpy(v)) for b, v in zip(before, variables)]


def test_step_reports_losses_and_probabilities():
    gan = make_gan()
    history = gan.fit(images(), batch_size=8, epochs=1, verbose=0)
    logs = {k: v[-1] for k, v in history.history.items()}
    assert set(logs) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(np.isfinite(v) for v in logs.values())
    assert 0.0 < logs["d_real"] < 1.0 and 0.0 < logs["d_fake"] < 1.0
    # At initialisation D is near chance: d_loss ~ 2 ln 2, g_loss ~ ln 2.
    assert 0.8 < logs["d_loss"] < 2.2 and 0.3 < logs["g_loss"] < 1.5


@pytest.mark.parametrize("coarse_size", [0, 8], ids=["one-scale-d", "multi-scale-d"])
def test_each_optimizer_updates_only_its_network_once_per_step(coarse_size):
    gan = make_gan(coarse_size=coarse_size)
    d_vars, g_vars = gan.discriminator.trainable_variables, gan.generator.trainable_variables
    d0, g0 = numpy_values(d_vars), numpy_values(g_vars)
    d_stats0 = numpy_values(gan.discriminator.non_trainable_variables)
    gan.fit(images(24), batch_size=8, epochs=1, verbose=0)  # 3 steps
    assert all(changed(d0, d_vars)) and all(changed(g0, g_vars))
    assert any(changed(d_stats0, gan.discriminator.non_trainable_variables))  # BN statistics move
    # Two separate Adams, each stepped once per GAN step (bias correction intact).
    assert int(keras.ops.convert_to_numpy(gan.d_optimizer.iterations)) == 3
    assert int(keras.ops.convert_to_numpy(gan.g_optimizer.iterations)) == 3
    assert gan.steps_done == 3


@pytest.mark.parametrize("frozen", ["d", "g"])
def test_zero_learning_rate_freezes_exactly_that_network(frozen):
    gan = make_gan(d_lr=0.0 if frozen == "d" else 2e-4, g_lr=0.0 if frozen == "g" else 2e-4)
    d_vars, g_vars = gan.discriminator.trainable_variables, gan.generator.trainable_variables
    d0, g0 = numpy_values(d_vars), numpy_values(g_vars)
    gan.fit(images(8), batch_size=8, epochs=1, verbose=0)
    assert not any(changed(d0 if frozen == "d" else g0, d_vars if frozen == "d" else g_vars))
    assert all(changed(g0 if frozen == "d" else d0, g_vars if frozen == "d" else d_vars))


def test_latents_come_from_the_seed_generator_and_advance():
    gan = make_gan()
    state0 = keras.ops.convert_to_numpy(gan.seed_generator.state).copy()
    gan.fit(images(16), batch_size=8, epochs=1, verbose=0)
    assert not np.array_equal(state0, keras.ops.convert_to_numpy(gan.seed_generator.state))


def test_same_seed_same_training():
    a, b = make_gan(), make_gan()
    a.fit(images(16), batch_size=8, epochs=1, verbose=0, shuffle=False)
    b.fit(images(16), batch_size=8, epochs=1, verbose=0, shuffle=False)
    for x, y in zip(a.variables, b.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y))


def test_generate_is_deterministic_and_uses_image_seeds():
    gan = make_gan()
    x = gan.generate(4, seed=10)
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, gan.generate(4, seed=10))
    np.testing.assert_array_equal(x[2:], gan.generate(2, seed=12))  # image seeds 10..13
    with pytest.raises(ValueError):
        gan.generate(0)


def test_keras_round_trip_keeps_both_models_and_optimizers(tmp_path):
    gan = make_gan()
    gan.fit(images(16), batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "gan.keras"
    gan.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, GAN)
    np.testing.assert_array_equal(loaded.generate(3, seed=1), gan.generate(3, seed=1))
    x = images(4, seed=5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded.discriminator(x, training=False)),
        keras.ops.convert_to_numpy(gan.discriminator(x, training=False)),
        atol=1e-6,
    )
    assert loaded.steps_done == gan.steps_done == 2
    for a, b in zip(loaded.optimizer.variables, gan.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    loaded.fit(images(8), batch_size=8, epochs=1, verbose=0)  # trains on after loading
    assert loaded.steps_done == 3
