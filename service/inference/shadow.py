"""The shadow candidate: a second model that sees a sampled share of real traffic, off the critical path.

The primary answers first; only then is its image offered here. The offer never waits: when the
bounded queue is full the comparison is dropped and counted. One worker takes what is queued (up to a
batch), runs the candidate in its own thread at a lower CPU priority than the primary's, and records
how the two answers compare (service.inference.shadow_tally, and Prometheus). Nothing of this reaches
the client's answer, and a failing candidate is counted, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.inference.served import ServedModel
from service.inference.shadow_tally import ABSTAINED, DROPPED, ERROR, ShadowTally
from service.inputs.imaging import DecodeLimits, decode, preprocess
from service.observability.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("service")

# nice +10 for the candidate's thread: with both models busy the scheduler gives the primary's threads
# the CPU first, so the shadow takes what is left instead of half (Linux threads take their own nice).
SHADOW_NICE = 10
_ERRORS_LOGGED_EVERY = 1000  # the first candidate failure is logged in full, then one in this many


@dataclass(frozen=True, slots=True)
class _Offer:
    primary_label: str  # ABSTAINED when the primary withheld it
    primary_probability: float
    tensor: np.ndarray | None  # the primary's input, when it is the candidate's too
    data: bytes | None  # else the encoded image, decoded again for the candidate's card


class Shadow:
    def __init__(self, candidate: ServedModel, settings: Settings, limits: DecodeLimits, metrics: Metrics) -> None:
        self.candidate = candidate
        self.sample = settings.shadow_sample
        self.max_batch = settings.batch_max_size
        self.tally = ShadowTally()
        self._limits = limits
        self._metrics = metrics
        self._queue: asyncio.Queue[_Offer] = asyncio.Queue(maxsize=settings.shadow_queue_max)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="shadow", initializer=_lower_priority)
        self._worker: asyncio.Task[None] | None = None
        self._errors = 0

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._serve(), name="shadow")

    async def stop(self) -> None:
        """Stop comparing: queued offers are dropped (uncounted), the running batch finishes in its thread."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=False, cancel_futures=True)

    def offer(
        self,
        primary: ServedModel,
        label: str | None,
        probability: float,
        tensor: np.ndarray,
        data: bytes | None,
    ) -> None:
        """After the primary answered: maybe queue the image for the candidate (never blocks)."""
        if self.sample < 1.0 and random.random() >= self.sample:
            return
        same_input = self.candidate.same_input(primary)
        if not same_input and data is None:  # a preprocessed tensor made for another card's input
            self._missed(DROPPED)
            return
        offer = _Offer(label if label is not None else ABSTAINED, probability, tensor if same_input else None, data)
        try:
            self._queue.put_nowait(offer)
        except asyncio.QueueFull:
            self._missed(DROPPED)
            return
        self._metrics.shadow_queue_depth.set(self._queue.qsize())

    def reset(self) -> None:
        self.tally.reset()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._metrics.shadow_queue_depth.set(self._queue.qsize())
            try:
                answers, took = await loop.run_in_executor(self._executor, self._run, batch)
            except Exception as exc:
                for _ in batch:
                    self._missed(ERROR)
                self._log_error(exc)
                continue
            self._metrics.shadow_inference.observe(took)
            for offer, (label, probability) in zip(batch, answers, strict=True):
                difference = abs(probability - offer.primary_probability)
                outcome = self.tally.compared(offer.primary_label, label, difference)
                self._metrics.observe_shadow(outcome, offer.primary_label, label, difference)

    def _run(self, batch: list[_Offer]) -> tuple[list[tuple[str, float]], float]:
        """In the shadow thread: inputs for the candidate, its batch, its labels and probabilities."""
        model = self.candidate
        tensors = [
            offer.tensor
            if offer.tensor is not None
            else preprocess(decode(offer.data, self._limits, model.card.input.dicom_window), model.card.input)
            for offer in batch
        ]
        started = time.perf_counter()
        logits, _, scores = model.run(np.stack(tensors))
        took = time.perf_counter() - started
        answers = []
        for i in range(len(batch)):
            decision = model.rule.decision(logits[i])
            verdict = model.gate.verdict(None if scores is None else float(scores[i]))
            abstained = verdict is not None and verdict.abstained
            answers.append((ABSTAINED if abstained else decision.label, decision.probability))
        return answers, took

    def _missed(self, outcome: str) -> None:
        self.tally.missed(outcome)
        self._metrics.shadow.labels(outcome).inc()

    def _log_error(self, exc: Exception) -> None:
        if self._errors % _ERRORS_LOGGED_EVERY == 0:
            log.warning("the shadow candidate failed (%d failures so far)", self._errors + 1, exc_info=exc)
        self._errors += 1


def _lower_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed: run at the same priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SHADOW_NICE)
