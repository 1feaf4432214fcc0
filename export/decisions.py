"""The card's decision rule over a batch of logits, in numpy (the gates compare decisions, not just numbers).

p = P(not normal): sigmoid(logit) for one logit, 1 - softmax[normal] otherwise. The label is the most
probable cancer class when p >= threshold, else normal. Same rule as service.decision (per image)
and training.evaluate; one shared batch implementation should replace the three.
"""

from __future__ import annotations

import numpy as np


def cancer_probability(logits: np.ndarray, labels: list[str], normal: str) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[1] == 1:
        # Split by sign so exp never overflows.
        z = np.exp(-np.abs(logits[:, 0]))
        return np.where(logits[:, 0] >= 0, 1.0 / (1.0 + z), z / (1.0 + z))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return 1.0 - shifted[:, labels.index(normal)] / shifted.sum(axis=1)


def decide(logits: np.ndarray, labels: list[str], normal: str, threshold: float) -> np.ndarray:
    """Label index per row."""
    logits = np.asarray(logits, dtype=np.float64)
    normal_index = labels.index(normal)
    cancer = cancer_probability(logits, labels, normal) >= threshold
    if logits.shape[1] == 1:
        return np.where(cancer, 1 - normal_index, normal_index)
    masked = logits.copy()
    masked[:, normal_index] = -np.inf
    return np.where(cancer, masked.argmax(axis=1), normal_index)


def explained_channel(decided: np.ndarray, task: str) -> np.ndarray:
    """The cam channel that shows the evidence for each decision (service.decision's choice)."""
    return np.zeros_like(decided) if task == "binary" else decided


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Mann-Whitney AUC with ties counted half; None when only one class is present."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    # Average rank of each distinct score, so tied scores share their rank.
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
