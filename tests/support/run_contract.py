"""What the resume contract (nebula_keras3/training/run_folder.py) holds equal between two run
folders, as a comparable view, and the readable differences between two views."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from nebula_keras3.artifacts import CONFIG_FILE, DATA_FILE, FACTS_FILE, GENERATOR_FILE
from nebula_keras3.training.run_folder import EPOCHS_CSV, LOSSES_CSV, WALL_CLOCK_COLUMNS, WALL_CLOCK_FACTS, read_table


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def contract_view(run_dir: str | os.PathLike) -> dict:
    """Everything the resume contract holds equal, by file: two folders satisfy the contract
    with each other exactly when their views are equal. Wall-clock fields are left out;
    TensorBoard events are merged over all event files into ``{tag: {step: value}}``
    (a tag logged twice at one step shows as a list of its values)."""
    from nebula_keras3.training.tensorboard import EVENTS_PREFIX, event_files, read_events

    run_dir = Path(run_dir)
    view: dict = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        name = path.relative_to(run_dir).as_posix()
        if path.name.startswith(EVENTS_PREFIX):
            continue
        if path.suffix == ".npz":
            with np.load(path) as data:
                view[name] = {k: (json.loads(data[k].tobytes().decode()) if k == "header" else _digest(data[k].tobytes()))
                              for k in data.files}
        elif name in (LOSSES_CSV, EPOCHS_CSV):
            columns, rows, torn = read_table(path)
            view[name] = {"columns": columns, "torn": torn,
                          "rows": [{k: v for k, v in r.items() if k not in WALL_CLOCK_COLUMNS} for r in rows]}
        elif name in (CONFIG_FILE, DATA_FILE, FACTS_FILE):
            facts = json.loads(path.read_text())
            view[name] = {k: v for k, v in facts.items() if not (name == FACTS_FILE and k in WALL_CLOCK_FACTS)}
        elif name == GENERATOR_FILE:
            with zipfile.ZipFile(path) as z:
                view[name] = {m: _digest(z.read(m)) for m in z.namelist() if m != "metadata.json"}
        else:
            view[name] = _digest(path.read_bytes())
    scalars: dict = {}
    images: dict = {}
    for path in event_files(run_dir):
        for event in read_events(path):
            for tag, value in event["scalars"].items():
                if tag.startswith("epoch/") and tag[len("epoch/"):] in WALL_CLOCK_COLUMNS:
                    value = "wall-clock"
                scalars.setdefault(tag, {}).setdefault(event["step"], []).append(value)
            for tag, (height, width, png) in event["images"].items():
                images.setdefault(tag, {}).setdefault(event["step"], []).append((height, width, _digest(png)))
    for merged in (scalars, images):
        for by_step in merged.values():
            for s, values in by_step.items():
                by_step[s] = values[0] if len(values) == 1 else values
    view["tensorboard"] = {"scalars": scalars, "images": images}
    return view


def view_differences(a: dict, b: dict, limit: int = 12) -> list[str]:
    """Readable differences between two ``contract_view``s (at most ``limit``)."""
    out: list[str] = []

    def walk(x, y, where):
        if len(out) >= limit:
            return
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y), key=str):
                if k not in x or k not in y:
                    out.append(f"{where}/{k}: only in the {'second' if k not in x else 'first'}")
                else:
                    walk(x[k], y[k], f"{where}/{k}")
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{where}[{i}]")
        elif x != y:
            out.append(f"{where}: {str(x)[:80]} != {str(y)[:80]}")

    walk(a, b, "")
    return out
