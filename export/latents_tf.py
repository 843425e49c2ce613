"""TensorFlow port of ``nebula_keras3.sampling.latents.latents_from_seeds``.

Runs inside exported graphs (the SavedModel's ``generate_png`` signature), so a
seed names the same latent vector in TF Serving as in the numpy samplers. Every
integer step is int64 with the same 32-bit masking as the numpy recipe, hence
bit-exact; only float32 ``log``/``cos``/``sin`` may differ by an ulp.
Only native TF ops (bitwise, arithmetic, math) are used.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from nebula_keras3.sampling import latents as np_latents
from nebula_keras3.sampling.latents import GOLDEN, LOWBIAS_C1, LOWBIAS_C2, MASK32

_TWO_PI = np.float32(2.0 * np.pi)
_INV_2_24 = np.float32(1.0 / (1 << 24))


def _i64(v: int) -> tf.Tensor:
    return tf.constant(v, dtype=tf.int64)


def _mul32(x: tf.Tensor, c: int) -> tf.Tensor:
    """(x * c) mod 2**32 for 0 <= x < 2**32, all in int64 without overflow."""
    c = _i64(c)
    lo = tf.bitwise.bitwise_and(x, _i64(0xFFFF))
    hi = tf.bitwise.right_shift(x, _i64(16))
    hi_part = tf.bitwise.left_shift(tf.bitwise.bitwise_and(hi * c, _i64(0xFFFF)), _i64(16))
    return tf.bitwise.bitwise_and(lo * c + hi_part, _i64(MASK32))


def _xorshift(x: tf.Tensor, n: int) -> tf.Tensor:
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _i64(n)))


def hash32(x: tf.Tensor) -> tf.Tensor:
    """lowbias32 on int64 tensors holding values in [0, 2**32)."""
    x = _xorshift(x, 16)
    x = _mul32(x, LOWBIAS_C1)
    x = _xorshift(x, 15)
    x = _mul32(x, LOWBIAS_C2)
    return _xorshift(x, 16)


def pair_bits_tf(seeds: tf.Tensor, latent_dim: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The int64 hash words ``(a, b)``, each ``[n, ceil(latent_dim/2)]`` (bit-exact)."""
    s = tf.reshape(tf.cast(seeds, tf.int64), [-1])
    mask = _i64(MASK32)
    lo = tf.bitwise.bitwise_and(s, mask)
    hi = tf.bitwise.bitwise_and(tf.bitwise.right_shift(s, _i64(32)), mask)
    base = hash32(
        tf.bitwise.bitwise_xor(hash32(tf.bitwise.bitwise_and(lo + _i64(GOLDEN), mask)), hi)
    )
    pairs = (int(latent_dim) + 1) // 2
    k = np.arange(pairs, dtype=np.int64)
    # The per-pair steps depend only on latent_dim: constants computed with the
    # numpy recipe's own int64 arithmetic.
    step_a = tf.constant(np_latents.mul32(2 * k + 1, GOLDEN), dtype=tf.int64)
    step_b = tf.constant(np_latents.mul32(2 * k + 2, GOLDEN), dtype=tf.int64)
    a = hash32(tf.bitwise.bitwise_and(base[:, None] + step_a[None, :], mask))
    b = hash32(tf.bitwise.bitwise_and(base[:, None] + step_b[None, :], mask))
    return a, b


def latents_from_seeds_tf(seeds: tf.Tensor, latent_dim: int) -> tf.Tensor:
    """float32 ``[n, latent_dim]`` from int64 seeds ``[n]`` (same recipe as numpy)."""
    a, b = pair_bits_tf(seeds, latent_dim)
    pairs = (int(latent_dim) + 1) // 2
    u1 = tf.cast(tf.bitwise.right_shift(a, _i64(8)) + _i64(1), tf.float32) * _INV_2_24
    u2 = tf.cast(tf.bitwise.right_shift(b, _i64(8)), tf.float32) * _INV_2_24
    r = tf.sqrt(tf.constant(-2.0, tf.float32) * tf.math.log(u1))
    theta = tf.constant(_TWO_PI, tf.float32) * u2
    z = tf.stack([r * tf.cos(theta), r * tf.sin(theta)], axis=-1)  # [n, pairs, 2]
    z = tf.reshape(z, [tf.shape(a)[0], 2 * pairs])
    return z[:, :latent_dim]
