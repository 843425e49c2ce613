"""TF Serving's gRPC API: ``tensorflow.serving.PredictionService`` and ``ModelService``.

Served by ``grpc.aio`` on the same event loop as the REST app, over the same
registry (versions, labels, hot pickup), runners and batch queues. Protos are
``tensorflow-serving-api``'s (loaded by :mod:`protos` without TensorFlow);
tensors are read and written with numpy (:mod:`tensor_proto`).

Mirrors tensorflow/serving (messages where TF's code fixes them):

* ``model_servers/prediction_service_impl.cc``: Predict, GetModelMetadata, Classify,
  Regress (``classifier.cc`` / ``regressor.cc`` signature checks, shared with REST's
  :classify / :regress; the exported models have predict signatures only, so they
  always answer an error); MultiInference is UNIMPLEMENTED here. Predict, Classify
  and Regress count in TF's ``request_count`` (model, status) and, when OK,
  ``request_latency`` (API "Predict" / "Classify" / "Regress", entrypoint "GRPC").
* ``servables/tensorflow/predict_impl.cc``, ``predict_util.cc`` (RunPredict,
  PreProcessPrediction, PostProcessPredictionResult with AsProtoField) and
  TensorFlow's ``cc/saved_model/util.cc`` (GetInputValues).
* ``servables/tensorflow/get_model_metadata_impl.cc``: ``signature_def`` only,
  a SignatureDefMap packed in an Any.
* ``model_servers/get_model_status_impl.cc``: one version or all (a label is ignored).
* ``model_servers/model_service_impl.cc``: HandleReloadConfigRequest is
  UNIMPLEMENTED here (edit the ``--model-config-file``; it is re-read).
* ``model_servers/server_core.cc`` ServableRequestFromModelSpec: version / label / latest.
* ``model_servers/grpc_status_util.cc``: status code as is, message cut at 1024 chars.

Overload: more than ``max_concurrent_requests`` RPCs at once get RESOURCE_EXHAUSTED
(grpc's "Concurrent RPC limit exceeded!"), messages over ``max_body_bytes``
RESOURCE_EXHAUSTED, a full batch queue UNAVAILABLE (as TF's batching).
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import numpy as np
from google.protobuf import json_format

from nebula_keras3.export import layout
from nebula_keras3.serving import signatures, tensor_proto
from nebula_keras3.serving.errors import ServingError, invalid
from nebula_keras3.serving.options import ServerOptions
from nebula_keras3.serving.protos import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from nebula_keras3.serving.registry import Registry
from nebula_keras3.serving.signatures import DTYPE_STRING
from nebula_keras3.serving.tf_metrics import TFMetrics, runtime_name
from nebula_keras3.serving.types import ModelRequest

log = logging.getLogger("nebula.serving.grpc")

DEFAULT_SIGNATURE = layout.SERVING_DEFAULT
SIGNATURE_DEF_FIELD = "signature_def"  # GetModelMetadataImpl::kSignatureDef
_MESSAGE_LIMIT = 1024  # grpc_status_util.cc kErrorMessageLimit
_THREAD_THRESHOLD = 64 * 1024  # outputs above this many bytes are encoded in a thread
_VERSION_STATE = get_model_status_pb2.ModelVersionStatus.State
_ERROR_CODE = get_model_status_pb2.ModelVersionStatus.DESCRIPTOR.fields_by_name["status"].message_type.fields_by_name[
    "error_code"].enum_type


class GrpcStartError(RuntimeError):
    """The gRPC port could not be opened (message says which address)."""


def status_message(message: str) -> str:
    """ToGRPCStatus: messages over 1024 characters are cut and marked."""
    return message if len(message) <= _MESSAGE_LIMIT else message[:_MESSAGE_LIMIT] + "...TRUNCATED"


def model_request(request) -> ModelRequest:
    """The servable a request's ModelSpec names (ServerCore::ServableRequestFromModelSpec)."""
    if not request.HasField("model_spec"):
        raise invalid("Missing ModelSpec")
    spec = request.model_spec
    if not spec.name:
        raise invalid("ModelSpec has no name specified.")
    which = spec.WhichOneof("version_choice")
    if which == "version":
        return ModelRequest(spec.name, version=int(spec.version.value))
    if which == "version_label":
        return ModelRequest(spec.name, label=spec.version_label)
    return ModelRequest(spec.name)


def _dtype_string(dtype: str) -> str:
    return DTYPE_STRING.get(dtype, dtype.removeprefix("DT_").lower())


async def _answer(context, work, *, tf_metrics: TFMetrics | None = None, model: str = "", api: str = ""):
    """Run ``work()``; a ServingError becomes its gRPC status, anything else INTERNAL.

    With ``tf_metrics`` the call is counted as prediction_service_impl.cc does:
    request_count (model, status) always, request_latency (model, api, "GRPC") when OK.
    """
    t0 = time.perf_counter()
    try:
        response = await work()
    except ServingError as e:
        code, message = e.code, e.message
    except Exception as e:  # noqa: BLE001 - never a traceback to the client
        log.exception("internal error in a gRPC call")
        code, message = "INTERNAL", f"{type(e).__name__}: {e}"
    else:
        if tf_metrics is not None:
            tf_metrics.observe("/tensorflow/serving/request_latency", (time.perf_counter() - t0) * 1e6,
                               model, api, "GRPC")
            tf_metrics.inc("/tensorflow/serving/request_count", model, "OK")
        return response
    if tf_metrics is not None:
        tf_metrics.inc("/tensorflow/serving/request_count", model, code)
    await context.abort(grpc.StatusCode[code], status_message(message))


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, registry: Registry, options: ServerOptions, tf_metrics: TFMetrics | None = None):
        self.registry = registry
        self.options = options
        self.tf_metrics = tf_metrics

    def _counted(self, context, request, api: str, work):
        """``_answer`` counting the call in TF's metric families under the request's model name."""
        name = request.model_spec.name
        # only served names become label values (as REST's), so random names cannot grow the families
        model = name if self.registry.known_model(name) else "_unknown"
        return _answer(context, work, tf_metrics=self.tf_metrics, model=model, api=api)

    # ------------------------------------------------------------------ Predict

    async def Predict(self, request, context):  # noqa: N802 - gRPC method name
        return await self._counted(context, request, "Predict", lambda: self._predict(request))

    async def _predict(self, request):
        req = model_request(request)  # TensorflowPredictor::Predict
        sig_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        async with self.registry.lease(req) as st:
            sig = st.runner.signatures.get(sig_name)
            if sig is None:
                raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{sig_name}" not found.')
            inputs = self._inputs(request, sig)
            aliases = self._output_aliases(request, sig)
            n = int(next(iter(inputs.values())).shape[0]) if inputs else 0
            if n > self.options.max_instances:
                raise invalid(
                    f"Request has {n} instances; at most {self.options.max_instances} are allowed per request")
            t_run = time.perf_counter()
            outputs = await st.batcher.submit(sig_name, inputs)
            if self.tf_metrics is not None:  # predict_util.cc RunPredict: RecordRuntimeLatency
                self.tf_metrics.observe("/tensorflow/serving/runtime_latency", (time.perf_counter() - t_run) * 1e6,
                                        st.model, "Predict", runtime_name(st.runner.kind))
        response = predict_pb2.PredictResponse()
        spec = response.model_spec  # MakeModelSpec
        spec.name, spec.signature_name = request.model_spec.name, sig_name
        spec.version.value = st.version
        chosen = {a: outputs[a] for a in aliases}
        if sum(getattr(a, "nbytes", 0) for a in chosen.values()) > _THREAD_THRESHOLD:
            await asyncio.to_thread(_write_outputs, response, chosen, sig)
        else:
            _write_outputs(response, chosen, sig)
        return response

    def _inputs(self, request, sig) -> dict[str, np.ndarray]:
        """PreProcessPrediction: VerifyRequestInputsSize, GetInputValues, then the feed checks of Run."""
        sent, wanted = set(request.inputs), set(sig.inputs)
        if len(sent) != len(wanted):  # the signatures served here have no defaults
            raise invalid(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")
        max_elements = self.options.max_body_bytes  # no request expands past one element per body byte
        inputs = {}
        for i, (alias, spec) in enumerate(sig.inputs.items()):
            if alias not in request.inputs:
                raise invalid(
                    f"Signature input alias: {alias}(feed name: {spec.tensor_name}) not found in request and no "
                    f"default value provided. Inputs expected to be in the request {{{','.join(sorted(sent))}}}, "
                    "or default input alias set: ")
            proto = request.inputs[alias]
            try:
                arr = tensor_proto.to_numpy(proto, max_elements=max_elements)
            except tensor_proto.TensorProtoError as e:
                log.debug("input %s: %s", alias, e)
                raise invalid(f"tensor parsing error: {alias}") from None
            got = tensor_proto.dtype_name(proto)
            if got != spec.dtype:  # FunctionCallFrame::SetArgs
                raise invalid(f"Expects arg[{i}] to be {_dtype_string(spec.dtype)} but "
                              f"{_dtype_string(got)} is provided")
            if spec.shape is not None and (
                    arr.ndim != len(spec.shape) or any(d >= 0 and d != a for d, a in zip(spec.shape, arr.shape))):
                raise invalid(f"input tensor alias {alias}: expected shape {spec.shape_str()} "
                              f"but got [{','.join(map(str, arr.shape))}]")
            inputs[alias] = arr
        return inputs

    @staticmethod
    def _output_aliases(request, sig) -> list[str]:
        seen: list[str] = []
        for alias in request.output_filter:
            if alias not in sig.outputs:
                raise invalid(f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                              f"the set {{{','.join(sorted(sig.outputs))}}}.")
            if alias in seen:
                raise invalid(f"duplicate output tensor alias: {alias}")
            seen.append(alias)
        return seen or list(sig.outputs)

    # ------------------------------------------------------------------ metadata

    async def GetModelMetadata(self, request, context):  # noqa: N802
        return await _answer(context, lambda: self._metadata(request))

    async def _metadata(self, request):
        req = model_request(request)
        if not request.metadata_field:  # ValidateGetModelMetadataRequest
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise invalid(f"Metadata field {field} is not supported")
        st = self.registry.resolve(req)
        sdm = json_format.ParseDict(st.runner.signature_def_json, get_model_metadata_pb2.SignatureDefMap())
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = st.model
        response.model_spec.version.value = st.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(sdm)
        return response

    # ------------------------------------------------------------------ Classify / Regress

    async def Classify(self, request, context):  # noqa: N802
        return await self._counted(context, request, "Classify", lambda: self._classify(request, "classify"))

    async def Regress(self, request, context):  # noqa: N802
        return await self._counted(context, request, "Regress", lambda: self._classify(request, "regress"))

    async def _classify(self, request, api: str):
        """classification_service.cc / regression_service.cc, then RunClassify / RunRegress's signature checks."""
        req = model_request(request)  # "Missing ModelSpec" first, then the servable
        sig_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        async with self.registry.lease(req) as st:
            signatures.check_classify_regress_signature(api, sig_name, st.runner.signatures,
                                                        st.runner.signature_def_json,
                                                        self.options.enable_signature_method_name_check)

    # ------------------------------------------------------------------ not served here

    async def MultiInference(self, request, context):  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "MultiInference is not supported: the served models have predict signatures only")


def _write_outputs(response, outputs: dict[str, np.ndarray], sig) -> None:
    """PostProcessPredictionResult with kAsProtoField (TF Serving's default)."""
    for alias, arr in outputs.items():
        spec = sig.outputs.get(alias)
        tensor_proto.from_numpy(arr, response.outputs[alias], dtype=spec.dtype if spec else None)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: Registry):
        self.registry = registry

    async def GetModelStatus(self, request, context):  # noqa: N802
        return await _answer(context, lambda: self._status(request))

    async def _status(self, request):
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        spec = request.model_spec
        version = int(spec.version.value) if spec.HasField("version") else None  # a label is ignored
        rows = self.registry.status(ModelRequest(spec.name, version=version))
        response = get_model_status_pb2.GetModelStatusResponse()
        for v, state, code, message in sorted(rows, key=lambda r: -r[0]):  # VersionMap: newest first
            s = response.model_version_status.add(version=v, state=_VERSION_STATE.Value(state))
            s.status.error_code = _ERROR_CODE.values_by_name[code].number
            if code != "OK":
                s.status.error_message = message
        return response

    async def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "HandleReloadConfigRequest is not supported by nebula serve; edit the "
                            "--model-config-file instead (it is re-read when it changes)")


async def start_grpc_server(registry: Registry, options: ServerOptions,
                            tf_metrics: TFMetrics | None = None) -> grpc.aio.Server:
    """Serve both services on ``options.grpc_host:options.grpc_port`` on the running event loop.

    ``tf_metrics``: the REST app's TF Serving metric families, which count gRPC calls too.
    """
    server = grpc.aio.server(
        maximum_concurrent_rpcs=options.max_concurrent_requests,
        options=[
            ("grpc.max_receive_message_length", options.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(registry, options, tf_metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(registry), server)
    host = options.grpc_host
    address = f"[{host}]:{options.grpc_port}" if ":" in host else f"{host}:{options.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError:
        raise GrpcStartError(f"cannot listen for gRPC on {address} (port in use?)") from None
    await server.start()
    log.info("gRPC on %s", address)
    return server
