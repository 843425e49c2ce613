"""Deterministic kernels for GPU runs (``nebula train --deterministic``).

On CPU every backend already gives bit-identical results for the same seed, and
``--resume`` continues a run exactly. On GPUs some kernels (cuDNN convolution
algorithm choice, atomics in reductions and scatter ops) are not deterministic by
default; :func:`enable_deterministic_ops` switches each backend to its
deterministic kernels, at some speed cost:

* TensorFlow: ``tf.config.experimental.enable_op_determinism()``;
* PyTorch: ``torch.use_deterministic_algorithms(True)``, cuDNN benchmarking off,
  ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (needed by cuBLAS before CUDA starts);
* JAX: ``--xla_gpu_deterministic_ops=true`` in ``XLA_FLAGS`` (read when JAX first
  starts its GPU backend, so call this before the first computation).
"""

from __future__ import annotations

import os

XLA_DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"


def enable_deterministic_ops(backend: str | None = None) -> str:
    """Turn on deterministic kernels for ``backend`` (default: Keras' backend); returns what it did."""
    if backend is None:
        import keras

        backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        return "TensorFlow op determinism"
    if backend == "torch":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        import torch

        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        return "torch deterministic algorithms"
    if backend == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        if XLA_DETERMINISTIC_FLAG not in flags.split():
            os.environ["XLA_FLAGS"] = (flags + " " + XLA_DETERMINISTIC_FLAG).strip()
        return f"XLA_FLAGS {XLA_DETERMINISTIC_FLAG}"
    raise ValueError(f"no deterministic mode for backend {backend!r}")
