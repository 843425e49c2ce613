"""XLA's persistent compilation cache for JAX runs.

A JAX run compiles its jitted train step, and each small op Keras runs eagerly, anew in
every process: a ``--resume``, a second run of the same preset or the test suite pays the
compile again. With the cache on, JAX stores every compiled program under
``<cache dir>/jax-compile`` (``nebula_keras3.paths``: ``$NEBULA_CACHE_DIR``, else
``~/.cache/nebula-keras3``), keyed by the program and the XLA version, and loads it the
next time instead of compiling. The result of a cached program is the compiled one's, so
runs and resumes stay exact.

The folder is bounded here, once per process, not by JAX: with JAX's own size limit
(``jax_compilation_cache_max_size``) every program written lists, stats and reads a time
stamp of every entry, so each compile costs more the fuller the cache is
(``bench/compile_cache_bench.py``; docs/RESULTS.md, "JAX's compile cache").
:func:`trim_cache` drops the least recently used entries (by the files' access or
modification time, whichever is later) when the folder is over :data:`MAX_BYTES`.

A user who set ``JAX_COMPILATION_CACHE_DIR`` keeps that directory and JAX's own settings for it;
``NEBULA_JAX_CACHE=0`` turns the cache off. TensorFlow and torch runs are not affected.
"""

from __future__ import annotations

import os
from pathlib import Path

from nebula_keras3.paths import JAX_COMPILE_CACHE, cache_subdir

OFF_ENV = "NEBULA_JAX_CACHE"
MAX_BYTES = 2 * 1024**3  # least recently used programs are dropped above this, at start
ENTRY_SUFFIX = "-cache"  # JAX's file names: <key>-cache, and <key>-atime when JAX itself evicts
ATIME_SUFFIX = "-atime"


def enable_jax_compile_cache(cache_dir: str | os.PathLike | None = None, *,
                             max_bytes: int = MAX_BYTES) -> Path | None:
    """Turn on JAX's persistent compilation cache; returns its folder, or None when not JAX / off."""
    import keras

    if keras.backend.backend() != "jax" or os.environ.get(OFF_ENV, "1") == "0":
        return None
    import jax

    if jax.config.jax_compilation_cache_dir:  # the user's own choice (JAX_COMPILATION_CACHE_DIR)
        return Path(jax.config.jax_compilation_cache_dir)
    path = cache_subdir(JAX_COMPILE_CACHE, cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    trim_cache(path, max_bytes)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Every program, not only those over JAX's 1 s default: Keras' eager ops are many
    # small compiles, and together they are most of a short run's start-up.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_max_size", -1)  # no per-write scan: bounded above
    return path


def trim_cache(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> int:
    """Delete the least recently used entries of a JAX cache folder until its entries total at
    most ``max_bytes``; returns how many were deleted. Safe beside other processes using or
    trimming the same folder (an entry already gone is skipped)."""
    entries = []
    for entry in Path(path).glob(f"*{ENTRY_SUFFIX}"):
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        entries.append((max(st.st_atime_ns, st.st_mtime_ns), st.st_size, entry))
    total = sum(size for _, size, _ in entries)
    removed = 0
    for _, size, entry in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        key = entry.name[: -len(ENTRY_SUFFIX)]
        for victim in (entry, entry.with_name(key + ATIME_SUFFIX)):
            try:
                victim.unlink()
            except FileNotFoundError:
                pass
        total -= size
        removed += 1
    return removed
