"""Atomic checkpoints: weights, both optimizers' states, RNG state, epoch and step.

One file, ``checkpoints/last.npz``: arrays ``v000000 ...`` in the order of
``gan.variables`` (both sub-models, BatchNorm statistics, the latent seed
generator) then ``gan.optimizer.variables`` (step counter, D's Adam, G's Adam),
plus a JSON header with names, shapes, epoch and step. It is written to a temp
file, fsynced and renamed, so a crash (even SIGKILL) leaves the previous
checkpoint intact. Values are plain numpy, so any backend can resume any other's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from keras import ops

from nebula_keras3.artifacts import BEST_FILE, CHECKPOINT_DIR, CHECKPOINT_FILE, atomic_path

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or does not fit the model."""


def checkpoint_path(run_dir: str | Path, name: str = CHECKPOINT_FILE) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / name


def _state_variables(gan):
    return list(gan.variables) + list(gan.optimizer.variables)


def save_checkpoint(gan, run_dir: str | Path, *, epoch: int, extra: dict | None = None,
                    name: str = CHECKPOINT_FILE) -> Path:
    """Save after ``epoch`` finished epochs (so a resume starts at epoch index ``epoch``)."""
    path = checkpoint_path(run_dir, name)
    variables = _state_variables(gan)
    arrays = {f"v{i:06d}": ops.convert_to_numpy(v.value) for i, v in enumerate(variables)}
    header = {
        "format": FORMAT_VERSION,
        "epoch": int(epoch),
        "step": gan.steps_done,
        "names": [v.path for v in variables],
        "shapes": [list(a.shape) for a in arrays.values()],
        **(extra or {}),
    }
    return _write(path, arrays, header)


def copy_checkpoint(source: str | Path, target: str | Path, extra: dict) -> Path:
    """``source``'s arrays under ``target`` (atomically), its header updated with ``extra``."""
    with np.load(source) as data:
        arrays = {k: data[k] for k in data.files if k != "header"}
        header = _header(data)
    return _write(Path(target), arrays, {**header, **extra})


def _write(path: Path, arrays: dict, header: dict) -> Path:
    """The checkpoint file: ``arrays`` plus the JSON ``header``, written to a temp name,
    fsynced and renamed (folder fsynced too), so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {**arrays, "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _header(data) -> dict:
    return json.loads(data["header"].tobytes().decode())


def read_header(path: str | Path) -> dict:
    with np.load(path) as data:
        return _header(data)


def read_arrays(path: str | Path) -> tuple[dict, list[np.ndarray]]:
    """A checkpoint's header and its arrays, in the header's order (CheckpointError if unreadable)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path) as data:
            header = _header(data)
            return header, [data[f"v{i:06d}"] for i in range(len(header["names"]))]
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint: {e}") from None


def load_checkpoint(gan, path: str | Path) -> dict:
    """Restore every variable of a compiled GAN; return the header (epoch, step, ...).

    The stored variable paths must equal the model's, in order, and each shape must match;
    otherwise a CheckpointError names the first variable that differs.
    """
    header, arrays = read_arrays(path)
    variables = _state_variables(gan)
    for i, (v, name) in enumerate(zip(variables, header["names"])):
        if v.path != name:
            raise CheckpointError(
                f"{path}: variable {i} is {name!r} in the checkpoint but {v.path!r} in the model: "
                "was it written by a different model or configuration?"
            )
    if len(variables) != len(arrays):
        raise CheckpointError(
            f"{path} holds {len(arrays)} variables, the model has {len(variables)}: "
            "was it written by a different configuration?"
        )
    for v, a, name in zip(variables, arrays, header["names"]):
        if tuple(v.shape) != tuple(a.shape):
            raise CheckpointError(
                f"{path}: variable {name} has shape {tuple(a.shape)}, the model expects {tuple(v.shape)}"
            )
    for v, a in zip(variables, arrays):
        assign_array(v, a)
    return header


def assign_array(variable, array: np.ndarray) -> None:
    """Set a variable from a stored array, cast to the variable's dtype where they differ."""
    variable.assign(array.astype(variable.dtype) if array.dtype != np.dtype(variable.dtype) else array)
