"""Logits -> probabilities -> label, by the card's one decision rule.

probability = P(not normal): sigmoid(logit) for a binary card, 1 - softmax[normal] for a multiclass
one. If probability >= threshold the label is the most probable cancer label, otherwise the normal
label. Training (evaluate) and export (parity gates) use these same functions.
The heatmap shows evidence for the decided label: the decided class's CAM channel; for a
binary card's "normal" decision that is the single channel negated (evidence against cancer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.card import ModelCard


@dataclass(frozen=True, slots=True)
class Decision:
    label: str
    probability: float  # P(not normal)
    probabilities: dict[str, float]  # every label, in the card's order
    channel: int  # the CAM channel that explains `label`
    sign: float  # +1, or -1 where the channel is evidence against `label`


def cancer_probability(logits: np.ndarray, labels: list[str], normal: str) -> np.ndarray:
    """P(not normal) per row of (N, K) logits: sigmoid for one logit, 1 - softmax[normal] otherwise."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[1] == 1:
        z = np.exp(-np.abs(logits[:, 0]))  # split by sign so exp never overflows
        return np.where(logits[:, 0] >= 0, 1.0 / (1.0 + z), z / (1.0 + z))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return 1.0 - shifted[:, labels.index(normal)] / shifted.sum(axis=1)


def decide(logits: np.ndarray, labels: list[str], normal: str, threshold: float) -> np.ndarray:
    """Label index per row of (N, K) logits, by the rule in the module docstring."""
    logits = np.asarray(logits, dtype=np.float64)
    normal_index = labels.index(normal)
    cancer = cancer_probability(logits, labels, normal) >= threshold
    if logits.shape[1] == 1:
        return np.where(cancer, 1 - normal_index, normal_index)
    masked = logits.copy()
    masked[:, normal_index] = -np.inf
    return np.where(cancer, masked.argmax(axis=1), normal_index)


def explained_channel(decided: np.ndarray, binary: bool) -> np.ndarray:
    """The CAM channel that explains each decided label index (binary cards have one channel)."""
    return np.zeros_like(decided) if binary else decided


class Decider:
    def __init__(self, card: ModelCard) -> None:
        self.labels = list(card.labels)
        self.normal = card.normal_label
        self.threshold = card.threshold
        self.binary = card.task == "binary"

    def decide(self, logits: np.ndarray) -> Decision:
        """One image's logits, shape (K,), to its decision."""
        row = np.asarray(logits, dtype=np.float64)[None]
        p = float(cancer_probability(row, self.labels, self.normal)[0])
        label = self.labels[int(decide(row, self.labels, self.normal, self.threshold)[0])]
        if self.binary:
            probabilities = {name: (1.0 - p if name == self.normal else p) for name in self.labels}
        else:
            probabilities = dict(zip(self.labels, _softmax(row[0]).tolist(), strict=True))
        channel, sign = self.channel_for(label)
        return Decision(label, p, probabilities, channel, sign)

    def channel_for(self, label: str) -> tuple[int, float]:
        """The CAM channel and sign that show evidence for `label`; KeyError if it is no label."""
        if label not in self.labels:
            raise KeyError(label)
        if self.binary:
            return 0, (-1.0 if label == self.normal else 1.0)
        return self.labels.index(label), 1.0


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max())
    return z / z.sum()
