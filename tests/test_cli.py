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


@pytest.mark.backend_independent  # the CLI over the trainer
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


@pytest.mark.parametrize("args, levels", [(["--rgb-skip"], 1), (["--rgb-skip", "2"], 2),
                                          (["--rgb-skip", "--d-coarse-size", "64"], 1), (["--rgb-skip", "0"], 0),
                                          ([], None)])
def test_rgb_skip_alone_is_one_level(args, levels):
    from nebula_keras3.training.cli import train_command

    assert train_command.make_context("train", list(args)).params["rgb_skip"] == levels


def test_a_config_with_rgb_skip_as_a_flag_still_loads(tmp_path):
    # runs written when --rgb-skip was a flag (one level) resume and grow as before
    from nebula_keras3.training.config import TrainConfig

    config = TrainConfig.from_preset("grow128").to_dict()
    (tmp_path / "config.json").write_text(json.dumps({**config, "rgb_skip": True}))
    assert TrainConfig.load(tmp_path / "config.json").rgb_skip == 1 == config["rgb_skip"]


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
@pytest.mark.backend_independent
def test_package_warnings_print_as_one_line():
    # e.g. the images a folder skips: one "warning: ..." line, not Python's file:line + source line
    import io

    from nebula_keras3.cli import _show_warning
    from nebula_keras3.data import SkippedImagesWarning

    out = io.StringIO()
    _show_warning(SkippedImagesWarning("skipped 2 of 9 files in photos/ (2 too small)"), SkippedImagesWarning,
                  "/x/nebula_keras3/data/__init__.py", 58, out, "loaded = load_image_folder(")
    assert out.getvalue() == "warning: skipped 2 of 9 files in photos/ (2 too small)\n"
    out = io.StringIO()
    _show_warning(UserWarning("other"), UserWarning, "/x/lib.py", 3, out, "x = 1")
    assert "/x/lib.py:3: UserWarning: other" in out.getvalue()


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "nebula_keras3", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout


def test_serve_options_reach_the_server_options(tmp_path, monkeypatch):
    """Every `nebula serve` flag lands in its ServerOptions / BatchingOptions field."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    from nebula_keras3.serving import cli, server
    from nebula_keras3.serving.options import DEFAULTS

    got = []

    class Captured(Exception):
        pass

    def capture(options, extra_routes=()):
        got.append(options)
        raise Captured

    monkeypatch.setattr(server, "create_app", capture)
    with pytest.raises(Captured):
        cli.serve_command.main(
            ["--model-base-path", str(tmp_path), "--model-name", "m", "--grpc-port", "0", "--max-batch-size", "7",
             "--batch-timeout-micros", "9", "--max-enqueued-batches", "5", "--num-batch-threads", "3",
             "--poll-seconds", "2.5", "--max-body-bytes", "4096", "--max-instances", "11",
             "--max-concurrent-requests", "13", "--intra-op-threads", "2", "--runtime", "savedmodel",
             "--graceful-timeout", "4", "--rest_api_enable_cors_support", "--enable_signature_method_name_check",
             "--no-enable-model-warmup", "--num-request-iterations-for-warmup", "6", "--ui"],
            standalone_mode=False)
    (o,) = got
    assert [(m.name, m.base_path) for m in o.models] == [("m", tmp_path.resolve())] and o.config_file is None
    b = o.batching
    assert (b.max_batch_size, b.batch_timeout_micros, b.max_enqueued_batches, b.num_batch_threads) == (7, 9, 5, 3)
    assert (o.grpc_port, o.grpc_host, o.poll_seconds, o.max_body_bytes, o.max_instances,
            o.max_concurrent_requests, o.intra_op_threads, o.prefer_onnx, o.drain_seconds) == (
        0, "127.0.0.1", 2.5, 4096, 11, 13, 2, False, 4.0)
    assert o.rest_api_enable_cors_support and o.enable_signature_method_name_check and o.ui
    assert (o.enable_model_warmup, o.num_request_iterations_for_warmup) == (False, 6)
    assert (o.prometheus_enabled, o.prometheus_path, o.ssl) == (True, DEFAULTS.prometheus_path, None)
