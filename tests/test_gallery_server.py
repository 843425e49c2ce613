"""The gallery page's server side (``nebula serve --ui``), in process, no browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("starlette")

import warnings  # noqa: E402

with warnings.catch_warnings():  # starlette's note about httpx vs httpx2: the client works either way
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

from nebula_keras3.serving import ui  # noqa: E402
from nebula_keras3.serving.server import create_app  # noqa: E402
from nebula_keras3.serving.config_files import BatchingOptions, ModelSpecConfig  # noqa: E402
from nebula_keras3.serving.options import ServerOptions  # noqa: E402

pytestmark = pytest.mark.backend_independent

MODELS = [ModelSpecConfig("nebula", Path("/nonexistent/a"), labels={"stable": 1, "canary": 2}),
          ModelSpecConfig("</script><b>x", Path("/nonexistent/b"))]


def client(ui_on: bool, **kw) -> TestClient:
    return TestClient(create_app(ServerOptions(models=MODELS, ui=ui_on, **kw)))  # no lifespan: nothing loads


def page_config(html: str) -> dict:
    m = re.search(r'<script id="nebula-ui-config" type="application/json">(.*?)</script>', html, re.S)
    assert m, "the page has no config block"
    return json.loads(m.group(1))


@pytest.mark.parametrize("path", ["/ui/", "/ui", "/ui/gallery.js", "/ui/gallery.css"])
def test_without_ui_the_page_is_an_unknown_path(path):
    """Without --ui, /ui/ answers exactly as any path outside /v1 does (TF Serving's 404)."""
    r = client(False).get(path, follow_redirects=False)
    assert r.status_code == 404
    assert r.content == b'{\n    "error": "No handler for GET ' + path.encode() + b'"\n}'
    assert "content-security-policy" not in r.headers


def test_page_and_assets_carry_a_strict_csp():
    c = client(True)
    for path, kind in (("/ui/", "text/html"), ("/ui/gallery.js", "text/javascript"), ("/ui/gallery.css", "text/css")):
        r = c.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), (path, r.headers)
        csp = r.headers["content-security-policy"]
        assert csp == ui.CONTENT_SECURITY_POLICY
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'" and directives["connect-src"] == "'self'"
        assert "unsafe" not in csp and "http" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"


def test_ui_redirects_and_leaves_other_paths_alone():
    c = client(True)
    r = c.get("/ui?model=x", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "/ui/?model=x"
    r = c.get("/ui/nope.js")  # not a file of the page: the API's 404, as before
    assert r.status_code == 404 and b"No handler for GET /ui/nope.js" in r.content
    r = c.post("/ui/")  # only GET/HEAD are the page's
    assert r.status_code == 404 and b"No handler for POST /ui/" in r.content
    assert c.get("/v1/models/nebula").status_code == 404  # the API still answers (nothing loaded here)


def test_page_config_names_the_served_models_labels_and_batch():
    html = client(True, batching=BatchingOptions(max_batch_size=64, enable_large_batch_splitting=True,
                                                 max_execution_batch_size=24), max_instances=256).get("/ui/").text
    cfg = page_config(html)
    assert cfg["models"] == [{"name": "nebula", "labels": ["canary", "stable"]},
                             {"name": "</script><b>x", "labels": []}]
    assert cfg["batch"] == 24
    assert "</script><b>" not in html  # a model name cannot end the JSON block
    assert ui.CONFIG_MARKER not in html


@pytest.mark.parametrize("kw,expect", [
    (dict(), 32),
    (dict(max_batch_size=64, enable_large_batch_splitting=True, max_execution_batch_size=16), 16),
    (dict(max_batch_size=64, allowed_batch_sizes=(8, 20, 64)), 64),
    (dict(max_batch_size=64, enable_large_batch_splitting=True, max_execution_batch_size=40,
          allowed_batch_sizes=(8, 20, 40)), 40),
    (dict(max_batch_size=32, allowed_batch_sizes=(8, 20, 32)), 20),  # max_instances 24 below
])
def test_page_batch_size(kw, expect):
    assert ui.page_batch_size(BatchingOptions(**kw), 24 if expect == 20 else 256) == expect


def test_page_loads_nothing_from_elsewhere():
    """The shipped files name no other origin and carry no inline script or style (the CSP forbids both)."""
    for f in sorted(ui.STATIC.iterdir()):
        text = f.read_text()
        assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text.replace("http://www.w3.org", "")), f.name
        if f.suffix == ".css":
            assert not re.search(r"(?i)@import|url\(", text), f.name
        if f.suffix == ".html":
            assert not re.search(r"\sstyle=", text), f.name
            assert not re.search(r"\son[a-z]+=", text), f.name
            for tag in re.findall(r"<script[^>]*>", text):
                assert 'src="gallery.js"' in tag or 'type="application/json"' in tag, tag
