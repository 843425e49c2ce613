"""Benchmark ``nebula serve`` against offline ONNX Runtime on the same 64 px generator.

    .venv/bin/python bench/serving_bench.py [--seconds 3] [--workdir /tmp/nebula-serving-bench]

Exports an untrained ``DCGANGenerator(64)`` once (cached in the workdir), measures
offline ONNX Runtime throughput (``serving_default``: z -> uint8 images; and
``generate_png``: seeds -> latents -> ONNX -> PNG) in this process, then starts
``nebula serve`` on 127.0.0.1 and drives it with 1, 8 and 32 concurrent clients,
single-image and 16-image requests, for both signatures, over REST (asyncio,
keep-alive HTTP/1.1 connections, JSON) and gRPC (``grpc.aio``, one channel,
``tensorflow-serving-api``'s PredictionService stub, inputs as ``tensor_content``
like ``tf.make_tensor_proto``). Prints images/s, p50/p99 latency and the ratio to
offline throughput, and first the cost of reading :predict bodies with TF
Serving's JSON rules (``tf_json.parse``) against ``json.loads``. Bounded: every cell runs ``--seconds`` (default 3), about
2-3 minutes in all.
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

from nebula_keras3.export.layout import GENERATE_PNG, SEED, SERVING_DEFAULT, Z
from nebula_keras3.serving.runtimes import OnnxRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import serving as st  # noqa: E402 - the tests' helpers


def offline_throughput(version_dir: Path, seconds: float, batch: int = 32) -> dict:
    runner = OnnxRunner(version_dir)
    d = runner.latent_dim
    out = {}
    z = np.random.default_rng(0).standard_normal((batch, d)).astype(np.float32)
    runner.images(z)  # warm-up
    for name, fn in (
        (SERVING_DEFAULT, lambda i: runner.run(SERVING_DEFAULT, {Z: z})),
        (GENERATE_PNG, lambda i: runner.run(GENERATE_PNG, {SEED: np.arange(i * batch, (i + 1) * batch)})),
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
        if not status_line:  # the server closed the connection: count an error, reconnect next time
            self.close()
            self.reader = self.writer = None
            return 0, b""
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


def _summary(latencies: list[float], errors: int, per_request: int, elapsed: float) -> dict:
    lat = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies), "errors": errors,
        "images_per_s": len(latencies) * per_request / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
    }


async def drive_grpc(target: str, concurrency: int, per_request: int, signature: str, latent_dim: int,
                     seconds: float) -> dict:
    """Like :func:`drive`, over gRPC Predict: ``concurrency`` callers sharing one channel."""
    import grpc

    from nebula_keras3.serving import tensor_proto
    from nebula_keras3.serving.protos import predict_pb2, prediction_service_pb2_grpc

    rng = np.random.default_rng(concurrency * 100 + per_request)
    requests = []
    for k in range(8):
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "nebula"
        if signature == SERVING_DEFAULT:
            tensor_proto.from_numpy_content(rng.standard_normal((per_request, latent_dim)).astype(np.float32),
                                            req.inputs[Z])
        else:
            req.model_spec.signature_name = signature
            tensor_proto.from_numpy_content(np.arange(k * per_request, (k + 1) * per_request, dtype=np.int64),
                                            req.inputs[SEED])
        requests.append(req)
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", -1)]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        await asyncio.gather(*(stub.Predict(requests[0], timeout=60) for _ in range(concurrency)))  # warm-up
        t_end = time.perf_counter() + seconds

        async def worker(w: int):
            nonlocal errors
            k = w
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                try:
                    await stub.Predict(requests[k % len(requests)], timeout=60)
                    latencies.append(time.perf_counter() - t0)
                except grpc.aio.AioRpcError:
                    errors += 1
                k += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return _summary(latencies, errors, per_request, elapsed)


async def drive(url: str, concurrency: int, per_request: int, signature: str, latent_dim: int,
                seconds: float) -> dict:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    rng = np.random.default_rng(concurrency * 100 + per_request)
    if signature == SERVING_DEFAULT:
        bodies = [predict_body(rng, per_request, latent_dim) for _ in range(8)]
    else:
        bodies = [json.dumps({"signature_name": GENERATE_PNG,
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
    return _summary(latencies, errors, per_request, elapsed)


def predict_body(rng, rows: int, latent_dim: int) -> bytes:
    """A :predict body as clients write it: ``json.dumps`` of ``float32.tolist()`` (17-digit doubles)."""
    return json.dumps({"instances": rng.standard_normal((rows, latent_dim)).astype(np.float32).tolist()}).encode()


def parse_cost(n_bodies: int = 200, rows: int = 32, latent_dim: int = 100, repeats: int = 5) -> dict:
    """tf_json.parse (TF Serving's reading) against json.loads on the same :predict bodies, in this process.

    Each body is timed best-of-``repeats`` with both parsers, alternating, so machine load hits both alike.
    """
    from nebula_keras3.serving import tf_json

    rng = np.random.default_rng(0)
    bodies = [predict_body(rng, rows, latent_dim) for _ in range(n_bodies)]
    fast = sum(not tf_json.needs_rapidjson(b) for b in bodies)
    ratios, t_ours, t_std = [], 0.0, 0.0
    for b in bodies:
        best_ours = best_std = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            tf_json.parse(b)
            t1 = time.perf_counter()
            json.loads(b)
            t2 = time.perf_counter()
            best_ours, best_std = min(best_ours, t1 - t0), min(best_std, t2 - t1)
        ratios.append(best_ours / best_std)
        t_ours += best_ours
        t_std += best_std
    ratios = np.asarray(ratios)
    return {"bodies": n_bodies, "body_bytes": int(np.mean([len(b) for b in bodies])),
            "fast_path_fraction": fast / n_bodies, "ratio_median": float(np.median(ratios)),
            "ratio_p99": float(np.percentile(ratios, 99)), "within_1_5x": float(np.mean(ratios <= 1.5)),
            "parse_ms": 1000 * t_ours / n_bodies, "json_loads_ms": 1000 * t_std / n_bodies}


def first_request_latency(model_dir: Path, workdir: Path, warmup: bool, follow: int = 20) -> dict:
    """Latency of the first REST request after the server is ready, against the median of the next ``follow``
    (one fresh server; ``warmup`` on or off). Each signature's first call is timed separately."""
    flags = [] if warmup else ["--no-enable-model-warmup"]
    srv = st.ServerProcess(["--model-base-path", str(model_dir), *flags],
                           log_path=workdir / f"first-request-{'warm' if warmup else 'cold'}.log")
    out = {}
    try:
        for signature, doc in ((SERVING_DEFAULT, {"instances": np.zeros((1, 100), np.float32).tolist()}),
                               (GENERATE_PNG, {"signature_name": GENERATE_PNG, "instances": [7]})):
            body = json.dumps(doc).encode()
            times = []
            for _ in range(1 + follow):
                t0 = time.perf_counter()
                status, _ = st.http_post(f"{srv.url}/v1/models/nebula:predict", body)
                times.append(time.perf_counter() - t0)
                if status != 200:
                    raise RuntimeError(f"{signature}: HTTP {status}")
            out[signature] = {"first_ms": 1000 * times[0], "steady_ms": 1000 * float(np.median(times[1:]))}
    finally:
        srv.stop()
    return out


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
    ap.add_argument("--apis", default="rest,grpc", help="which APIs to drive: rest, grpc or both")
    ap.add_argument("--server-args", default="", help="extra nebula serve flags, e.g. '--max-batch-size 64'")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--parse-only", action="store_true", help="only the JSON parse-cost measurement")
    ap.add_argument("--first-request", action="store_true",
                    help="only first-request latency, with and without the export's warmup file replayed")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    pc = parse_cost()
    print(f"JSON parse, {pc['bodies']} :predict bodies of 32x100 float32 ({pc['body_bytes']} bytes): "
          f"{pc['fast_path_fraction'] * 100:.1f}% on the fast path; tf_json.parse / json.loads median "
          f"{pc['ratio_median']:.2f}x, p99 {pc['ratio_p99']:.2f}x, {pc['within_1_5x'] * 100:.1f}% within 1.5x "
          f"({pc['parse_ms']:.2f} vs {pc['json_loads_ms']:.2f} ms)", flush=True)
    if args.parse_only:
        return 0
    print(f"exporting DCGANGenerator(64) into {args.workdir} (cached) ...", flush=True)
    model_dir = st.make_export(args.workdir, image_size=64, latent_dim=100, ngf=64, versions=(1,))
    version_dir = model_dir / "1"

    if args.first_request:
        for rounds in range(2):  # warm, cold, warm, cold: machine load hits both alike
            for warm in (True, False):
                res = first_request_latency(model_dir, args.workdir, warm)
                print(f"warmup {'on ' if warm else 'off'}: " + "; ".join(
                    f"{sig} first {r['first_ms']:.1f} ms, then median {r['steady_ms']:.1f} ms "
                    f"({r['first_ms'] / r['steady_ms']:.1f}x)" for sig, r in res.items()), flush=True)
        return 0

    offline = offline_throughput(version_dir, args.seconds)
    print(f"offline ONNX Runtime (batch 32, this process): serving_default {offline[SERVING_DEFAULT]:.0f} img/s, "
          f"generate_png {offline[GENERATE_PNG]:.0f} img/s", flush=True)

    apis = [a.strip() for a in args.apis.split(",") if a.strip()]
    srv = st.ServerProcess(["--model-base-path", str(model_dir), *args.server_args.split()],
                           log_path=args.workdir / "server.log", grpc="grpc" in apis)
    rows = []
    try:
        # the APIs alternate cell by cell, so a change in machine load hits REST and gRPC alike
        for signature in (SERVING_DEFAULT, GENERATE_PNG):
            for per_request in [int(x) for x in args.sizes.split(",")]:
                for conc in [int(x) for x in args.concurrency.split(",")]:
                    for api in apis:
                        cpu0 = cpu_seconds(srv.pid)
                        if api == "grpc":
                            res = asyncio.run(drive_grpc(srv.grpc_target, conc, per_request, signature, 100,
                                                         args.seconds))
                        else:
                            res = asyncio.run(drive(srv.url, conc, per_request, signature, 100, args.seconds))
                        cpu1 = cpu_seconds(srv.pid)
                        images = max(1, res["requests"] * per_request)
                        res.update(api=api, signature=signature, concurrency=conc, per_request=per_request,
                                   ratio=res["images_per_s"] / offline[signature],
                                   cpu_ms=1000 * (cpu1[0] - cpu0[0]) / images,
                                   loop_cpu_ms=1000 * (cpu1[1] - cpu0[1]) / images)
                        rows.append(res)
                        print(f"{api:4s} {signature:16s} {per_request:3d} img/req  c={conc:<3d} "
                              f"{res['images_per_s']:8.1f} img/s  p50 {res['p50_ms']:7.1f} ms  "
                              f"p99 {res['p99_ms']:7.1f} ms  {res['ratio'] * 100:5.1f}% of offline  "
                              f"CPU {res['cpu_ms']:.2f} ms/img (loop {res['loop_cpu_ms']:.2f})"
                              f"{'  errors=' + str(res['errors']) if res['errors'] else ''}", flush=True)
        rss = srv.rss_kib()
    finally:
        srv.stop()

    print()
    print("| API | signature | images/request | clients | images/s | p50 ms | p99 ms | vs offline "
          "| server CPU ms/image | event loop ms/image |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['api']} | {r['signature']} | {r['per_request']} | {r['concurrency']} | {r['images_per_s']:.1f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['ratio'] * 100:.0f}% | {r['cpu_ms']:.2f} | "
              f"{r['loop_cpu_ms']:.2f} |")
    print(f"\noffline ONNX Runtime: serving_default {offline[SERVING_DEFAULT]:.1f} img/s, "
          f"generate_png {offline[GENERATE_PNG]:.1f} img/s; server RSS {rss / 1024:.0f} MiB; "
          f"cpus {os.cpu_count()}; total {time.perf_counter() - t_start:.0f} s")
    single = [r for r in rows if r["per_request"] == 1]
    top = max(x["concurrency"] for x in rows)
    loaded = [r for r in rows if r["concurrency"] == top and r["per_request"] > 1]
    print("aim: single-image p99 <= 100 ms -> worst " + (f"{max(r['p99_ms'] for r in single):.1f} ms" if single else "n/a")
          + "; under load >= 80% of offline -> " + ", ".join(f"{r['api']} {r['signature']} {r['ratio'] * 100:.0f}%" for r in loaded))
    print(f"aim: {top} concurrent single-image clients >= 80% of offline -> "
          + ", ".join(f"{r['api']} {r['signature']} {r['ratio'] * 100:.0f}%"
                      for r in single if r["concurrency"] == top))
    by = {(r["api"], r["signature"]): r for r in single if r["concurrency"] == top}
    if (("rest", SERVING_DEFAULT) in by) and (("grpc", SERVING_DEFAULT) in by):
        print(f"REST / gRPC, single-image {SERVING_DEFAULT} at {top} clients, same run: "
              f"{by['rest', SERVING_DEFAULT]['images_per_s'] / by['grpc', SERVING_DEFAULT]['images_per_s']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"offline": offline, "rows": rows, "parse": pc}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
