"""Image grids and uint8 conversion (numpy and Pillow only)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from nebula_keras3.artifacts import atomic_path


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Generator output in [-1, 1] -> uint8 [0, 255], the rounding every export uses."""
    x = (np.asarray(images, dtype=np.float32) + 1.0) * 127.5
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, ncols: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile uint8 ``[n, h, w, 3]`` into one ``[H, W, 3]`` image (black padding)."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    ncols = ncols or max(1, int(math.ceil(math.sqrt(n))))
    nrows = int(math.ceil(n / ncols))
    grid = np.zeros(
        (nrows * (h + padding) + padding, ncols * (w + padding) + padding, c), dtype=np.uint8
    )
    for i, img in enumerate(images):
        r, col = divmod(i, ncols)
        y = padding + r * (h + padding)
        x = padding + col * (w + padding)
        grid[y : y + h, x : x + w] = img
    return grid


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 image atomically (temp file in the same folder, then rename)."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format="PNG")
    return Path(path)


def save_individual(images: np.ndarray, folder: str | os.PathLike, seeds=None) -> list[Path]:
    """One PNG per image, named by its seed when given (``seed_000123.png``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, img in enumerate(images):
        name = f"seed_{int(seeds[i]):06d}.png" if seeds is not None else f"{i:04d}.png"
        out.append(save_png(img, folder / name))
    return out
