"""DiffAugment (Zhao et al. 2020) in ``keras.ops``: differentiable augmentation for D's inputs.

Same semantics as mit-han-lab/data-efficient-gans ``DiffAugment_pytorch.py`` (images in
[-1, 1], channels last here), split into a random *draw* of per-image parameters and a
deterministic, differentiable *apply*:

- ``color``: brightness ``x + (r - 0.5)``; saturation ``(x - mean_c) * 2r + mean_c``;
  contrast ``(x - mean_hwc) * (r + 0.5) + mean_hwc``; each ``r ~ U[0, 1)`` per image.
- ``translation``: shift by integers in ``[-s, s]``, ``s = int(size * 1/8 + 0.5)``, zero padding:
  ``out[i, j] = x[i + dy, j + dx]`` where that lies inside the image, else 0.
- ``cutout``: zero a ``c x c`` square, ``c = int(size / 2 + 0.5)``, its top-left corner at
  ``offset - c // 2`` with ``offset ~ U{0 .. size - c % 2}`` (clipped to the image).

Translation is written as two 0/1 matrix products (exact in float32), so it runs and
differentiates the same way on every backend.

Adaptive augmentation (StyleGAN2-ADA's controller, Karras et al. 2020): with ``draw(..., p=P)``
each op of the policy is also gated per image, on with probability ``P`` (one uniform draw per
op and image, after the op's own parameters); ``apply`` keeps an image unchanged where its gate
is off (an exact select). ``ada_adjust`` steers ``P`` from the sign of D on the reals.
"""

from __future__ import annotations

import keras
from keras import ops

POLICY_OPS = ("color", "translation", "cutout")
ADA_INTERVAL = 4  # GAN steps between two adjustments of p
# The step log (hence TensorBoard's step/ada_p) and epochs.csv column of p after the step / epoch.
ADA_LOG = "ada_p"
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(policy: str) -> tuple[str, ...]:
    """"color,translation,cutout" -> ("color", "translation", "cutout"); "" -> () (off)."""
    ops_ = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    unknown = [p for p in ops_ if p not in POLICY_OPS]
    if unknown:
        raise ValueError(f"unknown DiffAugment op(s) {', '.join(unknown)}; choose from {', '.join(POLICY_OPS)}")
    return ops_


def translation_shift(size: int) -> int:
    return int(size * TRANSLATION_RATIO + 0.5)


def cutout_size(size: int) -> int:
    return int(size * CUTOUT_RATIO + 0.5)


class DiffAugment:
    """A policy's ``draw(batch, size, seed) -> params`` and ``apply(images, params) -> images``."""

    def __init__(self, policy: str = "color,translation,cutout"):
        self.ops = parse_policy(policy)

    def __bool__(self):
        return bool(self.ops)

    def draw(self, batch_size, image_size: int, seed, p=None) -> dict:
        """Per-image parameters, drawn in policy order from ``seed`` (a SeedGenerator).

        With ``p`` (a scalar in [0, 1], ADA's probability), also one gate per op and image,
        ``params["<op>_on"]`` [B] bool, on with probability ``p``; drawn after the op parameters.
        """
        params = {}
        for op in self.ops:
            if op == "color":
                for key in ("brightness", "saturation", "contrast"):
                    params[key] = keras.random.uniform((batch_size,), seed=seed)  # [B] in [0, 1)
            elif op == "translation":
                s = translation_shift(image_size)
                params["translation"] = keras.random.randint((batch_size, 2), -s, s + 1, seed=seed)  # [B, (dy, dx)]
            elif op == "cutout":
                c = cutout_size(image_size)
                params["cutout"] = keras.random.randint(
                    (batch_size, 2), 0, image_size + 1 - c % 2, seed=seed
                )  # [B, (oy, ox)]
        if p is not None:
            for op in self.ops:  # uniform in [0, 1): never below p = 0, always below p = 1
                params[gate_key(op)] = ops.less(keras.random.uniform((batch_size,), seed=seed), p)
        return params

    def apply(self, images, params: dict):
        """Augment ``images`` [B, H, W, C] with drawn ``params`` (deterministic, differentiable)."""
        x = images
        for op in self.ops:
            y = {"color": apply_color, "translation": apply_translation, "cutout": apply_cutout}[op](x, params)
            gate = params.get(gate_key(op))
            x = y if gate is None else ops.where(ops.reshape(gate, (-1, 1, 1, 1)), y, x)
        return x

    def __call__(self, images, seed):
        return self.apply(images, self.draw(ops.shape(images)[0], images.shape[1], seed))


def gate_key(op: str) -> str:
    """The ``params`` key of ``op``'s per-image ADA gate."""
    return f"{op}_on"


def ada_adjust(p, sign_sum, count, step, real_logits, target: float, kimg: float):
    """One step of StyleGAN2-ADA's controller, as pure ``keras.ops`` (runs under jit).

    Accumulates ``sign(D(real))`` over the step's ``real_logits`` [B, 1] (a multi-scale D's
    [B, k]: averaged per image) into ``sign_sum`` and the number of images into ``count``;
    after every ``ADA_INTERVAL``-th GAN step (``step`` = steps done before this one) it sets
    ``r_t = sign_sum / count`` and
    ``p <- clip(p + sign(r_t - target) * count / (kimg * 1000), 0, 1)`` (``count`` is
    batch * ADA_INTERVAL with full batches: p can cross [0, 1] in ``kimg`` thousand images),
    then zeroes both accumulators. Returns the new ``(p, sign_sum, count)``, float32 scalars.
    """
    p, sign_sum, count = (ops.convert_to_tensor(v, "float32") for v in (p, sign_sum, count))
    logits = ops.cast(real_logits, "float32")
    sign_sum = sign_sum + ops.sum(ops.mean(ops.sign(logits), axis=-1))
    count = count + ops.cast(ops.shape(logits)[0], "float32")
    due = ops.equal(ops.mod(ops.convert_to_tensor(step) + 1, ADA_INTERVAL), 0)
    r_t = sign_sum / count
    adjusted = ops.clip(p + ops.sign(r_t - target) * count / (kimg * 1000.0), 0.0, 1.0)
    zero = ops.zeros_like(sign_sum)
    return ops.where(due, adjusted, p), ops.where(due, zero, sign_sum), ops.where(due, zero, count)


def _per_image(r, x):
    return ops.reshape(ops.cast(r, x.dtype), (-1, 1, 1, 1))


def apply_color(x, params):
    x = x + (_per_image(params["brightness"], x) - 0.5)
    mean = ops.mean(x, axis=-1, keepdims=True)  # [B, H, W, 1]
    x = (x - mean) * (_per_image(params["saturation"], x) * 2) + mean
    mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)  # [B, 1, 1, 1]
    return (x - mean) * (_per_image(params["contrast"], x) + 0.5) + mean


def _shift_matrix(shift, n, dtype):
    """[B, n, n] with M[b, i, k] = 1 iff k == i + shift[b] (rows of zeros off the image)."""
    i = ops.arange(n, dtype="int32")
    source = i[None, :, None] + ops.cast(shift, "int32")[:, None, None]  # [B, n, 1]
    return ops.cast(ops.equal(source, i[None, None, :]), dtype)


def apply_translation(x, params):
    _, h, w, _ = x.shape
    shift = params["translation"]
    rows = _shift_matrix(shift[:, 0], h, x.dtype)  # [B, H, H]
    cols = _shift_matrix(shift[:, 1], w, x.dtype)  # [B, W, W]
    x = ops.einsum("bik,bkwc->biwc", rows, x)  # out[i] = x[i + dy]
    return ops.einsum("bjl,bhlc->bhjc", cols, x)  # out[:, j] = x[:, j + dx]


def apply_cutout(x, params):
    _, h, w, _ = x.shape
    offset = ops.cast(params["cutout"], "int32")

    def inside(n, start):  # [B, n]: start <= i < start + c, c from this axis' size
        c = cutout_size(n)
        i = ops.arange(n, dtype="int32")[None, :]
        start = start[:, None] - c // 2
        return ops.logical_and(i >= start, i < start + c)

    hole = ops.logical_and(inside(h, offset[:, 0])[:, :, None], inside(w, offset[:, 1])[:, None, :])  # [B, H, W]
    return x * ops.cast(ops.logical_not(hole), x.dtype)[..., None]
