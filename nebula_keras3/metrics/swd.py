"""Sliced Wasserstein distance between two image sets, as ProGAN reports it.

A vectorised numpy transcription of ``metrics/sliced_wasserstein.py`` in
tkarras/progressive_growing_of_gans (Karras et al. 2018):

1. Laplacian pyramid of each image: the 5x5 binomial filter ([1, 4, 6, 4, 1]/16
   in each direction), mirror borders (scipy's ``mode='mirror'`` = numpy's
   ``'reflect'``), down to 16 px. Level ``i`` is ``img_i - pyr_up(img_{i+1})``;
   the last level is the 16 px low-pass image itself.
2. 128 random 7x7 neighbourhoods per image and level -> descriptors ``[n*128, 7*7*3]``.
3. Each set's descriptors are normalised per colour channel (mean 0, std 1 over
   all its descriptors and pixels), separately for the two sets.
4. 4 repeats x 128 random unit directions; project, sort each direction's
   projections, mean ``|sorted A - sorted B|``; mean over the repeats.
5. Reported x1e3 per level (finest first) and averaged.

Differences from the original, none of which changes the expected value: the
random draws come from a seeded ``np.random.Generator``; both sets use the same
neighbourhood positions (so a set against itself gives exactly 0; ProGAN draws
new positions per call); descriptors are flattened as (y, x, channel), which
random isotropic directions cannot tell apart from (channel, y, x).
"""

from __future__ import annotations

import numpy as np

NHOOD_SIZE = 7
NHOODS_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
MIN_RESOLUTION = 16
# 1D binomial taps; the 2D filter is their outer product ([1 4 6 4 1]^T [1 4 6 4 1] / 256).
_TAPS = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0


def swd_resolutions(image_size: int) -> list[int]:
    """Pyramid level sizes, finest first: 64 -> [64, 32, 16]."""
    sizes = []
    res = int(image_size)
    while res >= MIN_RESOLUTION:
        sizes.append(res)
        res //= 2
    return sizes


def _check_images(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"{name} images must be [n, S, S, 3], got {list(images.shape)}")
    size = images.shape[1]
    if size < MIN_RESOLUTION or size & (size - 1):
        raise ValueError(f"SWD needs square images whose side is a power of two >= {MIN_RESOLUTION}, got {size} px")
    return images


def _blur(x: np.ndarray, axis: int, taps: np.ndarray, step: int) -> np.ndarray:
    """5-tap filter along ``axis`` with mirror borders, keeping every ``step``-th output."""
    pad = [(0, 0)] * x.ndim
    pad[axis] = (2, 2)
    xp = np.pad(x, pad, mode="reflect")
    length = x.shape[axis]
    out = None
    for k, w in enumerate(taps):
        idx = [slice(None)] * x.ndim
        idx[axis] = slice(k, k + length, step)
        term = w * xp[tuple(idx)]
        out = term if out is None else out + term
    return out


def pyr_down(x: np.ndarray) -> np.ndarray:
    """[n, H, W, C] -> [n, H/2, W/2, C]: binomial blur, keep even rows and columns (cv2.pyrDown)."""
    return _blur(_blur(x, 1, _TAPS, 2), 2, _TAPS, 2)


def pyr_up(x: np.ndarray) -> np.ndarray:
    """[n, H, W, C] -> [n, 2H, 2W, C]: zero-insert, blur with 4x the filter (cv2.pyrUp)."""
    n, h, w, c = x.shape
    up = np.zeros((n, 2 * h, 2 * w, c), x.dtype)
    up[:, ::2, ::2] = x
    return _blur(_blur(up, 1, 2 * _TAPS, 1), 2, 2 * _TAPS, 1)


def laplacian_pyramid(images: np.ndarray, num_levels: int) -> list[np.ndarray]:
    """float32 levels, finest first; the last one is the low-pass residual."""
    pyramid = [np.asarray(images, np.float32)]
    for _ in range(1, num_levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1])
    return pyramid


def _positions(rng: np.random.Generator, n_images: int, size: int):
    """Centre (y, x) of ``NHOODS_PER_IMAGE`` neighbourhoods per image, fully inside the image."""
    half = NHOOD_SIZE // 2
    count = n_images * NHOODS_PER_IMAGE
    y = rng.integers(half, size - half, size=count)
    x = rng.integers(half, size - half, size=count)
    return y, x


def descriptors(level: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """[n, S, S, C] level -> normalised descriptors [n*128, 7*7*C] (float32)."""
    n, size, _, c = level.shape
    half = NHOOD_SIZE // 2
    offsets = np.arange(-half, half + 1)
    img = np.arange(len(y)) // NHOODS_PER_IMAGE
    # Flat index of pixel (img, y + dy, x + dx) -> [N, 7, 7]; np.take of whole pixels (C values each).
    rows = (img * size + y)[:, None] + offsets[None, :]  # [N, 7]
    pixel = (rows * size)[:, :, None] + (x[:, None] + offsets[None, :])[:, None, :]  # [N, 7, 7]
    desc = np.take(level.reshape(-1, c), pixel.reshape(-1), axis=0).reshape(len(y), NHOOD_SIZE, NHOOD_SIZE, c)
    desc -= desc.mean(axis=(0, 1, 2), keepdims=True)  # per channel, over the whole set
    std = desc.std(axis=(0, 1, 2), keepdims=True)
    desc /= np.where(std > 0, std, 1.0)  # a flat set (a collapsed generator) stays 0, not NaN
    return desc.reshape(desc.shape[0], -1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                       dir_repeats: int = DIR_REPEATS, dirs_per_repeat: int = DIRS_PER_REPEAT) -> float:
    """Mean |sorted projection of a - sorted projection of b| over random unit directions."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"descriptor sets must have equal [n, d] shapes, got {a.shape} and {b.shape}")
    results = []
    for _ in range(dir_repeats):
        dirs = rng.standard_normal((a.shape[1], dirs_per_repeat))
        dirs /= np.sqrt(np.sum(np.square(dirs), axis=0, keepdims=True))  # unit columns
        dirs = dirs.astype(np.float32).T  # [directions, d]
        # [directions, n] (contiguous rows: numpy sorts the last axis fastest)
        proj_a = np.sort(dirs @ a.T, axis=-1)
        proj_b = np.sort(dirs @ b.T, axis=-1)
        results.append(float(np.mean(np.abs(proj_a - proj_b))))
    return float(np.mean(results))


def sliced_wasserstein_distance(images_a: np.ndarray, images_b: np.ndarray, *, seed: int = 0) -> dict:
    """SWD x1e3 between two uint8 ``[n, S, S, 3]`` sets of equal shape.

    Returns ``{"swd": average, "swd_<res>": per level, ...}`` (finest level first).
    Deterministic for a given ``seed``.
    """
    images_a = _check_images(images_a, "first")
    images_b = _check_images(images_b, "second")
    if images_a.shape != images_b.shape:
        raise ValueError(
            f"SWD compares sets of equal size: got {images_a.shape[0]} x {images_a.shape[1]} px "
            f"and {images_b.shape[0]} x {images_b.shape[1]} px"
        )
    n, size = images_a.shape[0], images_a.shape[1]
    resolutions = swd_resolutions(size)
    pos_seed, dir_seed = np.random.SeedSequence(seed).spawn(2)
    pos_rng, dir_rng = np.random.default_rng(pos_seed), np.random.default_rng(dir_seed)
    pyr_a = laplacian_pyramid(images_a, len(resolutions))
    pyr_b = laplacian_pyramid(images_b, len(resolutions))
    result = {}
    for res, level_a, level_b in zip(resolutions, pyr_a, pyr_b):
        y, x = _positions(pos_rng, n, res)
        dist = sliced_wasserstein(descriptors(level_a, y, x), descriptors(level_b, y, x), dir_rng)
        result[f"swd_{res}"] = dist * 1e3
    result["swd"] = float(np.mean([result[f"swd_{r}"] for r in resolutions]))
    return result
