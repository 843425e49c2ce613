"""A small client for TF Serving's REST API v1 and its gRPC API (works with ``nebula serve`` and real TF Serving).

REST: standard library only (urllib). gRPC: grpcio and ``tensorflow-serving-api``'s stubs
(loaded without TensorFlow, see :mod:`protos`). Pillow and numpy decode PNGs and tile a grid.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nebula_keras3.export import layout


class ClientError(RuntimeError):
    """One-line reason a call failed (connection, HTTP status with the server's error, bad reply)."""


def model_url(base_url: str, model: str, version: int | None = None, label: str | None = None) -> str:
    if version is not None and label is not None:
        raise ClientError("give a version or a label, not both")
    url = base_url.rstrip("/") + "/v1/models/" + urllib.parse.quote(model, safe="")
    if version is not None:
        url += f"/versions/{int(version)}"
    elif label is not None:
        url += "/labels/" + urllib.parse.quote(label, safe="")
    return url


def _call(url: str, payload: dict | None = None, timeout: float = 60.0) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except (ValueError, AttributeError):
            pass
        detail = " ".join(str(detail).split())[:500]
        raise ClientError(f"HTTP {e.code} from {url}: {detail}") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ConnectionRefusedError) or getattr(reason, "errno", None) == errno.ECONNREFUSED:
            raise ClientError(f"cannot connect to {url}: connection refused (is the server running?)") from None
        if isinstance(reason, socket.gaierror):
            raise ClientError(f"cannot resolve host in {url}: {reason.strerror or reason}") from None
        raise ClientError(f"cannot reach {url}: {reason}") from None
    except (TimeoutError, socket.timeout):
        raise ClientError(f"no answer from {url} within {timeout:g}s") from None
    except ConnectionError as e:
        raise ClientError(f"connection to {url} failed: {e.strerror or e}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise ClientError(f"{url} did not answer with JSON") from None


def model_status(base_url: str, model: str, **kw) -> dict:
    return _call(model_url(base_url, model, kw.get("version"), kw.get("label")))


def generate_png(base_url: str, model: str, seeds, *, version=None, label=None, chunk: int = 64,
                 timeout: float = 60.0) -> list[bytes]:
    """PNG bytes for each seed, via the export's PNG signature (row format)."""
    url = model_url(base_url, model, version, label) + ":predict"
    seeds = [int(s) for s in seeds]
    pngs: list[bytes] = []
    for i in range(0, len(seeds), chunk):
        part = seeds[i:i + chunk]
        reply = _call(url, {"signature_name": layout.GENERATE_PNG, "instances": part}, timeout)
        preds = reply.get("predictions") if isinstance(reply, dict) else None
        if not isinstance(preds, list) or len(preds) != len(part):
            raise ClientError(f"{url}: expected {len(part)} predictions, got {str(reply)[:200]}")
        for p in preds:
            if isinstance(p, dict) and layout.PNG_BYTES in p:  # a server answering with named outputs
                p = p[layout.PNG_BYTES]
            if not isinstance(p, dict) or not isinstance(p.get("b64"), str):
                raise ClientError(f"{url}: prediction is not a {{'b64': ...}} PNG: {str(p)[:100]}")
            pngs.append(base64.b64decode(p["b64"]))
    return pngs


def decode_pngs(pngs: list[bytes]) -> np.ndarray:
    from PIL import Image

    try:
        return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in pngs])
    except Exception as e:  # noqa: BLE001 - Pillow raises many types
        raise ClientError(f"server sent an undecodable PNG: {e}") from None


# --------------------------------------------------------------------------- gRPC


def grpc_target(url: str) -> str:
    """``host:port`` of a gRPC server given as ``host:port`` or ``grpc://`` / ``http://host:port``."""
    parts = urllib.parse.urlsplit(url if "://" in url else "grpc://" + url)
    if not parts.hostname or parts.port is None:
        raise ClientError(f"give the gRPC server as host:port, got {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS channel: the CA to trust, and a client certificate and key (for client_verify)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    target_name: str | None = None  # the name in the server's certificate, when not the host dialled

    def credentials(self):
        import grpc

        def read(p):
            if p is None:
                return None
            try:
                return Path(p).read_bytes()
            except OSError as e:
                raise ClientError(f"cannot read {p}: {e.strerror or e}") from None

        return grpc.ssl_channel_credentials(root_certificates=read(self.ca), private_key=read(self.key),
                                            certificate_chain=read(self.cert))


def grpc_channel(target: str, tls: TlsFiles | None = None):
    """A channel to ``host:port``: plaintext, or TLS with ``tls``."""
    import grpc

    options = [("grpc.max_receive_message_length", -1)]
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    if tls.target_name:
        options.append(("grpc.ssl_target_name_override", tls.target_name))
    return grpc.secure_channel(target, tls.credentials(), options=options)


def generate_png_grpc(target: str, model: str, seeds, *, version=None, label=None, chunk: int = 64,
                      timeout: float = 60.0, tls: TlsFiles | None = None) -> list[bytes]:
    """PNG bytes for each seed via gRPC Predict on the export's PNG signature (TF Serving's stubs)."""
    import grpc

    from nebula_keras3.serving import tensor_proto
    from nebula_keras3.serving.protos import predict_pb2, prediction_service_pb2_grpc

    if version is not None and label is not None:
        raise ClientError("give a version or a label, not both")
    target = grpc_target(target)
    seeds = np.asarray([int(s) for s in seeds], dtype=np.int64)
    pngs: list[bytes] = []
    with grpc_channel(target, tls) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for i in range(0, len(seeds), chunk):
            part = seeds[i:i + chunk]
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model
            request.model_spec.signature_name = layout.GENERATE_PNG
            if version is not None:
                request.model_spec.version.value = int(version)
            elif label is not None:
                request.model_spec.version_label = label
            tensor_proto.from_numpy(part, request.inputs[layout.SEED])
            try:
                reply = stub.Predict(request, timeout=timeout)
            except grpc.RpcError as e:
                raise _grpc_error(target, e) from None
            if layout.PNG_BYTES not in reply.outputs:
                raise ClientError(f"{target}: the reply has no {layout.PNG_BYTES!r} output "
                                  f"(got {sorted(reply.outputs)})")
            out = tensor_proto.to_numpy(reply.outputs[layout.PNG_BYTES])
            if out.shape != (len(part),):
                raise ClientError(f"{target}: expected {len(part)} PNGs, got shape {list(out.shape)}")
            pngs.extend(bytes(b) for b in out)
    return pngs


def _grpc_error(target: str, e) -> ClientError:
    import grpc

    code, details = e.code(), " ".join(str(e.details() or "").split())[:500]
    if code == grpc.StatusCode.UNAVAILABLE:
        return ClientError(f"cannot reach gRPC server {target}: {details} (is the server running?)")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ClientError(f"no answer from gRPC server {target} in time")
    return ClientError(f"gRPC {code.name} from {target}: {details}")
