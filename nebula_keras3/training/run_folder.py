"""The files of a run folder, the resume contract, and the repair a resume starts with.

The resume contract
-------------------
After any number of interruptions — SIGKILL or SIGTERM at any moment, a stop on a
non-finite loss, a full disk (``OSError`` from a write) — each followed by
``nebula train --resume RUN``, the run folder holds what one uninterrupted run with the
same final ``--epochs`` writes, file by file:

* ``checkpoints/last.npz`` and ``checkpoints/best.npz``: every array and the header;
* ``losses.csv``: every row (one per step);
* ``epochs.csv``: every row and column, except the wall-clock columns ``WALL_CLOCK_COLUMNS``
  (an epoch that was cut short is timed again when it is redone; a row rebuilt by a
  repair leaves them empty);
* ``samples/epoch_NNN.png`` (byte for byte) and ``losses.png`` (byte for byte: same data);
* TensorBoard scalars and images over all ``events.out.tfevents.*`` files (one value per
  tag and step, none missing, none twice), except event ``wall_time`` and the
  ``epoch/<WALL_CLOCK_COLUMNS>`` values; a resumed run adds one event file per invocation;
* ``data.json``, ``config.json``; ``generator.json`` except ``saved_at``, and
  ``generator.keras`` except its ``metadata.json`` (Keras' save date);
* no other file (temp files of killed writes are removed).

``contract_view`` in tests/support/run_contract.py reduces a folder to exactly what the contract
compares; tests/test_resume.py holds runs to it.

How it holds. Every file is written atomically (temp file, fsync, rename) or appended
to, and per epoch in this order (the callbacks' order in ``trainer._run``):
``checkpoints/best.npz`` (when the epoch scored best), sample grid, ``losses.csv``,
``epochs.csv``, ``losses.png``, TensorBoard events, then ``checkpoints/last.npz``. So after a kill every file is at most one epoch ahead of
the checkpoint, and ``repair`` (run before a resume trains) cuts each back to it:
rows, grids and events of later epochs go, a row torn by a kill mid-append goes,
``losses.png`` is redrawn from the cut CSVs. Training itself is exactly reproducible
from the checkpoint (weights, both optimizers, RNG state; data order from
(seed, epoch)), so the redone epochs write again what they wrote before.

What the checkpoint cannot vouch for is refused (``RunError`` naming the file): rows
missing before the checkpoint's epoch that the other files cannot rebuild, steps that
disagree with the checkpoint, a missing sample grid, a best checkpoint that is not
the best scored epoch. An ``epochs.csv`` row that is missing is rebuilt from
``losses.csv`` when its figures are all per-step means (its held-out columns empty).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from nebula_keras3.artifacts import write_bytes_atomic
from nebula_keras3.training.checkpoint import BEST_FILE, CHECKPOINT_DIR, CHECKPOINT_FILE, copy_checkpoint

LOSSES_CSV = "losses.csv"
EPOCHS_CSV = "epochs.csv"
LOSSES_PNG = "losses.png"
SAMPLES_DIR = "samples"

# Columns every row starts with; losses.csv then has one column per value the train step
# logs, epochs.csv the wall-clock columns, the epoch's mean of each step value, then the
# columns other callbacks put into the epoch's logs (held-out figures, ...).
ROW_KEYS = ("epoch", "step")
WALL_CLOCK_COLUMNS = ("seconds", "images_per_second")
WALL_CLOCK_FACTS = ("saved_at",)  # generator.json


class RunError(RuntimeError):
    """A run folder that cannot be started or resumed as asked (the message names the file)."""


def sample_grid_path(run_dir: Path, epoch: int) -> Path:
    """The grid of fixed-noise samples written after ``epoch`` (1-based)."""
    return Path(run_dir) / SAMPLES_DIR / f"epoch_{epoch:03d}.png"


# --- CSV files ----------------------------------------------------------------------------------


def read_table(path: Path) -> tuple[list[str], list[dict], bool]:
    """``(columns, rows, torn)`` of a run CSV; ``torn``: its last line was cut short (dropped).

    A complete line that does not parse (wrong field count, a non-integer epoch/step) is
    not what a kill leaves: RunError naming the file and line.
    """
    if not path.is_file():
        return [], [], False
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    torn = bool(lines) and not lines[-1].endswith("\n")
    if torn:
        lines = lines[:-1]
    if not lines:
        return [], [], torn
    columns = next(csv.reader([lines[0]]))
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = next(csv.reader([line]), [])
        try:
            if len(fields) != len(columns):
                raise ValueError(f"{len(fields)} fields, the header has {len(columns)}")
            row = dict(zip(columns, fields))
            int(row["epoch"]), int(row["step"])
        except (KeyError, ValueError) as e:
            raise RunError(f"{path}, line {number}, is not a row of this run ({e}): fix or remove the file") from None
        rows.append(row)
    return columns, rows, torn


def csv_text(columns, rows, header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns))
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_csv_atomic(path: Path, columns, rows) -> None:
    write_bytes_atomic(csv_text(columns, rows, header=True).encode(), path)


def append_csv_rows(path: Path, columns, rows) -> None:
    """Append rows (cost: the new rows only); a missing or empty file gets the header first."""
    if not path.is_file() or path.stat().st_size == 0:
        write_csv_atomic(path, columns, rows)
        return
    with open(path, "a", newline="") as f:
        f.write(csv_text(columns, rows, header=False))
        f.flush()
        os.fsync(f.fileno())


def check_columns(path: Path, columns) -> None:
    """Refuse to append rows of other columns to an existing CSV (the run's options changed)."""
    have, _, _ = read_table(path)
    if have and have != list(columns):
        raise RunError(f"{path} has the columns {', '.join(have)}, this run writes {', '.join(columns)}: "
                       "was it written by another version or configuration? Move it aside to continue.")


def epoch_means(step_rows: Iterable[dict], keys) -> dict:
    """The epochs.csv figures of an epoch's step rows: each key's mean, rounded to 5 decimals."""
    step_rows = list(step_rows)
    return {k: round(float(np.mean([float(r[k]) for r in step_rows])), 5) for k in keys}


# --- repair before a resume ---------------------------------------------------------------------


def repair(run_dir: Path, *, epoch: int, step: int, blank_columns: Callable[[int], set] = lambda e: set(),
           best_key: str | None = None, echo=print) -> list[str]:
    """Cut every file of ``run_dir`` back to the checkpoint at ``epoch`` / ``step`` (0/0: none).

    ``blank_columns(e)``: the epochs.csv columns that are empty in epoch ``e``'s row (held-out
    figures of an unscored epoch), so a lost row of such an epoch can be rebuilt.
    ``best_key``: the epochs.csv column that chose ``checkpoints/best.npz`` (lower is better).
    Returns what was repaired (also echoed); raises RunError naming the file it cannot vouch for.
    """
    run_dir = Path(run_dir)
    last = run_dir / CHECKPOINT_DIR / CHECKPOINT_FILE
    notes = []
    losses_path, epochs_path = run_dir / LOSSES_CSV, run_dir / EPOCHS_CSV
    loss_columns, loss_rows, loss_torn = read_table(losses_path)
    epoch_columns, epoch_rows, epoch_torn = read_table(epochs_path)
    recorded = max([int(r["epoch"]) for r in epoch_rows + loss_rows], default=0)
    if recorded > epoch + 1:  # files run at most one epoch ahead of the checkpoint they precede
        where = f"is at epoch {epoch}" if last.is_file() else "is missing"
        raise RunError(f"{last} {where} but {epochs_path.name}/{losses_path.name} record epoch {recorded}: "
                       "the checkpoint is not this run's latest; the epochs after it cannot be trusted")

    kept = [r for r in loss_rows if int(r["epoch"]) <= epoch]
    if [int(r["step"]) for r in kept] != list(range(1, step + 1)):
        steps = [int(r["step"]) for r in kept]
        raise RunError(f"{losses_path} holds steps {_span(steps)} of epochs 1..{epoch}, but {last} is at step {step}: "
                       "the per-step record and the checkpoint disagree")
    if len(kept) != len(loss_rows) or loss_torn:
        write_csv_atomic(losses_path, loss_columns, kept)
        notes.append(f"{losses_path.name}: cut back to step {step}")
    loss_rows = kept

    kept = [r for r in epoch_rows if int(r["epoch"]) <= epoch]
    have = {int(r["epoch"]) for r in kept}
    if epoch and not epoch_columns:
        raise RunError(f"{epochs_path} is missing or empty, but {last} is at epoch {epoch}")
    rebuilt = []
    for e in range(1, epoch + 1):
        if e in have:
            continue
        steps = [r for r in loss_rows if int(r["epoch"]) == e]
        means = [c for c in epoch_columns if c in loss_columns and c not in ROW_KEYS]
        unknown = [c for c in epoch_columns
                   if c not in ROW_KEYS and c not in means and c not in WALL_CLOCK_COLUMNS and c not in blank_columns(e)]
        if unknown or not steps:
            raise RunError(f"{epochs_path} has no row for epoch {e} (checkpoint {last} is at epoch {epoch}) and "
                           f"its {', '.join(unknown) or 'figures'} cannot be rebuilt from {losses_path.name}")
        row = dict.fromkeys(epoch_columns, "")
        row.update(epoch=e, step=steps[-1]["step"], **epoch_means(steps, means))
        rebuilt.append(row)
    if rebuilt:
        kept = sorted(kept + rebuilt, key=lambda r: int(r["epoch"]))
        notes.append(f"{epochs_path.name}: rebuilt the rows of epoch(s) {', '.join(str(r['epoch']) for r in rebuilt)} "
                     f"from {losses_path.name} (their wall-clock columns empty)")
    if [int(r["epoch"]) for r in kept] != list(range(1, epoch + 1)):
        raise RunError(f"{epochs_path} holds epochs {_span(int(r['epoch']) for r in kept)}, "
                       f"expected 1..{epoch} once each (checkpoint {last})")
    if rebuilt or len(kept) != len(epoch_rows) or epoch_torn:
        write_csv_atomic(epochs_path, epoch_columns, kept)
        if not rebuilt:
            notes.append(f"{epochs_path.name}: cut back to epoch {epoch}")
    epoch_rows = kept

    for grid in sorted((run_dir / SAMPLES_DIR).glob("epoch_*.png")):
        stem = grid.stem.removeprefix("epoch_")
        if stem.isdigit() and int(stem) > epoch:
            grid.unlink()
            notes.append(f"removed {grid.relative_to(run_dir)} (after the checkpoint)")
    for e in range(1, epoch + 1):
        if not sample_grid_path(run_dir, e).is_file():
            raise RunError(f"{sample_grid_path(run_dir, e)} is missing (checkpoint {last} is at epoch {epoch}); "
                           "it cannot be redrawn from the last checkpoint's weights")

    _check_best(run_dir, epoch, epoch_rows, best_key, notes)

    from nebula_keras3.training.tensorboard import cut_events, event_files

    for path in event_files(run_dir):
        outcome = cut_events(path, step)
        if outcome:
            notes.append(f"{path.name}: {outcome}")

    if any(n.startswith(LOSSES_CSV) or n.startswith(EPOCHS_CSV) for n in notes) and loss_rows:
        from nebula_keras3.training.monitor import redraw_loss_plot

        redraw_loss_plot(run_dir, loss_columns, loss_rows, epoch_rows)
        notes.append(f"{LOSSES_PNG}: redrawn from the repaired CSVs")
    elif not loss_rows and (run_dir / LOSSES_PNG).is_file():
        (run_dir / LOSSES_PNG).unlink()
        notes.append(f"removed {LOSSES_PNG} (no finished epoch)")
    for note in notes:
        echo(f"repaired {run_dir}: {note}")
    return notes


def _check_best(run_dir: Path, epoch: int, epoch_rows: list[dict], best_key: str | None, notes: list) -> None:
    """checkpoints/best.npz must be the first best-scored epoch so far (or a redone epoch's, ahead)."""
    from nebula_keras3.training.checkpoint import read_header

    best = run_dir / CHECKPOINT_DIR / BEST_FILE
    scored = [(float(r[best_key]), int(r["epoch"])) for r in epoch_rows if best_key and r.get(best_key, "") != ""]
    best_epoch = min(scored, key=lambda s: (s[0], s[1]))[1] if scored else None
    try:
        stored = read_header(best)["epoch"] if best.is_file() else None
    except (OSError, ValueError, KeyError) as e:
        raise RunError(f"{best} is not a readable checkpoint ({e})") from None
    if stored is not None and stored > epoch:
        return  # written just before a kill; the redone epoch scores the same and writes it again
    if stored == best_epoch:
        return
    if best_epoch is not None and best_epoch == epoch:  # the kill fell between last.npz and best.npz
        copy_checkpoint(run_dir / CHECKPOINT_DIR / CHECKPOINT_FILE, best,
                        {best_key: float(epoch_rows[epoch - 1][best_key])})
        notes.append(f"{BEST_FILE}: rewritten from {CHECKPOINT_FILE} (epoch {epoch})")
        return
    raise RunError(f"{best} holds epoch {stored}, but the best {best_key} in {EPOCHS_CSV} is epoch {best_epoch}")


def _span(values) -> str:
    values = list(values)
    return "none" if not values else f"{values[0]}..{values[-1]} ({len(values)})"
