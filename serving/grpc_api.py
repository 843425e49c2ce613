"""TF Serving's gRPC API: ``tensorflow.serving.PredictionService`` and ``ModelService``.

Served by ``grpc.aio`` on the same event loop as the REST app, over the same
:class:`~predict.Predictor` (registry, limits, batch queues, metrics): this module
only translates protos to arrays and back. Protos are
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
* ``model_servers/model_service_impl.cc`` + ``server_core.cc`` ReloadConfig:
  HandleReloadConfigRequest applies a new ModelConfigList (an admin RPC: see
  :func:`start_grpc_server`).
* ``model_servers/server.cc`` BuildServerCredentials: TLS from an SSLConfig.
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
from nebula_keras3.serving import tensor_proto
from nebula_keras3.serving.config_files import ConfigError, SSLSettings
from nebula_keras3.serving.errors import ServingError, internal_error, invalid
from nebula_keras3.serving.predict import THREAD_THRESHOLD, Predictor
from nebula_keras3.serving.protos import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from nebula_keras3.serving.registry import Registry
from nebula_keras3.serving.signatures import DTYPE_STRING
from nebula_keras3.serving.tf_metrics import TFMetrics
from nebula_keras3.serving.types import ModelRequest

log = logging.getLogger("nebula.serving.grpc")

DEFAULT_SIGNATURE = layout.SERVING_DEFAULT
SIGNATURE_DEF_FIELD = "signature_def"  # GetModelMetadataImpl::kSignatureDef
_MESSAGE_LIMIT = 1024  # grpc_status_util.cc kErrorMessageLimit
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
    except Exception:  # noqa: BLE001 - never a traceback to the client
        e = internal_error(log, "a gRPC call")
        code, message = e.code, e.message
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
    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.registry = predictor.registry
        self.options = predictor.options
        self.tf_metrics: TFMetrics = predictor.metrics.tf

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

        def decode(sig):  # PreProcessPrediction's order: inputs, then output_filter, then Run's feed checks
            inputs = self._inputs(request, sig)
            aliases = self._output_aliases(request, sig)
            self._check_feeds(request, sig, inputs)
            return aliases, inputs

        result = await self.predictor.predict(req, sig_name, decode, size_hint=request.ByteSize())
        response = predict_pb2.PredictResponse()
        spec = response.model_spec  # MakeModelSpec
        spec.name, spec.signature_name = request.model_spec.name, sig_name
        spec.version.value = result.version
        chosen = {a: result.outputs[a] for a in result.extra}
        if sum(getattr(a, "nbytes", 0) for a in chosen.values()) > THREAD_THRESHOLD:
            await asyncio.to_thread(_write_outputs, response, chosen, result.signature)
        else:
            _write_outputs(response, chosen, result.signature)
        return response

    def _inputs(self, request, sig) -> dict[str, np.ndarray]:
        """PreProcessPrediction: VerifyRequestInputsSize, then GetInputValues (present, parsed)."""
        sent, wanted = set(request.inputs), set(sig.inputs)
        if len(sent) != len(wanted):  # the signatures served here have no defaults
            raise invalid(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")
        max_elements = self.options.max_body_bytes  # no request expands past one element per body byte
        inputs = {}
        for alias, spec in sig.inputs.items():
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
            inputs[alias] = arr
        return inputs

    @staticmethod
    def _check_feeds(request, sig, inputs: dict[str, np.ndarray]) -> None:
        """The feed checks of Session::Run (FunctionCallFrame::SetArgs), after the output_filter's."""
        for i, (alias, spec) in enumerate(sig.inputs.items()):
            got = tensor_proto.dtype_name(request.inputs[alias])
            if got != spec.dtype:
                raise invalid(f"Expects arg[{i}] to be {_dtype_string(spec.dtype)} but "
                              f"{_dtype_string(got)} is provided")
            spec.check_shape(alias, inputs[alias])

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
        await self.predictor.classify_or_regress(req, api, sig_name)

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
        """model_service_impl.cc: apply a ModelConfigList; the status goes in the response and the RPC's code."""
        response = model_management_pb2.ReloadConfigResponse()
        try:
            config = request.config
            if config.WhichOneof("config") != "model_config_list":
                raise invalid("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                              "Only ModelConfigList is currently supported")
            await self.registry.reload_config(config)
            code, message = "OK", ""
        except ServingError as e:
            code, message = e.code, e.message
            log.error("ReloadConfig failed: %s", message)
        except Exception:  # noqa: BLE001
            e = internal_error(log, "HandleReloadConfigRequest")
            code, message = e.code, e.message
        for name in request.metric_names:  # RecordMetricsIncrease: no TF counters to read here
            response.metric.add(name=name, int64_value_increase=0)
        response.status.error_code = _ERROR_CODE.values_by_name[code].number
        if code != "OK":
            response.status.error_message = message
            await context.abort(grpc.StatusCode[code], status_message(message))
        return response


def server_credentials(ssl: SSLSettings):
    """server.cc BuildServerCredentials: the SSLConfig's PEM key, certificate and CA as grpc credentials."""
    if ssl.client_verify and not ssl.custom_ca:
        # grpc's Python API needs the CA to verify clients with (TF's C++ API would use its default roots)
        raise ConfigError("SSLConfig: client_verify needs custom_ca (the CA that signed the client certificates)")
    try:
        return grpc.ssl_server_credentials(
            [(ssl.server_key.encode(), ssl.server_cert.encode())],
            root_certificates=ssl.custom_ca.encode() if ssl.custom_ca else None,
            require_client_auth=ssl.client_verify)
    except (ValueError, TypeError, RuntimeError) as e:
        raise ConfigError(f"SSLConfig: {e}") from None


async def start_grpc_server(predictor: Predictor, options: ServerOptions) -> grpc.aio.Server:
    """Serve both services on ``options.grpc_host:options.grpc_port`` on the running event loop.

    TLS when ``options.ssl`` is set (TF Serving's ``--ssl_config_file``), plaintext otherwise.
    ModelService.HandleReloadConfigRequest replaces the served models: like TF Serving, the
    port that answers Predict answers it too, so keep the gRPC port off untrusted networks
    (``--grpc-port 0``, a loopback ``--host``, or TLS with ``client_verify``).
    """
    server = grpc.aio.server(
        maximum_concurrent_rpcs=options.max_concurrent_requests,
        options=[
            ("grpc.max_receive_message_length", options.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(predictor), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(predictor.registry), server)
    host = options.grpc_host
    address = f"[{host}]:{options.grpc_port}" if ":" in host else f"{host}:{options.grpc_port}"
    try:
        if options.ssl is not None:
            server.add_secure_port(address, server_credentials(options.ssl))
        else:
            server.add_insecure_port(address)
    except RuntimeError:
        raise GrpcStartError(f"cannot listen for gRPC on {address} (port in use?)") from None
    await server.start()
    log.info("gRPC on %s%s", address, " (TLS)" if options.ssl is not None else "")
    return server
