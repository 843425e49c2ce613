"""A seeded train / held-out split of a data set (``nebula train --holdout FRACTION``).

The draw is over a listing: a folder's files in sorted order, the files a given image size
skips (too small, unreadable) included (``FolderImages.listing``). So a photo held out at 64 px
is held out at 256 px too, where more small photos are skipped, and a run grown from another
at a larger size (``--init-from``) is scored on photos neither trained on. Procedural and
``.npy`` data list their images themselves.
"""

from __future__ import annotations

import numpy as np

# Mixed into the run seed so the split does not share a stream with anything else seeded by it.
_SPLIT_STREAM = 0x5EED_0001

# TrainConfig.holdout_split: what the draw runs over. "files": the listing above; "images": the
# images that loaded (how runs made before "files" were split; a resume keeps its run's split).
SPLIT_OVER = ("files", "images")
SPLIT_OF_OLDER_RUNS = "images"  # a run whose config.json has no holdout_split


def split_listing(holdout_split: str, listing: tuple[np.ndarray, int] | None) -> tuple[np.ndarray, int] | None:
    """The listing a run whose ``holdout_split`` is given draws over: the folder's ``listing``
    for "files", None (the images that loaded) for "images"."""
    return listing if holdout_split == "files" else None


def holdout_indices(n: int, fraction: float, seed: int, *,
                    listing: tuple[np.ndarray, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(train, held_out)`` sorted index arrays into ``n`` images.

    A seeded ``round(fraction * total)`` of a listing's ``total`` entries are held out; the
    images at those positions form ``held_out``. ``listing=(positions, total)`` gives each
    image's position in the listing; without it the listing is the ``n`` images. Depends only
    on the listing, ``fraction`` and ``seed``, so a resumed run holds out the same images.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout must be a fraction between 0 and 1, got {fraction}")
    positions, total = (np.arange(n), n) if listing is None else (np.asarray(listing[0], np.int64), int(listing[1]))
    if len(positions) != n or (n and not 0 <= positions.min() <= positions.max() < total):
        raise ValueError(f"a listing of {total} entries cannot place {n} images")
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(total)
    held_in_listing = np.zeros(total, bool)
    held_in_listing[order[: int(round(fraction * total))]] = True
    is_held = held_in_listing[positions]
    train, held = np.flatnonzero(~is_held), np.flatnonzero(is_held)
    if len(held) < 1 or len(train) < 1:
        raise ValueError(f"holdout {fraction} of {n} images leaves {len(held)} held out and {len(train)} to train on")
    return train, held


def split_holdout(images: np.ndarray, fraction: float, seed: int, *,
                  listing: tuple[np.ndarray, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(training images, held-out images)`` of a uint8 ``[N, S, S, 3]`` array (``listing``: as
    in ``holdout_indices``)."""
    train, held = holdout_indices(len(images), fraction, seed, listing=listing)
    return images[train], images[held]
