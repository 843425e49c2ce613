"""The export worker: one :class:`~nebula_keras3.export.api.ExportRequest` in a TensorFlow-backend process.

Protocol (JSON in, JSON out)::

    stdin : {"source": ..., "saved_model_base": ..., ...}            an ExportRequest
    stdout: {"ok": true,  "result": {...}}                            an ExportResult
            {"ok": false, "error": {"type": "ExportError",
                                    "module": "nebula_keras3.export.api",
                                    "message": "..."}}

While the export runs, anything TensorFlow, tf2onnx or Keras print to stdout goes to
stderr instead, so stdout holds the reply only. :func:`run` (the caller's side)
raises the worker's error again with the same type and message; this is the API
path, the ``nebula export`` command is not involved.
"""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys

from nebula_keras3.export.api import ExportError, ExportRequest, ExportResult

# Error types the caller raises again as themselves; anything else becomes an ExportError.
_REBUILDABLE_MODULES = ("builtins", "nebula_keras3.")


def run(request: ExportRequest) -> ExportResult:
    """Run ``request`` in a worker process under the TensorFlow backend; return its result."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(
        [sys.executable, "-m", __name__],
        input=json.dumps(request.to_json()), env=env, capture_output=True, text=True,
    )
    try:
        reply = json.loads(proc.stdout)
    except ValueError:
        tail = " | ".join(ln.strip() for ln in proc.stderr.strip().splitlines()[-3:]) or "no output"
        raise ExportError(f"the export worker (TensorFlow backend) died with exit code "
                          f"{proc.returncode} and no reply: {tail}") from None
    if reply.get("ok"):
        return ExportResult.from_json(reply["result"])
    raise rebuild_error(reply["error"])


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


def main() -> int:
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # library prints go to stderr; the reply alone goes to the saved stdout
    sys.stdout = sys.stderr
    try:
        from nebula_keras3.export.api import export_in_process

        request = ExportRequest.from_json(json.loads(sys.stdin.read()))
        reply = {"ok": True, "result": export_in_process(request).to_json()}
    except Exception as e:  # noqa: BLE001 - every failure goes back to the caller as data
        reply = {"ok": False, "error": describe_error(e)}
    with os.fdopen(reply_fd, "w") as out:
        json.dump(reply, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
