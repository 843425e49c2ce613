"""Sampling throughput: ONNX Runtime vs Keras (torch eager, JAX) on one generator, in one run.

    .venv/bin/python bench/sample_bench.py [--model runs/x [--checkpoint last] | --preset nebula64]
                                           [--batch-size 64] [--reps 5] [--rounds 2]

The generator is a run folder's ``generator.keras`` (``--model``; with ``--checkpoint``, that
training state of the run, as ``nebula export --checkpoint`` takes it) or a fresh one of
``--preset`` (default dcgan64; speed does not depend on the weights). It is exported to ONNX
on the TensorFlow backend (as ``nebula export`` does) once per form of its upsampling
layers (``FORMS``: dcgan's transposed convolutions as ONNX ConvTranspose, sub-pixel Conv +
depth-to-space or phase matmuls; nebula's nearest-upsample convolutions direct, as phase
matmuls or as one 2x2 phase conv; same weights); the row ``nebula export`` writes
(``EXPORT_FORM``) is marked, and that form is also quantised to int8 as
``nebula export --onnx-int8`` does (export/quantize.py: checked against Keras, keeping convs float where
its limits need it; its error and SWD against the float model and the convs kept float are
printed). Each ONNX model runs with the session options ``nebula sample --onnx``
uses; Keras runs ``generator.predict_on_batch`` on the torch and JAX backends,
each in its own subprocess. Rounds alternate all entries; the table prints median images/s
and the median (min-max) over rounds of each round's ratio to Keras-torch eager. Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOAD = r"""
import json, sys
import keras
from nebula_keras3.models.dcgan.layers import SubPixelConv2DTranspose
from nebula_keras3.models.nebula.layers import NearestUpsampleConv2D
from nebula_keras3.training.config import TrainConfig
from nebula_keras3.training.trainer import build_models
UPSAMPLING = (SubPixelConv2DTranspose, NearestUpsampleConv2D)
def load(model, preset):
    import os
    if os.environ.get("SAMPLE_BENCH_CHECKPOINT"):  # --checkpoint: that training state of run folder `model`
        from nebula_keras3.training.generator_state import load_generator_state
        return load_generator_state(model, os.environ["SAMPLE_BENCH_CHECKPOINT"])[0]
    if model:
        return keras.saving.load_model(model, compile=False)
    return build_models(TrainConfig.from_preset(preset, seed=0, mixed_precision="none"))[0]  # float32, as exported
"""

EXPORT = LOAD + r"""
from export.onnx_model import convert
model, preset, out, forms, int8_form = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(","), sys.argv[5]
g = load(model, preset)
for form in forms:
    for layer in g.layers:
        if isinstance(layer, UPSAMPLING):
            layer.implementation = form
    final, _ = convert(g, int(g.input_shape[-1]), {"bench": "1"})
    open(f"{out}/{form}.onnx", "wb").write(final.SerializeToString())
    if form == int8_form:  # as `nebula export --onnx-int8`: checked against Keras, convs kept float as needed
        import numpy as np
        from export.quantize import quantize_checked
        from nebula_keras3.sampling.grid import to_uint8
        from nebula_keras3.sampling.latents import latents_from_seeds
        dim = int(g.input_shape[-1])
        images = lambda seeds: to_uint8(np.asarray(g(latents_from_seeds(seeds, dim), training=False)))
        q, report = quantize_checked(final.SerializeToString(), images, dim)
        open(f"{out}/{form}.int8.onnx", "wb").write(q)
        print(json.dumps({"int8_float_nodes": report["float_nodes"]}))
"""

KERAS = LOAD + r"""
import time
import numpy as np
model, preset, batch, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
g = load(model, preset)
z = np.random.default_rng(0).normal(size=(batch, int(g.input_shape[-1]))).astype("float32")
for _ in range(2):
    keras.ops.convert_to_numpy(g.predict_on_batch(z))
t = time.perf_counter()
for _ in range(reps):
    keras.ops.convert_to_numpy(g.predict_on_batch(z))
print(json.dumps({"images_per_second": batch * reps / (time.perf_counter() - t)}))
"""


def forms_of(model: str, preset: str) -> tuple[list[str], str]:
    """The upsampling forms the generator's layers can be exported in (they are one family's),
    and the one ``nebula export`` writes."""
    out = run_worker(LOAD + r"""
g = load(sys.argv[1], sys.argv[2])
print(json.dumps(sorted({l.__class__.__name__ for l in g.layers if isinstance(l, UPSAMPLING)})))
""", "tensorflow", model, preset)
    kinds = json.loads(out.strip().splitlines()[-1])
    from nebula_keras3.models.dcgan import layers as dcgan_layers
    from nebula_keras3.models.nebula import layers as nebula_layers

    module = {"SubPixelConv2DTranspose": dcgan_layers, "NearestUpsampleConv2D": nebula_layers}[kinds[0]]
    return list(module.FORMS), module.EXPORT_FORM


def run_worker(code: str, backend: str, *args) -> str:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, cwd=repo,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{backend} worker failed:\n{out.stderr[-2000:]}")
    return out.stdout


def time_ort(path: Path, batch: int, reps: int) -> float:
    import numpy as np

    from nebula_keras3.sampling.onnx_sampler import OnnxSampler

    sampler = OnnxSampler(path, providers=["CPUExecutionProvider"], batch_size=batch)
    z = np.random.default_rng(0).normal(size=(batch, sampler.latent_dim)).astype("float32")
    for _ in range(2):
        sampler.images_from_latents(z)
    t = time.perf_counter()
    for _ in range(reps):
        sampler.images_from_latents(z)
    return batch * reps / (time.perf_counter() - t)


QUALITY_IMAGES = 64


def int8_quality(float_path: Path, int8_path: Path) -> dict:
    """Per-pixel error and SWD of the int8 model against the float one on the same seeds
    (the export's own check, export/quantize.py, compares against Keras)."""
    import numpy as np

    from nebula_keras3.metrics.swd import sliced_wasserstein_distance
    from nebula_keras3.sampling.onnx_sampler import OnnxSampler

    seeds = np.arange(QUALITY_IMAGES, dtype=np.int64)
    f = OnnxSampler(float_path, providers=["CPUExecutionProvider"])
    a = f.images_from_seeds(seeds)
    b = OnnxSampler(int8_path, providers=["CPUExecutionProvider"]).images_from_seeds(seeds)
    other = f.images_from_seeds(seeds + 1_000_000)
    diff = np.abs(a.astype(np.int16) - b)
    return {"mean_uint8": float(diff.mean()), "max_uint8": int(diff.max()),
            "swd": sliced_wasserstein_distance(a, b)["swd"],
            "swd_float_other_seeds": sliced_wasserstein_distance(a, other)["swd"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="", help="run folder or .keras file (default: a fresh dcgan64 G)")
    ap.add_argument("--preset", default="dcgan64", help="fresh generator of this preset when no --model")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--checkpoint", default="",
                    help="best, last or a .npz: that training state of the --model run folder (as nebula export)")
    args = ap.parse_args()
    model = args.model
    if args.checkpoint:
        if not (model and Path(model).is_dir()):
            ap.error("--checkpoint needs --model RUN_FOLDER")
        os.environ["SAMPLE_BENCH_CHECKPOINT"] = args.checkpoint
    elif model and Path(model).is_dir():
        model = str(Path(model) / "generator.keras")
    forms, export_form = forms_of(model, args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        out = run_worker(EXPORT, "tensorflow", model, args.preset, tmp, ",".join(forms), export_form)
        float_nodes = json.loads(out.strip().splitlines()[-1])["int8_float_nodes"]
        int8_label = f"onnx runtime, {export_form}, int8"
        quality = int8_quality(Path(tmp) / f"{export_form}.onnx", Path(tmp) / f"{export_form}.int8.onnx")
        ips: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for be in ("torch", "jax"):
                out = run_worker(KERAS, be, model, args.preset, args.batch_size, args.reps)
                ips.setdefault(f"keras {be}", []).append(json.loads(out.strip().splitlines()[-1])["images_per_second"])
            for form in forms:
                label = f"onnx runtime, {form}" + (" (nebula export)" if form == export_form else "")
                ips.setdefault(label, []).append(
                    time_ort(Path(tmp) / f"{form}.onnx", args.batch_size, args.reps))
            ips.setdefault(int8_label, []).append(
                time_ort(Path(tmp) / f"{export_form}.int8.onnx", args.batch_size, args.reps))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in ips.items()), flush=True)
    ref = ips["keras torch"]
    print(f"\ngenerator {model or f'{args.preset} (fresh)'}{f' ({args.checkpoint} checkpoint)' if args.checkpoint else ''}, batch {args.batch_size}, "
          f"{args.reps} batches x {args.rounds} rounds")
    print(f"{'':44s}{'img/s (median)':>16s}{'vs keras torch':>16s}{'(min-max of rounds)':>22s}")
    for k, v in ips.items():
        ratios = [x / r for x, r in zip(v, ref)]
        print(f"{k:44s}{statistics.median(v):16.1f}{statistics.median(ratios):15.2f}x"
              f"{min(ratios):>13.2f}-{max(ratios):.2f}x")
    print(f"\nint8 vs float ({export_form}), {QUALITY_IMAGES} seeded images: mean uint8 diff "
          f"{quality['mean_uint8']:.3g}, max {quality['max_uint8']}, SWD {quality['swd']:.3g} "
          f"(float, two seed sets: {quality['swd_float_other_seeds']:.3g}); kept float beside the last "
          f"conv: {', '.join(float_nodes) or 'none'}")


if __name__ == "__main__":
    main()
