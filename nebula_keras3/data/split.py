"""A seeded train / held-out split of a data set (``nebula train --holdout FRACTION``)."""

from __future__ import annotations

import numpy as np

# Mixed into the run seed so the split does not share a stream with anything else seeded by it.
_SPLIT_STREAM = 0x5EED_0001


def holdout_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, held_out)`` sorted index arrays: a seeded ``round(fraction * n)`` images held out.

    Depends only on ``(n, fraction, seed)``, so a resumed run holds out the same images
    (the folder loader returns files in sorted order).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout must be a fraction between 0 and 1, got {fraction}")
    count = int(round(fraction * n))
    if count < 1 or count >= n:
        raise ValueError(f"holdout {fraction} of {n} images leaves {count} held out and {n - count} to train on")
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(n)
    return np.sort(order[count:]), np.sort(order[:count])


def split_holdout(images: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(training images, held-out images)`` of a uint8 ``[N, S, S, 3]`` array."""
    train, held = holdout_indices(len(images), fraction, seed)
    return images[train], images[held]
