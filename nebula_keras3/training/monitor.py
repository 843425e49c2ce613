"""The run's Keras callbacks, one job each: stop on non-finite losses, the epoch summary,
sample grids, ``losses.csv``, ``epochs.csv``, ``losses.png``, the checkpoint, the console line.

They share nothing but what Keras hands every callback: the model and each batch's and
epoch's ``logs`` dict, passed to the callbacks in list order. What one callback tells
the later ones goes into the epoch's logs under a documented key:

* ``StopOnNonFinite`` sets ``logs[NON_FINITE]`` (the step) on an epoch with a NaN/inf
  value; every callback below then writes nothing for that epoch, so the last
  checkpoint stays the last good one;
* ``EpochSummary`` replaces each step value in the epoch's logs by its mean over the
  epoch (rounded as ``epochs.csv`` keeps it) and adds ``seconds`` and ``images_per_second``.

``trainer._run`` lists them in the order the resume contract needs (see ``run_folder``):
stop-on-non-finite, held-out scoring, summary, grid, CSVs, plot, TensorBoard, checkpoint.
Columns follow the logs: ``losses.csv`` has one column per value the train step logs,
``epochs.csv`` adds the columns the trainer declares (``extra_columns``), so a new logged
value needs no edit here.
"""

from __future__ import annotations

import math
import time
from collections import deque
from pathlib import Path

import keras
from keras import ops

from nebula_keras3.sampling.grid import make_grid, save_png
from nebula_keras3.training.checkpoint import save_checkpoint
from nebula_keras3.training.holdout_scoring import EVAL_SECONDS
from nebula_keras3.training.loss_plot import PLOT_POINTS, LossHistory, plot_losses  # noqa: F401
from nebula_keras3.training.run_folder import (
    EPOCHS_CSV,
    LOSSES_CSV,
    LOSSES_PNG,
    ROW_KEYS,
    WALL_CLOCK_COLUMNS,
    append_csv_rows,
    check_columns,
    epoch_means,
    read_table,
    sample_grid_path,
)

# A step's logs are read back (a host sync) only once this many later steps were
# dispatched, so JAX's asynchronous dispatch keeps the next steps queued meanwhile.
LOG_LAG_STEPS = 2
# Epoch-logs key StopOnNonFinite sets (to the first non-finite step) on a diverged epoch.
NON_FINITE = "non_finite_step"
# The step values losses.png plots.
PLOT_KEYS = ("d_loss", "g_loss", "d_real", "d_fake")


def value_columns(keys) -> list[str]:
    """The CSV order of the step values: ``PLOT_KEYS`` first, then the others by name."""
    keys = list(keys)
    return [k for k in PLOT_KEYS if k in keys] + sorted(k for k in keys if k not in PLOT_KEYS)


def diverged(logs) -> bool:
    return logs is not None and NON_FINITE in logs


class StepValues(keras.callbacks.Callback):
    """Base class: each step's logs as floats, read back ``LOG_LAG_STEPS`` steps late, in order.

    Subclasses get ``on_step(epoch, step, values)`` for every step of an epoch before
    ``on_epoch_done(epoch, logs)`` (epochs 1-based, steps global); ``self.steps`` holds the
    epoch's ``(step, values)`` read so far. Each instance keeps its own queue: no callback
    depends on another having read a value.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1
        self._step0 = self.model.steps_done
        self._pending = deque()
        self.steps: list[tuple[int, dict]] = []

    def on_train_batch_end(self, batch, logs=None):
        self._pending.append((self._step0 + batch + 1, logs or {}))
        while len(self._pending) > LOG_LAG_STEPS:
            self._read_back_oldest()

    def _read_back_oldest(self):
        step, logs = self._pending.popleft()
        values = {k: float(ops.convert_to_numpy(v)) for k, v in logs.items()}
        self.steps.append((step, values))
        self.on_step(self._epoch, step, values)

    def on_epoch_end(self, epoch, logs=None):
        while self._pending:
            self._read_back_oldest()
        self.on_epoch_done(epoch + 1, logs if logs is not None else {})

    def on_step(self, epoch: int, step: int, values: dict) -> None:
        pass

    def on_epoch_done(self, epoch: int, logs: dict) -> None:
        pass


class StopOnNonFinite(StepValues):
    """Stops training at the first NaN/inf step value (a step or two later: the read-back lag).

    ``diverged``: ``(epoch, step, values)`` of that step, else None. Put it first in the
    callback list: it marks the diverged epoch's logs with ``NON_FINITE`` at its end.
    """

    def __init__(self):
        super().__init__()
        self.diverged = None

    def on_step(self, epoch, step, values):
        if self.diverged is None and not all(math.isfinite(v) for v in values.values()):
            self.diverged = (epoch, step, values)
            self.model.stop_training = True

    def on_epoch_done(self, epoch, logs):
        if self.diverged is not None and self.diverged[0] == epoch:
            logs[NON_FINITE] = self.diverged[1]


class EpochSummary(StepValues):
    """Puts the epoch's mean of every step value, ``seconds`` and ``images_per_second`` into its logs.

    ``seconds`` leaves out the held-out scoring (``EVAL_SECONDS`` in the logs: place the
    scoring callback before this one). ``rates``: ``(epoch, images_per_second)`` per epoch.
    """

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.rates: list[tuple[int, float]] = []

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._start = time.perf_counter()

    def on_epoch_done(self, epoch, logs):
        if diverged(logs) or not self.steps:
            return
        seconds = time.perf_counter() - self._start - logs.get(EVAL_SECONDS, 0.0)
        values = [v for _, v in self.steps]
        logs.update(epoch_means(values, values[0].keys()))
        logs[WALL_CLOCK_COLUMNS[0]] = round(seconds, 3)
        logs[WALL_CLOCK_COLUMNS[1]] = round(len(values) * self.batch_size / seconds, 2)
        self.rates.append((epoch, logs[WALL_CLOCK_COLUMNS[1]]))


class SampleGrids(keras.callbacks.Callback):
    """``samples/epoch_NNN.png``: ``count`` images from fixed seeds (EMA weights when kept)."""

    def __init__(self, run_dir, count: int):
        super().__init__()
        self.run_dir, self.count = Path(run_dir), count

    def on_epoch_end(self, epoch, logs=None):
        if diverged(logs):
            return
        images = self.model.generate(self.count, seed=0)  # seeds 0..n-1, as `nebula sample`
        save_png(make_grid(images), sample_grid_path(self.run_dir, epoch + 1))


class LossesCsv(StepValues):
    """``losses.csv``: one row per step (epoch, step, every value the step logs), appended per epoch."""

    def __init__(self, run_dir):
        super().__init__()
        self.path = Path(run_dir) / LOSSES_CSV
        self._checked = False

    def on_epoch_done(self, epoch, logs):
        if diverged(logs) or not self.steps:
            return
        rows = [{"epoch": epoch, "step": step, **values} for step, values in self.steps]
        columns = [*ROW_KEYS, *value_columns(rows[0].keys() - set(ROW_KEYS))]
        if not self._checked:
            check_columns(self.path, columns)
            self._checked = True
        append_csv_rows(self.path, columns, rows)


class EpochsCsv(keras.callbacks.Callback):
    """``epochs.csv``: one row per epoch from the epoch's logs (after ``EpochSummary``).

    Columns: epoch, step, ``WALL_CLOCK_COLUMNS``, each value the train step logs (its epoch
    mean), then ``extra_columns`` (empty in epochs whose logs lack them).
    """

    def __init__(self, run_dir, extra_columns=()):
        super().__init__()
        self.path = Path(run_dir) / EPOCHS_CSV
        self.extra_columns = tuple(extra_columns)
        self.columns = None

    def on_train_batch_end(self, batch, logs=None):
        if self.columns is None:  # the step values' names, from the first step
            self.columns = [*ROW_KEYS, *WALL_CLOCK_COLUMNS, *value_columns(logs or {}), *self.extra_columns]
            check_columns(self.path, self.columns)

    def on_epoch_end(self, epoch, logs=None):
        if diverged(logs) or self.columns is None:
            return
        row = {"epoch": epoch + 1, "step": self.model.steps_done,
               **{c: logs.get(c, "") for c in self.columns[len(ROW_KEYS):]}}
        append_csv_rows(self.path, self.columns, [row])


class LossPlot(StepValues):
    """``losses.png``, redrawn each epoch from the run's whole history (bounded resolution).

    A resumed run starts from the (repaired) CSVs on disk. ``metric_columns``: per-epoch
    figures for a third panel, taken from the epoch's logs.
    """

    def __init__(self, run_dir, metric_columns=()):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.metric_columns = tuple(metric_columns)

    def on_train_begin(self, logs=None):
        _, loss_rows, _ = read_table(self.run_dir / LOSSES_CSV)
        _, epoch_rows, _ = read_table(self.run_dir / EPOCHS_CSV)
        self.history = history_of(loss_rows)
        self.epoch_rows = [{k: r.get(k, "") for k in ("step", *self.metric_columns)} for r in epoch_rows]

    def on_epoch_done(self, epoch, logs):
        if diverged(logs):
            return
        for step, values in self.steps:
            self.history.add(step, values)
        self.epoch_rows.append({"step": self.model.steps_done, **{k: logs.get(k, "") for k in self.metric_columns}})
        plot_losses(self.history, self.run_dir / LOSSES_PNG, self.epoch_rows, self.metric_columns)


def history_of(loss_rows) -> LossHistory:
    history = LossHistory(PLOT_KEYS)
    for r in loss_rows:
        history.add(int(r["step"]), r)
    return history


def redraw_loss_plot(run_dir: Path, loss_columns, loss_rows, epoch_rows) -> None:
    """``losses.png`` as ``LossPlot`` draws it after the last of ``epoch_rows`` (a repair)."""
    columns = list(epoch_rows[0]) if epoch_rows else []
    metric_columns = [c for c in columns if c not in ROW_KEYS and c not in WALL_CLOCK_COLUMNS and c not in loss_columns]
    plot_losses(history_of(loss_rows), Path(run_dir) / LOSSES_PNG, epoch_rows, metric_columns)


class EpochCheckpoint(keras.callbacks.Callback):
    """``checkpoints/last.npz`` after each finished epoch; list it after every file writer."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.epochs_done = None  # the last epoch saved by this fit

    def on_epoch_end(self, epoch, logs=None):
        if diverged(logs):
            return
        save_checkpoint(self.model, self.run_dir, epoch=epoch + 1)
        self.epochs_done = epoch + 1


class EpochLine(keras.callbacks.Callback):
    """One console line per finished epoch, from its logs (after ``EpochSummary``)."""

    def __init__(self, echo=print):
        super().__init__()
        self.echo = echo

    def on_epoch_end(self, epoch, logs=None):
        if diverged(logs) or WALL_CLOCK_COLUMNS[0] not in (logs or {}):
            return
        self.echo(
            f"epoch {epoch + 1}: d_loss {logs['d_loss']:.4f}  g_loss {logs['g_loss']:.4f}  "
            f"D(x) {logs['d_real']:.3f}  D(G(z)) {logs['d_fake']:.3f}  "
            f"{logs['images_per_second']:.1f} img/s  ({logs['seconds']:.1f} s)"
        )
