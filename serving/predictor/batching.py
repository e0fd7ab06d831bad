"""Server-side batching: merge concurrent requests into one model call, then split the results.

TF Serving's --enable_batching idea on asyncio: requests with the same key (model version,
signature, per-example shapes and dtypes) queue together; a queue is run as one batch when it
reaches max_batch_size rows, or once batch_timeout_micros have passed since its first request and
one of the num_batch_threads is free; until a thread is free it keeps taking requests. So with
batch_timeout_micros 0 (the default, as TF Serving's guide suggests for CPU serving) a request
to an idle model runs at once, and requests that arrive while the model is busy are merged.
Past max_enqueued_batches waiting batches new requests are refused with UNAVAILABLE, as TF
Serving does.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from serving.predictor.config import BatchingConfig
from serving.predictor.errors import PredictorError, Unavailable

log = logging.getLogger(__name__)

Arrays = Mapping[str, np.ndarray]
RunFn = Callable[[Arrays], dict[str, np.ndarray]]


@dataclass(eq=False)
class _Task:
    inputs: Arrays
    rows: int
    future: asyncio.Future


@dataclass(eq=False)
class _Batch:
    run: RunFn
    tasks: list[_Task] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None
    due: bool = False  # its timeout has passed: it runs as soon as a thread is free


class Batcher:
    """Queues requests per key and runs each closed batch in the executor."""

    def __init__(self, options: BatchingConfig, executor: Executor) -> None:
        self._options = options
        self._executor = executor
        self._open: dict[Hashable, _Batch] = {}
        self._waiting = 0  # closed batches not yet running
        self._running = 0
        self._slots: asyncio.Semaphore | None = None

    async def submit(self, key: Hashable, run: RunFn, inputs: Arrays, rows: int) -> dict[str, np.ndarray]:
        """Run `inputs` (with `rows` examples) as part of a batch; returns this request's rows only."""
        loop = asyncio.get_running_loop()
        batch = self._open.get(key)
        if batch is not None and batch.rows + rows > self._options.max_batch_size:
            self._close(key)
            batch = None
        if batch is None:
            if self._waiting + len(self._open) >= self._options.max_enqueued_batches:
                raise Unavailable("The batch scheduling queue to which this task was submitted is full")
            batch = self._open[key] = _Batch(run)
            if self._options.batch_timeout_micros:
                batch.timer = loop.call_later(self._options.batch_timeout_micros / 1e6, self._due, key)
            else:
                batch.due = True
        task = _Task(inputs, rows, loop.create_future())
        batch.tasks.append(task)
        batch.rows += rows
        if batch.rows >= self._options.max_batch_size or (batch.due and self._thread_free()):
            self._close(key)
        return await task.future

    def _thread_free(self) -> bool:
        return self._running + self._waiting < self._options.num_batch_threads

    def _due(self, key: Hashable) -> None:
        """The batch's timeout passed: run it now if a thread is free, else when one is (it fills meanwhile)."""
        batch = self._open.get(key)
        if batch is None:
            return
        batch.due = True
        if self._thread_free():
            self._close(key)

    def _next_due(self) -> None:
        """A thread became free: the oldest batch whose timeout passed runs."""
        due = next((key for key, batch in self._open.items() if batch.due), None)
        if due is not None and self._thread_free():
            self._close(due)

    def _close(self, key: Hashable) -> None:
        batch = self._open.pop(key, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        self._waiting += 1
        asyncio.get_running_loop().create_task(self._execute(batch))

    async def _execute(self, batch: _Batch) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._options.num_batch_threads)
        async with self._slots:
            self._waiting -= 1
            self._running += 1
            try:
                await self._run(batch)
            finally:
                self._running -= 1
        self._next_due()

    async def _run(self, batch: _Batch) -> None:
        tasks = [t for t in batch.tasks if not t.future.done()]  # drop cancelled requests
        if not tasks:
            return
        merged = tasks[0].inputs if len(tasks) == 1 else {
            key: np.concatenate([t.inputs[key] for t in tasks]) for key in tasks[0].inputs}
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, batch.run, merged)
            results = _split(outputs, [t.rows for t in tasks])
        except Exception as exc:
            for t in tasks:
                if not t.future.done():
                    t.future.set_exception(exc)
            return
        for t, result in zip(tasks, results, strict=True):
            if not t.future.done():
                t.future.set_result(result)


def _split(outputs: dict[str, np.ndarray], sizes: list[int]) -> list[dict[str, np.ndarray]]:
    total = sum(sizes)
    for key, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != total:
            raise PredictorError(f"output '{key}' has shape {list(value.shape)}: cannot split a batch "
                                 f"of {total} rows")
    bounds = np.cumsum([0, *sizes])
    return [{key: value[start:end] for key, value in outputs.items()}
            for start, end in itertools.pairwise(bounds)]
