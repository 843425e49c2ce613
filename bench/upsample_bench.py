"""Generator forward + backward time per form of its x2 upsampling layers.

    KERAS_BACKEND=torch .venv/bin/python bench/upsample_bench.py dcgan64 transpose,subpixel,phase
    KERAS_BACKEND=jax .venv/bin/python bench/upsample_bench.py nebula64 direct,phase
    KERAS_BACKEND=tensorflow JIT=1 .venv/bin/python bench/upsample_bench.py dcgan64 transpose,phase

Times d(sum G(z)^2)/d(weights) of a fresh generator of the preset (dcgan64: its stride-2
transposed convolutions, ``SubPixelConv2DTranspose``; nebula64: its nearest-upsample
convolutions, ``NearestUpsampleConv2D``) at batch 64 (best of 3 after 2 warm-ups) for each
form given; the evidence behind each layer module's ``AUTO_FORMS``. On JAX the dcgan
transpose form's backward takes seconds per layer on a 2-core CPU. Not a test.
"""
import os
import sys
import time

import keras
import numpy as np
from keras import ops

from nebula_keras3.models.dcgan.layers import SubPixelConv2DTranspose
from nebula_keras3.models.nebula.layers import NearestUpsampleConv2D
from nebula_keras3.training.config import TrainConfig
from nebula_keras3.training.trainer import build_gan

b = keras.backend.backend()
preset, forms = sys.argv[1], sys.argv[2].split(",")
z = np.random.default_rng(0).normal(size=(64, 100)).astype("float32")
res = {}
for form in forms:
    g = build_gan(TrainConfig.from_preset(preset, batch_size=64, mixed_precision="none")).generator  # float32 forms
    for layer in g.layers:
        if isinstance(layer, (SubPixelConv2DTranspose, NearestUpsampleConv2D)):
            layer.implementation = form
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
print(preset, b, os.environ.get("JIT", ""), " ".join(f"{k} {v*1e3:.0f} ms" for k, v in res.items()), flush=True)
