"""The prediction pipeline shared by every endpoint: decode off the loop, batch, infer, decide, count.

One Runtime per app, built in the lifespan. Requests only read from it; the only mutable state is the
batcher's admission counters (event-loop confined) and the ready/draining flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from service.errors import DeadlineExceeded, RequestTimeout
from service.inference.batching import Batcher, Outcome, Ticket
from service.inference.decision import Decision, DecisionRule
from service.inference.engine import Engine
from service.inputs.imaging import DecodeLimits, decode, preprocess
from service.observability.metrics import Metrics
from service.settings import Settings
from service.trust.drift import GREY, DriftWindow, grey_shares
from service.trust.gate import OodGate, Verdict
from service.web.schemas import ModelRef, Timings

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Prepared:
    tensor: np.ndarray  # (1, S, S) model input
    grey: Image.Image  # the upright grey image, for heatmap overlays
    decode_s: float
    grey_shares: np.ndarray | None = None  # its grey-level histogram, when drift is watched


@dataclass(frozen=True, slots=True)
class Classified:
    prepared: Prepared | None  # None for inputs that arrived preprocessed (OIP FP32)
    outcome: Outcome
    decision: Decision
    verdict: Verdict | None  # the OOD gate's, None when it is off or the card has none

    @property
    def label(self) -> str | None:
        """The label to give: none for an image the gate abstained on."""
        return None if self.verdict is not None and self.verdict.abstained else self.decision.label


class Runtime:
    def __init__(self, settings: Settings, engine: Engine, metrics: Metrics) -> None:
        self.settings = settings
        self.engine = engine
        self.card = engine.card
        self.metrics = metrics
        self.rule = DecisionRule.of(engine.card)
        self.gate = OodGate.of(engine.card, engine.ood_stats, settings.ood_policy)
        self.drift = (
            DriftWindow(engine.card.drift, settings.drift_window, settings.drift_window_s)
            if engine.card.drift is not None
            else None
        )
        self.limits = DecodeLimits(
            max_pixels=settings.max_pixels, dicom_modalities=frozenset(settings.dicom_allow_modalities)
        )
        self.model_ref = ModelRef(engine.card.name, engine.card.version, engine.variant, engine.sha256)
        self.batcher = Batcher(
            self._infer,
            max_batch=settings.batch_max_size if settings.batching else 1,
            max_wait_s=settings.batch_max_wait_ms / 1000.0,
            capacity=settings.queue_max,
            metrics=metrics,
        )
        self._pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.ready = False
        self.draining = False
        metrics.set_model(engine.card.name, engine.card.version, engine.variant, engine.sha256)
        metrics.watch_trust(self.gate.threshold if self.gate.active else None, self.drift)

    def start(self) -> None:
        self.batcher.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        self.draining = True
        await self.batcher.close(self.settings.drain_timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU work (decoding, drawing) in the decode pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @contextlib.asynccontextmanager
    async def deadline(self) -> AsyncIterator[None]:
        """The per-request deadline for decode + queue + inference (503 when it passes)."""
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                yield
        except TimeoutError:
            raise DeadlineExceeded("the request did not finish within its deadline") from None

    @contextlib.asynccontextmanager
    async def upload_deadline(self) -> AsyncIterator[None]:
        """The same deadline for receiving the request body (408 when it passes)."""
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                yield
        except TimeoutError:
            raise RequestTimeout("the request body did not arrive in time") from None

    async def classify(self, ticket: Ticket, data: bytes) -> Classified:
        """Encoded image bytes -> decision (the ticket must come from `batcher.admit`)."""
        prepared = await self.offload(self.prepare, data)
        self.metrics.decode.observe(prepared.decode_s)
        outcome = await self.batcher.infer(ticket, prepared.tensor)
        return self.decide(outcome, prepared, prepared.grey_shares)

    async def classify_tensor(self, ticket: Ticket, tensor: np.ndarray) -> Classified:
        """A preprocessed (1, S, S) input -> decision."""
        outcome = await self.batcher.infer(ticket, tensor)
        return self.decide(outcome, None, self._grey_shares(tensor))

    def prepare(self, data: bytes) -> Prepared:
        started = time.perf_counter()
        grey = decode(data, self.limits, self.card.input.dicom_window)
        tensor = preprocess(grey, self.card.input)
        return Prepared(tensor, grey, time.perf_counter() - started, self._grey_shares(tensor))

    def decide(self, outcome: Outcome, prepared: Prepared | None, grey_shares: np.ndarray | None) -> Classified:
        decision = self.rule.decision(outcome.logits)
        verdict = self.gate.verdict(outcome.ood_score)
        result = Classified(prepared, outcome, decision, verdict)
        self.metrics.observe_answer(result.label, decision.probability, verdict)
        if self.drift is not None:
            self.drift.observe(grey_shares, outcome.ood_score, decision.probability)
        return result

    def _infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The model and, beside it in the inference thread, the OOD scores of the batch."""
        logits, cam, features = self.engine.run(batch)
        return logits, cam, self.gate.scores(logits, features)

    def _grey_shares(self, tensor: np.ndarray) -> np.ndarray | None:
        cuts = self.drift.cuts(GREY) if self.drift is not None else None
        return None if cuts is None else grey_shares(tensor, self.card.input, cuts)

    @staticmethod
    def timings(results: list[Classified], started: float) -> Timings:
        """Decode and queue times summed over images; inference is the batch's run time for one
        image, and each image's share of its batch summed for several."""
        decode_s = sum(r.prepared.decode_s for r in results if r.prepared is not None)
        if len(results) == 1:
            inference_s = results[0].outcome.inference_s
        else:
            inference_s = sum(r.outcome.inference_s / r.outcome.batch_size for r in results)
        return Timings(
            decode_ms=_ms(decode_s),
            queue_ms=_ms(sum(r.outcome.queue_s for r in results)),
            inference_ms=_ms(inference_s),
            total_ms=_ms(time.perf_counter() - started),
        )


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
