"""TF Serving's REST API v1 as a Starlette app: HTTP in, :class:`~predict.Predictor` calls, HTTP out.

    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature defs
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    row or columnar
    POST ...:classify | :regress                                 (TF's checks; no tf.Example signatures)
    OPTIONS /v1/...                                              CORS preflight
    *    /monitoring/prometheus/metrics                          Prometheus text

Answers are TF Serving 2.21's wherever its code fixes them (status code, JSON,
message wording): see tests/test_serving_conformance.py for the cases and the
TF source each mirrors. Methods other than GET/POST/OPTIONS on /v1 get
"Malformed request: METHOD path" (400), as in TF Serving.

This module only translates the wire format (JSON <-> arrays, ServingError ->
HTTP status); the predict path itself is :mod:`predict`, and start-up (models,
gRPC) is :mod:`server`'s. Routes: :meth:`RestApp.routes` is the table; a
caller adds its own before the catch-all ``/{path}`` (see :func:`server.create_app`).

Protection against overload: at most ``max_concurrent_requests`` requests are
handled at once (more get 429 at once, before the body is read), bodies are
capped (413), instances per request are capped (400), and the batch queue is
bounded (503). Large JSON is decoded and encoded in threads.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from nebula_keras3.serving import rest_api
from nebula_keras3.serving.errors import HTTP_STATUS, ServingError, internal_error, invalid
from nebula_keras3.serving.predict import THREAD_THRESHOLD, Predictor

log = logging.getLogger("nebula.serving")

JSON = "application/json"
ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


def missing_signature_rest(name: str) -> ServingError:
    """http_rest_api_handler.cc: the input map of an unknown signature (before the predictor's check)."""
    return invalid(f'Serving signature name: "{name}" not found in signature def')


class RestApp:
    """The REST endpoints over one :class:`Predictor` (its registry, options and metrics)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.registry = predictor.registry
        self.options = predictor.options
        self.metrics = predictor.metrics
        self.inflight = 0
        self.buffered = 0  # bytes of request bodies held right now

    def routes(self) -> list:
        """The route table: every path goes to :meth:`dispatch` (TF Serving's own URL matching)."""
        routes = [Route("/{path:path}", self.dispatch, methods=ALL_METHODS)]
        if self.options.ui:  # the gallery page at /ui/ (nebula serve --ui), in front of the API's catch-all
            from nebula_keras3.serving import ui

            routes[:0] = ui.routes(self)
        return routes

    # ------------------------------------------------------------------ dispatch

    async def dispatch(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        raw_path = raw.decode("latin-1").split("?", 1)[0]
        method = request.method
        if self.options.prometheus_enabled and raw_path == self.options.prometheus_path:
            # http_server.cc ProcessPrometheusRequest: the handler answers any method
            self.metrics.requests.labels("", "metrics", "200").inc()
            return Response(self.metrics.render(), media_type=self.metrics.content_type)
        if not rest_api.V1_PATH_RE.fullmatch(raw_path):
            return self._error(ServingError("NOT_FOUND", f"No handler for {method} {raw_path}"))
        if method == "OPTIONS":
            return self._preflight(request)
        if self.inflight >= self.options.max_concurrent_requests:
            self.metrics.rejected.labels("concurrency").inc()
            return self._error(ServingError(
                "RESOURCE_EXHAUSTED",
                f"Too many concurrent requests (limit {self.options.max_concurrent_requests}); retry later",
                headers={"Retry-After": "1"}))
        self.inflight += 1
        self.metrics.inflight.inc()
        t0 = time.perf_counter()
        api, model, tf_model, code = "unknown", "_unknown", "", "OK"
        held = [0]
        try:
            req = rest_api.parse_path(method, raw_path)
            model = req.model if self.registry.known_model(req.model) else "_unknown"
            tf_model = model
            if method == "GET":
                api = "metadata" if req.subresource == "metadata" else "status"
                resp = self._metadata(req) if api == "metadata" else self._status(req)
            else:
                api = req.method
                body = await self._read_body(request, held)
                resp = await (self._predict(req, body) if api == "predict" else self._classify(req, body, api))
        except ServingError as e:
            code = e.code
            resp = self._error(e)
        except ClientDisconnect:
            code = "CANCELLED"
            resp = Response(status_code=499)
        except Exception:  # noqa: BLE001 - never a traceback to the client
            code = "INTERNAL"
            resp = self._error(internal_error(log, f"REST {method} {raw_path}"))
        finally:
            self.inflight -= 1
            self.buffered -= held[0]
            self.metrics.inflight.dec()
        elapsed = time.perf_counter() - t0
        self.metrics.requests.labels(model, api, str(resp.status_code)).inc()
        self.metrics.latency.labels(model, api).observe(elapsed)
        # http_server.cc ProcessRequest: request_count for every request, latency of the successful
        # ones with API = the URL's method ("" for status and metadata) and entrypoint REST
        self.metrics.tf.inc("/tensorflow/serving/request_count", tf_model, code)
        if code == "OK":
            self.metrics.tf.observe("/tensorflow/serving/request_latency", elapsed * 1e6, tf_model,
                                    api if api in ("predict", "classify", "regress") else "", "REST")
        if self.options.rest_api_enable_cors_support:
            resp.headers.update(rest_api.CORS_HEADERS)
        return resp

    def _preflight(self, request: Request) -> Response:
        """http_server.cc: OPTIONS is a CORS preflight; OK with an http(s) Origin, else FAILED_PRECONDITION."""
        ok = re.search(r"https?://", request.headers.get("origin", "")) is not None
        self.metrics.tf.inc("/tensorflow/serving/request_count", "", "OK" if ok else "FAILED_PRECONDITION")
        resp = Response(b"", status_code=200 if ok else HTTP_STATUS["FAILED_PRECONDITION"])
        if self.options.rest_api_enable_cors_support:
            resp.headers.update(rest_api.CORS_HEADERS)
        return resp

    @staticmethod
    def _error(e: ServingError) -> Response:
        return Response(rest_api.error_body(e.message), status_code=e.http_status, media_type=JSON,
                        headers=e.headers)

    @staticmethod
    def _json(obj) -> Response:
        import json

        return Response(json.dumps(obj, indent=1).encode(), media_type=JSON)

    async def _read_body(self, request: Request, held: list) -> bytes:
        limit = self.options.max_body_bytes
        cl = request.headers.get("content-length")
        if cl is not None:
            try:
                if int(cl) > limit:
                    raise self._too_large(int(cl))
            except ValueError:
                raise invalid("Invalid Content-Length header") from None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise self._too_large(size)
            held[0] += len(chunk)
            self.buffered += len(chunk)
            if self.buffered > self.options.max_buffered_body_bytes:
                self.metrics.rejected.labels("memory").inc()
                raise ServingError("RESOURCE_EXHAUSTED", "Too much request data in flight; retry later",
                                   headers={"Retry-After": "1"})
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, size: int) -> ServingError:
        self.metrics.rejected.labels("body_size").inc()
        return ServingError(
            "RESOURCE_EXHAUSTED",
            f"Request body of {size} bytes exceeds the limit of {self.options.max_body_bytes} bytes",
            http_status=413,
        )

    # ------------------------------------------------------------------ handlers

    def _status(self, req) -> Response:
        return self._json(rest_api.model_status_json(self.registry.status(req)))

    def _metadata(self, req) -> Response:
        st = self.registry.resolve(req)
        return self._json(rest_api.model_metadata_json(st.model, st.version, st.runner.signature_def_json))

    @staticmethod
    async def _parse(body: bytes) -> dict:
        if len(body) > THREAD_THRESHOLD:
            return await asyncio.to_thread(rest_api.parse_json_object, body)
        return rest_api.parse_json_object(body)

    async def _predict(self, req, body: bytes) -> Response:
        doc = await self._parse(body)
        given = rest_api.signature_name_of(doc)
        result = await self.predictor.predict(
            req, given or rest_api.DEFAULT_SIGNATURE,
            lambda sig: rest_api.parse_predict_inputs(doc, sig, given),
            size_hint=len(body), missing_signature=missing_signature_rest)
        outputs, fmt = result.outputs, result.extra
        if sum(getattr(a, "nbytes", 0) for a in outputs.values()) > THREAD_THRESHOLD:
            payload = await asyncio.to_thread(rest_api.predict_response, outputs, fmt)
        else:
            payload = rest_api.predict_response(outputs, fmt)
        return Response(payload, media_type=JSON)

    async def _classify(self, req, body: bytes, api: str) -> Response:
        # http_rest_api_handler.cc ProcessClassifyRequest / ProcessRegressRequest: the whole request
        # JSON is checked first, then the model is looked up, then the signature (classifier.cc)
        doc = await self._parse(body)
        sig_name = rest_api.signature_name_of(doc) or rest_api.DEFAULT_SIGNATURE
        rest_api.check_classify_regress_request(doc)
        await self.predictor.classify_or_regress(req, api, sig_name)
