"""Helpers for the serving tests and benchmarks: a real export, a server subprocess, expectations.

The export runs in a subprocess under the TensorFlow Keras backend (whatever
backend the caller runs), so test processes never import TensorFlow. Bench
scripts import this module with ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from nebula_keras3.export import layout
from nebula_keras3.serving.options import DEFAULT_HOST, DEFAULT_PROMETHEUS_PATH
from nebula_keras3.serving.tf_metrics import prometheus_name

# requests that reached a batch queue so far (batching_session.cc input_batch_size, one per request)
INPUT_BATCHES = prometheus_name("/tensorflow/serving/batching_session/input_batch_size") + "_count{}"

_EXPORT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from nebula_keras3.models import DCGANGenerator
    from nebula_keras3.export.api import export_generator
    out, size, latent, ngf = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    versions = [int(v) for v in sys.argv[5].split(",")]
    parity = sys.argv[6] == "1"
    for i, v in enumerate(versions):
        run = out / f"run{v}"
        run.mkdir(parents=True, exist_ok=True)
        g = DCGANGenerator(size, latent_dim=latent, ngf=ngf, seed=i)  # a different model per version
        rgb = g.get_layer("to_rgb_convt")  # untrained outputs sit near 0: spread them over [-1, 1]
        rgb.kernel.assign(rgb.kernel * 40.0)
        g.save(run / "generator.keras")
        facts = {"latent_dim": latent, "image_size": size, "backend": "tensorflow", "epoch": 0,
                 "step": 0, "preset": "serving-test"}
        (run / "generator.json").write_text(json.dumps(facts))
        export_generator(run, saved_model_base=out / "models", version=v, parity=parity)
    print("exported", versions, flush=True)
    """
)


def session_export(tmp_path_factory) -> Path:
    """The test session's one export (:func:`make_export`), shared by every pytest-xdist worker."""
    from conftest import session_tmp

    return make_export(session_tmp(tmp_path_factory) / "nebula_serving_export")


def make_export(root, *, image_size: int = 32, latent_dim: int = 16, ngf: int = 8, versions=(1, 2),
                parity: bool = False, timeout: float = 600) -> Path:
    """Export untrained DCGAN generators as versions under ``root/models/nebula``; returns that model dir.

    Made once per ``root``: processes that ask for the same ``root`` at once (pytest-xdist
    workers sharing it) wait for the first one's export. The tests only read it."""
    root = Path(root)
    model_dir = root / "models" / layout.DEFAULT_MODEL_NAME
    done = root / "export.done"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():
            return model_dir
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        proc = subprocess.run(
            [sys.executable, "-c", _EXPORT_SCRIPT, str(root), str(image_size), str(latent_dim), str(ngf),
             ",".join(map(str, versions)), "1" if parity else "0"],
            env=env, capture_output=True, text=True, timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"test export failed:\n{proc.stderr[-3000:]}")
        done.write_text("ok\n")
    return model_dir


def copy_version(src_dir, dst_model_dir, version: int, *, with_onnx: bool = True) -> Path:
    """Install a copy of a version folder atomically (temp name, then rename), like the exporter."""
    dst_model_dir = Path(dst_model_dir)
    dst_model_dir.mkdir(parents=True, exist_ok=True)
    tmp = layout.staging_dir(dst_model_dir, version)
    shutil.copytree(src_dir, tmp, ignore=None if with_onnx else shutil.ignore_patterns(layout.ONNX_FILE))
    final = dst_model_dir / str(version)
    os.rename(tmp, final)
    return final


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((DEFAULT_HOST, 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_post(url: str, body: bytes, timeout: float = 60.0):
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class ServerProcess:
    """``nebula serve`` in a subprocess on a free port of the default (loopback) host (and a free
    gRPC port with ``grpc=True``; else gRPC is off, so servers never contend for its default port)."""

    def __init__(self, args: list[str], *, model: str = layout.DEFAULT_MODEL_NAME, log_path=None, env=None,
                 ready_timeout: float = 90.0, wait_versions: int = 1, grpc: bool = False):
        self.port = free_port()
        self.url = f"http://{DEFAULT_HOST}:{self.port}"
        self.grpc_port = 0
        while grpc and self.grpc_port in (0, self.port):
            self.grpc_port = free_port()
        self.grpc_target = f"{DEFAULT_HOST}:{self.grpc_port}" if grpc else None
        self.model = model
        self.log_path = Path(log_path) if log_path else None
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nebula_keras3", "serve", "--host", DEFAULT_HOST, "--port", str(self.port),
             "--grpc-port", str(self.grpc_port), "--log-level", "warning", *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
        )
        self.pid = self.proc.pid
        self._wait_ready(ready_timeout, wait_versions)

    def _wait_ready(self, timeout: float, wait_versions: int) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nebula serve exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                status, body = http_get(f"{self.url}/v1/models/{self.model}", timeout=2)
                if status == 200:
                    states = [v["state"] for v in json.loads(body)["model_version_status"]]
                    if states.count("AVAILABLE") >= wait_versions:
                        # requests batched so far: the versions' warmup requests (replayed while loading)
                        self.batched_at_start = self.metric(INPUT_BATCHES) if self._has_metrics() else 0.0
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"nebula serve not ready within {timeout}s: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        if self.log_path and self.log_path.is_file():
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def metric(self, sample: str) -> float:
        """The value of one sample of the Prometheus page, e.g. ``':tensorflow:serving:request_count{...}'``
        (0 when the sample is not there yet)."""
        status, body = http_get(f"{self.url}{DEFAULT_PROMETHEUS_PATH}", timeout=30)
        if status != 200:
            raise RuntimeError(f"metrics page answered {status}")
        for line in body.decode().splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def _has_metrics(self) -> bool:
        return http_get(f"{self.url}{DEFAULT_PROMETHEUS_PATH}", timeout=30)[0] == 200

    def wait_requests_in_batcher(self, n: int, timeout: float = 120.0) -> None:
        """Wait until ``n`` requests since start-up have reached a batch queue (TF's input_batch_size
        histogram count, less the warmup requests replayed while the versions loaded)."""
        deadline = time.monotonic() + timeout
        while self.metric(INPUT_BATCHES) < self.batched_at_start + n:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{n} requests not in the batch queues within {timeout}s: {self.log_tail()}")
            time.sleep(0.05)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int | None:
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        return self.proc.returncode


# --------------------------------------------------------------------------- expectations


def offline_model(version_dir):
    """What a version folder should answer, computed offline by the package's ONNX sampler (on CPU)."""
    from nebula_keras3.sampling.onnx_sampler import OnnxSampler

    return OnnxSampler(version_dir, providers=["CPUExecutionProvider"])


def decode_b64_pngs(items) -> np.ndarray:
    """The images of REST's ``[{"b64": ...}, ...]`` PNG predictions."""
    import base64

    from nebula_keras3.serving.client import decode_pngs

    return decode_pngs([base64.b64decode(it["b64"]) for it in items])


def max_diff(a, b) -> int:
    a, b = np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return int(np.abs(a - b).max()) if a.size else 0
