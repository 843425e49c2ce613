"""What a run trained on: image count, shape and a SHA-256 of the uint8 pixels (``data.json``).

``data_fingerprint(images)`` hashes every pixel, except for an array that
``load_image_folder`` memory-mapped from its cache: that file's digest was computed once,
when the cache was written, and is stored beside it (``nebula_keras3.data.cache``), so a
training start on a cached folder reads no pixels to fingerprint them. The digest is only
looked up for that very (read-only) array object; a view, a copy or any other array is
hashed in full. Both ways give the same value for the same pixels.
"""

from __future__ import annotations

import hashlib
import weakref

import numpy as np

# id(array) -> (weak reference to the array, its pixel digest); see remember_digest.
_KNOWN: dict[int, tuple[weakref.ref, str]] = {}


def pixel_hasher(shape: tuple[int, ...], dtype=np.uint8):
    """A SHA-256 primed for an array of ``shape``; fed its C-order bytes it gives ``pixel_digest``."""
    digest = hashlib.sha256()
    digest.update(repr((np.dtype(dtype).str, tuple(int(n) for n in shape))).encode())
    return digest


def pixel_digest(images: np.ndarray) -> str:
    """SHA-256 (hex) of the dtype, shape and every byte of ``images``: reads the whole array."""
    images = np.ascontiguousarray(images)
    digest = pixel_hasher(images.shape, images.dtype)
    digest.update(memoryview(images).cast("B"))
    return digest.hexdigest()


def remember_digest(images: np.ndarray, digest: str) -> None:
    """Record ``digest`` (``pixel_digest``'s value) for the read-only array ``images`` itself."""
    if images.flags.writeable:
        raise ValueError("only a read-only array keeps the digest of its pixels")
    key = id(images)
    _KNOWN[key] = (weakref.ref(images, lambda _: _KNOWN.pop(key, None)), digest)


def known_digest(images: np.ndarray) -> str | None:
    """The digest recorded for this very array object, else None."""
    entry = _KNOWN.get(id(images))
    return entry[1] if entry is not None and entry[0]() is images else None


def data_fingerprint(images: np.ndarray) -> dict:
    """What a run trained on: image count, shape and the SHA-256 of the uint8 pixels.

    Any change to the files (added, removed, edited) or to their decoding changes it.
    Cheap for the array ``load_image_folder`` returns from its cache (see the module
    docstring); every other array is read in full.
    """
    digest = known_digest(images) or pixel_digest(images)
    return {"image_count": int(images.shape[0]), "shape": list(images.shape[1:]), "sha256": digest}
