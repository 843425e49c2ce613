"""Request batching like TF Serving's ``--enable_batching`` (BasicBatchScheduler).

Concurrent predict requests for the same version and signature are merged into
one model call of at most ``max_batch_size`` rows. A batch is started when it
is full or when its oldest request has waited ``batch_timeout_micros``, and at
most ``num_batch_threads`` batches run at once (in a thread pool, off the event
loop). The queue is bounded: once ``max_enqueued_batches`` batches' worth of
rows are waiting, new requests are refused at once with UNAVAILABLE (HTTP 503,
TF Serving's "batch scheduling queue ... is full") instead of piling up memory.

BatchingParameters are applied as TF Serving applies them: a request with more
rows than ``max_batch_size`` is refused ("Task size N is larger than maximum
input batch size M", SharedBatchScheduler ValidateBatchTaskQueueCapacity);
with ``enable_large_batch_splitting`` a request may be split across batches of
at most ``max_execution_batch_size`` rows; a batch is padded up to the next of
``allowed_batch_sizes`` and inputs of different lengths are padded when
``pad_variable_length_inputs`` is set (batching_session.cc MergeInputTensors).
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import Executor

import numpy as np

from nebula_keras3.serving.errors import ServingError
from nebula_keras3.serving.options import BatchingOptions

QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


class _Task:
    __slots__ = ("n", "inputs", "future", "t0", "taken", "parts", "done_rows")

    def __init__(self, n, inputs, future):
        self.n, self.inputs, self.future, self.t0 = n, inputs, future, time.monotonic()
        self.taken = 0  # rows already put into a batch (a split task is in several)
        self.parts: dict[int, dict] = {}  # start row -> outputs of that slice
        self.done_rows = 0

    def deliver(self, start: int, outputs: dict) -> None:
        if self.future.done():
            return
        self.parts[start] = outputs
        self.done_rows += next(iter(outputs.values())).shape[0] if outputs else 0
        if self.done_rows >= self.n:
            if len(self.parts) == 1:
                self.future.set_result(outputs)
            else:
                order = sorted(self.parts)
                self.future.set_result({k: np.concatenate([self.parts[i][k] for i in order])
                                        for k in self.parts[order[0]]})


class _Queue:
    def __init__(self):
        self.tasks: collections.deque[_Task] = collections.deque()
        self.rows = 0
        self.wakeup = asyncio.Event()
        self.worker: asyncio.Task | None = None


class Batcher:
    """Batches ``run(signature, inputs) -> outputs`` calls of one model version."""

    def __init__(self, run, executor: Executor, options: BatchingOptions, *, observe=None, label: str = "",
                 tf_metrics=None):
        self._run = run
        self._tf = tf_metrics  # TF Serving's batching_session families (tf_metrics.TFMetrics)
        self._executor = executor
        self.options = options
        self._observe = observe  # callback(signature, batch_rows, queue_rows) for metrics
        self.label = label
        self._queues: dict[str, _Queue] = {}
        self._slots = asyncio.Semaphore(max(1, options.num_batch_threads))
        self._inflight: set[asyncio.Task] = set()
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def capacity_rows(self) -> int:
        return self.options.execution_batch_size * self.options.max_enqueued_batches

    def queued_rows(self) -> int:
        return sum(q.rows for q in self._queues.values())

    async def submit(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closing:
            raise ServingError("UNAVAILABLE", f"Servable {self.label} is unloading; retry")
        n = int(next(iter(inputs.values())).shape[0]) if inputs else 0
        if n > self.options.max_batch_size:
            raise ServingError("INVALID_ARGUMENT", f"Task size {n} is larger than maximum input batch size "
                                                   f"{self.options.max_batch_size}")
        if self._tf is not None:
            self._tf.observe("/tensorflow/serving/batching_session/input_batch_size", n)
        q = self._queues.get(signature)
        if q is None:
            q = self._queues[signature] = _Queue()
        if q.rows > 0 and q.rows + n > self.capacity_rows:
            raise ServingError("UNAVAILABLE", QUEUE_FULL)
        fut = asyncio.get_running_loop().create_future()
        q.tasks.append(_Task(n, inputs, fut))
        q.rows += n
        self._idle.clear()
        if q.worker is None or q.worker.done():
            q.worker = asyncio.create_task(self._schedule(signature, q))
        q.wakeup.set()
        return await fut

    async def _schedule(self, signature: str, q: _Queue) -> None:
        max_bs = self.options.execution_batch_size
        split = self.options.enable_large_batch_splitting
        timeout = self.options.batch_timeout_micros / 1e6
        while q.tasks:
            # wait until the batch is full or its oldest task has waited `timeout`
            while q.rows < max_bs and not self._closing:
                remaining = q.tasks[0].t0 + timeout - time.monotonic()
                if remaining <= 0:
                    break
                q.wakeup.clear()
                try:
                    await asyncio.wait_for(q.wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            await self._slots.acquire()
            segments, rows = [], 0  # (task, first row, end row)
            while q.tasks:
                t = q.tasks[0]
                left = t.n - t.taken
                if rows + left <= max_bs:
                    segments.append((t, t.taken, t.n))
                    rows += left
                    t.taken = t.n
                    q.tasks.popleft()
                elif split and rows < max_bs:  # the task's head fills this batch, its rest waits
                    take = max_bs - rows
                    segments.append((t, t.taken, t.taken + take))
                    t.taken += take
                    rows = max_bs
                    break
                elif not segments:  # larger than a batch (submit refuses these): run it alone
                    segments.append((t, t.taken, t.n))
                    rows += left
                    t.taken = t.n
                    q.tasks.popleft()
                    break
                else:
                    break
            q.rows -= rows
            job = asyncio.create_task(self._execute(signature, segments, rows, q.rows))
            self._inflight.add(job)
            job.add_done_callback(self._job_done)
        q.worker = None
        self._check_idle()

    def _job_done(self, job: asyncio.Task) -> None:
        self._inflight.discard(job)
        self._slots.release()
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._inflight and not any(q.tasks for q in self._queues.values()):
            self._idle.set()

    def _merge(self, parts: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], int]:
        """batching_session.cc MergeInputTensors: concatenate, pad lengths, pad to an allowed batch size."""
        names = list(parts[0])
        if len(parts) > 1:
            for name in names:
                shapes = {p[name].shape[1:] for p in parts}
                if len(shapes) > 1:
                    if not self.options.pad_variable_length_inputs:
                        raise ServingError(
                            "FAILED_PRECONDITION",
                            f"Tensors with name '{name}' from different tasks have different shapes and padding "
                            "is turned off. Set pad_variable_length_inputs to true, or ensure that all tensors "
                            "with the same name have equal dimensions starting with the first dim.")
                    parts = [{**p, name: _pad_to(p[name], shapes)} for p in parts]
        merged = parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in names}
        rows = int(next(iter(merged.values())).shape[0]) if merged else 0
        padded = self.options.padded_size(rows)
        if padded > rows:  # copies of the last task's first row
            merged = {k: np.concatenate([v, np.repeat(parts[-1][k][:1], padded - rows, axis=0)])
                      for k, v in merged.items()}
        return merged, padded

    def _call(self, signature: str, parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        merged, padded = self._merge(parts)
        rows = sum(int(next(iter(p.values())).shape[0]) for p in parts)
        if self._tf is not None:
            self._tf.observe("/tensorflow/serving/batching_session/processed_batch_size", padded)
            self._tf.observe("/tensorflow/serving/batching_session/padding_size", padded - rows, padded)
            self._tf.inc("/tensorflow/serving/batching_session/wrapped_run_count")
        outputs = self._run(signature, merged)
        return outputs if padded == rows else {k: v[:rows] for k, v in outputs.items()}

    async def _execute(self, signature: str, segments: list, rows: int, queue_rows: int) -> None:
        live = [s for s in segments if not s[0].future.done()]
        if not live:
            return
        now = time.monotonic()
        tasks = {id(t): t for t, _, _ in live}.values()
        try:
            parts = [t.inputs if (a, b) == (0, t.n) else {k: v[a:b] for k, v in t.inputs.items()}
                     for t, a, b in live]
            rows = sum(b - a for _, a, b in live)
            if self._observe is not None:
                self._observe(signature, rows, queue_rows)
            if self._tf is not None:
                for t in tasks:
                    self._tf.observe("/tensorflow/serving/batching_session/queuing_latency",
                                     (now - t.t0) * 1e6, "")
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self._executor, self._call, signature, parts)
        except BaseException as e:  # noqa: BLE001 - every waiter must hear about it
            for t in tasks:
                if not t.future.done():
                    t.future.set_exception(e if isinstance(e, Exception) else RuntimeError("cancelled"))
            if not isinstance(e, Exception):
                raise
            return
        start = 0
        for t, a, b in live:
            t.deliver(a, {k: v[start:start + b - a] for k, v in outputs.items()})
            start += b - a

    async def drain(self, timeout: float | None = None) -> bool:
        """Refuse new work, finish what is queued and running; True when all finished in time."""
        self._closing = True
        for q in self._queues.values():
            q.wakeup.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False


def _pad_to(arr: np.ndarray, shapes: set) -> np.ndarray:
    """batching_util.cc AddPadding: pad every non-batch dim to the largest, with the tensor's first value."""
    target = [max(s[i] for s in shapes) for i in range(arr.ndim - 1)]
    pad = [(0, 0)] + [(0, t - d) for t, d in zip(target, arr.shape[1:])]
    if not any(p for _, p in pad):
        return arr
    fill = arr.flat[0] if arr.size else 0
    return np.pad(arr, pad, mode="constant", constant_values=fill)
