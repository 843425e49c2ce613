"""bench/gpu_check.sh on the CPU, in the two halves a GPU machine without a package index uses:
train only (``--python PY --no-export``), then ``--export-only`` where the export extras are.

The summary must list every row, mark the untrained or unexported ones, and the exit status must
say whether every row got through.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.backend_independent  # each row picks its own backend

ROWS = ["--backends", "torch", "--presets", "tiny"]


def gpu_check(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VENV": str(Path(sys.executable).parents[1])}  # --export-only's interpreter
    return subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), *args, *ROWS, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)


def summary(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "summary.tsv").open(), delimiter="\t"))


def test_train_only_then_export_only(tmp_path):
    r = gpu_check(tmp_path, "--cpu", "--python", sys.executable, "--no-export")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = summary(tmp_path)
    assert [(x["backend"], x["preset"], x["precision"]) for x in rows] == [
        ("torch", "tiny", "none"), ("torch", "tiny", "bf16")]
    assert all(x["losses"] == "finite" and float(x["img/s"]) > 0 for x in rows)
    assert all(x["onnx max uint8"].startswith("pending") for x in rows)

    r = gpu_check(tmp_path, "--export-only")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = summary(tmp_path)
    assert all(x["losses"] == "finite" for x in rows)  # the training half's figures are kept
    assert all(int(x["onnx max uint8"]) <= 1 for x in rows)
    assert all(len(x["int8 mean/max uint8"].split("/")) == 2 for x in rows)
    assert all((tmp_path / f"torch-tiny-{p}" / "generator.int8.onnx").is_file() for p in ("none", "bf16"))


def test_export_only_without_trained_runs_fails(tmp_path):
    r = gpu_check(tmp_path, "--export-only")
    assert r.returncode == 1
    assert all(x["img/s"] == "not trained" for x in summary(tmp_path))
