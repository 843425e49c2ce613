"""nebula train --init-from: a larger model starts from a smaller run's shared layers (growing)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_config

from nebula_keras3.training.checkpoint import checkpoint_path, read_arrays

quiet = dict(progress=False, echo=lambda *_: None)

# Copying weights by name is numpy and Variable.assign: run once, under the first backend.
pytestmark = pytest.mark.backend_independent


def small_config(**overrides):  # 32 px nebula family: maps 4..32 px of 64..8 channels
    return tiny_config(model="nebula", ngf=8, ndf=8, ema_decay=0.9, **overrides)


def grown_config(**overrides):  # the same maps plus a 64 px stage; D one stage deeper
    return tiny_config(model="nebula", image_size=64, ngf=4, ndf=4, ema_decay=0.9, **overrides)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    from nebula_keras3.training import trainer

    folder = tmp_path_factory.mktemp("small") / "run"
    trainer.train(small_config(), folder, **quiet)
    return folder


def stored(run: Path) -> dict:
    header, arrays = read_arrays(checkpoint_path(run))
    return dict(zip(header["names"], arrays))


def test_shared_layers_are_copied_and_the_new_ones_stay_fresh(small_run):
    from nebula_keras3.training.trainer import build_gan
    from nebula_keras3.training.warm_start import warm_start

    source = stored(small_run)
    gan = build_gan(grown_config())
    before = {v.path: np.array(v.numpy()) for v in gan.variables}
    result = warm_start(gan, small_run, 64)
    now = {v.path: np.array(v.numpy()) for v in gan.variables}

    # The generator's maps 4..32 px, raw and EMA, are the source's.
    for name in ("stem_dense/kernel", "up8_conv/kernel", "up32_conv/kernel", "up32_bn/moving_mean",
                 "sle4to32_conv4/kernel", "generator_ema/up16_conv/kernel"):
        np.testing.assert_array_equal(now[name], source[name], err_msg=name)
    # The discriminator's stages sit one deeper: the grown down2 is the small down1; the head is shared.
    np.testing.assert_array_equal(now["down2_conv/kernel"], source["down1_conv/kernel"])
    np.testing.assert_array_equal(now["down3_bn/gamma"], source["down2_bn/gamma"])
    np.testing.assert_array_equal(now["to_logit_conv/kernel"], source["to_logit_conv/kernel"])
    # What has no counterpart keeps its seeded initialisation.
    for name in ("up64_conv/kernel", "to_rgb_conv/kernel", "down0_conv/kernel", "down1_conv/kernel"):
        np.testing.assert_array_equal(now[name], before[name], err_msg=name)
    assert {"up64_conv", "to_rgb_conv", "down0_conv", "down1_conv"} <= set(result.fresh)
    assert "up32_conv" not in result.fresh and "down2_conv" not in result.fresh
    assert result.image_size == 32 and result.epoch == 1
    # A new run: the optimizers start from zero.
    assert all(not np.any(np.asarray(v.numpy())) for v in gan.optimizer.variables if "momentum" in v.path)


def test_growing_with_rgb_skip_and_a_coarse_d_starts_as_the_source_upscaled(small_run):
    # --rgb-skip and --d-coarse-size at the source's size: the grown G draws the bilinear upscale
    # of the source's images, and the coarse stack is the source's D (the same logit on the
    # pooled image); the full-size stack starts fresh.
    import keras

    from nebula_keras3.training.trainer import build_gan
    from nebula_keras3.training.warm_start import warm_start

    source = build_gan(small_config())
    warm_start(source, small_run, 32)  # the small run's state, as a model
    gan = build_gan(grown_config(rgb_skip=True, d_coarse_size=32, d_coarse_ndf=8))
    fresh_down0 = keras.ops.convert_to_numpy(gan.discriminator.get_layer("down0_conv").kernel)
    result = warm_start(gan, small_run, 64)

    to_np = keras.ops.convert_to_numpy
    z = np.random.default_rng(0).normal(size=(4, 16)).astype("float32")
    for g, g_source in ((gan.generator, source.generator), (gan.generator_ema, source.generator_ema)):
        small = to_np(g_source(z, training=False))  # [4, 32, 32, 3] in (-1, 1)
        upscaled = to_np(keras.layers.UpSampling2D(2, interpolation="bilinear")(np.arctanh(small)))
        np.testing.assert_allclose(to_np(g(z, training=False)), np.tanh(upscaled), atol=1e-5)

    x = np.random.default_rng(1).uniform(-1, 1, size=(4, 64, 64, 3)).astype("float32")
    pooled = x.reshape(4, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    logits = to_np(gan.discriminator(x, training=False))  # [4, 2]: full size, coarse
    np.testing.assert_allclose(logits[:, 1:], to_np(source.discriminator(pooled, training=False)), atol=1e-5)
    np.testing.assert_array_equal(to_np(gan.discriminator.get_layer("down0_conv").kernel), fresh_down0)
    assert {"to_rgb64_conv", "up64_conv", "down0_conv", "down2_conv", "to_logit_conv"} <= set(result.fresh)
    assert not {"to_rgb_conv", "coarse0_conv", "coarse2_bn", "coarse_to_logit_conv"} & set(result.fresh)


def test_a_grown_run_grows_again_one_level_up(small_run, tmp_path):
    # grow128 -> grow256 in small: a 64 px run grown from the 32 px one (rgb_skip 1, coarse 32)
    # grows into 128 px with rgb_skip 2 and a coarse stack at 64 px. The new G draws the
    # source's images upscaled; the coarse stack is the source's full-size D (its own 32 px
    # coarse stack has no place and is left out).
    import keras

    from nebula_keras3.training import trainer
    from nebula_keras3.training.trainer import build_gan
    from nebula_keras3.training.warm_start import warm_start

    middle_config = grown_config(rgb_skip=1, d_coarse_size=32, d_coarse_ndf=8, init_from=str(small_run))
    middle = tmp_path / "middle"
    trainer.train(middle_config, middle, **quiet)
    source = build_gan(middle_config)  # its trained state, as a model
    warm_start(source, middle, 64)
    gan = build_gan(tiny_config(model="nebula", image_size=128, ngf=2, ndf=4, ema_decay=0.9, rgb_skip=2,
                                d_coarse_size=64, d_coarse_ndf=4))
    result = warm_start(gan, middle, 128)

    to_np = keras.ops.convert_to_numpy
    z = np.random.default_rng(0).normal(size=(3, 16)).astype("float32")
    for g, g_source in ((gan.generator, source.generator), (gan.generator_ema, source.generator_ema)):
        small = to_np(g_source(z, training=False))  # [3, 64, 64, 3]
        upscaled = to_np(keras.layers.UpSampling2D(2, interpolation="bilinear")(np.arctanh(small)))
        np.testing.assert_allclose(to_np(g(z, training=False)), np.tanh(upscaled), atol=1e-5)

    x = np.random.default_rng(1).uniform(-1, 1, size=(3, 128, 128, 3)).astype("float32")
    pooled = x.reshape(3, 64, 2, 64, 2, 3).mean(axis=(2, 4))
    logits = to_np(gan.discriminator(x, training=False))  # [3, 2]: 128 px, coarse 64 px
    source_logits = to_np(source.discriminator(pooled, training=False))  # [3, 2]: 64 px, coarse 32 px
    np.testing.assert_allclose(logits[:, 1], source_logits[:, 0], atol=1e-5)
    assert {"to_rgb128_conv", "up128_conv", "down0_conv", "to_logit_conv"} <= set(result.fresh)
    assert not {"to_rgb_conv", "to_rgb64_conv", "coarse0_conv", "coarse_to_logit_conv"} & set(result.fresh)
    assert {"coarse0_conv", "coarse_to_logit_conv"} <= set(result.left_out)
    assert "left out of the source: coarse0_conv" in result.describe()


def test_train_init_from_records_the_source_and_resume_does_not_reapply_it(small_run, tmp_path):
    from nebula_keras3.training import trainer

    lines = []
    run = tmp_path / "grown"
    trainer.train(grown_config(init_from=str(small_run)), run, progress=False, echo=lines.append)
    assert any(line.startswith("initialised from") and "32 px" in line for line in lines), lines
    assert json.loads((run / "config.json").read_text())["init_from"] == str(small_run)
    after_epoch_1 = stored(run)

    lines.clear()
    trainer.resume(run, epochs=2, progress=False, echo=lines.append)
    assert not any(line.startswith("initialised from") for line in lines), lines
    # Resuming loaded epoch 1's state (not the source's) and trained on from it.
    assert stored(run)["up64_conv/kernel"].shape == after_epoch_1["up64_conv/kernel"].shape


def test_cli_init_from_a_checkpoint_file(small_run, tmp_path):
    from nebula_keras3.cli import main

    result = CliRunner().invoke(main, [
        "train", "--preset", "tiny", "--model", "nebula", "--image-size", "64", "--ngf", "4", "--ndf", "4",
        "--init-from", str(checkpoint_path(small_run)), "--out", str(tmp_path / "grown"), "--quiet",
    ])
    assert result.exit_code == 0, result.output
    assert "initialised from" in result.output and "fresh layers: " in result.output


def test_the_grow128_preset_fits_a_nebula64_run():
    # grow128 takes nebula64's layers whole: its half-size image, and nebula64's D as its coarse stack.
    from nebula_keras3.training.config import TrainConfig

    grown, source = TrainConfig.from_preset("grow128"), TrainConfig.from_preset("nebula64")
    assert grown.grows_from == source.image_size == grown.image_size // 2 == grown.d_coarse_size
    assert grown.rgb_skip == 1 and grown.d_coarse_ndf == source.ndf and grown.discriminator == source.discriminator
    with pytest.raises(ValueError, match="preset grow128 grows a 64 px run into a 128 px one: give --init-from"):
        grown.validate()
    grown.init_from = "runs/n64"
    grown.validate()


@pytest.mark.parametrize("case", ["missing", "loose-file", "larger", "other-family", "not-the-size-it-grows"])
def test_bad_sources_fail_before_anything_is_written(small_run, tmp_path, case):
    from nebula_keras3.training import trainer
    from nebula_keras3.training.warm_start import WarmStartError

    source, config = small_run, grown_config(init_from=str(small_run))
    if case == "missing":
        source = tmp_path / "nope"
    elif case == "loose-file":
        source = tmp_path / "weights.npz"
        source.write_bytes(b"x")
    elif case == "larger":  # a 64 px source for a 32 px run
        source = tmp_path / "large"
        checkpoint_path(source).parent.mkdir(parents=True)
        checkpoint_path(source).write_bytes(checkpoint_path(small_run).read_bytes())
        config_64 = {**json.loads((small_run / "config.json").read_text()), "image_size": 64}
        (source / "config.json").write_text(json.dumps(config_64))
    config = small_config() if case == "larger" else tiny_config() if case == "other-family" else config
    if case == "not-the-size-it-grows":
        config.grows_from = 16
    config.init_from = str(source)
    expected = {"missing": "does not exist", "loose-file": "checkpoints/ folder",
                "larger": "cannot start a smaller", "other-family": "a nebula run cannot start a dcgan",
                "not-the-size-it-grows": "grows a 16 px run, not a 32 px one"}[case]
    run = tmp_path / "run"
    with pytest.raises(WarmStartError, match=expected):
        trainer.train(config, run, **quiet)
    assert not run.exists()



def test_fine_tuning_at_the_same_size_copies_every_weight(small_run):
    from nebula_keras3.training.trainer import build_gan
    from nebula_keras3.training.warm_start import warm_start

    source = stored(small_run)
    gan = build_gan(small_config())
    result = warm_start(gan, small_run, 32)
    assert result.fresh == []
    models = [gan.generator, gan.generator_ema, gan.discriminator]
    for v in (v for m in models for v in m.variables):
        np.testing.assert_array_equal(np.asarray(v.numpy()), source[v.path], err_msg=v.path)


def test_the_grow256_preset_fits_a_grow128_run():
    # grow256 takes grow128's generator whole (the same maps per resolution, one skip level more)
    # and grow128's 128 px D as its coarse stack.
    from nebula_keras3.models.nebula.generator import generator_widths
    from nebula_keras3.training.config import TrainConfig

    grown, source = TrainConfig.from_preset("grow256"), TrainConfig.from_preset("grow128")
    assert grown.grows_from == source.image_size == grown.image_size // 2 == grown.d_coarse_size
    assert generator_widths(grown.image_size, grown.ngf)[:-1] == generator_widths(source.image_size, source.ngf)
    assert grown.rgb_skip == source.rgb_skip + 1 and grown.d_coarse_ndf == source.ndf
    assert (grown.latent_dim, grown.sle, grown.g_activation, grown.upsample) == (
        source.latent_dim, source.sle, source.g_activation, source.upsample)
    with pytest.raises(ValueError, match="preset grow256 grows a 128 px run into a 256 px one: give --init-from"):
        grown.validate()


def test_a_grown_run_split_otherwise_than_its_source_is_warned_about(small_run, tmp_path):
    # Growing on the same photos: scores on held-out photos the source trained on would flatter the
    # grown run, so a split that differs from the source's is named when the run starts.
    import shutil

    from nebula_keras3.training.warm_start import held_out_note

    photos = tmp_path / "photos"
    photos.mkdir()
    source = tmp_path / "source"
    shutil.copytree(small_run, source)
    config = json.loads((source / "config.json").read_text())

    def source_split(**split):
        (source / "config.json").write_text(json.dumps({**config, "data": str(photos), "holdout": 0.1, "seed": 0,
                                                        **split}))

    grown = grown_config(data=str(photos), holdout=0.1, init_from=str(source))
    source_split(holdout_split="files")
    assert held_out_note(source, grown, skips_files=True) is None  # the same draw over the same files
    assert held_out_note(source, grown_config(data=str(tmp_path), holdout=0.1), skips_files=True) is None  # other photos
    assert "seed 0" in held_out_note(source, grown_config(data=str(photos), holdout=0.1, seed=1), skips_files=False)
    assert "0.2" in held_out_note(source, grown_config(data=str(photos), holdout=0.2), skips_files=False)
    source_split(holdout_split="images")  # a source made before splits drew over the folder's files
    assert held_out_note(source, grown, skips_files=False) is None  # nothing skipped: the same photos
    assert "over images" in held_out_note(source, grown, skips_files=True)
