"""Memorisation check (`nebula evaluate --nearest`): copies score 1.0, new photos about COPY_QUANTILE;
`--image-size` compares folders of photos of any size."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from nebula_keras3.cli import main
from nebula_keras3.data import procedural_nebulae
from nebula_keras3.metrics.memorisation import COPY_QUANTILE, TrainingNeighbours, nearest, nearest_picture


def run_cli(*args):
    result = CliRunner().invoke(main, ["evaluate", *map(str, args)])
    return result.exit_code, result.output


def write_folder(folder, images, sizes=None):
    """PNGs of ``images``, each resized to ``sizes[i]`` (mixed sizes) when given."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        pic = Image.fromarray(im)
        if sizes is not None:
            pic = pic.resize(sizes[i % len(sizes)], Image.Resampling.LANCZOS)
        pic.save(folder / f"{i:03d}.png")
    return folder


@pytest.mark.backend_independent
def test_nearest_finds_the_k_closest_rows_closest_first():
    rng = np.random.default_rng(0)
    ref, queries = rng.normal(size=(50, 7)), rng.normal(size=(9, 7))
    idx, dist = nearest(queries, ref, 3, scale=2.0)
    brute = np.sqrt(((queries[:, None] - ref[None]) ** 2).sum(-1))
    np.testing.assert_array_equal(idx, np.argsort(brute, axis=1)[:, :3])
    np.testing.assert_allclose(dist, 2.0 * np.sort(brute, axis=1)[:, :3], rtol=1e-6)
    idx, dist = nearest(ref[[4, 7]], ref, 1)
    assert idx[:, 0].tolist() == [4, 7] and dist.max() == 0.0  # a copy measures exactly 0


@pytest.mark.backend_independent
def test_copies_score_one_and_new_images_about_the_quantile():
    # procedural nebulae: training, held-out (the scale) and new images are disjoint draws
    train = procedural_nebulae(120, 32, seed=10)
    neighbours = TrainingNeighbours(train, procedural_nebulae(100, 32, seed=11))
    copies = neighbours.score(train)
    assert copies.figures["nn_copy_rate"] == 1.0 and copies.figures["nn_copy_rate_pixel"] == 1.0
    assert copies.figures["nn_distance_ratio_median"] == 0.0
    np.testing.assert_array_equal(copies.indices["features"][:, 0], np.arange(len(train)))
    new = neighbours.score(procedural_nebulae(100, 32, seed=12)).figures
    assert new["nn_copy_rate"] <= 0.05
    assert new["nn_copy_rate_pixel"] <= 0.15  # 100 held-out images make a coarse 1% quantile
    assert 0.7 < new["nn_distance_ratio_median"] < 1.4  # as far from the training set as held-out photos
    # half copies, half new: the rate says so
    mixed = np.concatenate([train[:50], procedural_nebulae(50, 32, seed=13)])
    assert 0.5 <= neighbours.score(mixed).figures["nn_copy_rate"] <= 0.55
    # a slightly altered copy is still a copy
    nudged = np.clip(train[:20].astype(int) + 2, 0, 255).astype(np.uint8)
    assert neighbours.score(nudged).figures["nn_copy_rate"] == 1.0


@pytest.mark.backend_independent
def test_held_out_photos_against_the_training_photos_give_at_most_5_percent(real_data):
    from nebula_keras3.data.folder import load_image_folder

    images = load_image_folder(real_data, 64, progress=False).images
    order = np.random.default_rng(0).permutation(len(images))
    tenth = len(images) // 10
    scale, fresh, train = images[order[:tenth]], images[order[tenth : 2 * tenth]], images[order[2 * tenth :]]
    neighbours = TrainingNeighbours(train, scale)
    assert neighbours.score(fresh).figures["nn_copy_rate"] <= 0.05
    assert neighbours.score(train[:100]).figures["nn_copy_rate"] == 1.0


@pytest.mark.backend_independent
def test_nearest_picture_rows_put_the_closest_case_first():
    train = procedural_nebulae(12, 16, seed=1)
    generated = np.concatenate([procedural_nebulae(2, 16, seed=2), train[5:6]])  # the copy is image 2
    found = TrainingNeighbours(train, procedural_nebulae(6, 16, seed=3)).score(generated)
    pic = nearest_picture(generated, train, found, rows=2, padding=2, gap=8)
    assert pic.shape == (2 + 2 * 18, 2 + 18 * 7 + 16, 3)
    np.testing.assert_array_equal(pic[2:18, 2:18], train[5])  # first row: the copy ...
    np.testing.assert_array_equal(pic[2:18, 28:44], train[5])  # ... beside the photo it copies


@pytest.mark.backend_independent
def test_evaluate_nearest_on_two_folders_of_mixed_size_photos(tmp_path):
    photos = procedural_nebulae(60, 64, seed=20)
    sizes = [(160, 120), (96, 128), (200, 200)]
    train_dir = write_folder(tmp_path / "train", photos[:40], sizes)
    held_dir = write_folder(tmp_path / "held", photos[40:], sizes)
    # the training folder against itself: every image is a copy
    code, out = run_cli("--images", train_dir, "--data", train_dir, "--holdout-data", held_dir, "-n", 40,
                        "--metrics", "swd", "--nearest", tmp_path / "self.png", "--json", tmp_path / "self.json")
    assert code == 0, out
    report = json.loads((tmp_path / "self.json").read_text())
    assert report["image_size"] == 64 and report["nn_copy_rate"] == 1.0 and report["nn_distance_ratio_median"] == 0.0
    assert report["nn_train_count"] == 40 and report["nn_held_out_count"] == 20
    first = report["nearest"][0]
    assert first["generated"] == 0 and first["features"][0] == ["000.png", 0.0] and len(first["pixels"]) == 3
    assert Image.open(tmp_path / "self.png").size[1] == 2 + 16 * 66
    assert "nn_copy_rate" in out and "closest cases first" in out
    # held-out photos against the training folder (scale: a seeded split of it, here of only 10
    # photos, so the threshold is about their closest one): not copies
    code, out = run_cli("--images", held_dir, "--data", train_dir, "-n", 20, "--metrics", "swd", "--holdout", 0.25,
                        "--nearest", tmp_path / "held.png", "--json", tmp_path / "held.json")
    assert code == 0, out
    report = json.loads((tmp_path / "held.json").read_text())
    assert report["nn_copy_rate"] <= 0.25 and report["nn_distance_ratio_median"] > 0.5
    assert report["nn_train_count"] == 30 and report["nn_held_out_count"] == 10
    assert "10 held out of the 40 training images (--holdout 0.25, seed 0)" in out
    assert "coarse" in out  # fewer held-out photos than the quantile needs: said
    # --image-size: the same two folders at 32 px
    code, out = run_cli("--images", held_dir, "--data", train_dir, "-n", 20, "--metrics", "swd",
                        "--image-size", 32, "--json", tmp_path / "s32.json")
    assert code == 0, out
    assert json.loads((tmp_path / "s32.json").read_text())["image_size"] == 32


@pytest.mark.backend_independent
def test_evaluate_image_size_resizes_a_model_and_bad_sizes_are_one_line(tmp_path):
    from conftest import make_generator_run

    run = make_generator_run(tmp_path / "run", image_size=32)
    np.save(tmp_path / "real16.npy", procedural_nebulae(6, 16, seed=0))
    code, out = run_cli("--model", run, "--data", tmp_path / "real16.npy", "--image-size", 16, "-n", 6,
                        "--metrics", "swd", "--json", tmp_path / "s.json")
    assert code == 0, out
    assert "32 px resized to 16 px" in out
    assert json.loads((tmp_path / "s.json").read_text())["image_size"] == 16
    for args, message in (
        (["--image-size", 48], "SWD needs a power-of-two --image-size"),
        (["--image-size", 8], "--image-size must be at least 16 px"),
        (["--holdout", 0.2], "--holdout-data and --holdout go with --nearest"),
        (["--nearest", tmp_path / "n.png", "--holdout", 0.2, "--holdout-data", tmp_path / "real16.npy"],
         "give --holdout-data DIR or --holdout FRACTION, not both"),
    ):
        code, out = run_cli("--model", run, "--data", tmp_path / "real16.npy", "-n", 6, *args)
        assert code != 0 and message in out, (args, out)
        assert sum(line.startswith("Error") for line in out.splitlines()) == 1, out


@pytest.mark.backend_independent
def test_evaluate_nearest_holds_out_the_runs_own_split(tmp_path):
    from conftest import make_generator_run

    run = make_generator_run(tmp_path / "run", image_size=32)
    (run / "config.json").write_text(json.dumps({"holdout": 0.25, "seed": 3}))  # what the split reads
    train_dir = write_folder(tmp_path / "train", procedural_nebulae(40, 32, seed=4))
    code, out = run_cli("--model", run, "--data", train_dir, "-n", 8, "--metrics", "swd",
                        "--nearest", tmp_path / "n.png", "--json", tmp_path / "n.json")
    assert code == 0, out
    assert "10 held out of the 40 training images (--holdout 0.25, seed 3)" in out
    report = json.loads((tmp_path / "n.json").read_text())
    from nebula_keras3.data.split import holdout_indices

    kept, _ = holdout_indices(40, 0.25, 3)
    searched = {f"{i:03d}.png" for i in kept}
    assert all(name in searched for row in report["nearest"] for name, _ in row["features"] + row["pixels"])
    assert len(report["nearest"]) == 8 and report["nn_train_count"] == 30
