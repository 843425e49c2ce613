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


def run_program(tmp_path, program=PROGRAM, **env_vars):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "NEBULA_JAX_CACHE")}
    env.update(KERAS_BACKEND="jax", NEBULA_CACHE_DIR=str(tmp_path / "cache"), **env_vars)
    out = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=300)
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


def test_a_cache_over_its_bound_loses_its_least_recently_used_entries_first(tmp_path):
    from nebula_keras3.training.compile_cache import trim_cache

    cache = tmp_path / "jax-compile"
    cache.mkdir()
    for i in range(6):  # entry i last used at time 1000 + i (file access or modification)
        entry = cache / f"jit_f-{i:04x}-cache"
        entry.write_bytes(b"x" * 100)
        (cache / f"jit_f-{i:04x}-atime").write_bytes(b"t" * 8)  # what JAX's own limit writes beside it
        os.utime(entry, ns=(1_000_000_000_000 + i, 1_000_000_000_000 + i))
    os.utime(cache / "jit_f-0001-cache", ns=(2_000_000_000_000, 1_000_000_000_001))  # read recently
    assert trim_cache(cache, max_bytes=350) == 3
    assert sorted(p.name for p in cache.iterdir()) == [
        "jit_f-0001-atime", "jit_f-0001-cache", "jit_f-0004-atime", "jit_f-0004-cache",
        "jit_f-0005-atime", "jit_f-0005-cache"]
    assert trim_cache(cache, max_bytes=350) == 0  # within the bound: nothing more goes


def test_the_cache_is_trimmed_at_start_and_not_scanned_on_every_write(tmp_path):
    """JAX's own size limit lists and stats every entry on each write and leaves an ``-atime``
    file per entry; the bound is applied once, when the cache is turned on."""
    cache = tmp_path / "cache" / "jax-compile"
    cache.mkdir(parents=True)
    for i in range(4):
        (cache / f"jit_old-{i:04x}-cache").write_bytes(b"x" * 1000)
    program = PROGRAM.replace("enable_jax_compile_cache()", "enable_jax_compile_cache(max_bytes=2500)")
    assert run_program(tmp_path, program) == str(cache)
    names = [p.name for p in cache.iterdir()]
    assert len([n for n in names if n.startswith("jit_old-")]) == 2
    assert any(n.endswith("-cache") and not n.startswith("jit_old-") for n in names)  # the new program
    assert not [n for n in names if n.endswith("-atime")]
