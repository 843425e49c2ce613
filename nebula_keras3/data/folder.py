"""Load a folder of images into one uint8 array, robustly, with an on-disk cache.

``load_image_folder(folder, 64)`` reads every (non-hidden) file under ``folder``,
recursively and by content, not by extension: JPEG, PNG, WebP, BMP, GIF (first
frame), TIFF and anything else Pillow opens. Each image is converted to RGB
(transparency composited on black; 16-bit and float images scaled, not clipped),
centre-cropped to a square and resized with Pillow's LANCZOS filter. Files that
cannot be used (empty, truncated, not an image, more than ``max_pixels`` decoded
pixels, shorter side below ``min_side``) are skipped and reported in one
``SkippedImagesWarning``.

Very large images stay bounded: JPEGs are decoded at 1/2, 1/4 or 1/8 scale when
that still leaves twice the output size (``draft``); 16-bit, 32-bit and float images
are cropped and resized in their own mode and only the ``[S, S]`` result is mapped
to 8 bits; transparency is composited with 8-bit premultiplication (no float64 or
uint16 copy of the full image).

Data larger than RAM: the decoded images are streamed, one at a time and in file
order, into a uint8 ``.npy`` file under ``cache_dir`` (temp file renamed when
complete, so a killed run leaves no half cache) and returned as a read-only
``np.load(..., mmap_mode="r")`` memmap; ``ImageBatches`` then copies one batch at a
time out of it. The cache is keyed by the folder's resolved path, every file's
(relative path, size, mtime_ns), the image size, ``min_side``, ``max_pixels`` and
``LOADER_VERSION``: a rerun on an unchanged folder maps the file without decoding.
With ``use_cache=False`` the images are decoded into one preallocated array in
memory. This module imports numpy, Pillow and tqdm only (no Keras).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import warnings
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from nebula_keras3.artifacts import atomic_path

# Bump when decoding, conversion or resizing changes: old cache entries then miss.
LOADER_VERSION = 2
# Images that would decode to more pixels than this (after JPEG draft reduction) are
# skipped as "too large"; it replaces Pillow's DecompressionBombWarning/Error, which
# would judge a JPEG by its undrafted size. 2**28 px is 16384 x 16384 (768 MiB as RGB).
MAX_PIXELS = 2**28
CACHE_ENV = "NEBULA_CACHE_DIR"
# How many skipped files a warning or error message names.
_SHOW = 5


class DataError(ValueError):
    """Training data that cannot be used; the message says why, in one line."""


class SkippedImagesWarning(UserWarning):
    """Some files in an image folder were skipped (count and first few reasons)."""


@dataclass
class FolderImages:
    """What ``load_image_folder`` returns.

    Attributes:
        images: uint8 ``[N, S, S, 3]``, in the order of ``files``: a read-only memmap
            of the cache file when the cache is used, else an in-memory array.
        files: relative (POSIX) paths of the images used, sorted.
        skipped: ``(relative path, reason)`` for every file not used.
        from_cache: True when the array came from the on-disk cache.
    """

    images: np.ndarray
    files: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    from_cache: bool = False


# Decoded images written to the cache per write() call (bounds the writer's buffer).
_CHUNK = 64


def default_cache_dir() -> Path:
    """``$NEBULA_CACHE_DIR``, else ``~/.cache/nebula-keras3``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nebula-keras3"


def load_image_folder(
    folder: str | os.PathLike,
    image_size: int,
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    progress: bool = True,
    min_side: int | None = None,
    workers: int | None = None,
    max_pixels: int = MAX_PIXELS,
) -> FolderImages:
    """Decode every usable image under ``folder`` to uint8 ``[N, S, S, 3]``.

    Args:
        folder: a directory, searched recursively; names starting with '.' are ignored.
        image_size: side ``S`` of the square output images.
        cache_dir: where the preprocessed array is cached (default: ``default_cache_dir()``).
        use_cache: False neither reads nor writes the cache.
        progress: show a tqdm bar on stderr while decoding (only on a terminal).
        min_side: skip images whose shorter side is below this (default ``image_size // 2``).
        workers: decoding threads (default: up to 4, one per CPU).
        max_pixels: skip images that would decode to more pixels than this
            (JPEGs are judged after draft reduction; default ``MAX_PIXELS``).

    Raises:
        DataError: ``folder`` is missing or not a directory, or holds no usable image.
    """
    image_size = int(image_size)
    if image_size < 1:
        raise DataError(f"image_size must be positive, got {image_size}")
    min_side = max(1, image_size // 2) if min_side is None else int(min_side)
    max_pixels = int(max_pixels)
    if max_pixels < 1:
        raise DataError(f"max_pixels must be positive, got {max_pixels}")
    root = Path(folder).expanduser()
    if not root.exists():
        raise DataError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder of images")
    root = root.resolve()

    entries, unreadable = _list_files(root)
    total = len(entries) + len(unreadable)
    decode = dict(image_size=image_size, min_side=min_side, max_pixels=max_pixels,
                  progress=progress, workers=workers)
    if use_cache:
        npy, meta = _cache_paths(
            Path(cache_dir).expanduser() if cache_dir else default_cache_dir(),
            _cache_key(root, entries, unreadable, image_size, min_side, max_pixels),
        )
        hit = _read_cache(npy, meta, image_size)
        if hit is not None:
            _warn_skipped(root, hit.skipped, total)
            return hit
        try:
            result = _decode_to_cache(root, entries, unreadable, npy, meta, **decode)
        except OSError as e:  # no room / read-only cache: decode into memory instead
            warnings.warn(f"could not write image cache in {npy.parent}: {e}", RuntimeWarning, 2)
        else:
            _warn_skipped(root, result.skipped, total)
            return result
    result = _decode_to_memory(root, entries, unreadable, **decode)
    _warn_skipped(root, result.skipped, total)
    return result


def _decode_to_memory(root, entries, unreadable, **decode) -> FolderImages:
    """Decode into one preallocated ``[len(entries), S, S, 3]`` array, shrunk in place."""
    s = decode["image_size"]
    images = np.empty((len(entries), s, s, 3), np.uint8)
    n = 0

    def put(img):
        nonlocal n
        images[n] = img
        n += 1

    files, skipped = _decode_all(root, entries, put, **decode)
    skipped = sorted(skipped + unreadable)
    if not files:
        raise DataError(_empty_message(root, len(entries) + len(unreadable), skipped))
    images.resize((n, s, s, 3), refcheck=False)  # drop skipped rows without a copy
    return FolderImages(images, files, skipped, from_cache=False)


def _decode_to_cache(root, entries, unreadable, npy: Path, meta: Path, **decode) -> FolderImages:
    """Stream decoded images into ``npy`` (temp file + rename), then memory-map it.

    Holds at most ``_CHUNK`` decoded images (plus the pool's in-flight ones) at a time.
    """
    s = decode["image_size"]
    npy.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(npy) as tmp, open(tmp, "wb") as f:
        f.write(_npy_header((len(entries), s, s, 3)))  # placeholder; rewritten below
        chunk = []

        def put(img):
            chunk.append(img)
            if len(chunk) == _CHUNK:
                f.write(np.stack(chunk).tobytes())
                chunk.clear()

        files, skipped = _decode_all(root, entries, put, **decode)
        if chunk:
            f.write(np.stack(chunk).tobytes())
        skipped = sorted(skipped + unreadable)
        if not files:  # atomic_path removes the temp file
            raise DataError(_empty_message(root, len(entries) + len(unreadable), skipped))
        f.seek(0)
        f.write(_npy_header((len(files), s, s, 3)))
        f.flush()
        os.fsync(f.fileno())
    info = {"files": files, "skipped": [list(x) for x in skipped]}
    _atomic(meta, lambda f: f.write(json.dumps(info).encode()))
    images = np.load(npy, mmap_mode="r", allow_pickle=False)
    return FolderImages(images, files, skipped, from_cache=False)


# A fixed-size .npy v1.0 header: the shape (count of usable images) is only known at the
# end, so the file starts with a header for the maximum count and is rewritten in place.
_NPY_HEADER_BYTES = 128


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """``.npy`` format 1.0 header for C-order uint8 ``shape``, exactly 128 bytes."""
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    body_len = _NPY_HEADER_BYTES - 10  # magic (6) + version (2) + length (2)
    if len(text) + 1 > body_len:
        raise ValueError(f"shape {shape} does not fit a {_NPY_HEADER_BYTES}-byte .npy header")
    body = text.ljust(body_len - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + body.encode("latin1")


# --- listing ---------------------------------------------------------------------------


def _list_files(root: Path) -> tuple[list[tuple[str, int, int]], list[tuple[str, str]]]:
    """Sorted ``(relpath, size, mtime_ns)`` of regular files; ``(relpath, reason)`` of others."""
    entries, others = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            rel = Path(os.path.relpath(path, root)).as_posix()
            try:
                st = os.stat(path)
            except OSError as e:
                others.append((rel, f"unreadable: {e.strerror or e}"))
                continue
            if not stat.S_ISREG(st.st_mode):
                others.append((rel, "unreadable: not a regular file"))
                continue
            entries.append((rel, st.st_size, st.st_mtime_ns))
    entries.sort()
    return entries, others


# --- decoding --------------------------------------------------------------------------


def _decode_all(root, entries, put, *, image_size, min_side, max_pixels, progress, workers):
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
        return rel, _decode_one(root / rel, size, image_size, min_side, max_pixels)

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


def _decode_one(path: Path, size: int, image_size: int, min_side: int, max_pixels: int = MAX_PIXELS):
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


# --- messages --------------------------------------------------------------------------


def _first_few(skipped: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{rel} ({reason})" for rel, reason in skipped[:_SHOW])
    more = len(skipped) - _SHOW
    return shown + (f"; ... and {more} more" if more > 0 else "")


def _reason_counts(skipped: list[tuple[str, str]]) -> str:
    counts = Counter(reason.split(":", 1)[0] for _, reason in skipped)
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


def _empty_message(root: Path, total: int, skipped: list[tuple[str, str]]) -> str:
    if total == 0:
        return f"no usable images in {root}: the folder holds no files (hidden ones are ignored)"
    return (
        f"no usable images in {root}: found {total} file(s), skipped all "
        f"({_reason_counts(skipped)}): {_first_few(skipped)}"
    )


def _warn_skipped(root: Path, skipped: list[tuple[str, str]], total: int) -> None:
    """One summary warning, attributed to the caller of ``load_image_folder``.

    ``warn_explicit`` with a fresh registry: Python's default filter would show a
    repeated message only once per process; a rerun must report its skips again.
    """
    if not skipped:
        return
    frame = sys._getframe(2)  # 0: here, 1: load_image_folder, 2: its caller
    warnings.warn_explicit(
        f"skipped {len(skipped)} of {total} files in {root} "
        f"({_reason_counts(skipped)}): {_first_few(skipped)}",
        SkippedImagesWarning,
        frame.f_code.co_filename,
        frame.f_lineno,
        module=frame.f_globals.get("__name__"),
        registry=None,
        module_globals=frame.f_globals,
    )


# --- cache -----------------------------------------------------------------------------


def _cache_key(root, entries, unreadable, image_size, min_side, max_pixels) -> str:
    blob = json.dumps(
        {
            "version": LOADER_VERSION,
            "folder": str(root),
            "files": entries,
            "unreadable": sorted(unreadable),
            "image_size": image_size,
            "min_side": min_side,
            "max_pixels": max_pixels,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _cache_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    stem = cache_dir / "folders" / f"images-{key}"
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


def _read_cache(npy: Path, meta: Path, image_size: int) -> FolderImages | None:
    """The cached result, or None when missing, unreadable or inconsistent."""
    try:
        info = json.loads(meta.read_text())
        files = [str(f) for f in info["files"]]
        skipped = [(str(r), str(why)) for r, why in info["skipped"]]
        images = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    if (
        images.dtype != np.uint8
        or images.shape != (len(files), image_size, image_size, 3)
        or not files
    ):
        return None
    return FolderImages(images, files, skipped, from_cache=True)


def _atomic(path: Path, write) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
