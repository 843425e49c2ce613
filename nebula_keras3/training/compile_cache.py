"""XLA's persistent compilation cache for JAX runs.

A JAX run compiles its jitted train step, and each small op Keras runs eagerly, anew in
every process: a ``--resume``, a second run of the same preset or the test suite pays the
compile again. With the cache on, JAX stores every compiled program under
``<cache dir>/jax-compile`` (``nebula_keras3.paths``: ``$NEBULA_CACHE_DIR``, else
``~/.cache/nebula-keras3``), keyed by the program and the XLA version, and loads it the
next time instead of compiling. The result of a cached program is the compiled one's, so
runs and resumes stay exact.

A user who set ``JAX_COMPILATION_CACHE_DIR`` keeps that directory; ``NEBULA_JAX_CACHE=0``
turns the cache off. TensorFlow and torch runs are not affected.
"""

from __future__ import annotations

import os
from pathlib import Path

from nebula_keras3.paths import JAX_COMPILE_CACHE, cache_subdir

OFF_ENV = "NEBULA_JAX_CACHE"
MAX_BYTES = 2 * 1024**3  # least recently used programs are dropped above this


def enable_jax_compile_cache(cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache; returns its folder, or None when not JAX / off."""
    import keras

    if keras.backend.backend() != "jax" or os.environ.get(OFF_ENV, "1") == "0":
        return None
    import jax

    if jax.config.jax_compilation_cache_dir:  # the user's own choice (JAX_COMPILATION_CACHE_DIR)
        return Path(jax.config.jax_compilation_cache_dir)
    path = cache_subdir(JAX_COMPILE_CACHE, cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Every program, not only those over JAX's 1 s default: Keras' eager ops are many
    # small compiles, and together they are most of a short run's start-up.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path
