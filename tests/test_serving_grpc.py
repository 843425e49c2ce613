"""TF Serving's gRPC API on ``nebula serve --grpc-port``, called through ``tensorflow-serving-api``'s own stubs.

The server serves a fresh tiny export (versions 1 and 2, labels stable=1, canary=2,
as ``serving/models.config``). Expected answers and status codes mirror
tensorflow/serving (each test names the file); images are checked against
offline ONNX Runtime on the same version folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("onnxruntime")
pytest.importorskip("uvicorn")
pytest.importorskip("tensorflow_serving")

from google.protobuf import json_format  # noqa: E402

from nebula_keras3.export import layout  # noqa: E402
from nebula_keras3.serving import config_files as cf  # noqa: E402
from nebula_keras3.serving import protos  # noqa: E402,F401 - loads the API modules without TensorFlow
from nebula_keras3.serving import tensor_proto as tp  # noqa: E402
from support import serving as st  # noqa: E402

# the official modules (already loaded by `protos`, so importing them here runs no TensorFlow)
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

pytestmark = pytest.mark.backend_independent

MODEL = layout.DEFAULT_MODEL_NAME
MAX_INSTANCES = 64
MAX_BODY = 256 * 1024
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


def write_config(path, model_dir):
    """serving/models.config with base_path pointed at ``model_dir``."""
    from google.protobuf import text_format

    msg = cf.parse_text(cf.packaged_file("models.config").read_text(), cf.ModelServerConfig)
    msg.model_config_list.config[0].base_path = str(model_dir)
    path.write_text(text_format.MessageToString(msg))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return st.session_export(tmp_path_factory)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grpc")
    srv = st.ServerProcess(
        ["--model-config-file", str(write_config(tmp / "models.config", model_dir)),
         "--max-instances", str(MAX_INSTANCES), "--max-body-bytes", str(MAX_BODY)],
        log_path=tmp / "server.log", wait_versions=2, grpc=True,
    )
    yield srv
    assert srv.stop() == 0, srv.log_tail()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def predictions(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


@pytest.fixture(scope="module")
def offline(model_dir):
    return {v: st.offline_model(model_dir / str(v)) for v in (1, 2)}


def predict_request(signature="", version=None, label=None, name=MODEL, **inputs):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if signature:
        req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    for alias, arr in inputs.items():
        tp.from_numpy(arr, req.inputs[alias])
    return req


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call(request, timeout=30)
    return e.value


def pngs_to_images(proto) -> np.ndarray:
    from nebula_keras3.serving.client import decode_pngs

    return decode_pngs(list(proto.string_val))


# --------------------------------------------------------------------------- Predict


@pytest.mark.parametrize("selector,version", [({}, 2), ({"version": 1}, 1), ({"label": "stable"}, 1),
                                              ({"label": "canary"}, 2)])
def test_predict_generate_png_by_version_and_label(predictions, offline, selector, version):
    """servables/tensorflow/predict_util.cc RunPredict + server_core.cc ServableRequestFromModelSpec:
    the label resolves to its version; the reply's model_spec names model, signature and version."""
    seeds = np.array([0, 5, 2**40], dtype=np.int64)
    reply = predictions.Predict(predict_request(layout.GENERATE_PNG, seed=seeds, **selector), timeout=60)
    assert (reply.model_spec.name, reply.model_spec.signature_name, reply.model_spec.version.value) == (
        MODEL, layout.GENERATE_PNG, version)
    out = reply.outputs[layout.PNG_BYTES]
    assert tp.dtype_name(out) == "DT_STRING" and [d.size for d in out.tensor_shape.dim] == [3]
    assert st.max_diff(pngs_to_images(out), offline[version].images_from_seeds(seeds)) == 0


@pytest.mark.parametrize("encode", [tp.from_numpy, tp.from_numpy_content], ids=["float_val", "tensor_content"])
def test_predict_serving_default(predictions, offline, encode):
    """predict_util.cc: empty signature_name is serving_default; outputs as AsProtoField (uint8 -> int_val)."""
    z = np.random.default_rng(1).standard_normal((4, offline[2].latent_dim)).astype(np.float32)
    req = predict_request()
    encode(z, req.inputs[layout.Z])
    reply = predictions.Predict(req, timeout=60)
    assert reply.model_spec.signature_name == layout.SERVING_DEFAULT and reply.model_spec.version.value == 2
    images = reply.outputs[layout.IMAGES]
    assert tp.dtype_name(images) == "DT_UINT8" and len(images.int_val) == images_size(offline[2], 4)
    assert not images.tensor_content
    assert st.max_diff(tp.to_numpy(images), offline[2].images_from_latents(z)) <= 1


def images_size(model, n):
    return n * model.image_size * model.image_size * 3


def test_predict_generate_images_with_output_filter(predictions, offline):
    """predict_util.cc PreProcessPrediction: output_filter picks outputs; unknown / duplicate aliases fail."""
    seeds = np.arange(3, dtype=np.int64)
    req = predict_request(layout.GENERATE_IMAGES, version=1, seed=seeds)
    req.output_filter.append(layout.IMAGES)
    reply = predictions.Predict(req, timeout=60)
    assert list(reply.outputs) == [layout.IMAGES]
    assert st.max_diff(tp.to_numpy(reply.outputs[layout.IMAGES]), offline[1].images_from_seeds(seeds)) <= 1
    req.output_filter.append(layout.IMAGES)
    e = rpc_error(predictions.Predict, req)
    assert e.code() == INVALID and e.details() == f"duplicate output tensor alias: {layout.IMAGES}"
    del req.output_filter[:]
    req.output_filter.append("nope")
    e = rpc_error(predictions.Predict, req)
    assert e.code() == INVALID and e.details() == (
        f"output tensor alias not found in signature: nope Outputs expected to be in the set {{{layout.IMAGES}}}.")


def test_predict_same_answer_as_rest(predictions, server):
    """One registry and runner behind both APIs: the same seeds give the same PNG bytes over REST and gRPC."""
    import base64

    seeds = [7, 8]
    status, body = _post(f"{server.url}/v1/models/{MODEL}/labels/stable:predict",
                         {"signature_name": layout.GENERATE_PNG, "instances": seeds})
    assert status == 200, body
    rest = [base64.b64decode(p["b64"]) for p in json.loads(body)["predictions"]]
    reply = predictions.Predict(predict_request(layout.GENERATE_PNG, label="stable",
                                                seed=np.array(seeds, np.int64)), timeout=60)
    assert list(reply.outputs[layout.PNG_BYTES].string_val) == rest


def _post(url, doc):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(doc).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# --------------------------------------------------------------------------- errors


def _z(n=2, d=16):
    return np.zeros((n, d), np.float32)


def _bad_content():
    req = predict_request()
    req.inputs[layout.Z].dtype = 1
    req.inputs[layout.Z].tensor_shape.dim.add(size=2)
    req.inputs[layout.Z].tensor_shape.dim.add(size=16)
    req.inputs[layout.Z].tensor_content = b"\0" * 7
    return req


def _filtered(req, alias="nope"):
    req.output_filter.append(alias)
    return req


PREDICT_ERRORS = [
    # prediction_service_impl.cc -> predict_impl.cc TensorflowPredictor::Predict
    ("no model_spec", lambda: predict_pb2.PredictRequest(), INVALID, "Missing ModelSpec"),
    # server_core.cc ServableRequestFromModelSpec / GetModelVersionForLabel; servable manager NOT_FOUND
    ("no name", lambda: predict_request(name="", z=_z()), INVALID, "ModelSpec has no name specified."),
    ("unknown model", lambda: predict_request(name="nope", z=_z()), NOT_FOUND,
     "Servable not found for request: Latest(nope)"),
    ("unknown version", lambda: predict_request(version=9, z=_z()), NOT_FOUND,
     f"Servable not found for request: Specific({MODEL}, 9)"),
    ("unknown label", lambda: predict_request(label="nope", z=_z()), INVALID,
     "Unrecognized servable version label: nope"),
    # predict_util.cc RunPredict
    ("unknown signature", lambda: predict_request("nope", z=_z()), grpc.StatusCode.FAILED_PRECONDITION,
     'Serving signature key "nope" not found.'),
    # predict_util.cc VerifyRequestInputsSize
    ("extra input", lambda: predict_request(z=_z(), q=_z()), INVALID,
     "input size does not match signature: 2!=1 len({q,z}) != len({z}). Sent extra: {q}. Missing but required: {}."),
    ("no inputs", lambda: predict_request(), INVALID,
     "input size does not match signature: 0!=1 len({}) != len({z}). Sent extra: {}. Missing but required: {z}."),
    # tensorflow/cc/saved_model/util.cc GetInputValues
    ("wrong input name", lambda: predict_request(q=_z()), INVALID,
     "Signature input alias: z(feed name: serving_default_z:0) not found in request and no default value "
     "provided. Inputs expected to be in the request {q}, or default input alias set: "),
    ("tensor_content size", _bad_content, INVALID, "tensor parsing error: z"),
    # Session::Run feed checks (FunctionCallFrame::SetArgs)
    ("wrong dtype", lambda: predict_request(layout.GENERATE_PNG, seed=np.zeros(2, np.float32)), INVALID,
     "Expects arg[0] to be int64 but float is provided"),
    ("wrong shape", lambda: predict_request(z=_z(2, 5)), INVALID,
     "input tensor alias z: expected shape [-1,16] but got [2,5]"),
    # predict_util.cc PreProcessPrediction: the inputs are checked before the output_filter, and the
    # output_filter before Session::Run's feed checks
    ("extra input and unknown output", lambda: _filtered(predict_request(z=_z(), q=_z())), INVALID,
     "input size does not match signature: 2!=1 len({q,z}) != len({z}). Sent extra: {q}. Missing but required: {}."),
    ("wrong dtype and unknown output", lambda: _filtered(predict_request(z=np.zeros((2, 16), np.float64))), INVALID,
     f"output tensor alias not found in signature: nope Outputs expected to be in the set {{{layout.IMAGES}}}."),
    # nebula serve's own limit (--max-instances), the same on REST
    ("too many rows", lambda: predict_request(layout.GENERATE_PNG, seed=np.arange(MAX_INSTANCES + 1)), INVALID,
     f"Request has {MAX_INSTANCES + 1} instances; at most {MAX_INSTANCES} are allowed per request"),
]


@pytest.mark.parametrize("make,code,message", [c[1:] for c in PREDICT_ERRORS], ids=[c[0] for c in PREDICT_ERRORS])
def test_predict_errors(predictions, make, code, message):
    """Bad Predict requests get TF Serving's status code and, where TF's code fixes it, its message."""
    e = rpc_error(predictions.Predict, make())
    assert (e.code(), e.details()) == (code, message)


def test_predict_overlarge_message_is_resource_exhausted(predictions):
    """A request over --max-body-bytes is refused (RESOURCE_EXHAUSTED), like REST's body cap."""
    e = rpc_error(predictions.Predict, predict_request(z=np.zeros((MAX_BODY // 32, 16), np.float32)))
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def classify_request(kind="classify", name=MODEL, signature=""):
    req = (classification_pb2.ClassificationRequest() if kind == "classify"
           else regression_pb2.RegressionRequest())
    if name is not None:
        req.model_spec.name = name
        if signature:
            req.model_spec.signature_name = signature
    req.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    return req


def test_classify_and_regress_answer_as_tf(predictions, server):
    """classification_service.cc / regression_service.cc ("Missing ModelSpec", then the servable),
    then classifier.cc / regressor.cc's signature checks: the same answer as REST's :classify / :regress
    (one function behind both), here "No classification inputs found" for the predict-only signatures."""
    for kind, call in (("classify", predictions.Classify), ("regress", predictions.Regress)):
        noun = "classification" if kind == "classify" else "regression"
        e = rpc_error(call, classify_request(kind))
        status, body = _post(f"{server.url}/v1/models/{MODEL}:{kind}", {"examples": [{"x": 1.0}]})
        assert status == 400
        assert e.code() == INVALID and e.details() == json.loads(body)["error"]
        assert e.details().startswith(f'No {noun} inputs found in SignatureDef: inputs {{\n  key: "{layout.Z}"\n')
        e = rpc_error(call, classify_request(kind, signature="nope"))
        assert (e.code(), e.details()) == (INVALID, "No signature was found with the name: nope")
        e = rpc_error(call, classify_request(kind, name=None))
        assert (e.code(), e.details()) == (INVALID, "Missing ModelSpec")
        e = rpc_error(call, classify_request(kind, name="no_such_model"))
        assert e.code() == NOT_FOUND and e.details().startswith("Servable not found for request")


def test_unimplemented_methods(predictions, models):
    """MultiInference answers UNIMPLEMENTED; a reload without a model_config_list INVALID_ARGUMENT
    (model_service_impl.cc)."""
    e = rpc_error(predictions.MultiInference, inference_pb2.MultiInferenceRequest())
    assert e.code() == grpc.StatusCode.UNIMPLEMENTED
    e = rpc_error(models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest())
    assert e.code() == INVALID and e.details() == (
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is "
        "currently supported")


def reload_request(*models):
    """ReloadConfigRequest of ``(name, base_path, extra ModelConfig fields)``."""
    req = model_management_pb2.ReloadConfigRequest()
    req.config.model_config_list.SetInParent()
    for name, base, extra in models:
        c = req.config.model_config_list.config.add(name=name, base_path=str(base), model_platform="tensorflow")
        for k, v in extra.items():
            if k == "version_labels":
                c.version_labels.update(v)
            else:
                setattr(c, k, v)
    return req


def test_reload_config_adds_and_removes_a_model(model_dir, offline, tmp_path):
    """model_service_impl.cc HandleReloadConfigRequest + server_core.cc ReloadConfig: a second model is
    added (and answers Predict once the call returns), labels must name AVAILABLE versions, TF's
    validation errors, and the model is removed again."""
    second = tmp_path / "second"
    st.copy_version(model_dir / "1", second, 1)
    srv = st.ServerProcess(["--model-base-path", str(model_dir)], log_path=tmp_path / "server.log", grpc=True)
    try:
        with grpc.insecure_channel(srv.grpc_target) as ch:
            stub = model_service_pb2_grpc.ModelServiceStub(ch)
            pred = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            nebula = (MODEL, model_dir, {})
            z = _z(2)
            assert rpc_error(pred.Predict, predict_request(name="second", z=z)).code() == NOT_FOUND

            reply = stub.HandleReloadConfigRequest(reload_request(nebula, ("second", second, {})), timeout=60)
            assert reply.status.error_code == 0 and not reply.status.error_message
            got = pred.Predict(predict_request(name="second", z=z), timeout=30)
            assert got.model_spec.name == "second" and got.model_spec.version.value == 1
            assert st.max_diff(tp.to_numpy(got.outputs["images"]), offline[1].images_from_latents(z)) <= 1
            status = stub.GetModelStatus(status_request("second"), timeout=30)
            assert [(v.version, v.state) for v in status.model_version_status] == [
                (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]

            # labels: only on AVAILABLE versions (UpdateModelVersionLabelMap); version 1 of nebula is not served
            e = rpc_error(stub.HandleReloadConfigRequest,
                          reload_request((MODEL, model_dir, {"version_labels": {"stable": 1}})))
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and e.details() == (
                "Request to assign label to version 1 of model nebula, which is not currently available for inference")
            stub.HandleReloadConfigRequest(
                reload_request((MODEL, model_dir, {"version_labels": {"stable": 2}}), ("second", second, {})),
                timeout=60)
            assert pred.Predict(predict_request(label="stable", z=z), timeout=30).model_spec.version.value == 2

            # ValidateModelConfigList / GetPlatform
            for models, message in (
                    ((nebula, nebula), "Illegal to list model nebula multiple times in config list"),
                    (((MODEL, "relative/path", {}),),
                     "Expected model nebula to have an absolute path or URI; got base_path()=relative/path"),
                    (((MODEL, model_dir, {"model_platform": ""}),),
                     "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                     "ModelServerConfig::model_platform, model name is nebula")):
                e = rpc_error(stub.HandleReloadConfigRequest, reload_request(*models))
                assert e.code() == INVALID and e.details() == message

            # a model left out of the new list is unloaded; requests for it are NOT_FOUND at once
            stub.HandleReloadConfigRequest(reload_request(nebula), timeout=60)
            e = rpc_error(pred.Predict, predict_request(name="second", z=z))
            assert e.code() == NOT_FOUND
            assert pred.Predict(predict_request(z=z), timeout=30).model_spec.version.value == 2
    finally:
        assert srv.stop() == 0, srv.log_tail()


def test_grpc_calls_count_in_tf_metric_families(predictions, server):
    """prediction_service_impl.cc: request_count{model_name,status} for every Predict / Classify /
    Regress, request_latency{model_name,API,entrypoint="GRPC"} for the OK ones; predict_util.cc
    RunPredict: runtime_latency{API="Predict"}."""
    ok = f':tensorflow:serving:request_count{{model_name="{MODEL}",status="OK"}}'
    bad = f':tensorflow:serving:request_count{{model_name="{MODEL}",status="INVALID_ARGUMENT"}}'
    latency = f':tensorflow:serving:request_latency_count{{model_name="{MODEL}",API="Predict",entrypoint="GRPC"}}'
    runtime = f':tensorflow:serving:runtime_latency_count{{model_name="{MODEL}",API="Predict",runtime="ONNX"}}'
    unknown = ':tensorflow:serving:request_count{model_name="_unknown",status="NOT_FOUND"}'
    before = {k: server.metric(k) for k in (ok, bad, latency, runtime, unknown)}
    for _ in range(2):
        predictions.Predict(predict_request(layout.GENERATE_PNG, seed=np.array([1], np.int64)), timeout=60)
    rpc_error(predictions.Predict, predict_request(z=_z(d=3)))
    rpc_error(predictions.Classify, classify_request())
    rpc_error(predictions.Predict, predict_request(name="zzz_random_name", z=_z()))
    after = {k: server.metric(k) for k in before}
    assert {k: after[k] - before[k] for k in before} == {ok: 2, bad: 2, latency: 2, runtime: 2, unknown: 1}


# --------------------------------------------------------------------------- metadata and status


def metadata_request(name=MODEL, fields=("signature_def",), **selector):
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = name
    if "version" in selector:
        req.model_spec.version.value = selector["version"]
    if "label" in selector:
        req.model_spec.version_label = selector["label"]
    req.metadata_field.extend(fields)
    return req


@pytest.mark.parametrize("selector,version", [({}, 2), ({"label": "stable"}, 1)])
def test_get_model_metadata(predictions, server, selector, version):
    """get_model_metadata_impl.cc: model_spec (name, version) and a SignatureDefMap packed in an Any under
    "signature_def", the same signatures the REST metadata reports."""
    reply = predictions.GetModelMetadata(metadata_request(**selector), timeout=30)
    assert (reply.model_spec.name, reply.model_spec.version.value, reply.model_spec.signature_name) == (
        MODEL, version, "")
    assert list(reply.metadata) == ["signature_def"]
    sdm = get_model_metadata_pb2.SignatureDefMap()
    assert reply.metadata["signature_def"].Unpack(sdm)
    png = sdm.signature_def[layout.GENERATE_PNG]
    assert png.method_name == layout.PREDICT_METHOD
    assert png.inputs[layout.SEED].dtype == 9 and [d.size for d in png.inputs[layout.SEED].tensor_shape.dim] == [-1]
    assert png.outputs[layout.PNG_BYTES].dtype == 7
    status, body = st.http_get(f"{server.url}/v1/models/{MODEL}/versions/{version}/metadata")
    assert status == 200
    rest = json.loads(body)["metadata"]["signature_def"]
    assert json_format.MessageToDict(sdm, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True) == rest


@pytest.mark.parametrize("req,code,message", [
    (lambda: get_model_metadata_pb2.GetModelMetadataRequest(), INVALID, "Missing ModelSpec"),
    (lambda: metadata_request(fields=()), INVALID, "GetModelMetadataRequest must specify at least one metadata_field"),
    (lambda: metadata_request(fields=("signature_def", "x")), INVALID, "Metadata field x is not supported"),
    (lambda: metadata_request(name="nope"), NOT_FOUND, "Servable not found for request: Latest(nope)"),
    (lambda: metadata_request(version=5), NOT_FOUND, f"Servable not found for request: Specific({MODEL}, 5)"),
    (lambda: metadata_request(label="x"), INVALID, "Unrecognized servable version label: x"),
], ids=["no spec", "no field", "bad field", "unknown model", "unknown version", "unknown label"])
def test_get_model_metadata_errors(predictions, req, code, message):
    """get_model_metadata_impl.cc ValidateGetModelMetadataRequest, then the servable lookup."""
    e = rpc_error(predictions.GetModelMetadata, req())
    assert (e.code(), e.details()) == (code, message)


def status_request(name=MODEL, version=None, label=None):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = name
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    return req


def test_get_model_status(models):
    """get_model_status_impl.cc: every version newest first (a label is ignored), or the one asked for;
    status OK with no message."""
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    for req in (status_request(), status_request(label="stable")):
        reply = models.GetModelStatus(req, timeout=30)
        assert [(s.version, s.state) for s in reply.model_version_status] == [(2, available), (1, available)]
        assert all(s.status.error_code == 0 and s.status.error_message == "" for s in reply.model_version_status)
    reply = models.GetModelStatus(status_request(version=1), timeout=30)
    assert [(s.version, s.state) for s in reply.model_version_status] == [(1, available)]


@pytest.mark.parametrize("req,code,message", [
    (lambda: get_model_status_pb2.GetModelStatusRequest(), INVALID, "Missing ModelSpec"),
    (lambda: status_request(version=7), NOT_FOUND, f"Could not find version 7 of model {MODEL}"),
    (lambda: status_request(name="nope"), NOT_FOUND, "Could not find any versions of model nope"),
], ids=["no spec", "unknown version", "unknown model"])
def test_get_model_status_errors(models, req, code, message):
    """get_model_status_impl.cc GetModelStatus / GetModelStatusWithModelSpec."""
    e = rpc_error(models.GetModelStatus, req())
    assert (e.code(), e.details()) == (code, message)


# --------------------------------------------------------------------------- client, no TensorFlow


def test_client_grpc_writes_grid(server, offline, tmp_path):
    """``nebula client --grpc`` renders seeds through generate_png over gRPC into the same grid as offline."""
    from click.testing import CliRunner
    from PIL import Image

    from nebula_keras3.sampling.grid import make_grid
    from nebula_keras3.serving.cli import client_command

    out = tmp_path / "grid.png"
    res = CliRunner().invoke(client_command, ["--grpc", "--url", server.grpc_target, "-n", "4", "--seed", "3",
                                              "--label", "stable", "-o", str(out)])
    assert res.exit_code == 0, res.output
    want = make_grid(offline[1].images_from_seeds(np.arange(3, 7)), ncols=None)
    assert st.max_diff(np.asarray(Image.open(out).convert("RGB")), want) == 0
    bad = CliRunner().invoke(client_command, ["--grpc", "--url", server.grpc_target, "--model", "nope",
                                              "-o", str(tmp_path / "x.png")])
    assert bad.exit_code == 1 and "NOT_FOUND" in bad.output and "Latest(nope)" in bad.output
    assert not (tmp_path / "x.png").exists()


_NO_TF_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    import numpy as np
    from nebula_keras3.serving.cli import serve_command
    model_dir, port, grpc_port = sys.argv[1], sys.argv[2], sys.argv[3]
    result = {}

    def client():
        import grpc
        from nebula_keras3.serving import tensor_proto as tp
        from nebula_keras3.serving.protos import predict_pb2, prediction_service_pb2_grpc, get_model_metadata_pb2
        with grpc.insecure_channel("127.0.0.1:" + grpc_port) as ch:
            grpc.channel_ready_future(ch).result(timeout=60)
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            for _ in range(600):
                try:
                    req = predict_pb2.PredictRequest()
                    req.model_spec.name = "nebula"
                    req.model_spec.signature_name = "generate_png"
                    tp.from_numpy(np.arange(2), req.inputs["seed"])
                    result["pngs"] = len(stub.Predict(req, timeout=30).outputs["png_bytes"].string_val)
                    break
                except grpc.RpcError:
                    time.sleep(0.1)  # versions still loading
            md = get_model_metadata_pb2.GetModelMetadataRequest()
            md.model_spec.name = "nebula"
            md.metadata_field.append("signature_def")
            stub.GetModelMetadata(md, timeout=30)
        result["tensorflow_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=client, daemon=True).start()
    try:
        serve_command.main(["--model-base-path", model_dir, "--port", port, "--grpc-port", grpc_port,
                            "--log-level", "warning"], standalone_mode=False)
    finally:
        print("RESULT " + json.dumps(result), flush=True)
    """
)


def test_server_never_imports_tensorflow(model_dir):
    """Serving gRPC Predict and GetModelMetadata (ONNX versions) leaves every ``tensorflow`` module out of the
    server process: the API protos are loaded without running tensorflow/__init__.py (serving/protos.py)."""
    port = st.free_port()
    grpc_port = port
    while grpc_port == port:
        grpc_port = st.free_port()
    proc = subprocess.run([sys.executable, "-c", _NO_TF_SCRIPT, str(model_dir), str(port), str(grpc_port)],
                          capture_output=True, text=True, timeout=180)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, proc.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    assert result.get("pngs") == 2, proc.stderr[-3000:]
    assert result["tensorflow_modules"] == []


def test_concurrency_limit_is_resource_exhausted(model_dir, tmp_path):
    """More than --max-concurrent-requests RPCs at once: the extra ones are refused at once with
    RESOURCE_EXHAUSTED (the REST side answers 429); the admitted ones are answered."""
    from concurrent.futures import ThreadPoolExecutor

    srv = st.ServerProcess(["--model-base-path", str(model_dir), "--max-concurrent-requests", "2",
                            "--max-batch-size", "64", "--batch-timeout-micros", "2500000"],
                           log_path=tmp_path / "server.log", grpc=True)
    try:
        with grpc.insecure_channel(srv.grpc_target) as ch:
            grpc.channel_ready_future(ch).result(timeout=30)
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)

            def call(i):  # each waits ~2.5 s in the batch queue
                try:
                    stub.Predict(predict_request(layout.GENERATE_PNG, seed=np.array([i])), timeout=60)
                    return "OK"
                except grpc.RpcError as e:
                    return e.code().name

            with ThreadPoolExecutor(6) as ex:
                codes = list(ex.map(call, range(6)))
    finally:
        assert srv.stop() == 0, srv.log_tail()
    assert sorted(codes) == ["OK"] * 2 + ["RESOURCE_EXHAUSTED"] * 4, codes


def test_sigterm_finishes_rpcs_in_flight(model_dir, tmp_path):
    """SIGTERM: the gRPC server stops with the REST one and lets Predict calls in flight finish (exit 0)."""
    import threading

    # 200-row requests: TF's batching refuses tasks over max_batch_size
    srv = st.ServerProcess(["--model-base-path", str(model_dir), "--max-batch-size", "200"],
                           log_path=tmp_path / "server.log", grpc=True)
    results: dict[int, object] = {}
    try:
        with grpc.insecure_channel(srv.grpc_target) as ch:
            grpc.channel_ready_future(ch).result(timeout=30)  # connected: the calls go out at once
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)

            def call(i):
                req = predict_request(layout.GENERATE_PNG, seed=np.arange(i * 200, (i + 1) * 200))
                try:
                    results[i] = len(stub.Predict(req, timeout=120).outputs[layout.PNG_BYTES].string_val)
                except grpc.RpcError as e:
                    results[i] = e.code()

            threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
            for t in threads:
                t.start()
            srv.wait_requests_in_batcher(3)  # all three calls are in the server (200 PNGs each take a while)
            srv.terminate()
            for t in threads:
                t.join(120)
    finally:
        code = srv.stop()
    assert results == {0: 200, 1: 200, 2: 200}
    assert code == 0, srv.log_tail()


# --------------------------------------------------------------------------- TensorProto codec (no server)


def test_tensor_proto_reading_follows_tensorflow():
    """tensorflow/core/framework/tensor.cc FromProto: short typed fields repeat their last value, an empty
    one gives zeros, extra values are ignored; tensor_content must hold exactly the bytes; string content
    is TF's varint-length list; unknown rank and negative dims are refused."""
    def proto(dtype, shape, **fields):
        p = protos.TensorProto(dtype=dtype)
        for d in shape:
            p.tensor_shape.dim.add(size=d)
        for k, v in fields.items():
            if k == "tensor_content":
                p.tensor_content = v
            else:
                getattr(p, k).extend(v)
        return p

    assert tp.to_numpy(proto(1, [2, 2], float_val=[1, 2])).tolist() == [[1, 2], [2, 2]]
    assert tp.to_numpy(proto(9, [3])).tolist() == [0, 0, 0]
    assert tp.to_numpy(proto(9, [2], int64_val=[5, 6, 7])).tolist() == [5, 6]
    assert tp.to_numpy(proto(4, [2], int_val=[255, 256])).tolist() == [255, 0]  # int_val cast to uint8
    assert tp.to_numpy(proto(7, [3], string_val=[b"a"])).tolist() == [b"a", b"a", b"a"]
    assert tp.to_numpy(proto(7, [2], tensor_content=b"\x01\x02a\xff\xfe")).tolist() == [b"a", b"\xff\xfe"]
    assert tp.to_numpy(proto(1, [], float_val=[3])).shape == ()
    for bad in (proto(1, [2], tensor_content=b"\0" * 7), proto(1, [-1], float_val=[1]),
                proto(7, [2], tensor_content=b"\x05a"), proto(0, [1]), proto(1, [10**6], float_val=[1])):
        with pytest.raises(tp.TensorProtoError):
            tp.to_numpy(bad, max_elements=1000)
    unknown = proto(1, [], float_val=[1])
    unknown.tensor_shape.unknown_rank = True
    with pytest.raises(tp.TensorProtoError):
        tp.to_numpy(unknown)


@pytest.mark.parametrize("arr", [
    np.arange(6, dtype=np.float32).reshape(2, 3), np.array([-(2**63), 2**63 - 1], np.int64),
    np.arange(24, dtype=np.uint8).reshape(1, 2, 4, 3), np.array([b"\x89PNG\0", b""], dtype=object),
    np.array([True, False]), np.array([1.5, -2.25], np.float16), np.array(2.5, np.float64),
], ids=lambda a: str(a.dtype))
def test_tensor_proto_round_trip(arr):
    """AsProtoField (typed field) and AsProtoTensorContent both read back to the same array and dtype."""
    for write in (tp.from_numpy, tp.from_numpy_content):
        back = tp.to_numpy(write(arr))
        assert back.dtype == arr.dtype and back.shape == arr.shape and back.tolist() == arr.tolist()


# --------------------------------------------------------------------------- TLS


def make_certificates(folder):
    """A CA, a server certificate (localhost, 127.0.0.1) and a client certificate it signed, as PEM files."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")

    def run(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=nebula test CA")
    for name, ext in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        (folder / f"{name}.ext").write_text(ext + "\n")
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=nebula test {name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {n: folder / n for n in ("ca.pem", "server.key", "server.pem", "client.key", "client.pem")}


def write_ssl_config(path, files, client_verify: bool):
    """TF Serving's SSLConfig text proto: the PEM texts themselves (ssl_config.proto)."""
    text = (f"server_key: {json.dumps(files['server.key'].read_text())}\n"
            f"server_cert: {json.dumps(files['server.pem'].read_text())}\n"
            f"custom_ca: {json.dumps(files['ca.pem'].read_text())}\n"
            f"client_verify: {'true' if client_verify else 'false'}\n")
    path.write_text(text)
    return path


def client_cli(srv, out, *tls_args):
    return subprocess.run(
        [sys.executable, "-m", "nebula_keras3", "client", "--grpc", "--url", srv.grpc_target, "-n", "2",
         "--timeout", "20", "-o", str(out), *tls_args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("client_verify", [False, True])
def test_grpc_over_tls(model_dir, tmp_path, client_verify):
    """server.cc BuildServerCredentials: --ssl_config_file serves gRPC over TLS; a client trusting the CA
    is answered, one without it is not; with client_verify a client must present a certificate."""
    files = make_certificates(tmp_path)
    cfg = write_ssl_config(tmp_path / "ssl.config", files, client_verify)
    srv = st.ServerProcess(["--model-base-path", str(model_dir), "--ssl-config-file", str(cfg)],
                           log_path=tmp_path / "server.log", grpc=True)
    try:
        ca = ["--ssl-ca-file", str(files["ca.pem"])]
        cert = ["--ssl-cert-file", str(files["client.pem"]), "--ssl-key-file", str(files["client.key"])]
        ok = client_cli(srv, tmp_path / "ok.png", *ca, *cert) if client_verify else client_cli(srv, tmp_path / "ok.png", *ca)
        assert ok.returncode == 0, ok.stderr
        assert (tmp_path / "ok.png").is_file()
        plain = client_cli(srv, tmp_path / "plain.png")  # plaintext to a TLS port
        assert plain.returncode == 1 and "cannot reach gRPC server" in plain.stderr, plain.stderr
        no_ca = client_cli(srv, tmp_path / "no_ca.png", "--ssl-ca-file", str(files["client.pem"]))  # wrong root
        assert no_ca.returncode == 1 and "cannot reach gRPC server" in no_ca.stderr, no_ca.stderr
        no_cert = client_cli(srv, tmp_path / "no_cert.png", *ca)
        if client_verify:  # the handshake fails without a client certificate
            assert no_cert.returncode == 1 and "gRPC" in no_cert.stderr, no_cert.stderr
        else:
            assert no_cert.returncode == 0, no_cert.stderr
    finally:
        assert srv.stop() == 0, srv.log_tail()


def test_ssl_config_errors(tmp_path):
    """A bad SSLConfig stops `nebula serve` before it loads anything, with the reason."""
    from click.testing import CliRunner

    from nebula_keras3.serving.cli import serve_command

    bad = tmp_path / "bad.config"
    for text, message in (("server_key: '/etc/key.pem' server_cert: '/etc/cert.pem'", "must hold PEM text"),
                          ("server_cert: '-----BEGIN CERTIFICATE-----'", "needs server_key and server_cert"),
                          ("server_kee: 'x'", "invalid SSLConfig text proto")):
        bad.write_text(text)
        r = CliRunner().invoke(serve_command, ["--model-base-path", str(tmp_path), "--ssl-config-file", str(bad)])
        assert r.exit_code == 1 and message in r.output, r.output
    bad.write_text("server_key: '-----BEGIN PRIVATE KEY-----' server_cert: '-----BEGIN CERTIFICATE-----'")
    r = CliRunner().invoke(serve_command, ["--model-base-path", str(tmp_path), "--grpc-port", "0",
                                           "--ssl-config-file", str(bad)])
    assert r.exit_code == 1 and "secures gRPC; it needs a --grpc-port" in r.output, r.output
