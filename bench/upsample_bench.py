"""Generator forward + backward time per form of its stride-2 transposed convolutions.

    KERAS_BACKEND=torch .venv/bin/python bench/upsample_bench.py transpose,subpixel
    KERAS_BACKEND=tensorflow JIT=1 .venv/bin/python bench/upsample_bench.py transpose,subpixel

Times d(sum G(z)^2)/d(weights) of a fresh dcgan64 generator at batch 64 (best of 3 after
2 warm-ups) for each ``upsample`` form given; the evidence behind ``SUBPIXEL_BACKENDS``.
On JAX the transpose form's backward takes minutes per call on a 2-core CPU. Not a test.
"""
import os
import sys
import time

import keras
import numpy as np
from keras import ops

from nebula_keras3.models import DCGANGenerator

b = keras.backend.backend()
z = np.random.default_rng(0).normal(size=(64, 100)).astype("float32")
res = {}
for form in sys.argv[1].split(","):
    g = DCGANGenerator(64, upsample=form, seed=0)
    if b == "jax":
        import jax
        tv = [v.value for v in g.trainable_variables]; ntv = [v.value for v in g.non_trainable_variables]
        @jax.jit
        def f(tv, ntv, z):
            def loss(tv):
                y, _ = g.stateless_call(tv, ntv, z, training=True); return ops.sum(y * y)
            return jax.grad(loss)(tv)
        run = lambda: jax.block_until_ready(f(tv, ntv, z))
    elif b == "tensorflow":
        import tensorflow as tf
        jit = os.environ.get("JIT") == "1"
        @tf.function(jit_compile=jit)
        def f(z):
            with tf.GradientTape() as tape:
                y = g(z, training=True); l = tf.reduce_sum(y * y)
            return tape.gradient(l, g.trainable_variables)
        run = lambda: [t.numpy() for t in f(z)]
    else:
        import torch
        zt = torch.tensor(z)
        def run():
            g.zero_grad(); y = g(zt, training=True); (y * y).sum().backward()
    run(); run()
    ts = []
    for _ in range(3):
        t = time.perf_counter(); run(); ts.append(time.perf_counter() - t)
    res[form] = min(ts)
print(b, os.environ.get("JIT", ""), " ".join(f"{k} {v*1e3:.0f} ms" for k, v in res.items()), flush=True)
