"""Adaptive augmentation (StyleGAN2-ADA's controller): gates, the p update, training, resume, logs."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_config

from nebula_keras3.cli import main
from nebula_keras3.models import DCGANDiscriminator
from nebula_keras3.training import trainer
from nebula_keras3.training.augment import ADA_INTERVAL, DiffAugment, ada_adjust, gate_key
from nebula_keras3.training.checkpoint import checkpoint_path
from nebula_keras3.training.config import ADA_DEFAULT_POLICY, TrainConfig
from nebula_keras3.training.tensorboard import event_files, read_events
from tests.test_nebula_family import images, small_gan, to_np

quiet = dict(progress=False, echo=lambda *_: None)
POLICY = "color,translation,cutout"


# ----------------------------------------------------------------- per-image gates


def test_p0_leaves_images_unchanged_and_p1_is_always_augment():
    aug = DiffAugment(POLICY)
    x = keras.ops.convert_to_tensor(images(16))
    off = aug.draw(16, 32, keras.random.SeedGenerator(3), p=0.0)
    assert all(not to_np(off[gate_key(op)]).any() for op in aug.ops)
    np.testing.assert_array_equal(to_np(aug.apply(x, off)), to_np(x))
    on = aug.draw(16, 32, keras.random.SeedGenerator(3), p=1.0)
    always = {k: v for k, v in on.items() if not k.endswith("_on")}  # the op parameters alone
    assert set(on) - set(always) == {gate_key(op) for op in aug.ops}
    np.testing.assert_array_equal(to_np(aug.apply(x, on)), to_np(aug.apply(x, always)))
    assert np.abs(to_np(aug.apply(x, always)) - to_np(x)).max() > 0.1
    # The gates come after the op parameters: those are the draws of a policy without ADA.
    plain = aug.draw(16, 32, keras.random.SeedGenerator(3))
    for k in plain:
        np.testing.assert_array_equal(to_np(plain[k]), to_np(always[k]), err_msg=k)


def test_each_op_is_decided_per_image_with_probability_p():
    n = 512
    aug = DiffAugment(POLICY)
    params = aug.draw(n, 32, keras.random.SeedGenerator(0), p=0.3)
    gates = np.stack([to_np(params[gate_key(op)]) for op in aug.ops])  # [ops, n]
    assert np.all(np.abs(gates.mean(axis=1) - 0.3) < 0.07)
    assert not np.array_equal(gates[0], gates[1]) and not np.array_equal(gates[1], gates[2])
    # One op: gated images are the augmented ones, the others untouched.
    color = DiffAugment("color")
    params = color.draw(n, 32, keras.random.SeedGenerator(1), p=0.5)
    x = images(n)
    got = to_np(color.apply(keras.ops.convert_to_tensor(x), params))
    full = to_np(color.apply(keras.ops.convert_to_tensor(x), {k: v for k, v in params.items() if k != "color_on"}))
    on = to_np(params["color_on"])
    assert 0.4 < on.mean() < 0.6
    np.testing.assert_array_equal(got[on], full[on])
    np.testing.assert_array_equal(got[~on], x[~on])


# ----------------------------------------------------------------- the controller


def test_controller_adjusts_every_interval_by_images_over_kimg():
    batch, kimg, target = 8, 0.32, 0.6  # one adjustment: 4 * 8 images / 320 = 0.1
    step_size = ADA_INTERVAL * batch / (kimg * 1000)
    logits = np.array([[1.0]] * 7 + [[-2.0]], "float32")  # sign mean 0.75 > target
    state = [np.float32(0.5), np.float32(0.0), np.float32(0.0)]
    seen = []
    for step in range(2 * ADA_INTERVAL):
        state = [to_np(v) for v in ada_adjust(*state, step, logits, target, kimg)]
        seen.append(state)
    for step, (p, signs, count) in enumerate(seen):
        done = (step + 1) % ADA_INTERVAL == 0
        k = (step + 1) // ADA_INTERVAL
        assert p == pytest.approx(0.5 + k * step_size, abs=1e-6), step
        assert (signs, count) == ((0.0, 0.0) if done else (6.0 * ((step % ADA_INTERVAL) + 1),
                                                            8.0 * ((step % ADA_INTERVAL) + 1)))
    # Below the target p falls; it stays in [0, 1]; at exactly the target it holds.
    low = np.array([[-1.0]] * 8, "float32")
    p, _, _ = ada_adjust(np.float32(0.05), np.float32(-24.0), np.float32(24.0), 3, low, target, kimg)
    assert float(to_np(p)) == 0.0
    p, _, _ = ada_adjust(np.float32(0.95), np.float32(24.0), np.float32(24.0), 3, -low, target, kimg)
    assert float(to_np(p)) == 1.0
    half = np.array([[1.0]] * 4 + [[-1.0]] * 4, "float32")
    p, _, _ = ada_adjust(np.float32(0.4), np.float32(0.0), np.float32(24.0), 3, half, 0.0, kimg)
    assert float(to_np(p)) == pytest.approx(0.4, abs=1e-7)  # r_t = 0 == target 0: no change


def test_a_multi_scale_ds_logits_count_once_per_image():
    """[B, 2] logits (full size, coarse): each image adds the mean of its two signs, and counts once."""
    logits = np.array([[1.0, 1.0]] * 6 + [[1.0, -1.0]] * 2, "float32")  # r_t = 6 / 8 = 0.75
    p, signs, count = ada_adjust(np.float32(0.5), np.float32(0.0), np.float32(0.0), 0, logits, 0.6, 0.32)
    assert (float(to_np(signs)), float(to_np(count))) == (6.0, 8.0)
    p, _, _ = ada_adjust(np.float32(0.5), np.float32(18.0), np.float32(24.0), 3, logits, 0.6, 0.32)
    assert float(to_np(p)) == pytest.approx(0.6, abs=1e-6)  # r_t = 24 / 32 = 0.75 > 0.6: up by 0.1


# ----------------------------------------------------------------- inside the train step


def fit_steps(gan, x, steps):
    """Run ``steps`` GAN steps over ``x`` (batch 8); return the ada_p each step logged."""
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(to_np(logs["ada_p"])))

    reps = -(-steps * 8 // len(x))
    gan.fit(np.concatenate([x] * reps)[: steps * 8], batch_size=8, epochs=1, verbose=0, shuffle=False,
            callbacks=[Record()])
    assert float(to_np(gan.ada_p)) == pytest.approx(seen[-1])
    return seen


def test_p_rises_when_d_overfits_a_tiny_set():
    """8 bright photos, a frozen generator and a fast D: D(real) > 0 for nearly every real,
    E[sign(D(real))] > 0.6, so p climbs (0.2 per adjustment here)."""
    reals = np.clip(images(8) * 0.2 + 0.8, -1, 1)
    gan = small_gan(ada_target=0.6, ada_kimg=0.16, lr=0.0,
                    d_optimizer=keras.optimizers.Adam(2e-3, beta_1=0.5))
    assert gan.diffaugment.ops == tuple(ADA_DEFAULT_POLICY.split(","))  # no policy given: the default
    seen = fit_steps(gan, reals, 6 * ADA_INTERVAL)
    assert seen[0] == 0.0  # unchanged until the first adjustment
    assert seen[-1] >= 0.6, seen
    assert max(seen) == pytest.approx(seen[-1])


def test_p_falls_when_d_cannot_tell_real_from_fake():
    """D outputs exactly 0 for every image (its last layer zeroed, learning rate 0):
    E[sign(D(real))] = 0 < 0.6, so p falls by 0.1 per adjustment, down to 0."""
    d = DCGANDiscriminator(32, ndf=4, seed=1)
    for v in d.get_layer("to_logit_conv").weights:
        v.assign(np.zeros(v.shape, "float32"))
    gan = small_gan(d=d, augment="color,translation", ada_target=0.6, ada_kimg=0.32,
                    d_optimizer=keras.optimizers.Adam(0.0))
    assert gan.diffaugment.ops == ("color", "translation")  # the configured policy is what ADA gates
    gan.ada_p.assign(0.25)
    seen = fit_steps(gan, images(8), 3 * ADA_INTERVAL)
    want = [max(0.25 - 0.1 * ((s + 1) // ADA_INTERVAL), 0.0) for s in range(3 * ADA_INTERVAL)]
    np.testing.assert_allclose(seen, want, atol=1e-6)


def test_off_by_default_adds_no_state_and_bad_settings_are_refused():
    gan = small_gan(augment=POLICY)
    assert not gan.uses_ada and gan.ada_variables == ()
    assert not any("ada" in v.path for v in gan.variables)
    with pytest.raises(ValueError, match="ada_target"):
        small_gan(ada_target=1.5)
    with pytest.raises(ValueError, match="ada-kimg"):
        TrainConfig(ada_target=0.6, ada_kimg=0).validate()
    with pytest.raises(ValueError, match="ada-target"):
        TrainConfig(ada_target=-0.1).validate()
    result = CliRunner().invoke(main, ["train", "--preset", "tiny", "--ada-target", "1.5"])
    assert result.exit_code == 2 and "--ada-target" in result.output


# ----------------------------------------------------------------- runs: resume, epochs.csv, TensorBoard


# 3 steps per epoch: adjustments (every 4 steps) straddle epochs, so a resume needs the accumulators.
ADA_TINY = dict(steps_per_epoch=3, diffaugment="color,cutout", ada_target=0.6, ada_kimg=0.08)


def without_timing(path):
    rows = list(csv.DictReader(open(path)))
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in rows]


@pytest.mark.backend_independent  # logging; p's own moves per backend: test_p_rises/falls
def test_ada_p_is_checkpointed_and_logged_per_step_and_epoch(tmp_path):
    """p and its counters live in the checkpoint (a resume restores them bit-exactly:
    test_resume.py's every-state case) and reach losses.csv, epochs.csv and TensorBoard."""
    args = ["train", "--preset", "tiny", "--quiet", "--steps-per-epoch", "3", "--diffaugment", "color,cutout",
            "--ada-target", "0.6", "--ada-kimg", "0.08"]
    result = CliRunner().invoke(main, args + ["--epochs", "4", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert TrainConfig.load(tmp_path / "run/config.json") == tiny_config(epochs=4, **ADA_TINY)
    with np.load(checkpoint_path(tmp_path / "run")) as a:
        names = json.loads(a["header"].tobytes())["names"]
        ada = {n: float(a[f"v{i:06d}"]) for i, n in enumerate(names) if n.startswith("ada/")}
    assert set(ada) == {"ada/p", "ada/sign_sum", "ada/count"}
    assert ada["ada/count"] == 0.0  # 12 steps: just adjusted
    rows = without_timing(tmp_path / "run/epochs.csv")
    p = [float(r["ada_p"]) for r in rows]
    assert any(v > 0 for v in p), p  # p moved
    losses = list(csv.DictReader(open(tmp_path / "run/losses.csv")))
    for epoch, value in enumerate(p, start=1):  # epochs.csv: the epoch's mean p, as for every step value
        steps = [float(r["ada_p"]) for r in losses if int(r["epoch"]) == epoch]
        assert value == pytest.approx(np.mean(steps), abs=1e-4), (epoch, value, steps)
    events = [e for f in event_files(tmp_path / "run") for e in read_events(f)]
    step_p = {e["step"]: e["scalars"]["step/ada_p"] for e in events if "step/ada_p" in e["scalars"]}
    epoch_p = [e["scalars"]["epoch/ada_p"] for e in events if "epoch/ada_p" in e["scalars"]]
    assert sorted(step_p) == list(range(1, 13))
    np.testing.assert_allclose(epoch_p, p, atol=1e-6)
    assert step_p[12] == pytest.approx(ada["ada/p"], abs=1e-6)  # the last step logs the checkpoint's p


@pytest.mark.backend_independent  # logging
def test_ada_off_run_logs_no_p(tmp_path):
    trainer.train(tiny_config(steps_per_epoch=1, diffaugment=POLICY), tmp_path / "run", **quiet)
    assert "ada_p" not in next(csv.reader(open(tmp_path / "run/epochs.csv")))
    events = [e for f in event_files(tmp_path / "run") for e in read_events(f)]
    assert not any("ada" in tag for e in events for tag in e["scalars"])
    assert any("step/d_real" in e["scalars"] for e in events)
