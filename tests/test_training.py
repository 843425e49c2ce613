"""Runs: the files a run writes, divergence, bad runs (exact resume after kills: test_resume.py)."""

import csv
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import tiny_config

from nebula_keras3.artifacts import resolve_generator
from nebula_keras3.training import trainer
from nebula_keras3.training.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, read_header
from nebula_keras3.training.gan import GAN

quiet = dict(progress=False, echo=lambda *_: None)


def checkpoint_arrays(run_dir):
    with np.load(checkpoint_path(run_dir)) as data:
        return {k: data[k] for k in data.files if k != "header"}


def assert_same_checkpoints(a, b):
    xa, xb = checkpoint_arrays(a), checkpoint_arrays(b)
    assert xa.keys() == xb.keys()
    for k in xa:
        np.testing.assert_array_equal(xa[k], xb[k], err_msg=k)


def test_one_epoch_writes_a_complete_run(tmp_path):
    run = tmp_path / "run"
    result = trainer.train(tiny_config(), run, **quiet)
    assert result.epochs_done == 1 and result.steps_done == 4  # 32 images / batch 8
    for name in ("config.json", "generator.keras", "generator.json", "losses.csv", "epochs.csv",
                 "losses.png", "samples/epoch_001.png", "checkpoints/last.npz"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "losses.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert set(rows[0]) == {"epoch", "step", "d_loss", "g_loss", "d_real", "d_fake"}
    header = read_header(checkpoint_path(run))
    assert header["epoch"] == 1 and header["step"] == 4
    model_path, facts = resolve_generator(run)
    assert facts["backend"] == keras.backend.backend()
    assert (facts["latent_dim"], facts["image_size"], facts["epoch"], facts["step"]) == (16, 32, 1, 4)
    generator = keras.saving.load_model(model_path)
    assert generator.output_shape == (None, 32, 32, 3)
    from PIL import Image

    grid = Image.open(run / "samples" / "epoch_001.png")
    assert grid.size[0] > 32 * 4  # 16 samples tiled 4x4
    assert not list(run.rglob(".*tmp*")), "temp files left behind"


@pytest.mark.backend_independent  # the run folder's own checks
def test_refuses_to_overwrite_a_run(tmp_path):
    trainer.train(tiny_config(steps_per_epoch=1), tmp_path / "run", **quiet)
    with pytest.raises(trainer.RunError, match="already holds a run"):
        trainer.train(tiny_config(), tmp_path / "run", **quiet)
    with pytest.raises(trainer.RunError, match="not a run folder"):
        trainer.resume(tmp_path / "nothing", **quiet)


@pytest.mark.backend_independent  # checkpoint.py's shape check
def test_checkpoint_from_another_config_is_a_clear_error(tmp_path):
    trainer.train(tiny_config(steps_per_epoch=1), tmp_path / "run", **quiet)
    other = trainer.build_gan(tiny_config(ngf=4))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(other, checkpoint_path(tmp_path / "run"))


@pytest.mark.backend_independent  # the trainer's loss check and checkpoint files
def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    trainer.train(tiny_config(epochs=1), run, **quiet)
    before = checkpoint_path(run).read_bytes()

    def nan_loss(self, gen_logits):
        return keras.ops.mean(gen_logits) * float("nan")

    monkeypatch.setattr(GAN, "generator_loss", nan_loss)
    with pytest.raises(trainer.TrainingDiverged, match=r"diverged at epoch 2, step 5 .*epoch 1"):
        trainer.resume(run, epochs=3, **quiet)
    assert checkpoint_path(run).read_bytes() == before
    assert not (run / "samples" / "epoch_002.png").exists()


@pytest.mark.realdata
def test_trains_on_the_real_nebula_photos(real_data, tmp_path):
    result = trainer.train(tiny_config(data=str(real_data), steps_per_epoch=2), tmp_path / "run", **quiet)
    assert result.steps_done == 2
    assert result.data.startswith("1461 images from")  # every photo decodes, none skipped


def _rewrite_header(path, **changes):
    import json

    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(arrays["header"].tobytes().decode())
    header.update(changes)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return header


def test_checkpoint_variable_names_are_checked(tmp_path):
    """Same shapes in another order (BatchNorm gamma and beta swapped) are refused, not loaded."""
    from nebula_keras3.training.checkpoint import save_checkpoint

    gan = trainer.build_gan(tiny_config())
    path = save_checkpoint(gan, tmp_path / "run", epoch=0)
    names = read_header(path)["names"]
    i = names.index("up0_bn/gamma")
    assert names[i + 1] == "up0_bn/beta"
    names[i], names[i + 1] = names[i + 1], names[i]
    _rewrite_header(path, names=names)
    with pytest.raises(CheckpointError, match=rf"variable {i} is 'up0_bn/beta' in the checkpoint but 'up0_bn/gamma'"):
        load_checkpoint(gan, path)


def _image_folder(folder, n, seed=0):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"im{i:02d}.png")
    return folder


@pytest.mark.backend_independent  # run folder and data bookkeeping
def test_resume_cleans_temp_files_and_refuses_changed_data(tmp_path):
    """A resume removes temp files of killed writes, and refuses a changed image folder unless allowed."""
    data = _image_folder(tmp_path / "data", 8)
    run = tmp_path / "run"
    trainer.train(tiny_config(data=str(data), steps_per_epoch=1), run, **quiet)
    assert '"image_count": 8' in (run / "data.json").read_text()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process that no longer exists: what a SIGKILLed writer leaves
    stale = [run / "checkpoints" / f".last.npz.tmp{dead.pid}-0123abcd",
             run / "samples" / f".epoch_002.png.tmp{dead.pid}-89abcdef.png"]
    live = run / "checkpoints" / f".last.npz.tmp{subprocess.os.getpid()}-0123abcd"  # a writer still running
    for p in stale + [live]:
        p.write_bytes(b"half a file")
    _image_folder(tmp_path / "extra", 1, seed=1)
    (tmp_path / "extra" / "im00.png").rename(data / "new.png")
    messages = []
    with pytest.raises(trainer.RunError, match=r"training data of .* changed: 8 images .* 9 images .*--allow-data-change"):
        trainer.resume(run, epochs=2, progress=False, echo=messages.append)
    assert not any(p.exists() for p in stale) and live.exists()
    assert any("removed 2 temp file(s)" in m for m in messages)
    assert read_header(checkpoint_path(run))["epoch"] == 1  # nothing trained, nothing lost
    messages = []
    result = trainer.resume(run, epochs=2, allow_data_change=True, progress=False, echo=messages.append)
    assert result.epochs_done == 2
    assert any("warning: continuing on changed training data" in m for m in messages)
    assert '"image_count": 9' in (run / "data.json").read_text()


def test_deterministic_flag_turns_on_deterministic_kernels(tmp_path):
    """`deterministic=True` switches the current backend to its deterministic kernels (own process)."""
    code = (
        "import os, keras\n"
        "from nebula_keras3.training.determinism import enable_deterministic_ops, XLA_DETERMINISTIC_FLAG\n"
        "b = keras.backend.backend()\n"
        "enable_deterministic_ops()\n"
        "if b == 'tensorflow':\n"
        "    from tensorflow.python.framework import config\n"
        "    ok = config.is_op_determinism_enabled()\n"
        "elif b == 'torch':\n"
        "    import torch\n"
        "    ok = torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark\n"
        "else:\n"
        "    ok = XLA_DETERMINISTIC_FLAG in os.environ['XLA_FLAGS'].split()\n"
        "print('DETERMINISTIC', ok)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DETERMINISTIC True" in proc.stdout
    from nebula_keras3.training.config import TrainConfig

    assert TrainConfig.from_preset("tiny", deterministic=True).deterministic is True
