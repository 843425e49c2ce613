"""--distribute data-parallel: equal to one device on 2 virtual CPU devices (JAX), clear refusals elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from nebula_keras3.training import trainer
from nebula_keras3.training.checkpoint import checkpoint_path
from nebula_keras3.training.distribute import DistributeError, check_global_batch, setup_distribution

from conftest import tiny_config

BACKEND = keras.backend.backend()
quiet = {"progress": False, "echo": lambda *_: None}

TWO_DEVICES = """
import json, sys
from nebula_keras3.training import trainer
from nebula_keras3.training.config import TrainConfig
from nebula_keras3.training.distribute import DistributeError, check_global_batch, setup_distribution
print(setup_distribution("data-parallel"), file=sys.stderr)
try:
    check_global_batch(7)
    error = None
except DistributeError as e:
    error = str(e)
config = TrainConfig.from_preset("tiny", steps_per_epoch=2, batch_size=8)
trainer.train(config, sys.argv[1], progress=False, echo=lambda *_: None)
print(json.dumps({"error": error}))
"""


def _arrays(run_dir):
    with np.load(checkpoint_path(run_dir)) as data:
        header = json.loads(data["header"].tobytes().decode())
        return header, [data[f"v{i:06d}"] for i in range(len(header["names"]))]


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution supports only JAX in Keras 3.15")
def test_two_devices_equal_one_and_the_checkpoint_resumes_on_one(tmp_path):
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env = {**os.environ, "XLA_FLAGS": flags, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", TWO_DEVICES, str(tmp_path / "two")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data-parallel over 2 device(s)" in proc.stderr
    error = json.loads(proc.stdout.strip().splitlines()[-1])["error"]
    assert error == "--batch-size 7 does not divide over 2 devices: use a multiple of 2 (e.g. 6 or 8)"

    trainer.train(tiny_config(steps_per_epoch=2, batch_size=8), tmp_path / "one", **quiet)
    (h2, two), (h1, one) = _arrays(tmp_path / "two"), _arrays(tmp_path / "one")
    assert h2["step"] == h1["step"] == 2 and h2["names"] == h1["names"]
    for name, a, b in zip(h1["names"], one, two):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=2e-5, err_msg=name)

    # The 2-device checkpoint continues on this 1-device process.
    result = trainer.resume(tmp_path / "two", epochs=2, **quiet)
    assert result.epochs_done == 2 and result.steps_done == 4


@pytest.mark.skipif(BACKEND == "jax", reason="JAX is supported")
def test_other_backends_refuse_with_the_reason():
    with pytest.raises(DistributeError, match=f"not available on the {BACKEND} backend: keras.distribution"):
        setup_distribution("data-parallel")


def test_without_distribution_any_batch_works():
    check_global_batch(7)  # one device: nothing to split
    assert setup_distribution("none") == "1 process, default device"
    with pytest.raises(DistributeError, match="unknown distribution 'model-parallel'"):
        setup_distribution("model-parallel")
