"""Unit tests of the REST API layer and the batcher (no server process)."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from nebula_keras3.serving import rest_api as ra
from nebula_keras3.serving import tf_json
from nebula_keras3.serving.batching import QUEUE_FULL, Batcher
from nebula_keras3.serving.config_files import VersionPolicy
from nebula_keras3.serving.options import BatchingOptions
from nebula_keras3.serving.errors import ServingError
from nebula_keras3.serving.signatures import SignatureSpec, TensorInfo, check_classify_regress_signature

pytestmark = pytest.mark.backend_independent

Z = SignatureSpec({"z": TensorInfo("DT_FLOAT", (-1, 4))}, {"images": TensorInfo("DT_UINT8", (-1, 2, 2, 3))})
SEED = SignatureSpec({"seed": TensorInfo("DT_INT64", (-1,))}, {"png_bytes": TensorInfo("DT_STRING", (-1,))})
TWO = SignatureSpec({"a": TensorInfo("DT_FLOAT", (-1, 2)), "b": TensorInfo("DT_STRING", (-1,))}, {})


@pytest.mark.parametrize("method,path,expect", [
    ("GET", "/v1/models/m", ("m", None, None, None, None)),
    ("GET", "/v1/models/m/versions/3", ("m", 3, None, None, None)),
    ("GET", "/v1/models/m/labels/stable/metadata", ("m", None, "stable", None, "metadata")),
    ("GET", "/V1/MODELS/m/METADATA", ("m", None, None, None, None)),  # a status request, as in TF Serving
    ("POST", "/v1/models/m:predict", ("m", None, None, "predict", None)),
    ("POST", "/v1/models/my%20m/labels/can%2Fary:predict", ("my m", None, "can/ary", "predict", None)),
    ("POST", "/v1/models/m/versions/12:classify", ("m", 12, None, "classify", None)),
])
def test_parse_path_ok(method, path, expect):
    r = ra.parse_path(method, path)
    assert (r.model, r.version, r.label, r.method, r.subresource) == expect


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/models"), ("GET", "/v1/models/"), ("GET", "/v1/models/m/versions/x"),
    ("POST", "/v1/models/m"), ("POST", "/v1/models/m:PREDICT"), ("PUT", "/v1/models/m"),
    ("GET", "/v1/models/m/versions/99999999999999999999"), ("POST", "/v1/models/m/versions/1/labels/a:predict"),
])
def test_parse_path_errors(method, path):
    with pytest.raises(ra.ServingError) as e:
        ra.parse_path(method, path)
    assert e.value.http_status == 400


def test_parse_json_object():
    assert ra.parse_json_object(b'{"a": NaN, "b": -Infinity}')["b"] == -math.inf
    for body in (b"", b"  ", b"[]", b"nul", b"\xff\xfe", b'{"a": 1e999}', b"[" * 100_000,
                 b'{"a": ' + b"9" * 10_000 + b"}"):
        with pytest.raises(ra.ServingError) as e:
            ra.parse_json_object(body)
        assert e.value.http_status == 400


def test_row_and_columnar_inputs():
    fmt, t = ra.parse_predict_inputs({"instances": [[1, 2, 3, 4], [0.5, NaN := float("nan"), 0, 1]]}, Z)
    assert fmt == "row" and t["z"].dtype == np.float32 and t["z"].shape == (2, 4) and np.isnan(t["z"][1, 1])
    fmt, t = ra.parse_predict_inputs({"inputs": {"z": [[1, 2, 3, 4]]}}, Z)
    assert fmt == "columnar" and t["z"].shape == (1, 4)
    fmt, t = ra.parse_predict_inputs({"instances": [1, -(2**63), 2**63 - 1]}, SEED)
    assert t["seed"].dtype == np.int64 and t["seed"][1] == -(2**63)
    fmt, t = ra.parse_predict_inputs({"instances": [{"a": [1, 2], "b": {"b64": "aGk="}}, {"a": [3, 4], "b": "x"}]}, TWO)
    assert t["b"].tolist() == [b"hi", b"x"] and t["a"].shape == (2, 2)
    fmt, t = ra.parse_predict_inputs({"inputs": {"a": [[1, 2]], "b": [{"b64": "aGk"}]}}, TWO)  # unpadded b64
    assert t["b"].tolist() == [b"hi"]


@pytest.mark.parametrize("doc", [
    {"instances": [[1, 2, 3]]}, {"instances": [[1, 2, 3, "4"]]}, {"instances": [[1, 2, 3, None]]},
    {"instances": [[1, 2, 3, [4]]]}, {"instances": [[1, 2, 3, 4], [1, 2, 3]]}, {"instances": [1, 2]},
    {"inputs": [1, 2, 3, 4]}, {"inputs": {"q": [[1, 2, 3, 4]]}}, {"instances": [{"b64": "AA=="}]},
    {"instances": [[1, 2, 3, True]]},
    {"instances": [{"z": [1, 2, 3, 4]}, [1, 2, 3, 4]]}, {"instances": [[1, 2, 3, 4], {"z": [1, 2, 3, 4]}]},
    {"instances": [], "inputs": []}, {"instances": {}}, {},
])
def test_invalid_inputs(doc):  # json_tensor.cc FillTensorMapFromInstancesList / FillTensorProto
    with pytest.raises(ra.ServingError) as e:
        ra.parse_predict_inputs(doc, Z)
    assert e.value.http_status == 400 and e.value.code == "INVALID_ARGUMENT"


def test_float_inputs_take_ints_and_out_of_range_values():
    # json_tensor.cc AddValueToTensor DT_FLOAT: any number, GetFloat() (the lossless check went in 2.5)
    _, t = ra.parse_predict_inputs({"instances": [[1, 2**24 + 1, 2**63 - 1, 3.5e38]]}, Z)
    assert t["z"].dtype == np.float32
    assert t["z"][0, :2].tolist() == [1.0, float(np.float32(2**24 + 1))] and np.isinf(t["z"][0, 3])
    _, t = ra.parse_predict_inputs(ra.parse_json_object(b'{"instances": [[Inf, -Infinity, 2e308, NaN]]}'), Z)
    assert t["z"][0, :3].tolist() == [math.inf, -math.inf, math.inf] and np.isnan(t["z"][0, 3])


@pytest.mark.parametrize("body,message", [
    # tensorflow_serving/util/json_tensor.cc ParseJson with rapidjson 1.1.0's iterative parser
    (b"", "JSON Parse error: The document is empty"),
    (b"  ", "JSON Parse error: The document is empty. at offset: 2"),
    (b"{instances: [1]}", "JSON Parse error: Missing a name for object member. at offset: 1"),
    (b'{"instances": [[1.0, 2.0]', "JSON Parse error: Missing a comma or ']' after an array element. at offset: 25"),
    (b'{"a": [1,]}', "JSON Parse error: Invalid value. at offset: 9"),
    (b'{"a": 1,}', "JSON Parse error: Missing a name for object member. at offset: 8"),
    (b'{"a" 1}', "JSON Parse error: Missing a colon after a name of object member. at offset: 5"),
    (b'{"a": 1 "b": 2}', "JSON Parse error: Missing a comma or '}' after an object member. at offset: 8"),
    (b'{"a": tru}', "JSON Parse error: Invalid value. at offset: 9"),
    (b'{"a": 1e309}', "JSON Parse error: Number too big to be stored in double. at offset: 6"),
    (b'{"a": 1.}', "JSON Parse error: Miss fraction part in number. at offset: 8"),
    (b'{"a": 1e+}', "JSON Parse error: Miss exponent in number. at offset: 9"),
    (b'{"a": "\\ud800"}', "JSON Parse error: The surrogate pair in string is invalid. at offset: 7"),
    (b'{"a": "\\x"}', "JSON Parse error: Invalid escape character in string. at offset: 7"),
    (b'{"a": "\\u12G4"}', "JSON Parse error: Incorrect hex digit after \\u escape in string. at offset: 7"),
    (b'{"a": "abc', "JSON Parse error: Missing a closing quotation mark in string. at offset: 10"),
    (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
    (b"\xef\xbb\xbf{", "JSON Parse error: Missing a name for object member. at offset: 4"),  # BOM skipped
])
def test_parse_errors_read_like_rapidjson(body, message):
    with pytest.raises(ra.ServingError) as e:
        ra.parse_json_object(body)
    assert e.value.message == message and e.value.http_status == 400


def test_json_reading_like_rapidjson():
    # kParseStopWhenDoneFlag: text after the first value is ignored
    assert ra.parse_json_object(b'{"instances": [1]} trailing {') == {"instances": [1]}
    assert ra.parse_json_object(b'\xef\xbb\xbf {"instances": [1]}') == {"instances": [1]}  # UTF-8 BOM
    # FindMember: the first of repeated keys
    doc = ra.parse_json_object(b'{"signature_name": "a", "signature_name": "b", "instances": [1]}')
    assert ra.signature_name_of(doc) == "a"
    # a repeated key makes an object that is not a {"b64": ...} value (MemberCount() != 1)
    doc = ra.parse_json_object(b'{"instances": [{"b64": "aGk=", "b64": "eA=="}]}')
    assert tf_json.member_count(doc["instances"][0]) == 2
    # kParseNanAndInfFlag spellings the standard library does not know, and 2e308 (no overflow check)
    doc = ra.parse_json_object(b'{"a": [Inf, -Inf, -NaN, 2e308]}')
    assert doc["a"][:2] == [math.inf, -math.inf] and math.isnan(doc["a"][2]) and doc["a"][3] == math.inf


def test_debug_string_is_rapidjsons_pretty_writer():
    # json_tensor.cc JsonValueToDebugString: PrettyWriter, kFormatSingleLineArray, cut after 256 bytes
    with pytest.raises(ra.ServingError) as e:
        ra.parse_predict_inputs({"instances": [1], "inputs": [1e21, 0.5, 1e-7]}, Z)
    assert e.value.message == (
        'JSON Value: {\n    "instances": [1],\n    "inputs": [1e21, 0.5, 1e-7]\n} Not formatted correctly '
        "expecting only one of 'inputs' or 'instances' keys to exist ")
    with pytest.raises(ra.ServingError) as e:
        ra.parse_predict_inputs({"instances": 3, "pad": list(range(1000))}, Z)
    shown = e.value.message.split(" Expecting")[0]
    assert 256 <= len(shown) - len("JSON Value: ") < 262 and shown.endswith("58")  # ", 58" was the last write


@pytest.mark.parametrize("doc", [
    {"instances": [1.0]}, {"instances": [2**63]}, {"instances": ["1"]}, {"instances": [[1]]},
    {"instances": [{"b64": "AAAA"}]}, {"inputs": 5}, {"inputs": [[1, 2]]},
])
def test_invalid_seed_inputs(doc):
    with pytest.raises(ra.ServingError):
        ra.parse_predict_inputs(doc, SEED)


def test_multi_input_rules():
    with pytest.raises(ra.ServingError, match="plain list"):
        ra.parse_predict_inputs({"instances": [[1, 2]]}, TWO)
    with pytest.raises(ra.ServingError, match="keys must be equal to: a,b"):
        ra.parse_predict_inputs({"instances": [{"a": [1, 2]}]}, TWO)
    with pytest.raises(ra.ServingError, match="plain value/list"):
        ra.parse_predict_inputs({"inputs": [[1, 2]]}, TWO)
    with pytest.raises(ra.ServingError, match="Base64|base64"):
        ra.parse_predict_inputs({"inputs": {"a": [[1, 2]], "b": [{"b64": "!!!"}]}}, TWO)


@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (2, 3, 4, 3), (5, 7), (3,), (1,), (2, 5, 1, 4), (1, 2, 3, 4, 5),
                                   (3, 64, 64, 3)])
def test_uint8_encoding_equals_json(shape):
    a = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    assert json.loads(ra.tensor_json(a, "images")) == a.tolist()


def test_response_formats():
    imgs = np.zeros((2, 1, 1, 3), np.uint8)
    assert json.loads(ra.predict_response({"images": imgs}, "row")) == {"predictions": imgs.tolist()}
    assert json.loads(ra.predict_response({"images": imgs}, "columnar")) == {"outputs": imgs.tolist()}
    pngs = np.array([b"\x89PNG", b""], dtype=object)
    assert json.loads(ra.predict_response({"png_bytes": pngs}, "row")) == {
        "predictions": [{"b64": "iVBORw=="}, {"b64": ""}]}
    out = {"x": np.array([[0.1, 1.0], [np.nan, np.inf]], np.float32), "y": np.array([1, 2], np.int64),
           "s": np.array([b"a", b"b"], dtype=object)}
    row = json.loads(ra.predict_response(out, "row"))
    assert row["predictions"][0] == {"s": "a", "x": [0.1, 1.0], "y": 1}
    assert math.isnan(row["predictions"][1]["x"][0]) and row["predictions"][1]["x"][1] == math.inf
    col = ra.predict_response(out, "columnar")
    assert b"[0.1,1.0]" in col and b"[NaN,Infinity]" in col
    with pytest.raises(ra.ServingError):
        ra.predict_response({"a": np.zeros(2), "b": np.zeros(3)}, "row")


def test_status_and_metadata_json():
    doc = ra.model_status_json([(1, "END", "OK", ""), (3, "AVAILABLE", "OK", "")])
    assert [m["version"] for m in doc["model_version_status"]] == ["3", "1"]
    assert ra.model_metadata_json("m", 3, {"signature_def": {}})["model_spec"] == {
        "name": "m", "signature_name": "", "version": "3"}


def test_version_policy():
    assert VersionPolicy().select([3, 1, 2]) == [3]
    assert VersionPolicy("latest", 2).select([1]) == [1]
    assert VersionPolicy("specific", versions=(2, 9)).select([1, 2, 3]) == [2]


# --------------------------------------------------------------------------- batcher


def _run_batcher(coro_fn, options, run=None):
    calls = []

    def default_run(sig, inputs):
        calls.append(len(inputs["x"]))
        time.sleep(0.01)
        return {"y": inputs["x"] * 2}

    async def main():
        with ThreadPoolExecutor(2) as ex:
            b = Batcher(run or default_run, ex, options)
            return await coro_fn(b), b

    result, b = asyncio.run(main())
    return result, calls, b


def test_batcher_merges_and_splits_back():
    async def go(b):
        xs = [np.full((i % 3 + 1,), i, np.float32) for i in range(20)]
        outs = await asyncio.gather(*(b.submit("s", {"x": x}) for x in xs))
        return xs, outs

    (xs, outs), calls, _ = _run_batcher(go, BatchingOptions(8, 50_000, 100, 1))
    for x, o in zip(xs, outs):
        np.testing.assert_array_equal(o["y"], x * 2)
    assert max(calls) <= 8 and len(calls) < 20  # requests shared model calls
    assert sum(calls) == sum(len(x) for x in xs)


def test_batcher_bounded_queue_refuses_without_waiting_for_the_model():
    release = threading.Event()

    def blocked_run(sig, inputs):
        release.wait(30)  # the model is busy until every refusal has been answered
        return {"y": inputs["x"] * 2}

    async def go(b):
        tasks = [asyncio.ensure_future(b.submit("s", {"x": np.ones(1, np.float32)})) for _ in range(30)]
        for _ in range(50):
            await asyncio.sleep(0)  # let every submit run up to its refusal or its wait
        answered_while_busy = {i for i, t in enumerate(tasks) if t.done()}
        release.set()
        res = await asyncio.gather(*tasks, return_exceptions=True)
        return answered_while_busy, res

    (answered_while_busy, res), _, _ = _run_batcher(go, BatchingOptions(1, 0, 2, 1), run=blocked_run)
    refused = {i for i, r in enumerate(res) if isinstance(r, Exception)}
    assert refused and len(refused) < 30
    assert all(isinstance(res[i], ServingError) and res[i].http_status == 503 and QUEUE_FULL in res[i].message
               for i in refused)
    assert answered_while_busy == refused  # refusals did not queue behind the model; accepted work did


def test_batcher_large_request_is_refused_or_split_and_errors_propagate():
    calls = []

    def run(sig, inputs):
        if (inputs["x"] < 0).any():
            raise ValueError("negative")
        calls.append(len(inputs["x"]))
        return {"y": inputs["x"] + 1}

    async def refused(b):
        try:
            await b.submit("s", {"x": np.arange(10, dtype=np.float32)})
        except ra.ServingError as e:
            return e

    # SharedBatchScheduler ValidateBatchTaskQueueCapacity: a task above max_batch_size is refused
    e, _, _ = _run_batcher(refused, BatchingOptions(4, 0, 10, 2), run=run)
    assert (e.code, e.http_status) == ("INVALID_ARGUMENT", 400)
    assert e.message == "Task size 10 is larger than maximum input batch size 4"

    async def go(b):
        ok = await b.submit("s", {"x": np.arange(10, dtype=np.float32)})
        try:
            await b.submit("s", {"x": -np.ones(2, np.float32)})
        except ValueError as e:
            bad = e
        drained = await b.drain(5)
        try:
            await b.submit("s", {"x": np.ones(1, np.float32)})
        except ra.ServingError as e:
            closed = e
        return ok, bad, drained, closed

    # enable_large_batch_splitting: the task is split over model calls of max_execution_batch_size rows
    split = BatchingOptions(16, 0, 10, 2, enable_large_batch_splitting=True, max_execution_batch_size=4)
    (ok, bad, drained, closed), _, _ = _run_batcher(go, split, run=run)
    np.testing.assert_array_equal(ok["y"], np.arange(10) + 1)
    assert calls == [4, 4, 2]
    assert str(bad) == "negative" and drained and closed.http_status == 503


def test_batcher_pads_to_allowed_batch_sizes_and_variable_lengths():
    seen = []

    def run(sig, inputs):
        seen.append(inputs["x"].copy())
        return {"y": inputs["x"].sum(axis=1)}

    async def go(b):
        return await asyncio.gather(b.submit("s", {"x": np.ones((2, 3), np.float32)}),
                                    b.submit("s", {"x": np.full((1, 2), 5, np.float32)}))

    # batching_session.cc MergeInputTensors: 3 rows -> allowed size 4, padded with the last task's
    # first row; lengths 3 and 2 -> padded to 3 with the tensor's first value
    opts = BatchingOptions(8, 50_000, 10, 1, allowed_batch_sizes=(4, 8), pad_variable_length_inputs=True)
    (a, c), _, _ = _run_batcher(go, opts, run=run)
    assert len(seen) == 1 and seen[0].shape == (4, 3)
    np.testing.assert_array_equal(seen[0][2:], np.full((2, 3), 5))
    assert a["y"].tolist() == [3, 3] and c["y"].tolist() == [15]

    async def refused(b):
        return await asyncio.gather(b.submit("s", {"x": np.ones((1, 3), np.float32)}),
                                    b.submit("s", {"x": np.ones((1, 2), np.float32)}), return_exceptions=True)

    errs, _, _ = _run_batcher(refused, BatchingOptions(8, 50_000, 10, 1), run=run)
    assert all(isinstance(e, ra.ServingError) and e.code == "FAILED_PRECONDITION" for e in errs)
    assert "padding is turned off. Set pad_variable_length_inputs to true" in errs[0].message


def _app_client(**kw):
    from starlette.testclient import TestClient

    from nebula_keras3.serving.options import ServerOptions
    from nebula_keras3.serving.server import create_app

    return TestClient(create_app(ServerOptions(models=[], **kw)))


@pytest.mark.parametrize("cors", [False, True])
def test_cors_headers_follow_the_flag(cors):
    # http_server.cc ProcessRequest: AddCORSHeaders (http_rest_api_util.cc) on every /v1 reply when
    # --rest_api_enable_cors_support is set, preflights included
    with _app_client(rest_api_enable_cors_support=cors) as c:
        for r in (c.options("/v1/models/m:predict", headers={"Origin": "http://x.org"}), c.get("/v1/models/m"),
                  c.put("/v1/models/m")):
            assert (r.headers.get("access-control-allow-origin") == "*") == cors
            if cors:
                assert r.headers["access-control-allow-methods"] == "POST, GET"
                assert r.headers["access-control-allow-headers"] == "Content-Type"
        r = c.put("/v1/models/m", content=b"{}")
        assert r.status_code == 400 and r.content == b'{\n    "error": "Malformed request: PUT /v1/models/m"\n}'
        assert c.options("/v1/models/m", headers={"Origin": "file.txt"}).status_code == 400


def test_classify_regress_signature_checks():
    sig = SignatureSpec({"z": TensorInfo("DT_FLOAT", [-1, 4])}, {"images": TensorInfo("DT_UINT8", [-1, 2])})
    sig_json = {"inputs": {"z": {"name": "serving_default_z:0", "dtype": "DT_FLOAT",
                                 "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "4", "name": ""}],
                                                  "unknown_rank": False}}},
                "outputs": {}, "method_name": "tensorflow/serving/predict"}
    sigs, sig_defs = {"serving_default": sig}, {"signature_def": {"serving_default": sig_json}}
    with pytest.raises(ServingError) as e:
        check_classify_regress_signature("classify", "serving_default", sigs, sig_defs, False)
    assert e.value.message == (
        "No classification inputs found in SignatureDef: inputs {\n  key: \"z\"\n  value {\n"
        "    name: \"serving_default_z:0\"\n    dtype: DT_FLOAT\n    tensor_shape {\n      dim {\n"
        "        size: -1\n      }\n      dim {\n        size: 4\n      }\n    }\n  }\n}\n"
        "method_name: \"tensorflow/serving/predict\"\n")
    # --enable_signature_method_name_check (classifier.cc / regressor.cc GetSignatureMethodNameCheckFeature)
    with pytest.raises(ServingError, match="^Expected regression signature method_name to be "
                                       "tensorflow/serving/regress. Was: tensorflow/serving/predict$"):
        check_classify_regress_signature("regress", "serving_default", sigs, sig_defs, True)
    with pytest.raises(ServingError, match="^No signature was found with the name: x$"):
        check_classify_regress_signature("regress", "x", sigs, sig_defs, False)


def test_rapidjson_port_reads_plain_json_like_the_fast_path():
    # tf_json.parse answers most bodies through the stdlib scanner; its rapidjson port must agree
    rng = np.random.default_rng(0)
    docs = [{"instances": rng.standard_normal((3, 5)).round(6).tolist(), "signature_name": "s\u00e9\n\"\\/"},
            {"inputs": {"a": [[1, -2, 0, 2**63 - 1, -(2**63)]], "b": [{"b64": "aGk="}, "x"]}, "n": None},
            {"deep": [[[[[]]]]], "t": True, "f": False, "e": {}, "x": [1e-7, 1.5e300, -0.0, 123.456e-3]}]
    for doc in docs:
        body = json.dumps(doc).encode()
        assert tf_json._Parser(body).parse() == tf_json.parse(body) == doc


def test_tf_metric_families_print_like_tf_servings_exporter():
    # tensorflow_serving/util/prometheus_exporter.cc SerializeScalar / SerializeHistogram
    from nebula_keras3.serving.tf_metrics import TFMetrics, prometheus_name

    assert prometheus_name("/tensorflow/serving/request_count") == ":tensorflow:serving:request_count"
    m = TFMetrics()
    m.inc("/tensorflow/serving/request_count", "nebula", "OK")
    m.inc("/tensorflow/serving/request_count", "nebula", "OK")
    m.observe("/tensorflow/serving/request_latency", 15.0, "nebula", "predict", "REST")
    lines = m.render().splitlines()
    assert "# TYPE :tensorflow:serving:request_count counter" in lines
    assert ':tensorflow:serving:request_count{model_name="nebula",status="OK"} 2' in lines
    at = lines.index("# TYPE :tensorflow:serving:request_latency histogram")
    assert lines[at + 1:at + 3] == [
        ':tensorflow:serving:request_latency_bucket{model_name="nebula",API="predict",entrypoint="REST",le="10"} 0',
        ':tensorflow:serving:request_latency_bucket{model_name="nebula",API="predict",entrypoint="REST",le="18"} 1']
    bucket = ':tensorflow:serving:request_latency_bucket{model_name="nebula",API="predict",entrypoint="REST",'
    assert bucket + 'le="+Inf"} 1' in lines
    assert ':tensorflow:serving:request_latency_sum{model_name="nebula",API="predict",entrypoint="REST"} 15' in lines
    assert ':tensorflow:serving:request_latency_count{model_name="nebula",API="predict",entrypoint="REST"} 1' in lines


@pytest.mark.parametrize("token,slow", [
    (b"1234567890123456789", False), (b"12345678901234567890", True),  # uint64 holds 19 digits, not all of 20
    (b"-1234567890123456789", False), (b"-12345678901234567890", True),
    (b"0.00012345678901234567890123", False), (b"1.2345678901234567890123e-05", False),  # long fractions
    (b"12345678901234567890.5", True),  # a 20-digit integer part
    (b"1.5e99", False), (b"1.5e+99", False), (b"1.5e100", True), (b"1E-308", True),  # 3-digit exponents
])
def test_fast_path_boundaries(token, slow):
    # the rapidjson port runs only where the stdlib scanner could answer differently
    body = b'{"instances": [[0.5, ' + token + b', 1]]}'
    assert tf_json.needs_rapidjson(body) is slow
    got, port = tf_json.parse(body)["instances"][0], tf_json._Parser(body).parse()["instances"][0]
    assert list(map(type, got)) == list(map(type, port))
    # rapidjson keeps 17 significant digits: a double may differ in its last bit, a float32 never
    with np.errstate(over="ignore"):  # 1.5e99 is inf as a float32, as TF Serving casts it
        assert np.array_equal(np.float32(got), np.float32(port))


def test_rapidjson_answers_where_the_fast_path_would_differ():
    # uint64 overflow becomes a double (an int64 input then refuses it); 19 digits stay integers
    assert tf_json.parse(b"[18446744073709551616]") == [float(2**64)]
    assert type(tf_json.parse(b"[18446744073709551616]")[0]) is float
    assert type(tf_json.parse(b"[1844674407370955161]")[0]) is int
    with pytest.raises(tf_json.JsonParseError, match="Number too big to be stored in double. at offset: 1"):
        tf_json.parse(b"[1e309]")
    assert tf_json.parse(b"[2e308]") == [float("inf")]
    with pytest.raises(tf_json.JsonParseError, match="The surrogate pair in string is invalid"):
        tf_json.parse(b'["\\ud800"]')
    assert tf_json.needs_rapidjson(b'["\\u00e9"]') is False


def test_float32_bodies_take_the_fast_path_and_read_the_same():
    # clients write json.dumps(float32.tolist()): 17 significant digits, 20+ fraction digits in
    # [1e-4, 1e-3); the fast path must take them and give the float32 values rapidjson's reading gives
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 100)).astype(np.float32)
    x[0, :8] = np.float32([1.2345678e-4, -9.87654e-4, 3.3333333e-4, 1e-4, 5.0000004e-4, 7.77e-38, 1e-45, 3.4e38])
    body = json.dumps({"instances": x.tolist()}).encode()
    assert b"0.000123456" in body and tf_json.needs_rapidjson(body) is False
    fast = np.asarray(tf_json.parse(body)["instances"], dtype=np.float32)
    port = np.asarray(tf_json._Parser(body).parse()["instances"], dtype=np.float32)
    assert np.array_equal(fast, x) and np.array_equal(port, x)


def test_internal_errors_answer_a_request_id_not_the_detail(monkeypatch, caplog):
    # the client gets a generic message and an id; the exception (types, paths) goes to the log only
    from nebula_keras3.serving.registry import Registry

    def broken(self, req):
        raise RuntimeError("cannot open /secret/base/path/model.onnx")

    monkeypatch.setattr(Registry, "status", broken)
    with _app_client() as c, caplog.at_level("ERROR", logger="nebula.serving"):
        r = c.get("/v1/models/m")
    assert r.status_code == 500
    err = r.json()["error"]
    request_id = r.headers["x-request-id"]
    assert err == f"Internal error; request id {request_id}" and len(request_id) == 16
    assert "secret" not in r.text and "RuntimeError" not in r.text
    logged = [rec for rec in caplog.records if request_id in rec.getMessage()]
    assert logged and "/secret/base/path" in logged[0].exc_text


def test_warmup_records_larger_than_a_batch_go_in_slices():
    # batching is always on in nebula serve: a recorded request of more rows than --max-batch-size still
    # warms its signature (in slices) instead of failing the load; each record runs `iterations` times
    from types import SimpleNamespace

    from nebula_keras3.serving.options import ServerOptions
    from nebula_keras3.serving.predict import Predictor

    calls = []

    async def submit(signature, inputs):
        calls.append((signature, inputs["z"].shape[0]))

    st = SimpleNamespace(runner=SimpleNamespace(signatures={"serving_default": Z}),
                         batcher=SimpleNamespace(submit=submit))
    predictor = Predictor(None, ServerOptions(models=[], batching=BatchingOptions(max_batch_size=3)), None)
    records = [("serving_default", {"z": np.zeros((4, 4), np.float32)}),
               ("serving_default", {"z": np.zeros((1, 4), np.float32)})]
    assert asyncio.run(predictor.warm_up(st, records, 2)) == 4
    assert calls == [("serving_default", 3), ("serving_default", 1)] * 2 + [("serving_default", 1)] * 2
    with pytest.raises(ServingError, match='Serving signature key "generate_png" not found.'):
        asyncio.run(predictor.warm_up(st, [("generate_png", {"seed": np.zeros(1, np.int64)})], 1))


def test_a_new_version_whose_folder_cannot_be_read_yet_is_not_loaded(tmp_path, monkeypatch):
    # a folder being written (rsync's temporary files renamed away between the listing and the stat)
    # cannot be stamped at the listing that first shows it: that is not "unchanged", so no load yet
    from types import SimpleNamespace

    from nebula_keras3.export import layout
    from nebula_keras3.serving import registry as reg
    from nebula_keras3.serving.config_files import ModelSpecConfig

    def version(v):
        (tmp_path / str(v)).mkdir()
        (tmp_path / str(v) / layout.ONNX_FILE).write_bytes(b"onnx")

    loaded = []

    async def drain(timeout):
        pass

    def make_runner(path):
        loaded.append(int(path.name))
        return SimpleNamespace(kind="onnx", close=lambda: None)

    async def run():
        r = reg.Registry([ModelSpecConfig("m", tmp_path)], make_runner=make_runner,
                         make_batcher=lambda st: SimpleNamespace(drain=drain))
        version(1)
        await r.poll_once()  # a model's first listing trusts what it finds
        version(2)
        real_stamp = reg._dir_stamp
        monkeypatch.setattr(reg, "_dir_stamp", lambda p: None if p.name == "2" else real_stamp(p))
        await r.poll_once()
        assert loaded == [1]
        monkeypatch.setattr(reg, "_dir_stamp", real_stamp)
        await r.poll_once()  # readable now, but not yet seen unchanged
        assert loaded == [1]
        await r.poll_once()
        assert loaded == [1, 2]
        await r.stop()

    asyncio.run(run())


def test_model_polls_read_the_file_system_off_the_event_loop(tmp_path, monkeypatch):
    # a slow or hung mount holds up the poll, not the requests served on the same event loop
    from types import SimpleNamespace

    from nebula_keras3.export import layout
    from nebula_keras3.serving import registry as reg
    from nebula_keras3.serving.config_files import ModelSpecConfig

    (tmp_path / "1").mkdir()
    (tmp_path / "1" / layout.ONNX_FILE).write_bytes(b"onnx")
    gate, real = threading.Event(), reg.versions_on_disk

    def slow_listing(path):
        assert gate.wait(5), "the event loop was blocked by the listing"
        return real(path)

    monkeypatch.setattr(reg, "versions_on_disk", slow_listing)

    async def run():
        r = reg.Registry([ModelSpecConfig("m", tmp_path)], make_runner=lambda p: SimpleNamespace(kind="onnx"),
                         make_batcher=lambda st: None)
        poll = asyncio.create_task(r.poll_once())
        await asyncio.sleep(0.01)  # the poll starts and waits on the listing
        gate.set()
        await poll
        assert r.summary() == {"m": [1]}
        r._loader.shutdown(wait=False)

    asyncio.run(run())


def test_a_failed_start_stops_what_it_started(monkeypatch):
    # the gRPC port cannot be opened after the models were loaded: the model poll, the loader and the
    # run threads are stopped again, not left running in a server that never started
    pytest.importorskip("grpc")
    pytest.importorskip("tensorflow_serving")
    from nebula_keras3.serving import grpc_api
    from nebula_keras3.serving.options import ServerOptions
    from nebula_keras3.serving.server import Server

    async def no_port(predictor, options):
        raise grpc_api.GrpcStartError("cannot listen for gRPC")

    monkeypatch.setattr(grpc_api, "start_grpc_server", no_port)
    server = Server(ServerOptions(models=[], grpc_port=1))

    async def run():
        with pytest.raises(grpc_api.GrpcStartError):
            await server.start()
        assert server.registry._task.done()

    asyncio.run(run())
    assert server.registry._stopping and server.executor._shutdown and server.registry._loader._shutdown


def test_reload_config_names_each_model_that_did_not_become_available(tmp_path):
    # server_core.cc WaitUntilModelsAvailable: "{" + ServableId::DebugString() + " due to error: " +
    # health + "}, " per model, inside "N model(s) did not become available: {...}"
    from nebula_keras3.export import layout
    from nebula_keras3.serving import config_files as cf
    from nebula_keras3.serving import registry as reg
    from nebula_keras3.serving.runtimes import RunnerError

    (tmp_path / "3").mkdir()
    (tmp_path / "3" / layout.ONNX_FILE).write_bytes(b"onnx")

    def make_runner(path):
        raise RunnerError("not an ONNX model")

    msg = cf.ModelServerConfig()
    msg.model_config_list.config.add(name="m", base_path=str(tmp_path), model_platform="tensorflow")

    async def run():
        r = reg.Registry([], make_runner=make_runner, make_batcher=lambda st: None)
        with pytest.raises(ServingError) as e:
            await r.reload_config(msg)
        r._loader.shutdown(wait=False)
        return e.value

    e = asyncio.run(run())
    assert (e.code, e.message) == ("UNKNOWN", "1 model(s) did not become available: "
                                   "{{{name: m version: 3} due to error: UNKNOWN: not an ONNX model}, }")
