"""``nebula serve --ui``: a gallery page for the served generators at ``/ui/`` on the REST port.

The page (``index.html``, ``gallery.js``, ``gallery.css`` beside this file: plain HTML, CSS and
JavaScript, nothing fetched from elsewhere) talks to the server only through TF Serving's public
REST API, from the same origin (CORS can stay off):

* ``GET /v1/models/NAME``                       versions and their states (polled)
* ``GET /v1/models/NAME/versions/N/metadata``   signatures: image size, latent size
* ``POST .../versions/N:predict`` or ``.../labels/L:predict``
  with ``generate_png`` (seeds -> PNGs) for the wall, the large view and the comparison,
  with ``serving_default`` (latents -> pixels) for the interpolation: the page draws each
  seed's latent with the recipe of :mod:`nebula_keras3.sampling.latents` (ported to
  JavaScript) and slerps between two, as ``nebula interpolate`` does.

The REST API cannot list model names or version labels (TF Serving has no such call), so the
page is given them: the server writes the names and labels it serves right now, and the batch
size its batching settings take in one model call, into the page it sends (a JSON block, not an
endpoint). Query parameters add to or override them: ``?model=NAME`` (repeatable),
``?label=L`` (repeatable), ``?batch=N``, ``?seed=S`` (first seed of the wall). The same static
files therefore also work in front of any TF Serving that a reverse proxy puts on their origin.

Without ``--ui`` none of these routes exist and ``/ui/`` answers as any unknown path does.
"""

from __future__ import annotations

import json
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

STATIC = Path(__file__).resolve().parent  # index.html, gallery.js, gallery.css
PREFIX = "/ui/"
CONFIG_MARKER = "__NEBULA_UI_CONFIG__"  # in index.html, replaced by the page config JSON
# The page runs its own script and style files and shows PNGs it decodes from API answers
# (data: URLs; a download is a blob: link, which needs no source); it connects to its own origin only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
ASSETS = {  # file beside index.html -> media type
    "gallery.js": "text/javascript; charset=utf-8",
    "gallery.css": "text/css; charset=utf-8",
}


def page_batch_size(batching, max_instances: int) -> int:
    """Seeds per wall request: what one model call takes (the largest allowed batch size when
    batches are padded), never more than one request may carry."""
    n = min(batching.execution_batch_size, batching.max_batch_size, max_instances)
    allowed = [s for s in batching.allowed_batch_sizes if s <= n]
    return max(allowed) if allowed else max(1, n)


def page_config(serving) -> dict:
    """What the page cannot learn from the REST API: served model names, their version labels,
    the batch size (read from the live registry: a reloaded model config shows on the next load)."""
    models = [{"name": name, "labels": sorted(entry.config.labels)}
              for name, entry in serving.registry.models.items()]
    return {"models": models, "batch": page_batch_size(serving.options.batching, serving.options.max_instances)}


def render_index(config: dict) -> bytes:
    text = (STATIC / "index.html").read_text(encoding="utf-8")
    # inside <script type="application/json">: no "</script>" or "<!--" can appear
    blob = json.dumps(config, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.replace(CONFIG_MARKER, blob).encode("utf-8")


def routes(serving) -> list[Route]:
    """The page's routes, to go in front of the API's catch-all route (``serving``: the :class:`~serving.app.RestApp`)."""

    async def index(request: Request) -> Response:
        return Response(render_index(page_config(serving)), media_type="text/html; charset=utf-8",
                        headers=SECURITY_HEADERS)

    async def redirect(request: Request) -> Response:
        return RedirectResponse(PREFIX + (f"?{request.url.query}" if request.url.query else ""), status_code=308)

    def asset(name: str, media_type: str):
        async def handler(request: Request) -> Response:
            return Response((STATIC / name).read_bytes(), media_type=media_type, headers=SECURITY_HEADERS)
        return handler

    out = [Route(PREFIX.rstrip("/"), redirect, methods=["GET", "HEAD"]),
           Route(PREFIX, index, methods=["GET", "HEAD"])]
    out += [Route(PREFIX + name, asset(name, mt), methods=["GET", "HEAD"]) for name, mt in ASSETS.items()]
    return out
