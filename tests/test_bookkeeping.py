"""Per-epoch bookkeeping costs O(new rows): losses.csv is appended, losses.png plots a bounded series,
and a torch/JAX run never imports TensorFlow."""

import csv
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import REPO, tiny_config

from nebula_keras3.training import trainer
from nebula_keras3.training.loss_plot import LossHistory

quiet = dict(progress=False, echo=lambda *_: None)


@pytest.mark.backend_independent
def test_loss_history_stays_bounded_and_keeps_bin_means():
    h = LossHistory(("a",), max_points=64)
    for step in range(1, 10_001):
        h.add(step, {"a": step})
    steps, series = h.series()
    assert 32 <= len(steps) < 64 and h.width == 256
    # each point is the mean of its `width` consecutive steps, the last of which it is plotted at
    np.testing.assert_allclose(series["a"], steps - (h.width - 1) / 2)


@pytest.mark.backend_independent  # CSV bookkeeping
def test_losses_csv_is_appended_not_rewritten_and_resume_drops_unfinished_rows(tmp_path):
    run = tmp_path / "run"
    trainer.train(tiny_config(epochs=1), run, **quiet)
    csv_path = run / "losses.csv"
    inode = os.stat(csv_path).st_ino
    first = csv_path.read_text()
    # A run killed after appending part of epoch 2's rows, before its checkpoint:
    with open(csv_path, "a") as f:
        f.write("2,5,0.7,0.6,0.5,0.4\n2,6,0.7")
    trainer.resume(run, epochs=3, **quiet)
    text = csv_path.read_text()
    assert text.startswith(first)
    rows = list(csv.DictReader(open(csv_path)))
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert [int(r["epoch"]) for r in rows] == [1] * 4 + [2] * 4 + [3] * 4
    assert list(rows[0]) == ["epoch", "step", "d_loss", "g_loss", "d_real", "d_fake"]
    # epochs 2 and 3 appended to the file the resume started (not replaced each epoch)
    assert os.stat(csv_path).st_ino != inode  # the resume truncated it once, atomically
    inode = os.stat(csv_path).st_ino
    trainer.resume(run, epochs=3, **quiet)  # nothing left to do: rows unchanged
    assert csv_path.read_text() == text


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="TensorFlow runs import TensorFlow")
def test_a_training_run_never_imports_tensorflow(tmp_path):
    code = (
        "import sys\n"
        "from nebula_keras3.training import trainer\n"
        "from nebula_keras3.training.config import TrainConfig\n"
        f"trainer.train(TrainConfig.from_preset('tiny', steps_per_epoch=2), {str(tmp_path / 'run')!r},"
        " progress=False, echo=lambda *_: None)\n"
        "import keras\n"
        f"keras.saving.load_model({str(tmp_path / 'run' / 'generator.keras')!r})\n"
        "print('tensorflow' in sys.modules)\n"
    )
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False", "a torch/JAX run imported TensorFlow"
