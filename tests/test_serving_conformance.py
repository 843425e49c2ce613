"""TF Serving REST API v1 conformance of ``nebula serve`` (or of a real TF Serving).

By default a module fixture exports two small generator versions, starts
``nebula serve`` on them with ``serving/models.config`` (labels stable=1,
canary=2; base_path pointed at the export) and runs every check against it.

With ``TF_SERVING_URL`` set (e.g. ``http://127.0.0.1:8501`` from
``serving/docker-compose.yml``) the same checks run against that server; give
``NEBULA_EXPORT_BASE`` (the export it serves, versions 1 and 2 with model.onnx)
so expected outputs can be computed offline from the same files. Checks of
limits that are particular to ``nebula serve`` (body size, instances per
request) and those that need to change files under the served folder (hot
pickup, SavedModel-only version) run only locally.

Every check that runs against both servers names, in its docstring or a comment,
the TF Serving source (``tensorflow/serving``, pinned like TF Serving 2.21;
rapidjson 1.1.0 as ``tensorflow_serving/workspace.bzl`` pins it) whose code fixes
the answer: status code, JSON shape and message wording.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("onnxruntime")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from nebula_keras3.sampling.latents import latents_from_seeds  # noqa: E402
from nebula_keras3.serving import config_files as cf  # noqa: E402
from support import serving as st  # noqa: E402
from nebula_keras3.export.layout import model_dir as resolve_model_dir  # noqa: E402
from nebula_keras3.serving.signatures import read_saved_model_signatures  # noqa: E402

pytestmark = pytest.mark.backend_independent

TF_SERVING_URL = os.environ.get("TF_SERVING_URL")
LOCAL = not TF_SERVING_URL
MODEL = os.environ.get("TF_SERVING_MODEL", "nebula")
local_only = pytest.mark.skipif(not LOCAL, reason="checks nebula serve itself (TF_SERVING_URL is set)")


def write_config(path: Path, model_dir: Path) -> Path:
    """serving/models.config with base_path pointed at ``model_dir``."""
    msg = cf.parse_text(cf.packaged_file("models.config").read_text(), cf.ModelServerConfig)
    msg.model_config_list.config[0].base_path = str(model_dir)
    from google.protobuf import text_format

    path.write_text(text_format.MessageToString(msg))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    if LOCAL:
        return st.session_export(tmp_path_factory)
    base = os.environ.get("NEBULA_EXPORT_BASE")
    if not base:
        pytest.skip("set NEBULA_EXPORT_BASE to the export TF Serving serves to compute expected outputs")
    return resolve_model_dir(Path(base), MODEL)


@pytest.fixture(scope="module")
def url(model_dir, tmp_path_factory):
    if not LOCAL:
        yield TF_SERVING_URL.rstrip("/")
        return
    tmp = tmp_path_factory.mktemp("conformance")
    cfg = write_config(tmp / "models.config", model_dir)
    srv = st.ServerProcess(
        ["--model-config-file", str(cfg),
         "--monitoring-config-file", str(cf.packaged_file("monitoring.config")),
         "--batching-parameters-file", str(cf.packaged_file("batching.config")),
         "--max-instances", "96", "--max-body-bytes", str(256 * 1024)],
        log_path=tmp / "server.log", wait_versions=2,
    )
    try:
        yield srv.url
    finally:
        assert srv.stop() == 0, srv.log_tail()


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def offline(model_dir):
    return {v: st.offline_model(model_dir / str(v)) for v in (1, 2)}


@pytest.fixture(scope="module")
def latent(offline) -> int:
    return offline[1].latent_dim


def api(version=None, label=None, model=MODEL) -> str:
    p = f"/v1/models/{model}"
    if version is not None:
        p += f"/versions/{version}"
    if label is not None:
        p += f"/labels/{label}"
    return p


def predict(client, body, version=None, label=None, model=MODEL):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(api(version, label, model) + ":predict", content=data,
                       headers={"Content-Type": "application/json"})


def assert_error(r, status, contains: str | None = None, exact: bool = False):
    """TF's error reply: the HTTP status of http_server.cc ToHTTPStatusCode, body {"error": message}
    (json_tensor.cc MakeJsonFromStatus); ``exact`` compares the whole message."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    err = r.json()["error"]
    assert isinstance(err, str) and err
    if exact:
        assert err == contains, err
    elif contains is not None:
        assert contains in err, err


def z_batch(n, latent, seed=0):
    return np.random.default_rng(seed).standard_normal((n, latent)).astype(np.float32)


# --------------------------------------------------------------------------- status


def test_status_all_versions(client):
    """get_model_status_impl.cc GetModelStatusWithModelSpec (no version: every version, newest first)."""
    r = client.get(api())
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    mvs = r.json()["model_version_status"]
    assert [m["version"] for m in mvs] == ["2", "1"]
    for m in mvs:
        assert m["state"] == "AVAILABLE"
        assert m["status"] == {"error_code": "OK", "error_message": ""}


@pytest.mark.parametrize("version", [1, 2])
def test_status_one_version(client, version):
    """get_model_status_impl.cc GetModelStatusWithModelSpec (model_spec.has_version())."""
    r = client.get(api(version))
    assert r.status_code == 200
    assert r.json() == {"model_version_status": [
        {"version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


@pytest.mark.parametrize("label", ["stable", "canary", "no_such_label"])
def test_status_label_is_ignored(client, label):
    """get_model_status_impl.cc GetModelStatusWithModelSpec reads only the version: a label, known or
    not, answers with every version (http_rest_api_handler.cc ProcessModelStatusRequest)."""
    r = client.get(api(label=label))
    assert r.status_code == 200
    assert r.json() == client.get(api()).json()


def test_status_errors(client):
    """get_model_status_impl.cc ("Could not find any versions of model", "Could not find version");
    http_rest_api_handler.cc ProcessRequest ("Malformed request: GET path" when kModelStatusApiRegex
    of http_rest_api_util.cc does not match)."""
    assert_error(client.get(api(model="no_such_model")), 404, "Could not find any versions of model no_such_model")
    assert_error(client.get(api(7)), 404, "Could not find version 7 of model nebula")
    for path in ("/v1/models/", "/v1/models/nebula/versions/x", api() + "/metadata/extra"):
        assert_error(client.get(path), 400, f"Malformed request: GET {path}", exact=True)


# --------------------------------------------------------------------------- metadata


def test_metadata_shape_and_signatures(client, model_dir, latent, offline):
    """http_rest_api_util.cc ToJsonString(GetModelMetadataResponse): model_spec + metadata.signature_def."""
    r = client.get(api() + "/metadata")
    assert r.status_code == 200
    doc = r.json()
    assert doc["model_spec"] == {"name": MODEL, "signature_name": "", "version": "2"}
    sigs = doc["metadata"]["signature_def"]["signature_def"]
    s = offline[2].image_size
    sd = sigs["serving_default"]
    assert sd["method_name"] == "tensorflow/serving/predict"
    z = sd["inputs"]["z"]
    assert z["dtype"] == "DT_FLOAT"
    assert z["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}, {"size": str(latent), "name": ""}],
                                 "unknown_rank": False}
    img = sd["outputs"]["images"]
    assert img["dtype"] == "DT_UINT8"
    assert [d["size"] for d in img["tensor_shape"]["dim"]] == ["-1", str(s), str(s), "3"]
    gp = sigs["generate_png"]
    assert gp["inputs"]["seed"]["dtype"] == "DT_INT64"
    assert [d["size"] for d in gp["inputs"]["seed"]["tensor_shape"]["dim"]] == ["-1"]
    assert gp["outputs"]["png_bytes"]["dtype"] == "DT_STRING"
    # the same SignatureDefs as the SavedModel on disk (what TF Serving prints)
    _, on_disk = read_saved_model_signatures(model_dir / "2")
    for name in ("serving_default", "generate_png"):
        assert sigs[name] == on_disk["signature_def"][name]


def test_export_contract_matches_saved_model(model_dir):
    """The written SavedModel has exactly the contract's signatures (names, dtypes, shapes and
    graph tensor names), so an ONNX-only folder described from the contract reports the same."""
    from nebula_keras3.export import layout
    from nebula_keras3.serving.signatures import contract_signatures

    for vdir in layout.version_dirs(model_dir).values():
        facts = layout.read_facts(vdir)
        specs, _ = read_saved_model_signatures(vdir)
        assert specs == contract_signatures(facts["latent_dim"], facts["image_size"])


@pytest.mark.parametrize("path,version", [("/versions/1", "1"), ("/labels/stable", "1"), ("/labels/canary", "2")])
def test_metadata_version_and_label(client, path, version):
    """http_rest_api_handler.cc ProcessModelMetadataRequest (FillModelSpecWithNameVersionAndLabel)."""
    r = client.get(api() + path + "/metadata")
    assert r.status_code == 200
    assert r.json()["model_spec"]["version"] == version


def test_metadata_errors(client):
    """ServerCore::GetServableHandle errors ("Servable not found for request", "Unrecognized servable
    version label") as http_rest_api_handler.cc ProcessModelMetadataRequest returns them."""
    assert_error(client.get(api(model="nope") + "/metadata"), 404, "Servable not found")
    assert_error(client.get(api(9) + "/metadata"), 404, "Servable not found")
    assert_error(client.get(api(label="nope") + "/metadata"), 400, "Unrecognized servable version label")


# --------------------------------------------------------------------------- predict: serving_default


def test_predict_row_format(client, offline, latent):
    """json_tensor.cc FillTensorMapFromInstancesList and MakeRowFormatJsonFromTensors ("predictions")."""
    z = z_batch(3, latent, seed=1)
    r = predict(client, {"instances": z.tolist()})
    assert r.status_code == 200, r.text[:300]
    preds = np.asarray(r.json()["predictions"], dtype=np.uint8)
    assert st.max_diff(preds, offline[2].images_from_latents(z)) <= 1


def test_predict_row_named_and_signature_name(client, offline, latent):
    """json_tensor.cc FillSignature + FillTensorMapFromInstancesList (list of objects)."""
    z = z_batch(2, latent, seed=2)
    r = predict(client, {"signature_name": "serving_default", "instances": [{"z": row} for row in z.tolist()]})
    assert r.status_code == 200, r.text[:300]
    assert st.max_diff(np.asarray(r.json()["predictions"]), offline[2].images_from_latents(z)) <= 1


def test_predict_columnar(client, offline, latent):
    """json_tensor.cc FillTensorMapFromInputsMap and MakeColumnarFormatJsonFromTensors ("outputs")."""
    z = z_batch(4, latent, seed=3)
    for body in ({"inputs": z.tolist()}, {"inputs": {"z": z.tolist()}}):
        r = predict(client, body)
        assert r.status_code == 200, r.text[:300]
        doc = r.json()
        assert set(doc) == {"outputs"}
        assert st.max_diff(np.asarray(doc["outputs"]), offline[2].images_from_latents(z)) <= 1


def test_predict_single_instance_and_special_numbers(client, offline, latent):
    """json_tensor.cc AddValueToTensor DT_FLOAT: any JSON number (ints too), read with GetFloat()."""
    z = z_batch(1, latent, seed=4)
    body = '{"instances": [[' + ",".join(["1e-3", "-2", "0"] + [repr(float(v)) for v in z[0, 3:]]) + "]]}"
    r = predict(client, body)
    assert r.status_code == 200, r.text[:300]
    z[0, :3] = [1e-3, -2, 0]
    assert st.max_diff(np.asarray(r.json()["predictions"]), offline[2].images_from_latents(z)) <= 1


def test_predict_integers_for_floats_are_rounded(client, offline, latent):
    """json_tensor.cc AddValueToTensor DT_FLOAT: IsNumber() + GetFloat(); the "without loss of
    precision" refusal was removed in TF Serving 2.5, so 2**24 + 1 is rounded to a float."""
    z = np.zeros((1, latent), np.float32)
    z[0, :3] = [1, -3, 2**24 + 1]
    body = '{"instances": [[1, -3, 16777217' + ", 0" * (latent - 3) + "]]}"
    r = predict(client, body)
    assert r.status_code == 200, r.text[:300]
    assert st.max_diff(np.asarray(r.json()["predictions"]), offline[2].images_from_latents(z)) <= 1


def test_predict_out_of_range_floats_are_accepted(client, latent):
    """json_tensor.cc AddValueToTensor DT_FLOAT: a double beyond float's range becomes inf (GetFloat()),
    and rapidjson (kParseNanAndInfFlag) reads 2e308 as infinity, NaN / Infinity / -Infinity as numbers."""
    for first in ("1e39", "2e308", "-Infinity", "NaN"):
        body = '{"instances": [[' + first + ", 0" * (latent - 1) + "]]}"
        r = predict(client, body)
        assert r.status_code == 200, (first, r.text[:300])


def test_predict_json_after_the_first_value_is_ignored(client, offline, latent):
    """json_tensor.cc ParseJson: rapidjson::kParseStopWhenDoneFlag stops at the end of the first value."""
    z = z_batch(1, latent, seed=6)
    body = json.dumps({"instances": z.tolist()}) + ' {"instances": "more"} trailing garbage ['
    r = predict(client, body)
    assert r.status_code == 200, r.text[:300]
    assert st.max_diff(np.asarray(r.json()["predictions"]), offline[2].images_from_latents(z)) <= 1


def test_predict_first_of_duplicated_keys(client, offline):
    """json_tensor.cc FillSignature / FillPredictRequestFromJson use FindMember: the first of repeated keys."""
    body = ('{"signature_name": "generate_png", "signature_name": "nope", '
            '"instances": [3, 4], "instances": "not a list"}')
    r = predict(client, body)
    assert r.status_code == 200, r.text[:300]
    assert st.max_diff(st.decode_b64_pngs(r.json()["predictions"]), offline[2].images_from_seeds([3, 4])) <= 1


@pytest.mark.parametrize("where,version", [({"version": 1}, 1), ({"version": 2}, 2),
                                           ({"label": "stable"}, 1), ({"label": "canary"}, 2)])
def test_predict_versions_and_labels(client, offline, latent, where, version):
    """http_rest_api_util.cc kPredictionApiGegex + FillModelSpecWithNameVersionAndLabel."""
    z = z_batch(2, latent, seed=5)
    r = predict(client, {"instances": z.tolist()}, **where)
    assert r.status_code == 200, r.text[:300]
    got = np.asarray(r.json()["predictions"])
    assert st.max_diff(got, offline[version].images_from_latents(z)) <= 1
    other = offline[3 - version].images_from_latents(z)
    assert st.max_diff(got, other) > 1  # the two versions are different models


# --------------------------------------------------------------------------- predict: generate_png


SEEDS = [0, 1, 7, 12345, 2**40 + 3]


@pytest.mark.parametrize("fmt", ["row", "columnar"])
def test_generate_png(client, offline, fmt):
    """json_tensor.cc AddValueToTensor DT_INT64 in, AddSingleValueAndAdvance "_bytes" -> {"b64": ...} out."""
    body = {"signature_name": "generate_png"}
    body["instances" if fmt == "row" else "inputs"] = SEEDS
    r = predict(client, body)
    assert r.status_code == 200, r.text[:300]
    items = r.json()["predictions" if fmt == "row" else "outputs"]
    assert len(items) == len(SEEDS) and all(set(it) == {"b64"} for it in items)
    assert base64.b64decode(items[0]["b64"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert st.max_diff(st.decode_b64_pngs(items), offline[2].images_from_seeds(SEEDS)) <= 1


def test_generate_png_matches_serving_default_on_recipe_latents(client, offline):
    """json_tensor.cc FillTensorMapFromInputsMap (named columnar input) on two signatures of one version."""
    seeds = [3, 4]
    png = predict(client, {"signature_name": "generate_png", "inputs": {"seed": seeds}}, version=1)
    z = latents_from_seeds(np.asarray(seeds), offline[1].latent_dim)
    img = predict(client, {"instances": z.tolist()}, version=1)
    assert png.status_code == img.status_code == 200
    assert st.max_diff(st.decode_b64_pngs(png.json()["outputs"]), np.asarray(img.json()["predictions"])) <= 1


def test_generate_png_named_row_and_label(client, offline):
    """json_tensor.cc FillTensorMapFromInstancesList (objects) with a version label."""
    r = predict(client, {"signature_name": "generate_png", "instances": [{"seed": 9}, {"seed": 10}]}, label="stable")
    assert r.status_code == 200, r.text[:300]
    assert st.max_diff(st.decode_b64_pngs(r.json()["predictions"]), offline[1].images_from_seeds([9, 10])) <= 1


def test_generate_images_signature_when_exported(client, offline):
    """http_rest_api_handler.cc GetInfoMap: any signature of the SavedModel by name."""
    meta = client.get(api() + "/metadata").json()["metadata"]["signature_def"]["signature_def"]
    if "generate_images" not in meta:
        pytest.skip("export has no generate_images signature")
    r = predict(client, {"signature_name": "generate_images", "instances": [5, 6]})
    assert r.status_code == 200
    assert st.max_diff(np.asarray(r.json()["predictions"]), offline[2].images_from_seeds([5, 6])) <= 1


# --------------------------------------------------------------------------- predict errors


def _z_row(latent):
    return [0.0] * latent


@pytest.mark.parametrize("body,message", [
    # json_tensor.cc ParseJson: its own empty check, then rapidjson 1.1.0's GetParseError_En + offset
    (b"", "JSON Parse error: The document is empty"),
    (b"   ", "JSON Parse error: The document is empty. at offset: 3"),
    (b"{instances: [1]}", "JSON Parse error: Missing a name for object member. at offset: 1"),
    (b'{"instances": [[1.0, 2.0]', "JSON Parse error: Missing a comma or ']' after an array element. at offset: 25"),
    (b'{"instances": [1.0,]}', "JSON Parse error: Invalid value. at offset: 19"),
    (b'{"instances": [1.0] "x": 1}', "JSON Parse error: Missing a comma or '}' after an object member. at offset: 20"),
    (b'{"instances" [1]}', "JSON Parse error: Missing a colon after a name of object member. at offset: 13"),
    (b'{"instances": [nul]}', "JSON Parse error: Invalid value. at offset: 18"),
    (b'{"instances": [1e999]}', "JSON Parse error: Number too big to be stored in double. at offset: 15"),
    (b'{"instances": [1.]}', "JSON Parse error: Miss fraction part in number. at offset: 17"),
    (b'{"signature_name": "\\q"}', "JSON Parse error: Invalid escape character in string. at offset: 20"),
    (b'{"signature_name": "\\ud800"}', "JSON Parse error: The surrogate pair in string is invalid. at offset: 20"),
    (b'{"signature_name": "abc', "JSON Parse error: Missing a closing quotation mark in string. at offset: 23"),
    # json_tensor.cc ParseJson: FormatError(doc, "Is not object")
    (b"[1, 2, 3]", "JSON Value: [1, 2, 3] Is not object"),
])
def test_predict_json_parse_errors(client, body, message):
    assert_error(predict(client, body), 400, message, exact=True)


@pytest.mark.parametrize("name,body,message", [
    # json_tensor.cc FillPredictRequestFromJson
    ("no inputs", {"signature_name": "serving_default"}, "Missing 'inputs' or 'instances' key"),
    ("instances not a list", {"instances": 3},
     'JSON Value: {\n    "instances": 3\n} Expecting \'instances\' to be an list/array'),
    ("empty instances", {"instances": []}, 'JSON Value: {\n    "instances": []\n} No values in \'instances\' array'),
    ("both keys", {"instances": [1], "inputs": [1]},
     'JSON Value: {\n    "instances": [1],\n    "inputs": [1]\n} Not formatted correctly expecting only one of '
     "'inputs' or 'instances' keys to exist "),
    # json_tensor.cc FormatSignatureError
    ("signature_name not a string", {"signature_name": 5, "instances": [1]},
     'JSON Value: {\n    "signature_name": 5,\n    "instances": [1]\n} not formatted correctly. '
     "'signature_name' key must be a string value."),
    # json_tensor.cc AddValueToTensor TypeError, wrapped by FillTensorMapFromInstancesList
    ("string for float", {"instances": [["a"]]},
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
     'JSON Value: "a" Type: String is not of expected type: float'),
    ("bool for float", {"instances": [[True]]},
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
     "JSON Value: true Type: True is not of expected type: float"),
    ("float seed", {"signature_name": "generate_png", "instances": [1.5]},
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
     "JSON Value: 1.5 Type: Number is not of expected type: int64"),
    ("string seed", {"signature_name": "generate_png", "instances": ["7"]},
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
     'JSON Value: "7" Type: String is not of expected type: int64'),
    ("b64 for int64", {"signature_name": "generate_png", "instances": [{"b64": "!!"}]},
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
     'JSON Value: {\n    "b64": "!!"\n} Type: Object is not of expected type: int64'),
    # json_tensor.cc AddInstanceItem / FillTensorProto
    ("ragged", "RAGGED", "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
                         "Expecting tensor size: {n} but got: {n1}"),
    ("nested too deep", {"signature_name": "generate_png", "instances": [[1], [2]]}, None),
    ("named row with extra key", {"signature_name": "generate_png", "instances": [{"seed": 1, "w": 1}]},
     "Failed to process element: 0 key: w of 'instances' list. Error: INVALID_ARGUMENT: "
     "JSON object: does not have named input: w"),
    ("named row missing key", {"signature_name": "generate_png", "instances": [{}]},
     "Failed to process element: 0 of 'instances' list. JSON object: {} keys must be equal to: seed"),
    ("object then list", {"signature_name": "generate_png", "instances": [{"seed": 1}, 2]},
     "Expecting object but got list at item 1 of input list"),
    ("list then object", {"signature_name": "generate_png", "instances": [1, {"seed": 2}]},
     "Expecting value/list but got object at item 1 of input list"),
    # json_tensor.cc FillTensorMapFromInputsMap
    ("columnar missing name", {"inputs": {"x": [[1.0]]}}, "Missing named input: z in 'inputs' object."),
    ("seed beyond int64", {"signature_name": "generate_png", "instances": [2**64]}, None),
])
def test_predict_invalid_argument(client, latent, name, body, message):
    if body == "RAGGED":
        body = {"instances": [_z_row(latent), _z_row(latent)[:-1]]}
        message = message.format(n=latent, n1=latent - 1)
    r = predict(client, body)
    assert_error(r, 400, message, exact=message is not None)


def test_predict_unknown_things(client):
    """ServerCore::GetServableHandle errors and http_rest_api_handler.cc GetInfoMap's signature message."""
    body = {"instances": [[0.0]]}
    assert_error(predict(client, body, model="no_such_model"), 404, "Servable not found for request")
    assert_error(predict(client, body, version=99), 404, "Servable not found for request")
    assert_error(predict(client, body, label="nope"), 400, "Unrecognized servable version label: nope")
    assert_error(predict(client, {"signature_name": "nope", "instances": [1]}), 400,
                 'Serving signature name: "nope" not found in signature def', exact=True)
    for path in (api() + ":explode", api() + "/versions/abc:predict"):
        assert_error(client.post(path, content=b"{}"), 400, f"Malformed request: POST {path}", exact=True)


def test_predict_larger_than_max_batch_size_is_refused(client):
    """SharedBatchScheduler ValidateBatchTaskQueueCapacity (TensorFlow's shared_batch_scheduler.h): a
    request of more rows than batching.config's max_batch_size (64) is refused, split or not."""
    r = predict(client, {"signature_name": "generate_png", "instances": list(range(65))})
    assert_error(r, 400, "Task size 65 is larger than maximum input batch size 64", exact=True)
    # up to max_batch_size rows run (split into max_execution_batch_size calls by enable_large_batch_splitting)
    r = predict(client, {"signature_name": "generate_png", "instances": list(range(64))})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 64


# --------------------------------------------------------------------------- classify / regress


def test_classify_and_regress_checks(client):
    """http_rest_api_handler.cc ProcessClassifyRequest/ProcessRegressRequest: json_tensor.cc
    FillClassifyRegressRequestFromJson first (its message says "classify" for both), then the model,
    then classifier.cc / regressor.cc Get*SignatureDef + PreProcess* (no method_name check unless
    --enable_signature_method_name_check)."""
    for verb, kind in (("classify", "classification"), ("regress", "regression")):
        r = client.post(api() + f":{verb}", content=json.dumps({"examples": [{"x": 1.0}]}))
        assert_error(r, 400, f"No {kind} inputs found in SignatureDef: inputs {{\n  key: \"z\"\n")
        assert r.json()["error"].endswith('method_name: "tensorflow/serving/predict"\n')
        r = client.post(api() + f":{verb}", content=json.dumps({"instances": [1]}))
        assert_error(r, 400, 'JSON Value: {\n    "instances": [1]\n} When method is classify, '
                             "key 'examples' is expected and was not found", exact=True)
        r = client.post(api() + f":{verb}", content=json.dumps({"signature_name": "nope", "examples": [{}]}))
        assert_error(r, 400, "No signature was found with the name: nope", exact=True)
        # the request is read before the model is looked up
        r = client.post(api(model="no_such_model") + f":{verb}", content=json.dumps({"examples": [[1]]}))
        assert_error(r, 400, "Example must be JSON object but got JSON Array", exact=True)
        r = client.post(api() + f":{verb}", content=json.dumps({"examples": {}}))
        assert_error(r, 400, 'JSON Value: {\n    "examples": {}\n} Expecting \'examples\' value to be an list/array',
                     exact=True)
        r = client.post(api() + f":{verb}", content=json.dumps({"examples": [{"f": [1, "a"]}]}))
        assert_error(r, 400, "Unexpected element type in feature: f expecting type: int64", exact=True)
        r = client.post(api(model="no_such_model") + f":{verb}", content=json.dumps({"examples": [{}]}))
        assert_error(r, 404, "Servable not found for request")


# --------------------------------------------------------------------------- HTTP methods, CORS, metrics


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_http_methods_are_malformed_requests(client, method):
    """http_rest_api_handler.cc ProcessRequest: only POST and GET are parsed; anything else keeps the
    initial status "Malformed request: METHOD path" (400)."""
    for path in (api() + ":predict", api()):
        r = client.request(method, path, content=b"{}")
        assert_error(r, 400, f"Malformed request: {method} {path}", exact=True)
    assert client.head(api()).status_code == 400


def test_options_is_a_cors_preflight(client):
    """http_server.cc RestApiRequestDispatcher::ProcessRequest: OPTIONS with an http(s) Origin is OK;
    without one FAILED_PRECONDITION "Origin header is missing in CORS preflight" (400, empty body)."""
    r = client.options(api() + ":predict", headers={"Origin": "https://example.com"})
    assert r.status_code == 200 and r.content == b""
    r = client.options(api() + ":predict")
    assert r.status_code == 400 and r.content == b""


def test_unknown_paths_are_not_found(client):
    """http_server.cc RestApiRequestDispatcher::Dispatch: only (?i)/v1/.* is handled."""
    assert client.get("/no/such/path").status_code == 404


def test_prometheus_metrics(client):
    """prometheus_exporter.cc GeneratePage + servables/tensorflow/util.cc RecordModelRequestCount
    (":tensorflow:serving:request_count{model_name,status}", status the error code's name)."""
    client.post(api() + ":predict", content=json.dumps({"signature_name": "generate_png", "instances": [1]}))
    predict(client, {"signature_name": "nope", "instances": [1]})
    r = client.get("/monitoring/prometheus/metrics")
    assert r.status_code == 200
    text = r.text
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="nebula",status="OK"}' in text
    assert ':tensorflow:serving:request_count{model_name="nebula",status="INVALID_ARGUMENT"}' in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert ':tensorflow:serving:request_latency_bucket{model_name="nebula",API="predict",entrypoint="REST",le="10"}' \
        in text


def test_prometheus_metrics_any_method(client):
    """http_server.cc CreateAndStartHttpServer registers the metrics path for every HTTP method."""
    for method in ("POST", "PUT", "DELETE"):
        r = client.request(method, "/monitoring/prometheus/metrics")
        assert r.status_code == 200 and "# TYPE" in r.text


@local_only
def test_prometheus_metrics_content(client):
    text = client.get("/monitoring/prometheus/metrics").text
    assert 'nebula_serving_requests_total{api="predict",model="nebula",status="200"}' in text
    assert "nebula_serving_request_latency_seconds_bucket" in text
    assert "nebula_serving_batch_size_bucket" in text
    assert 'nebula_serving_model_version_available{model="nebula",runtime="onnx",version="2"} 1.0' in text
    assert ":tensorflow:serving:batching_session:processed_batch_size_bucket" in text
    assert ':tensorflow:cc:saved_model:load_attempt_count{model_path="' in text
    # unknown model names never become label values
    predict(client, {"instances": [[0.0]]}, model="zzz_random_name")
    assert "zzz_random_name" not in client.get("/monitoring/prometheus/metrics").text


@local_only
def test_limits_body_and_instances(client, latent):
    big = b'{"instances": [' + b"1," * 200_000 + b"1]}"
    assert_error(predict(client, big), 413, "exceeds the limit")
    r = predict(client, {"signature_name": "generate_png", "instances": list(range(97))})
    assert_error(r, 400, "at most 96")


@local_only
def test_error_body_is_json_everywhere(client):
    for r in (client.get("/no/such/path"), client.put(api(), content=b"")):
        assert "error" in r.json()


# --------------------------------------------------------------------------- client CLI


def test_client_cli_writes_grid(url, offline, tmp_path):
    out = tmp_path / "grid.png"
    proc = subprocess.run(
        [sys.executable, "-m", "nebula_keras3", "client", "--url", url, "--model", MODEL, "-n", "4",
         "--seed", "10", "--label", "stable", "-o", str(out)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    from nebula_keras3.sampling.grid import make_grid

    grid = np.asarray(Image.open(out).convert("RGB"))
    want = make_grid(offline[1].images_from_seeds([10, 11, 12, 13]))
    assert st.max_diff(grid, want) <= 1


def test_client_cli_errors_are_one_line(url, tmp_path):
    port = st.free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "nebula_keras3", "client", "--url", f"http://127.0.0.1:{port}", "-n", "2",
         "-o", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "connection refused" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "nebula_keras3", "client", "--url", url, "--model", "no_such_model", "-n", "2",
         "-o", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "HTTP 404" in proc.stderr
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- versions on disk (local)


@local_only
def test_saved_model_only_version_served_by_tensorflow(model_dir, offline, tmp_path):
    tf_model_dir = tmp_path / "tfonly" / "nebula"
    st.copy_version(model_dir / "1", tf_model_dir, 1, with_onnx=False)
    srv = st.ServerProcess(["--model-base-path", str(tf_model_dir), "--model-name", MODEL],
                           log_path=tmp_path / "server.log", ready_timeout=120)
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            text = c.get("/monitoring/prometheus/metrics").text
            assert 'runtime="saved_model"' in text
            z = z_batch(3, offline[1].latent_dim, seed=11)
            r = predict(c, {"instances": z.tolist()})
            assert r.status_code == 200, r.text[:300]
            assert st.max_diff(np.asarray(r.json()["predictions"]), offline[1].images_from_latents(z)) <= 1
            r = predict(c, {"signature_name": "generate_png", "inputs": SEEDS})
            assert r.status_code == 200, r.text[:300]
            assert st.max_diff(st.decode_b64_pngs(r.json()["outputs"]), offline[1].images_from_seeds(SEEDS)) <= 1
            meta = c.get(api() + "/metadata").json()
            _, on_disk = read_saved_model_signatures(model_dir / "1")
            assert meta["metadata"]["signature_def"] == on_disk
            assert_error(predict(c, {"instances": [[0.0] * 3]}), 400)
    finally:
        assert srv.stop() == 0, srv.log_tail()


@local_only
def test_hot_pickup_of_new_version(model_dir, offline, tmp_path):
    live = tmp_path / "live" / "nebula"
    st.copy_version(model_dir / "1", live, 1)
    srv = st.ServerProcess(["--model-base-path", str(live.parent), "--model-name", MODEL, "--poll-seconds", "0.3"],
                           log_path=tmp_path / "server.log")
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            z = z_batch(2, offline[1].latent_dim, seed=12)
            r = predict(c, {"instances": z.tolist()})
            assert st.max_diff(np.asarray(r.json()["predictions"]), offline[1].images_from_latents(z)) <= 1
            st.copy_version(model_dir / "2", live, 2)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                states = {m["version"]: m["state"] for m in c.get(api()).json()["model_version_status"]}
                if states.get("2") == "AVAILABLE" and states.get("1") == "END":
                    break
                # requests keep working while versions change
                assert predict(c, {"instances": z.tolist()}).status_code == 200
                time.sleep(0.1)
            else:
                pytest.fail(f"version 2 not picked up: {states}")
            r = predict(c, {"instances": z.tolist()})
            assert st.max_diff(np.asarray(r.json()["predictions"]), offline[2].images_from_latents(z)) <= 1
            assert_error(predict(c, {"instances": z.tolist()}, version=1), 404)
            assert c.get(api(1)).json()["model_version_status"][0]["state"] == "END"
    finally:
        assert srv.stop() == 0, srv.log_tail()


@local_only
def test_config_file_reload_moves_labels(model_dir, offline, tmp_path):
    cfg = tmp_path / "models.config"

    def write(labels: dict, text: str | None = None):
        tmp = tmp_path / "models.config.tmp"
        if text is None:
            m = cf.ModelSpecConfig(MODEL, model_dir, cf.VersionPolicy("all"), labels)
            text = cf.render_model_config([m])
        tmp.write_text(text)
        os.replace(tmp, cfg)

    write({"stable": 1})
    srv = st.ServerProcess(["--model-config-file", str(cfg), "--poll-seconds", "0.2"],
                           log_path=tmp_path / "server.log", wait_versions=2)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            def label_version(label):
                r = c.get(api(label=label) + "/metadata")
                return r.json()["model_spec"]["version"] if r.status_code == 200 else r.status_code

            def wait_for(label, want):
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    if label_version(label) == want:
                        return
                    time.sleep(0.1)
                pytest.fail(f"label {label} never became {want}: {label_version(label)}")

            assert label_version("stable") == "1" and label_version("canary") == 400
            time.sleep(0.05)  # a distinct mtime for the rewrite
            write({"stable": 2, "canary": 1})
            wait_for("stable", "2")
            assert label_version("canary") == "1"
            z = z_batch(1, offline[2].latent_dim, seed=13)
            r = predict(c, {"instances": z.tolist()}, label="stable")
            assert st.max_diff(np.asarray(r.json()["predictions"]), offline[2].images_from_latents(z)) <= 1
            write({}, text="model_config_list { config { name: 'nebula' bad_field: 1 } }")
            time.sleep(1.0)  # a broken file is refused; the previous config stays
            assert label_version("stable") == "2"
            assert "keeping the previous model config" in srv.log_tail()
    finally:
        assert srv.stop() == 0, srv.log_tail()


@local_only
def test_base_path_outage_keeps_versions_serving(model_dir, offline, tmp_path):
    """A base path that cannot be listed for several polls (a mv-swap deploy, a mount hiccup) fails
    those polls only, as TF Serving's file-system source does: the version stays AVAILABLE and
    answers throughout, and the error is logged once for the whole outage."""
    live = tmp_path / "live" / "nebula"
    st.copy_version(model_dir / "2", live, 2)
    # Polls 0.5 s apart against writes 10 ms apart: only a copier stalled for a whole poll
    # interval (not a loaded machine's scheduling jitter) looks finished to the server.
    srv = st.ServerProcess(["--model-base-path", str(live), "--model-name", MODEL, "--poll-seconds", "0.5"],
                           log_path=tmp_path / "server.log")
    away = tmp_path / "away"
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            z = z_batch(1, offline[2].latent_dim, seed=21)
            want = offline[2].images_from_latents(z)
            os.rename(live, away)
            t_end = time.monotonic() + 1.5  # 15 poll intervals
            answered = 0
            while time.monotonic() < t_end:
                states = [v["state"] for v in c.get(api()).json()["model_version_status"]]
                assert states == ["AVAILABLE"], states
                r = predict(c, {"instances": z.tolist()})
                assert r.status_code == 200 and st.max_diff(np.asarray(r.json()["predictions"]), want) <= 1
                answered += 1
            os.rename(away, live)
            time.sleep(0.5)
            assert [v["state"] for v in c.get(api()).json()["model_version_status"]] == ["AVAILABLE"]
            assert predict(c, {"instances": z.tolist()}).status_code == 200
        srv.stop()
        log = srv.log_tail(100_000)
        assert answered > 5 and log.count("cannot list") == 1 and "can be listed again" in log, log[-2000:]
    finally:
        assert srv.stop() == 0, srv.log_tail()


@local_only
def test_version_folder_being_copied_is_not_loaded_half_written(model_dir, offline, tmp_path):
    """A version folder written in place (cp -r, rsync), not renamed into place as exports are: the
    server loads it only once two polls see it unchanged, never while files are still growing."""
    import threading

    live = tmp_path / "live" / "nebula"
    st.copy_version(model_dir / "1", live, 1)
    # Polls 0.5 s apart against writes 10 ms apart: only a copier stalled for a whole poll
    # interval (not a loaded machine's scheduling jitter) looks finished to the server.
    srv = st.ServerProcess(["--model-base-path", str(live), "--model-name", MODEL, "--poll-seconds", "0.5"],
                           log_path=tmp_path / "server.log")
    done = threading.Event()

    def slow_copy():  # every file in 1 KiB pieces, 10 ms apart: several polls see partial files
        src = model_dir / "2"
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            dst = live / "3" / path.relative_to(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            data = path.read_bytes()
            with open(dst, "wb") as f:
                for i in range(0, len(data), 1024):
                    f.write(data[i:i + 1024])
                    f.flush()
                    time.sleep(0.01)
        done.set()

    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            copier = threading.Thread(target=slow_copy)
            copier.start()
            seen = set()
            while not done.is_set():
                for v in c.get(api()).json()["model_version_status"]:
                    seen.add((v["version"], v["state"], v["status"]["error_code"]))
                time.sleep(0.03)
            copier.join()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                states = {v["version"]: v["state"] for v in c.get(api()).json()["model_version_status"]}
                if states.get("3") == "AVAILABLE":
                    break
                time.sleep(0.1)
            assert states.get("3") == "AVAILABLE", states
            assert not any(v == "3" for v, _, _ in seen), seen  # not even LOADING while being written
            assert all(code == "OK" for _, _, code in seen), seen
            z = z_batch(1, offline[2].latent_dim, seed=22)
            r = predict(c, {"instances": z.tolist()})
            assert st.max_diff(np.asarray(r.json()["predictions"]), offline[2].images_from_latents(z)) <= 1
    finally:
        assert srv.stop() == 0, srv.log_tail()


# --------------------------------------------------------------------------- warmup


def test_export_warmup_file_reads_with_tensorflow(model_dir):
    """assets.extra/tf_serving_warmup_requests is what TF Serving's --enable_model_warmup reads: a TFRecord
    file (tf.data.TFRecordDataset) of PredictionLog protos (tensorflow-serving-api's own class)."""
    from importlib.util import find_spec

    if find_spec("tensorflow") is None or find_spec("tensorflow_serving") is None:
        pytest.skip("needs tensorflow and tensorflow-serving-api")
    script = f"""
import json, numpy as np, tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
out = []
for raw in tf.data.TFRecordDataset({str(model_dir / "2" / "assets.extra" / "tf_serving_warmup_requests")!r}):
    log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
    req = log.predict_log.request
    out.append([log.WhichOneof("log_type"), req.model_spec.signature_name,
                {{k: [tf.dtypes.as_dtype(v.dtype).name, list(tf.make_ndarray(v).shape)] for k, v in req.inputs.items()}}])
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = json.loads(proc.stdout.strip().splitlines()[-1])
    d = latent_dim_of(model_dir)
    want = []
    for n in (1, 4):
        want += [["predict_log", "serving_default", {"z": ["float32", [n, d]]}],
                 ["predict_log", "generate_png", {"seed": ["int64", [n]]}],
                 ["predict_log", "generate_images", {"seed": ["int64", [n]]}]]
    assert sorted(map(json.dumps, records)) == sorted(map(json.dumps, want))


def latent_dim_of(model_dir) -> int:
    return st.offline_model(model_dir / "2").latent_dim


@local_only
@pytest.mark.parametrize("flag", [[], ["--no-enable-model-warmup"], ["--num-request-iterations-for-warmup", "3"]])
def test_serve_replays_the_warmup_file(model_dir, tmp_path, flag):
    """nebula serve replays the warmup requests before the version is AVAILABLE (TF's
    --enable_model_warmup, --num_request_iterations_for_warmup), and logs it."""
    srv = st.ServerProcess(["--model-base-path", str(model_dir), "--model-name", MODEL, "--log-level", "info", *flag],
                           log_path=tmp_path / "server.log")
    try:
        # each replayed request went through the batch queue before any client request
        batched = srv.metric(st.INPUT_BATCHES)
    finally:
        assert srv.stop() == 0, srv.log_tail()
    log = srv.log_tail(100_000)
    if flag == ["--no-enable-model-warmup"]:
        assert "warmup" not in log and batched == 0
    else:
        iterations = int(flag[1]) if flag else 1
        assert f"model nebula version 2: warmup ran {6 * iterations} request(s)" in log, log[-2000:]
        assert batched == 6 * iterations


@local_only
def test_a_broken_warmup_file_fails_the_load(model_dir, tmp_path):
    """saved_model_warmup_util.cc: a record that does not parse fails the version's load."""
    live = tmp_path / "live" / "nebula"
    st.copy_version(model_dir / "2", live, 2)
    warm = live / "2" / "assets.extra" / "tf_serving_warmup_requests"
    warm.write_bytes(warm.read_bytes()[:-7])  # a truncated last record
    srv = st.ServerProcess(["--model-base-path", str(live), "--model-name", MODEL],
                           log_path=tmp_path / "server.log", wait_versions=0)
    try:  # the first poll (loads and warmups included) ends before the server answers
        status = json.loads(st.http_get(f"{srv.url}{api(2)}")[1])
        s = status["model_version_status"][0]
        assert s["state"] == "END" and s["status"]["error_code"] == "UNKNOWN", status
        assert "warmup failed" in s["status"]["error_message"] and "truncated record" in s["status"]["error_message"]
    finally:
        assert srv.stop() == 0, srv.log_tail()
