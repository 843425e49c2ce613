"""Where nebula-keras3 keeps its caches: one root, one sub-folder per cache.

The root is ``$NEBULA_CACHE_DIR``, else ``~/.cache/nebula-keras3``. Under it:

* ``folders/``: decoded image folders (``nebula_keras3.data.cache``);
* ``jax-compile/``: XLA's persistent compilation cache (``nebula_keras3.training.compile_cache``).

Imports nothing beyond the standard library.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "NEBULA_CACHE_DIR"
FOLDER_CACHE = "folders"
JAX_COMPILE_CACHE = "jax-compile"


def default_cache_dir() -> Path:
    """``$NEBULA_CACHE_DIR``, else ``~/.cache/nebula-keras3``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nebula-keras3"


def cache_subdir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir or default_cache_dir()>/<name>`` (not created)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / name
