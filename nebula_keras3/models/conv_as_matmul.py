"""Exact rewrites of the GANs' x2 upsampling and stride-2 convolutions as patch matmuls (or one small conv).

Used where a backend runs these layers faster as matmuls than as its own convolutions
(XLA's CPU convolutions, whose transposed-convolution backward, 3-channel inputs and
strided backward run far below its matmul speed here; bench/upsample_bench.py and
bench/train_bench.py measure each form). Every rewrite computes the layer's output from
the layer's own kernel variable (gradients reach it), equal up to float rounding
(tests/test_conv_as_matmul.py). ``phase_conv_upsample`` packs the same phases into one 2x2
convolution instead: the form exported graphs use for the nebula G (ONNX Runtime and TensorFlow
graphs run it fastest; ``models/export_forms.py``).

Upsampling. Both generator families upsample with a linear map from x [B, H, W, Cin] to
[B, 2H, 2W, Cout] in which output pixel (2i + a, 2j + b) -- phase (a, b) -- reads only the
2x2 input neighbourhood rows i + a - 1 .. i + a, columns j + b - 1 .. j + b (zero outside):

* DCGAN's 4x4 stride-2 "same" transposed convolution: phase a takes kernel rows (3, 1)
  for a = 0 and (2, 0) for a = 1 (``TRANSPOSE_TAPS``);
* the nebula family's nearest x2 upsampling followed by a 3x3 "same" convolution: the
  upsampled map repeats each input row, so phase a = 0 reads input row i - 1 through kernel
  row 0 and row i through rows 1 + 2, phase a = 1 row i through rows 0 + 1 and row i + 1
  through row 2 (``NEAREST_TAPS``).

``phase_upsample`` computes each phase as a sum of four matmuls of shifted views of the
padded input, then interleaves the phases: 4 multiply-adds per output pixel and input
channel, the transposed convolution's own count and 4/9 of a 3x3 convolution at the
upsampled size (or of the 3x3 sub-pixel form)::

    x [B, H, W, Cin] -pad 1-> xp [B, H+2, W+2, Cin]
    phase (a, b) = sum over u, v in {0, 1} of xp[:, a+u : a+u+H, b+v : b+v+W] @ k[a, b, u, v]
                                                                  -> [B, H, W, Cout] x 4
    interleave                                                    -> [B, 2H, 2W, Cout]

On JAX, from ``FLAT_BACKWARD_MIN_SIZE`` px on, ``phase_upsample``'s backward is that of
``phase_upsample_flat``, the same sums on the flattened padded batch, where every tap's shifted
view is one contiguous row range: the gradient of each view is then a zero-padded row range of
one matrix instead of a map padded in two dimensions, and XLA runs that backward faster on large
maps, its forward slower (bench/jax_upsample_backward_bench.py).

Downsampling. A 4x4 stride-2 "same" convolution (DCGAN's discriminator; pads 1 on each
side of an even map) is a 2x2 stride-1 convolution of the padded map's space-to-depth, so
``stride2_conv`` gathers its 2x2 patches into one [B * H/2 * W/2, 16 * Cin] matrix and
multiplies once by the kernel, re-ordered to match.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

from nebula_keras3.models.common import conv2d

# [phase a, tap u, kernel row]: which rows of the layer's kernel phase a's 2x2 tap u sums.
TRANSPOSE_TAPS = np.array([[[0, 0, 0, 1], [0, 1, 0, 0]],  # a = 0: rows 3, 1
                           [[0, 0, 1, 0], [1, 0, 0, 0]]],  # a = 1: rows 2, 0
                          dtype="float32")
NEAREST_TAPS = np.array([[[1, 0, 0], [0, 1, 1]],  # a = 0: row 0, rows 1 + 2
                         [[1, 1, 0], [0, 0, 1]]],  # a = 1: rows 0 + 1, row 2
                        dtype="float32")


def as_pair(v) -> tuple:
    """2 -> (2, 2); (2, 2), or [2, 2] as a layer config read back from JSON holds it -> (2, 2)."""
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def check_plain_conv(layer: str, kwargs: dict, no: str = "groups") -> None:
    """Refuse the Keras conv options these rewrites do not compute: channels_first, dilation, ``no``."""
    plain = kwargs.get("output_padding") is None if no == "output_padding" else kwargs.get("groups", 1) == 1
    if kwargs.get("data_format") not in (None, "channels_last") or as_pair(kwargs.get("dilation_rate") or 1) != (1, 1) \
            or not plain:
        raise ValueError(f"{layer} supports channels_last, no dilation, no {no}")


def checked_implementation(implementation: str, forms: tuple[str, ...]) -> str:
    """A layer's ``implementation`` argument: "auto" or one of its ``forms``."""
    if implementation != "auto" and implementation not in forms:
        raise ValueError(f"implementation must be auto or one of {forms}, got {implementation!r}")
    return implementation


def phase_kernels(kernel, taps):
    """[k, k, Cin, Cout] -> [2 (a), 2 (b), 2 (u), 2 (v), Cin, Cout], the phases' 2x2 kernels."""
    k = kernel.shape[0]
    if taps.shape[-1] != k or kernel.shape[1] != k:
        raise ValueError(f"taps are for a {taps.shape[-1]}x{taps.shape[-1]} kernel, got {tuple(kernel.shape[:2])}")
    t = ops.cast(taps, kernel.dtype)
    return ops.einsum("aud,bve,deio->abuvio", t, t, kernel)


# On JAX, maps at least this many pixels high and wide take phase_upsample_flat's backward
# (faster on 32 px maps, no faster or slower below: bench/jax_upsample_backward_bench.py).
FLAT_BACKWARD_MIN_SIZE = 32


def phase_upsample(x, kernels):
    """x [B, H, W, Cin] and ``phase_kernels`` [2, 2, 2, 2, Cin, Cout] -> [B, 2H, 2W, Cout].

    On JAX, from ``FLAT_BACKWARD_MIN_SIZE`` on, the gradient is ``phase_upsample_flat``'s."""
    _, h, w, _ = x.shape
    if keras.backend.backend() == "jax" and min(h, w) >= FLAT_BACKWARD_MIN_SIZE:
        return _jax_phase_upsample_flat_backward()(x, kernels)
    return phase_upsample_views(x, kernels)


def phase_upsample_views(x, kernels):
    """``phase_upsample`` as 16 matmuls of shifted views of the padded input (see the module doc)."""
    _, h, w, _ = x.shape
    cout = kernels.shape[-1]
    xp = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])  # [B, H+2, W+2, Cin]
    shifted = {(r, c): xp[:, r:r + h, c:c + w, :] for r in range(3) for c in range(3)}  # [B, H, W, Cin]
    rows = []
    for a in (0, 1):
        cols = []
        for b in (0, 1):
            terms = [ops.matmul(shifted[a + u, b + v], kernels[a, b, u, v]) for u in (0, 1) for v in (0, 1)]
            cols.append(terms[0] + terms[1] + terms[2] + terms[3])  # [B, H, W, Cout]
        rows.append(ops.stack(cols, axis=3))  # [B, H, W, 2 (b), Cout]
    y = ops.stack(rows, axis=2)  # [B, H, 2 (a), W, 2 (b), Cout]
    return ops.reshape(y, (-1, 2 * h, 2 * w, cout))


def phase_upsample_flat(x, kernels):
    """``phase_upsample`` on the flattened padded batch (the backward JAX uses on larger maps).

        x -pad 1, flatten-> xf [B*(H+2)*(W+2) + 2*(W+2) + 2, Cin]   (zero rows appended)
        phase (a, b) = sum over u, v of xf[o : o + B*(H+2)*(W+2)] @ k[a, b, u, v],
                       o = (a+u)*(W+2) + b+v                   -> [B, H+2, W+2, Cout], crop
        interleave                                             -> [B, 2H, 2W, Cout]

    Each tap's view is one contiguous row range; rows that straddle an image's edge compute
    values the crop drops ((H+2)(W+2)/HW more multiply-adds: 1.27x at 16 px, 1.13x at 32 px).
    """
    _, h, w, cin = x.shape
    cout = kernels.shape[-1]
    wp = w + 2
    xp = ops.reshape(ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), (-1, cin))  # [B*(H+2)*(W+2), Cin]
    n = xp.shape[0]
    xp = ops.pad(xp, [[0, 2 * wp + 2], [0, 0]])
    rows = []
    for a in (0, 1):
        cols = []
        for b in (0, 1):
            terms = [ops.matmul(xp[(a + u) * wp + b + v:(a + u) * wp + b + v + n], kernels[a, b, u, v])
                     for u in (0, 1) for v in (0, 1)]
            y = ops.reshape(terms[0] + terms[1] + terms[2] + terms[3], (-1, h + 2, wp, cout))
            cols.append(y[:, :h, :w])  # [B, H, W, Cout]
        rows.append(ops.stack(cols, axis=3))  # [B, H, W, 2 (b), Cout]
    return ops.reshape(ops.stack(rows, axis=2), (-1, 2 * h, 2 * w, cout))


@functools.cache
def _jax_phase_upsample_flat_backward():
    """``phase_upsample_views`` forward with ``phase_upsample_flat``'s VJP (both are linear in x
    and in the kernels, so the VJP needs only the inputs)."""
    import jax

    @jax.custom_vjp
    def upsample(x, kernels):
        return phase_upsample_views(x, kernels)

    def forward(x, kernels):
        return phase_upsample_views(x, kernels), (x, kernels)

    def backward(inputs, upstream):
        return jax.vjp(phase_upsample_flat, *inputs)[1](upstream)

    upsample.defvjp(forward, backward)
    return upsample


def phase_conv_upsample(x, kernels):
    """``phase_upsample`` with the four phases as one 2x2 convolution, then depth-to-space.

        x [B, H, W, Cin] -pad 1-> [B, H+2, W+2, Cin] -conv 2x2 valid-> y [B, H+1, W+1, 2*2*Cout]
        depth-to-space                                             -> [B, 2H+2, 2W+2, Cout]
        crop one pixel on each side                                -> [B, 2H, 2W, Cout]

    Conv pixel (p, q) reads padded rows p .. p+1, columns q .. q+1: what phase (a, b)'s output
    pixel (2(p-a) + a, 2(q-b) + b) reads. Channel block (1-a, 1-b) holds phase (a, b)'s taps, so
    depth-to-space puts that pixel at (2p + 1-a, 2q + 1-b), one row and column after its place in
    the output for every phase: the crop is a plain shift. The same multiply-adds as the matmuls
    (on a map one pixel larger), as one convolution and one shuffle: the form that runtimes built
    around convolutions (ONNX Runtime) run fastest.
    """
    _, h, w, _ = x.shape
    cin, cout = kernels.shape[-2], kernels.shape[-1]
    k = ops.flip(kernels, axis=(0, 1))  # block (1-a, 1-b) <- phase (a, b)
    k = ops.transpose(k, (2, 3, 4, 0, 1, 5))  # [u, v, Cin, a, b, Cout]
    k = ops.reshape(k, (2, 2, cin, 4 * cout))
    xp = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])  # [B, H+2, W+2, Cin]
    y = conv2d(xp, k, strides=1, padding="valid")  # [B, H+1, W+1, (a, b, Cout)]
    y = ops.reshape(y, (-1, h + 1, w + 1, 2, 2, cout))
    y = ops.transpose(y, (0, 1, 3, 2, 4, 5))  # [B, H+1, 2 (a), W+1, 2 (b), Cout]
    y = ops.reshape(y, (-1, 2 * h + 2, 2 * w + 2, cout))
    return y[:, 1:2 * h + 1, 1:2 * w + 1, :]


def space_to_depth(x, block=2):
    """[B, H, W, C] -> [B, H/b, W/b, b*b*C]; pixel (b*h + i, b*w + j) channel c lands in (i*b + j)*C + c."""
    _, h, w, c = x.shape
    x = ops.reshape(x, (-1, h // block, block, w // block, block, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # [B, H/b, W/b, b, b, C]
    return ops.reshape(x, (-1, h // block, w // block, block * block * c))


def stride2_conv(x, kernel):
    """``ops.conv(x, kernel, strides=2, padding="same")`` for a 4x4 kernel on an even map, as one matmul.

        x [B, H, W, Cin] -pad 1, space-to-depth-> [B, H/2+1, W/2+1, 4*Cin]
        2x2 patches [B * H/2 * W/2, 16*Cin] @ kernel [16*Cin, Cout] -> [B, H/2, W/2, Cout]
    """
    _, h, w, cin = x.shape
    if tuple(kernel.shape[:2]) != (4, 4) or h % 2 or w % 2:
        raise ValueError(f"stride2_conv takes a 4x4 kernel on an even map, got {tuple(kernel.shape)} on {h}x{w}")
    cout = kernel.shape[-1]
    s = space_to_depth(ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]))  # [B, H/2+1, W/2+1, (p, q, Cin)]
    ho, wo = h // 2, w // 2
    patches = ops.concatenate([s[:, u:u + ho, v:v + wo, :] for u in (0, 1) for v in (0, 1)], axis=-1)
    # kernel row 2u + p, column 2v + q -> patch channel ((u, v), (p, q), Cin)
    k = ops.reshape(kernel, (2, 2, 2, 2, cin, cout))  # [u, p, v, q, Cin, Cout]
    k = ops.reshape(ops.transpose(k, (0, 2, 1, 3, 4, 5)), (16 * cin, cout))
    y = ops.matmul(ops.reshape(patches, (-1, 16 * cin)), k)  # [B * H/2 * W/2, Cout]
    return ops.reshape(y, (-1, ho, wo, cout))
