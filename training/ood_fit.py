"""Fitting and judging the OOD gate, in numpy: feature statistics, thresholds on validation, AUROC and
flagged share per OOD set, and the choice of method."""

from __future__ import annotations

import dataclasses

import numpy as np

from service.inference.decision import DecisionRule
from service.trust.ood import METHODS, Block, FeatureStats, Neighbours, OodScorer
from training.metrics import roc_auc
from training.model import feature_slices
from training.ood_sets import KINDS

# The stages whose texture statistics the multilayer method reads: on real and synthetic models alike the
# first three separated non-CT images best; the last stage adds class information, not strangeness.
MULTILAYER_BLOCKS = ("layer1", "layer2", "layer3")
# knn reads the first stage's channel means and standard deviations (128-d), the nearest training image.
# Measured on the real binary model (2026-12-07): against the test split, photographs AUROC 0.993 on layer1
# (0.995 layer2, 0.86 layer3, 0.86 layer4), but the other domain 0.967 on layer1 against 0.75 on layer2;
# concatenating stages, whitening, centring or k = 3..10 each lost on one kind or another.
KNN_BLOCK, KNN_K = "layer1", 1
# At most this many training images in knn's bank: 4096 x 128 float32 is 2 MB in the card's statistics
# file and about 0.5 MFLOP a request. Above it, a fixed random subset (the threshold is set against it).
KNN_MAX_BANK = 4096
_ANY_RULE = DecisionRule("binary", ("normal", "cancer"), "normal")  # feature scores ignore the rule

# The kinds a method is chosen on: images that are not chest CT at all. Mangled CT (`near`) is reported,
# not optimised for: no gate should be tuned to call a rotated chest CT foreign.
CHOICE_KINDS = ("far", "modality", "domain")


def fit_block(features: np.ndarray, targets: np.ndarray, start: int, stop: int) -> Block:
    """Class means of one feature block and the precision of the covariance the classes share, shrunk
    towards a scaled identity by the Ledoit-Wolf estimate (hundreds of dimensions from a few hundred
    images are singular without it)."""
    block = np.asarray(features, dtype=np.float64)[:, start:stop]
    classes = np.unique(targets)
    means = np.stack([block[targets == c].mean(axis=0) for c in classes])
    covariance, _ = ledoit_wolf(block - means[np.searchsorted(classes, targets)])
    return Block(start, stop, means, np.linalg.inv(covariance))


def fit_stats(method: str, train: np.ndarray, targets: np.ndarray, val: np.ndarray) -> FeatureStats | None:
    """The statistics a feature method needs (None for the logit methods). mahalanobis: the last stage's
    pooled features; multilayer: the earlier stages, each scaled by its median validation distance so
    that every stage weighs alike; knn: the training images' KNN_BLOCK statistics, each of unit length."""
    slices = feature_slices()
    if method == "knn":
        return FeatureStats(neighbours=fit_neighbours(train, *slices[KNN_BLOCK]))
    if method == "mahalanobis":
        return FeatureStats((fit_block(train, targets, *slices["layer4"]),))
    if method != "multilayer":
        return None
    blocks = []
    for name in MULTILAYER_BLOCKS:
        block = fit_block(train, targets, *slices[name])
        typical = float(np.median(OodScorer("mahalanobis", _ANY_RULE, FeatureStats((block,)))(None, val)))
        blocks.append(dataclasses.replace(block, scale=max(typical, 1e-9)))
    return FeatureStats(tuple(blocks))


def fit_neighbours(features: np.ndarray, start: int, stop: int, k: int = KNN_K) -> Neighbours:
    """The bank knn compares against: one block of the training features, rows scaled to unit length,
    KNN_MAX_BANK of them at most (a fixed random subset, so that a refit on the same data is the same)."""
    block = np.asarray(features, dtype=np.float64)[:, start:stop]
    if len(block) > KNN_MAX_BANK:
        block = block[np.sort(np.random.default_rng(0).choice(len(block), KNN_MAX_BANK, replace=False))]
    length = np.linalg.norm(block, axis=1, keepdims=True)
    return Neighbours(start, stop, (block / np.maximum(length, 1e-12)).astype(np.float32), k)


def ledoit_wolf(centred: np.ndarray) -> tuple[np.ndarray, float]:
    """(shrunk covariance, shrinkage) of zero-mean rows: (1 - s) S + s mu I, Ledoit & Wolf (2004)."""
    n, d = centred.shape
    sample = centred.T @ centred / n
    mu = np.trace(sample) / d
    target_distance = np.sum((sample - mu * np.eye(d)) ** 2) / d
    squares = centred**2
    beta = np.sum(squares.T @ squares / n - sample**2) / (d * n)
    shrinkage = 1.0 if target_distance <= 0 else float(min(beta, target_distance) / target_distance)
    return (1.0 - shrinkage) * sample + shrinkage * mu * np.eye(d), shrinkage


def threshold_for(val_scores: np.ndarray, max_false_abstain: float) -> float:
    """The smallest observed validation score with at most `max_false_abstain` of validation above it
    (images score above the threshold to be flagged). Counted exactly: a quantile with "higher"
    interpolation lands one score too high whenever n x max_false_abstain is a whole number (of 20
    scores at 0.05 it flagged none, where one is allowed)."""
    ordered = np.sort(np.asarray(val_scores, dtype=np.float64))
    allowed_above = int(np.floor(len(ordered) * max_false_abstain + 1e-9))
    return float(ordered[max(len(ordered) - 1 - allowed_above, 0)])


def judge(val: np.ndarray, test: np.ndarray, sets: dict[str, tuple[str, np.ndarray]], max_false_abstain: float) -> dict:
    """One method's threshold (on validation) and, per OOD set, the AUROC against the test split and the
    share it flags. `sets`: name -> (kind, scores)."""
    threshold = threshold_for(val, max_false_abstain)
    per_set = {
        name: {
            "kind": kind,
            "images": int(len(scores)),
            "auroc": roc_auc(np.r_[np.zeros(len(test), bool), np.ones(len(scores), bool)], np.r_[test, scores]),
            "flagged": float(np.mean(scores > threshold)),
        }
        for name, (kind, scores) in sets.items()
    }
    by_kind = {}
    for kind in KINDS:
        rows = [r for r in per_set.values() if r["kind"] == kind]
        if rows:
            flagged = sum(r["flagged"] * r["images"] for r in rows) / sum(r["images"] for r in rows)
            by_kind[kind] = {"auroc_min": min(r["auroc"] for r in rows), "flagged": flagged}
    return {
        "threshold": threshold,
        "val_flagged": float(np.mean(val > threshold)),
        "test_flagged": float(np.mean(test > threshold)),
        "sets": per_set,
        "by_kind": by_kind,
    }


def choose(judged: dict[str, dict], wanted: str) -> str:
    """`wanted`, or for "auto" the method with the best worst-case AUROC on CHOICE_KINDS. A tie (every
    method that separates an easy model's sets perfectly scores 1.0) goes to the one whose threshold flags
    the larger worst-case share of those kinds, which is what the gate does with the images; then to the
    earlier of METHODS."""
    if wanted != "auto":
        return wanted

    def merit(method: str) -> tuple[float, float, int]:
        kinds = [row for kind, row in judged[method]["by_kind"].items() if kind in CHOICE_KINDS]
        worst_auroc = min(row["auroc_min"] for row in kinds)
        worst_flagged = min(row["flagged"] for row in kinds)
        return worst_auroc, worst_flagged, -METHODS.index(method)

    return max((m for m in METHODS if m in judged), key=merit)
