"""nebula sample: Keras (current backend) and ONNX Runtime paths name the same images by seed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import conftest
import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")

import keras  # noqa: E402

from nebula_keras3.sampling.cli import sample_command  # noqa: E402
from nebula_keras3.sampling.interpolate import interpolation_latents, slerp  # noqa: E402
from nebula_keras3.sampling.latents import batch_seeds, latents_from_seeds  # noqa: E402

LATENT, SIZE = 16, 32
REPO = Path(__file__).resolve().parents[1]


def make_generator_run(folder: Path) -> Path:
    return conftest.make_generator_run(folder, image_size=SIZE, latent_dim=LATENT, bn_seed=1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_generator_run(tmp_path_factory.mktemp("sample-run") / "run")


@pytest.fixture(scope="module")
def onnx_file(run_dir, tmp_path_factory) -> Path:
    pytest.importorskip("tf2onnx")
    from nebula_keras3.export.api import export_generator

    out = tmp_path_factory.mktemp("sample-onnx") / "gen.onnx"
    result = export_generator(run_dir, onnx_path=out)
    assert max(r["max_uint8"] for r in result.parity.values()) <= 1
    return out


@pytest.fixture(scope="module")
def samplers(run_dir, onnx_file):
    from nebula_keras3.sampling.keras_sampler import KerasSampler
    from nebula_keras3.sampling.onnx_sampler import OnnxSampler

    return KerasSampler(run_dir), OnnxSampler(onnx_file)


def test_same_seed_same_images(samplers):
    ks, osamp = samplers
    assert (ks.latent_dim, ks.image_size) == (osamp.latent_dim, osamp.image_size) == (LATENT, SIZE)
    a = ks.sample(0, 64)
    b = osamp.sample(0, 64)
    assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape == (64, SIZE, SIZE, 3)
    assert np.abs(a.astype(int) - b).max() <= 1
    # deterministic, and a seed names one image whatever the batch
    assert np.array_equal(ks.sample(0, 64), a)
    assert np.array_equal(osamp.sample(0, 64), b)
    assert np.array_equal(osamp.sample(10, 3), b[10:13])
    assert np.abs(ks.sample(10, 3).astype(int) - a[10:13]).max() <= 1
    assert not np.array_equal(b[0], b[1])
    assert osamp.facts["latent_dim"] == LATENT and osamp.facts["preset"] == "tiny"


def _invoke(args):
    return CliRunner().invoke(sample_command, [str(a) for a in args], catch_exceptions=False)


def test_cli_model_and_onnx_agree(run_dir, onnx_file, tmp_path):
    r1 = _invoke(["--onnx", onnx_file, "-n", 12, "--seed", 40, "--npy", tmp_path / "o.npy",
                  "-o", tmp_path / "o.png"])
    assert r1.exit_code == 0, r1.output
    r2 = _invoke(["--model", run_dir, "-n", 12, "--seed", 40, "--npy", tmp_path / "k.npy",
                  "--individual", tmp_path / "ind"])
    assert r2.exit_code == 0, r2.output
    o, k = np.load(tmp_path / "o.npy"), np.load(tmp_path / "k.npy")
    assert o.shape == k.shape == (12, SIZE, SIZE, 3) and o.dtype == np.uint8
    assert np.abs(o.astype(int) - k).max() <= 1
    assert len(list((tmp_path / "ind").glob("seed_*.png"))) == 12
    assert (tmp_path / "o.png").is_file()
    # a .keras file works as well as the run folder
    r3 = _invoke(["--model", run_dir / "generator.keras", "-n", 2, "--seed", 40,
                  "--npy", tmp_path / "k2.npy"])
    assert r3.exit_code == 0, r3.output
    assert np.array_equal(np.load(tmp_path / "k2.npy"), k[:2])


def test_interpolation_both_paths(run_dir, onnx_file, samplers, tmp_path):
    from PIL import Image

    ks, osamp = samplers
    for flag, src, name in (("--onnx", onnx_file, "o"), ("--model", run_dir, "k")):
        r = _invoke([flag, src, "--interpolate", 5, 9, "--steps", 6, "-o", tmp_path / f"{name}.png",
                     "--gif", tmp_path / f"{name}.gif", "--npy", tmp_path / f"{name}.npy"])
        assert r.exit_code == 0, r.output
        assert Image.open(tmp_path / f"{name}.gif").n_frames == 10
    o, k = np.load(tmp_path / "o.npy"), np.load(tmp_path / "k.npy")
    assert o.shape == (6, SIZE, SIZE, 3) and np.abs(o.astype(int) - k).max() <= 1
    ends = osamp.images_from_seeds([5, 9])
    assert np.abs(o[0].astype(int) - ends[0]).max() <= 1
    assert np.abs(o[-1].astype(int) - ends[1]).max() <= 1


def test_slerp():
    za, zb = latents_from_seeds([1, 2], 64)
    path = slerp(za, zb, np.linspace(0, 1, 7))
    np.testing.assert_allclose(path[0], za, atol=1e-5)
    np.testing.assert_allclose(path[-1], zb, atol=1e-5)
    # on the great circle: norms interpolate smoothly, no shrinking toward the origin
    norms = np.linalg.norm(path, axis=1)
    assert norms.min() >= min(np.linalg.norm(za), np.linalg.norm(zb)) * 0.99
    e0, e1 = np.eye(2, dtype=np.float32)
    np.testing.assert_allclose(slerp(e0, e1, [0.5])[0], [np.sqrt(0.5)] * 2, atol=1e-6)
    np.testing.assert_allclose(slerp(e0, e0, [0.3])[0], e0, atol=1e-6)  # parallel: linear fallback
    assert interpolation_latents(1, 2, 7, 64).shape == (7, 64)
    with pytest.raises(ValueError):
        interpolation_latents(1, 2, 1, 64)
    assert np.array_equal(batch_seeds(3, 4), [3, 4, 5, 6])


def _one_line_error(result, needle):
    assert result.exit_code != 0
    lines = [ln for ln in result.output.strip().splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and needle in lines[0], result.output
    assert "Traceback" not in result.output


def test_model_path_errors(tmp_path):
    _one_line_error(_invoke(["--model", tmp_path / "nope", "-o", tmp_path / "g.png"]), "does not exist")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    _one_line_error(_invoke(["--model", empty, "-o", tmp_path / "g.png"]), "generator.keras")
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    _one_line_error(_invoke(["--model", broken, "-o", tmp_path / "g.png"]), "cannot load")


def test_onnx_cli_in_a_fresh_process(onnx_file, tmp_path):
    """`nebula sample --onnx -n 64` in a fresh process writes the grid (its start-up time is
    measured by bench/limits_bench.py, not asserted here)."""
    proc = subprocess.run([sys.executable, "-m", "nebula_keras3", "sample", "--onnx", str(onnx_file),
                           "-n", "64", "--seed", "0", "-o", str(tmp_path / "grid.png")],
                          env=dict(os.environ), capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "grid.png").is_file()
