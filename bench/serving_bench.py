"""Benchmark ``nebula serve`` against offline ONNX Runtime on the same 64 px generator.

    .venv/bin/python bench/serving_bench.py [--seconds 3] [--workdir /tmp/nebula-serving-bench]

Exports an untrained ``DCGANGenerator(64)`` once (cached in the workdir), measures
offline ONNX Runtime throughput (``serving_default``: z -> uint8 images; and
``generate_png``: seeds -> latents -> ONNX -> PNG) in this process, then starts
``nebula serve`` on 127.0.0.1 and drives it with 1, 8 and 32 concurrent clients
(asyncio, keep-alive HTTP/1.1 connections), single-image and 16-image requests, for both
signatures. Prints images/s, p50/p99 latency and the ratio to offline throughput.
Bounded: every cell runs ``--seconds`` (default 3), about 1-2 minutes in all.
The client runs on the same machine and takes CPU from the server: the ratios
are a lower bound of what a separate client machine would see. Each row also gives
the server's CPU time per image (all threads, and the event-loop thread alone, from
/proc on Linux): unlike images/s, it hardly moves when other work shares the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from nebula_keras3.serving import testing as st
from nebula_keras3.serving.runtimes import OnnxRunner


def offline_throughput(version_dir: Path, seconds: float, batch: int = 32) -> dict:
    runner = OnnxRunner(version_dir)
    d = runner.latent_dim
    out = {}
    z = np.random.default_rng(0).standard_normal((batch, d)).astype(np.float32)
    runner.images(z)  # warm-up
    for name, fn in (
        ("serving_default", lambda i: runner.run("serving_default", {"z": z})),
        ("generate_png", lambda i: runner.run("generate_png", {"seed": np.arange(i * batch, (i + 1) * batch)})),
    ):
        n, i, t0 = 0, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn(i)
            n += batch
            i += 1
        out[name] = n / (time.perf_counter() - t0)
    return out


class _Conn:
    """Minimal HTTP/1.1 keep-alive client connection (asyncio streams): much less client CPU than httpx,
    which matters when client and server share two cores."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        data = await self.reader.readexactly(length)
        return status, data

    def close(self):
        if self.writer is not None:
            self.writer.close()


async def drive(url: str, concurrency: int, per_request: int, signature: str, latent_dim: int,
                seconds: float) -> dict:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    rng = np.random.default_rng(concurrency * 100 + per_request)
    if signature == "serving_default":
        bodies = [json.dumps({"instances": rng.standard_normal((per_request, latent_dim)).astype(np.float32)
                              .round(5).tolist()}).encode() for _ in range(8)]
    else:
        bodies = [json.dumps({"signature_name": "generate_png",
                              "instances": list(range(k * per_request, (k + 1) * per_request))}).encode()
                  for k in range(8)]
    path = "/v1/models/nebula:predict"
    latencies: list[float] = []
    errors = 0
    conns = [_Conn(u.hostname, u.port) for _ in range(concurrency)]
    for c in conns:  # connect and warm up
        await c.post(path, bodies[0])
    t_end = time.perf_counter() + seconds

    async def worker(w: int):
        nonlocal errors
        k, conn = w, conns[w]
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            status, _ = await conn.post(path, bodies[k % len(bodies)])
            if status == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1
            k += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.close()
    lat = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies), "errors": errors,
        "images_per_s": len(latencies) * per_request / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
    }


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(all threads, main thread) CPU seconds of a process, from /proc; NaN where /proc is missing."""
    def read(path):
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    try:
        return read(f"/proc/{pid}/stat"), read(f"/proc/{pid}/task/{pid}/stat")
    except (OSError, ValueError, IndexError):
        return float("nan"), float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each measured cell")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "nebula-serving-bench")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--sizes", default="1,16")
    ap.add_argument("--server-args", default="", help="extra nebula serve flags, e.g. '--max-batch-size 64'")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    print(f"exporting DCGANGenerator(64) into {args.workdir} (cached) ...", flush=True)
    model_dir = st.make_export(args.workdir, image_size=64, latent_dim=100, ngf=64, versions=(1,))
    version_dir = model_dir / "1"

    offline = offline_throughput(version_dir, args.seconds)
    print(f"offline ONNX Runtime (batch 32, this process): serving_default {offline['serving_default']:.0f} img/s, "
          f"generate_png {offline['generate_png']:.0f} img/s", flush=True)

    srv = st.ServerProcess(["--model-base-path", str(model_dir), *args.server_args.split()],
                           log_path=args.workdir / "server.log")
    rows = []
    try:
        for signature in ("serving_default", "generate_png"):
            for per_request in [int(x) for x in args.sizes.split(",")]:
                for conc in [int(x) for x in args.concurrency.split(",")]:
                    cpu0 = cpu_seconds(srv.pid)
                    res = asyncio.run(drive(srv.url, conc, per_request, signature, 100, args.seconds))
                    cpu1 = cpu_seconds(srv.pid)
                    images = max(1, res["requests"] * per_request)
                    res.update(signature=signature, concurrency=conc, per_request=per_request,
                               ratio=res["images_per_s"] / offline[signature],
                               cpu_ms=1000 * (cpu1[0] - cpu0[0]) / images,
                               loop_cpu_ms=1000 * (cpu1[1] - cpu0[1]) / images)
                    rows.append(res)
                    print(f"{signature:16s} {per_request:3d} img/req  c={conc:<3d} "
                          f"{res['images_per_s']:8.1f} img/s  p50 {res['p50_ms']:7.1f} ms  "
                          f"p99 {res['p99_ms']:7.1f} ms  {res['ratio'] * 100:5.1f}% of offline  "
                          f"CPU {res['cpu_ms']:.2f} ms/img (loop {res['loop_cpu_ms']:.2f})"
                          f"{'  errors=' + str(res['errors']) if res['errors'] else ''}", flush=True)
        rss = srv.rss_kib()
    finally:
        srv.stop()

    print()
    print("| signature | images/request | clients | images/s | p50 ms | p99 ms | vs offline "
          "| server CPU ms/image | event loop ms/image |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['signature']} | {r['per_request']} | {r['concurrency']} | {r['images_per_s']:.1f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['ratio'] * 100:.0f}% | {r['cpu_ms']:.2f} | "
              f"{r['loop_cpu_ms']:.2f} |")
    print(f"\noffline ONNX Runtime: serving_default {offline['serving_default']:.1f} img/s, "
          f"generate_png {offline['generate_png']:.1f} img/s; server RSS {rss / 1024:.0f} MiB; "
          f"cpus {os.cpu_count()}; total {time.perf_counter() - t_start:.0f} s")
    single = [r for r in rows if r["per_request"] == 1]
    loaded = [r for r in rows if r["concurrency"] == max(x["concurrency"] for x in rows) and r["per_request"] > 1]
    print("aim: single-image p99 <= 100 ms -> worst " + (f"{max(r['p99_ms'] for r in single):.1f} ms" if single else "n/a")
          + "; under load >= 80% of offline -> " + ", ".join(f"{r['signature']} {r['ratio'] * 100:.0f}%" for r in loaded))
    if args.json:
        args.json.write_text(json.dumps({"offline": offline, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
