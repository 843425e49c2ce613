"""Load a folder of images into one uint8 array, robustly, with an on-disk cache.

``load_image_folder(folder, 64)`` walks every (non-hidden) file under ``folder``,
recursively, decodes each by content (``nebula_keras3.data.decode``: any format and mode
Pillow opens, centre-cropped to a square, LANCZOS-resized) and reports every file it
could not use (empty, truncated, not an image, too large, too small, unreadable) in one
``SkippedImagesWarning``; a folder with no usable image is a ``DataError``.

With the cache on (the default), the decoded images are streamed into a uint8 ``.npy``
(``nebula_keras3.data.cache``) and returned as a read-only memmap; ``ImageBatches`` then
copies one batch at a time out of it, so data larger than RAM trains. A rerun on an
unchanged folder maps the file without decoding. With ``use_cache=False`` the images are
decoded into one preallocated array in memory. This module imports numpy, Pillow and
tqdm only (no Keras).
"""

from __future__ import annotations

import os
import stat
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nebula_keras3.data.cache import cache_files, cache_key, read_cache, write_cache
from nebula_keras3.data.decode import MAX_PIXELS, decode_all

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

    @property
    def listing(self) -> tuple[np.ndarray, int]:
        """``(positions, total)``: each image's position among the folder's files in sorted
        order, the skipped ones included, and their count (the held-out split's listing,
        ``data.split``: it does not depend on which files an image size skips)."""
        everything = sorted([*self.files, *(rel for rel, _ in self.skipped)])
        where = {rel: i for i, rel in enumerate(everything)}
        return np.array([where[rel] for rel in self.files], np.int64), len(everything)


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
        cache_dir: where the preprocessed array is cached (default: ``nebula_keras3.paths``).
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
        npy, meta = cache_files(cache_dir or None, cache_key(root, entries, unreadable, image_size, min_side, max_pixels))
        hit = read_cache(npy, meta, image_size)
        if hit is not None:
            result = FolderImages(*hit, from_cache=True)
            _warn_skipped(root, result.skipped, total)
            return result

        def fill(put):
            return _decode_checked(root, entries, unreadable, put, **decode)

        try:
            result = FolderImages(*write_cache(npy, meta, len(entries), image_size, fill), from_cache=False)
        except OSError as e:  # no room / read-only cache: decode into memory instead
            warnings.warn(f"could not write image cache in {npy.parent}: {e}", RuntimeWarning, 2)
        else:
            _warn_skipped(root, result.skipped, total)
            return result
    result = _decode_to_memory(root, entries, unreadable, **decode)
    _warn_skipped(root, result.skipped, total)
    return result


def _decode_checked(root, entries, unreadable, put, **decode):
    """``decode_all``, with the unreadable files among the skips; raises ``DataError`` if none is usable."""
    files, skipped = decode_all(root, entries, put, **decode)
    skipped = sorted(skipped + unreadable)
    if not files:
        raise DataError(_empty_message(root, len(entries) + len(unreadable), skipped))
    return files, skipped


def _decode_to_memory(root, entries, unreadable, **decode) -> FolderImages:
    """Decode into one preallocated ``[len(entries), S, S, 3]`` array, shrunk in place."""
    s = decode["image_size"]
    images = np.empty((len(entries), s, s, 3), np.uint8)
    n = 0

    def put(img):
        nonlocal n
        images[n] = img
        n += 1

    files, skipped = _decode_checked(root, entries, unreadable, put, **decode)
    images.resize((n, s, s, 3), refcheck=False)  # drop skipped rows without a copy
    return FolderImages(images, files, skipped, from_cache=False)


# --- listing ---------------------------------------------------------------------------


def _list_files(root: Path) -> tuple[list[tuple[str, int, int]], list[tuple[str, str]]]:
    """Sorted ``(relpath, size, mtime_ns)`` of regular files; ``(relpath, reason)`` of others.

    What ``os.walk`` visits (symlinked folders are not entered, unreadable folders are
    passed over), without building a path object per file: a training start lists the
    whole folder to find its cache entry.
    """
    entries, others = [], []
    pending = [""]  # folders to list, as relative POSIX prefixes ("" or "sub/dir/")
    while pending:
        prefix = pending.pop()
        try:
            with os.scandir(os.path.join(root, prefix) if prefix else root) as listing:
                found = list(listing)
        except OSError:
            continue
        for entry in found:
            if entry.name.startswith("."):
                continue
            rel = prefix + entry.name
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not entry.is_symlink():
                    pending.append(rel + "/")
                continue
            try:
                st = entry.stat()
            except OSError as e:
                others.append((rel, f"unreadable: {e.strerror or e}"))
                continue
            if not stat.S_ISREG(st.st_mode):
                others.append((rel, "unreadable: not a regular file"))
                continue
            entries.append((rel, st.st_size, st.st_mtime_ns))
    entries.sort()
    return entries, others


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
