"""The generator as a TF Serving SavedModel (TensorFlow backend only).

Signatures (``saved_model_cli show --all`` view):

* ``serving_default``: ``z`` float32 ``[-1, latent]`` -> ``images`` uint8 ``[-1, S, S, 3]``
* ``generate_png``:    ``seed`` int64 ``[-1]`` -> ``png_bytes`` string ``[-1]`` (one PNG per seed)
* ``generate_images``: ``seed`` int64 ``[-1]`` -> ``images`` uint8 ``[-1, S, S, 3]``

The generator always runs with ``training=False`` (BatchNorm moving statistics),
latents are drawn in-graph with :mod:`nebula_keras3.export.latents_tf`, and the
uint8 conversion is ``clip(round((x + 1) * 127.5), 0, 255)`` exactly like
``nebula_keras3.sampling.grid.to_uint8``. Every op is a native TF op.
"""

from __future__ import annotations

import os
from pathlib import Path

import tensorflow as tf

from nebula_keras3.export.latents_tf import latents_from_seeds_tf

SIGNATURES = ("serving_default", "generate_png", "generate_images")
# Ops that would make a graph depend on JAX/XLA lowering or on Python at serve time.
FORBIDDEN_OPS = frozenset({"XlaCallModule", "PyFunc", "EagerPyFunc", "PyFuncStateless"})


def to_uint8_tf(images: tf.Tensor) -> tf.Tensor:
    """float [-1, 1] -> uint8, the same rounding as ``grid.to_uint8`` (half to even)."""
    x = (tf.cast(images, tf.float32) + 1.0) * 127.5
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


class GeneratorModule(tf.Module):
    """tf.Module wrapping a Keras (TensorFlow-backend) generator with the serving signatures."""

    def __init__(self, generator, latent_dim: int, image_size: int):
        super().__init__(name="nebula_generator")
        self.generator = generator
        # Track variables explicitly too, so the revived object exposes them.
        self.model_variables = list(generator.variables)
        self.latent_dim = int(latent_dim)
        self.image_size = int(image_size)
        d = self.latent_dim

        @tf.function(input_signature=[tf.TensorSpec([None, d], tf.float32, name="z")])
        def serve(z):
            return {"images": self._images(z)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="seed")])
        def generate_images(seed):
            return {"images": self._images(latents_from_seeds_tf(seed, d))}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="seed")])
        def generate_png(seed):
            images = self._images(latents_from_seeds_tf(seed, d))
            png = tf.map_fn(
                tf.io.encode_png, images, fn_output_signature=tf.TensorSpec([], tf.string)
            )
            return {"png_bytes": png}

        self.serve = serve
        self.generate_images = generate_images
        self.generate_png = generate_png

    def _images(self, z):
        x = self.generator(z, training=False)
        x = tf.ensure_shape(x, [None, self.image_size, self.image_size, 3])
        return to_uint8_tf(x)

    def signatures(self) -> dict:
        return {
            "serving_default": self.serve.get_concrete_function(),
            "generate_png": self.generate_png.get_concrete_function(),
            "generate_images": self.generate_images.get_concrete_function(),
        }


def write_saved_model(generator, latent_dim: int, image_size: int, path: str | os.PathLike) -> Path:
    """Write the SavedModel (saved_model.pb + variables/) to ``path`` (must not exist)."""
    path = Path(path)
    module = GeneratorModule(generator, latent_dim, image_size)
    tf.saved_model.save(module, str(path), signatures=module.signatures())
    return path


def graph_op_types(saved_model_dir: str | os.PathLike) -> set[str]:
    """Every op type in a SavedModel's graphs, function library included."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    ops = set()
    for mg in sm.meta_graphs:
        ops.update(n.op for n in mg.graph_def.node)
        for fn in mg.graph_def.library.function:
            ops.update(n.op for n in fn.node_def)
    return ops


def check_native_ops(saved_model_dir: str | os.PathLike) -> None:
    """Raise if the SavedModel holds XlaCallModule or Python-function ops."""
    bad = graph_op_types(saved_model_dir) & FORBIDDEN_OPS
    if bad:
        raise RuntimeError(
            f"SavedModel at {saved_model_dir} holds non-native ops {sorted(bad)}: "
            "TF Serving could not run it"
        )
