"""Classification metrics in numpy: cancer is the positive class, p = P(not normal)."""

from __future__ import annotations

import numpy as np


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, tied scores share their rank); nan with one class only."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), thresholds descending."""
    positive = np.asarray(positive, dtype=bool)
    thresholds = np.unique(score)[::-1]
    tpr = np.array([(score[positive] >= t).mean() for t in thresholds])
    fpr = np.array([(score[~positive] >= t).mean() for t in thresholds])
    return np.r_[0.0, fpr], np.r_[0.0, tpr], np.r_[np.inf, thresholds]


def binary_metrics(positive: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    positive = np.asarray(positive, dtype=bool)
    predicted = np.asarray(score) >= threshold
    tp = float((predicted & positive).sum())
    tn = float((~predicted & ~positive).sum())
    fp = float((predicted & ~positive).sum())
    fn = float((~predicted & positive).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": (tp + tn) / len(positive),
        "precision": precision,
        "recall": recall,
        "specificity": tn / (tn + fp) if tn + fp else 0.0,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "roc_auc": roc_auc(positive, score),
    }


def choose_threshold(positive: np.ndarray, score: np.ndarray, rule: str) -> float:
    """The decision threshold on validation scores: youden | max_f1 | sensitivity:<min recall>."""
    candidates = np.unique(score)
    if len(candidates) == 0:
        raise ValueError("no validation scores to choose a threshold from")

    def quality(t: float) -> float:
        m = binary_metrics(positive, score, t)
        if rule == "youden":
            return m["recall"] + m["specificity"] - 1.0
        if rule == "max_f1":
            return m["f1"]
        minimum = float(rule.split(":", 1)[1])
        # meet the sensitivity floor, then be as specific as possible
        return m["specificity"] if m["recall"] >= minimum else -1.0 + m["recall"]

    scores = [quality(t) for t in candidates]
    best = int(np.argmax(scores))
    # midpoint to the next lower score keeps the same validation decisions but generalises better
    lower = candidates[best - 1] if best > 0 else 0.0
    return float(np.clip((candidates[best] + lower) / 2.0, 1e-6, 1 - 1e-6))


def bootstrap_intervals(
    positive: np.ndarray,
    score: np.ndarray,
    threshold: float | np.ndarray,
    rounds: int,
    seed: int,
    extra=None,
    clusters: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Each metric with its percentile 95% interval over `rounds` stratified resamples of the test set.

    `threshold` is one number or one per image (pooled cross-validation folds each chose their own).
    `extra(indices) -> dict` adds task-specific metrics computed on the same resamples. `clusters` (one id
    per image) resamples whole clusters instead of images, stratified by each cluster's first image: rows
    that are not independent (near-duplicates, an image scored once per repeat) then move together.
    """
    positive = np.asarray(positive, dtype=bool)
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float64), positive.shape)
    rng = np.random.default_rng(seed)
    draw = _stratified_draw(positive, clusters, rng)

    def metrics_at(indices: np.ndarray) -> dict[str, float]:
        values = binary_metrics(positive[indices], score[indices], thresholds[indices])
        if extra is not None:
            values.update(extra(indices))
        return values

    point = metrics_at(np.arange(len(positive)))
    samples: dict[str, list[float]] = {name: [] for name in point}
    for _ in range(rounds):
        for name, value in metrics_at(draw()).items():
            samples[name].append(value)
    return {
        name: {
            "value": point[name],
            "ci95_low": float(np.nanpercentile(samples[name], 2.5)),
            "ci95_high": float(np.nanpercentile(samples[name], 97.5)),
        }
        for name in point
    }


def _stratified_draw(positive: np.ndarray, clusters: np.ndarray | None, rng: np.random.Generator):
    """A function returning one resample's row indices: as many positives and negatives (or positive and
    negative clusters) as there are, drawn with replacement."""
    if clusters is None:
        pos_idx, neg_idx = np.flatnonzero(positive), np.flatnonzero(~positive)
        return lambda: np.concatenate([rng.choice(pos_idx, len(pos_idx)), rng.choice(neg_idx, len(neg_idx))])
    _, first, inverse = np.unique(np.asarray(clusters), return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(inverse))[:-1])  # rows of each cluster
    pos_c, neg_c = np.flatnonzero(positive[first]), np.flatnonzero(~positive[first])

    def draw() -> np.ndarray:
        chosen = np.concatenate([rng.choice(pos_c, len(pos_c)), rng.choice(neg_c, len(neg_c))])
        return np.concatenate([members[c] for c in chosen])

    return draw


def reliability_rows(positive: np.ndarray, probability: np.ndarray, bins: int = 10) -> list[dict]:
    """Per equal-width probability bin holding images: the mean predicted P(not normal), the observed
    cancer rate and the count (a reliability diagram's points)."""
    positive = np.asarray(positive, dtype=np.float64)
    probability = np.asarray(probability, dtype=np.float64)
    which = np.minimum((probability * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        members = which == b
        if members.any():
            rows.append(
                {
                    "predicted": float(probability[members].mean()),
                    "observed": float(positive[members].mean()),
                    "count": int(members.sum()),
                }
            )
    return rows


def expected_calibration_error(positive: np.ndarray, probability: np.ndarray, bins: int = 10) -> float:
    """ECE of P(not normal): the mean |observed cancer rate - mean predicted probability| over `bins`
    equal-width probability bins, weighted by how many images fall in each (0 = perfectly calibrated)."""
    rows = reliability_rows(positive, probability, bins)
    if not rows:
        return float("nan")
    return float(sum(r["count"] * abs(r["observed"] - r["predicted"]) for r in rows) / sum(r["count"] for r in rows))
