"""The nebula family's training recipe: DiffAugment, hinge, R1, spectral norm, EMA, exact resume."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import tiny_config

from nebula_keras3.models.common import SpectralNormalization
from nebula_keras3.training import augment as augment_module
from nebula_keras3.training import trainer
from nebula_keras3.training.augment import DiffAugment, cutout_size, translation_shift
from nebula_keras3.training.checkpoint import checkpoint_path
from tests.test_nebula_family import images, small_gan, to_np, values

quiet = dict(progress=False, echo=lambda *_: None)
POLICY = "color,translation,cutout"


# ----------------------------------------------------------------- DiffAugment


def diffaugment_numpy(x, p):
    """Straight transcription of DiffAugment_pytorch.py (NCHW there, NHWC here) with given draws."""
    x = x.astype(np.float64)
    b, h, w, _ = x.shape
    x = x + (p["brightness"][:, None, None, None] - 0.5)
    m = x.mean(axis=3, keepdims=True)
    x = (x - m) * (p["saturation"][:, None, None, None] * 2) + m
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - m) * (p["contrast"][:, None, None, None] + 0.5) + m
    # translation: pad by one zero, gather at clamp(index + shift + 1, 0, size + 1)
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.empty_like(x)
    for n in range(b):
        gi = np.clip(np.arange(h) + p["translation"][n, 0] + 1, 0, h + 1)
        gj = np.clip(np.arange(w) + p["translation"][n, 1] + 1, 0, w + 1)
        out[n] = pad[n][gi][:, gj]
    x = out
    # cutout: zero mask at clamp(index + offset - c // 2, 0, size - 1)
    c = cutout_size(h)
    mask = np.ones((b, h, w))
    for n in range(b):
        gi = np.clip(np.arange(c) + p["cutout"][n, 0] - c // 2, 0, h - 1)
        gj = np.clip(np.arange(c) + p["cutout"][n, 1] - c // 2, 0, w - 1)
        mask[n][np.ix_(gi, gj)] = 0
    return x * mask[..., None]


def test_diffaugment_apply_matches_the_reference():
    rng = np.random.default_rng(0)
    b, size = 16, 32
    s = translation_shift(size)
    params = {
        "brightness": rng.uniform(size=b).astype("float32"),
        "saturation": rng.uniform(size=b).astype("float32"),
        "contrast": rng.uniform(size=b).astype("float32"),
        "translation": rng.integers(-s, s + 1, (b, 2)).astype("int32"),
        "cutout": rng.integers(0, size + 1 - cutout_size(size) % 2, (b, 2)).astype("int32"),
    }
    params["translation"][:4] = [[-s, s], [s, -s], [0, 0], [-s, -s]]  # the extremes
    params["cutout"][:2] = [[0, size], [size, 0]]
    x = images(b, size)
    got = to_np(DiffAugment(POLICY).apply(keras.ops.convert_to_tensor(x), params))
    np.testing.assert_allclose(got, diffaugment_numpy(x, params), atol=2e-6)


def test_diffaugment_draws_cover_the_reference_ranges():
    aug = DiffAugment(POLICY)
    p = {k: to_np(v) for k, v in aug.draw(512, 32, keras.random.SeedGenerator(0)).items()}
    s, c = translation_shift(32), cutout_size(32)
    assert (p["translation"].min(), p["translation"].max()) == (-s, s)
    assert (p["cutout"].min(), p["cutout"].max()) == (0, 32 - c % 2)
    for k in ("brightness", "saturation", "contrast"):
        assert 0 <= p[k].min() < 0.05 and 0.95 < p[k].max() < 1
    with pytest.raises(ValueError, match="unknown DiffAugment op"):
        DiffAugment("color,zoom")


def test_augmentation_reaches_the_generator_step(monkeypatch):
    """Fakes go through DiffAugment in G's step: an augmentation that blanks images
    leaves G without gradient (its weights stay put), while D still learns. (The control, the
    same GAN and step with the real augmentation moving G: test_ema_follows_the_formula...)"""
    def blank(self, x, params):
        return x * 0.0

    monkeypatch.setattr(augment_module.DiffAugment, "apply", blank)
    gan = small_gan(augment=POLICY)
    g0, d0 = values(gan.generator.trainable_variables), values(gan.discriminator.trainable_variables)
    gan.fit(images(8), batch_size=8, epochs=1, verbose=0, shuffle=False)
    for before, v in zip(g0, gan.generator.trainable_variables):
        np.testing.assert_array_equal(before, to_np(v), err_msg=v.path)
    assert any(not np.array_equal(b, to_np(v)) for b, v in zip(d0, gan.discriminator.trainable_variables))


# ----------------------------------------------------------------- losses, R1, spectral norm


def test_hinge_losses_on_known_logits():
    gan = small_gan(loss="hinge")
    r = np.array([[2.0], [0.5], [-1.0], [0.0]], "float32")
    f = np.array([[-2.0], [0.3], [1.5], [-0.5]], "float32")
    want_d = np.maximum(0, 1 - r).mean() + np.maximum(0, 1 + f).mean()
    assert float(to_np(gan.real_fake_loss(r, f))) == pytest.approx(want_d, abs=1e-6)
    assert float(to_np(gan.generator_loss(f))) == pytest.approx(-f.mean(), abs=1e-6)


def linear_discriminator(size=32):
    x = keras.Input((size, size, 3))
    y = keras.layers.Dense(1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.005, seed=5))(
        keras.layers.Flatten()(x))
    return keras.Model(x, y, name="discriminator")


def test_r1_gradient_is_the_analytic_value_on_due_steps_only():
    """D(x) = w.x + b has grad_x D = w, so R1 = (gamma/2) k ||w||^2 adds gamma k w to D's
    gradient on every k-th step and nothing on the others. With hinge inside its margin,
    a frozen G and SGD, the adversarial gradient does not depend on w, so after steps 0
    (due) and 1 (not due) the R1 run's w differs from the plain run's by -lr gamma k w0."""
    lr, gamma, k = 0.1, 2.0, 2
    after = {}
    for g in (0.0, gamma):
        gan = small_gan(d=linear_discriminator(), augment=POLICY, loss="hinge", r1_gamma=g, r1_every=k,
                        g_lr=0.0, d_optimizer=keras.optimizers.SGD(lr))
        w0 = to_np(gan.discriminator.trainable_variables[0]).copy()
        history = gan.fit(images(16), batch_size=8, epochs=1, verbose=0, shuffle=False)  # steps 0, 1
        after[g] = to_np(gan.discriminator.trainable_variables[0])
        assert gan.steps_done == 2
    logits_in_margin = max(abs(np.log(p / (1 - p))) for p in history.history["d_real"] + history.history["d_fake"])
    assert logits_in_margin < 1  # (means of sigmoid: a rough check that hinge stays linear)
    np.testing.assert_allclose(after[gamma] - after[0.0], -lr * gamma * k * w0, atol=2e-6)


def test_spectral_norm_keeps_the_top_singular_value_near_one():
    gan = small_gan(lr=0.02)  # large steps: raw kernels drift far from norm 1
    sn_layers = [l for l in gan.discriminator.layers if isinstance(l, SpectralNormalization)]
    u0 = values([l.vector_u for l in sn_layers])
    gan.fit(images(64), batch_size=8, epochs=1, verbose=0, shuffle=False)  # 8 steps
    # the power-iteration state is carried through training (JAX: threaded through the step)
    assert all(not np.allclose(a, to_np(l.vector_u)) for a, l in zip(u0, sn_layers))
    for layer in sn_layers:
        w = to_np(layer.normalized_kernel(training=False))
        top = np.linalg.svd(w.reshape(-1, w.shape[-1]), compute_uv=False)[0]
        assert 0.9 < top < 1.25, (layer.name, top)
    raw = [np.linalg.svd(to_np(l.kernel).reshape(-1, l.kernel.shape[-1]), compute_uv=False)[0] for l in sn_layers]
    assert max(abs(r - 1) for r in raw) > 0.5  # without the normalisation the check above would fail


# ----------------------------------------------------------------- EMA


def test_ema_follows_the_formula_and_is_what_inference_uses():
    gan = small_gan(augment=POLICY, ema_decay=0.999)
    ema, g = gan.generator_ema, gan.generator
    assert gan.inference_generator is ema and ema.name != g.name
    assert all(not v.trainable for v in ema.variables)
    assert {id(v) for v in ema.variables} <= {id(v) for v in gan.variables}  # hence in checkpoints
    start = values(g.variables)
    for a, b in zip(start, values(ema.variables)):
        np.testing.assert_array_equal(a, b)
    gan.fit(images(8), batch_size=8, epochs=1, verbose=0, shuffle=False)  # step t = 0: decay min(0.999, 1/10)
    moved = [not np.array_equal(a, to_np(v)) for a, v in zip(start, g.variables) if v.trainable]
    assert any(moved)  # G learnt through the augmented fakes (the blanked ones above: it did not)
    d = 0.1
    for s, v, e in zip(start, g.variables, ema.variables):  # weights and BatchNorm statistics
        np.testing.assert_allclose(to_np(e), d * s + (1 - d) * to_np(v), rtol=1e-5, atol=1e-6, err_msg=e.path)
    gan.fit(images(16), batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert any(not np.allclose(to_np(e), to_np(v)) for e, v in zip(ema.variables, g.variables))
    exported = gan.export_generator()
    assert exported.name == g.name
    for x, e in zip(exported.variables, ema.variables):
        np.testing.assert_array_equal(to_np(x), to_np(e))


NEBULA_TINY = dict(model="nebula", discriminator="resnet", spectral_norm=True, ngf=4, ndf=4, loss="hinge",
                   diffaugment=POLICY, ema_decay=0.9, r1_gamma=1.0, r1_every=2)


def test_resume_is_exact_with_ema_diffaugment_and_r1(tmp_path):
    trainer.train(tiny_config(epochs=2, **NEBULA_TINY), tmp_path / "straight", **quiet)
    trainer.train(tiny_config(epochs=1, **NEBULA_TINY), tmp_path / "split", **quiet)
    result = trainer.resume(tmp_path / "split", epochs=2, **quiet)
    assert result.steps_done == 8
    with np.load(checkpoint_path(tmp_path / "straight")) as a, np.load(checkpoint_path(tmp_path / "split")) as b:
        assert a.files == b.files
        names = json.loads(a["header"].tobytes())["names"]
        assert any("generator_ema" in n for n in names) and any("vector_u" in n for n in names)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (tmp_path / "straight/losses.csv").read_text() == (tmp_path / "split/losses.csv").read_text()
    facts = json.loads((tmp_path / "split/generator.json").read_text())
    assert facts["weights"] == "ema" and facts["model"] == "nebula"
    # generator.keras holds the EMA weights
    gan = trainer.build_gan(tiny_config(**NEBULA_TINY))
    from nebula_keras3.training.checkpoint import load_checkpoint

    load_checkpoint(gan, checkpoint_path(tmp_path / "split"))
    assert gan.loss_name == "hinge" and gan.r1_gamma == 1.0 and gan.augment_policy == POLICY
    saved = keras.saving.load_model(tmp_path / "split/generator.keras")
    z = np.random.default_rng(0).normal(size=(4, 16)).astype("float32")
    np.testing.assert_allclose(to_np(saved(z)), to_np(gan.generator_ema(z)), atol=1e-6)
    assert np.abs(to_np(saved(z)) - to_np(gan.generator(z))).max() > 1e-4
