"""The on-disk cache of decoded image folders: one uint8 ``.npy`` and one ``.json`` per entry.

An entry lives under ``<cache dir>/folders`` (``nebula_keras3.paths``) and is keyed by the
folder's resolved path, every file's (relative path, size, mtime_ns), the image size,
``min_side``, ``max_pixels`` and ``LOADER_VERSION``: a rerun on an unchanged folder maps
the file without decoding.

``write_cache`` streams decoded images, one chunk at a time and in file order, into a
temp file renamed when complete (a killed run leaves no half cache). ``read_cache`` and
``write_cache`` return the ``.npy`` as a read-only ``np.load(..., mmap_mode="r")`` memmap,
so data larger than RAM is paged in by the batches that read it.

The ``.json`` holds the files used, the files skipped with their reasons, the SHA-256 of
the pixels (``fingerprint.pixel_digest``'s value, computed once while writing) and the
``.npy``'s size and mtime. On a hit the digest is handed to ``fingerprint`` for the mapped
array, so fingerprinting a cached folder reads no pixels; a ``.npy`` whose size or mtime
no longer match is a miss. An entry written before digests were stored gets its digest
computed and recorded on its first hit.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from nebula_keras3.artifacts import atomic_path, write_bytes_atomic
from nebula_keras3.data.decode import LOADER_VERSION
from nebula_keras3.data.fingerprint import pixel_digest, pixel_hasher, remember_digest
from nebula_keras3.paths import FOLDER_CACHE, cache_subdir

# Decoded images written to the cache per write() call (bounds the writer's buffer).
_CHUNK = 64
# A fixed-size .npy v1.0 header: the shape (count of usable images) is only known at the
# end, so the file starts with a header for the maximum count and is rewritten in place.
_NPY_HEADER_BYTES = 128


def cache_key(root: Path, entries, unreadable, image_size: int, min_side: int, max_pixels: int) -> str:
    """Hex key of one folder listing decoded with one set of options."""
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


def cache_files(cache_dir: str | os.PathLike | None, key: str) -> tuple[Path, Path]:
    """``(images .npy, info .json)`` of entry ``key`` (``cache_dir`` None: the default root)."""
    stem = cache_subdir(FOLDER_CACHE, cache_dir) / f"images-{key}"
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


def read_cache(npy: Path, meta: Path, image_size: int):
    """``(images memmap, files, skipped)`` of a usable entry, or None when missing, unreadable or stale."""
    try:
        info = json.loads(meta.read_text())
        files = [str(f) for f in info["files"]]
        skipped = [(str(r), str(why)) for r, why in info["skipped"]]
        stored = info.get("npy_stat")
        if stored is not None and list(stored) != _stat(npy):
            return None  # the .npy changed after its digest was taken
        images = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    if (
        images.dtype != np.uint8
        or images.shape != (len(files), image_size, image_size, 3)
        or not files
    ):
        return None
    digest = info.get("sha256")
    if stored is None or not isinstance(digest, str):  # an entry from before digests were stored
        digest = pixel_digest(images)
        info.update(sha256=digest, npy_stat=_stat(npy))
        try:
            write_bytes_atomic(json.dumps(info).encode(), meta)
        except OSError:
            pass  # read-only cache: computed again next time
    remember_digest(images, digest)
    return images, files, skipped


def write_cache(npy: Path, meta: Path, max_count: int, image_size: int, fill):
    """Stream images into ``npy`` and describe them in ``meta``; ``(images memmap, files, skipped)``.

    ``fill(put)`` calls ``put(uint8 [S, S, 3])`` for each image, at most ``max_count`` of them,
    and returns ``(files, skipped)``; whatever it raises propagates, leaving no entry behind.
    Holds at most ``_CHUNK`` images at a time.
    """
    s = image_size
    npy.parent.mkdir(parents=True, exist_ok=True)
    # Hashed as written, assuming every image is used; a skip changes the shape in the
    # digest's prefix, and the finished file is hashed instead.
    hasher = pixel_hasher((max_count, s, s, 3))
    count = 0
    with atomic_path(npy) as tmp, open(tmp, "wb") as f:
        f.write(_npy_header((max_count, s, s, 3)))  # placeholder; rewritten below
        chunk = []

        def flush():
            data = np.stack(chunk).tobytes()
            f.write(data)
            hasher.update(data)
            chunk.clear()

        def put(img):
            nonlocal count
            chunk.append(img)
            count += 1
            if len(chunk) == _CHUNK:
                flush()

        files, skipped = fill(put)
        if chunk:
            flush()
        f.seek(0)
        f.write(_npy_header((count, s, s, 3)))
        f.flush()
        os.fsync(f.fileno())
    images = np.load(npy, mmap_mode="r", allow_pickle=False)
    digest = hasher.hexdigest() if count == max_count else pixel_digest(images)
    info = {"files": files, "skipped": [list(x) for x in skipped], "sha256": digest, "npy_stat": _stat(npy)}
    write_bytes_atomic(json.dumps(info).encode(), meta)
    remember_digest(images, digest)
    return images, files, skipped


def _stat(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """``.npy`` format 1.0 header for C-order uint8 ``shape``, exactly 128 bytes."""
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    body_len = _NPY_HEADER_BYTES - 10  # magic (6) + version (2) + length (2)
    if len(text) + 1 > body_len:
        raise ValueError(f"shape {shape} does not fit a {_NPY_HEADER_BYTES}-byte .npy header")
    body = text.ljust(body_len - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + body.encode("latin1")
