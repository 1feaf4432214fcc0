"""Logits -> probabilities -> label, by the card's one decision rule.

probability = P(not normal): sigmoid(logit) for a binary card, 1 - softmax[normal] for a multiclass
one. If probability >= threshold the label is the most probable cancer label, otherwise the normal
label. The heatmap shows evidence for the decided label: the decided class's CAM channel; for a
binary card's "normal" decision that is the single channel negated (evidence against cancer).
"""

from __future__ import annotations

import math
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


class Decider:
    def __init__(self, card: ModelCard) -> None:
        self.labels = list(card.labels)
        self.normal = card.normal_label
        self.threshold = card.threshold
        self.binary = card.task == "binary"
        self.cancer = card.cancer_labels

    def decide(self, logits: np.ndarray) -> Decision:
        """One image's logits, shape (K,), to its decision."""
        if self.binary:
            p = _sigmoid(float(logits[0]))
            probabilities = {label: (1.0 - p if label == self.normal else p) for label in self.labels}
            label = self.cancer[0] if p >= self.threshold else self.normal
        else:
            soft = _softmax(logits)
            probabilities = dict(zip(self.labels, soft.tolist(), strict=True))
            p = 1.0 - probabilities[self.normal]
            label = max(self.cancer, key=probabilities.__getitem__) if p >= self.threshold else self.normal
        channel, sign = self.channel_for(label)
        return Decision(label, p, probabilities, channel, sign)

    def channel_for(self, label: str) -> tuple[int, float]:
        """The CAM channel and sign that show evidence for `label`; KeyError if it is no label."""
        if label not in self.labels:
            raise KeyError(label)
        if self.binary:
            return 0, (-1.0 if label == self.normal else 1.0)
        return self.labels.index(label), 1.0


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max())
    return z / z.sum()
