"""Load a folder of images into one uint8 array, robustly, with an on-disk cache.

``load_image_folder(folder, 64)`` reads every (non-hidden) file under ``folder``,
recursively and by content, not by extension: JPEG, PNG, WebP, BMP, GIF (first
frame), TIFF and anything else Pillow opens. Each image is converted to RGB
(transparency composited on black; 16-bit and float images scaled, not clipped),
centre-cropped to a square and resized with Pillow's LANCZOS filter. Files that
cannot be used (empty, truncated, not an image, decompression bomb, shorter side
below ``min_side``) are skipped and reported in one ``SkippedImagesWarning``.

The result is cached as ``.npy`` + ``.json`` under ``cache_dir``, keyed by the
folder's resolved path, every file's (relative path, size, mtime_ns), the image
size, ``min_side`` and ``LOADER_VERSION``: a rerun on an unchanged folder is a
single ``np.load``. This module imports numpy, Pillow and tqdm only (no Keras).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from nebula_keras3.artifacts import atomic_path

# Bump when decoding, conversion or resizing changes: old cache entries then miss.
LOADER_VERSION = 1
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
        images: uint8 ``[N, S, S, 3]``, in the order of ``files``.
        files: relative (POSIX) paths of the images used, sorted.
        skipped: ``(relative path, reason)`` for every file not used.
        from_cache: True when the array came from the on-disk cache.
    """

    images: np.ndarray
    files: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    from_cache: bool = False


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

    Raises:
        DataError: ``folder`` is missing or not a directory, or holds no usable image.
    """
    image_size = int(image_size)
    if image_size < 1:
        raise DataError(f"image_size must be positive, got {image_size}")
    min_side = max(1, image_size // 2) if min_side is None else int(min_side)
    root = Path(folder).expanduser()
    if not root.exists():
        raise DataError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder of images")
    root = root.resolve()

    entries, unreadable = _list_files(root)
    cache = None
    if use_cache:
        cache = _cache_paths(
            Path(cache_dir).expanduser() if cache_dir else default_cache_dir(),
            _cache_key(root, entries, unreadable, image_size, min_side),
        )
        hit = _read_cache(*cache, image_size)
        if hit is not None:
            _warn_skipped(root, hit.skipped, len(hit.files) + len(hit.skipped))
            return hit

    images, files, skipped = _decode_all(root, entries, image_size, min_side, progress, workers)
    skipped = sorted(skipped + unreadable)
    total = len(entries) + len(unreadable)
    if not files:
        raise DataError(_empty_message(root, total, skipped))
    result = FolderImages(np.stack(images), files, skipped, from_cache=False)
    if cache is not None:
        _write_cache(result, *cache)
    _warn_skipped(root, skipped, total)
    return result


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


def _decode_all(root, entries, image_size, min_side, progress, workers):
    """Decode in a small thread pool (Pillow releases the GIL); order stays sorted."""
    from tqdm.auto import tqdm

    workers = workers or min(4, os.cpu_count() or 1)
    images, files, skipped = [], [], []

    def job(entry):
        rel, size, _ = entry
        return rel, _decode_one(root / rel, size, image_size, min_side)

    bar = tqdm(
        total=len(entries),
        desc=f"Decoding {root.name}",
        unit="img",
        file=sys.stderr,
        disable=None if progress else True,  # None: only on a terminal
        leave=False,
    )
    with _strict_truncation(), bar:
        if workers > 1 and len(entries) > 1:
            with ThreadPoolExecutor(workers, thread_name_prefix="nebula-decode") as pool:
                results = pool.map(job, entries)
                for rel, (img, reason) in results:
                    _collect(rel, img, reason, images, files, skipped)
                    bar.update()
        else:
            for entry in entries:
                rel, (img, reason) = job(entry)
                _collect(rel, img, reason, images, files, skipped)
                bar.update()
    return images, files, skipped


def _collect(rel, img, reason, images, files, skipped):
    if img is None:
        skipped.append((rel, reason))
    else:
        images.append(img)
        files.append(rel)


@contextlib.contextmanager
def _strict_truncation():
    """Make sure truncated files raise on ``.load()`` even if someone enabled the opposite."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def _decode_one(path: Path, size: int, image_size: int, min_side: int):
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
            im.load()  # decode now: truncated data raises here
            im = ImageOps.exif_transpose(im)
            rgb = to_rgb(im)
            return _crop_resize(rgb, image_size), None
    except UnidentifiedImageError:
        return None, "not an image"
    except Image.DecompressionBombError as e:
        return None, f"too large: {e}"
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower():
            return None, f"truncated: {msg}"
        return None, f"unreadable: {msg}"
    except Exception as e:  # a Pillow plugin bug must not abort the whole folder
        return None, f"unreadable: {type(e).__name__}: {e}"


def _draft(im: Image.Image, image_size: int) -> None:
    """Let JPEG decode big images at 1/2, 1/4 or 1/8 scale (still >= 2x the target)."""
    if im.format != "JPEG":
        return
    w, h = im.size
    short = min(w, h)
    want = 2 * image_size
    if short >= 2 * want:
        scale = want / short
        im.draft(None, (max(1, int(w * scale) + 1), max(1, int(h * scale) + 1)))


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
    if mode.startswith("I;16"):
        return _gray_array(np.asarray(im, dtype=np.float64) / 257.0)
    if mode == "I":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0 and hi <= 255:
            return _gray_array(a)
        if lo >= 0 and hi <= 65535:
            return _gray_array(a / 257.0)
        return _gray_array(_stretch(a))
    if mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64))
        if a.min() >= 0 and a.max() <= 1:
            return _gray_array(a * 255.0)
        return _gray_array(_stretch(a))
    if mode == "1":
        return im.convert("L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if not has_alpha:
        return im.convert("RGB")
    if mode == "RGBa":  # premultiplied already: dropping alpha is the black composite
        return im.convert("RGB")
    rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)
    rgb = (rgba[..., :3] * rgba[..., 3:4] + 127) // 255  # over black, rounded
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _stretch(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)


def _gray_array(a: np.ndarray) -> Image.Image:
    g = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(g[..., None], 3, axis=-1), "RGB")


def _crop_resize(im: Image.Image, image_size: int) -> np.ndarray:
    """Centre square crop, then LANCZOS resize (the crop is the resize's source box)."""
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    box = (left, top, left + s, top + s)
    if s == image_size:
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


def _cache_key(root, entries, unreadable, image_size, min_side) -> str:
    blob = json.dumps(
        {
            "version": LOADER_VERSION,
            "folder": str(root),
            "files": entries,
            "unreadable": sorted(unreadable),
            "image_size": image_size,
            "min_side": min_side,
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
        images = np.load(npy, allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    if (
        images.dtype != np.uint8
        or images.shape != (len(files), image_size, image_size, 3)
        or not files
    ):
        return None
    return FolderImages(images, files, skipped, from_cache=True)


def _write_cache(result: FolderImages, npy: Path, meta: Path) -> None:
    """Write array then metadata, each via temp file + ``os.replace``; failures only warn."""
    try:
        npy.parent.mkdir(parents=True, exist_ok=True)
        _atomic(npy, lambda f: np.save(f, result.images, allow_pickle=False))
        info = {"files": result.files, "skipped": [list(s) for s in result.skipped]}
        _atomic(meta, lambda f: f.write(json.dumps(info).encode()))
    except OSError as e:
        warnings.warn(f"could not write image cache in {npy.parent}: {e}", RuntimeWarning, 3)


def _atomic(path: Path, write) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
