"""Data-parallel training over every local device (and several hosts) with ``keras.distribution``.

``setup_distribution("data-parallel")`` must run before the GAN is built: it sets
``keras.distribution.DataParallel`` over all devices, so variables are replicated
and each global batch is split along its first axis, one slice per device; XLA
inserts the gradient all-reduce. The result equals one device at the same global
batch up to float summation order (tested on 2 virtual CPU devices).

Several hosts (JAX): pass ``coordinator_address`` (``host:port`` of process 0),
``num_processes`` and ``process_id`` — or set ``KERAS_DISTRIBUTION_JOB_ADDRESSES``,
``KERAS_DISTRIBUTION_NUM_PROCESSES`` and ``KERAS_DISTRIBUTION_PROCESS_ID`` — and run
the same command on every host; ``jax.distributed.initialize`` connects them (on
Cloud TPU and SLURM it finds the cluster by itself). Each process then feeds its
own slice of every global batch (``data_shard``). A SIGTERM to any of the processes stops
them all after the same epoch (training/stop_signal.py): JAX's own preemption service, which
would swallow a SIGTERM that arrives before training starts, is switched off.

Backends: ``keras.distribution`` supports only JAX in Keras 3.15.1. PyTorch is refused.
TensorFlow is refused too: under ``tf.distribute.MirroredStrategy`` (2 logical CPUs) this
GAN's ``train_step`` runs, but each replica averages its losses and its BatchNorm
statistics over its own half of the batch: after 3 tiny-preset steps the generator's
weights differ from one device's by 2.3e-3 (JAX: < 1e-4), and the logged losses are halved.
This module imports Keras only when called (``MODES`` serves the CLI's ``--help``).
"""

from __future__ import annotations

import os

MODES = ("none", "data-parallel")
_ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID")

_REFUSALS = {
    "tensorflow": (
        "--distribute data-parallel is not available on the tensorflow backend: keras.distribution "
        "supports only JAX in Keras {version}, and under tf.distribute.MirroredStrategy this GAN's "
        "custom train_step runs but trains differently (each replica averages its losses and "
        "BatchNorm statistics over its own slice; see also Keras issue 20164); use KERAS_BACKEND=jax"
    ),
    "torch": (
        "--distribute data-parallel is not available on the torch backend: keras.distribution has no "
        "torch support in Keras {version} (no DataParallel/DDP integration in fit); use KERAS_BACKEND=jax"
    ),
}


class DistributeError(ValueError):
    """A distribution that this backend, device count or batch size cannot run."""


def setup_distribution(
    mode: str = "data-parallel",
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> str:
    """Set the global Keras distribution; return a one-line description.

    ``mode="none"`` does nothing. Call before building any model.

    Raises:
        DistributeError: an unknown mode, or a backend without support.
    """
    import keras

    if mode not in MODES:
        raise DistributeError(f"unknown distribution {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "none":
        return "1 process, default device"
    backend = keras.backend.backend()
    if backend != "jax":
        raise DistributeError(_REFUSALS.get(backend, "{backend}: unsupported").format(
            version=keras.__version__, backend=backend))
    multi_host = any(v is not None for v in (coordinator_address, num_processes, process_id)) or any(
        os.environ.get(name) for name in _ENV
    )
    if multi_host:
        import jax

        if not jax.distributed.is_initialized():
            # SIGTERM is ours (training/stop_signal.py): with JAX's preemption service on, its
            # handler takes a SIGTERM that comes before fit, and the run goes on as if none came.
            jax.config.update("jax_enable_preemption_service", False)
            keras.distribution.initialize(coordinator_address, num_processes, process_id)
    devices = keras.distribution.list_devices()
    # auto_shard_dataset=False: ImageBatches feeds each process its own slice (data_shard);
    # Keras would otherwise insist on a tf.data.Dataset to shard across processes.
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    )
    import jax

    return (
        f"data-parallel over {len(devices)} device(s) "
        f"({jax.process_count()} process(es), this is process {jax.process_index()})"
    )


def device_count() -> int:
    """Devices the current distribution splits each batch over (1 without one)."""
    import keras

    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    return int(distribution.device_mesh.devices.size)


def check_global_batch(batch_size: int) -> None:
    """The global batch must split evenly over the devices.

    Raises:
        DistributeError: with the nearest batch sizes that work.
    """
    n = device_count()
    if batch_size % n:
        lower, upper = (batch_size // n) * n, (batch_size // n + 1) * n
        choices = f"{lower} or {upper}" if lower else f"{upper}"
        raise DistributeError(
            f"--batch-size {batch_size} does not divide over {n} devices: use a multiple of {n} "
            f"(e.g. {choices})"
        )


def data_shard() -> tuple[int, int]:
    """``(index, count)``: which slice of each global batch this process feeds."""
    import keras

    if keras.distribution.distribution() is None or keras.backend.backend() != "jax":
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()
