"""The generator as a TF Serving SavedModel (TensorFlow backend only).

Signatures: the three of :mod:`nebula_keras3.export.layout` (``serving_default``
z -> images, ``generate_png`` seed -> PNG bytes, ``generate_images`` seed -> images);
names, dtypes and shapes come from there.

The generator always runs with ``training=False`` (BatchNorm moving statistics),
latents are drawn in-graph with :mod:`nebula_keras3.export.latents_tf`, and the
uint8 conversion is ``clip(round((x + 1) * 127.5), 0, 255)`` exactly like
``nebula_keras3.sampling.grid.to_uint8``. Every op is a native TF op.
"""

from __future__ import annotations

import os
from pathlib import Path

import tensorflow as tf

from nebula_keras3.export import layout
from nebula_keras3.export.latents_tf import latents_from_seeds_tf
from nebula_keras3.export.warmup import write_warmup_file

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
        specs = layout.signatures(latent_dim, image_size)

        def input_signature(name):
            return [tf.TensorSpec([None if d < 0 else d for d in t.shape], getattr(tf, t.dtype), name=k)
                    for k, t in specs[name].inputs.items()]

        def latents(seed):
            return latents_from_seeds_tf(seed, self.latent_dim)

        # serving_default: z [B, D] -> images uint8 [B, S, S, 3]
        @tf.function(input_signature=input_signature(layout.SERVING_DEFAULT))
        def serve(z):
            return {layout.IMAGES: self._images(z)}

        # generate_images: seed [B] -> z [B, D] (in-graph) -> images uint8 [B, S, S, 3]
        @tf.function(input_signature=input_signature(layout.GENERATE_IMAGES))
        def generate_images(seed):
            return {layout.IMAGES: self._images(latents(seed))}

        # generate_png: seed [B] -> images uint8 [B, S, S, 3] -> png_bytes string [B]
        @tf.function(input_signature=input_signature(layout.GENERATE_PNG))
        def generate_png(seed):
            images = self._images(latents(seed))
            png = tf.map_fn(
                tf.io.encode_png, images, fn_output_signature=tf.TensorSpec([], tf.string)
            )
            return {layout.PNG_BYTES: png}

        self._functions = {
            layout.SERVING_DEFAULT: serve,
            layout.GENERATE_PNG: generate_png,
            layout.GENERATE_IMAGES: generate_images,
        }

    def _images(self, z):
        x = self.generator(z, training=False)
        x = tf.ensure_shape(x, [None, self.image_size, self.image_size, 3])
        return to_uint8_tf(x)

    def signatures(self) -> dict:
        return {name: fn.get_concrete_function() for name, fn in self._functions.items()}


def write_saved_model(generator, latent_dim: int, image_size: int, path: str | os.PathLike) -> Path:
    """Write the SavedModel (its graph file + variables/ + the warmup requests) to ``path`` (must not exist)."""
    path = Path(path)
    module = GeneratorModule(generator, latent_dim, image_size)
    tf.saved_model.save(module, str(path), signatures=module.signatures())
    write_warmup_file(path, latent_dim, image_size)  # assets.extra/tf_serving_warmup_requests
    return path


def graph_op_types(saved_model_dir: str | os.PathLike) -> set[str]:
    """Every op type in a SavedModel's graphs, function library included."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((Path(saved_model_dir) / layout.SAVED_MODEL_FILE).read_bytes())
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
