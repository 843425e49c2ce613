"""JAX: forward + backward time of the phase upsampling's matmul forms, per layer size.

    KERAS_BACKEND=jax .venv/bin/python bench/jax_upsample_backward_bench.py

Rows per layer (nebula64's and dcgan64's upsampling layers, batch 64), CPU milliseconds of
d<G(x), G(x)>/d(x, kernel), best of 3 rounds of 3 calls:

* ``views``: ``conv_as_matmul.phase_upsample_views``, 16 matmuls of shifted views, forward and
  backward (XLA's backward of the slices pads each view's gradient back to the full map);
* ``flat``: ``phase_upsample_flat``, the same sums on contiguous row ranges of the flattened
  padded batch, forward and backward;
* ``package``: ``phase_upsample``, what the layers run: the views' forward with the flat
  backward from ``FLAT_BACKWARD_MIN_SIZE`` px on;
* ``taps after``: the unshifted input multiplied once by all 16 taps, outputs shifted and summed
  (no input copies, the same multiply-adds), the form tried against the views' data movement.

The evidence behind ``FLAT_BACKWARD_MIN_SIZE``. CPU time, so a busy machine inflates every row
alike. Not a test.
"""
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np
from keras import ops

from nebula_keras3.models.conv_as_matmul import (
    NEAREST_TAPS,
    TRANSPOSE_TAPS,
    phase_kernels,
    phase_upsample,
    phase_upsample_flat,
    phase_upsample_views,
)


def phase_upsample_taps_after(x, kernels):
    """x [B, H, W, Cin] @ taps [16 (a, b, u, v), Cin, Cout] -> y [16, B, H, W, Cout], pad 1;
    phase (a, b) = sum over u, v of y[(a, b, u, v), :, a+u : a+u+H, b+v : b+v+W]."""
    _, h, w, cin = x.shape
    cout = kernels.shape[-1]
    y = ops.einsum("bhwc,tco->tbhwo", x, ops.reshape(kernels, (16, cin, cout)))
    y = ops.pad(y, [[0, 0], [0, 0], [1, 1], [1, 1], [0, 0]])  # [16, B, H+2, W+2, Cout]
    rows = []
    for a in (0, 1):
        cols = []
        for b in (0, 1):
            t = [y[8 * a + 4 * b + 2 * u + v, :, a + u:a + u + h, b + v:b + v + w] for u in (0, 1) for v in (0, 1)]
            cols.append(t[0] + t[1] + t[2] + t[3])  # [B, H, W, Cout]
        rows.append(ops.stack(cols, axis=3))
    return ops.reshape(ops.stack(rows, axis=2), (-1, 2 * h, 2 * w, cout))


def cpu_ms(f, *args, calls=3, rounds=3):
    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            jax.block_until_ready(f(*args))
        best = min(best, (time.process_time() - start) / calls * 1000)
    return best


FORMS = {"views": phase_upsample_views, "flat": phase_upsample_flat, "package": phase_upsample,
         "taps after": phase_upsample_taps_after}
LAYERS = [("nebula64", 4, 256, 256), ("nebula64", 8, 128, 128), ("nebula64", 16, 64, 64), ("nebula64", 32, 32, 32),
          ("dcgan64", 8, 256, 128), ("dcgan64", 16, 128, 64), ("dcgan64", 32, 64, 64)]
rng = np.random.default_rng(0)
print("layer (input px, Cin -> Cout)      " + "".join(f"{name:>12s}" for name in FORMS) + "   (ms, fwd + bwd)")
for family, h, cin, cout in LAYERS:
    taps, size = (NEAREST_TAPS, 3) if family == "nebula64" else (TRANSPOSE_TAPS, 4)
    x = jnp.asarray(rng.normal(size=(64, h, h, cin)), "float32")
    k = jnp.asarray(rng.normal(size=(size, size, cin, cout)) * 0.05, "float32")
    times = []
    for form in FORMS.values():
        loss = lambda x, k, form=form: jnp.sum(form(x, phase_kernels(k, taps)) ** 2)
        times.append(cpu_ms(jax.jit(jax.grad(loss, argnums=(0, 1))), x, k))
    print(f"{family} {h:2d} px, {cin:3d} -> {cout:3d}          " + "".join(f"{t:12.1f}" for t in times), flush=True)
