"""Sampling throughput: ONNX Runtime vs Keras (torch eager, JAX) on one generator, in one run.

    .venv/bin/python bench/sample_bench.py [--model runs/x | --image-size 64] [--batch-size 64]
                                           [--reps 5] [--rounds 2]

The generator is a run folder's ``generator.keras`` (``--model``) or a fresh ``dcgan64``
one (speed does not depend on the weights). It is exported to ONNX on the TensorFlow
backend (as ``nebula export`` does) twice: its stride-2 transposed convolutions as ONNX
ConvTranspose, and in their sub-pixel form (Conv + depth-to-space, same weights). Each ONNX
model runs with the session options ``nebula sample --onnx`` uses; Keras runs ``generator.predict_on_batch`` on the torch and JAX backends,
each in its own subprocess. Rounds alternate all entries; the table prints median images/s
and the ratio to Keras-torch eager. Not a test: it measures.
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

EXPORT = r"""
import json, sys
import keras
from nebula_keras3.models import DCGANGenerator
from nebula_keras3.models.dcgan.layers import SubPixelConv2DTranspose
from export.onnx_model import convert
model, size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
g = keras.saving.load_model(model, compile=False) if model else DCGANGenerator(size, seed=0)
for form in ("transpose", "subpixel"):
    for layer in g.layers:
        if isinstance(layer, SubPixelConv2DTranspose):
            layer.implementation = form
    final, _ = convert(g, int(g.input_shape[-1]), {"bench": "1"})
    open(f"{out}/{form}.onnx", "wb").write(final.SerializeToString())
"""

KERAS = r"""
import json, sys, time
import numpy as np, keras
from nebula_keras3.models import DCGANGenerator
model, size, batch, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
g = keras.saving.load_model(model, compile=False) if model else DCGANGenerator(size, seed=0)
z = np.random.default_rng(0).normal(size=(batch, int(g.input_shape[-1]))).astype("float32")
for _ in range(2):
    keras.ops.convert_to_numpy(g.predict_on_batch(z))
t = time.perf_counter()
for _ in range(reps):
    keras.ops.convert_to_numpy(g.predict_on_batch(z))
print(json.dumps({"images_per_second": batch * reps / (time.perf_counter() - t)}))
"""


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="", help="run folder or .keras file (default: a fresh dcgan64 G)")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    model = args.model
    if model and Path(model).is_dir():
        model = str(Path(model) / "generator.keras")
    with tempfile.TemporaryDirectory() as tmp:
        run_worker(EXPORT, "tensorflow", model, args.image_size, tmp)
        ips: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for be in ("torch", "jax"):
                out = run_worker(KERAS, be, model, args.image_size, args.batch_size, args.reps)
                ips.setdefault(f"keras {be}", []).append(json.loads(out.strip().splitlines()[-1])["images_per_second"])
            for form in ("transpose", "subpixel"):
                ips.setdefault(f"onnx runtime, {form} form", []).append(
                    time_ort(Path(tmp) / f"{form}.onnx", args.batch_size, args.reps))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in ips.items()), flush=True)
    ref = statistics.median(ips["keras torch"])
    print(f"\ngenerator {model or f'dcgan{args.image_size} (fresh)'}, batch {args.batch_size}, "
          f"{args.reps} batches x {args.rounds} rounds")
    print(f"{'':34s}{'img/s (median)':>16s}{'vs keras torch':>16s}")
    for k, v in ips.items():
        m = statistics.median(v)
        print(f"{k:34s}{m:16.1f}{m / ref:15.2f}x")


if __name__ == "__main__":
    main()
