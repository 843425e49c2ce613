"""Runners: one loaded model version that can execute its signatures.

* :class:`OnnxRunner` (used when the version folder holds the ONNX model)
  implements the export contract's signatures (:mod:`nebula_keras3.export.layout`)
  itself with the ONNX model (the sampler's :class:`~nebula_keras3.sampling.onnx_sampler.GeneratorSession`):
  latents -> images, and seeds ->
  :func:`latents_from_seeds` -> ONNX -> uint8 images or PNGs via Pillow.
  Signature names, tensor names and shapes come from the SavedModel's graph
  file (read without TensorFlow) when there is one, so the metadata matches what
  TF Serving reports for the same folder; else from the contract.
* :class:`SavedModelRunner` runs the SavedModel's signatures with TensorFlow,
  imported only when such a version is loaded.

``run`` is blocking and thread-safe; the server calls it from a thread pool.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from pathlib import Path

import numpy as np

from nebula_keras3.export import layout
from nebula_keras3.export.layout import ONNX_FILE, SAVED_MODEL_FILE, read_facts
from nebula_keras3.sampling.latents import latents_from_seeds
from nebula_keras3.serving.errors import invalid
from nebula_keras3.serving.signatures import (
    SignatureSpec,
    contract_signatures,
    read_saved_model_signatures,
    signature_def_json,
)

log = logging.getLogger("nebula.serving")


class RunnerError(RuntimeError):
    """A version folder that cannot be loaded (message says why)."""


class Runner:
    kind = "?"

    def __init__(self, version_dir):
        self.version_dir = Path(version_dir)
        self.signatures: dict[str, SignatureSpec] = {}
        self.signature_def_json: dict = {"signature_def": {}}
        self.facts: dict = read_facts(version_dir)

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class OnnxRunner(Runner):
    kind = "onnx"
    # signatures this runner implements: the export contract's
    KNOWN = layout.SIGNATURE_NAMES

    def __init__(self, version_dir, *, intra_op_threads: int | None = None):
        super().__init__(version_dir)
        from nebula_keras3.sampling.onnx_sampler import GeneratorSession, SamplerError

        try:
            # no busy-waiting worker threads: they would steal the CPU the event loop and the
            # other batch thread need (ONNX Runtime spins by default)
            self.generator = GeneratorSession(self.version_dir / ONNX_FILE, ["CPUExecutionProvider"],
                                              intra_op_threads=int(intra_op_threads or 0), spinning=False)
        except SamplerError as e:
            raise RunnerError(str(e)) from None
        self.latent_dim = self.generator.latent_dim
        self.image_shape = (self.generator.image_size, self.generator.image_size, 3)
        if self.facts.get(layout.LATENT_DIM) not in (None, self.latent_dim):
            raise RunnerError(f"{self.generator.path}: facts say latent_dim={self.facts[layout.LATENT_DIM]}, "
                              f"ONNX has {self.latent_dim}")

        if (self.version_dir / SAVED_MODEL_FILE).is_file():
            specs, sdj = read_saved_model_signatures(self.version_dir)
            self.signatures = {k: v for k, v in specs.items() if k in self.KNOWN and self._fits(k, v)}
            dropped = sorted(set(specs) - set(self.signatures))
            if dropped:
                log.warning("%s: ONNX runner does not implement signatures %s", self.version_dir, dropped)
            keep = set(self.signatures) | {"__saved_model_init_op"}
            self.signature_def_json = {
                "signature_def": {k: v for k, v in sdj["signature_def"].items() if k in keep}
            }
        else:  # an ONNX-only folder: describe the signatures the way the SavedModel would
            self.signatures = self.synthesized_signatures()
            self.signature_def_json = signature_def_json(self.signatures)
        if layout.SERVING_DEFAULT not in self.signatures:
            raise RunnerError(f"{self.version_dir}: no usable {layout.SERVING_DEFAULT} signature")

    def synthesized_signatures(self) -> dict[str, SignatureSpec]:
        """The contract's signatures for this model's latent and image size."""
        return contract_signatures(self.latent_dim, self.image_shape[0])

    def _fits(self, name: str, spec: SignatureSpec) -> bool:
        want = self.synthesized_signatures()[name]
        same = lambda a, b: {k: (t.dtype, t.shape) for k, t in a.items()} == {k: (t.dtype, t.shape) for k, t in b.items()}  # noqa: E731
        return same(spec.inputs, want.inputs) and same(spec.outputs, want.outputs)

    def images(self, z: np.ndarray) -> np.ndarray:
        return self.generator.run(z)

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        L = layout
        if signature == L.SERVING_DEFAULT:  # z [B, D] -> images uint8 [B, S, S, 3]
            return {L.IMAGES: self.images(inputs[L.Z])}
        seeds = np.asarray(inputs[L.SEED], dtype=np.int64).reshape(-1)  # [B]
        imgs = self.images(latents_from_seeds(seeds, self.latent_dim))  # [B, S, S, 3]
        if signature == L.GENERATE_IMAGES:
            return {L.IMAGES: imgs}
        if signature == L.GENERATE_PNG:  # one PNG per image
            out = np.empty(len(imgs), dtype=object)
            out[:] = [encode_png(im) for im in imgs]
            return {L.PNG_BYTES: out}
        raise KeyError(signature)


_TF_LOCK = threading.Lock()


class SavedModelRunner(Runner):
    kind = "saved_model"

    def __init__(self, version_dir):
        super().__init__(version_dir)
        with _TF_LOCK:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            import tensorflow as tf  # lazily: only a SavedModel-only version pays for TensorFlow

        self._tf = tf
        try:
            self.loaded = tf.saved_model.load(str(self.version_dir), tags=["serve"])
        except Exception as e:  # noqa: BLE001
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RunnerError(f"cannot load SavedModel {self.version_dir}: {first}") from None
        specs, sdj = read_saved_model_signatures(self.version_dir)
        self.signatures = {k: v for k, v in specs.items() if k in self.loaded.signatures}
        self.signature_def_json = sdj
        self._dtypes = {
            name: {k: getattr(tf, _TF_DTYPES[t.dtype]) for k, t in spec.inputs.items() if t.dtype in _TF_DTYPES}
            for name, spec in self.signatures.items()
        }

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        fn = self.loaded.signatures[signature]
        feed = {}
        for k, v in inputs.items():
            dt = self._dtypes[signature].get(k)
            if v.dtype == object:
                feed[k] = tf.constant(list(v.reshape(-1)), dtype=tf.string, shape=v.shape)
            else:
                feed[k] = tf.constant(v, dtype=dt)
        try:
            result = fn(**feed)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
            msg = getattr(e, "message", None) or str(e)
            raise invalid(msg.strip().splitlines()[0] if msg.strip() else type(e).__name__) from None
        return {k: v.numpy() for k, v in result.items()}

    def close(self) -> None:
        self.loaded = None


_TF_DTYPES = {
    "DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_INT32": "int32", "DT_UINT8": "uint8",
    "DT_INT16": "int16", "DT_INT8": "int8", "DT_STRING": "string", "DT_INT64": "int64", "DT_BOOL": "bool",
    "DT_UINT32": "uint32", "DT_UINT64": "uint64",
}


def load_runner(version_dir, *, intra_op_threads: int | None = None, prefer_onnx: bool = True) -> Runner:
    """ONNX Runtime when the ONNX model is there (and preferred), else the SavedModel via TensorFlow."""
    version_dir = Path(version_dir)
    if prefer_onnx and (version_dir / ONNX_FILE).is_file():
        return OnnxRunner(version_dir, intra_op_threads=intra_op_threads)
    if (version_dir / SAVED_MODEL_FILE).is_file():
        return SavedModelRunner(version_dir)
    raise RunnerError(f"{version_dir} holds neither {ONNX_FILE} nor {SAVED_MODEL_FILE}")
