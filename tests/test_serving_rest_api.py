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
from nebula_keras3.serving.batching import QUEUE_FULL, Batcher
from nebula_keras3.serving.config_files import BatchingOptions, VersionPolicy
from nebula_keras3.serving.errors import ServingError
from nebula_keras3.serving.signatures import SignatureSpec, TensorSpec

pytestmark = pytest.mark.backend_independent

Z = SignatureSpec({"z": TensorSpec("DT_FLOAT", (-1, 4))}, {"images": TensorSpec("DT_UINT8", (-1, 2, 2, 3))})
SEED = SignatureSpec({"seed": TensorSpec("DT_INT64", (-1,))}, {"png_bytes": TensorSpec("DT_STRING", (-1,))})
TWO = SignatureSpec({"a": TensorSpec("DT_FLOAT", (-1, 2)), "b": TensorSpec("DT_STRING", (-1,))}, {})


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
    {"instances": [[1, 2, 3, 2**24]]}, {"instances": [[1, 2, 3, 3.5e38]]}, {"instances": [[1, 2, 3, True]]},
    {"instances": [{"z": [1, 2, 3, 4]}, [1, 2, 3, 4]]}, {"instances": [[1, 2, 3, 4], {"z": [1, 2, 3, 4]}]},
    {"instances": [], "inputs": []}, {"instances": {}}, {},
])
def test_invalid_inputs(doc):
    with pytest.raises(ra.ServingError) as e:
        ra.parse_predict_inputs(doc, Z)
    assert e.value.http_status == 400 and e.value.code == "INVALID_ARGUMENT"


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
    with pytest.raises(ra.ServingError, match="must only have keys"):
        ra.parse_predict_inputs({"instances": [{"a": [1, 2]}]}, TWO)
    with pytest.raises(ra.ServingError, match="plain value/list"):
        ra.parse_predict_inputs({"inputs": [[1, 2]]}, TWO)
    with pytest.raises(ra.ServingError, match="Base64|base64"):
        ra.parse_predict_inputs({"inputs": {"a": [[1, 2]], "b": [{"b64": "!!!"}]}}, TWO)


@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (2, 3, 4, 3), (5, 7), (3,), (1,)])
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


def test_batcher_large_request_is_chunked_and_errors_propagate():
    def run(sig, inputs):
        if (inputs["x"] < 0).any():
            raise ValueError("negative")
        assert len(inputs["x"]) <= 4
        return {"y": inputs["x"] + 1}

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

    (ok, bad, drained, closed), _, _ = _run_batcher(go, BatchingOptions(4, 0, 10, 2), run=run)
    np.testing.assert_array_equal(ok["y"], np.arange(10) + 1)
    assert str(bad) == "negative" and drained and closed.http_status == 503
