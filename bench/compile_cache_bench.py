"""What a full JAX compile cache adds to each new compile, with JAX's own size limit and with ours.

    .venv/bin/python bench/compile_cache_bench.py [--entries 0,1000,3000] [--programs 60] [--rounds 3]

A JAX run compiles many small programs (each op Keras runs eagerly at a new shape) besides its
train step, and writes each into the persistent cache. With ``jax_compilation_cache_max_size``
set, JAX bounds the cache on every write: it lists every entry, stats it and reads its time-stamp
file. ``training/compile_cache.py`` instead trims the folder once at start and leaves JAX's
limit off.

For each ``--entries`` count the bench fills a fresh cache folder with that many entries (files of
the size real entries have, with their time-stamp files, as a run under JAX's limit leaves them),
then in each round times, in fresh processes back to back:

* ``no cache``: ``--programs`` distinct small programs compiled with no persistent cache
  (the reference);
* ``JAX's limit``: the same with the cache on that folder and JAX's limit at ``MAX_BYTES`` (what
  ``enable_jax_compile_cache`` set before);
* ``trim at start``: the same after ``enable_jax_compile_cache`` (trim once, no limit in JAX).

Each program is new to the cache (its shapes differ from every earlier round's), so every one
is compiled and written. Prints milliseconds per program, the median of the rounds, and the
median ratio to ``no cache`` in the same round. Not a test: it measures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ENTRY_BYTES = 6000  # about a small eager op's entry (zstd-compressed executable)

WORKER = r"""
import os, sys, time
mode, cache, programs, offset = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
os.environ["KERAS_BACKEND"] = "jax"
import jax, jax.numpy as jnp
from nebula_keras3.training.compile_cache import MAX_BYTES, enable_jax_compile_cache
if mode == "jax-limit":
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
elif mode == "trim":
    enable_jax_compile_cache(cache)
jnp.ones(1).block_until_ready()  # backend start-up, outside the timing
t = time.perf_counter()
for k in range(programs):
    n = offset + k + 2
    (jnp.ones((n, 3)) * 2.0).sum().block_until_ready()
print((time.perf_counter() - t) / programs * 1e3)
"""

MODES = [("no cache", "none"), ("JAX's limit", "jax-limit"), ("trim at start", "trim")]


def fill(folder: Path, entries: int) -> None:
    folder.mkdir(parents=True)
    payload = os.urandom(ENTRY_BYTES)
    for i in range(entries):
        key = f"jit_bench-{i:064x}"
        (folder / f"{key}-cache").write_bytes(payload)
        (folder / f"{key}-atime").write_bytes(i.to_bytes(8, "little"))


def run(mode: str, folder: Path, programs: int, offset: int) -> float:
    env = {**os.environ, "NEBULA_JAX_CACHE": "1"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", WORKER, mode, str(folder), str(programs), str(offset)],
                         env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", default="0,1000,3000", help="cache sizes to try, comma-separated")
    ap.add_argument("--programs", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nebula-compile-cache-bench-"))
    offset = 0
    try:
        print(f"{'entries':>8}  {'mode':<14} {'ms/program':>11}  vs no cache (min-max)")
        for entries in (int(e) for e in args.entries.split(",")):
            times = {mode: [] for _, mode in MODES}
            for _ in range(args.rounds):
                for _, mode in MODES:
                    folder = root / f"{entries}-{mode}"
                    shutil.rmtree(folder, ignore_errors=True)
                    fill(folder, entries)
                    times[mode].append(run(mode, folder, args.programs, offset))
                offset += args.programs
            for label, mode in MODES:
                ratios = [t / r for t, r in zip(times[mode], times["none"])]
                print(f"{entries:>8}  {label:<14} {statistics.median(times[mode]):>11.1f}  "
                      f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
