"""Serving errors: a TF Serving status code and message, whichever layer raises them.

The runtime, batching and registry layers raise :class:`ServingError`; the HTTP
layer (``app``) answers it as ``{"error": message}`` with TF Serving's HTTP status
for the code (``http_server.cc`` ToHTTPStatusCode).
"""

from __future__ import annotations

import uuid

# tensorflow::error::Code -> HTTP status (http_server.cc ToHTTPStatusCode)
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
    "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """An error answered as ``{"error": message}`` with TF Serving's HTTP status for ``code``."""

    def __init__(self, code: str, message: str, *, http_status: int | None = None, headers=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS.get(code, 500)
        self.headers = dict(headers or {})


def invalid(msg: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", msg)


def internal_error(log, what: str) -> ServingError:
    """INTERNAL with a generic message and a request id; the exception being handled goes to ``log`` only.

    Call from an ``except`` block: the traceback (paths, types, values) is logged under the same id,
    so an operator can find it from the id a client reports.
    """
    request_id = uuid.uuid4().hex[:16]
    log.exception("internal error (request id %s) in %s", request_id, what)
    return ServingError("INTERNAL", f"Internal error; request id {request_id}", headers={"X-Request-Id": request_id})
