"""The server as a whole: models, the predict path, the REST app and the gRPC server, started and stopped.

:class:`Server` wires the parts together (:class:`~registry.Registry` ->
:class:`~predict.Predictor` -> :class:`~app.RestApp` and :mod:`grpc_api`) and owns
start-up and shutdown: the first model poll (loading and warming up versions),
the gRPC server, then on shutdown the gRPC server, the versions (their batch
queues drained) and the model threads. ``nebula serve`` runs :meth:`Server.asgi_app`
under uvicorn, whose lifespan calls :meth:`start` / :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from starlette.applications import Starlette

from nebula_keras3.serving.app import RestApp
from nebula_keras3.serving.metrics import Metrics
from nebula_keras3.serving.options import ServerOptions
from nebula_keras3.serving.predict import Predictor
from nebula_keras3.serving.registry import Registry, VersionState
from nebula_keras3.serving.runtimes import load_runner

log = logging.getLogger("nebula.serving")


class Server:
    def __init__(self, options: ServerOptions):
        self.options = options
        self.metrics = Metrics()
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, options.batching.num_batch_threads), thread_name_prefix="nebula-run"
        )
        self.registry = Registry(
            options.models,
            make_runner=lambda path: load_runner(
                path, intra_op_threads=options.intra_op_threads, prefer_onnx=options.prefer_onnx
            ),
            make_batcher=lambda st: self.predictor.make_batcher(st, self.executor),
            config_file=options.config_file,
            poll_seconds=options.poll_seconds,
            metrics=self.metrics,
            unload_timeout=options.drain_seconds,
            warm_up=self._warm_up if options.enable_model_warmup else None,
        )
        self.predictor = Predictor(self.registry, options, self.metrics)
        self.rest = RestApp(self.predictor)
        self.grpc_server = None

    def asgi_app(self, extra_routes=()) -> Starlette:
        """The REST app, its routes after ``extra_routes``; its lifespan starts and stops this server."""
        app = Starlette(routes=[*extra_routes, *self.rest.routes()], lifespan=self._lifespan)
        app.state.serving = self
        return app

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> None:
        """Load the models, then open the gRPC port; what was started is stopped again when a step fails."""
        grpc_api = None
        if self.options.grpc_port:  # imported before any version loads: its protos must not race a TF import
            from nebula_keras3.serving import grpc_api
        try:
            await self.registry.start()
            log.info("models: %s", self.registry.summary())
            if grpc_api is not None:
                self.grpc_server = await grpc_api.start_grpc_server(self.predictor, self.options)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self.grpc_server is not None:  # stop taking RPCs, finish those in flight
            await self.grpc_server.stop(self.options.drain_seconds)
        # uvicorn has finished in-flight requests (or hit its graceful timeout); drain the rest
        await self.registry.stop()
        self.executor.shutdown(wait=True, cancel_futures=False)

    async def _warm_up(self, st: VersionState) -> None:
        """Replay the version's ``assets.extra/tf_serving_warmup_requests`` before it is AVAILABLE."""
        from nebula_keras3.export import warmup

        records = await asyncio.to_thread(warmup.read_predict_requests, st.path)
        if records is None:
            log.info("model %s version %d: no warmup file", st.model, st.version)
            return
        t0 = time.perf_counter()
        calls = await self.predictor.warm_up(st, records, self.options.num_request_iterations_for_warmup)
        log.info("model %s version %d: warmup ran %d request(s) in %.3fs", st.model, st.version, calls,
                 time.perf_counter() - t0)


def create_app(options: ServerOptions, extra_routes=()) -> Starlette:
    return Server(options).asgi_app(extra_routes)
