"""One model as the service serves it: the verified engine and what its card implies (the decision
rule, the OOD gate, the drift window, the reference answers carry).

A request takes the primary's ServedModel once, when it starts, and uses it to the end: preprocessing,
inference, the decision and the `model` in its answer all come from the same card, so a model swapped
in mid-request never mixes with the one that took it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.card import ModelCard
from service.inference.decision import DecisionRule
from service.inference.engine import Engine
from service.settings import Settings
from service.trust.drift import DriftWindow
from service.trust.gate import OodGate
from service.web.schemas import ModelRef


@dataclass(frozen=True, slots=True, eq=False)  # identity: the batcher groups jobs by the model they ran on
class ServedModel:
    engine: Engine
    rule: DecisionRule
    gate: OodGate
    ref: ModelRef
    drift: DriftWindow | None  # the primary's answers are watched; a shadow's are not

    @classmethod
    def of(cls, engine: Engine, settings: Settings, *, watch_drift: bool = True) -> ServedModel:
        card = engine.card
        drift = None
        if watch_drift and card.drift is not None:
            drift = DriftWindow(card.drift, settings.drift_window, settings.drift_window_s)
        return cls(
            engine=engine,
            rule=DecisionRule.of(card),
            gate=OodGate.of(card, engine.ood_stats, settings.ood_policy),
            ref=ModelRef(card.name, card.version, engine.variant, engine.sha256),
            drift=drift,
        )

    @classmethod
    def load(cls, model_dir: Path, settings: Settings, *, shadow: bool = False) -> ServedModel:
        """Read, verify and self-test the model in `model_dir` (CardError with one line when it fails).

        A shadow gets one ONNX Runtime thread: it then runs on the (low-priority) thread that calls it,
        where a pool of its own would run at the primary's priority. Its answers are not watched for drift.
        """
        threads = 1 if shadow else settings.threads
        return cls.of(Engine.open(model_dir, settings.model_variant, threads), settings, watch_drift=not shadow)

    @property
    def card(self) -> ModelCard:
        return self.engine.card

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The model and, beside it in the inference thread, the OOD scores of the batch."""
        logits, cam, features = self.engine.run(batch)
        return logits, cam, self.gate.scores(logits, features)

    def same_input(self, other: ServedModel) -> bool:
        """Whether a tensor preprocessed for `other` is this model's input too (same size, scaling, window)."""
        return self.card.input == other.card.input
