"""Decode one image file of any mode to a uint8 ``[S, S, 3]`` square, and a folder's worth in threads.

Files are opened by content, not by extension: JPEG, PNG, WebP, BMP, GIF (first frame),
TIFF and anything else Pillow opens. Each image is converted to RGB (transparency
composited on black; 16-bit and float images scaled, not clipped), centre-cropped to a
square and resized with Pillow's LANCZOS filter. A file that cannot be used (empty,
truncated, not an image, more than ``max_pixels`` decoded pixels, shorter side below
``min_side``) gives a one-line reason instead of an image; nothing here raises for a bad file.

Very large images stay bounded: JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that
still leaves twice the output size (``draft``); 16-bit, 32-bit and float images are
cropped and resized in their own mode and only the ``[S, S]`` result is mapped to 8 bits;
transparency is composited with 8-bit premultiplication (no float64 or uint16 copy of the
full image). Imports numpy, Pillow and tqdm only.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Bump when decoding, conversion or resizing changes: old cache entries then miss.
LOADER_VERSION = 2
# Images that would decode to more pixels than this (after JPEG draft reduction) are
# skipped as "too large"; it replaces Pillow's DecompressionBombWarning/Error, which
# would judge a JPEG by its undrafted size. 2**28 px is 16384 x 16384 (768 MiB as RGB).
MAX_PIXELS = 2**28


def decode_all(root, entries, put, *, image_size, min_side, max_pixels, progress, workers):
    """Decode ``entries`` in a small thread pool (Pillow releases the GIL).

    Calls ``put(uint8 [S, S, 3])`` for each usable image in sorted file order and
    returns ``(files, skipped)``. At most ``4 * workers`` decodes are in flight, so
    memory stays bounded however large the folder is.
    """
    from tqdm.auto import tqdm

    workers = workers or min(4, os.cpu_count() or 1)
    files, skipped = [], []

    def job(entry):
        rel, size, _ = entry
        return rel, decode_one(root / rel, size, image_size, min_side, max_pixels)

    def collect(rel, img, reason):
        if img is None:
            skipped.append((rel, reason))
        else:
            put(img)
            files.append(rel)
        bar.update()

    bar = tqdm(
        total=len(entries),
        desc=f"Decoding {root.name}",
        unit="img",
        file=sys.stderr,
        disable=None if progress else True,  # None: only on a terminal
        leave=False,
    )
    with _pillow_limits(), bar:
        if workers > 1 and len(entries) > 1:
            with ThreadPoolExecutor(workers, thread_name_prefix="nebula-decode") as pool:
                pending = deque()
                for entry in entries:
                    pending.append(pool.submit(job, entry))
                    if len(pending) >= 4 * workers:
                        rel, (img, reason) = pending.popleft().result()
                        collect(rel, img, reason)
                while pending:
                    rel, (img, reason) = pending.popleft().result()
                    collect(rel, img, reason)
        else:
            for entry in entries:
                rel, (img, reason) = job(entry)
                collect(rel, img, reason)
    return files, skipped


@contextlib.contextmanager
def _pillow_limits():
    """Truncated files must raise on ``.load()`` (even if someone enabled the opposite),
    and Pillow's own decompression-bomb check is off: ``max_pixels`` replaces it."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = before


def decode_one(path: Path, size: int, image_size: int, min_side: int, max_pixels: int = MAX_PIXELS):
    """``(uint8 [S, S, 3], None)`` or ``(None, reason)``; never raises for a bad file."""
    if size == 0:
        return None, "empty file"
    try:
        with Image.open(path) as im:
            w, h = im.size
            if min(w, h) < min_side:
                return None, f"too small: {w}x{h} px, shorter side < {min_side}"
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # first frame of a GIF / multi-page TIFF
            _draft(im, image_size)
            dw, dh = im.size  # what .load() will allocate
            if dw * dh > max_pixels:
                drafted = f" (decoded at {dw}x{dh})" if (dw, dh) != (w, h) else ""
                return None, (
                    f"too large: {w}x{h} px{drafted} = {dw * dh} px > max_pixels {max_pixels}"
                )
            im.load()  # decode now: truncated data raises here
            im = ImageOps.exif_transpose(im)
            return square_rgb(im, image_size), None
    except UnidentifiedImageError:
        return None, "not an image"
    except Image.DecompressionBombError as e:  # only if a plugin checks on its own
        return None, f"too large: {e}"
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower():
            return None, f"truncated: {msg}"
        return None, f"unreadable: {msg}"
    except Exception as e:  # a Pillow plugin bug must not abort the whole folder
        return None, f"unreadable: {type(e).__name__}: {e}"


def _draft(im: Image.Image, image_size: int) -> None:
    """Let JPEG decode big images at 1/2, 1/4 or 1/8 scale, keeping both sides >= 2x the target.

    Pillow picks the largest such scale; twice the target keeps LANCZOS's antialiasing.
    ``"RGB"`` also lets the decoder skip YCbCr -> RGB work it would otherwise do at full size.
    """
    if im.format == "JPEG":
        im.draft("RGB", (2 * image_size, 2 * image_size))


# Modes with more than 8 bits per channel: resampled in their own mode, then mapped to 8 bits.
_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def square_rgb(im: Image.Image, image_size: int) -> np.ndarray:
    """Any (loaded) image -> uint8 ``[S, S, 3]``: centre square crop, LANCZOS resize, RGB.

    Deep images (16/32-bit integer, float) are cropped and resized in their own mode,
    so the 8-bit mapping (see ``to_rgb``) touches only ``S * S`` pixels.
    """
    if im.mode not in _DEEP_MODES:
        return _crop_resize(to_rgb(im), image_size)
    scale, offset, im = _deep_mapping(im)
    if im.mode not in ("I;16", "I", "F"):  # byte-swapped 16-bit: Pillow resamples native order only
        im = im.convert("I")
    box = _square_box(im.size)
    if box[2] - box[0] == image_size:
        small = im.crop(box)
    else:
        small = im.resize((image_size, image_size), Image.Resampling.LANCZOS, box=box)
    return np.asarray(_gray_array((np.asarray(small, dtype=np.float64) - offset) * scale))


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB.

    Transparency (RGBA, LA, PA, RGBa, P/L/RGB with a ``transparency`` key) is
    composited on black. 16-bit (``I;16*``) is scaled by 1/257 so 65535 -> 255;
    ``I`` is taken as 8-bit if it fits, as 16-bit if it fits, else min-max
    stretched; ``F`` as [0, 1] if it fits, else min-max stretched.
    """
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _DEEP_MODES:
        scale, offset, im = _deep_mapping(im)
        return _gray_array((np.asarray(im, dtype=np.float64) - offset) * scale)
    if mode == "1":
        return im.convert("L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if not has_alpha:
        return im.convert("RGB")
    # Over black = colour premultiplied by alpha (8-bit, rounded), alpha dropped. (Pillow's
    # RGBa -> RGB conversion un-premultiplies, so take the raw bands.)
    if mode == "La":
        return Image.merge("RGB", im.split()[:1] * 3)
    if mode != "RGBa":
        im = im.convert("RGBA").convert("RGBa")
    return Image.merge("RGB", im.split()[:3])


def _deep_mapping(im: Image.Image) -> tuple[float, float, Image.Image]:
    """``(scale, offset, image)`` with 8-bit value = ``(x - offset) * scale``, from the extrema.

    The image comes back unchanged, except a float image holding NaN/inf, whose
    non-finite values are replaced by 0 (finite extrema) first.
    """
    if im.mode.startswith("I;16"):
        return 1 / 257, 0.0, im
    lo, hi = (float(v) for v in im.getextrema())
    if im.mode == "F":
        if not (np.isfinite(lo) and np.isfinite(hi)):
            im = Image.fromarray(np.nan_to_num(np.asarray(im, np.float32), posinf=0, neginf=0), "F")
            lo, hi = (float(v) for v in im.getextrema())
        if lo >= 0 and hi <= 1:
            return 255.0, 0.0, im
    elif lo >= 0 and hi <= 255:
        return 1.0, 0.0, im
    elif lo >= 0 and hi <= 65535:
        return 1 / 257, 0.0, im
    return (255.0 / (hi - lo) if hi > lo else 0.0), lo, im


def _gray_array(a: np.ndarray) -> Image.Image:
    g = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(g[..., None], 3, axis=-1), "RGB")


def _square_box(size: tuple[int, int]) -> tuple[int, int, int, int]:
    w, h = size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return left, top, left + s, top + s


def _crop_resize(im: Image.Image, image_size: int) -> np.ndarray:
    """Centre square crop, then LANCZOS resize (the crop is the resize's source box)."""
    box = _square_box(im.size)
    if box[2] - box[0] == image_size:
        out = im.crop(box)
    else:
        out = im.resize((image_size, image_size), Image.Resampling.LANCZOS, box=box)
    return np.asarray(out, dtype=np.uint8).copy()
