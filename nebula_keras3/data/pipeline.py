"""Feed uint8 images to Keras as float batches in [-1, 1], reproducibly across epochs.

``ImageBatches`` is a ``keras.utils.PyDataset`` (so it works the same on the
TensorFlow, JAX and PyTorch backends). The order of epoch ``e`` comes from
``np.random.default_rng([seed, e])`` and the augmentation of its batch ``i`` from
``np.random.default_rng([seed, e, i])``: a batch is a pure function of
``(seed, epoch, i)``, whatever the worker count or the order batches are asked in,
and a run resumed at epoch ``e`` (``start_epoch=e`` or ``set_epoch(e)``) sees
exactly the batches an uninterrupted run sees there.

Epoch counting. ``Model.fit`` calls ``on_epoch_end`` once *before* training (when it
resets its data iterator; under TensorFlow after reading two batches to learn their
shapes). Counting that call would make every run skip its first epoch, so:

* once Keras drives the dataset (``on_epoch_begin`` was called), ``on_epoch_end``
  advances only an epoch that began; the first ``on_epoch_begin`` also undoes any
  advance made before it, back to ``start_epoch`` / the last ``set_epoch``;
* used by hand (no ``on_epoch_begin`` ever), ``on_epoch_end`` advances after any
  batch was read.

So ``fit(ds, epochs=k)`` on a fresh dataset trains on epochs ``0 .. k-1`` and
leaves ``ds.epoch == k`` on every backend. For exactness under any driver, call
``set_epoch(epoch)`` as each epoch begins (``epoch_callback()`` does that in ``fit``).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from nebula_keras3.data.folder import DataError

# The eight symmetries of a square: rot90 k times (k = t % 4), then a horizontal
# flip when t >= 4. Together they cover every combination of horizontal and vertical
# flips and 90-degree turns (a nebula has no "up").
NUM_TRANSFORMS = 8


class ImageBatches(keras.utils.PyDataset):
    """uint8 ``[N, S, S, 3]`` images -> float32 ``[B, S, S, 3]`` batches in [-1, 1].

    ``__getitem__`` returns only ``x`` (a GAN needs no targets).

    The images are never copied as a whole: a ``np.memmap`` (the data cache of
    ``load_image_folder``) stays on disk and each batch reads only its own images.

    Args:
        images_uint8: uint8 array ``[N, S, S, 3]`` (square images), in memory or a memmap.
        batch_size: images per batch.
        seed: seeds every epoch's shuffle and every batch's augmentation.
        shuffle: reshuffle each epoch (else the stored order, every epoch).
        augment: random flips and 90-degree rotations, per image.
        start_epoch: the epoch the first batches belong to (for resuming).
        drop_remainder: drop the last partial batch (True: every batch is full).
        shard: ``(index, count)``: return only slice ``index`` of ``count`` equal slices of
            every batch (one per process in multi-host data-parallel training; the union
            of the slices is the unsharded batch, augmentation included).
        **pydataset_kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size``.

    Raises:
        DataError: the array is not uint8 ``[N, S, S, 3]``, or holds fewer images
            than one batch (with ``drop_remainder``).
    """

    def __init__(
        self,
        images_uint8: np.ndarray,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        augment: bool = True,
        start_epoch: int = 0,
        drop_remainder: bool = True,
        shard: tuple[int, int] = (0, 1),
        **pydataset_kwargs,
    ):
        super().__init__(**pydataset_kwargs)
        images = images_uint8 if isinstance(images_uint8, np.ndarray) else np.asarray(images_uint8)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise DataError(
                f"expected uint8 images [N, S, S, 3], got {images.dtype} {list(images.shape)}"
            )
        if images.shape[1] != images.shape[2]:
            raise DataError(f"expected square images, got {images.shape[1]}x{images.shape[2]}")
        batch_size = int(batch_size)
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        index, count = (int(v) for v in shard)
        if not (0 <= index < count and (count == 1 or (batch_size % count == 0 and drop_remainder))):
            raise DataError(
                f"shard {index} of {count} needs 0 <= index < count, full batches and a batch size "
                f"divisible by {count} (got {batch_size})"
            )
        n = len(images)
        if n == 0 or (drop_remainder and n < batch_size):
            raise DataError(
                f"only {n} training image(s), fewer than one batch of {batch_size}: "
                f"use a smaller --batch-size (at most {n}) or add images"
                if n
                else "no training images"
            )
        self.images = images
        self.batch_size = batch_size
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.drop_remainder = bool(drop_remainder)
        self.shard = (index, count)
        self.epoch = int(start_epoch)
        self._anchor = self.epoch  # start_epoch or the last set_epoch
        self._driven = False  # has Keras called on_epoch_begin?
        self._begun = False  # did the current epoch start? (see on_epoch_end)
        self._order_cache: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_remainder else math.ceil(n / self.batch_size)

    def __getitem__(self, i: int) -> np.ndarray:
        """Batch ``i`` of the current epoch: float32 ``[B, S, S, 3]`` in [-1, 1]."""
        if not self._driven:  # by hand: reading a batch begins the epoch
            self._begun = True
        return self.batch(self.epoch, i)

    def batch(self, epoch: int, i: int) -> np.ndarray:
        """Batch ``i`` of any ``epoch`` (what ``__getitem__`` returns in that epoch)."""
        n_batches = len(self)
        i = int(i)
        if i < 0:
            i += n_batches
        if not 0 <= i < n_batches:
            raise IndexError(f"batch {i} out of range: this dataset has {n_batches} batches")
        idx = self.order(epoch)[i * self.batch_size : (i + 1) * self.batch_size]
        if self.augment:  # drawn for the whole batch, so shards agree with the unsharded batch
            transforms = draw_transforms(np.random.default_rng([self.seed, int(epoch), i]), len(idx))
        index, count = self.shard
        if count > 1:
            local = slice(index * len(idx) // count, (index + 1) * len(idx) // count)
            idx = idx[local]
            transforms = transforms[local] if self.augment else None
        # Gather in ascending index order (sequential reads when `images` is a memmap of
        # the data cache), then put the images back in batch order: [B, S, S, 3] uint8.
        ascending = np.argsort(idx, kind="stable")
        x = np.empty((len(idx),) + self.images.shape[1:], np.uint8)
        x[ascending] = self.images[idx[ascending]]
        if self.augment:
            x = apply_transforms(x, transforms)
        return x.astype(np.float32) / np.float32(127.5) - np.float32(1.0)

    def order(self, epoch: int) -> np.ndarray:
        """Image indices of ``epoch`` in batch order (a permutation when shuffling)."""
        epoch = int(epoch)
        cached = self._order_cache
        if cached is not None and cached[0] == epoch:
            return cached[1]
        n = len(self.images)
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
        else:
            order = np.arange(n)
        self._order_cache = (epoch, order)
        return order

    def on_epoch_begin(self) -> None:
        """Keras calls this (in the main process) as each epoch starts."""
        if not self._driven:  # undo fit's pre-training iterator reset
            self._driven = True
            self.epoch = self._anchor
        self._begun = True

    def on_epoch_end(self) -> None:
        """Keras calls this after each epoch: the next batches belong to the next epoch.

        A call while the current epoch has not begun is ignored: that is ``fit``'s
        iterator reset, not an epoch (see the module docstring).
        """
        if self._begun:
            self.epoch += 1
            self._begun = False

    def set_epoch(self, epoch: int) -> None:
        """Jump to ``epoch`` (resume): its batches equal an uninterrupted run's."""
        self.epoch = self._anchor = int(epoch)
        self._begun = False

    def epoch_callback(self) -> keras.callbacks.Callback:
        """A ``fit`` callback that runs ``set_epoch(epoch)`` as each epoch begins.

        With it, epoch ``e`` of ``fit(..., initial_epoch=...)`` always reads this
        dataset's epoch ``e``, whatever Keras does with ``on_epoch_end``.
        """
        return keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs=None: self.set_epoch(epoch)
        )


def augment_batch(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply one of the square's 8 symmetries, drawn per image, to ``[B, S, S, C]``."""
    return apply_transforms(x, draw_transforms(rng, len(x)))


def draw_transforms(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` symmetry indices in ``[0, NUM_TRANSFORMS)``."""
    return rng.integers(0, NUM_TRANSFORMS, size=n)


def apply_transforms(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Image ``j`` of ``[B, S, S, C]`` -> symmetry ``t[j]`` of it."""
    out = np.empty_like(x)
    for k in range(NUM_TRANSFORMS):
        sel = np.flatnonzero(t == k)
        if sel.size:
            y = np.rot90(x[sel], k % 4, axes=(1, 2))
            out[sel] = y[:, :, ::-1] if k >= 4 else y
    return out
