"""procedural_nebulae: the built-in data set is seeded, deterministic and nebula-like."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from nebula_keras3.data.procedural import procedural_nebulae

pytestmark = pytest.mark.backend_independent


def test_shape_dtype_and_range():
    x = procedural_nebulae(24, 64, seed=0)
    assert x.shape == (24, 64, 64, 3) and x.dtype == np.uint8
    assert x.min() < 10 and x.max() > 245  # dark sky and saturated star cores
    assert 20 < x.mean() < 120
    assert len({hashlib.sha1(img.tobytes()).hexdigest() for img in x}) == 24
    assert x.reshape(24, -1).std(axis=1).min() > 5  # no blank frames


@pytest.mark.parametrize("size", [32, 128])
def test_other_sizes(size):
    x = procedural_nebulae(3, size, seed=1)
    assert x.shape == (3, size, size, 3) and x.dtype == np.uint8


def test_deterministic_and_prefix_stable():
    a = procedural_nebulae(12, 32, seed=5)
    b = procedural_nebulae(12, 32, seed=5)
    assert a.tobytes() == b.tobytes()
    np.testing.assert_array_equal(procedural_nebulae(5, 32, seed=5), a[:5])
    assert procedural_nebulae(0, 32).shape == (0, 32, 32, 3)


def test_seeds_differ():
    a = procedural_nebulae(4, 32, seed=0)
    b = procedural_nebulae(4, 32, seed=1)
    assert not np.array_equal(a, b)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_same_bytes_in_a_fresh_process():
    code = (
        "import hashlib; from nebula_keras3.data.procedural import procedural_nebulae; "
        "print(hashlib.sha256(procedural_nebulae(6, 48, seed=3).tobytes()).hexdigest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    here = hashlib.sha256(procedural_nebulae(6, 48, seed=3).tobytes()).hexdigest()
    assert out.stdout.strip() == here


def test_colourful_not_grey():
    x = procedural_nebulae(16, 64, seed=2).astype(np.float32)
    chroma = x.max(axis=-1) - x.min(axis=-1)
    assert chroma.mean() > 8  # coloured gas, not a grey texture


def test_bad_arguments():
    with pytest.raises(ValueError):
        procedural_nebulae(-1, 64)
    with pytest.raises(ValueError):
        procedural_nebulae(4, 4)
