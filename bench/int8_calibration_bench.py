"""How far int8 variants of one exported float ONNX generator are from it, and how fast they run.

    .venv/bin/python bench/int8_calibration_bench.py FLOAT.onnx [--batch-size 64]

FLOAT.onnx is a float export (``nebula export RUN --checkpoint last --onnx FLOAT.onnx``). Each row
quantizes it as export/quantize.py does (``quantize_int8``) with one thing changed: the
calibration method (min-max, moving-average min-max, entropy, percentile), more calibration
latents, one more node left float, or only one node quantized; and prints the per-pixel uint8
error against the float model on the export check's 64 seeds (mean, 99th percentile, worst
pixel) and ONNX Runtime images/s at the batch size (best of 5). The float model's own images/s
is the first row. Not a test: it measures what the export's fallback order rests on.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="float ONNX generator (nebula export --onnx)")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    import onnx
    import onnxruntime.quantization as oq
    from onnxruntime.quantization import CalibrationMethod

    from nebula_keras3.export import layout, quantize
    from nebula_keras3.sampling.latents import latents_from_seeds
    from nebula_keras3.sampling.onnx_sampler import cpu_session

    float_bytes = open(args.model, "rb").read()
    model = onnx.load_from_string(float_bytes)
    latent_dim = int(model.graph.input[0].type.tensor_type.shape.dim[1].dim_value)
    z = latents_from_seeds(np.arange(args.batch_size, dtype=np.int64), latent_dim)
    ref = quantize._render(cpu_session(float_bytes), quantize.CHECK_SEEDS, latent_dim).astype(np.int16)

    def speed(sess) -> float:
        sess.run([layout.IMAGES], {layout.Z: z})
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            sess.run([layout.IMAGES], {layout.Z: z})
            best = min(best, time.perf_counter() - t)
        return args.batch_size / best

    print(f"{'variant':58s}{'mean':>7s}{'p99':>5s}{'max':>5s}{'img/s':>8s}")
    print(f"{'float':58s}{'':17s}{speed(cpu_session(float_bytes)):8.0f}", flush=True)
    static = oq.quantize_static

    def row(name, *, method=None, extra=None, float_nodes=(), seeds=quantize.CALIBRATION_SEEDS,
            op_types=quantize.OP_TYPES):
        def patched(*a, **k):
            if method is not None:
                k["calibrate_method"] = method
            if extra:
                k["extra_options"] = extra
            k["op_types_to_quantize"] = list(op_types)
            return static(*a, **k)

        oq.quantize_static = patched
        saved = quantize.OP_TYPES
        quantize.OP_TYPES = tuple(op_types)  # float_nodes may then name a MatMul too
        try:
            q = quantize.quantize_int8(float_bytes, float_nodes=float_nodes, calibration_seeds=seeds)
        finally:
            oq.quantize_static, quantize.OP_TYPES = static, saved
        sess = cpu_session(q)
        d = np.abs(quantize._render(sess, quantize.CHECK_SEEDS, latent_dim).astype(np.int16) - ref)
        print(f"{name:58s}{d.mean():7.3f}{np.percentile(d, 99):5.0f}{d.max():5d}{speed(sess):8.0f}", flush=True)

    order = quantize.quantizable_nodes(float_bytes)  # the export's fallback order

    def short(name: str) -> str:
        return name.split("/")[1] if "/" in name else name

    seeds_1024 = range(1_000_000, 1_001_024)
    row("every conv but the last int8, min-max, 256 latents (default)")
    row("  min-max, 1024 latents", seeds=seeds_1024)
    row("  moving-average min-max, 1024 latents", extra={"CalibMovingAverage": True}, seeds=seeds_1024)
    row("  entropy", method=CalibrationMethod.Entropy)
    row("  percentile 99.99, 1024 latents", method=CalibrationMethod.Percentile,
        extra={"CalibPercentile": 99.99}, seeds=seeds_1024)
    stem = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    if stem:
        row(f"  and the stem MatMul ({short(stem[0])}) int8", op_types=("Conv", "MatMul"))
        row("only the stem MatMul int8", op_types=("Conv", "MatMul"), float_nodes=order)
    for k in range(1, min(3, len(order)) + 1):
        row(f"the {k} nearest the output float: " + ", ".join(short(n) for n in order[:k]),
            float_nodes=order[:k])
    for node in order:
        if node.endswith("/convolution"):  # the upsampling convs (the SLE convs are tiny)
            row(f"only {short(node)} int8", float_nodes=[n for n in order if n != node])

if __name__ == "__main__":
    main()
