"""The OOD gate of one model: its scorer (from the card and its verified statistics file), the policy
(OOD_POLICY), and each image's verdict.

abstain: an image scoring above the card's threshold gets no label (the answer says why); flag: it keeps
its label and is marked; off: nothing is scored. A card without an OOD section has no gate: its answers
say `"ood": null` and the start-up log says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.card import CardError, ModelCard, read_file_verified
from service.inference.decision import DecisionRule
from service.trust.ood import FeatureStats, OodScorer

REASON = "out_of_distribution"


def load_statistics(model_dir: Path, card: ModelCard) -> FeatureStats | None:
    """The card's OOD statistics file, verified against its sha256 (None when the card lists none)."""
    if card.ood is None or card.ood.statistics is None:
        return None
    try:
        return FeatureStats.from_bytes(read_file_verified(model_dir, card.ood.statistics))
    except (ValueError, OSError, KeyError) as exc:
        raise CardError(f"the OOD statistics file cannot be read: {exc}") from None


@dataclass(frozen=True, slots=True)
class Verdict:
    score: float
    threshold: float
    in_distribution: bool
    abstained: bool

    @property
    def reason(self) -> str | None:
        if not self.abstained:
            return None
        return (
            "the image does not look like the chest CT slices this model was trained on "
            f"(OOD score {self.score:.4g} above its threshold {self.threshold:.4g}); no prediction is given"
        )


class OodGate:
    def __init__(self, scorer: OodScorer | None, threshold: float, policy: str) -> None:
        self.scorer, self.threshold, self.policy = scorer, threshold, policy

    @classmethod
    def of(cls, card: ModelCard, stats: FeatureStats | None, policy: str) -> OodGate:
        """The card's gate under `policy`, with the statistics `load_statistics` read; CardError when the
        card's method cannot work with them."""
        if card.ood is None or policy == "off":
            return cls(None, float("nan"), policy)
        try:
            scorer = OodScorer(card.ood.method, DecisionRule.of(card), stats)
        except ValueError as exc:
            raise CardError(f"the card's OOD gate is unusable: {exc}") from None
        return cls(scorer, card.ood.threshold, policy)

    @property
    def active(self) -> bool:
        return self.scorer is not None

    def scores(self, logits: np.ndarray, features: np.ndarray | None) -> np.ndarray | None:
        """OOD scores of a batch (runs in the inference thread, beside the model), None when inactive."""
        return None if self.scorer is None else self.scorer(logits, features)

    def verdict(self, score: float | None) -> Verdict | None:
        if score is None or self.scorer is None:
            return None
        inside = bool(score <= self.threshold)
        return Verdict(score, self.threshold, inside, abstained=not inside and self.policy == "abstain")
