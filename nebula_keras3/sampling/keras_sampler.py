"""Render images with the Keras generator under the current backend (KERAS_BACKEND).

Same interface as :class:`nebula_keras3.sampling.onnx_sampler.OnnxSampler`:
a seed names the same image in both (within 1 uint8 level).
"""

from __future__ import annotations

import os

import numpy as np

from nebula_keras3.sampling.grid import to_uint8
from nebula_keras3.sampling.latents import batch_seeds, latents_from_seeds
from nebula_keras3.sampling.onnx_sampler import SamplerError


class KerasSampler:
    """A run folder's (or ``.keras`` file's) generator, in inference mode."""

    def __init__(self, source: str | os.PathLike, batch_size: int = 256, checkpoint: str | None = None):
        """``checkpoint``: the training state of a run folder (``None``: its final generator,
        ``"best"``, ``"last"`` or a checkpoint file; see ``training.generator_state``)."""
        from nebula_keras3.training.generator_state import GeneratorStateError, load_generator_state

        try:
            self.model, facts = load_generator_state(source, checkpoint)
        except GeneratorStateError as e:
            raise SamplerError(str(e)) from None
        model_path = source
        in_shape = tuple(self.model.inputs[0].shape)
        out_shape = tuple(self.model.outputs[0].shape)
        if len(in_shape) != 2 or len(out_shape) != 4 or out_shape[-1] != 3:
            raise SamplerError(
                f"{model_path} is not a generator: input {in_shape}, output {out_shape}"
            )
        self.path = model_path
        self.facts = facts  # with the state used (generator_state.describe_state)
        self.latent_dim = int(in_shape[1])
        self.image_size = int(out_shape[1])
        self.batch_size = int(batch_size)

    def images_float(self, z) -> np.ndarray:
        """float32 ``[n, S, S, 3]`` in [-1, 1] (inference mode: BatchNorm moving stats)."""
        import keras

        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise SamplerError(f"latents must be [n, {self.latent_dim}], got {list(z.shape)}")
        out = [
            keras.ops.convert_to_numpy(self.model(z[i : i + self.batch_size], training=False))
            for i in range(0, z.shape[0], self.batch_size)
        ]
        if not out:
            return np.zeros((0, self.image_size, self.image_size, 3), np.float32)
        return np.concatenate(out, axis=0).astype(np.float32)

    def images_from_latents(self, z) -> np.ndarray:
        return to_uint8(self.images_float(z))

    def images_from_seeds(self, seeds) -> np.ndarray:
        return self.images_from_latents(latents_from_seeds(seeds, self.latent_dim))

    def sample(self, seed: int, n: int) -> np.ndarray:
        return self.images_from_seeds(batch_seeds(seed, n))
