"""The export worker: a TensorFlow-backend process that runs export requests for its caller.

Protocol (one JSON line in, one JSON line out, per export)::

    stdin : {"source": ..., "saved_model_base": ..., ...}            an ExportRequest
    stdout: {"ok": true,  "result": {...}}                            an ExportResult
            {"ok": false, "error": {"type": "ExportError",
                                    "module": "nebula_keras3.export.api",
                                    "message": "..."}}

One worker serves every export of its caller's process, so TensorFlow and tf2onnx are
imported once, not once per export: a process that exports several runs pays their start
once. The worker exits when its caller closes its stdin (the caller's exit included) or
after ``IDLE_SECONDS`` without a request, which gives its memory back; the next export
starts a new one. A worker is only reused by the process that started it, with the
environment and working directory it was started with (relative paths in a request
mean the same to both sides); otherwise a new one starts.

While an export runs, anything TensorFlow, tf2onnx or Keras print to stdout goes to
stderr instead, so stdout holds the replies only. :func:`run` (the caller's side)
raises the worker's error again with the same type and message; this is the API
path, the ``nebula export`` command is not involved.
"""

from __future__ import annotations

import atexit
import builtins
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from nebula_keras3.export.api import ExportError, ExportRequest, ExportResult

# Error types the caller raises again as themselves; anything else becomes an ExportError.
_REBUILDABLE_MODULES = ("builtins", "nebula_keras3.")

# A worker with no request for this long exits; the caller starts a new one when needed.
IDLE_SECONDS = 120.0
# The exit status of a worker that exited idle (the caller then asks a new one).
_IDLE_EXIT = 75


class _Worker:
    """One worker process, as its caller sees it."""

    def __init__(self, key):
        self.key = key
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.stderr = tempfile.TemporaryFile()  # read back only when the worker dies
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, "--idle-seconds", str(IDLE_SECONDS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env, text=True,
        )
        self.last_reply = time.monotonic()

    def usable(self, key) -> bool:
        # A margin before the worker's own idle exit, so a request rarely meets a worker leaving.
        fresh = time.monotonic() - self.last_reply < IDLE_SECONDS - min(10.0, IDLE_SECONDS / 4)
        return self.key == key and self.proc.poll() is None and fresh

    def ask(self, request: ExportRequest) -> dict | None:
        """The worker's reply, or None when it ended without one."""
        self.stderr_from = self.stderr.seek(0, os.SEEK_END)  # this request's part of the log
        try:
            self.proc.stdin.write(json.dumps(request.to_json()) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            self.proc.wait()
            return None
        self.last_reply = time.monotonic()
        try:
            return json.loads(line)
        except ValueError:
            return {"ok": False, "error": describe_error(ExportError(f"the export worker replied {line[:200]!r}"))}

    def stderr_tail(self) -> str:
        self.stderr.seek(self.stderr_from)
        text = self.stderr.read().decode(errors="replace")
        return " | ".join(ln.strip() for ln in text.strip().splitlines()[-3:]) or "no output"

    def close(self, *, kill: bool = False) -> None:
        """End the worker (``kill``: at once, mid-export) and release its pipes and log."""
        if kill and self.proc.poll() is None:
            self.proc.kill()
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # the worker's signal to exit
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.stderr):
            try:
                stream.close()
            except OSError:
                pass


_lock = threading.Lock()
_worker: _Worker | None = None


# Variables whose changes mean nothing to an export (pytest names the running test in one).
_VOLATILE_ENV = frozenset({"PYTEST_CURRENT_TEST"})


def _key():
    """What a worker must share with its caller: the process, working directory and environment."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k not in _VOLATILE_ENV))
    return os.getpid(), os.getcwd(), env


def _drop_worker(*, kill: bool = False) -> None:
    """Forget the current worker; end it if this process started it (call with ``_lock`` held)."""
    global _worker
    if _worker is not None and _worker.key[0] == os.getpid():  # a forked child leaves its parent's alone
        _worker.close(kill=kill)
    _worker = None


def run(request: ExportRequest) -> ExportResult:
    """Run ``request`` in the worker process (TensorFlow backend); return its result."""
    global _worker
    with _lock:
        for attempt in range(2):
            key = _key()
            if _worker is not None and not _worker.usable(key):
                _drop_worker()
            if _worker is None:
                _worker = _Worker(key)
            try:
                reply = _worker.ask(request)
            except BaseException:  # interrupted mid-export: its reply must not answer the next request
                _drop_worker(kill=True)
                raise
            if reply is not None:
                break
            dead, _worker = _worker, None
            code = dead.proc.returncode
            if code == _IDLE_EXIT and attempt == 0:  # it left as the request arrived: ask a new one
                dead.close()
                continue
            tail = dead.stderr_tail()
            dead.close()
            raise ExportError(f"the export worker (TensorFlow backend) died with exit code "
                              f"{code} and no reply: {tail}")
    if reply.get("ok"):
        return ExportResult.from_json(reply["result"])
    raise rebuild_error(reply["error"])


def close() -> None:
    """End this process's worker now, if it has one (it also ends at exit and when idle)."""
    with _lock:
        _drop_worker()


atexit.register(close)


def describe_error(e: BaseException) -> dict:
    """An exception as JSON-able data: its type, defining module and message."""
    return {"type": type(e).__qualname__, "module": type(e).__module__, "message": str(e)}


def rebuild_error(err: dict) -> Exception:
    """The exception :func:`describe_error` described, as the same type when that is safe.

    Only builtins and this package's exception types are rebuilt, and only from modules
    already imported here (so rebuilding never imports TensorFlow into the caller).
    """
    module, name, message = err.get("module", ""), err.get("type", ""), err.get("message", "")
    cls = None
    if module == "builtins":
        cls = getattr(builtins, name, None)
    elif module.startswith(_REBUILDABLE_MODULES) and module in sys.modules:
        cls = getattr(sys.modules[module], name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:  # noqa: BLE001 - a constructor with other arguments
            pass
    return ExportError(f"{name}: {message}")


def _request_waiting(stream, seconds: float | None) -> bool:
    """Whether a request (or the end of input) arrives within ``seconds`` (None: wait for it)."""
    if seconds is None or os.name != "posix":
        return True
    import select

    return bool(select.select([stream], [], [], seconds)[0])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    idle = float(argv[argv.index("--idle-seconds") + 1]) if "--idle-seconds" in argv else None
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # library prints go to stderr; the replies alone go to the saved stdout
    sys.stdout = sys.stderr
    requests = sys.stdin
    with os.fdopen(reply_fd, "w") as out:
        while True:
            if not _request_waiting(requests, idle):
                return _IDLE_EXIT
            line = requests.readline()
            if not line:
                return 0  # the caller closed our stdin, or exited
            if not line.strip():
                continue
            try:
                from nebula_keras3.export.api import export_in_process

                request = ExportRequest.from_json(json.loads(line))
                reply = {"ok": True, "result": export_in_process(request).to_json()}
            except Exception as e:  # noqa: BLE001 - every failure goes back to the caller as data
                reply = {"ok": False, "error": describe_error(e)}
            out.write(json.dumps(reply) + "\n")
            out.flush()


if __name__ == "__main__":
    sys.exit(main())
