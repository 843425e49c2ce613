"""Latent interpolation strips and GIFs (numpy and Pillow only)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nebula_keras3.artifacts import atomic_path

from nebula_keras3.sampling.latents import latents_from_seeds


def slerp(z0: np.ndarray, z1: np.ndarray, t) -> np.ndarray:
    """Spherical interpolation between two latent vectors at fractions ``t`` (-> [len(t), d]).

    Falls back to linear interpolation when the vectors are (anti)parallel.
    """
    z0 = np.asarray(z0, dtype=np.float64)
    z1 = np.asarray(z1, dtype=np.float64)
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))[:, None]
    n0, n1 = np.linalg.norm(z0), np.linalg.norm(z1)
    cos = np.clip(np.dot(z0, z1) / max(n0 * n1, 1e-12), -1.0, 1.0)
    omega = np.arccos(cos)
    if np.sin(omega) < 1e-6:
        out = (1.0 - t) * z0 + t * z1
    else:
        out = (np.sin((1.0 - t) * omega) * z0 + np.sin(t * omega) * z1) / np.sin(omega)
    return out.astype(np.float32)


def interpolation_latents(seed_a: int, seed_b: int, steps: int, latent_dim: int) -> np.ndarray:
    """``steps`` latents from seed_a's latent to seed_b's (both ends included), by slerp."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    za, zb = latents_from_seeds([seed_a, seed_b], latent_dim)
    return slerp(za, zb, np.linspace(0.0, 1.0, steps))


def save_gif(frames: np.ndarray, path: str | os.PathLike, duration_ms: int = 100,
             boomerang: bool = True) -> Path:
    """Animated GIF of uint8 frames ``[k, h, w, 3]``, looping (there and back), written atomically."""
    from PIL import Image

    frames = np.asarray(frames, dtype=np.uint8)
    seq = list(frames)
    if boomerang and len(seq) > 2:
        seq = seq + seq[-2:0:-1]
    images = [Image.fromarray(f) for f in seq]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=duration_ms, loop=0)
    return Path(path)
