"""Shared fixtures. Tests run once per KERAS_BACKEND (see Makefile / .ci/run)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Torch's OpenMP pool sized for a run with pytest-xdist: each of N workers (and the `nebula`
# subprocesses it starts) gets its share of the cores; pools as wide as the machine in every
# worker spin against each other (docs/RESULTS.md, "Four concurrent processes instead of three
# passes"; `make test` sets it for its own processes). A user's OMP_NUM_THREADS is left as it is.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    from support.run_suite import omp_threads

    os.environ["OMP_NUM_THREADS"] = omp_threads(_workers)

# XLA's CPU compiler under JAX set for compile time: the suite's models are tiny, so it is
# compile time, not run time, that the tests wait on. Optimisation level 0 (a jax.random.normal
# of a new shape, as each initialiser draws, compiles several times faster), and the elemental
# emitters instead of the MLIR fusion emitters (a GAN train step compiles in about half the time;
# docs/RESULTS.md, "make demo and make test"). Results are checked within the same
# flags (resume vs straight, 2 devices vs 1) or to tolerances, never to stored bits. Set before
# JAX starts; subprocesses inherit them. A flag already in XLA_FLAGS is left as it is.
TEST_XLA_FLAGS = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": "false"}


def with_test_xla_flags(flags: str) -> str:
    """``flags`` (an XLA_FLAGS value) with TEST_XLA_FLAGS added, for JAX processes of any test."""
    return " ".join([flags] + [f"--{name}={value}" for name, value in TEST_XLA_FLAGS.items()
                               if name not in flags]).strip()


if os.environ.get("KERAS_BACKEND") == "jax":
    os.environ["XLA_FLAGS"] = with_test_xla_flags(os.environ.get("XLA_FLAGS", ""))

# The same trade under TensorFlow: Grappler, the graph optimiser every tf.function's first call
# runs, is a large part of a small GAN's `train()` there (docs/RESULTS.md, "Four concurrent
# processes instead of three passes"); off in the test processes, as a user's runs keep it on.
TEST_TF_OPTIMIZER_OPTIONS = {"disable_meta_optimizer": True}
if os.environ.get("KERAS_BACKEND") == "tensorflow":
    import tensorflow as _tf

    _tf.config.optimizer.set_experimental_options(TEST_TF_OPTIMIZER_OPTIONS)


def real_data_dir() -> Path | None:
    """The real nebula photos: $NEBULA_DATA, else ../shared/data/nebula beside the repo."""
    env = os.environ.get("NEBULA_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data" / "nebula"
    return path if path.is_dir() and any(path.iterdir()) else None


@pytest.fixture(scope="session")
def real_data() -> Path:
    path = real_data_dir()
    if path is None:
        pytest.skip(
            "real nebula images not found: set NEBULA_DATA or place them at ../shared/data/nebula"
        )
    return path


def session_tmp(tmp_path_factory) -> Path:
    """A folder shared by the whole test session: by every pytest-xdist worker, where there are several."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep the image and compile caches of the test session out of the user's home."""
    old = os.environ.get("NEBULA_CACHE_DIR")
    os.environ["NEBULA_CACHE_DIR"] = str(tmp_path_factory.mktemp("nebula-cache"))
    # Under JAX, what one test compiles the next one loads (as `nebula train` does across runs),
    # in this process, its subprocesses and the other pytest-xdist workers: one folder for the
    # whole session (JAX's key holds the folder's path, so one folder is also one set of keys).
    # Subprocesses get the folder and its settings as a user's own JAX cache (compile_cache.py).
    from nebula_keras3.training.compile_cache import enable_jax_compile_cache

    shared = enable_jax_compile_cache(session_tmp(tmp_path_factory))
    if shared is not None:
        import jax

        for name in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs"):
            os.environ[name.upper()] = str(getattr(jax.config, name))
    yield
    if old is None:
        os.environ.pop("NEBULA_CACHE_DIR", None)
    else:
        os.environ["NEBULA_CACHE_DIR"] = old


def tiny_config(**overrides):
    from nebula_keras3.training.config import TrainConfig

    return TrainConfig.from_preset("tiny", **overrides)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run folder: one step of the tiny preset under the current backend.

    image_size 32, latent_dim 16, ngf = ndf = 8; holds generator.keras + generator.json.
    """
    from nebula_keras3.training.trainer import train

    run_dir = tmp_path_factory.mktemp("tiny-run") / "run"
    train(tiny_config(steps_per_epoch=1), run_dir, progress=False, echo=lambda *_: None)
    return run_dir


def make_generator_run(folder: Path, *, image_size: int = 32, latent_dim: int = 16, ngf: int = 8,
                       bn_seed: int = 0, model: str = "dcgan", upsample: str = "nearest",
                       rgb_skip: int = 0) -> Path:
    """An untrained generator saved as a run folder, BatchNorm moving statistics perturbed.

    ``model="nebula"``: a NebulaGenerator (``upsample`` and ``rgb_skip`` as given, GLU, skip-layer
    excitation; ``rgb_skip``'s corrections, zero at initialisation, drawn at random).

    Moving mean/variance far from 0/1 make a train-mode (batch statistics) export or
    sampler differ visibly from the inference-mode model, so such a bug cannot hide.
    """
    import json

    import keras
    import numpy as np

    from nebula_keras3.models import DCGANGenerator, NebulaGenerator

    folder.mkdir(parents=True, exist_ok=True)
    if model == "nebula":
        g = NebulaGenerator(image_size, latent_dim, ngf, upsample=upsample, sle=True, rgb_skip=rgb_skip, seed=0)
    else:
        g = DCGANGenerator(image_size, latent_dim, ngf, seed=0)
    rng = np.random.default_rng(bn_seed)
    for level in range(rgb_skip):
        kernel = g.get_layer(f"to_rgb{image_size >> level}_conv").kernel
        kernel.assign(rng.normal(0.0, 0.2, kernel.shape).astype("float32"))
    for layer in g.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.3, 3.0, n).astype("float32"))
    g.save(folder / "generator.keras")
    facts = {"latent_dim": latent_dim, "image_size": image_size, "backend": keras.backend.backend(),
             "epoch": 0, "step": 1, "preset": "tiny", "model": model}
    (folder / "generator.json").write_text(json.dumps(facts))
    return folder


# Eager JAX compiles every op for every new shape (XLA on the CPU): a forward pass at 128 or
# 256 px costs 10-16 s there and runs the layers a 64 px one runs, so the size tests build every
# size on every backend but run the larger sizes' forward pass on TensorFlow and torch only.
JAX_EAGER_MAX_SIZE = 64


def forward_runs_at(size: int) -> bool:
    import keras

    return keras.backend.backend() != "jax" or size <= JAX_EAGER_MAX_SIZE


# Under JAX and torch an export runs in the TensorFlow worker process (export/api.py: every
# backend but TensorFlow), from the run's .keras file, which is the same whichever backend wrote
# it. A test of that worker's own path (its errors, its CLI, one more layer's parity) runs under
# TensorFlow (in process) and torch (the worker); under JAX it would only repeat torch's. Export
# tests that compare with the JAX model's own output, or export a JAX-trained run, still run.
def _backend() -> str:
    import keras

    return keras.backend.backend()


same_worker_path_as_torch = pytest.mark.skipif(
    _backend() == "jax", reason="the export worker's own path: the same under torch, which runs it")

# A test that patches the export's own code (a limit in export/quantize.py) reaches it only where
# the export runs in this process: under TensorFlow. It runs with TensorFlow's other tests.
export_in_this_process = pytest.mark.skipif(
    _backend() != "tensorflow",
    reason="patches the export in this process; under JAX and torch it runs in the TensorFlow worker")
