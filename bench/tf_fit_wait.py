"""How long TensorFlow's ``fit`` waits after its last step, with and without tf.data autotuning.

    KERAS_BACKEND=tensorflow .venv/bin/python bench/tf_fit_wait.py [--steps 8] [--fits 4]

One dcgan64 GAN (float32, batch 64) fits one epoch of ``--steps`` random batches, ``--fits``
times after a warm-up fit, fed three ways in turn: a NumPy array (Keras makes the tf.data
pipeline, with ``prefetch(AUTOTUNE)``), a ``tf.data`` dataset of the same batches, and that
dataset with ``options.autotune.enabled = False``. Each fit prints the time of its steps
(``on_train_begin`` to ``on_train_end``) and the time ``fit`` took after them (deleting the
epoch's iterator). Not a test: it measures.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--fits", type=int, default=4)
    args = ap.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from nebula_keras3.training.config import TrainConfig
    from nebula_keras3.training.trainer import build_gan

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("run with KERAS_BACKEND=tensorflow")
    batch = 64
    gan = build_gan(TrainConfig.from_preset("dcgan64", batch_size=batch, mixed_precision="none"))
    x = np.random.default_rng(0).uniform(-1, 1, (batch * args.steps, 64, 64, 3)).astype("float32")

    def feed(how):
        if how == "numpy array":
            return x, {"batch_size": batch}
        ds = tf.data.Dataset.from_tensor_slices(x).batch(batch)
        if how == "tf.data, autotune off":
            options = tf.data.Options()
            options.autotune.enabled = False
            ds = ds.with_options(options)
        return ds, {}

    class Span(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.begin = time.perf_counter()

        def on_train_end(self, logs=None):
            self.end = time.perf_counter()

    data, kw = feed("numpy array")
    gan.fit(data, epochs=1, verbose=0, shuffle=False, **kw)  # compile
    for how in ("numpy array", "tf.data", "tf.data, autotune off"):
        for i in range(args.fits):
            data, kw = feed(how)
            span = Span()
            gan.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[span], **kw)
            after = time.perf_counter() - span.end
            print(f"{how:22s} fit {i + 1}: steps {span.end - span.begin:6.2f} s, "
                  f"after them {after:5.2f} s", flush=True)


if __name__ == "__main__":
    main()
