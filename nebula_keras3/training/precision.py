"""Mixed precision: Keras dtype policies for both networks, loss scaling for fp16.

``bf16`` builds G and D under ``mixed_bfloat16`` and ``fp16`` under ``mixed_float16``:
layers compute in 16 bits while every variable (weights, BatchNorm statistics,
optimizer state) stays float32. The generator's output layer and the
discriminator's logits are float32 layers, so images, losses and D(x) are float32.
``auto`` resolves (``resolve``) to ``bf16`` or ``none`` once, when a run starts; the run's
``config.json`` records the result, so a resume keeps it. fp16's narrow range needs loss
scaling: each of the two Adams is wrapped in a ``keras.optimizers.LossScaleOptimizer``
(dynamic scale: halved and the step skipped on inf/NaN gradients, doubled after 2000
finite steps); the train steps multiply each loss by its optimizer's scale
(``scale_loss``) and the wrapper unscales the gradients. Saved generators are float32
models (``float32_copy``), so sampling and export never see a 16-bit policy. Keras is
imported on first use (``CHOICES`` serves the CLI's ``--help``).
"""

from __future__ import annotations

import contextlib

# --mixed-precision choice -> Keras dtype policy name.
POLICIES = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
AUTO = "auto"  # bf16 where it was measured faster (``resolve``), else none
CHOICES = (*POLICIES, AUTO)
# Backends where bf16 on a CPU with native bf16 measured faster and no worse at equal training
# time (docs/RESULTS.md, "bf16 against float32 at equal time"). XLA's CPU backend (JAX) runs
# bf16 slower than float32.
BF16_CPU_BACKENDS = ("tensorflow", "torch")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU flags list native bf16 arithmetic (AVX512-BF16 or AMX-BF16); False if unknown."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def gpu_present(backend: str) -> bool:
    """Whether ``backend`` sees a GPU (it then trains there; ``auto`` is not measured on GPUs)."""
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    import jax

    return jax.default_backend() != "cpu"


def resolve(mode: str, backend: str | None = None) -> str:
    """The concrete ``--mixed-precision`` for ``mode``: ``auto`` becomes ``bf16`` on the
    ``BF16_CPU_BACKENDS`` running on a CPU with native bf16 (where it was measured to pay),
    ``none`` otherwise (GPUs are not measured). Other modes are returned unchanged."""
    if mode != AUTO:
        return mode
    if backend is None:
        import keras

        backend = keras.backend.backend()
    fast = backend in BF16_CPU_BACKENDS and cpu_has_bf16() and not gpu_present(backend)
    return "bf16" if fast else "none"


@contextlib.contextmanager
def dtype_policy(mode: str):
    """Layers created inside use the policy of ``mode`` (resolved: not ``auto``); the global
    policy is restored after."""
    if mode not in POLICIES:
        raise ValueError(f"mixed precision must be one of {', '.join(POLICIES)}, got {mode!r}")
    import keras

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[mode])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def wrap_optimizer(optimizer, mode: str):
    """fp16: the optimizer inside a dynamic ``LossScaleOptimizer`` (same name); else unchanged."""
    import keras

    if mode != "fp16":
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer, name=f"{optimizer.name}_loss_scale")


def scale_loss(optimizer, loss, values=None):
    """``loss`` times ``optimizer``'s dynamic loss scale (a LossScaleOptimizer), else ``loss``.

    ``values``: JAX's ``{id(variable): value}`` of the step's state (the scale variable's
    value lives there, not in the variable, inside a stateless step).
    """
    import keras
    from keras import ops

    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return loss
    scale = optimizer.dynamic_scale if values is None else values[id(optimizer.dynamic_scale)]
    return loss * ops.cast(scale, loss.dtype)


def float32_copy(model):
    """A float32-policy twin of ``model`` (rebuilt from its config) holding the same weights."""
    import keras

    if keras.config.dtype_policy().name == "float32" and all(
        layer.dtype_policy.name == "float32" for layer in model.layers
    ):
        return model
    with dtype_policy("none"):
        twin = model.__class__.from_config(model.get_config())
    twin.set_weights(model.get_weights())
    return twin
