"""`make test`: the suite under every backend, as concurrent pytest processes ("shards").

    python tests/support/run_suite.py [--backends "torch tensorflow jax"] [--jobs N] [-- PYTEST_ARGS...]

Shards: the first backend's backend-independent tests (marker ``backend_independent``), then
each backend's other tests. They run at once (``--jobs``: at most that many at a time), each a
single pytest process writing its own log, so one shard's compile or import waits overlap
another's tests, and no pass waits for its slowest file before the next pass starts. Each
shard's line is printed as it ends; a failed shard's whole log follows. The exit status is 0
only when every shard passed.

Each process gets its share of the cores for torch's OpenMP pool (``OMP_NUM_THREADS``, unless
set): pools as wide as the machine in every process spin against each other.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BACKENDS = ("torch", "tensorflow", "jax")  # torch first: its eager step traces and compiles nothing
INDEPENDENT = "backend_independent"
HEARTBEAT_SECONDS = 120


def omp_threads(processes: int) -> str:
    """OMP_NUM_THREADS for one of ``processes`` concurrent test processes: its share of the cores."""
    return str(max(1, (os.cpu_count() or 1) // processes))


@dataclass
class Shard:
    backend: str
    marks: str  # a pytest -m expression
    label: str
    log: Path = Path()
    proc: subprocess.Popen | None = None
    status: int | None = None
    summary: str = ""

    def start(self, python: str, pytest_args: list[str], env: dict) -> None:
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", self.marks, *pytest_args],
                cwd=REPO, env={**env, "KERAS_BACKEND": self.backend}, stdout=out, stderr=subprocess.STDOUT)

    def poll(self) -> bool:
        """True once the process has ended (its status and summary line read)."""
        if self.proc is None or self.proc.poll() is None:
            return False
        self.status = self.proc.returncode
        lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        self.summary = next((line.strip("= ") for line in reversed(lines) if " in " in line and (
            "passed" in line or "failed" in line or "error" in line or "no tests ran" in line)), "no summary line")
        return True


def shards_for(backends: list[str]) -> list[Shard]:
    first, *_ = backends
    shards = [Shard(first, INDEPENDENT, f"{first} (backend-independent tests)")]
    shards += [Shard(b, f"not {INDEPENDENT}", b) for b in backends]
    return shards


def run(backends: list[str], jobs: int, pytest_args: list[str], log_dir: Path) -> int:
    shards = shards_for(backends)
    jobs = max(1, min(jobs, len(shards)))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", omp_threads(jobs))
    for i, shard in enumerate(shards):
        kind = "independent" if shard.marks == INDEPENDENT else "dependent"
        shard.log = log_dir / f"{i}-{shard.backend}-{kind}.log"
    print(f"make test: {len(shards)} pytest processes, {jobs} at a time "
          f"(OMP_NUM_THREADS={env['OMP_NUM_THREADS']}); logs in {log_dir}", flush=True)
    t0 = time.monotonic()
    waiting, running, done = list(shards), [], []
    next_beat = t0 + HEARTBEAT_SECONDS
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                shard = waiting.pop(0)
                shard.start(sys.executable, pytest_args, env)
                running.append(shard)
                print(f"  started  {shard.label}", flush=True)
            for shard in [s for s in running if s.poll()]:
                running.remove(shard)
                done.append(shard)
                word = "passed" if shard.status == 0 else f"FAILED (exit {shard.status})"
                print(f"[{_clock(time.monotonic() - t0)}] {word:<7} {shard.label}: {shard.summary}", flush=True)
            if running and time.monotonic() >= next_beat:
                print(f"[{_clock(time.monotonic() - t0)}] still running: {', '.join(s.label for s in running)}",
                      flush=True)
                next_beat += HEARTBEAT_SECONDS
            time.sleep(0.5)
    except KeyboardInterrupt:
        for shard in running:
            shard.proc.kill()
        raise
    failed = [s for s in done if s.status != 0]
    for shard in failed:
        print(f"\n===== {shard.label}: {shard.log} =====", flush=True)
        sys.stdout.write(shard.log.read_text(errors="replace"))
    print(f"\nmake test: {len(done) - len(failed)} of {len(done)} shards passed in {_clock(time.monotonic() - t0)}",
          flush=True)
    return 1 if failed else 0


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=" ".join(BACKENDS),
                        help="space-separated KERAS_BACKEND values; the first also runs the backend-independent tests")
    parser.add_argument("--jobs", type=int, default=0, help="shards at a time (default: all at once)")
    parser.add_argument("--log-dir", type=Path, help="where the shards' logs go (default: a new temp folder)")
    args = parser.parse_args(own)
    backends = args.backends.split()
    unknown = [b for b in backends if b not in BACKENDS]
    if not backends or unknown:
        parser.error(f"--backends takes some of {', '.join(BACKENDS)}; got {args.backends!r}")
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="nebula-test-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    jobs = args.jobs or len(backends) + 1
    return run(backends, jobs, pytest_args, log_dir)


if __name__ == "__main__":
    sys.exit(main())
