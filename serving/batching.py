"""Request batching like TF Serving's ``--enable_batching`` (BasicBatchScheduler).

Concurrent predict requests for the same version and signature are merged into
one model call of at most ``max_batch_size`` rows. A batch is started when it
is full or when its oldest request has waited ``batch_timeout_micros``, and at
most ``num_batch_threads`` batches run at once (in a thread pool, off the event
loop). The queue is bounded: once ``max_enqueued_batches`` batches' worth of
rows are waiting, new requests are refused at once with UNAVAILABLE (HTTP 503,
TF Serving's "batch scheduling queue ... is full") instead of piling up memory.
A request larger than ``max_batch_size`` runs as its own batch, in chunks.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import Executor

import numpy as np

from nebula_keras3.serving.config_files import BatchingOptions
from nebula_keras3.serving.errors import ServingError

QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


class _Task:
    __slots__ = ("n", "inputs", "future", "t0")

    def __init__(self, n, inputs, future):
        self.n, self.inputs, self.future, self.t0 = n, inputs, future, time.monotonic()


class _Queue:
    def __init__(self):
        self.tasks: collections.deque[_Task] = collections.deque()
        self.rows = 0
        self.wakeup = asyncio.Event()
        self.worker: asyncio.Task | None = None


class Batcher:
    """Batches ``run(signature, inputs) -> outputs`` calls of one model version."""

    def __init__(self, run, executor: Executor, options: BatchingOptions, *, observe=None, label: str = ""):
        self._run = run
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
        return self.options.max_batch_size * self.options.max_enqueued_batches

    def queued_rows(self) -> int:
        return sum(q.rows for q in self._queues.values())

    async def submit(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closing:
            raise ServingError("UNAVAILABLE", f"Servable {self.label} is unloading; retry")
        n = int(next(iter(inputs.values())).shape[0]) if inputs else 0
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
        max_bs = self.options.max_batch_size
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
            batch, rows = [], 0
            while q.tasks and (not batch or rows + q.tasks[0].n <= max_bs):
                t = q.tasks.popleft()
                rows += t.n
                batch.append(t)
            q.rows -= rows
            job = asyncio.create_task(self._execute(signature, batch, rows, q.rows))
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

    def _call(self, signature: str, inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        max_bs = self.options.max_batch_size
        if rows <= max_bs:
            return self._run(signature, inputs)
        parts = [self._run(signature, {k: v[i:i + max_bs] for k, v in inputs.items()}) for i in range(0, rows, max_bs)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    async def _execute(self, signature: str, batch: list[_Task], rows: int, queue_rows: int) -> None:
        live = [t for t in batch if not t.future.done()]
        if not live:
            return
        try:
            if len(live) == 1:
                merged = live[0].inputs
            else:
                merged = {k: np.concatenate([t.inputs[k] for t in live]) for k in live[0].inputs}
            rows = sum(t.n for t in live)
            if self._observe is not None:
                self._observe(signature, rows, queue_rows)
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self._executor, self._call, signature, merged, rows)
        except BaseException as e:  # noqa: BLE001 - every waiter must hear about it
            for t in live:
                if not t.future.done():
                    t.future.set_exception(e if isinstance(e, Exception) else RuntimeError("cancelled"))
            if not isinstance(e, Exception):
                raise
            return
        start = 0
        for t in live:
            if not t.future.done():
                t.future.set_result({k: v[start:start + t.n] for k, v in outputs.items()})
            start += t.n

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
