"""Render images with ONNX Runtime from an exported ``.onnx`` generator.

Imports numpy and onnxruntime only (never TensorFlow, JAX, torch or Keras), so
``nebula sample --onnx`` starts fast. The model must have the interface written
by ``nebula export`` (:mod:`nebula_keras3.export.layout`): one input float
``[N, latent]`` and the images output (or a single output) uint8 ``[N, S, S, 3]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nebula_keras3.export import layout
from nebula_keras3.sampling.latents import batch_seeds, latents_from_seeds


class SamplerError(ValueError):
    """A model that cannot be used for sampling (message says why, one line)."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def default_providers(available=None) -> list[str]:
    """CUDA when ONNX Runtime offers it, else CPU."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def cpu_session(model_bytes: bytes, *, optimize: bool = True):
    """An ONNX Runtime CPU session over serialized model bytes (``optimize=False``: the graph
    exactly as given, no fusions)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


class GeneratorSession:
    """An exported generator's ONNX Runtime session: float ``z [N, latent]`` -> uint8 images ``[N, S, S, 3]``.

    The one wrapper of an export's ONNX model: :class:`OnnxSampler` renders with it and
    ``nebula serve``'s ONNX runner (``serving/runtimes.py``) serves with it.

    Args:
        path: the ``.onnx`` file (or an exported version folder holding one).
        providers: ONNX Runtime execution providers (default: CUDA if available, else CPU).
        intra_op_threads: threads per run (0: ONNX Runtime's default).
        spinning: let idle worker threads busy-wait (ONNX Runtime's default); a server sharing
            its CPUs with an event loop turns it off.
    """

    def __init__(self, path: str | os.PathLike, providers=None, *, intra_op_threads: int = 0,
                 spinning: bool = True):
        import onnxruntime as ort

        path = Path(path)
        if path.is_dir() and (path / layout.ONNX_FILE).is_file():
            path = path / layout.ONNX_FILE
        if not path.exists():
            raise SamplerError(f"{path} does not exist")
        if not path.is_file():
            raise SamplerError(f"{path} is not a file")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if intra_op_threads:
            so.intra_op_num_threads = int(intra_op_threads)
        if not spinning:
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(path), so, providers=providers or default_providers(ort.get_available_providers())
            )
        except Exception as e:  # noqa: BLE001 - ORT raises several types for bad files
            raise SamplerError(f"{path} is not a usable ONNX model: {_first_line(e)}") from None
        self.path = path
        self._check_interface()
        self.facts = layout.onnx_facts(self.session.get_modelmeta().custom_metadata_map)

    def _check_interface(self) -> None:
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        where = f"{self.path} does not look like a nebula generator"
        if len(inputs) != 1:
            raise SamplerError(f"{where}: it has {len(inputs)} inputs, expected one float [N, latent] input {layout.Z}")
        z = inputs[0]
        if z.type != "tensor(float)" or len(z.shape) != 2 or not isinstance(z.shape[1], int) or z.shape[1] < 1:
            raise SamplerError(f"{where}: input {z.name!r} is {z.type} {z.shape}, expected float [N, latent]")
        named = [o for o in outputs if o.name == layout.IMAGES]
        if named:
            out = named[0]
        elif len(outputs) == 1:
            out = outputs[0]
        else:
            raise SamplerError(f"{where}: no output named {layout.IMAGES!r} among {[o.name for o in outputs]}")
        shape = out.shape
        if (
            out.type != "tensor(uint8)"
            or len(shape) != 4
            or shape[3] != 3
            or not isinstance(shape[1], int)
            or shape[1] != shape[2]
        ):
            raise SamplerError(
                f"{where}: output {out.name!r} is {out.type} {shape}, expected uint8 images [N, S, S, 3]"
            )
        self.input_name = z.name
        self.output_name = out.name
        self.latent_dim = int(z.shape[1])
        self.image_size = int(shape[1])

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, z: np.ndarray) -> np.ndarray:
        """uint8 ``[n, S, S, 3]`` for float latents ``[n, latent_dim]``, in one call."""
        z = np.ascontiguousarray(z, dtype=np.float32)
        if z.shape[0] == 0:
            return np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
        return self.session.run([self.output_name], {self.input_name: z})[0]


class OnnxSampler:
    """An exported generator under ONNX Runtime, rendering in batches.

    Args:
        path: the ``.onnx`` file (or an exported version folder holding one).
        providers: ONNX Runtime execution providers (default: CUDA if available, else CPU).
        batch_size: images per ``run`` call.
    """

    def __init__(self, path: str | os.PathLike, providers=None, batch_size: int = 256):
        self.generator = GeneratorSession(path, providers)
        self.path = self.generator.path
        self.facts = self.generator.facts
        self.latent_dim = self.generator.latent_dim
        self.image_size = self.generator.image_size
        self.batch_size = int(batch_size)

    @property
    def providers(self) -> list[str]:
        return self.generator.providers

    def images_from_latents(self, z) -> np.ndarray:
        """uint8 ``[n, S, S, 3]`` for float latents ``[n, latent_dim]``."""
        z = np.ascontiguousarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise SamplerError(f"latents must be [n, {self.latent_dim}], got {list(z.shape)}")
        out = [self.generator.run(z[i : i + self.batch_size]) for i in range(0, z.shape[0], self.batch_size)]
        if not out:
            return self.generator.run(z)
        return np.concatenate(out, axis=0)

    def images_from_seeds(self, seeds) -> np.ndarray:
        """One image per int64 image seed (the portable latent recipe)."""
        return self.images_from_latents(latents_from_seeds(seeds, self.latent_dim))

    def sample(self, seed: int, n: int) -> np.ndarray:
        """The ``n`` images of ``--seed seed -n n``."""
        return self.images_from_seeds(batch_seeds(seed, n))
