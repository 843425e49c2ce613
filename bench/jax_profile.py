"""Where a JAX training step spends its time on CPU: XLA's compiled ops, grouped by kind.

    KERAS_BACKEND=jax .venv/bin/python bench/jax_profile.py [--preset dcgan64] [--steps 3]
        [--batch-size 64] [--image-size 64] [--top 15]

Builds the preset's GAN as ``bench/train_bench.py`` does, fits once on random data (compile),
then fits ``--steps`` steps under ``jax.profiler.trace`` (a Perfetto trace) and sums the
duration of every XLA op in the trace by its kind (the op name without its ``.N`` suffix:
``ynn_fusion`` and ``dot`` are matrix products, ``*slice*``, ``concatenate``, ``*copy*``,
``transpose*`` and ``*pad*`` move data). Printed per kind: milliseconds per step and the share
of all op time; then the shares of the three categories (``category``). Op time is summed over threads, so with more than one thread it can exceed wall time.
Not a test: it measures.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile


MATMUL = re.compile(r"^(ynn_fusion|xnn_fusion|onednn|dot)")
DATA_MOVEMENT = re.compile(r"slice|concatenate|copy|transpose|pad|gather|dynamic-update")


def category(kind: str) -> str:
    """``matmul``, ``data movement`` or ``other`` for an op kind."""
    if MATMUL.search(kind):
        return "matmul"
    return "data movement" if DATA_MOVEMENT.search(kind) else "other"


def op_times(trace_dir: str) -> collections.Counter:
    """{op kind: total microseconds} of the XLA ops in a ``jax.profiler`` Perfetto trace."""
    paths = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    if not paths:
        raise SystemExit(f"no perfetto_trace.json.gz under {trace_dir}")
    with gzip.open(paths[0]) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    kinds = collections.Counter()
    for e in events:
        name = e.get("name", "")
        # Python frames start with "$"; the executor's own spans contain the ops
        if e.get("ph") != "X" or name.startswith("$") or "Thunk" in name or "Await" in name or name in ("get", "acquire"):
            continue
        kinds[re.sub(r"\.\d+$", "", name)] += e.get("dur", 0)
    return kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="dcgan64")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    if os.environ.get("KERAS_BACKEND") != "jax":
        raise SystemExit("run with KERAS_BACKEND=jax")
    if args.steps < 1:
        raise SystemExit(f"--steps must be at least 1, got {args.steps}")

    import jax
    import numpy as np

    from nebula_keras3.training.config import TrainConfig
    from nebula_keras3.training.trainer import build_gan

    cfg = TrainConfig.from_preset(args.preset, image_size=args.image_size, batch_size=args.batch_size)
    gan = build_gan(cfg)
    n = args.batch_size * args.steps
    x = np.random.default_rng(0).uniform(-1, 1, (n, args.image_size, args.image_size, 3)).astype("float32")
    gan.fit(x, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=False)  # compile
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            gan.fit(x, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=False)
        kinds = op_times(trace_dir)
    total = sum(kinds.values())
    print(f"{args.preset}, batch {args.batch_size}, {args.image_size} px: XLA op time per step "
          f"{total / args.steps / 1e3:.0f} ms")
    for kind, us in kinds.most_common(args.top):
        print(f"  {us / args.steps / 1e3:8.1f} ms  {100 * us / total:5.1f}%  {kind}")
    groups = collections.Counter()
    for kind, us in kinds.items():
        groups[category(kind)] += us
    print("by category: " + ", ".join(f"{name} {100 * us / total:.1f}%" for name, us in groups.most_common()))


if __name__ == "__main__":
    sys.exit(main())
