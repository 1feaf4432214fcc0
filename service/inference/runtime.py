"""The prediction pipeline shared by every endpoint: decode off the loop, batch, infer, decide, count,
then offer the image to the shadow candidate (if any).

One Runtime per app, built in the lifespan. Requests read from it; its mutable state is event-loop
confined: the primary model (replaced whole on a swap), the shadow, the batcher's admission counters
and the ready/draining flags.
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
from service.inference.decision import Decision
from service.inference.served import ServedModel
from service.inference.shadow import Shadow
from service.inputs.imaging import DecodeLimits, decode, preprocess
from service.observability.metrics import Metrics
from service.settings import Settings
from service.trust.drift import GREY, grey_shares
from service.trust.gate import Verdict
from service.web.schemas import Timings

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Prepared:
    tensor: np.ndarray  # (1, S, S) model input
    grey: Image.Image  # the upright grey image, for heatmap overlays
    decode_s: float
    grey_shares: np.ndarray | None = None  # its grey-level histogram, when drift is watched


@dataclass(frozen=True, slots=True)
class Classified:
    model: ServedModel  # the model that answered (the primary when the request started)
    prepared: Prepared | None  # None for inputs that arrived preprocessed (OIP FP32)
    outcome: Outcome
    decision: Decision
    verdict: Verdict | None  # the OOD gate's, None when it is off or the card has none

    @property
    def label(self) -> str | None:
        """The label to give: none for an image the gate abstained on."""
        return None if self.verdict is not None and self.verdict.abstained else self.decision.label


class Runtime:
    """The primary model (swapped whole by `swap`, service.inference.reload), the optional shadow
    candidate, the batcher and the decode pool."""

    def __init__(self, settings: Settings, primary: ServedModel, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.primary = primary
        self.shadow: Shadow | None = None
        self.limits = DecodeLimits(
            max_pixels=settings.max_pixels, dicom_modalities=frozenset(settings.dicom_allow_modalities)
        )
        self.batcher = Batcher(
            max_batch=settings.batch_max_size if settings.batching else 1,
            max_wait_s=settings.batch_max_wait_ms / 1000.0,
            capacity=settings.queue_max,
            metrics=metrics,
        )
        self._pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.ready = False
        self.draining = False
        self._publish(trust=True)

    def start(self) -> None:
        self.batcher.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        self.draining = True
        await self.batcher.close(self.settings.drain_timeout_s)
        if self.shadow is not None:
            await self.shadow.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def swap(self, primary: ServedModel) -> ServedModel:
        """Serve `primary` from the next request on; requests already running finish on the model they
        took. Returns the model it replaced. (On the event loop: the assignment is the atomic step.)"""
        previous, self.primary = self.primary, primary
        self._publish(trust=True)
        return previous

    async def set_shadow(self, shadow: Shadow | None) -> Shadow | None:
        """Compare against `shadow` from now on (None: stop comparing); returns the one it replaced, stopped."""
        previous, self.shadow = self.shadow, shadow
        if shadow is not None:
            shadow.start()
        self._publish()
        if previous is not None:
            await previous.stop()
        return previous

    def _publish(self, trust: bool = False) -> None:
        """The model-info metric follows the models served; with `trust`, the OOD and drift metrics
        follow the (new) primary's card."""
        shadow = self.shadow.candidate.ref if self.shadow is not None else None
        self.metrics.set_models(self.primary.ref, shadow)
        if trust:
            gate = self.primary.gate
            self.metrics.watch_trust(gate.threshold if gate.active else None, self.primary.drift)

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

    async def classify(self, ticket: Ticket, data: bytes, model: ServedModel) -> Classified:
        """Encoded image bytes -> `model`'s decision (the ticket must come from `batcher.admit`)."""
        prepared = await self.offload(self.prepare, data, model)
        self.metrics.decode.observe(prepared.decode_s)
        outcome = await self.batcher.infer(ticket, prepared.tensor, model.run)
        result = self.decide(model, outcome, prepared, prepared.grey_shares)
        self._offer_shadow(result, prepared.tensor, data)
        return result

    async def classify_tensor(self, ticket: Ticket, tensor: np.ndarray, model: ServedModel) -> Classified:
        """A (1, S, S) input preprocessed as `model`'s card says -> its decision."""
        outcome = await self.batcher.infer(ticket, tensor, model.run)
        result = self.decide(model, outcome, None, self._grey_shares(model, tensor))
        self._offer_shadow(result, tensor, None)
        return result

    def prepare(self, data: bytes, model: ServedModel) -> Prepared:
        started = time.perf_counter()
        grey = decode(data, self.limits, model.card.input.dicom_window)
        tensor = preprocess(grey, model.card.input)
        return Prepared(tensor, grey, time.perf_counter() - started, self._grey_shares(model, tensor))

    def decide(
        self, model: ServedModel, outcome: Outcome, prepared: Prepared | None, grey_shares: np.ndarray | None
    ) -> Classified:
        decision = model.rule.decision(outcome.logits)
        verdict = model.gate.verdict(outcome.ood_score)
        result = Classified(model, prepared, outcome, decision, verdict)
        self.metrics.observe_answer(result.label, decision.probability, verdict)
        if model.drift is not None:
            model.drift.observe(grey_shares, outcome.ood_score, decision.probability)
        return result

    def _offer_shadow(self, result: Classified, tensor: np.ndarray, data: bytes | None) -> None:
        shadow = self.shadow
        if shadow is not None:
            shadow.offer(result.model, result.label, result.decision.probability, tensor, data)

    @staticmethod
    def _grey_shares(model: ServedModel, tensor: np.ndarray) -> np.ndarray | None:
        cuts = model.drift.cuts(GREY) if model.drift is not None else None
        return None if cuts is None else grey_shares(tensor, model.card.input, cuts)

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
