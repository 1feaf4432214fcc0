"""The OOD gate's fitting and judging (training.ood_fit) against cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")  # training.model, whose feature layout the multilayer blocks follow

from service.trust.ood import FeatureStats, OodScorer  # noqa: E402
from training.model import feature_slices  # noqa: E402
from training.ood_fit import (  # noqa: E402
    _ANY_RULE,
    KNN_BLOCK,
    MULTILAYER_BLOCKS,
    choose,
    fit_block,
    fit_neighbours,
    fit_stats,
    judge,
    ledoit_wolf,
    threshold_for,
)


def test_ledoit_wolf_barely_shrinks_plenty_of_data_and_keeps_too_little_invertible():
    rng = np.random.default_rng(0)
    plenty = rng.normal(size=(5000, 4)) * [1.0, 2.0, 3.0, 4.0]
    covariance, shrinkage = ledoit_wolf(plenty - plenty.mean(axis=0))
    assert 0.0 <= shrinkage < 0.05
    assert np.diag(covariance) == pytest.approx([1.0, 4.0, 9.0, 16.0], rel=0.1)
    few = rng.normal(size=(10, 50))  # fewer rows than dimensions: the sample covariance is singular
    covariance, shrinkage = ledoit_wolf(few - few.mean(axis=0))
    assert 0.0 < shrinkage <= 1.0
    assert np.linalg.eigvalsh(covariance).min() > 0


def test_a_fitted_block_puts_each_class_mean_at_distance_zero_and_scales_by_the_precision():
    rng = np.random.default_rng(1)
    targets = np.repeat([0, 1], 200)
    features = rng.normal(size=(400, 3)) + np.where(targets[:, None] == 1, 5.0, 0.0)
    block = fit_block(features, targets, 0, 3)
    assert block.means[0] == pytest.approx(features[targets == 0].mean(axis=0))
    assert block.means[1] == pytest.approx(features[targets == 1].mean(axis=0))
    scorer = OodScorer("mahalanobis", _ANY_RULE, FeatureStats((block,)))
    at_means = scorer(None, block.means)
    # float32 and the expanded quadratic leave ~1e-5 before the square root, a few thousandths after it
    assert at_means == pytest.approx([0.0, 0.0], abs=0.01)
    far, near = scorer(None, np.array([[20.0, 0.0, 0.0], [0.5, 0.0, 0.0]]))
    assert far > 10 > 1 > near  # unit-variance features: the distance is about the offset


def _features(n: int, seed: int) -> np.ndarray:
    width = max(stop for _, stop in feature_slices().values())
    return np.random.default_rng(seed).normal(size=(n, width))


def test_multilayer_scales_every_stage_to_a_median_validation_distance_of_one():
    train, val, targets = _features(120, 2), _features(40, 3), np.arange(120) % 2
    stats = fit_stats("multilayer", train, targets, val)
    slices = feature_slices()
    assert [(b.start, b.stop) for b in stats.blocks] == [slices[name] for name in MULTILAYER_BLOCKS]
    for block in stats.blocks:
        distances = OodScorer("mahalanobis", _ANY_RULE, FeatureStats((block,)))(None, val)
        assert np.median(distances) == pytest.approx(1.0, rel=1e-4)
    (last,) = fit_stats("mahalanobis", train, targets, val).blocks
    assert (last.start, last.stop) == slices["layer4"] and last.scale == 1.0
    assert fit_stats("energy", train, targets, val) is None and fit_stats("max_softmax", train, targets, val) is None


def test_knn_banks_the_training_images_own_block_at_unit_length_and_scores_them_zero():
    train, val, targets = _features(50, 4), _features(10, 5), np.arange(50) % 2
    stats = fit_stats("knn", train, targets, val)
    assert stats.blocks == () and stats.neighbours is not None
    start, stop = feature_slices()[KNN_BLOCK]
    assert (stats.neighbours.start, stats.neighbours.stop, stats.neighbours.k) == (start, stop, 1)
    assert stats.neighbours.bank.shape == (50, stop - start)
    assert np.linalg.norm(stats.neighbours.bank, axis=1) == pytest.approx(np.ones(50), abs=1e-6)
    scorer = OodScorer("knn", _ANY_RULE, stats)
    assert scorer(None, train) == pytest.approx(np.zeros(50), abs=1e-5)  # each is its own nearest
    assert np.all(scorer(None, val) > 0.05)  # unrelated random vectors are not


def test_a_bank_past_its_cap_is_a_fixed_subset_of_the_training_rows(monkeypatch):
    monkeypatch.setattr("training.ood_fit.KNN_MAX_BANK", 8)
    train = _features(30, 6)
    first, again = fit_neighbours(train, 0, 5), fit_neighbours(train, 0, 5)
    assert first.bank.shape == (8, 5) and np.array_equal(first.bank, again.bank)
    units = train[:, :5] / np.linalg.norm(train[:, :5], axis=1, keepdims=True)
    matches = [int(np.argmin(np.abs(units - row).sum(axis=1))) for row in first.bank]
    assert len(set(matches)) == 8 and matches == sorted(matches)  # eight distinct rows, in their order
    assert np.abs(units[matches] - first.bank).max() < 1e-6


@pytest.mark.parametrize("count", [20, 48, 101])
def test_the_threshold_is_an_observed_score_that_flags_at_most_the_allowed_share(count):
    scores = np.random.default_rng(count).normal(size=count)
    threshold = threshold_for(scores, 0.05)
    assert threshold in scores
    assert np.mean(scores > threshold) <= 0.05
    assert np.mean(scores >= threshold) > 0.05  # and no higher observed score would do


def test_judge_gives_each_sets_auroc_and_flagged_share_and_weighs_kinds_by_images():
    val = np.arange(20, dtype=float)  # threshold: 18 (one of twenty above it)
    test = np.array([0.0, 1.0, 2.0, 19.0])
    sets = {
        "photographs": ("far", np.array([30.0, 30.0, 30.0, 30.0])),  # above every test score, all flagged
        "patterns": ("far", np.array([0.5, 40.0])),  # one of two flagged; 0.5 beats 1 of 4 test scores, 40 all 4
        "ct_inverted": ("near", np.array([19.0, 1.0])),
    }
    judged = judge(val, test, sets, 0.05)
    assert judged["threshold"] == 18.0
    assert judged["val_flagged"] == pytest.approx(0.05) and judged["test_flagged"] == pytest.approx(0.25)
    assert judged["sets"]["photographs"] == {"kind": "far", "images": 4, "auroc": 1.0, "flagged": 1.0}
    assert judged["sets"]["patterns"]["auroc"] == pytest.approx((1 + 4) / 8)
    assert judged["by_kind"]["far"] == {"auroc_min": pytest.approx(5 / 8), "flagged": pytest.approx(5 / 6)}
    assert judged["by_kind"]["near"]["flagged"] == pytest.approx(0.5)
    assert "domain" not in judged["by_kind"]


def _judged(**methods: tuple[float, float]) -> dict:
    """method -> (worst AUROC, flagged) on far and domain alike; near is never a choice kind."""
    return {
        m: {
            "by_kind": {
                "far": {"auroc_min": auroc, "flagged": flagged},
                "domain": {"auroc_min": auroc, "flagged": flagged},
                "near": {"auroc_min": 1.0 - auroc, "flagged": 1.0},
            }
        }
        for m, (auroc, flagged) in methods.items()
    }


def test_choose_takes_the_named_method_or_the_best_worst_case_auroc():
    judged = _judged(mahalanobis=(0.90, 0.9), multilayer=(0.95, 0.6), energy=(0.70, 1.0))
    assert choose(judged, "energy") == "energy"
    assert choose(judged, "auto") == "multilayer"
    judged["multilayer"]["by_kind"]["domain"]["auroc_min"] = 0.5  # its worst kind now decides
    assert choose(judged, "auto") == "mahalanobis"


def test_a_tie_in_auroc_goes_to_the_method_that_flags_more_then_to_the_earlier_method():
    assert choose(_judged(mahalanobis=(1.0, 0.93), multilayer=(1.0, 0.98)), "auto") == "multilayer"
    assert choose(_judged(mahalanobis=(1.0, 0.98), multilayer=(1.0, 0.98)), "auto") == "mahalanobis"
    # knn comes last: a synthetic model that every feature score separates perfectly keeps multilayer
    assert choose(_judged(multilayer=(1.0, 1.0), knn=(1.0, 1.0)), "auto") == "multilayer"
    assert choose(_judged(multilayer=(0.89, 0.5), knn=(0.97, 0.88)), "auto") == "knn"  # the real model
