"""The ONNX Runtime sampler path: light imports, interface checks, one-line errors.

Uses small hand-built ONNX models (onnx.helper), so no TensorFlow export is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from nebula_keras3.sampling.cli import sample_command  # noqa: E402
from nebula_keras3.sampling.latents import batch_seeds, latents_from_seeds  # noqa: E402
from nebula_keras3.sampling.onnx_sampler import (  # noqa: E402
    OnnxSampler,
    SamplerError,
    default_providers,
)

LATENT, SIZE = 16, 8
HEAVY = ("tensorflow", "jax", "torch", "keras")


def _fake_generator(path: Path, latent=LATENT, size=SIZE, in_type=TensorProto.FLOAT,
                    in_shape=None, out_uint8=True, out_shape=None, metadata=None) -> Path:
    """z [N, latent] -> tanh(z @ W) as uint8 images [N, size, size, 3] (the export's interface)."""
    w = np.random.default_rng(0).normal(0, 0.5, (latent, size * size * 3)).astype(np.float32)
    inits = [
        helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel()),
        helper.make_tensor("shape", TensorProto.INT64, [4], [-1, size, size, 3]),
        helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("half", TensorProto.FLOAT, [], [127.5]),
        helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("hi", TensorProto.FLOAT, [], [255.0]),
    ]
    nodes = []
    z = "z"
    if in_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["z"], ["zf"], to=TensorProto.FLOAT))
        z = "zf"
    if in_shape is not None and len(in_shape) != 2:
        inits.append(helper.make_tensor("zshape", TensorProto.INT64, [2], [-1, latent]))
        nodes.append(helper.make_node("Reshape", [z, "zshape"], ["z2"]))
        z = "z2"
    nodes += [
        helper.make_node("MatMul", [z, "W"], ["m"]),
        helper.make_node("Tanh", ["m"], ["t"]),
        helper.make_node("Reshape", ["t", "shape"], ["x"]),
    ]
    if out_uint8:
        nodes += [
            helper.make_node("Add", ["x", "one"], ["a"]),
            helper.make_node("Mul", ["a", "half"], ["b"]),
            helper.make_node("Round", ["b"], ["r"]),
            helper.make_node("Clip", ["r", "lo", "hi"], ["c"]),
            helper.make_node("Cast", ["c"], ["images"], to=TensorProto.UINT8),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["x"], ["images"]))
    graph = helper.make_graph(
        nodes,
        "fake_generator",
        [helper.make_tensor_value_info("z", in_type, in_shape or ["N", latent])],
        [helper.make_tensor_value_info(
            "images", TensorProto.UINT8 if out_uint8 else TensorProto.FLOAT,
            out_shape or ["N", size, size, 3])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)
    return path


def _reference(z: np.ndarray) -> np.ndarray:
    w = np.random.default_rng(0).normal(0, 0.5, (LATENT, SIZE * SIZE * 3)).astype(np.float32)
    x = np.tanh(z @ w).reshape(-1, SIZE, SIZE, 3)
    return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> Path:
    meta = {"nebula_model": json.dumps({"latent_dim": LATENT, "image_size": SIZE, "preset": "fake"})}
    return _fake_generator(tmp_path_factory.mktemp("fake") / "fake.onnx", metadata=meta)


def _modules_after(code: str, cwd: Path) -> dict:
    """Run ``code`` in a fresh interpreter; report which heavy modules got imported."""
    prog = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print("MODULES=" + json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
    """)
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", prog], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MODULES=")][-1]
    return {"heavy": json.loads(line[len("MODULES="):]), "stdout": proc.stdout}


def test_cli_onnx_path_imports_no_framework(fake, tmp_path):
    # `python -m nebula_keras3 sample --onnx ...`, then inspect sys.modules of that process.
    res = _modules_after(f"""
        import runpy, sys
        sys.argv = ["nebula", "sample", "--onnx", {str(fake)!r}, "-n", "64", "--seed", "0",
                    "-o", "grid.png", "--npy", "a.npy"]
        try:
            runpy.run_module("nebula_keras3", run_name="__main__")
        except SystemExit as e:
            assert not e.code, e.code
    """, tmp_path)
    assert res["heavy"] == []
    assert (tmp_path / "grid.png").is_file()
    a = np.load(tmp_path / "a.npy")
    assert a.shape == (64, SIZE, SIZE, 3) and a.dtype == np.uint8


def test_in_process_import_is_light(fake, tmp_path):
    res = _modules_after(f"""
        import nebula_keras3.cli, nebula_keras3.sampling.cli, nebula_keras3.sampling.interpolate
        from nebula_keras3.sampling.onnx_sampler import OnnxSampler
        OnnxSampler({str(fake)!r}).sample(0, 4)
    """, tmp_path)
    assert res["heavy"] == []


def test_sampler_matches_recipe(fake):
    s = OnnxSampler(fake)
    assert (s.latent_dim, s.image_size) == (LATENT, SIZE)
    assert s.facts["preset"] == "fake"
    imgs = s.sample(5, 9)
    assert imgs.dtype == np.uint8 and imgs.shape == (9, SIZE, SIZE, 3)
    assert np.array_equal(imgs, _reference(latents_from_seeds(batch_seeds(5, 9), LATENT)))
    # a seed names one image, whatever batch it is rendered in
    assert np.array_equal(s.sample(0, 8)[5], s.sample(5, 1)[0])
    small = OnnxSampler(fake, batch_size=4)
    assert np.array_equal(small.sample(5, 9), imgs)


def test_default_providers(monkeypatch):
    assert default_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert default_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    # without an argument it asks ONNX Runtime what this machine offers
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert default_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert default_providers() == ["CPUExecutionProvider"]


def _run(args):
    return CliRunner().invoke(sample_command, args, catch_exceptions=False)


def _one_line_error(result, *needles):
    assert result.exit_code != 0, result.output
    out = result.output.strip()
    assert "Traceback" not in out
    err_lines = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert len(err_lines) == 1, out
    for n in needles:
        assert n in err_lines[0], out
    return err_lines[0]


def test_missing_file(tmp_path):
    _one_line_error(_run(["--onnx", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "g.png")]),
                    "does not exist")


def test_not_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a protobuf\n")
    _one_line_error(_run(["--onnx", str(bad), "-o", str(tmp_path / "g.png")]), "not a usable ONNX model")


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"in_type": TensorProto.INT64}, "input"),
        ({"in_shape": ["N", LATENT, 1]}, "input"),
        ({"out_uint8": False}, "output"),
        ({"out_shape": ["N", SIZE * SIZE * 3]}, "output"),
    ],
)
def test_wrong_interface(tmp_path, kwargs, needle):
    if "out_shape" in kwargs:
        # a flat uint8 output: build the graph without the reshape's 4-D promise
        path = _fake_generator(tmp_path / "m.onnx", **kwargs)
        m = onnx.load(path)
        m.graph.node.append(helper.make_node("Reshape", ["images", "flat"], ["flat_images"]))
        m.graph.initializer.append(helper.make_tensor("flat", TensorProto.INT64, [2], [-1, SIZE * SIZE * 3]))
        del m.graph.output[:]
        m.graph.output.append(helper.make_tensor_value_info("flat_images", TensorProto.UINT8, ["N", SIZE * SIZE * 3]))
        onnx.save(m, path)
    else:
        path = _fake_generator(tmp_path / "m.onnx", **kwargs)
    line = _one_line_error(_run(["--onnx", str(path), "-o", str(tmp_path / "g.png")]),
                           "does not look like a nebula generator")
    assert needle in line
    with pytest.raises(SamplerError):
        OnnxSampler(path)


@pytest.mark.parametrize("n", ["0", "-3"])
def test_bad_n(fake, tmp_path, n):
    _one_line_error(_run(["--onnx", str(fake), "-n", n, "-o", str(tmp_path / "g.png")]), "-n")


def test_unwritable_output(fake, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    _one_line_error(_run(["--onnx", str(fake), "-o", str(blocker / "g.png")]), "cannot write")
    _one_line_error(_run(["--onnx", str(fake), "--npy", str(tmp_path)]), "is a folder")
    _one_line_error(_run(["--onnx", str(fake), "--individual", str(blocker)]), "not a folder")


def test_read_only_output_folder(fake, tmp_path):
    """`-o` into a folder the user may not write to: a one-line error, nothing written.

    Root ignores permission bits, so as root (CI) the command runs as user nobody (setpriv).
    """
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            _one_line_error(_run(["--onnx", str(fake), "-o", str(ro / "g.png")]), "not writable")
        finally:
            ro.chmod(0o700)
        return
    import shutil
    import tempfile

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot check a read-only folder as a normal user")
    as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    probe = subprocess.run([*as_nobody, "-c", "import nebula_keras3"], capture_output=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip("an unprivileged user cannot import nebula_keras3 from this checkout "
                    "(a root-only folder, such as a mktemp -d clone)")
    work = Path(tempfile.mkdtemp(prefix="nebula-ro-"))  # pytest's tmp_path is root-only (0700)
    try:
        work.chmod(0o755)
        model = work / "m.onnx"
        shutil.copyfile(fake, model)
        model.chmod(0o644)
        ro = work / "ro"
        ro.mkdir(mode=0o555)
        ro.chmod(0o555)
        proc = subprocess.run(
            [*as_nobody, "-m", "nebula_keras3", "sample", "--onnx", str(model), "-o", str(ro / "g.png")],
            env=dict(os.environ, HOME=str(work)), cwd=work, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode != 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1 and "not writable" in errors[0], proc.stderr
        assert list(ro.iterdir()) == []
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_usage_errors(fake, tmp_path):
    g = str(tmp_path / "g.png")
    _one_line_error(_run(["-o", g]), "--onnx")
    _one_line_error(_run(["--onnx", str(fake), "--model", str(tmp_path), "-o", g]), "exactly one")
    _one_line_error(_run(["--onnx", str(fake)]), "nothing to write")
    _one_line_error(_run(["--onnx", str(fake), "--gif", str(tmp_path / "a.gif")]), "--interpolate")
    _one_line_error(_run(["--onnx", str(fake), "--interpolate", "1", "2", "--steps", "1", "-o", g]),
                    "--steps")


def test_cli_outputs(fake, tmp_path):
    r = _run(["--onnx", str(fake), "-n", "5", "--seed", "7", "-o", str(tmp_path / "g.png"),
              "--individual", str(tmp_path / "ind"), "--npy", str(tmp_path / "a.npy")])
    assert r.exit_code == 0, r.output
    a = np.load(tmp_path / "a.npy")
    assert np.array_equal(a, OnnxSampler(fake).sample(7, 5))
    names = sorted(p.name for p in (tmp_path / "ind").iterdir())
    assert names == [f"seed_{s:06d}.png" for s in range(7, 12)]
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(tmp_path / "ind" / "seed_000009.png")), a[2])
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    assert grid.shape == (2 + 2 * (SIZE + 2), 2 + 3 * (SIZE + 2), 3)  # 3 columns x 2 rows


def test_cli_interpolate(fake, tmp_path):
    from PIL import Image

    r = _run(["--onnx", str(fake), "--interpolate", "3", "11", "--steps", "5",
              "-o", str(tmp_path / "strip.png"), "--gif", str(tmp_path / "s.gif"),
              "--npy", str(tmp_path / "s.npy")])
    assert r.exit_code == 0, r.output
    frames = np.load(tmp_path / "s.npy")
    assert frames.shape == (5, SIZE, SIZE, 3)
    s = OnnxSampler(fake)
    ends = s.images_from_seeds([3, 11])
    assert np.abs(frames[0].astype(int) - ends[0]).max() <= 1
    assert np.abs(frames[-1].astype(int) - ends[1]).max() <= 1
    strip = np.asarray(Image.open(tmp_path / "strip.png"))
    assert strip.shape == (SIZE + 4, 2 + 5 * (SIZE + 2), 3)  # one row
    gif = Image.open(tmp_path / "s.gif")
    assert gif.n_frames == 8  # there and back: 5 + 3
