// nebula gallery: a page over TF Serving's public REST API v1 (same origin, no other requests).
//   GET  /v1/models/NAME                       versions + states (polled)
//   GET  /v1/models/NAME/versions/N/metadata   signatures (image size, latent size)
//   POST /v1/models/NAME/versions/N:predict    generate_png (seeds -> PNGs), serving_default (z -> pixels)
//   POST /v1/models/NAME/labels/L:predict      the same through a version label
// Served model names, labels and the batch size come from the page itself (see serving/ui/__init__.py).
"use strict";

(() => {
  const POLL_MS = 2500;            // status poll while things are fine
  const POLL_MAX_MS = 10000;       // ... and its back-off ceiling while the server is unreachable
  const RETRIES = 6;               // 429 / 503 answers retried this many times per request
  const RETRY_BASE_MS = 400;       // first back-off (doubles, jittered, at least Retry-After)
  const RETRY_MAX_MS = 8000;
  const PLAY_MS = 90;              // interpolation playback: one frame every PLAY_MS

  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;

  // ------------------------------------------------------------------ settings

  function intParam(v, lo, hi) {
    const n = Number(v);
    return v !== null && v !== "" && Number.isInteger(n) && n >= lo && n <= hi ? n : null;
  }

  function readSettings() {
    let served = {};
    try {
      served = JSON.parse($("nebula-ui-config").textContent) || {};
    } catch (e) {
      served = {};  // the static file without a server filling it in: query parameters only
    }
    const q = new URLSearchParams(location.search);
    const models = new Map();
    for (const m of served.models || []) models.set(m.name, new Set(m.labels || []));
    const asked = q.getAll("model").filter(Boolean);
    for (const name of asked) if (!models.has(name)) models.set(name, new Set());
    if (!models.size) models.set("nebula", new Set());
    for (const label of q.getAll("label").filter(Boolean)) for (const s of models.values()) s.add(label);
    return {
      models,
      served: new Set((served.models || []).map((m) => m.name)),  // what the server's config names
      first: asked[0] || models.keys().next().value,
      batch: intParam(q.get("batch"), 1, 4096) || served.batch || 16,
      seed: intParam(q.get("seed"), -(2 ** 53) + 1, 2 ** 53 - 1) || 0,
    };
  }

  const settings = readSettings();

  // ------------------------------------------------------------------ latents (sampling/latents.py)

  // The seed -> latent recipe of nebula_keras3.sampling.latents, integer steps exact (32-bit
  // lowbias32 hashing), floats rounded to float32 after each step as numpy's float32 math does.
  const GOLDEN = 0x9e3779b9, C1 = 0x7feb352d, C2 = 0x846ca68b;
  const f32 = Math.fround;
  const TWO_PI = f32(2 * Math.PI);
  const INV_2_24 = 1 / 16777216;

  function hash32(x) {
    x = (x ^ (x >>> 16)) >>> 0;
    x = Math.imul(x, C1) >>> 0;
    x = (x ^ (x >>> 15)) >>> 0;
    x = Math.imul(x, C2) >>> 0;
    return (x ^ (x >>> 16)) >>> 0;
  }

  function latentFromSeed(seed, dim) {
    const s = BigInt.asUintN(64, BigInt(seed));
    const lo = Number(s & 0xffffffffn), hi = Number(s >> 32n);
    const base = hash32((hash32((lo + GOLDEN) >>> 0) ^ hi) >>> 0);
    const z = new Float32Array(dim + 1);
    for (let k = 0; 2 * k < dim; k++) {
      const a = hash32((base + (Math.imul(2 * k + 1, GOLDEN) >>> 0)) >>> 0);
      const b = hash32((base + (Math.imul(2 * k + 2, GOLDEN) >>> 0)) >>> 0);
      const u1 = ((a >>> 8) + 1) * INV_2_24, u2 = (b >>> 8) * INV_2_24;
      const r = f32(Math.sqrt(f32(-2 * f32(Math.log(u1)))));
      const theta = f32(TWO_PI * u2);
      z[2 * k] = f32(r * f32(Math.cos(theta)));
      z[2 * k + 1] = f32(r * f32(Math.sin(theta)));
    }
    return z.subarray(0, dim);
  }

  // sampling/interpolate.py slerp: float64 math, float32 result; linear when (anti)parallel
  function slerp(z0, z1, t) {
    let dot = 0, n0 = 0, n1 = 0;
    for (let i = 0; i < z0.length; i++) { dot += z0[i] * z1[i]; n0 += z0[i] * z0[i]; n1 += z1[i] * z1[i]; }
    const cos = Math.min(1, Math.max(-1, dot / Math.max(Math.sqrt(n0) * Math.sqrt(n1), 1e-12)));
    const omega = Math.acos(cos), so = Math.sin(omega);
    const out = new Float32Array(z0.length);
    for (let i = 0; i < z0.length; i++) {
      out[i] = so < 1e-6 ? (1 - t) * z0[i] + t * z1[i]
        : (Math.sin((1 - t) * omega) * z0[i] + Math.sin(t * omega) * z1[i]) / so;
    }
    return out;
  }

  // ------------------------------------------------------------------ notices and status

  let noticeAction = null;

  function notice(text, kind = "warn", action = null) {
    const box = $("notice");
    if (!text) { box.hidden = true; box.dataset.kind = ""; noticeAction = null; return; }
    $("notice-text").textContent = text;
    box.dataset.kind = kind;
    box.hidden = false;
    noticeAction = action;
    $("notice-retry").hidden = !action;
    if (action) $("notice-retry").textContent = action.label;
  }

  function clearNotice(kind) {
    if (!$("notice").hidden && (!kind || $("notice").dataset.kind === kind)) notice(null);
  }

  function pill(state, text) {
    const p = $("status");
    p.dataset.state = state;
    p.textContent = text;
  }

  // ------------------------------------------------------------------ REST calls

  class ApiError extends Error {
    constructor(message, status, kind) {
      super(message);
      this.status = status;   // HTTP status, 0 when there was no answer
      this.kind = kind;       // "network" | "busy" | "http" | "reply"
    }
  }

  const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

  async function errorText(resp) {
    const text = await resp.text().catch(() => "");
    try {
      const j = JSON.parse(text);
      if (j && typeof j.error === "string") return j.error;
    } catch (e) { /* not JSON */ }
    return text.trim().slice(0, 300) || resp.statusText || "no details";
  }

  async function api(path, body) {
    let backoff = RETRY_BASE_MS;
    for (let attempt = 0; ; attempt++) {
      let resp;
      try {
        resp = await fetch(path, body === undefined
          ? { cache: "no-store" }
          : { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
      } catch (e) {
        throw new ApiError(`cannot reach the server at ${location.host} (is nebula serve running?)`, 0, "network");
      }
      if (resp.ok) {
        let json;
        try {
          json = await resp.json();
        } catch (e) {
          throw new ApiError(`${path} answered something that is not JSON`, resp.status, "reply");
        }
        clearNotice("busy");
        return json;
      }
      const message = await errorText(resp);
      if ((resp.status === 429 || resp.status === 503) && attempt < RETRIES) {
        const after = parseFloat(resp.headers.get("Retry-After")) * 1000;
        // the jitter spreads the back-off; the server's Retry-After is a floor it never goes under
        const wait = Math.max(backoff * (0.75 + 0.5 * Math.random()), Number.isFinite(after) ? after : 0);
        notice(`Server busy (HTTP ${resp.status}: ${message}); retrying in ${(wait / 1000).toFixed(1)} s`, "busy");
        pill("busy", "busy");
        await sleep(wait);
        backoff = Math.min(RETRY_MAX_MS, backoff * 2);
        continue;
      }
      const busy = resp.status === 429 || resp.status === 503;
      throw new ApiError(`HTTP ${resp.status}${busy ? ` (still busy after ${RETRIES} retries)` : ""}: ${message}`,
        resp.status, busy ? "busy" : "http");
    }
  }

  const modelPath = (model) => `/v1/models/${enc(model)}`;

  function sourcePath(model, src) {
    if (src.kind === "version") return `${modelPath(model)}/versions/${src.value}`;
    if (src.kind === "label") return `${modelPath(model)}/labels/${enc(src.value)}`;
    return modelPath(model);
  }

  function outputOf(pred, name) {
    return pred !== null && typeof pred === "object" && !Array.isArray(pred) && name in pred && !("b64" in pred)
      ? pred[name] : pred;
  }

  async function predict(path, signature, instances) {
    const reply = await api(`${path}:predict`, { signature_name: signature, instances });
    const preds = reply && reply.predictions;
    if (!Array.isArray(preds) || preds.length !== instances.length) {
      throw new ApiError(`${path}:predict: expected ${instances.length} predictions`, 200, "reply");
    }
    return preds;
  }

  async function pngsForSeeds(path, seeds) {
    const preds = await predict(path, "generate_png", seeds);
    return preds.map((p) => {
      const v = outputOf(p, "png_bytes");
      if (!v || typeof v.b64 !== "string") throw new ApiError("generate_png did not answer {\"b64\": ...} PNGs", 200, "reply");
      return v.b64;
    });
  }

  async function framesForLatents(path, zs, size) {
    const out = [];
    for (let i = 0; i < zs.length; i += settings.batch) {
      const part = zs.slice(i, i + settings.batch).map((z) => Array.from(z));
      const preds = await predict(path, "serving_default", part);
      for (const p of preds) out.push(toImageData(outputOf(p, "images"), size));
    }
    return out;
  }

  function toImageData(rows, size) {
    if (!Array.isArray(rows) || rows.length !== size) throw new ApiError("serving_default answered an image of another size", 200, "reply");
    const data = new Uint8ClampedArray(size * size * 4);
    let o = 0;
    for (const row of rows) {
      for (const px of row) { data[o] = px[0]; data[o + 1] = px[1]; data[o + 2] = px[2]; data[o + 3] = 255; o += 4; }
    }
    return new ImageData(data, size, size);
  }

  // ------------------------------------------------------------------ model state

  const st = {
    model: settings.first,
    versions: [],          // [{version, state, code, message}] newest first
    available: [],         // AVAILABLE version numbers, newest first
    source: { kind: "latest", value: null },
    pinned: null,          // the version the wall renders (the latest one for "latest")
    meta: null,            // {version, size, latent}
    epoch: 0,              // bumped on every change of what is shown: late answers are dropped
    reachable: true,
    gone: false,           // the chosen version disappeared
    compareSet: false,     // the comparison's two sides have their defaults
  };

  const labelsOf = (model) => [...(settings.models.get(model) || [])].sort();

  function srcKey(src) { return src.kind === "latest" ? "latest" : `${src.kind}:${src.value}`; }

  function parseSrc(key) {
    if (key.startsWith("version:")) return { kind: "version", value: Number(key.slice(8)) };
    if (key.startsWith("label:")) return { kind: "label", value: key.slice(6) };
    return { kind: "latest", value: null };
  }

  function srcName(src) {
    if (src.kind === "version") return `version ${src.value}`;
    if (src.kind === "label") return `label ${src.value}`;
    return st.available.length ? `latest (version ${st.available[0]})` : "latest";
  }

  // the path the wall and the large view use: "latest" pinned to a version so one wall is one version
  function wallPath() {
    if (st.source.kind === "latest") return st.pinned === null ? null : sourcePath(st.model, { kind: "version", value: st.pinned });
    return sourcePath(st.model, st.source);
  }

  function fillSelect(sel, options, wanted) {
    const keep = wanted !== undefined ? wanted : sel.value;
    const key = JSON.stringify(options);
    if (sel.dataset.options !== key) {  // rebuilt only when they change: an open list stays open
      sel.dataset.options = key;
      sel.replaceChildren(...options.map(([value, text, disabled]) => {
        const o = document.createElement("option");
        o.value = value; o.textContent = text; o.disabled = !!disabled;
        return o;
      }));
    }
    if (options.some(([v]) => v === keep) && sel.value !== keep) sel.value = keep;
  }

  function sourceOptions(withLatest) {
    const opts = withLatest ? [["latest", srcName({ kind: "latest" })]] : [];
    for (const v of st.versions) {
      const ok = v.state === "AVAILABLE";
      opts.push([`version:${v.version}`, `version ${v.version}${ok ? "" : ` (${v.state.toLowerCase()})`}`, !ok]);
    }
    for (const l of labelsOf(st.model)) opts.push([`label:${l}`, `label ${l}`]);
    return opts;
  }

  function renderSelectors() {
    fillSelect($("model"), [...settings.models.keys()].map((m) => [m, m]), st.model);
    const src = sourceOptions(true);
    const cur = srcKey(st.source);
    if (!src.some(([v]) => v === cur)) src.push([cur, `${srcName(st.source)} (not served)`, true]);
    fillSelect($("source"), src, cur);
    const cmp = sourceOptions(false).filter((o) => !o[2]);
    const a = $("compare-a"), b = $("compare-b");
    fillSelect(a, cmp);
    fillSelect(b, cmp);
    const versions = cmp.filter(([v]) => v.startsWith("version:"));
    if (!st.compareSet && versions.length > 1) {  // oldest vs newest served version: the canary question
      a.value = versions[versions.length - 1][0];
      b.value = versions[0][0];
      st.compareSet = true;
    }
  }

  async function refreshStatus() {
    const model = st.model;
    let reply;
    try {
      reply = await api(modelPath(model));
    } catch (e) {
      if (model !== st.model) return;
      st.reachable = e.kind !== "network";
      st.versions = []; st.available = [];
      pill("error", e.kind === "network" ? "offline" : "error");
      if (e.kind === "network") {
        notice(`${e.message}. Retrying…`, "error", { label: "Retry now", run: () => poll() });
      } else if (e.status === 404 && settings.served.has(model)) {
        // a configured model with no version loaded yet (TF Serving answers 404 until one is)
        st.pinned = st.source.kind === "latest" ? null : st.pinned;
        pill("loading", "waiting");
        notice(`Model ${model} has no version loaded yet (${e.message}); waiting for one to appear under its base path.`, "warn");
        renderSelectors();
        return;
      } else {
        notice(`Model ${model}: ${e.message}`, "error");
      }
      renderSelectors();
      throw e;
    }
    if (model !== st.model) return;
    const wasUnreachable = !st.reachable;
    st.reachable = true;
    st.versions = (reply.model_version_status || []).map((v) => ({
      version: Number(v.version), state: v.state,
      code: (v.status && v.status.error_code) || "OK", message: (v.status && v.status.error_message) || "",
    }));
    st.available = st.versions.filter((v) => v.state === "AVAILABLE").map((v) => v.version).sort((x, y) => y - x);
    renderSelectors();
    if (wasUnreachable) clearNotice("error");
    updateSourceState();
  }

  // what the chosen version/label is doing now: loading, gone, failed, or fine
  function updateSourceState() {
    if (!st.available.length) {
      const failed = st.versions.find((v) => v.code !== "OK" && v.message);
      const loading = st.versions.filter((v) => v.state === "START" || v.state === "LOADING");
      if (failed && !loading.length) {
        pill("error", "load failed");
        notice(`Model ${st.model}: version ${failed.version} failed to load: ${failed.message}`, "error");
      } else {
        pill("loading", "loading");
        notice(`Model ${st.model} is loading${loading.length ? ` (version ${loading.map((v) => v.version).join(", ")})` : ""}; `
          + "the wall appears when a version is available.", "warn");
      }
      st.pinned = null;
      return;
    }
    if (st.source.kind === "version" && !st.available.includes(st.source.value)) {
      const v = st.versions.find((x) => x.version === st.source.value);
      st.gone = true;
      pill("error", "version gone");
      notice(`Version ${st.source.value} of ${st.model} is no longer served${v ? ` (state ${v.state})` : ""}. `
        + "The images shown were rendered before it went away.", "error",
        { label: "Show the latest", run: () => chooseSource({ kind: "latest", value: null }) });
      return;
    }
    if (st.gone) { st.gone = false; clearNotice("error"); }
    if (st.source.kind === "latest" && st.pinned !== st.available[0]) {
      const had = st.pinned;
      st.pinned = st.available[0];
      if (had !== null) {
        notice(`Version ${st.pinned} is now the latest; the wall shows it.`, "info");
        setTimeout(() => clearNotice("info"), 8000);
      }
      resetWall();
    } else if (st.source.kind !== "latest" && st.pinned === null) {
      st.pinned = -1;  // a fixed version or label: nothing to pin
      resetWall();
    }
    clearNotice("warn");
    pill("ok", `${st.model} · ${srcName(st.source)}`);
  }

  let pollTimer = null, pollDelay = POLL_MS, polling = false, pollAgain = false;

  async function poll() {  // one status poll at a time; a call during one runs right after it
    if (polling) { pollAgain = true; return; }
    polling = true;
    pollAgain = false;
    clearTimeout(pollTimer);
    try {
      await refreshStatus();
      pollDelay = POLL_MS;
      fillWall();  // resumes the wall after an error, once the server answers again
    } catch (e) {
      pollDelay = Math.min(POLL_MAX_MS, pollDelay * 1.5);
    } finally {
      polling = false;
    }
    pollTimer = setTimeout(poll, pollAgain ? 0 : pollDelay);
  }

  async function ensureMeta() {
    const path = wallPath();
    if (!path) return null;
    if (st.meta && st.meta.path === path) return st.meta;
    const epoch = st.epoch;
    const reply = await api(`${path}/metadata`);
    const defs = (((reply || {}).metadata || {}).signature_def || {}).signature_def || {};
    if (!defs.generate_png || !defs.serving_default) {
      throw new ApiError(`${st.model} has no generate_png / serving_default signature (not a nebula export?)`, 200, "reply");
    }
    const dims = (t) => ((t && t.tensor_shape && t.tensor_shape.dim) || []).map((d) => Number(d.size));
    const img = dims(defs.serving_default.outputs.images), z = dims(defs.serving_default.inputs.z);
    const meta = { path, version: Number(reply.model_spec.version), size: img[1], latent: z[1] };
    if (!(meta.size > 0 && meta.latent > 0)) throw new ApiError("cannot read the image or latent size from the metadata", 200, "reply");
    if (epoch === st.epoch) {
      st.meta = meta;
      // wall tiles a few times the image size: small images make a denser wall
      document.documentElement.style.setProperty("--tile", `${Math.min(224, Math.max(112, 4 * meta.size))}px`);
    }
    return meta;
  }

  function showError(e, what) {
    if (e.kind === "network") {
      st.reachable = false;
      pill("error", "offline");
      notice(`${e.message}. Retrying…`, "error", { label: "Retry now", run: () => poll() });
    } else if (e.status === 404 && st.source.kind !== "latest") {
      poll();  // the version may have gone: the status says which
      notice(`${what}: ${e.message}`, "error");
    } else {
      notice(`${what}: ${e.message}`, "error");
    }
  }

  // ------------------------------------------------------------------ wall

  const wall = { next: settings.seed, busy: false };

  function resetWall() {
    st.epoch++;
    st.meta = null;
    wall.next = settings.seed;
    wall.busy = false;
    $("wall").replaceChildren();
    fillWall();
  }

  function sentinelVisible() {
    const r = $("wall-more").getBoundingClientRect();
    return r.top < window.innerHeight + 800;
  }

  async function fillWall() {
    if (wall.busy || st.gone || !st.reachable || $("panel-wall").hidden || !wallPath() || !sentinelVisible()) return;
    wall.busy = true;
    const epoch = st.epoch;
    const seeds = Array.from({ length: settings.batch }, (_, i) => wall.next + i);
    let tiles = [];
    try {
      const meta = await ensureMeta();
      if (epoch !== st.epoch) return;
      tiles = seeds.map((s) => makeTile(s, meta.size));
      $("wall").append(...tiles);
      const pngs = await pngsForSeeds(wallPath(), seeds);
      if (epoch !== st.epoch) return;
      pngs.forEach((b64, i) => fillTile(tiles[i], b64, meta));
      clearNotice("error");  // an earlier failure is over
      wall.next += seeds.length;
      $("wall-more").textContent = `seeds ${settings.seed}–${wall.next - 1} · scroll for more`;
    } catch (e) {
      tiles.forEach((t) => t.remove());
      if (epoch === st.epoch) showError(e, "Wall");
      return;
    } finally {
      if (epoch === st.epoch) wall.busy = false;
    }
    if (sentinelVisible()) setTimeout(fillWall, 0);
  }

  function makeTile(seed, size) {
    const fig = document.createElement("figure");
    fig.className = "tile pending";
    fig.tabIndex = 0;
    fig.dataset.seed = String(seed);
    const img = document.createElement("img");
    img.width = size; img.height = size;
    img.alt = `seed ${seed}`;
    img.title = `seed ${seed}`;
    const cap = document.createElement("figcaption");
    cap.textContent = `seed ${seed}`;
    fig.append(img, cap);
    return fig;
  }

  function fillTile(fig, b64, meta) {
    fig.classList.remove("pending");
    fig.dataset.version = String(meta.version);
    fig.querySelector("img").src = `data:image/png;base64,${b64}`;
    const open = () => openViewer(Number(fig.dataset.seed), b64, meta);
    fig.addEventListener("click", open);
    fig.addEventListener("keydown", (ev) => { if (ev.key === "Enter") open(); });
  }

  // ------------------------------------------------------------------ large view

  let viewerUrl = null, viewerSeed = 0;

  function openViewer(seed, b64, meta) {
    viewerSeed = seed;
    const img = $("viewer-img");
    img.src = `data:image/png;base64,${b64}`;
    img.alt = `seed ${seed}`;
    img.width = meta.size; img.height = meta.size;
    $("viewer-title").textContent = `seed ${seed} · ${st.model} version ${meta.version}`;
    $("viewer-size").textContent = `${meta.size}×${meta.size} px`;
    if (viewerUrl) URL.revokeObjectURL(viewerUrl);
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    viewerUrl = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
    const dl = $("viewer-download");
    dl.href = viewerUrl;
    dl.download = `${st.model}-v${meta.version}-seed${seed}.png`;
    applyViewerScale();
    if (!$("viewer").open) $("viewer").showModal();
  }

  function applyViewerScale() {
    const img = $("viewer-img");
    img.classList.toggle("fit", $("viewer-fit").checked);
    img.classList.toggle("pixelated", $("viewer-pixelated").checked);
  }

  // ------------------------------------------------------------------ interpolation

  const interp = { frames: [], timer: null, dir: 1 };

  async function renderInterp(ev) {
    if (ev) ev.preventDefault();
    stopPlay();
    const a = intParam($("seed-a").value, -(2 ** 53) + 1, 2 ** 53 - 1);
    const b = intParam($("seed-b").value, -(2 ** 53) + 1, 2 ** 53 - 1);
    const steps = intParam($("steps").value, 2, 64);
    if (a === null || b === null || steps === null) {
      notice("Interpolation: seeds are whole numbers (|seed| < 2^53) and steps 2 to 64.", "error");
      return;
    }
    const epoch = st.epoch;
    $("interp-pos").textContent = "rendering…";
    try {
      const meta = await ensureMeta();
      if (!meta) throw new ApiError("no version of the model is available yet", 0, "http");
      const za = latentFromSeed(a, meta.latent), zb = latentFromSeed(b, meta.latent);
      const zs = Array.from({ length: steps }, (_, i) => slerp(za, zb, i / (steps - 1)));
      const frames = await framesForLatents(wallPath(), zs, meta.size);
      if (epoch !== st.epoch) return;
      interp.frames = frames;
      clearNotice("error");
      interp.seeds = [a, b];
      const canvas = $("interp-canvas");
      canvas.width = meta.size; canvas.height = meta.size;
      const slider = $("interp-slider");
      slider.max = String(steps - 1);
      slider.value = "0";
      $("interp-strip").replaceChildren(...frames.map((f, i) => {
        const c = document.createElement("canvas");
        c.width = meta.size; c.height = meta.size;
        c.getContext("2d").putImageData(f, 0, 0);
        c.title = `t = ${(i / (steps - 1)).toFixed(3)}`;
        c.addEventListener("click", () => { stopPlay(); slider.value = String(i); drawFrame(); });
        return c;
      }));
      drawFrame();
    } catch (e) {
      $("interp-pos").textContent = "";
      showError(e, "Interpolation");
    }
  }

  function drawFrame() {
    const i = Number($("interp-slider").value);
    const f = interp.frames[i];
    if (!f) return;
    $("interp-canvas").getContext("2d").putImageData(f, 0, 0);
    const n = interp.frames.length;
    $("interp-pos").textContent = `seed ${interp.seeds[0]} → ${interp.seeds[1]} · t = ${(i / (n - 1)).toFixed(3)} (${i + 1}/${n})`;
    [...$("interp-strip").children].forEach((c, k) => c.classList.toggle("current", k === i));
  }

  function stopPlay() {
    clearInterval(interp.timer);
    interp.timer = null;
    $("interp-play").textContent = "Play";
  }

  function togglePlay() {
    if (interp.timer) { stopPlay(); return; }
    if (interp.frames.length < 2) return;
    $("interp-play").textContent = "Pause";
    interp.timer = setInterval(() => {  // there and back, as `nebula interpolate` writes its GIF
      const s = $("interp-slider");
      let i = Number(s.value) + interp.dir;
      if (i < 0 || i >= interp.frames.length) { interp.dir = -interp.dir; i += 2 * interp.dir; }
      s.value = String(i);
      drawFrame();
    }, PLAY_MS);
  }

  // ------------------------------------------------------------------ comparison

  async function renderCompare(ev) {
    if (ev) ev.preventDefault();
    const ka = $("compare-a").value, kb = $("compare-b").value;
    const first = intParam($("compare-seed").value, -(2 ** 53) + 1, 2 ** 53 - 64);
    const n = intParam($("compare-n").value, 1, 64);
    const box = $("compare");
    if (!ka || !kb) { notice("Compare: the server serves one version only; serve two (a version policy) or use labels.", "warn"); return; }
    if (first === null || n === null) { notice("Compare: the first seed is a whole number and 1 to 64 seeds.", "error"); return; }
    const [sa, sb] = [parseSrc(ka), parseSrc(kb)];
    const seeds = Array.from({ length: n }, (_, i) => first + i);
    const epoch = st.epoch;
    box.replaceChildren(Object.assign(document.createElement("div"), { className: "compare-head", textContent: "rendering…" }));
    try {
      const [pa, pb] = await Promise.all([sa, sb].map(async (s) => {
        const out = [];
        for (let i = 0; i < seeds.length; i += settings.batch) {
          out.push(...await pngsForSeeds(sourcePath(st.model, s), seeds.slice(i, i + settings.batch)));
        }
        return out;
      }));
      if (epoch !== st.epoch) return;
      clearNotice("error");
      const head = document.createElement("div");
      head.className = "compare-head";
      head.textContent = `left: ${srcName(sa)} · right: ${srcName(sb)}${ka === kb ? " (the same source)" : ""}`;
      box.replaceChildren(head, ...seeds.map((seed, i) => {
        const fig = document.createElement("figure");
        fig.className = "pair";
        fig.dataset.seed = String(seed);
        const imgs = document.createElement("div");
        imgs.className = "imgs";
        for (const [b64, s, side] of [[pa[i], sa, "a"], [pb[i], sb, "b"]]) {
          const img = document.createElement("img");
          img.src = `data:image/png;base64,${b64}`;
          img.alt = `seed ${seed}, ${srcName(s)}`;
          img.title = img.alt;
          img.dataset.side = side;
          imgs.append(img);
        }
        const cap = document.createElement("figcaption");
        cap.append(Object.assign(document.createElement("span"), { textContent: `seed ${seed}` }),
          Object.assign(document.createElement("span"), { textContent: `${srcName(sa)} | ${srcName(sb)}` }));
        fig.append(imgs, cap);
        return fig;
      }));
    } catch (e) {
      box.replaceChildren();
      showError(e, "Compare");
    }
  }

  // ------------------------------------------------------------------ wiring

  function chooseSource(src) {
    st.source = src;
    st.pinned = src.kind === "latest" ? (st.available[0] ?? null) : -1;
    st.gone = false;
    clearNotice();
    renderSelectors();
    resetWall();
    poll();
  }

  function showPanel(name) {
    for (const b of document.querySelectorAll(".tabs button")) {
      const on = b.dataset.panel === name;
      b.setAttribute("aria-selected", String(on));
      $(`panel-${b.dataset.panel}`).hidden = !on;
    }
    if (name === "wall") fillWall();
    if (name === "interp" && !interp.frames.length) renderInterp();
    if (name === "compare" && !$("compare").children.length) renderCompare();
  }

  function init() {
    $("model").addEventListener("change", () => {
      st.model = $("model").value;
      st.versions = []; st.available = []; st.compareSet = false;
      $("compare").replaceChildren();
      interp.frames = []; $("interp-strip").replaceChildren();
      chooseSource({ kind: "latest", value: null });
    });
    $("source").addEventListener("change", () => chooseSource(parseSrc($("source").value)));
    for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => showPanel(b.dataset.panel));
    $("pixelated").addEventListener("change", () => document.body.classList.toggle("pixelated", $("pixelated").checked));
    $("notice-retry").addEventListener("click", () => { if (noticeAction) noticeAction.run(); });
    $("viewer-close").addEventListener("click", () => $("viewer").close());
    $("viewer").addEventListener("click", (ev) => { if (ev.target === $("viewer")) $("viewer").close(); });
    $("viewer-fit").addEventListener("change", applyViewerScale);
    $("viewer-pixelated").addEventListener("change", applyViewerScale);
    $("viewer-as-a").addEventListener("click", () => { $("seed-a").value = String(viewerSeed); $("viewer").close(); showPanel("interp"); renderInterp(); });
    $("viewer-as-b").addEventListener("click", () => { $("seed-b").value = String(viewerSeed); $("viewer").close(); showPanel("interp"); renderInterp(); });
    $("interp-form").addEventListener("submit", renderInterp);
    $("interp-slider").addEventListener("input", () => { stopPlay(); drawFrame(); });
    $("interp-play").addEventListener("click", togglePlay);
    $("compare-form").addEventListener("submit", renderCompare);
    $("compare-seed").value = String(settings.seed);
    $("seed-a").value = String(settings.seed);
    $("seed-b").value = String(settings.seed + 1);
    new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) fillWall(); },
      { rootMargin: "800px" }).observe($("wall-more"));
    renderSelectors();
    poll();
  }

  init();
})();
