"""--distribute data-parallel: equal to one device on 2 virtual CPU devices (JAX), clear refusals elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from nebula_keras3.training import trainer
from nebula_keras3.training.checkpoint import checkpoint_path
from nebula_keras3.training.distribute import DistributeError, check_global_batch, setup_distribution
from nebula_keras3.training.stop_signal import STOPPED_EXIT_CODE
from support.serving import free_port

from conftest import tiny_config, with_test_xla_flags

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


# It starts its own JAX processes whatever this process's backend is, so it runs once: under torch,
# whose test process has the most time to spare in `make test`.
@pytest.mark.skipif(BACKEND != "torch", reason="runs its own JAX processes; once, in torch's test process")
def test_sigterm_to_one_of_two_processes_stops_both_after_the_same_epoch(tmp_path):
    # Two JAX processes on this machine, as on two hosts; the scheduler signals only process 1.
    # Alone it would stop, and process 0 would wait for it in the next all-reduce for ever.
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
           "OMP_NUM_THREADS": "1", "XLA_FLAGS": with_test_xla_flags(os.environ.get("XLA_FLAGS", ""))}
    address = f"localhost:{free_port()}"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "nebula_keras3", "train", "--preset", "tiny", "--epochs", "10000",
         "--distribute", "data-parallel", "--coordinator-address", address, "--num-processes", "2",
         "--process-id", str(i), "--out", str(tmp_path / f"run{i}")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        epochs_csv = tmp_path / "run1" / "epochs.csv"
        deadline = time.monotonic() + 300
        while not (epochs_csv.is_file() and len(epochs_csv.read_text().splitlines()) > 2):
            assert all(p.poll() is None for p in procs), [p.communicate()[0][-2000:] for p in procs]
            assert time.monotonic() < deadline, "no epoch finished in 300 s"
            time.sleep(0.5)
        procs[1].terminate()  # SIGTERM
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == STOPPED_EXIT_CODE, out[-2000:]
    assert "SIGTERM: stopped after epoch" in outputs[1]
    assert "SIGTERM to another process: stopped after epoch" in outputs[0]
    rows = [(tmp_path / f"run{i}" / "epochs.csv").read_text().splitlines()[1:] for i in range(2)]
    assert len(rows[0]) == len(rows[1]) >= 2
    assert [r.split(",")[:2] for r in rows[0]] == [r.split(",")[:2] for r in rows[1]]  # epoch, step
