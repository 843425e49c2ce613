"""Training data: image folders, the built-in procedural set, and Keras batches.

``folder`` (with ``decode``, ``cache`` and ``fingerprint``) and ``procedural`` import
numpy/Pillow only; ``ImageBatches`` (a ``keras.utils.PyDataset``) is imported from
``pipeline`` on first use, so ``import nebula_keras3.data`` stays free of Keras.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from nebula_keras3.data.fingerprint import data_fingerprint
from nebula_keras3.data.folder import (
    DataError,
    FolderImages,
    SkippedImagesWarning,
    load_image_folder,
)
from nebula_keras3.data.procedural import procedural_nebulae

# Size of the built-in data set when no --data folder is given.
NUM_PROCEDURAL = 1024

__all__ = [
    "DataError",
    "FolderImages",
    "ImageBatches",
    "NUM_PROCEDURAL",
    "SkippedImagesWarning",
    "TrainingImages",
    "data_fingerprint",
    "load_image_folder",
    "load_training_images",
    "procedural_nebulae",
]


class TrainingImages(NamedTuple):
    """What ``load_training_images`` returns."""

    images: np.ndarray  # uint8 [N, S, S, 3]
    description: str  # one line for the run's log
    listing: tuple[np.ndarray, int] | None  # a folder's ``FolderImages.listing``; None: the images list themselves


def load_training_images(
    data_dir: str | os.PathLike | None,
    image_size: int,
    *,
    num_procedural: int = NUM_PROCEDURAL,
    seed: int = 0,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> TrainingImages:
    """The training images, a one-line description and (a folder's) listing for the held-out split.

    ``data_dir=None`` gives ``num_procedural`` procedural nebulae (seeded by
    ``seed``); otherwise every usable image in ``data_dir`` (see ``load_image_folder``;
    skipped files raise one ``SkippedImagesWarning``, no usable file a ``DataError``).
    """
    if data_dir is None:
        images = procedural_nebulae(num_procedural, image_size, seed=seed)
        return TrainingImages(images, f"{len(images)} procedural nebulae at {image_size} px (seed {seed})", None)
    loaded = load_image_folder(
        data_dir, image_size, cache_dir=cache_dir, use_cache=use_cache, progress=progress
    )
    skipped = f", {len(loaded.skipped)} skipped" if loaded.skipped else ""
    cached = " (from cache)" if loaded.from_cache else ""
    return TrainingImages(loaded.images, f"{len(loaded.images)} images from {data_dir} at {image_size} px{skipped}{cached}",
                          loaded.listing)


def __getattr__(name: str):
    if name == "ImageBatches":
        from nebula_keras3.data.pipeline import ImageBatches

        return ImageBatches
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
