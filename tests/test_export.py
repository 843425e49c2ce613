"""nebula export: TF Serving SavedModel + ONNX, from the current KERAS_BACKEND.

Under jax/torch the export runs in a TensorFlow-backend subprocess. TensorFlow is
imported in-process only to read the written SavedModel (Keras stays on its backend).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import conftest
import pytest
from conftest import same_worker_path_as_torch

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

import keras  # noqa: E402

from nebula_keras3.export.api import ExportError, ExportResult, export_generator  # noqa: E402
from nebula_keras3.export.layout import next_version  # noqa: E402
from nebula_keras3.sampling.grid import to_uint8  # noqa: E402
from nebula_keras3.sampling.latents import latents_from_seeds  # noqa: E402

LATENT, SIZE = 16, 32
REPO = Path(__file__).resolve().parents[1]

def make_generator_run(folder: Path) -> Path:
    return conftest.make_generator_run(folder, image_size=SIZE, latent_dim=LATENT, bn_seed=0)


def keras_uint8(run: Path, z: np.ndarray) -> np.ndarray:
    from nebula_keras3.sampling.keras_sampler import KerasSampler

    return KerasSampler(run).images_from_latents(z)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_generator_run(tmp_path_factory.mktemp("export-run") / "run")


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    result = export_generator(run_dir, saved_model_base=out / "models", onnx_path=out / "gen.onnx")
    return result, out


def _sha(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------- layout, facts, parity


def test_result_and_layout(exported):
    result, out = exported
    assert isinstance(result, ExportResult)
    assert result.version == 1
    vdir = out / "models" / "nebula" / "1"
    assert result.saved_model_dir == vdir
    assert (vdir / "saved_model.pb").is_file() and (vdir / "variables").is_dir()
    assert (vdir / "model.onnx").is_file()
    assert result.onnx_path == out / "gen.onnx" and result.onnx_path.is_file()
    assert (vdir / "model.onnx").read_bytes() == result.onnx_path.read_bytes()
    facts = json.loads((vdir / "assets.extra" / "nebula_model.json").read_text())
    for key in ("latent_dim", "image_size", "backend", "epoch", "step", "preset", "model",
                "keras_version", "exported_at"):
        assert key in facts, key
    assert facts["latent_dim"] == LATENT and facts["image_size"] == SIZE
    assert facts["backend"] == keras.backend.backend()
    assert facts == result.facts
    # nothing half-written left behind
    assert sorted(p.name for p in (out / "models" / "nebula").iterdir()) == ["1"]
    assert sorted(result.parity) == [1, 7]
    for r in result.parity.values():
        assert r["max_uint8"] <= 1
        assert r["max_abs_float"] < 1e-4
    assert all(v <= 1 for v in result.saved_model_check.values())


def _signature_defs(vdir: Path) -> dict:
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((vdir / "saved_model.pb").read_bytes())
    (mg,) = sm.meta_graphs
    assert "serve" in mg.meta_info_def.tags
    return mg.signature_def


def _describe(tensor_infos) -> dict:
    from tensorflow.core.framework import types_pb2

    return {
        name: (types_pb2.DataType.Name(t.dtype), [d.size for d in t.tensor_shape.dim])
        for name, t in tensor_infos.items()
    }


def test_signature_defs_as_saved_model_cli_shows(exported):
    result, _ = exported
    sigs = _signature_defs(result.saved_model_dir)
    assert {"serving_default", "generate_png"} <= set(sigs)
    sd = sigs["serving_default"]
    assert _describe(sd.inputs) == {"z": ("DT_FLOAT", [-1, LATENT])}
    assert _describe(sd.outputs) == {"images": ("DT_UINT8", [-1, SIZE, SIZE, 3])}
    gp = sigs["generate_png"]
    assert _describe(gp.inputs) == {"seed": ("DT_INT64", [-1])}
    assert _describe(gp.outputs) == {"png_bytes": ("DT_STRING", [-1])}


def test_graph_has_native_ops_only(exported):
    from nebula_keras3.export.saved_model import graph_op_types

    ops = graph_op_types(exported[0].saved_model_dir)
    assert not ops & {"XlaCallModule", "PyFunc", "EagerPyFunc", "PyFuncStateless"}, ops
    assert {"EncodePng", "Conv2DBackpropInput"} <= ops
    # inference mode: BatchNorm reads the moving statistics, no batch moments
    assert not any(op.startswith("Random") or op.startswith("StatelessRandom") for op in ops)


def test_saved_model_signatures_run(exported, run_dir):
    import tensorflow as tf
    from PIL import Image
    import io

    from nebula_keras3.sampling.onnx_sampler import OnnxSampler

    result, _ = exported
    loaded = tf.saved_model.load(str(result.saved_model_dir))
    for b in (1, 5):
        z = np.random.default_rng(b).standard_normal((b, LATENT)).astype(np.float32)
        images = loaded.signatures["serving_default"](z=tf.constant(z))["images"].numpy()
        assert images.dtype == np.uint8 and images.shape == (b, SIZE, SIZE, 3)
        assert np.abs(images.astype(int) - keras_uint8(run_dir, z)).max() <= 1
    seeds = np.array([0, 1, 2, -5, 2**40 + 3], dtype=np.int64)
    pngs = loaded.signatures["generate_png"](seed=tf.constant(seeds))["png_bytes"].numpy()
    assert pngs.shape == (5,)
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(p)).convert("RGB")) for p in pngs])
    assert decoded.shape == (5, SIZE, SIZE, 3)
    via_onnx = OnnxSampler(result.onnx_path).images_from_seeds(seeds)
    assert np.abs(decoded.astype(int) - via_onnx).max() <= 1
    via_keras = keras_uint8(run_dir, latents_from_seeds(seeds, LATENT))
    assert np.abs(decoded.astype(int) - via_keras).max() <= 1
    # different seeds, different images
    assert not np.array_equal(decoded[0], decoded[1])
    empty = loaded.signatures["generate_png"](seed=tf.constant([], dtype=tf.int64))["png_bytes"]
    assert empty.shape == (0,)


def test_inference_mode_matters(run_dir):
    """Sanity for the fixture: BatchNorm in training mode would give other images."""
    from nebula_keras3.sampling.keras_sampler import KerasSampler

    s = KerasSampler(run_dir)
    z = latents_from_seeds(np.arange(4), LATENT)
    infer = s.images_from_latents(z)
    train = to_uint8(keras.ops.convert_to_numpy(s.model(z, training=True)))
    assert np.abs(infer.astype(int) - train).max() > 10


def test_onnx_model(exported, run_dir):
    import onnx
    import onnxruntime as ort

    path = exported[0].onnx_path
    m = onnx.load(path)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,) = m.graph.input
    (out,) = m.graph.output
    assert inp.name == "z" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert len(dims) == 2 and not dims[0].HasField("dim_value") and dims[1].dim_value == LATENT
    assert out.name == "images" and out.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    odims = out.type.tensor_type.shape.dim
    assert [d.dim_value for d in odims[1:]] == [SIZE, SIZE, 3] and not odims[0].HasField("dim_value")
    assert not {n.op_type for n in m.graph.node} & {"RandomNormal", "RandomUniform",
                                                     "RandomNormalLike", "RandomUniformLike"}
    meta = {p.key: p.value for p in m.metadata_props}
    facts = json.loads(meta["nebula_model"])
    assert facts["latent_dim"] == LATENT and facts["image_size"] == SIZE
    assert meta["latent_dim"] == str(LATENT) and meta["preset"] == "tiny"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 7):
        z = np.random.default_rng(100 + b).standard_normal((b, LATENT)).astype(np.float32)
        (got,) = sess.run(["images"], {"z": z})
        assert got.dtype == np.uint8 and got.shape == (b, SIZE, SIZE, 3)
        assert np.abs(got.astype(int) - keras_uint8(run_dir, z)).max() <= 1


# ----------------------------------------------------------------- versioning, CLI, errors


@pytest.mark.backend_independent  # version folders: the same logic whichever backend trained
def test_versioning(exported, run_dir):
    result, out = exported
    base = out / "models"
    v1 = base / "nebula" / "1"
    before = _sha(v1)
    # explicit existing version: refused, untouched
    with pytest.raises(ExportError, match="already exists"):
        export_generator(run_dir, saved_model_base=base, version=1)
    assert _sha(v1) == before
    # default: next free integer
    assert next_version(base / "nebula") == 2
    r2 = export_generator(run_dir, saved_model_base=base, onnx_beside=False, parity=False)
    assert r2.version == 2 and r2.saved_model_dir == base / "nebula" / "2"
    assert not (r2.saved_model_dir / "model.onnx").exists()
    assert _sha(v1) == before
    # --overwrite replaces an explicit version in one rename
    r3 = export_generator(run_dir, saved_model_base=base, version=2, overwrite=True,
                          model_name="nebula", parity=False)
    assert r3.version == 2 and (r3.saved_model_dir / "model.onnx").is_file()
    assert sorted(p.name for p in (base / "nebula").iterdir()) == ["1", "2"]
    assert _sha(v1) == before


def _cli(*args, env_backend=None, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if env_backend:
        env["KERAS_BACKEND"] = env_backend
    return subprocess.run([sys.executable, "-m", "nebula_keras3", "export", *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@same_worker_path_as_torch
def test_cli_onnx_only(run_dir, tmp_path):
    """`nebula export RUN --onnx out.onnx` under the current backend prints facts and files."""
    proc = _cli(run_dir, "--onnx", tmp_path / "out.onnx")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out.onnx").is_file()
    assert "latent_dim: 16" in proc.stdout and "image_size: 32" in proc.stdout
    assert f"ONNX: {tmp_path / 'out.onnx'}" in proc.stdout
    assert "max uint8 diff" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]  # no temp files left


def test_cli_needs_a_target(run_dir):
    proc = _cli(run_dir)
    assert proc.returncode == 2
    assert "--saved-model" in proc.stderr and "--onnx" in proc.stderr
    assert "Traceback" not in proc.stderr


@same_worker_path_as_torch
def test_errors_keep_type_and_message(run_dir, tmp_path):
    """An error raised inside the export (in the TensorFlow worker under jax/torch) reaches the
    caller as the same type with the same message: no wrapping, no scraping."""
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ExportError) as e:
        export_generator(bad, onnx_path=tmp_path / "x.onnx")
    assert str(e.value).startswith(f"cannot load {bad}: ")
    with pytest.raises(ValueError) as e:  # raised by int() deep inside the export
        export_generator(run_dir, onnx_path=tmp_path / "x.onnx", opset="seventeen")
    assert type(e.value) is ValueError
    assert str(e.value) == "invalid literal for int() with base 10: 'seventeen'"
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.backend_independent
def test_worker_error_round_trip():
    from nebula_keras3.export import worker

    for err in (ExportError("no good"), ValueError("bad value"), FileNotFoundError("gone")):
        back = worker.rebuild_error(worker.describe_error(err))
        assert type(back) is type(err) and str(back) == str(err)
    # a type the caller does not know (or would have to import) comes back as an ExportError
    back = worker.rebuild_error({"type": "XlaRuntimeError", "module": "jaxlib.xla_extension", "message": "oom"})
    assert type(back) is ExportError and str(back) == "XlaRuntimeError: oom"


@pytest.mark.backend_independent  # the worker itself, asked directly (whatever the caller's backend)
def test_one_worker_serves_every_export_until_it_idles_out(tmp_path, monkeypatch):
    """A process's exports share one TensorFlow worker; one that left when idle, or died,
    is replaced, and a death mid-request is an error naming the exit code."""
    import signal
    import time

    from nebula_keras3.export import worker
    from nebula_keras3.export.api import ExportRequest

    worker.close()
    monkeypatch.setattr(worker, "IDLE_SECONDS", 3.0)  # the next worker's idle limit
    missing = ExportRequest(str(tmp_path / "missing"), onnx_path=str(tmp_path / "x.onnx"))

    def ask():
        with pytest.raises(ExportError, match="does not exist"):  # the worker's own answer
            worker.run(missing)
        return worker._worker.proc

    first = ask()
    assert ask() is first and first.poll() is None  # the same process answered twice
    assert first.wait(timeout=30) == worker._IDLE_EXIT  # left after 3 s without a request
    # A request that meets a worker as it leaves is asked again of a new one.
    monkeypatch.setattr(worker._Worker, "usable", lambda self, key: True)
    second = ask()
    assert second is not first and second.poll() is None
    second.send_signal(signal.SIGKILL)
    second.wait()
    with pytest.raises(ExportError, match="died with exit code -9"):
        worker.run(missing)
    assert worker._worker is None  # the next export starts a new worker
    monkeypatch.undo()
    worker.close()


@same_worker_path_as_torch
def test_errors_are_one_line(tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ExportError) as e:
        export_generator(bad, onnx_path=tmp_path / "x.onnx")
    msg = str(e.value)
    assert "\n" not in msg and "broken.keras" in msg
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(ExportError, match="does not exist"):
        export_generator(tmp_path / "missing", onnx_path=tmp_path / "x.onnx")
    with pytest.raises(ExportError, match="nothing to export"):
        export_generator(bad)
    with pytest.raises(ExportError, match="not a folder"):
        export_generator(bad, onnx_path=bad / "x.onnx")
    with pytest.raises(ExportError, match="not a folder"):
        export_generator(bad, saved_model_base=bad / "models")
    proc = _cli(tmp_path / "missing", "--onnx", tmp_path / "x.onnx")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Error:")


def test_latents_tf_bit_exact():
    import tensorflow as tf

    from nebula_keras3.export.latents_tf import hash32 as hash32_tf
    from nebula_keras3.export.latents_tf import latents_from_seeds_tf, pair_bits_tf
    from nebula_keras3.sampling import latents as L

    rng = np.random.default_rng(0)
    seeds = np.concatenate([
        np.array([0, 1, -1, 2**31, 2**32 - 1, 2**32, -(2**63), 2**63 - 1], dtype=np.int64),
        rng.integers(-(2**63), 2**63 - 1, 300, dtype=np.int64),
    ])
    words = rng.integers(0, 2**32, 1000, dtype=np.int64)
    assert np.array_equal(hash32_tf(tf.constant(words)).numpy(), L.hash32(words))
    for d in (1, 15, 16, 100):
        # the integer steps, exactly as the numpy recipe does them
        s = seeds
        base = L.hash32(L.hash32(((s & L.MASK32) + L.GOLDEN) & L.MASK32) ^ ((s >> 32) & L.MASK32))
        k = np.arange((d + 1) // 2, dtype=np.int64)
        a = L.hash32((base[:, None] + L.mul32(2 * k + 1, L.GOLDEN)[None]) & L.MASK32)
        b = L.hash32((base[:, None] + L.mul32(2 * k + 2, L.GOLDEN)[None]) & L.MASK32)
        ta, tb = pair_bits_tf(tf.constant(seeds), d)
        assert ta.dtype == tf.int64
        assert np.array_equal(ta.numpy(), a) and np.array_equal(tb.numpy(), b)
        z_tf = latents_from_seeds_tf(tf.constant(seeds), d).numpy()
        z_np = L.latents_from_seeds(seeds, d)
        assert z_tf.dtype == np.float32 and z_tf.shape == z_np.shape == (len(seeds), d)
        np.testing.assert_allclose(z_tf, z_np, rtol=0, atol=1e-5)


def test_export_trained_tiny_run(tiny_run, tmp_path):
    """A run folder written by the trainer (one step, current backend) exports with parity."""
    facts_in = json.loads((tiny_run / "generator.json").read_text())
    result = export_generator(tiny_run, onnx_path=tmp_path / "tiny.onnx")
    assert result.onnx_path.is_file() and result.saved_model_dir is None and result.version is None
    assert max(r["max_uint8"] for r in result.parity.values()) <= 1
    for key in ("latent_dim", "image_size", "backend", "epoch", "step", "preset"):
        assert result.facts[key] == facts_in[key], key
    assert result.facts["backend"] == keras.backend.backend()


def test_parity_failure_is_loud():
    """A mismatched ONNX model fails the parity check (TensorFlow backend only: in-process)."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("parity_check runs inside the TensorFlow export process")
    from nebula_keras3.export import onnx_model
    from nebula_keras3.models.dcgan.generator import DCGANGenerator

    a = DCGANGenerator(SIZE, LATENT, 8, seed=0)
    b = DCGANGenerator(SIZE, LATENT, 8, seed=0)
    rgb = b.get_layer("to_rgb_convt")
    rgb.kernel.assign(rgb.kernel * 50.0)  # untrained outputs sit near 0: make them differ clearly
    final, dual = onnx_model.convert(b, LATENT, {"latent_dim": LATENT})
    with pytest.raises(onnx_model.ParityError, match="parity failed"):
        onnx_model.parity_check(a, final.SerializeToString(), dual.SerializeToString(), LATENT)
    ok = onnx_model.parity_check(b, final.SerializeToString(), dual.SerializeToString(), LATENT)
    assert sorted(ok) == [1, 7]


# Which state --checkpoint picks is the same logic whichever backend trained; loading a
# checkpoint's EMA arrays under each backend is test_checkpoint_choice.py's.
@pytest.mark.backend_independent
def test_export_checkpoint_best_exports_the_weights_of_best_npz(tmp_path):
    """`nebula export RUN --checkpoint best`: the ONNX model draws what a generator holding
    best.npz's EMA arrays draws (not the final generator), and its facts say so."""
    import keras

    from nebula_keras3.sampling.keras_sampler import KerasSampler
    from nebula_keras3.sampling.onnx_sampler import OnnxSampler
    from nebula_keras3.training.checkpoint import BEST_FILE, checkpoint_path
    from test_checkpoint_choice import ema_arrays, make_run_with_best_at_epoch_1

    run = make_run_with_best_at_epoch_1(tmp_path / "run")
    proc = _cli(run, "--checkpoint", "best", "--onnx", tmp_path / "best.onnx")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exported the best checkpoint, epoch 1 of" in proc.stdout
    assert "  checkpoint: best" in proc.stdout and "  epoch: 1" in proc.stdout
    onnx = OnnxSampler(tmp_path / "best.onnx")
    assert onnx.facts["checkpoint"] == "best" and onnx.facts["epoch"] == 1

    # The generator of best.npz, assembled here by hand: the final generator's architecture
    # with best.npz's EMA arrays assigned by variable path.
    best = keras.saving.load_model(run / "generator.keras", compile=False)
    arrays = ema_arrays(checkpoint_path(run, BEST_FILE))
    for v in best.variables:
        v.assign(arrays[v.path])
    z = latents_from_seeds(np.arange(8), LATENT)
    expected = to_uint8(keras.ops.convert_to_numpy(best(z, training=False)))
    got = onnx.images_from_latents(z)
    assert np.abs(got.astype(int) - expected).max() <= 1
    final = KerasSampler(run).images_from_latents(z)
    assert np.abs(got.astype(int) - final).max() > 8  # not the final generator's images
