"""Wall-clock and memory figures that tests no longer assert (timing on a shared machine is noise).

    .venv/bin/python bench/limits_bench.py [--workdir /tmp/nebula-limits-bench] [--requests 2000]

Prints, each beside a reference measured in the same run:

* cold start of ``nebula sample --onnx -n 64`` in a fresh process, against a fresh
  ``python -c "import numpy, onnxruntime"`` (the floor any ONNX sampler pays);
* ``nebula serve``'s resident memory before and after ``--requests`` small ``generate_png``
  requests from 8 threads (after a warm-up burst);
* refusal latency under overload: 40 clients at once against a server allowed 12
  concurrent requests and one single-row batch in the queue; median time to a 429/503
  against the median time to a 200.

Uses the same small untrained export as the serving tests (cached in the workdir).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from nebula_keras3.export import layout

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import serving as st  # noqa: E402 - the tests' helpers


def fresh_process_seconds(args: list[str], cwd: Path, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(args, cwd=cwd, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return best


def cold_start(version_dir: Path, workdir: Path) -> None:
    onnx = version_dir / layout.ONNX_FILE
    floor = fresh_process_seconds([sys.executable, "-c", "import numpy, onnxruntime"], workdir)
    sample = fresh_process_seconds([sys.executable, "-m", "nebula_keras3", "sample", "--onnx", str(onnx),
                                    "-n", "64", "--seed", "0", "-o", str(workdir / "grid.png")], workdir)
    print(f"cold start `nebula sample --onnx -n 64`: {sample:.2f} s; import numpy+onnxruntime: {floor:.2f} s "
          f"(ratio {sample / floor:.1f}x)", flush=True)


def rss_growth(model_dir: Path, workdir: Path, total: int, threads: int = 8) -> None:
    import httpx

    srv = st.ServerProcess(["--model-base-path", str(model_dir)], log_path=workdir / "rss-server.log")
    path = f"/v1/models/{layout.DEFAULT_MODEL_NAME}:predict"
    bodies = [json.dumps({"signature_name": layout.GENERATE_PNG, "instances": [i]}).encode() for i in range(50)]

    def burst(n_per_thread: int) -> int:
        def worker(t):
            bad = 0
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                for i in range(n_per_thread):
                    bad += c.post(path, content=bodies[(t + i) % len(bodies)]).status_code != 200
            return bad

        with ThreadPoolExecutor(threads) as ex:
            return sum(ex.map(worker, range(threads)))

    try:
        bad = burst(300 // threads)
        rss0 = srv.rss_kib()
        t0 = time.perf_counter()
        bad += burst(total // threads)
        seconds = time.perf_counter() - t0
        rss1 = srv.rss_kib()
    finally:
        srv.stop()
    print(f"server RSS over {total} requests: {rss0 / 1024:.0f} -> {rss1 / 1024:.0f} MiB "
          f"({(rss1 - rss0) / 1024:+.1f} MiB), {total / seconds:.0f} req/s, {bad} non-200", flush=True)


def refusal_latency(model_dir: Path, workdir: Path, clients: int = 40) -> None:
    import httpx

    srv = st.ServerProcess(["--model-base-path", str(model_dir), "--max-batch-size", "1",
                            "--max-enqueued-batches", "1", "--num-batch-threads", "1",
                            "--batch-timeout-micros", "0", "--max-concurrent-requests", "12"],
                           log_path=workdir / "overload-server.log")
    body = json.dumps({"signature_name": layout.GENERATE_IMAGES, "instances": list(range(48))})
    path = f"/v1/models/{layout.DEFAULT_MODEL_NAME}:predict"
    results = []
    barrier = threading.Barrier(clients)

    def worker(_):
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            barrier.wait()
            t0 = time.perf_counter()
            r = c.post(path, content=body)
            results.append((r.status_code, time.perf_counter() - t0))

    try:
        with ThreadPoolExecutor(clients) as ex:
            list(ex.map(worker, range(clients)))
    finally:
        srv.stop()
    ok = [dt for code, dt in results if code == 200]
    refused = [dt for code, dt in results if code != 200]
    med = lambda xs: float(np.median(xs)) if xs else float("nan")  # noqa: E731
    print(f"overload ({clients} clients, limit 12): {len(refused)} refused, median {med(refused) * 1000:.0f} ms; "
          f"{len(ok)} served, median {med(ok) * 1000:.0f} ms (ratio {med(refused) / med(ok):.2f})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/nebula-limits-bench"))
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model_dir = st.make_export(args.workdir / "export")
    version_dir = max(layout.version_dirs(model_dir).items())[1]
    cold_start(version_dir, args.workdir)
    rss_growth(model_dir, args.workdir, args.requests)
    refusal_latency(model_dir, args.workdir)


if __name__ == "__main__":
    main()
