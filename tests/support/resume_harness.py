"""Interrupt a training run at a chosen moment, for the kill-and-resume tests (tests/test_resume.py).

A run folder changes only at a write, so "any moment" is any write into it: each
``os.replace`` (an atomic file's rename), ``os.fsync`` (a file or folder made durable,
appended CSV rows included) and TensorBoard ``EventWriter.flush`` inside the run folder
counts as one numbered point. At point ``at`` the run is interrupted by ``kind``:

* ``sigkill``: SIGKILL just before the write (a temp file stays behind, buffers are lost);
* ``sigterm``: the write, then SIGTERM: while fit runs, ``nebula train`` stops after the epoch in
  flight (training/stop_signal.py, exit status 143); before or after fit the signal kills it;
* ``torn``: the file keeps only part of the bytes written since its last durable point
  (a row or event record cut short), then SIGKILL;
* ``enospc``: part of the bytes, then ``OSError(ENOSPC)`` (a full disk: the run fails);
* ``nan``: point ``at`` is the ``at``-th training step instead, whose logged ``d_loss``
  reads NaN (the run stops on a non-finite loss; the weights are unharmed).

``count`` counts points without interrupting. The signal kinds need a process of their
own: ``python tests/support/resume_harness.py RUN_DIR KIND AT SEED -- <nebula arguments>``;
``nan`` and ``enospc`` also run in the test's process (``interrupt``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import sys
import time

SIGNAL_KINDS = ("sigkill", "sigterm", "torn")
IN_PROCESS_KINDS = ("nan", "enospc")


class Injector:
    def __init__(self, run_dir, kind: str, at: int, seed: int):
        self.run_dir = os.path.realpath(run_dir)
        self.kind, self.at = kind, int(at)
        self.rng = random.Random(seed)
        self.writes = self.steps = 0
        self.durable: dict[tuple[int, int], int] = {}  # (device, inode) -> size at its last durable point

    def _inside(self, path) -> bool:
        return os.path.realpath(path).startswith(self.run_dir + os.sep)

    def _die(self, sig=signal.SIGKILL):
        sys.stdout.flush()
        os.kill(os.getpid(), sig)
        time.sleep(10)
        os.kill(os.getpid(), signal.SIGKILL)

    def _cut(self, fd_or_path, key) -> None:
        """Keep a random part of what was written since the file's last durable point."""
        size = os.stat(fd_or_path).st_size
        old = self.durable.get(key, 0)
        if size - old > 1:
            os.truncate(fd_or_path, self.rng.randrange(old + 1, size))

    def write_point(self, target, key, do, *, cuttable: bool):
        """``do()`` performs the write at ``target``; interrupt around it if it is point ``at``."""
        if self.kind == "nan" or not self._inside(target):
            return do()
        self.writes += 1
        if self.writes != self.at or self.kind == "count":
            return do()
        if self.kind == "sigkill":
            self._die()
        if self.kind == "sigterm":
            result = do()
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGTERM)  # kills here, or stops the run at its epoch's end
            return result
        if cuttable:
            do()
            self._cut(target, key)
        if self.kind == "torn":
            self._die()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    def step_logs(self, logs):
        self.steps += 1
        if self.kind == "nan" and self.steps == self.at:
            logs = {**(logs or {}), "d_loss": float("nan")}
        return logs


@contextlib.contextmanager
def interrupt(run_dir, kind: str, at: int, seed: int = 0):
    """Patch the write points (and step logs) of this process for one run; yields the Injector."""
    import keras.src.callbacks.callback_list as callback_list

    from nebula_keras3.training.tensorboard import EventWriter

    inj = Injector(run_dir, kind, at, seed)
    real_replace, real_fsync, real_flush = os.replace, os.fsync, EventWriter.flush
    real_batch_end = callback_list.CallbackList.on_train_batch_end

    def replace(src, dst, *args, **kwargs):
        return inj.write_point(dst, None, lambda: real_replace(src, dst, *args, **kwargs), cuttable=False)

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        is_file = os.path.isfile(path)
        result = inj.write_point(path, key, lambda: real_fsync(fd), cuttable=is_file)
        if is_file:
            inj.durable[key] = os.fstat(fd).st_size
        return result

    def flush(writer):
        st = os.stat(writer.path)
        key = (st.st_dev, st.st_ino)
        result = inj.write_point(writer.path, key, lambda: real_flush(writer), cuttable=True)
        inj.durable[key] = os.stat(writer.path).st_size
        return result

    def batch_end(self, batch, logs=None):
        return real_batch_end(self, batch, inj.step_logs(logs))

    os.replace, os.fsync, EventWriter.flush = replace, fsync, flush
    callback_list.CallbackList.on_train_batch_end = batch_end
    try:
        yield inj
    finally:
        os.replace, os.fsync, EventWriter.flush = real_replace, real_fsync, real_flush
        callback_list.CallbackList.on_train_batch_end = real_batch_end


def main(argv):
    run_dir, kind, at, seed = argv[1:5]
    assert argv[5] == "--", argv
    from nebula_keras3.cli import main as nebula

    with interrupt(run_dir, kind, int(at), int(seed)) as inj:
        try:
            nebula(argv[6:], prog_name="nebula", standalone_mode=False)
            code = 0
        except Exception as e:  # noqa: BLE001 - reported to the test, which judges it
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            code = 1
    print(json.dumps({"writes": inj.writes, "steps": inj.steps}))
    sys.exit(code)


if __name__ == "__main__":
    main(sys.argv)
