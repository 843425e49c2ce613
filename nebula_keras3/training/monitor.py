"""The run's eyes and memory: losses, sample grids, plots, checkpoints, divergence."""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections import deque
from pathlib import Path

import keras
import numpy as np
from keras import ops

from nebula_keras3.artifacts import atomic_path, write_bytes_atomic
from nebula_keras3.sampling.grid import make_grid, save_png
from nebula_keras3.training.checkpoint import save_checkpoint
from nebula_keras3.training.holdout_scoring import EVAL_COLUMNS, EVAL_SECONDS

LOSS_COLUMNS = ("epoch", "step", "d_loss", "g_loss", "d_real", "d_fake")
EPOCH_COLUMNS = ("epoch", "step", "seconds", "images_per_second", "d_loss", "g_loss", "d_real", "d_fake")

# A step's logs are read back (a host sync) only once this many later steps were
# dispatched, so JAX's asynchronous dispatch keeps the next steps queued meanwhile.
LOG_LAG_STEPS = 2
# losses.png plots at most this many points per series (older steps averaged in bins).
PLOT_POINTS = 2000


def sample_grid_path(run_dir: Path, epoch: int) -> Path:
    """The grid of fixed-noise samples written after ``epoch`` (1-based)."""
    return Path(run_dir) / "samples" / f"epoch_{epoch:03d}.png"


def read_csv_rows(path: Path, keep_epochs_upto: int) -> list[dict]:
    """Complete rows of a run's CSV that belong to finished, checkpointed epochs."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    kept = []
    for r in rows:  # a row cut short by a kill mid-append has missing or unparsable fields
        try:
            if None in r.values() or "" in r.values() or int(r["epoch"]) > keep_epochs_upto:
                continue
        except (TypeError, ValueError):
            continue
        kept.append(r)
    return kept


def write_csv_atomic(path: Path, columns, rows) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(buf.getvalue().encode(), path)


def append_csv_rows(path: Path, columns, rows) -> None:
    """Append rows to a CSV that ``write_csv_atomic`` started (cost: the new rows only)."""
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore").writerows(rows)  # step logs may hold more
    with open(path, "a", newline="") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())


class LossHistory:
    """Per-step values kept in at most ``max_points`` bins for plotting (O(1) amortised per step).

    Bins hold ``width`` consecutive steps each; when the bins fill up, neighbours merge and
    ``width`` doubles, so the series keeps its whole run at a bounded resolution.
    """

    def __init__(self, keys, max_points: int = PLOT_POINTS):
        self.keys = tuple(keys)
        self.max_points = max_points
        self.width = 1
        self.steps: list[int] = []  # last step of each full bin
        self.values: list[np.ndarray] = []  # bin means, one array [len(keys)] each
        self._pending: list[np.ndarray] = []

    def add(self, step: int, row: dict) -> None:
        self._pending.append(np.array([float(row[k]) for k in self.keys]))
        if len(self._pending) == self.width:
            self.steps.append(int(step))
            self.values.append(np.mean(self._pending, axis=0))
            self._pending = []
            if len(self.steps) >= self.max_points:
                self.steps = self.steps[1::2]
                self.values = [(a + b) / 2 for a, b in zip(self.values[0::2], self.values[1::2])]
                self.width *= 2

    def series(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        values = np.array(self.values).reshape(-1, len(self.keys))
        return np.array(self.steps), {k: values[:, i] for i, k in enumerate(self.keys)}


def plot_losses(history: LossHistory, path: Path, epoch_rows=(), metric_columns=()) -> None:
    """losses.png: D and G losses per step (raw and smoothed), D(x) and D(G(z));
    plus a panel of the held-out figures per epoch when ``metric_columns`` has any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, series = history.series()
    scored = [r for r in epoch_rows if metric_columns and r.get(metric_columns[0]) not in (None, "")]
    panels = 3 if scored else 2
    fig, axes = plt.subplots(panels, 1, figsize=(9, 3 * panels), sharex=True)
    ax1, ax2 = axes[0], axes[1]
    window = max(1, len(steps) // 50)
    for key, color in (("d_loss", "tab:blue"), ("g_loss", "tab:orange")):
        y = series[key]
        ax1.plot(steps, y, color=color, alpha=0.25, linewidth=0.8)
        smooth = np.convolve(y, np.ones(window) / window, mode="valid")
        ax1.plot(steps[window - 1 :], smooth, color=color, label=key)
    ax1.set_ylabel("loss" if history.width == 1 else f"loss (means of {history.width} steps)")
    ax1.legend()
    for key, label in (("d_real", "D(x)"), ("d_fake", "D(G(z))")):
        ax2.plot(steps, series[key], label=label, linewidth=0.8)
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("step")
    ax2.legend()
    if scored:
        ax3 = axes[2]
        x = [int(r["step"]) for r in scored]
        for key in metric_columns:
            ax3.plot(x, [max(float(r[key]), 1e-6) for r in scored], marker="o", label=key)
        ax3.set_yscale("log")
        ax3.set_ylabel("held-out")
        ax3.set_xlabel("step")
        ax3.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


class TrainingMonitor(keras.callbacks.Callback):
    """Per step: record losses and stop on NaN/inf. Per epoch: samples, CSVs, plot, checkpoint.

    On creation it truncates ``losses.csv`` / ``epochs.csv`` to the checkpointed
    ``start_epoch`` epochs (a resumed run drops rows of an epoch cut short), then appends
    each finished epoch's rows, so per-epoch bookkeeping costs that epoch's rows only.
    Each step's logs are read back ``LOG_LAG_STEPS`` steps late (all of them, in order):
    NaN/inf still names its exact step; training stops a step or two after it.
    A diverged epoch writes nothing, so the last checkpoint stays the last good one.
    """

    def __init__(self, run_dir, *, sample_count, batch_size, start_epoch=0, echo=print, extra_columns=()):
        super().__init__()
        self.extra_columns = tuple(extra_columns)  # epochs.csv columns taken from the epoch's logs
        self.epoch_columns = EPOCH_COLUMNS + self.extra_columns
        self.run_dir = Path(run_dir)
        self.batch_size = batch_size
        self.sample_count = sample_count
        self.echo = echo
        self.diverged = None  # (epoch, step, logs) of the first non-finite step
        self.losses_csv = self.run_dir / "losses.csv"
        self.epochs_csv = self.run_dir / "epochs.csv"
        loss_rows = read_csv_rows(self.losses_csv, start_epoch)
        self.epoch_rows = read_csv_rows(self.epochs_csv, start_epoch)  # small: one row per epoch
        write_csv_atomic(self.losses_csv, LOSS_COLUMNS, loss_rows)
        write_csv_atomic(self.epochs_csv, self.epoch_columns, self.epoch_rows)
        self.history = LossHistory(LOSS_COLUMNS[2:])
        for r in loss_rows:
            self.history.add(int(r["step"]), r)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_index = epoch
        self._epoch_start = time.perf_counter()
        self._epoch_rows = []
        self._pending = deque()  # (step, logs not yet read back)
        self._step0 = self.model.steps_done

    def on_train_batch_end(self, batch, logs=None):
        self._pending.append((self._step0 + batch + 1, logs or {}))
        while len(self._pending) > LOG_LAG_STEPS:
            self._read_back_oldest()

    def _read_back_oldest(self):
        step, logs = self._pending.popleft()
        if self.diverged is not None:
            return
        values = {k: float(ops.convert_to_numpy(v)) for k, v in logs.items()}
        if not all(math.isfinite(v) for v in values.values()):
            self.diverged = (self._epoch_index + 1, step, values)
            self.model.stop_training = True
            return
        self._epoch_rows.append({"epoch": self._epoch_index + 1, "step": step, **values})

    def on_epoch_end(self, epoch, logs=None):
        while self._pending:
            self._read_back_oldest()
        if self.diverged is not None:
            return
        seconds = time.perf_counter() - self._epoch_start - (logs or {}).get(EVAL_SECONDS, 0.0)
        n_steps = len(self._epoch_rows)
        done = epoch + 1
        means = {k: float(np.mean([r[k] for r in self._epoch_rows])) for k in LOSS_COLUMNS[2:]}
        self.epoch_rows.append(
            {
                "epoch": done,
                "step": self.model.steps_done,
                "seconds": round(seconds, 3),
                "images_per_second": round(n_steps * self.batch_size / seconds, 2),
                **{k: round(v, 5) for k, v in means.items()},
                **{k: (logs or {}).get(k, "") for k in self.extra_columns},
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
        """Sample grid, this epoch's CSV rows (appended) and the plot; a resume truncates extras."""
        images = self.model.generate(self.sample_count, seed=0)  # EMA weights when kept; seeds 0..n-1
        save_png(make_grid(images), sample_grid_path(self.run_dir, done))
        append_csv_rows(self.losses_csv, LOSS_COLUMNS, self._epoch_rows)
        append_csv_rows(self.epochs_csv, self.epoch_columns, self.epoch_rows[-1:])
        for r in self._epoch_rows:
            self.history.add(r["step"], r)
        plot_losses(self.history, self.run_dir / "losses.png", self.epoch_rows,
                    tuple(c for c in self.extra_columns if c in EVAL_COLUMNS))  # held-out figures only
