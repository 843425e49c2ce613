"""Malformed requests against a running ``nebula serve``: never a 5xx, never a crash, always an answer."""

from __future__ import annotations

import json

import pytest

httpx = pytest.importorskip("httpx")
hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("onnxruntime")
pytest.importorskip("uvicorn")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as s  # noqa: E402

from support import serving as st  # noqa: E402

pytestmark = pytest.mark.backend_independent

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model_dir = st.session_export(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("fuzz")
    srv = st.ServerProcess(["--model-base-path", str(model_dir), "--model-name", "nebula",
                            "--max-body-bytes", str(1 << 20), "--max-instances", "64"],
                           log_path=tmp / "server.log")
    yield srv
    code = srv.stop()
    log = srv.log_tail(20000)
    assert code == 0, log
    assert "Traceback" not in log and "internal error" not in log, log


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def check(client, server, r):
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        body = r.json()
        assert isinstance(body.get("error"), str) and body["error"]
    assert server.proc.poll() is None


def post(client, body: bytes, path="/v1/models/nebula:predict"):
    return client.post(path, content=body, headers={"Content-Type": "application/json"})


numbers = s.one_of(
    s.integers(min_value=-(2**70), max_value=2**70),
    s.floats(allow_nan=True, allow_infinity=True),
    s.sampled_from([0, -0.0, 1e-45, 3.4e38, 3.5e38, 1.7e308, 2**63, -(2**63) - 1, 2**64]),
)
leaves = s.one_of(s.none(), s.booleans(), numbers, s.text(max_size=20),
                  s.builds(lambda t: {"b64": t}, s.text(max_size=12)))
values = s.recursive(leaves, lambda kids: s.one_of(s.lists(kids, max_size=6),
                                                   s.dictionaries(s.text(max_size=6), kids, max_size=4)),
                     max_leaves=40)
signatures = s.one_of(s.sampled_from(["serving_default", "generate_png", "generate_images", "", "nope"]),
                      s.integers(), s.none())


def dumps(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


@FUZZ
@given(body=s.binary(max_size=300))
def test_random_bytes(client, server, body):
    check(client, server, post(client, body))


@FUZZ
@given(key=s.sampled_from(["instances", "inputs", "examples", "both"]), value=values, sig=signatures,
       with_sig=s.booleans())
def test_json_shapes_and_dtypes(client, server, key, value, sig, with_sig):
    doc = {"instances": value, "inputs": value} if key == "both" else {key: value}
    if with_sig:
        doc["signature_name"] = sig
    check(client, server, post(client, dumps(doc)))


@FUZZ
@given(rows=s.lists(s.lists(numbers, min_size=0, max_size=20), min_size=1, max_size=5),
       sig=s.sampled_from(["serving_default", "generate_png"]), columnar=s.booleans())
def test_near_valid_tensors(client, server, rows, sig, columnar):
    key = "inputs" if columnar else "instances"
    check(client, server, post(client, dumps({"signature_name": sig, key: rows})))


@settings(FUZZ, max_examples=30)  # each body is up to 400 kB; the limit, not the count, is what it probes
@given(depth=s.integers(1, 200_000), key=s.sampled_from(["instances", "inputs"]), obj=s.booleans())
def test_deep_nesting(client, server, depth, key, obj):
    open_, close = (b'{"a":', b"}") if obj else (b"[", b"]")
    body = b'{"' + key.encode() + b'": ' + open_ * depth + b"1" + close * depth + b"}"
    check(client, server, post(client, body))


@FUZZ
@given(digits=s.integers(1, 20_000), exp=s.integers(-400_000, 400_000), neg=s.booleans())
def test_huge_numbers(client, server, digits, exp, neg):
    num = (b"-" if neg else b"") + b"9" * digits + b"e" + str(exp).encode()
    for body in (b'{"instances": [[' + num + b"]]}", b'{"signature_name": "generate_png", "instances": [' +
                 b"9" * digits + b"]}"):
        check(client, server, post(client, body))


@FUZZ
@given(path=s.text(alphabet=s.characters(min_codepoint=33, max_codepoint=126), max_size=60),
       method=s.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
def test_random_paths(client, server, path, method):
    url = "/v1/models/" + path.replace("?", "").replace("#", "")
    try:
        r = client.request(method, url, content=b"{}")
    except httpx.InvalidURL:
        return
    check(client, server, r)


@FUZZ
@given(b64=s.text(max_size=40), n=s.integers(1, 3))
def test_b64_objects(client, server, b64, n):
    for doc in ({"instances": [{"b64": b64}] * n}, {"inputs": {"b64": b64}},
                {"signature_name": "generate_png", "instances": [{"seed": {"b64": b64}}] * n}):
        check(client, server, post(client, dumps(doc)))


def test_server_still_answers_correctly_after_fuzzing(client, server):
    # runs last in this module: the server survived everything above and still computes
    r = client.get("/v1/models/nebula")
    assert r.status_code == 200
    r = post(client, dumps({"signature_name": "generate_png", "instances": [1, 2]}))
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2
