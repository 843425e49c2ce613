"""--holdout and --eval-every: a seeded held-out split, figures in epochs.csv, checkpoints/best.npz."""

import csv
import types

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from nebula_keras3.data import procedural_nebulae
from nebula_keras3.data.split import holdout_indices, split_holdout
from nebula_keras3.training import trainer
from nebula_keras3.training.checkpoint import BEST_FILE, checkpoint_path, read_header
from nebula_keras3.training.holdout_scoring import EVAL_COLUMNS, score_generator

quiet = dict(progress=False, echo=lambda *_: None)


@pytest.mark.backend_independent
def test_holdout_split_is_seeded_disjoint_and_complete():
    train, held = holdout_indices(100, 0.2, seed=0)
    assert len(held) == 20 and len(train) == 80
    assert not set(train) & set(held)
    assert sorted(set(train) | set(held)) == list(range(100))
    again = holdout_indices(100, 0.2, seed=0)
    np.testing.assert_array_equal(held, again[1])  # same seed, same split (resume relies on it)
    assert not np.array_equal(held, holdout_indices(100, 0.2, seed=1)[1])
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1) * np.ones((1, 2, 2, 3), np.uint8)
    kept, out = split_holdout(images, 0.3, seed=0)
    assert len(kept) == 7 and len(out) == 3
    assert not set(kept[:, 0, 0, 0]) & set(out[:, 0, 0, 0])
    for bad in (0.0, 1.0, 0.001):
        with pytest.raises(ValueError, match="holdout"):
            holdout_indices(100, bad, seed=0)


@pytest.mark.backend_independent
def test_the_split_draws_over_the_folders_files_so_every_image_size_holds_out_the_same_photos(tmp_path):
    from nebula_keras3.data import load_image_folder

    rng = np.random.default_rng(0)
    for i in range(40):  # every 5th photo is 24 px: used at 32 px, skipped (under half the size) at 64 px
        side = 24 if i % 5 == 0 else 80
        Image.fromarray(rng.integers(0, 255, (side, side, 3), np.uint8)).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "notes.txt").write_text("not an image")  # skipped at every size: in the listing all the same

    def held_names(size):
        with pytest.warns(UserWarning):
            loaded = load_image_folder(tmp_path, size, progress=False, use_cache=False)
        _, held = holdout_indices(len(loaded.images), 0.25, seed=3, listing=loaded.listing)
        return {loaded.files[i] for i in held}, set(loaded.files)

    held32, used32 = held_names(32)
    held64, used64 = held_names(64)
    assert len(used64) == 32 and len(used32) == 40
    assert held64 == held32 & used64  # the larger size holds out the same photos, less the ones it skips
    assert held32 - used64  # (and some of the skipped ones were held out at 32 px)
    # Over the images that loaded (how runs made before were split), the two sizes disagree.
    over_images = {sorted(used64)[i] for i in holdout_indices(len(used64), 0.25, seed=3)[1]}
    assert over_images != held64
    # A listing without skips is the images themselves: the split of every run made before.
    np.testing.assert_array_equal(holdout_indices(40, 0.25, 3, listing=(np.arange(40), 40))[1],
                                  holdout_indices(40, 0.25, 3)[1])


@pytest.mark.backend_independent
def test_runs_made_before_keep_their_split_over_images():
    from nebula_keras3.training.config import TrainConfig

    config = tiny_config(holdout=0.1)
    assert config.holdout_split == "files"
    old = config.to_dict()
    del old["holdout_split"]
    assert TrainConfig.from_dict(old).holdout_split == "images"
    with pytest.raises(ValueError, match="holdout-split"):
        tiny_config(holdout_split="names").validate()


@pytest.mark.backend_independent
def test_eval_every_needs_a_holdout():
    with pytest.raises(ValueError, match="give --holdout"):
        tiny_config(eval_every=1).validate()


@pytest.mark.backend_independent
def test_the_scored_images_are_the_ones_gan_generate_draws():
    # GAN.generate samples the inference generator (the EMA copy when kept) from image seeds 0..n-1
    images = procedural_nebulae(16, 32, seed=3)
    calls = []

    def generate(n, seed=0):
        calls.append((n, seed))
        return images[:n]

    figures = score_generator(types.SimpleNamespace(generate=generate), images)
    assert calls == [(16, 0)]
    assert figures["swd"] == 0.0  # the very same images on both sides


@pytest.mark.backend_independent
def test_the_training_time_copy_rate_scores_generated_images_against_the_training_images():
    from nebula_keras3.metrics.memorisation import TrainingNeighbours

    train, held_out = procedural_nebulae(24, 32, seed=1), procedural_nebulae(8, 32, seed=2)
    neighbours = TrainingNeighbours(train, held_out)
    copier = types.SimpleNamespace(generate=lambda n, seed=0: train[:n])  # renders training images
    novel = types.SimpleNamespace(generate=lambda n, seed=0: procedural_nebulae(n, 32, seed=3))
    assert score_generator(copier, held_out, neighbours=neighbours)["nn_copy_rate"] == 1.0
    assert score_generator(novel, held_out, neighbours=neighbours)["nn_copy_rate"] <= 0.125
    assert "nn_copy_rate" not in score_generator(copier, held_out)  # no training images: not measured


@pytest.mark.backend_independent
def test_each_scoring_embeds_its_generated_images_once(tmp_path, monkeypatch):
    """FID/KID and nn_copy_rate share the generated images' random-CNN features; the training and
    held-out photos are embedded at the first scoring only; the figures stay those of each metric
    computed on its own."""
    from nebula_keras3.metrics import features
    from nebula_keras3.metrics.evaluate import evaluate_images
    from nebula_keras3.metrics.memorisation import TrainingNeighbours
    from nebula_keras3.training.holdout_scoring import EVAL_METRICS, HoldoutEvaluation

    train, held_out = procedural_nebulae(24, 32, seed=1), procedural_nebulae(16, 32, seed=2)
    fakes = [procedural_nebulae(16, 32, seed=s) for s in (3, 4)]
    want = []
    for fake in fakes:
        alone = evaluate_images(held_out, fake, metrics=EVAL_METRICS)
        alone.update(TrainingNeighbours(train, held_out).score(fake).figures)
        want.append({k: round(float(alone[k]), 5) for k in EVAL_COLUMNS})

    embedded = []
    plain = features.RandomCNNFeatures.__call__

    def counted(self, images, *args, **kwargs):
        embedded.append(np.asarray(images))
        return plain(self, images, *args, **kwargs)

    monkeypatch.setattr(features.RandomCNNFeatures, "__call__", counted)
    callback = HoldoutEvaluation(tmp_path, held_out, 1, train_images=train, echo=lambda *_: None)
    callback.best = -np.inf  # nothing beats it: no best checkpoint to write (no real model here)
    got = []
    for epoch, fake in enumerate(fakes):
        callback.set_model(types.SimpleNamespace(stop_training=False, generate=lambda n, seed=0, f=fake: f[:n]))
        logs = {}
        callback.on_epoch_end(epoch, logs)
        got.append({k: logs[k] for k in EVAL_COLUMNS})
    assert got == want

    def times(images):
        return sum(x.shape == images.shape and np.array_equal(x, images) for x in embedded)

    assert [times(train), times(fakes[0]), times(fakes[1])] == [1, 1, 1]
    assert times(held_out) == 2  # the copy scale's nearest distances, and FID/KID's side
    assert len(embedded) == 5


def epoch_rows(run):
    with open(run / "epochs.csv", newline="") as f:
        return list(csv.DictReader(f))


# The scoring's files; an exact resume with scoring, per backend: test_resume.py's every-state case.
@pytest.mark.backend_independent
def test_eval_every_writes_figures_best_checkpoint_and_resumes_exactly(tmp_path):
    # tiny: 32 images, batch 8; holding out 8 leaves 24 = 3 steps per epoch.
    config = dict(epochs=2, holdout=0.25, eval_every=1)
    straight = trainer.train(tiny_config(**config), tmp_path / "straight", **quiet)
    assert straight.steps_done == 6  # the held-out images were not trained on
    rows = epoch_rows(tmp_path / "straight")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for r in rows:
        for key in ("swd", "fid_randcnn", "kid_randcnn"):
            assert float(r[key]) > 0, (key, r)
        assert 0.0 <= float(r["nn_copy_rate"]) <= 1.0, r  # an untrained tiny generator copies nothing
    swd = [float(r["swd"]) for r in rows]
    best = read_header(checkpoint_path(tmp_path / "straight", BEST_FILE))
    assert best["epoch"] == 1 + int(np.argmin(swd)) and best["swd"] == pytest.approx(min(swd))
    with Image.open(tmp_path / "straight" / "losses.png") as im:
        assert im.size[1] == 900  # three panels: losses, D outputs, held-out figures

    trainer.train(tiny_config(**{**config, "epochs": 1}), tmp_path / "split", **quiet)
    trainer.resume(tmp_path / "split", epochs=2, **quiet)
    for name in ("last.npz", BEST_FILE):
        with np.load(checkpoint_path(tmp_path / "straight", name)) as a, \
                np.load(checkpoint_path(tmp_path / "split", name)) as b:
            assert a.files == b.files
            for k in a.files:
                if k != "header":
                    np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name} {k}")
    resumed = epoch_rows(tmp_path / "split")
    assert [r[k] for r in resumed for k in EVAL_COLUMNS] == [r[k] for r in rows for k in EVAL_COLUMNS]
