"""The ``nebula`` command line (click's runner) and the package layout."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from nebula_keras3.cli import main

REPO = Path(__file__).resolve().parents[1]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    listing = result.output.split("Commands:", 1)[1].strip().splitlines()
    rows = dict(line.split(None, 1) for line in listing)
    assert sorted(rows) == ["client", "evaluate", "export", "sample", "serve", "train"]
    assert all(help_text.strip() for help_text in rows.values())  # each command loaded and described


def test_train_then_resume(tmp_path):
    run = tmp_path / "run"
    result = invoke("train", "--preset", "tiny", "--steps-per-epoch", "2", "--out", run, "--quiet")
    assert result.exit_code == 0, result.output
    assert "epoch 1:" in result.output and "done: 1 epochs, 2 steps" in result.output
    assert json.loads((run / "config.json").read_text())["steps_per_epoch"] == 2
    result = invoke("train", "--resume", run, "--epochs", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "done: 2 epochs, 4 steps" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "/no/such/folder"], "does not exist"),
        (["--image-size", "48"], "Invalid value"),
        (["--epochs", "0"], "Invalid value"),
        (["--preset", "nope"], "Invalid value"),
    ],
)
def test_train_bad_options_are_one_line_errors(tmp_path, args, message):
    result = invoke("train", "--preset", "tiny", "--out", tmp_path / "r", "--quiet", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_resume_refuses_config_changes(tmp_path):
    result = invoke("train", "--resume", tmp_path, "--ngf", "4")
    assert result.exit_code != 0 and "drop --ngf" in result.output


def test_empty_data_folder_is_a_clear_error(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    result = invoke("train", "--preset", "tiny", "--data", tmp_path / "data", "--out", tmp_path / "r", "--quiet")
    assert result.exit_code != 0
    assert "Error:" in result.output and "Traceback" not in result.output


@pytest.mark.backend_independent
def test_export_and_serving_install_inside_the_package(tmp_path):
    """export/ and serving/ are nebula_keras3.export / .serving, never top-level names."""
    code = (
        "import importlib.util, json, nebula_keras3.export as e, nebula_keras3.serving as s;"
        "print(json.dumps([e.__file__, s.__file__,"
        " importlib.util.find_spec('export') is None, importlib.util.find_spec('serving') is None]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    export_file, serving_file, no_export, no_serving = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(export_file).parent == REPO / "export"
    assert Path(serving_file).parent == REPO / "serving"
    assert no_export and no_serving


@pytest.mark.backend_independent
def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "nebula_keras3", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout
