"""The gallery page (``nebula serve --ui``) in a real headless Chromium, driven with selenium.

One server (two versions of a tiny export with different weights, labels stable/canary) and one
browser for the module; the tests run in file order and the last ones change the server (a version
goes away, then the server stops). Skips with the reason when no Chromium + chromedriver is
installed (``make browser`` installs Debian's; ``.ci/run`` does so in CI and sets
NEBULA_REQUIRE_BROWSER, which turns the skip into a failure).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nebula_keras3.serving.client import generate_png
from support import serving as st

pytestmark = pytest.mark.backend_independent

BATCH = 12  # --max-batch-size: the page asks for this many seeds per wall request
SIZE = 32  # st.make_export's image size


def _find_browser() -> tuple[str | None, str | None, str | None]:
    """(chromium, chromedriver, why not) from $CHROMIUM / $CHROMEDRIVER or the PATH."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, None, "selenium is not installed (pip install -e '.[dev]')"
    chrome = os.environ.get("CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not chrome or not driver:
        missing = " and ".join(n for n, p in (("chromium", chrome), ("chromedriver", driver)) if not p)
        return None, None, (f"no headless browser: {missing} not found "
                            "(make browser, or apt-get install chromium chromium-driver)")
    return chrome, driver, None


CHROME, DRIVER, NO_BROWSER = _find_browser()
# .ci/run sets NEBULA_REQUIRE_BROWSER after `make browser`: there a missing browser fails the tests
REQUIRED = os.environ.get("NEBULA_REQUIRE_BROWSER", "") not in ("", "0")
if NO_BROWSER and not REQUIRED:
    pytestmark = [pytestmark, pytest.mark.skip(reason=NO_BROWSER)]


@pytest.fixture(scope="module", autouse=True)
def _browser_present():
    if NO_BROWSER:
        pytest.fail(f"NEBULA_REQUIRE_BROWSER is set but {NO_BROWSER}")

CONFIG = """model_config_list {{
  config {{
    name: "nebula"
    base_path: "{base}"
    model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{
    name: "later"
    base_path: "{later}"
    model_platform: "tensorflow"
  }}
}}
"""


# Two untrained DCGAN generators (different weights) whose BatchNorm statistics are set to those
# of their own activations over 64 latents and whose RGB layer is scaled to unit spread: unlike a
# raw untrained generator (near-flat grey for every seed) each seed gives a clearly different
# image, so a wrong seed, latent or version cannot pass for the right one.
_EXPORT_SCRIPT = """
import json, sys
from pathlib import Path
import keras, numpy as np
from nebula_keras3.models import DCGANGenerator
from nebula_keras3.export.api import export_generator
from nebula_keras3.sampling.latents import latents_from_seeds
out, size, latent = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
z = latents_from_seeds(np.arange(64), latent)
for v in (1, 2):
    g = DCGANGenerator(size, latent_dim=latent, ngf=8, seed=v)
    for layer in g.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            a = np.asarray(keras.Model(g.inputs, layer.input)(z, training=False))
            layer.moving_mean.assign(a.mean(axis=(0, 1, 2)))
            layer.moving_variance.assign(a.var(axis=(0, 1, 2)))
    rgb = g.get_layer("to_rgb_convt")
    pre = np.asarray(keras.Model(g.inputs, rgb.output)(z, training=False))
    rgb.kernel.assign(rgb.kernel / float(pre.std()))
    run = out / f"run{v}"
    run.mkdir(parents=True)
    g.save(run / "generator.keras")
    (run / "generator.json").write_text(json.dumps({"latent_dim": latent, "image_size": size,
        "backend": "tensorflow", "epoch": 0, "step": 0, "preset": "gallery-test"}))
    export_generator(run, saved_model_base=out / "models", version=v, parity=False)
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    """``models/nebula`` with versions 1 and 2 (exported under TensorFlow in a subprocess)."""
    root = tmp_path_factory.mktemp("gallery")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", _EXPORT_SCRIPT, str(root), str(SIZE), "16"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "models" / "nebula"


@pytest.fixture(scope="module")
def server(served):
    cfg = served.parent / "models.config"
    (served.parent / "later").mkdir()  # a second model, with no version until a test copies one in
    cfg.write_text(CONFIG.format(base=served, later=served.parent / "later"))
    srv = st.ServerProcess(["--model-config-file", str(cfg), "--ui", "--poll-seconds", "0.3",
                            "--max-batch-size", str(BATCH)],
                           log_path=served.parent / "server.log", wait_versions=2)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROME
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1280,900", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=DRIVER))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, fn, timeout: float = 30.0, what: str = "condition"):
    """Poll ``fn(driver)`` until it is truthy; fail with the page's notice text when it never is."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn(driver)
        if value:
            return value
        if time.monotonic() > deadline:
            note = notice_text(driver)
            pill = driver.execute_script("return document.getElementById('status').innerText")
            pytest.fail(f"timed out waiting for {what}; status {pill!r}, notice {note!r}")
        time.sleep(0.1)


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def notice_text(driver) -> str:
    """The notice the page shows ('' when none is shown)."""
    return js(driver, "const n = document.getElementById('notice'); "
                      "return n.hidden ? '' : document.getElementById('notice-text').textContent")


LOADED_TILES = """return [...document.querySelectorAll('#wall .tile:not(.pending) img')]
  .filter(i => i.complete && i.naturalWidth > 0)
  .map(i => [Number(i.closest('.tile').dataset.seed), i.naturalWidth, i.naturalHeight, i.src,
             i.closest('.tile').dataset.version])"""


def decode_data_url(src: str) -> np.ndarray:
    from PIL import Image

    assert src.startswith("data:image/png;base64,"), src[:40]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def server_pngs(server, seeds, **kw) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
            for b in generate_png(server.url, "nebula", seeds, **kw)]


def open_page(browser, server, query: str = ""):
    browser.get(f"{server.url}/ui/{query}")
    wait(browser, lambda d: js(d, "return document.getElementById('status').dataset.state") == "ok",
         what="the model to be ready")


def test_wall_fills_with_decoded_images_and_scrolls_in_batches(browser, server):
    open_page(browser, server)
    tiles = wait(browser, lambda d: len(t := js(d, LOADED_TILES)) >= BATCH and t, what="the wall")
    assert all(w == SIZE and h == SIZE for _, w, h, _, _ in tiles), tiles[:3]
    seeds = [t[0] for t in tiles]
    assert seeds == list(range(len(seeds))) and len(seeds) % BATCH == 0, seeds
    # each tile is the server's image of the seed it names (the latest version, 2)
    assert {t[4] for t in tiles} == {"2"}
    want = server_pngs(server, [0, 5], version=2)
    assert np.array_equal(decode_data_url(tiles[0][3]), want[0])
    assert np.array_equal(decode_data_url(tiles[5][3]), want[1])
    assert np.abs(want[0].astype(int) - want[1]).mean() > 10  # seeds give clearly different images
    # scrolling to the end asks for the next batch
    before = len(js(browser, "return document.querySelectorAll('#wall .tile')"))
    js(browser, "window.scrollTo(0, document.body.scrollHeight)")
    wait(browser, lambda d: len(js(d, LOADED_TILES)) >= before + BATCH, what="more tiles after scrolling")
    # the seed shows on hover
    from selenium.webdriver.common.action_chains import ActionChains

    js(browser, "window.scrollTo(0, 0)")
    tile = browser.find_element("css selector", "#wall .tile[data-seed='3']")
    ActionChains(browser).move_to_element(tile).perform()
    cap = tile.find_element("css selector", "figcaption")
    wait(browser, lambda d: cap.value_of_css_property("opacity") == "1", what="the seed caption on hover")
    assert cap.text == "seed 3"


def test_click_opens_the_large_view(browser, server, tmp_path):
    tile = browser.find_element("css selector", "#wall .tile[data-seed='4']")
    tile.click()
    wait(browser, lambda d: js(d, "return document.getElementById('viewer').open"), what="the large view")
    img = browser.find_element("id", "viewer-img")
    wait(browser, lambda d: js(d, "return arguments[0].naturalWidth", img) == SIZE, what="the large image")
    assert "seed 4" in browser.find_element("id", "viewer-title").text
    assert js(browser, "return arguments[0].getBoundingClientRect().width", img) > 4 * SIZE  # fit to window
    browser.find_element("id", "viewer-fit").click()  # full size: one screen pixel per image pixel
    assert js(browser, "return arguments[0].getBoundingClientRect().width", img) == SIZE
    browser.find_element("id", "viewer-fit").click()
    assert img.value_of_css_property("image-rendering") != "pixelated"
    browser.find_element("id", "viewer-pixelated").click()
    assert img.value_of_css_property("image-rendering") == "pixelated"
    link = browser.find_element("id", "viewer-download")
    assert link.get_attribute("download") == "nebula-v2-seed4.png"
    downloads = tmp_path / "downloads"
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    link.click()
    saved = downloads / "nebula-v2-seed4.png"
    wait(browser, lambda d: saved.is_file() and saved.stat().st_size > 0, what="the downloaded PNG")
    assert saved.read_bytes() == generate_png(server.url, "nebula", [4], version=2)[0]
    browser.find_element("id", "viewer-close").click()
    wait(browser, lambda d: not js(d, "return document.getElementById('viewer').open"), what="the view to close")


FRAME = """const c = document.getElementById('interp-canvas');
return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"""


def canvas_rgb(browser) -> np.ndarray:
    rgba = np.asarray(js(browser, FRAME), dtype=np.int16).reshape(SIZE, SIZE, 4)
    return rgba[..., :3]


def test_slider_moves_between_two_seeds(browser, server):
    browser.find_element("id", "tab-interp").click()
    wait(browser, lambda d: js(d, "return document.querySelectorAll('#interp-strip canvas').length") == 16,
         what="the interpolation strip")
    slider = browser.find_element("id", "interp-slider")
    a, b = server_pngs(server, [0, 1], version=2)
    first = canvas_rgb(browser)
    # the page draws latents as sampling/latents.py does: its first and last frames, rendered from
    # latents through serving_default, are the seeds' own images (generate_png) to float32 rounding
    assert np.abs(first - a).max() <= 2 and np.abs(first - b).mean() > 10
    from selenium.webdriver.common.keys import Keys

    slider.send_keys(Keys.ARROW_RIGHT)
    middle = canvas_rgb(browser)
    assert not np.array_equal(middle, first)
    slider.send_keys(Keys.END)
    last = canvas_rgb(browser)
    assert np.abs(last - b).max() <= 2 and not np.array_equal(last, first)
    assert "t = 1.000" in browser.find_element("id", "interp-pos").text
    browser.find_element("id", "interp-play").click()  # plays the strip: the slider moves by itself
    wait(browser, lambda d: slider.get_attribute("value") not in ("15",), what="playback")
    browser.find_element("id", "interp-play").click()
    # a negative seed and one past 32 bits: the page splits int64 seeds as the recipe does
    seeds = (-5, 2**40 + 3)
    for field, value in (("seed-a", seeds[0]), ("seed-b", seeds[1]), ("steps", 2)):
        box = browser.find_element("id", field)
        box.clear()
        box.send_keys(str(value))
    browser.find_element("css selector", "#interp-form button").click()
    wait(browser, lambda d: js(d, "return document.querySelectorAll('#interp-strip canvas').length") == 2,
         what="the two-step strip")
    a, b = server_pngs(server, seeds, version=2)
    assert np.abs(canvas_rgb(browser) - a).max() <= 2
    slider.send_keys(Keys.END)
    assert np.abs(canvas_rgb(browser) - b).max() <= 2


def test_compare_shows_two_versions_for_the_same_seeds(browser, server):
    from selenium.webdriver.support.select import Select

    browser.find_element("id", "tab-compare").click()
    pairs = wait(browser, lambda d: js(d, """return [...document.querySelectorAll('#compare .pair')]
        .map(p => [Number(p.dataset.seed), ...[...p.querySelectorAll('img')].map(i => i.src)])"""),
        what="the comparison")
    assert Select(browser.find_element("id", "compare-a")).first_selected_option.text == "version 1"
    assert Select(browser.find_element("id", "compare-b")).first_selected_option.text == "version 2"
    seeds = [p[0] for p in pairs]
    assert seeds == list(range(12))
    v1, v2 = server_pngs(server, seeds, version=1), server_pngs(server, seeds, version=2)
    for (seed, left, right), a, b in zip(pairs, v1, v2):
        assert np.array_equal(decode_data_url(left), a) and np.array_equal(decode_data_url(right), b)
        assert np.abs(a.astype(int) - b).mean() > 10, seed  # the two versions differ for the same seed
    # a label names its version: stable (1) against version 1 is the same picture
    Select(browser.find_element("id", "compare-b")).select_by_value("label:stable")
    browser.find_element("css selector", "#compare-form button").click()
    wait(browser, lambda d: "label stable" in js(d, "const h = document.querySelector('.compare-head'); "
                                                    "return h ? h.textContent : ''"),
         what="the label comparison")
    same = js(browser, "return [...document.querySelectorAll('#compare .pair')].map(p => "
                       "[...p.querySelectorAll('img')].map(i => i.src))")
    assert same and all(left == right for left, right in same)
    browser.find_element("id", "tab-wall").click()


def test_page_loads_nothing_from_outside_the_server(browser, server):
    status, _ = st.http_get(f"{server.url}/ui/")
    assert status == 200
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/ui/") as r:
        csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    urls = js(browser, "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)]")
    assert len(urls) > 3  # the page, its script and style, and API calls
    outside = [u for u in urls if not u.startswith((server.url + "/", "data:", "blob:"))]
    assert not outside, outside
    assert any("/v1/models/nebula" in u for u in urls)
    logs = browser.get_log("browser")
    assert not [e for e in logs if "Content Security Policy" in e["message"] or e["level"] == "SEVERE"], logs


def test_api_errors_show_in_words(browser, server):
    browser.get(f"{server.url}/ui/?model=no_such_model")
    text = wait(browser, lambda d: notice_text(d), what="a notice")
    assert "no_such_model" in text and "HTTP 404" in text and "Could not find any versions of model" in text
    assert js(browser, "return document.getElementById('status').dataset.state") == "error"


def test_a_model_waits_for_its_first_version(browser, server, served):
    from selenium.webdriver.support.select import Select

    open_page(browser, server)
    Select(browser.find_element("id", "model")).select_by_value("later")
    text = wait(browser, lambda d: "no version loaded yet" in (t := notice_text(d)) and t, what="the waiting notice")
    assert "Model later" in text
    assert js(browser, "return document.getElementById('status').dataset.state") == "loading"
    assert not js(browser, LOADED_TILES)
    st.copy_version(served / "2", served.parent / "later", 7)  # the server picks it up and loads it
    tiles = wait(browser, lambda d: js(d, LOADED_TILES), what="the wall once version 7 loaded")
    assert {t[4] for t in tiles} == {"7"}
    assert js(browser, "return document.getElementById('status').dataset.state") == "ok"
    assert js(browser, "return document.getElementById('notice').hidden")


BUSY_FETCH = """
(() => {
  const real = window.fetch.bind(window);
  let left = 2;
  window.__busyAnswers = 0;
  window.fetch = (url, init) => {
    if (String(url).includes(':predict') && left > 0) {
      left--; window.__busyAnswers++;
      const code = left ? 429 : 503;
            return Promise.resolve(new Response('{ "error": "Too many concurrent requests (limit 1); retry later" }',
        {status: code, headers: {'Content-Type': 'application/json', 'Retry-After': '0'}}));
    }
    return real(url, init);
  };
  window.__notices = [];  // every notice text the page shows, however briefly
  document.addEventListener('DOMContentLoaded', () => {
    const box = document.getElementById('notice-text');
    new MutationObserver(() => window.__notices.push(box.textContent))
      .observe(box, {childList: true, characterData: true, subtree: true});
  });
})();
"""


def test_busy_answers_back_off_and_retry(browser, server):
    """429 then 503 on the first predict calls (a fetch that answers as a loaded server does): the
    page says so, waits, retries, and the wall fills."""
    added = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": BUSY_FETCH})
    try:
        browser.get(f"{server.url}/ui/")
        wait(browser, lambda d: len(js(d, LOADED_TILES)) >= BATCH, what="the wall after retries")
        assert js(browser, "return window.__busyAnswers") == 2
        notices = js(browser, "return window.__notices")
        assert any(n.startswith("Server busy (HTTP 429: Too many concurrent requests") and "retrying in" in n
                   for n in notices), notices
        assert any(n.startswith("Server busy (HTTP 503") for n in notices), notices
        assert js(browser, "return document.getElementById('notice').hidden")  # cleared once answered
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": added["identifier"]})


RETRY_AFTER_FETCH = """
(() => {
  const real = window.fetch.bind(window);
  let left = 1;
  window.__predictTimes = [];
  Math.random = () => 0;  // the jitter at its low end
  window.fetch = (url, init) => {
    if (String(url).includes(':predict')) {
      window.__predictTimes.push(performance.now());
      if (left > 0) {
        left--;
        return Promise.resolve(new Response('{ "error": "Too many concurrent requests (limit 1); retry later" }',
          {status: 503, headers: {'Content-Type': 'application/json', 'Retry-After': '1'}}));
      }
    }
    return real(url, init);
  };
})();
"""


def test_a_busy_answer_is_retried_no_sooner_than_its_retry_after(browser, server):
    """The back-off's jitter may shorten its own wait but never the server's Retry-After."""
    added = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RETRY_AFTER_FETCH})
    try:
        browser.get(f"{server.url}/ui/")
        wait(browser, lambda d: len(js(d, LOADED_TILES)) >= BATCH, what="the wall after the retry")
        first, retry = js(browser, "return window.__predictTimes")[:2]
        assert retry - first >= 1000, retry - first
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": added["identifier"]})


def test_a_version_that_goes_away_is_shown(browser, server, served):
    from selenium.webdriver.support.select import Select

    open_page(browser, server)
    Select(browser.find_element("id", "source")).select_by_value("version:1")
    wait(browser, lambda d: {t[4] for t in js(d, LOADED_TILES)} == {"1"}, what="the wall of version 1")
    os.rename(served / "1", served / ".gone-1")  # the server unloads it on its next look
    text = wait(browser, lambda d: "no longer served" in (t := notice_text(d))
                and t, what="the gone-version notice")
    assert "Version 1 of nebula" in text
    assert js(browser, "return document.getElementById('status').dataset.state") == "error"
    browser.find_element("id", "notice-retry").click()  # "Show the latest"
    wait(browser, lambda d: (t := js(d, LOADED_TILES)) and {x[4] for x in t} == {"2"}, what="the latest version's wall")
    assert js(browser, "return document.getElementById('status').dataset.state") == "ok"


def test_a_stopped_server_shows_the_error_state(browser, server):
    server.stop()
    wait(browser, lambda d: js(d, "return document.getElementById('status').dataset.state") == "error",
         timeout=30, what="the error state")
    text = notice_text(browser)
    assert "cannot reach the server" in text and "is nebula serve running?" in text
