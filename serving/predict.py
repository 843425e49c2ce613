"""The one Predict / Classify / Regress path, whichever wire format a request came in.

TF Serving turns a REST body into a ``PredictRequest`` and calls the same predictor
gRPC calls (``servables/tensorflow/predict_util.cc``, ``classifier.cc``,
``regressor.cc``). Here the REST (:mod:`rest_api` / :mod:`app`) and gRPC
(:mod:`grpc_api`) layers only translate their wire format; :class:`Predictor`
owns the rest, in this order:

1. lease the version the request names (it is not unloaded before the request ends);
2. look up the signature (its absence worded by the caller: REST and gRPC differ, as in TF);
3. decode the inputs against the signature (the caller's ``decode``; in a thread when large);
4. limits: at most ``max_instances`` rows, and the method-name check of
   ``--enable_signature_method_name_check``;
5. the version's batch queue (the only caller of :meth:`Batcher.submit`);
6. metrics: TF's ``runtime_latency`` around the model call, refusals, images produced.

Also :meth:`Predictor.warm_up`, which runs a loaded (not yet AVAILABLE) version
on recorded requests the same way, minus the lease.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from nebula_keras3.serving import signatures
from nebula_keras3.serving.batching import Batcher
from nebula_keras3.serving.errors import ServingError, invalid
from nebula_keras3.serving.options import ServerOptions
from nebula_keras3.serving.registry import Registry, VersionState
from nebula_keras3.serving.signatures import SignatureSpec
from nebula_keras3.serving.tf_metrics import runtime_name
from nebula_keras3.serving.types import ModelRequest

# request bodies / outputs of more bytes than this are parsed, decoded and encoded in a thread (off the
# event loop, where they would hold up every other request); smaller ones cost less than the hand-off
THREAD_THRESHOLD = 16 * 1024


def missing_signature_grpc(name: str) -> ServingError:
    """predict_util.cc PreProcessPrediction (what gRPC, and REST after its own check, answer)."""
    return ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')


def rows_of(inputs: dict[str, np.ndarray]) -> int:
    return int(next(iter(inputs.values())).shape[0]) if inputs else 0


@dataclass
class Prediction:
    model: str
    version: int
    signature_name: str
    signature: SignatureSpec
    outputs: dict[str, np.ndarray]
    extra: object = None  # what ``decode`` returned beside the inputs (REST: the request format)


class Predictor:
    def __init__(self, registry: Registry, options: ServerOptions, metrics):
        self.registry = registry
        self.options = options
        self.metrics = metrics  # serving.metrics.Metrics (its .tf: TF Serving's families)

    def make_batcher(self, st: VersionState, executor) -> Batcher:
        """The batch queue of one loaded version (the registry makes one per version)."""
        hist, gauge = self.metrics.batch_size, self.metrics.queue_rows
        model, version = st.model, str(st.version)

        def observe(signature, rows, queue_rows):
            hist.labels(model, version, signature).observe(rows)
            gauge.labels(model, version, signature).set(queue_rows)

        return Batcher(st.runner.run, executor, self.options.batching, observe=observe,
                       label=f"{st.model}:{st.version}", tf_metrics=self.metrics.tf)

    async def predict(self, req: ModelRequest, signature_name: str,
                      decode: Callable[[SignatureSpec], tuple[object, dict[str, np.ndarray]]], *,
                      size_hint: int = 0,
                      missing_signature: Callable[[str], ServingError] = missing_signature_grpc) -> Prediction:
        """Run one predict request.

        ``decode(signature) -> (extra, inputs)`` turns the wire request into arrays, checked
        against the signature (raises ServingError); it runs in a thread when ``size_hint``
        (the request's size in bytes) is large. ``missing_signature(name)`` words the error
        for a signature the version lacks.
        """
        async with self.registry.lease(req) as st:
            sig = st.runner.signatures.get(signature_name)
            if sig is None:
                raise missing_signature(signature_name)
            if size_hint > THREAD_THRESHOLD:
                extra, inputs = await asyncio.to_thread(decode, sig)
            else:
                extra, inputs = decode(sig)
            outputs = await self._run(st, signature_name, sig, inputs)
        return Prediction(st.model, st.version, signature_name, sig, outputs, extra)

    async def _run(self, st: VersionState, signature_name: str, sig: SignatureSpec,
                   inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = rows_of(inputs)
        if n > self.options.max_instances:
            self.metrics.rejected.labels("instances").inc()
            raise invalid(f"Request has {n} instances; at most {self.options.max_instances} are allowed per request")
        if self.options.enable_signature_method_name_check:  # predict_util.cc PreProcessPrediction
            signatures.check_predict_method_name(sig)
        t_run = time.perf_counter()
        try:
            outputs = await st.batcher.submit(signature_name, inputs)
        except ServingError as e:
            if e.code == "UNAVAILABLE":
                self.metrics.rejected.labels("queue_full").inc()
            raise
        # predict_util.cc RunPredict: RecordRuntimeLatency(model, "Predict", runtime) around
        # Session::Run (batching wait included, as with TF's batching session)
        self.metrics.tf.observe("/tensorflow/serving/runtime_latency", (time.perf_counter() - t_run) * 1e6,
                                st.model, "Predict", runtime_name(st.runner.kind))
        self.metrics.images.labels(st.model).inc(n)
        return outputs

    async def classify_or_regress(self, req: ModelRequest, api: str, signature_name: str) -> None:
        """classifier.cc / regressor.cc signature checks (always an error: no tf.Example signatures)."""
        async with self.registry.lease(req) as st:
            signatures.check_classify_regress_signature(api, signature_name, st.runner.signatures,
                                                        st.runner.signature_def_json,
                                                        self.options.enable_signature_method_name_check)

    async def warm_up(self, st: VersionState, records, iterations: int) -> int:
        """Replay recorded ``(signature_name, inputs)`` on a loaded version before it is AVAILABLE.

        saved_model_warmup_util.cc RunSavedModelWarmup: each record runs ``iterations`` times;
        the first failure fails the load. Returns the number of requests replayed (records times
        iterations; a record larger than a batch goes in several model calls but counts once).
        """
        calls = 0
        step = self.options.batching.max_batch_size  # batching is always on here: larger records go in slices
        for signature_name, inputs in records:
            if signature_name not in st.runner.signatures:
                raise missing_signature_grpc(signature_name)
            n = rows_of(inputs)
            for _ in range(iterations):
                for start in range(0, max(n, 1), step):
                    await st.batcher.submit(signature_name, {k: v[start:start + step] for k, v in inputs.items()}
                                            if n > step else inputs)
                calls += 1
        return calls
