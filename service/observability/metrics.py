"""Prometheus metrics in a registry of the app's own (so two apps in one process never collide)."""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from service.trust.drift import DriftWindow
from service.trust.gate import REASON, Verdict
from service.web.schemas import ModelRef

PREFIX = "chestnet"
# 1 ms .. 10 s, about three buckets per decade.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
SHADOW_DIFFERENCE_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
# OOD scores have the scale of the card's method: buckets are multiples of its threshold (1 = the line).
OOD_BUCKET_FACTORS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        self.requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests by route, method and status",
            ("route", "method", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "HTTP request latency by route",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(f"{PREFIX}_http_requests_in_flight", "HTTP requests being served", registry=registry)
        self.decode = Histogram(
            f"{PREFIX}_decode_duration_seconds",
            "Image decode and preprocess time",
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "Time an image waited for its inference batch",
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            f"{PREFIX}_inference_duration_seconds",
            "ONNX Runtime time per batch",
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size", "Images per inference batch", buckets=BATCH_BUCKETS, registry=registry
        )
        self.admitted = Gauge(
            f"{PREFIX}_inference_in_flight", "Images admitted: decoding, queued or running", registry=registry
        )
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Images waiting in the batching queue", registry=registry)
        self.predictions = Counter(f"{PREFIX}_predictions", "Predictions by label", ("label",), registry=registry)
        self.probability = Histogram(
            f"{PREFIX}_positive_probability",
            "P(not normal) of each prediction (for drift)",
            buckets=PROBABILITY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(f"{PREFIX}_errors", "Error responses by error code", ("code",), registry=registry)
        self.model_info = Gauge(
            f"{PREFIX}_model_info",
            "The loaded models, role primary or shadow (value is always 1)",
            ("role", "name", "version", "variant", "sha256"),
            registry=registry,
        )
        self.shadow = Counter(
            f"{PREFIX}_shadow",
            "Images offered to the shadow candidate, by outcome (agree, disagree, dropped, error)",
            ("outcome",),
            registry=registry,
        )
        self.shadow_labels = Counter(
            f"{PREFIX}_shadow_labels",
            "Images both models answered, by the primary's and the candidate's label",
            ("primary", "candidate"),
            registry=registry,
        )
        self.shadow_difference = Histogram(
            f"{PREFIX}_shadow_probability_difference",
            "|P(not normal) of the primary - of the candidate| per compared image",
            buckets=SHADOW_DIFFERENCE_BUCKETS,
            registry=registry,
        )
        self.shadow_inference = Histogram(
            f"{PREFIX}_shadow_inference_duration_seconds",
            "The shadow candidate's ONNX Runtime time per batch",
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.shadow_queue_depth = Gauge(
            f"{PREFIX}_shadow_queue_depth", "Images waiting for the shadow candidate", registry=registry
        )
        self.abstentions = Counter(
            f"{PREFIX}_abstentions", "Images given no label, by reason", ("reason",), registry=registry
        )
        self.ood_threshold = Gauge(
            f"{PREFIX}_ood_threshold", "The OOD gate's threshold (nan: no gate)", registry=registry
        )
        self.ood_score: Histogram | None = None
        self._drift = _DriftCollector()
        registry.register(self._drift)

    def set_models(self, primary: ModelRef, shadow: ModelRef | None) -> None:
        self.model_info.clear()
        for role, ref in (("primary", primary), ("shadow", shadow)):
            if ref is not None:
                self.model_info.labels(role, ref.name, ref.version, ref.variant, ref.sha256).set(1)

    def observe_shadow(self, outcome: str, primary: str, candidate: str, difference: float) -> None:
        self.shadow.labels(outcome).inc()
        self.shadow_labels.labels(primary, candidate).inc()
        self.shadow_difference.observe(difference)

    def watch_trust(self, threshold: float | None, drift: DriftWindow | None) -> None:
        """The OOD score histogram, its buckets scaled to this model's threshold, and the drift window."""
        if self.ood_score is not None:
            self.registry.unregister(self.ood_score)
            self.ood_score = None
        self.ood_threshold.set(math.nan if threshold is None else threshold)
        if threshold is not None:
            self.ood_score = Histogram(
                f"{PREFIX}_ood_score",
                "OOD score of each image (above chestnet_ood_threshold: out of distribution)",
                buckets=tuple(threshold * f for f in OOD_BUCKET_FACTORS),
                registry=self.registry,
            )
        self._drift.window = drift

    def observe_answer(self, label: str | None, probability: float, verdict: Verdict | None) -> None:
        if label is not None:
            self.predictions.labels(label).inc()
        self.probability.observe(probability)
        if verdict is not None and self.ood_score is not None:
            self.ood_score.observe(verdict.score)
        if verdict is not None and verdict.abstained:
            self.abstentions.labels(REASON).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _DriftCollector(Collector):
    """chestnet_drift_psi{feature}: PSI of the drift window against the card's reference, computed
    when Prometheus scrapes (never on a request's path)."""

    def __init__(self) -> None:
        self.window: DriftWindow | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        window = self.window
        psi = GaugeMetricFamily(
            f"{PREFIX}_drift_psi", "Population stability index of recent images against training", labels=["feature"]
        )
        size = GaugeMetricFamily(f"{PREFIX}_drift_window_images", "Images in the drift window")
        if window is not None:
            for feature, value in window.psi().items():
                psi.add_metric([feature], value)
            size.add_metric([], window.size())
        yield psi
        yield size
