"""JAX's persistent compilation cache: where `nebula train` keeps compiled programs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("jax")
pytestmark = pytest.mark.backend_independent

# One jitted program, compiled in a fresh JAX process after the cache is (maybe) enabled.
PROGRAM = (
    "from nebula_keras3.training.compile_cache import enable_jax_compile_cache\n"
    "print(enable_jax_compile_cache())\n"
    "import jax, jax.numpy as jnp\n"
    "jax.jit(lambda x: x * 2 + 1)(jnp.ones(3)).block_until_ready()\n"
)


def run_program(tmp_path, **env_vars):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "NEBULA_JAX_CACHE")}
    env.update(KERAS_BACKEND="jax", NEBULA_CACHE_DIR=str(tmp_path / "cache"), **env_vars)
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_programs_are_stored_under_the_nebula_cache_dir(tmp_path):
    assert run_program(tmp_path) == str(tmp_path / "cache" / "jax-compile")
    assert any((tmp_path / "cache" / "jax-compile").iterdir())


def test_a_users_jax_cache_dir_is_kept_and_the_cache_can_be_turned_off(tmp_path):
    own = tmp_path / "own"
    assert run_program(tmp_path, JAX_COMPILATION_CACHE_DIR=str(own)) == str(own)
    assert not (tmp_path / "cache" / "jax-compile").exists()  # JAX's own settings then apply
    assert run_program(tmp_path, NEBULA_JAX_CACHE="0") == "None"
    assert not (tmp_path / "cache" / "jax-compile").exists()
