"""Admission control and micro-batching in front of the inference engine.

Every image is admitted first (a bounded count: decoding, queued or running); past `capacity` the
answer is 503 Overloaded with Retry-After, never an unbounded wait. Admitted images go through a
bounded asyncio queue to one worker task that takes whatever is queued (up to `max_batch`), waits at
most `max_wait_s` for more only while other admitted images are still being decoded, and runs the
batch in a one-thread executor, so inference never blocks the event loop. With batching off each
image runs alone in that executor. Deadlines belong to the caller: cancelling `infer` (e.g. by
`asyncio.timeout`) drops a queued image before it runs.

Each image names the model that runs it (the model its request started with): a batch that holds
images of two models, as one may right after a swap, runs as one sub-batch per model.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.errors import InferenceFailed, NotReady, Overloaded
from service.observability.metrics import Metrics

# (N, 1, S, S) -> logits (N, K), cam (N, K, h, w), OOD scores (N,) or None when the gate is off
RunBatch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray | None]]


@dataclass(frozen=True, slots=True)
class Outcome:
    logits: np.ndarray  # (K,)
    cam: np.ndarray  # (K, h, w)
    ood_score: float | None
    queue_s: float
    inference_s: float
    batch_size: int


@dataclass(slots=True)
class Ticket:
    unsubmitted: int


@dataclass(slots=True)
class _Job:
    tensor: np.ndarray  # (1, S, S)
    run: RunBatch
    future: asyncio.Future[Outcome]
    queued_at: float


class Batcher:
    def __init__(
        self, run: RunBatch | None = None, *, max_batch: int, max_wait_s: float, capacity: int, metrics: Metrics
    ) -> None:
        self._run_batch = run  # the default model, for callers that name none
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.capacity = capacity
        self._metrics = metrics
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=capacity)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._admitted = 0
        self._expected = 0  # admitted but not yet handed to `infer`
        self._running = 0
        self._closed = False
        self._worker: asyncio.Task[None] | None = None

    @property
    def batching(self) -> bool:
        return self.max_batch > 1

    def start(self) -> None:
        """Start the batching worker (inside the running event loop)."""
        if self.batching and self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._serve(), name="batcher")

    @contextlib.contextmanager
    def admit(self, count: int = 1) -> Iterator[Ticket]:
        """Reserve room for `count` images, or raise Overloaded / NotReady at once."""
        if self._closed:
            raise NotReady("the service is shutting down")
        if self._admitted + count > self.capacity:
            raise Overloaded("the service is at capacity; retry shortly")
        ticket = Ticket(count)
        self._admitted += count
        self._expected += count
        self._metrics.admitted.set(self._admitted)
        try:
            yield ticket
        finally:
            self._admitted -= count
            self._expected -= ticket.unsubmitted
            self._metrics.admitted.set(self._admitted)

    async def infer(self, ticket: Ticket, tensor: np.ndarray, run: RunBatch | None = None) -> Outcome:
        """One preprocessed (1, S, S) image -> its outputs from `run` (default: the batcher's model)."""
        run = run or self._run_batch
        if run is None:
            raise RuntimeError("no model to run the image on")
        if ticket.unsubmitted <= 0:
            raise RuntimeError("ticket used for more images than it admitted")
        ticket.unsubmitted -= 1
        self._expected -= 1
        loop = asyncio.get_running_loop()
        if not self.batching:
            return await loop.run_in_executor(self._executor, self._run_one, run, tensor, time.perf_counter())
        if self._worker is None or self._worker.done():
            raise NotReady("the inference worker is not running")
        job = _Job(tensor, run, loop.create_future(), time.perf_counter())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:  # admission keeps this from happening; refuse rather than wait
            raise Overloaded("the inference queue is full; retry shortly") from None
        self._metrics.queue_depth.set(self._queue.qsize())
        return await job.future

    async def close(self, timeout: float) -> None:
        """Refuse new work, let admitted work finish within `timeout`, then stop the worker."""
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._admitted or self._running or not self._queue.empty()) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(NotReady("the service is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run_one(self, run: RunBatch, tensor: np.ndarray, queued_at: float) -> Outcome:
        started = time.perf_counter()
        logits, cam, ood = run(tensor[None])
        took = time.perf_counter() - started
        self._observe(1, started - queued_at, took)
        return Outcome(logits[0], cam[0], _item(ood, 0), started - queued_at, took, 1)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            await self._gather(batch, loop)
            self._metrics.queue_depth.set(self._queue.qsize())
            batch = [job for job in batch if not job.future.done()]  # drop jobs whose caller gave up
            if not batch:
                continue
            self._running = len(batch)
            try:
                for group in _by_model(batch):
                    await self._run_group(group, loop)
            finally:
                self._running = 0

    async def _run_group(self, batch: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        try:
            (logits, cam, ood), started, took = await loop.run_in_executor(
                self._executor, self._run_many, batch[0].run, [job.tensor for job in batch]
            )
        except Exception as exc:
            _fail(batch, exc)
            return
        for i, job in enumerate(batch):
            if not job.future.done():
                outcome = Outcome(logits[i], cam[i], _item(ood, i), started - job.queued_at, took, len(batch))
                job.future.set_result(outcome)
        self._observe_waits(batch, started, took)

    async def _gather(self, batch: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        queue = self._queue
        while len(batch) < self.max_batch and not queue.empty():
            batch.append(queue.get_nowait())
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch and self._expected > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await queue.get())
            except TimeoutError:
                break
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())

    def _run_many(self, run: RunBatch, tensors: list[np.ndarray]) -> tuple[tuple, float, float]:
        stacked = np.stack(tensors)
        started = time.perf_counter()
        outputs = run(stacked)
        return outputs, started, time.perf_counter() - started

    def _observe(self, size: int, waited: float, took: float) -> None:
        self._metrics.batch_size.observe(size)
        self._metrics.inference.observe(took)
        self._metrics.queue_wait.observe(waited)

    def _observe_waits(self, batch: list[_Job], started: float, took: float) -> None:
        self._metrics.batch_size.observe(len(batch))
        self._metrics.inference.observe(took)
        for job in batch:
            self._metrics.queue_wait.observe(started - job.queued_at)


def _by_model(batch: list[_Job]) -> list[list[_Job]]:
    """The batch split by the model each image names, in queue order (one group but for a swap)."""
    groups: dict[RunBatch, list[_Job]] = {}
    for job in batch:
        groups.setdefault(job.run, []).append(job)
    return list(groups.values())


def _item(scores: np.ndarray | None, index: int) -> float | None:
    return None if scores is None else float(scores[index])


def _fail(batch: list[_Job], cause: BaseException) -> None:
    for job in batch:
        if not job.future.done():
            error = InferenceFailed("inference failed")
            error.__cause__ = cause
            job.future.set_exception(error)
