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
from nebula_keras3.serving import testing as st  # noqa: E402
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
        return st.make_export(tmp_path_factory.getbasetemp() / "nebula_serving_export")
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
         "--max-instances", "64", "--max-body-bytes", str(256 * 1024)],
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
    return {v: st.OfflineModel(model_dir / str(v)) for v in (1, 2)}


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


def assert_error(r, status, contains: str | None = None):
    assert r.status_code == status, (r.status_code, r.text[:500])
    err = r.json()["error"]
    assert isinstance(err, str) and err
    if contains is not None:
        assert contains in err, err


def z_batch(n, latent, seed=0):
    return np.random.default_rng(seed).standard_normal((n, latent)).astype(np.float32)


# --------------------------------------------------------------------------- status


def test_status_all_versions(client):
    r = client.get(api())
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    mvs = r.json()["model_version_status"]
    by_version = {m["version"]: m for m in mvs}
    for v in ("1", "2"):
        assert by_version[v]["state"] == "AVAILABLE"
        assert by_version[v]["status"] == {"error_code": "OK", "error_message": ""}


@pytest.mark.parametrize("version", [1, 2])
def test_status_one_version(client, version):
    r = client.get(api(version))
    assert r.status_code == 200
    assert r.json() == {"model_version_status": [
        {"version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


@pytest.mark.parametrize("label,version", [("stable", "1"), ("canary", "2")])
def test_status_label(client, label, version):
    # TF Serving answers a label with the status of every version; nebula serve with the labelled one
    r = client.get(api(label=label))
    assert r.status_code == 200
    states = {m["version"]: m["state"] for m in r.json()["model_version_status"]}
    assert states[version] == "AVAILABLE"


def test_status_errors(client):
    assert_error(client.get(api(model="no_such_model")), 404, "no_such_model")
    assert_error(client.get(api(7)), 404, "Could not find version 7 of model")
    assert_error(client.get("/v1/models/"), 400)
    assert_error(client.get("/v1/models/nebula/versions/x"), 400)
    assert_error(client.get(api() + "/metadata/extra"), 400)


# --------------------------------------------------------------------------- metadata


def test_metadata_shape_and_signatures(client, model_dir, latent, offline):
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
    r = client.get(api() + path + "/metadata")
    assert r.status_code == 200
    assert r.json()["model_spec"]["version"] == version


def test_metadata_errors(client):
    assert_error(client.get(api(model="nope") + "/metadata"), 404, "Servable not found")
    assert_error(client.get(api(9) + "/metadata"), 404, "Servable not found")
    assert_error(client.get(api(label="nope") + "/metadata"), 400, "Unrecognized servable version label")


# --------------------------------------------------------------------------- predict: serving_default


def test_predict_row_format(client, offline, latent):
    z = z_batch(3, latent, seed=1)
    r = predict(client, {"instances": z.tolist()})
    assert r.status_code == 200, r.text[:300]
    preds = np.asarray(r.json()["predictions"], dtype=np.uint8)
    assert st.max_diff(preds, offline[2].images(z)) <= 1


def test_predict_row_named_and_signature_name(client, offline, latent):
    z = z_batch(2, latent, seed=2)
    r = predict(client, {"signature_name": "serving_default", "instances": [{"z": row} for row in z.tolist()]})
    assert r.status_code == 200, r.text[:300]
    assert st.max_diff(np.asarray(r.json()["predictions"]), offline[2].images(z)) <= 1


def test_predict_columnar(client, offline, latent):
    z = z_batch(4, latent, seed=3)
    for body in ({"inputs": z.tolist()}, {"inputs": {"z": z.tolist()}}):
        r = predict(client, body)
        assert r.status_code == 200, r.text[:300]
        doc = r.json()
        assert set(doc) == {"outputs"}
        assert st.max_diff(np.asarray(doc["outputs"]), offline[2].images(z)) <= 1


def test_predict_single_instance_and_special_numbers(client, offline, latent):
    z = z_batch(1, latent, seed=4)
    body = '{"instances": [[' + ",".join(["1e-3", "-2", "0"] + [repr(float(v)) for v in z[0, 3:]]) + "]]}"
    r = predict(client, body)
    assert r.status_code == 200, r.text[:300]
    z[0, :3] = [1e-3, -2, 0]
    assert st.max_diff(np.asarray(r.json()["predictions"]), offline[2].images(z)) <= 1


@pytest.mark.parametrize("where,version", [({"version": 1}, 1), ({"version": 2}, 2),
                                           ({"label": "stable"}, 1), ({"label": "canary"}, 2)])
def test_predict_versions_and_labels(client, offline, latent, where, version):
    z = z_batch(2, latent, seed=5)
    r = predict(client, {"instances": z.tolist()}, **where)
    assert r.status_code == 200, r.text[:300]
    got = np.asarray(r.json()["predictions"])
    assert st.max_diff(got, offline[version].images(z)) <= 1
    other = offline[3 - version].images(z)
    assert st.max_diff(got, other) > 1  # the two versions are different models


# --------------------------------------------------------------------------- predict: generate_png


SEEDS = [0, 1, 7, 12345, 2**40 + 3]


@pytest.mark.parametrize("fmt", ["row", "columnar"])
def test_generate_png(client, offline, fmt):
    body = {"signature_name": "generate_png"}
    body["instances" if fmt == "row" else "inputs"] = SEEDS
    r = predict(client, body)
    assert r.status_code == 200, r.text[:300]
    items = r.json()["predictions" if fmt == "row" else "outputs"]
    assert len(items) == len(SEEDS) and all(set(it) == {"b64"} for it in items)
    assert base64.b64decode(items[0]["b64"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert st.max_diff(st.decode_b64_pngs(items), offline[2].images_from_seeds(SEEDS)) <= 1


def test_generate_png_matches_serving_default_on_recipe_latents(client, offline):
    seeds = [3, 4]
    png = predict(client, {"signature_name": "generate_png", "inputs": {"seed": seeds}}, version=1)
    z = latents_from_seeds(np.asarray(seeds), offline[1].latent_dim)
    img = predict(client, {"instances": z.tolist()}, version=1)
    assert png.status_code == img.status_code == 200
    assert st.max_diff(st.decode_b64_pngs(png.json()["outputs"]), np.asarray(img.json()["predictions"])) <= 1


def test_generate_png_named_row_and_label(client, offline):
    r = predict(client, {"signature_name": "generate_png", "instances": [{"seed": 9}, {"seed": 10}]}, label="stable")
    assert r.status_code == 200, r.text[:300]
    assert st.max_diff(st.decode_b64_pngs(r.json()["predictions"]), offline[1].images_from_seeds([9, 10])) <= 1


def test_generate_images_signature_when_exported(client, offline):
    meta = client.get(api() + "/metadata").json()["metadata"]["signature_def"]["signature_def"]
    if "generate_images" not in meta:
        pytest.skip("export has no generate_images signature")
    r = predict(client, {"signature_name": "generate_images", "instances": [5, 6]})
    assert r.status_code == 200
    assert st.max_diff(np.asarray(r.json()["predictions"]), offline[2].images_from_seeds([5, 6])) <= 1


# --------------------------------------------------------------------------- predict errors


def _z_row(latent):
    return [0.0] * latent


@pytest.mark.parametrize("name,body,contains", [
    ("empty body", b"", "JSON Parse error"),
    ("not json", b"{instances: [1]}", "JSON Parse error"),
    ("truncated", b'{"instances": [[1.0, 2.0]', "JSON Parse error"),
    ("not an object", b"[1, 2, 3]", None),
    ("no inputs", {"signature_name": "serving_default"}, "Missing 'inputs' or 'instances' key"),
    ("both keys", "BOTH", None),
    ("instances not a list", {"instances": 3}, None),
    ("empty instances", {"instances": []}, None),
    ("signature_name not a string", {"signature_name": 5, "instances": [1]}, "'signature_name' key must be a string"),
    ("string for float", {"instances": [["a"]]}, None),
    ("bool for float", "BOOLROW", None),
    ("ragged", "RAGGED", None),
    ("wrong latent size", "SHORT", None),
    ("too deep", "DEEP", None),
    ("scalar z", {"inputs": 1.5}, None),
    ("b64 for float", {"instances": [{"b64": "AAAA"}]}, None),
    ("float seed", {"signature_name": "generate_png", "instances": [1.5]}, None),
    ("string seed", {"signature_name": "generate_png", "instances": ["7"]}, None),
    ("seed beyond int64", {"signature_name": "generate_png", "instances": [2**64]}, None),
    ("named row with extra key", "EXTRA", None),
    ("columnar missing name", {"inputs": {"x": [[1.0]]}}, "Missing named input: z"),
    ("lossy float", "LOSSY", "without loss of precision"),
])
def test_predict_invalid_argument(client, latent, name, body, contains):
    row = _z_row(latent)
    special = {
        "BOTH": {"instances": [row], "inputs": [row]},
        "BOOLROW": {"instances": [[True] + row[1:]]},
        "RAGGED": {"instances": [row, row[:-1]]},
        "SHORT": {"instances": [row[:-1]]},
        "DEEP": {"instances": [[row]]},
        "EXTRA": {"instances": [{"z": row, "w": 1}]},
        "LOSSY": {"instances": [[1e39] + row[1:]]},
    }
    if isinstance(body, str) and body in special:
        body = special[body]
    assert_error(predict(client, body), 400, contains)


def test_predict_unknown_things(client):
    body = {"instances": [[0.0]]}
    assert_error(predict(client, body, model="no_such_model"), 404, "Servable not found for request")
    assert_error(predict(client, body, version=99), 404, "Servable not found for request")
    assert_error(predict(client, body, label="nope"), 400, "Unrecognized servable version label: nope")
    assert_error(predict(client, {"signature_name": "nope", "instances": [1]}), 400, "nope")
    assert_error(client.post(api() + ":explode", content=b"{}"), 400)
    assert_error(client.post(api() + "/versions/abc:predict", content=b"{}"), 400)


def test_predict_invalid_base64_for_string_input(client):
    # no string inputs in these signatures: a b64 object where an int64 is expected is a type error
    assert_error(predict(client, {"signature_name": "generate_png", "instances": [{"b64": "!!"}]}), 400)


def test_classify_and_regress_refused(client):
    for verb in ("classify", "regress"):
        r = client.post(api() + f":{verb}", content=json.dumps({"examples": [{"x": 1.0}]}))
        assert_error(r, 400)


def test_wrong_http_method_and_paths(client):
    r = client.put(api() + ":predict", content=b"{}")
    assert r.status_code in (400, 405)
    r = client.delete(api())
    assert r.status_code in (400, 405)
    assert client.get("/no/such/path").status_code == 404


def test_prometheus_metrics(client):
    client.post(api() + ":predict", content=json.dumps({"signature_name": "generate_png", "instances": [1]}))
    r = client.get("/monitoring/prometheus/metrics")
    assert r.status_code == 200
    assert "# TYPE" in r.text


@local_only
def test_prometheus_metrics_content(client):
    text = client.get("/monitoring/prometheus/metrics").text
    assert 'nebula_serving_requests_total{api="predict",model="nebula",status="200"}' in text
    assert "nebula_serving_request_latency_seconds_bucket" in text
    assert "nebula_serving_batch_size_bucket" in text
    assert 'nebula_serving_model_version_available{model="nebula",runtime="onnx",version="2"} 1.0' in text
    # unknown model names never become label values
    predict(client, {"instances": [[0.0]]}, model="zzz_random_name")
    assert "zzz_random_name" not in client.get("/monitoring/prometheus/metrics").text


@local_only
def test_limits_body_and_instances(client, latent):
    big = b'{"instances": [' + b"1," * 200_000 + b"1]}"
    assert_error(predict(client, big), 413, "exceeds the limit")
    r = predict(client, {"signature_name": "generate_png", "instances": list(range(65))})
    assert_error(r, 400, "at most 64")
    r = predict(client, {"signature_name": "generate_png", "instances": list(range(64))})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 64


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
            assert st.max_diff(np.asarray(r.json()["predictions"]), offline[1].images(z)) <= 1
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
            assert st.max_diff(np.asarray(r.json()["predictions"]), offline[1].images(z)) <= 1
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
            assert st.max_diff(np.asarray(r.json()["predictions"]), offline[2].images(z)) <= 1
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
            assert st.max_diff(np.asarray(r.json()["predictions"]), offline[2].images(z)) <= 1
            write({}, text="model_config_list { config { name: 'nebula' bad_field: 1 } }")
            time.sleep(1.0)  # a broken file is refused; the previous config stays
            assert label_version("stable") == "2"
            assert "keeping the previous model config" in srv.log_tail()
    finally:
        assert srv.stop() == 0, srv.log_tail()
