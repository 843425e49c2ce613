"""Memorisation check: how close generated images come to their nearest training photos.

Two spaces, each with Euclidean distance:

* ``features``: the fixed random-CNN features the other metrics use (``features.RandomCNNFeatures``);
* ``pixels``: the images resized to ``PIXEL_SIZE`` px (LANCZOS), as the RMS difference
  of their uint8 values.

A closeness needs a scale, and held-out real photos give it: photos of the same kind
that are not in the training set. Each held-out photo's distance to its nearest
training photo says how close a *new* photo comes by chance. In each space:

* the copy threshold is the ``COPY_QUANTILE`` quantile of those held-out distances
  (only that share of new real photos comes as close to a training photo);
* ``nn_copy_rate``: the share of generated images whose nearest training photo is at
  most that close (a copy, or as good as one). Training photos scored against
  themselves give 1.0; new real photos give about ``COPY_QUANTILE``;
* ``nn_distance_ratio_median``: the median, over generated images, of their
  nearest-training distance divided by the median held-out one. About 1 when the
  generator keeps as far from its training photos as new photos do; towards 0 as it
  copies (above 1: its images are unlike any photo, which is a quality problem instead).

The feature-space figures carry the plain names; the pixel-space ones end in ``_pixel``.
Numpy and Pillow only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nebula_keras3.metrics.features import RandomCNNFeatures, resize_images

PIXEL_SIZE = 64
# Share of held-out real photos at least as close to a training photo as a "copy" is.
COPY_QUANTILE = 0.01
NEIGHBOURS = 3  # nearest training photos kept (and drawn) per generated image
SPACES = ("features", "pixels")
_SUFFIX = {"features": "", "pixels": "_pixel"}
FIGURES = tuple(f"{name}{_SUFFIX[s]}" for s in SPACES for name in ("nn_copy_rate", "nn_distance_ratio_median"))


def _pixels(images: np.ndarray) -> np.ndarray:
    x = resize_images(images, PIXEL_SIZE)
    return x.reshape(len(x), -1).astype(np.float32)


def nearest(queries: np.ndarray, reference: np.ndarray, k: int, *, scale: float = 1.0,
            chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, distances)`` ``[n, k]`` of each query row's ``k`` nearest reference rows,
    closest first; distances are Euclidean times ``scale``.

    Candidates come from the float32 ``|q|^2 + |r|^2 - 2 q.r`` expansion; the distances
    of the ``k`` kept are then computed directly in float64, so a copy measures exactly 0.
    """
    k = min(k, len(reference))
    ref = np.asarray(reference, np.float32)
    ref_sq = np.sum(ref.astype(np.float64) ** 2, axis=1).astype(np.float32)
    idx_out, dist_out = [], []
    for i in range(0, len(queries), chunk):
        q = np.asarray(queries[i : i + chunk], np.float32)
        sq = np.sum(q.astype(np.float64) ** 2, axis=1).astype(np.float32)[:, None] + ref_sq[None, :] - 2 * q @ ref.T
        idx = np.argpartition(sq, k - 1, axis=1)[:, :k] if k < len(ref) else np.tile(np.arange(k), (len(q), 1))
        diff = q[:, None, :].astype(np.float64) - ref[idx].astype(np.float64)  # [chunk, k, d]
        dist = np.sqrt(np.sum(diff**2, axis=-1))
        order = np.argsort(dist, axis=1, kind="stable")
        idx_out.append(np.take_along_axis(idx, order, axis=1))
        dist_out.append(np.take_along_axis(dist, order, axis=1) * scale)
    if not idx_out:
        return np.zeros((0, k), np.int64), np.zeros((0, k))
    return np.concatenate(idx_out), np.concatenate(dist_out)


@dataclass
class Neighbours:
    """Each generated image's nearest training photos, per space (``SPACES``)."""

    indices: dict  # space -> int [n, k], closest first
    distances: dict  # space -> float [n, k]
    figures: dict  # FIGURES -> float


class TrainingNeighbours:
    """The training photos (and the held-out scale) prepared once; ``score`` many generated sets.

    ``train`` and ``held_out`` are uint8 ``[n, S, S, 3]``; the held-out photos must not be in
    the training set (a held-out photo that is also a training photo has distance 0, which
    pulls the threshold down to 0). ``spaces``: the ones of ``SPACES`` to measure in (the
    figures and neighbours of the others are left out).
    """

    def __init__(self, train: np.ndarray, held_out: np.ndarray, *, quantile: float = COPY_QUANTILE,
                 extractor: RandomCNNFeatures | None = None, spaces=SPACES):
        for name, x in (("training", train), ("held-out", held_out)):
            x = np.asarray(x)
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or len(x) < 1:
                raise ValueError(f"{name} images must be uint8 [n, S, S, 3] with n >= 1, got {x.dtype} {list(x.shape)}")
        if not 0.0 <= quantile < 1.0:
            raise ValueError(f"quantile must be in [0, 1), got {quantile}")
        if not spaces or set(spaces) - set(SPACES):
            raise ValueError(f"spaces must be some of {SPACES}, got {spaces}")
        self.spaces = tuple(s for s in SPACES if s in spaces)
        self.extractor = extractor or RandomCNNFeatures()
        self.quantile = float(quantile)
        self.train_count, self.held_out_count = len(train), len(held_out)
        self.reference = self._embed(train)
        self.scale = {"features": 1.0, "pixels": 1.0 / np.sqrt(PIXEL_SIZE * PIXEL_SIZE * 3)}  # pixels: RMS
        held = self._embed(held_out)
        self.held_out_distance = {s: nearest(held[s], self.reference[s], 1, scale=self.scale[s])[1][:, 0]
                                  for s in self.spaces}
        self.threshold = {s: float(np.quantile(d, self.quantile)) for s, d in self.held_out_distance.items()}
        self.typical = {s: float(np.median(d)) for s, d in self.held_out_distance.items()}

    def _embed(self, images: np.ndarray, features: np.ndarray | None = None) -> dict:
        out = {}
        if "features" in self.spaces:
            out["features"] = self.extractor(images) if features is None else features
        if "pixels" in self.spaces:
            out["pixels"] = _pixels(images)
        return out

    def score(self, generated: np.ndarray, k: int = NEIGHBOURS, *, features: np.ndarray | None = None) -> Neighbours:
        """Nearest training photos of uint8 ``generated`` and the figures (``FIGURES`` of ``spaces``).

        ``features``: ``generated``'s features from ``self.extractor`` when the caller has them
        already (it scores the same images otherwise too); default: computed here.
        """
        generated = np.asarray(generated)
        if generated.dtype != np.uint8 or generated.ndim != 4 or generated.shape[-1] != 3 or not len(generated):
            raise ValueError(f"generated images must be uint8 [n, S, S, 3], got {generated.dtype} {list(generated.shape)}")
        if features is not None and len(features) != len(generated):
            raise ValueError(f"features hold {len(features)} rows for {len(generated)} generated images")
        emb = self._embed(generated, features)
        indices, distances, figures = {}, {}, {}
        for s in self.spaces:
            indices[s], distances[s] = nearest(emb[s], self.reference[s], k, scale=self.scale[s])
            d = distances[s][:, 0]
            figures[f"nn_copy_rate{_SUFFIX[s]}"] = float(np.mean(d <= self.threshold[s]))
            typical = self.typical[s]
            ratio = d / typical if typical > 0 else np.where(d > 0, np.inf, 0.0)
            figures[f"nn_distance_ratio_median{_SUFFIX[s]}"] = float(np.median(ratio))
        return Neighbours(indices, distances, figures)

    def facts(self) -> dict:
        """The scale the figures were measured against (for the JSON report)."""
        out = {"nn_train_count": self.train_count, "nn_held_out_count": self.held_out_count,
               "nn_copy_quantile": self.quantile}
        for s in self.spaces:
            out[f"nn_threshold{_SUFFIX[s]}"] = self.threshold[s]
            out[f"nn_held_out_median{_SUFFIX[s]}"] = self.typical[s]
        return out


def nearest_picture(generated: np.ndarray, train: np.ndarray, found: Neighbours, *, rows: int = 16,
                    padding: int = 2, gap: int = 8) -> np.ndarray:
    """uint8 picture: one row per generated image, the closest cases (feature space) first.

    Each row: the generated image, a gap, its ``k`` nearest training photos in feature
    space, a gap, its ``k`` nearest in pixel space. Training photos are shown at the
    generated images' size.
    """
    size = generated.shape[1]
    order = np.argsort(found.distances["features"][:, 0], kind="stable")[:rows]
    k = found.indices["features"].shape[1]
    cell = size + padding
    width = padding + cell * (1 + 2 * k) + 2 * gap
    out = np.full((padding + cell * len(order), width, 3), 255, np.uint8)
    shown_train = {}

    def tile(i):
        if i not in shown_train:
            shown_train[i] = resize_images(train[i : i + 1], size)[0]
        return shown_train[i]

    for r, g in enumerate(order):
        y = padding + r * cell
        x = padding
        out[y : y + size, x : x + size] = generated[g]
        x += cell + gap
        for s in SPACES:
            for j in found.indices[s][g]:
                out[y : y + size, x : x + size] = tile(int(j))
                x += cell
            x += gap
    return out
