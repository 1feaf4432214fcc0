"""Logits -> probabilities -> label, by the card's one decision rule.

probability = P(not normal): sigmoid(logit / T) for a binary task (one logit, service.card.logit_count),
1 - softmax(logits / T)[normal] for a multiclass one, where T is the card's calibration temperature
(fitted on the validation split; 1 when uncalibrated). If probability >= threshold the label is the most probable
cancer label, otherwise the normal label. Training (fit's validation, evaluate) and export (parity
gates) use this same rule.
The heatmap shows evidence for a label: that class's CAM channel; for a binary task's normal label it
is the single channel negated (evidence against cancer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.card import ModelCard, logit_count


@dataclass(frozen=True, slots=True)
class Decision:
    label: str
    probability: float  # P(not normal)
    probabilities: dict[str, float]  # every label, in the card's order


@dataclass(frozen=True)
class DecisionRule:
    task: str  # "binary" | "multiclass"
    labels: tuple[str, ...]
    normal: str
    threshold: float = 0.5  # on the calibrated P(not normal)
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.normal not in self.labels:
            raise ValueError(f"normal label {self.normal!r} is not one of {self.labels}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, not {self.temperature}")

    @classmethod
    def of(cls, card: ModelCard) -> DecisionRule:
        return cls(card.task, tuple(card.labels), card.normal_label, card.threshold, card.calibration.temperature)

    @property
    def binary(self) -> bool:
        return logit_count(self.task, self.labels) == 1

    @property
    def normal_index(self) -> int:
        return self.labels.index(self.normal)

    def cancer_probability(self, logits: np.ndarray) -> np.ndarray:
        """P(not normal) per row of (N, K) logits."""
        logits = self._checked(logits)
        if self.binary:
            z = np.exp(-np.abs(logits[:, 0]))  # split by sign so exp never overflows
            return np.where(logits[:, 0] >= 0, 1.0 / (1.0 + z), z / (1.0 + z))
        return 1.0 - _softmax(logits)[:, self.normal_index]

    def label_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(N, labels) probabilities in the labels' order."""
        if not self.binary:
            return _softmax(self._checked(logits))
        p = self.cancer_probability(logits)
        out = np.repeat(p[:, None], len(self.labels), axis=1)
        out[:, self.normal_index] = 1.0 - p
        return out

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """The decided label index per row of (N, K) logits."""
        logits = self._checked(logits)
        cancer = self.cancer_probability(logits) >= self.threshold
        if self.binary:
            return np.where(cancer, 1 - self.normal_index, self.normal_index)
        masked = logits.copy()
        masked[:, self.normal_index] = -np.inf
        return np.where(cancer, masked.argmax(axis=1), self.normal_index)

    def decision(self, logits: np.ndarray) -> Decision:
        """One image's logits, shape (K,), to its decision."""
        row = np.asarray(logits, dtype=np.float64)[None]
        probabilities = self.label_probabilities(row)[0]
        label = self.labels[int(self.decide(row)[0])]
        p = float(self.cancer_probability(row)[0])
        return Decision(label, p, dict(zip(self.labels, probabilities.tolist(), strict=True)))

    def channel_for(self, label: str) -> tuple[int, float]:
        """The CAM channel and sign that show evidence for `label`; KeyError if it is no label."""
        if label not in self.labels:
            raise KeyError(label)
        if self.binary:
            return 0, (-1.0 if label == self.normal else 1.0)
        return self.labels.index(label), 1.0

    def explained_channels(self, decided: np.ndarray) -> np.ndarray:
        """The CAM channel that explains each decided label index."""
        return np.zeros_like(decided) if self.binary else decided

    def _checked(self, logits: np.ndarray) -> np.ndarray:
        """The logits, shape-checked, divided by the temperature (decisions compare calibrated values)."""
        logits = np.asarray(logits, dtype=np.float64)
        expected = logit_count(self.task, self.labels)
        if logits.ndim != 2 or logits.shape[1] != expected:
            raise ValueError(f"a {self.task} rule over {len(self.labels)} labels needs (N, {expected}) logits")
        return logits / self.temperature if self.temperature != 1.0 else logits


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)
