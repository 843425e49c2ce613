"""Where a run keeps its generator, and the facts that travel with it.

A run folder (``nebula train --out runs/NAME``) holds::

    config.json            the TrainConfig the run was started with
    data.json              fingerprint of the training images (count, SHA-256), checked on resume
    generator.keras        the final generator (Keras 3 native format)
    generator.json         model facts: latent_dim, image_size, backend, epoch, step, preset, ...
    checkpoints/           last.npz (weights + both optimizers + RNG, atomic), best.npz (--eval-every)
    samples/epoch_NNN.png  grids from fixed noise
    losses.csv, epochs.csv, losses.png, events.out.tfevents.*  (TensorBoard)

What a resumed run leaves there, and how a resume repairs a folder first:
``nebula_keras3/training/run_folder.py`` (the resume contract).

``resolve_generator`` accepts a run folder or a ``.keras`` file (with an optional
sibling ``<stem>.json``). This module imports only the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

GENERATOR_FILE = "generator.keras"
FACTS_FILE = "generator.json"
CONFIG_FILE = "config.json"
DATA_FILE = "data.json"
CHECKPOINT_DIR = "checkpoints"  # training state (training/checkpoint.py)
CHECKPOINT_FILE = "last.npz"  # the state at the end of the last finished epoch
BEST_FILE = "best.npz"  # --eval-every: the state with the best held-out score


class ArtifactError(ValueError):
    """A run folder or model file that cannot be used (message says why)."""


def resolve_generator(path: str | os.PathLike) -> tuple[Path, dict]:
    """Return ``(generator.keras path, facts)`` for a run folder or a ``.keras`` file."""
    path = Path(path)
    if path.is_dir():
        model = path / GENERATOR_FILE
        if not model.is_file():
            if (path / CHECKPOINT_DIR / CHECKPOINT_FILE).is_file():
                raise ArtifactError(
                    f"{path} has no {GENERATOR_FILE}: the run stopped before its last epoch. Use the "
                    f"state it reached with --checkpoint last (or best), or complete it with "
                    f"`nebula train --resume {path}`"
                )
            raise ArtifactError(
                f"{path} has no {GENERATOR_FILE}: is it a finished run folder? "
                "(an unfinished run can be completed with `nebula train --resume`)"
            )
        facts_file = path / FACTS_FILE
    elif path.is_file():
        if path.suffix != ".keras":
            raise ArtifactError(f"{path} is not a .keras model file or a run folder")
        model = path
        facts_file = path.with_suffix(".json")
    else:
        raise ArtifactError(f"{path} does not exist")
    facts = {}
    if facts_file.is_file():
        try:
            facts = json.loads(facts_file.read_text())
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{facts_file} is not valid JSON: {e}") from None
    return model, facts


def _temp_name(path: Path, pid: int, suffix: str = "") -> str:
    """Name of the temp file beside ``path`` that process ``pid`` writes (see ``atomic_path``)."""
    return f".{path.name}{_TEMP_MARK}{pid}-{uuid.uuid4().hex[:8]}{suffix}"


_TEMP_MARK = ".tmp"
_TEMP_RE = re.compile(r"^\..+" + re.escape(_TEMP_MARK) + r"(\d+)-[0-9a-f]{8}(\.[^/]*)?$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete temp files that ``atomic_path`` left under ``folder`` when its process was killed.

    Only files whose writer process no longer exists are removed; returns them.
    """
    removed = []
    for p in sorted(Path(folder).rglob(f".*{_TEMP_MARK}*")):
        m = _TEMP_RE.match(p.name)
        if m and p.is_file() and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it over ``path`` when the block succeeds.

    Readers see the old file or the new one, never half of one; on error the temp file
    is removed. ``suffix`` keeps writers that infer the format from the name happy
    (``.png``, ``.keras``, ``.npy``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(_temp_name(path, os.getpid(), suffix))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically, fsynced before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def write_json_atomic(data: dict, path: str | os.PathLike) -> Path:
    """Write JSON to ``path`` via a temp file and rename: never half-written."""
    return write_bytes_atomic((json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), path)
