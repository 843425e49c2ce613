"""The run's eyes and memory: losses, sample grids, plots, checkpoints, divergence."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

from nebula_keras3.artifacts import atomic_path, write_bytes_atomic
from nebula_keras3.sampling.grid import make_grid, save_png, to_uint8
from nebula_keras3.sampling.latents import batch_seeds, latents_from_seeds
from nebula_keras3.training.checkpoint import save_checkpoint

LOSS_COLUMNS = ("epoch", "step", "d_loss", "g_loss", "d_real", "d_fake")
EPOCH_COLUMNS = ("epoch", "step", "seconds", "images_per_second", "d_loss", "g_loss", "d_real", "d_fake")


def read_csv_rows(path: Path, keep_epochs_upto: int) -> list[dict]:
    """Rows of a run's CSV that belong to finished, checkpointed epochs."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["epoch"]) <= keep_epochs_upto]


def write_csv_atomic(path: Path, columns, rows) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(buf.getvalue().encode(), path)


def plot_losses(rows: list[dict], path: Path) -> None:
    """losses.png: D and G losses per step (raw and smoothed), D(x) and D(G(z))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([int(r["step"]) for r in rows])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    window = max(1, len(rows) // 50)
    for key, color in (("d_loss", "tab:blue"), ("g_loss", "tab:orange")):
        y = np.array([float(r[key]) for r in rows])
        ax1.plot(steps, y, color=color, alpha=0.25, linewidth=0.8)
        smooth = np.convolve(y, np.ones(window) / window, mode="valid")
        ax1.plot(steps[window - 1 :], smooth, color=color, label=key)
    ax1.set_ylabel("loss")
    ax1.legend()
    for key, label in (("d_real", "D(x)"), ("d_fake", "D(G(z))")):
        ax2.plot(steps, [float(r[key]) for r in rows], label=label, linewidth=0.8)
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("step")
    ax2.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


class TrainingMonitor(keras.callbacks.Callback):
    """Per step: record losses and stop on NaN/inf. Per epoch: samples, CSVs, plot, checkpoint.

    A diverged epoch writes nothing, so the last checkpoint stays the last good one.
    """

    def __init__(self, run_dir, *, sample_count, batch_size, loss_rows, epoch_rows, echo=print):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.batch_size = batch_size
        self.loss_rows = loss_rows
        self.epoch_rows = epoch_rows
        self.sample_count = sample_count
        self.echo = echo
        self.diverged = None  # (epoch, step, logs) of the first non-finite step
        self._fixed_z = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_index = epoch
        self._epoch_start = time.perf_counter()
        self._epoch_rows = []
        self._step0 = self.model.steps_done

    def on_train_batch_end(self, batch, logs=None):
        values = {k: float(ops.convert_to_numpy(v)) for k, v in (logs or {}).items()}
        step = self._step0 + batch + 1
        if not all(math.isfinite(v) for v in values.values()):
            self.diverged = (self._epoch_index + 1, step, values)
            self.model.stop_training = True
            return
        self._epoch_rows.append({"epoch": self._epoch_index + 1, "step": step, **values})

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged is not None:
            return
        seconds = time.perf_counter() - self._epoch_start
        n_steps = len(self._epoch_rows)
        done = epoch + 1
        means = {k: float(np.mean([r[k] for r in self._epoch_rows])) for k in LOSS_COLUMNS[2:]}
        self.loss_rows.extend(self._epoch_rows)
        self.epoch_rows.append(
            {
                "epoch": done,
                "step": self.model.steps_done,
                "seconds": round(seconds, 3),
                "images_per_second": round(n_steps * self.batch_size / seconds, 2),
                **{k: round(v, 5) for k, v in means.items()},
            }
        )
        self.write_epoch_files(done)
        save_checkpoint(self.model, self.run_dir, epoch=done)
        r = self.epoch_rows[-1]
        self.echo(
            f"epoch {done}: d_loss {r['d_loss']:.4f}  g_loss {r['g_loss']:.4f}  "
            f"D(x) {r['d_real']:.3f}  D(G(z)) {r['d_fake']:.3f}  "
            f"{r['images_per_second']:.1f} img/s  ({seconds:.1f} s)"
        )

    def write_epoch_files(self, done: int) -> None:
        gen = self.model.inference_generator  # EMA weights when the run keeps them
        if self._fixed_z is None:
            self._fixed_z = latents_from_seeds(batch_seeds(0, self.sample_count), self.model.latent_dim)
        images = to_uint8(ops.convert_to_numpy(gen(self._fixed_z, training=False)))
        save_png(make_grid(images), self.run_dir / "samples" / f"epoch_{done:03d}.png")
        write_csv_atomic(self.run_dir / "losses.csv", LOSS_COLUMNS, self.loss_rows)
        write_csv_atomic(self.run_dir / "epochs.csv", EPOCH_COLUMNS, self.epoch_rows)
        plot_losses(self.loss_rows, self.run_dir / "losses.png")

