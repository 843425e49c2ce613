"""Portable latent draw: the same seed gives the same latent vector everywhere.

The Keras sampler, the ONNX Runtime sampler, the SavedModel's ``generate_png``
signature and the embedded server all draw latents with this one recipe, so a
seed names the same image whichever path renders it.

Recipe (per image seed ``s``, an int64; ``d`` = latent size):

* ``base = h(h(lo(s) + 0x9E3779B9) ^ hi(s))`` with ``lo``/``hi`` the low and
  high 32 bits of ``s`` and ``h`` the 32-bit "lowbias32" integer hash;
* for ``k = 0 .. ceil(d/2)-1``: ``a = h(base + (2k+1)*0x9E3779B9)``,
  ``b = h(base + (2k+2)*0x9E3779B9)`` (all mod 2**32);
* uniforms ``u1 = ((a >> 8) + 1) / 2**24`` in (0, 1], ``u2 = (b >> 8) / 2**24``;
* Box-Muller in float32: ``r = sqrt(-2 ln u1)``, ``z[2k] = r cos(2 pi u2)``,
  ``z[2k+1] = r sin(2 pi u2)``; the last odd element is dropped.

Every integer step stays inside signed int64 without overflow (32-bit products
are split into 16-bit halves), so TensorFlow graphs compute it bit-exactly
(see ``nebula_keras3.export.latents_tf``); only the float32 ``log``/``cos``/
``sin`` may differ by an ulp between libraries.

A batch rendered with ``--seed S -n N`` uses the image seeds ``S, S+1, ..., S+N-1``.
This module imports numpy only.
"""

from __future__ import annotations

import numpy as np

MASK32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9
LOWBIAS_C1 = 0x7FEB352D
LOWBIAS_C2 = 0x846CA68B
_TWO_PI = np.float32(2.0 * np.pi)
_INV_2_24 = np.float32(1.0 / (1 << 24))


def mul32(x: np.ndarray, c: int) -> np.ndarray:
    """(x * c) mod 2**32 for 0 <= x < 2**32 without leaving int64."""
    lo = x & 0xFFFF
    hi = x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & MASK32


def hash32(x: np.ndarray) -> np.ndarray:
    """lowbias32 integer hash on int64 arrays holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = mul32(x, LOWBIAS_C1)
    x = x ^ (x >> 15)
    x = mul32(x, LOWBIAS_C2)
    return x ^ (x >> 16)


def latents_from_seeds(seeds, latent_dim: int) -> np.ndarray:
    """Latent vectors ``float32 [len(seeds), latent_dim]``, one per int64 seed."""
    s = np.asarray(seeds, dtype=np.int64).reshape(-1)
    lo = s & MASK32
    hi = (s >> 32) & MASK32
    base = hash32(hash32((lo + GOLDEN) & MASK32) ^ hi)  # [n]
    pairs = (int(latent_dim) + 1) // 2
    k = np.arange(pairs, dtype=np.int64)
    step_a = mul32(2 * k + 1, GOLDEN)  # [pairs]
    step_b = mul32(2 * k + 2, GOLDEN)
    a = hash32((base[:, None] + step_a[None, :]) & MASK32)  # [n, pairs]
    b = hash32((base[:, None] + step_b[None, :]) & MASK32)
    u1 = ((a >> 8) + 1).astype(np.float32) * _INV_2_24
    u2 = (b >> 8).astype(np.float32) * _INV_2_24
    r = np.sqrt(np.float32(-2.0) * np.log(u1))
    theta = _TWO_PI * u2
    z = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=-1)  # [n, pairs, 2]
    return z.reshape(s.shape[0], 2 * pairs)[:, :latent_dim].astype(np.float32)


def batch_seeds(seed: int, n: int) -> np.ndarray:
    """The image seeds of a batch rendered with ``--seed seed -n n``."""
    return np.arange(n, dtype=np.int64) + np.int64(seed)
