"""Shared fixtures. Tests run once per KERAS_BACKEND (see Makefile / .ci/run)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep the image cache of the test session out of the user's home."""
    old = os.environ.get("NEBULA_CACHE_DIR")
    os.environ["NEBULA_CACHE_DIR"] = str(tmp_path_factory.mktemp("nebula-cache"))
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
