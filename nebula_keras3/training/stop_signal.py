"""A graceful stop on SIGTERM: the epoch in flight ends with its checkpoint, then the run stops.

Job schedulers (Slurm, Kubernetes, systemd) send SIGTERM and wait a grace period before
SIGKILL. Without a handler SIGTERM kills ``nebula train`` at once: the resume contract
(training/run_folder.py) repairs the folder, but the epoch in flight is lost, its held-out
scores included. With :class:`StopOnSignal` the epoch in flight finishes (scores, files, then
``checkpoints/last.npz``), fit stops, and the run folder is the one an uninterrupted run
leaves at that epoch, less ``generator.keras`` (written when a run reaches its last epoch).
A second SIGTERM stops the process at once, as without the handler. The handler is installed
only while fit runs, and only on the main thread (Python delivers signals there alone).

Several processes (``--distribute data-parallel`` over hosts): a scheduler may signal one
process, or signal each at a different moment. A process that stopped alone would leave the others
waiting in the next step's all-reduce for ever, so at every epoch's end the processes share
their flags (one small all-gather) and all stop after the same epoch if any was signalled.
"""

from __future__ import annotations

import os
import signal
import threading

import keras
import numpy as np

STOP_SIGNALS = (signal.SIGTERM,)
# ``nebula train``'s exit status after such a stop: what a shell reports for a process SIGTERM ended.
STOPPED_EXIT_CODE = 128 + signal.SIGTERM


class StopOnSignal(keras.callbacks.Callback):
    """Stops fit at the end of the epoch in which a stop signal arrived (after every file of it).

    Use as a context manager around ``fit`` (it installs the handler) and as the callback
    that runs after ``EpochCheckpoint``. ``received`` is the signal's name, or None.
    """

    def __init__(self):
        super().__init__()
        self.received: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.received is not None:  # the second: stop now, as without this handler
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signal.Signals(signum).name  # no printing here: it may interrupt a print

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        self._previous.clear()
        return False

    def on_epoch_end(self, epoch, logs=None):
        signalled = _in_any_process(self.received is not None)
        if signalled and self.received is None:
            self.received = f"{signal.Signals(STOP_SIGNALS[0]).name} to another process"
        if signalled:
            self.model.stop_training = True


def _in_any_process(flag: bool) -> bool:
    """``flag`` or'ed over the processes of a multi-process JAX run; every process must call it."""
    from nebula_keras3.training.distribute import data_shard

    if data_shard()[1] == 1:  # one process (any backend, or JAX without --distribute)
        return flag
    from jax.experimental import multihost_utils

    return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))
