"""--checkpoint best|last|FILE: sample, evaluate and export read the chosen training state's EMA weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_config

from nebula_keras3.training.checkpoint import BEST_FILE, checkpoint_path, read_header

quiet = dict(progress=False, echo=lambda *_: None)


def make_run_with_best_at_epoch_1(folder: Path) -> Path:
    """A tiny run (EMA kept) whose checkpoints/best.npz holds epoch 1 and whose final state is epoch 2.

    ``--eval-every`` writes best.npz with ``save_checkpoint``, as ``last.npz`` is written; which
    epoch scores best is up to the data, so the fixture copies epoch 1's ``last.npz`` to
    ``best.npz`` to make the best state differ from the final one for sure. A large
    generator learning rate makes the two states' images differ clearly.
    """
    from nebula_keras3.training import trainer

    config = tiny_config(epochs=1, ema_decay=0.9, g_learning_rate=0.02)
    trainer.train(config, folder, **quiet)
    epoch1 = folder / "epoch1.npz"
    shutil.copy(checkpoint_path(folder), epoch1)
    trainer.resume(folder, epochs=2, **quiet)
    shutil.copy(epoch1, checkpoint_path(folder, BEST_FILE))
    return folder


@pytest.fixture(scope="module")
def best_run(tmp_path_factory) -> Path:
    return make_run_with_best_at_epoch_1(tmp_path_factory.mktemp("best-run") / "run")


def ema_arrays(npz: Path) -> dict:
    """The EMA generator's arrays of a checkpoint, by the generator's variable path."""
    header = read_header(npz)
    with np.load(npz) as data:
        return {name[len("generator_ema/"):]: data[f"v{i:06d}"]
                for i, name in enumerate(header["names"]) if name.startswith("generator_ema/")}


# Which state is read; the samplers themselves run per backend in test_sampling.py.
@pytest.mark.backend_independent
def test_states_hold_the_ema_weights_of_their_checkpoint(best_run):
    from nebula_keras3.sampling.keras_sampler import KerasSampler

    best = KerasSampler(best_run, checkpoint="best")
    assert best.facts["checkpoint"] == "best" and best.facts["epoch"] == 1 and best.facts["weights"] == "ema"
    expected = ema_arrays(checkpoint_path(best_run, BEST_FILE))
    assert len(expected) == len(best.model.variables)
    for v in best.model.variables:
        np.testing.assert_array_equal(np.asarray(v.numpy()), expected[v.path], err_msg=v.path)
    final = KerasSampler(best_run)
    assert final.facts["checkpoint"] == "final" and final.facts["epoch"] == 2
    last = KerasSampler(best_run, checkpoint="last")
    from_file = KerasSampler(best_run, checkpoint=str(best_run / "epoch1.npz"))
    assert last.facts["epoch"] == 2 and from_file.facts["epoch"] == 1
    assert from_file.facts["checkpoint"] == str((best_run / "epoch1.npz").resolve())
    a, b = best.sample(0, 8), final.sample(0, 8)
    assert np.abs(a.astype(int) - b).max() > 8  # the two states draw different images
    assert np.array_equal(from_file.sample(0, 8), a)
    assert np.abs(last.sample(0, 8).astype(int) - b).max() <= 1  # last.npz is the final state


@pytest.mark.backend_independent  # CLI output
def test_sample_and_evaluate_say_which_state_they_used(best_run, tmp_path):
    from nebula_keras3.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["sample", "--model", str(best_run), "--checkpoint", "best", "-n", 4,
                             "--npy", str(tmp_path / "best.npy")])
    assert r.exit_code == 0, r.output
    assert "best checkpoint, epoch 1" in r.output
    r = runner.invoke(main, ["sample", "--model", str(best_run), "-n", 4, "--npy", str(tmp_path / "final.npy")])
    assert r.exit_code == 0 and "final generator, epoch 2" in r.output, r.output
    assert not np.array_equal(np.load(tmp_path / "best.npy"), np.load(tmp_path / "final.npy"))

    np.save(tmp_path / "real.npy", np.load(tmp_path / "final.npy"))
    r = runner.invoke(main, ["evaluate", "--model", str(best_run), "--checkpoint", "best", "--data",
                             str(tmp_path / "real.npy"), "-n", 4, "--metrics", "swd", "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    assert "best checkpoint, epoch 1" in r.output
    assert json.loads((tmp_path / "e.json").read_text())["checkpoint"] == {"checkpoint": "best", "epoch": 1}


@pytest.mark.backend_independent
def test_checkpoint_errors_are_one_line(best_run, tmp_path):
    from nebula_keras3.cli import main

    no_best = tmp_path / "no-best"
    shutil.copytree(best_run, no_best)
    (no_best / "checkpoints" / BEST_FILE).unlink()
    (tmp_path / "junk.npz").write_bytes(b"not a checkpoint")
    stopped = tmp_path / "stopped"  # killed before its last epoch: a checkpoint but no generator.keras yet
    shutil.copytree(best_run, stopped)
    (stopped / "generator.keras").unlink()
    cases = [
        (["--model", stopped], "the run stopped before its last epoch. Use the state it reached with --checkpoint last"),
        (["--model", no_best, "--checkpoint", "best"], "has no checkpoints/best.npz (written by `nebula train --holdout"),
        (["--model", best_run / "generator.keras", "--checkpoint", "last"], "needs a run folder"),
        (["--model", best_run, "--checkpoint", tmp_path / "missing.npz"], "does not exist: give best, last or"),
        (["--model", best_run, "--checkpoint", tmp_path / "junk.npz"], "is not a readable checkpoint"),
        (["--onnx", tmp_path / "x.onnx", "--checkpoint", "best"], "not of --onnx"),
    ]
    for args, needle in cases:
        r = CliRunner().invoke(main, ["sample", *map(str, args), "-n", 2, "--npy", str(tmp_path / "x.npy")])
        assert r.exit_code != 0, (args, r.output)
        errors = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1 and needle in errors[0], (args, r.output)
