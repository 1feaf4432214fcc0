"""Metric arithmetic against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import binary_metrics, bootstrap_intervals, choose_threshold, roc_auc


def test_auc_counts_ties_half_and_handles_one_class():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_binary_metrics_from_a_known_confusion():
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    score = np.array([0.9, 0.8, 0.2, 0.1, 0.7, 0.3, 0.2, 0.6])
    m = binary_metrics(truth, score, 0.5)  # tp 3, fn 1, fp 1, tn 3
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)


@pytest.mark.parametrize("rule", ["youden", "max_f1", "sensitivity:0.9"])
def test_threshold_separates_a_separable_validation_set(rule):
    truth = np.array([0, 0, 0, 1, 1, 1])
    score = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    threshold = choose_threshold(truth, score, rule)
    assert 0.3 < threshold <= 0.6
    assert binary_metrics(truth, score, threshold)["accuracy"] == 1.0


def test_sensitivity_rule_meets_its_floor():
    truth = np.array([0, 0, 1, 0, 1, 1, 1])
    score = np.array([0.1, 0.5, 0.2, 0.6, 0.7, 0.8, 0.9])
    threshold = choose_threshold(truth, score, "sensitivity:1.0")
    assert binary_metrics(truth, score, threshold)["recall"] == 1.0


def test_bootstrap_interval_brackets_the_point_value():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    score = np.clip(truth * 0.3 + rng.random(200) * 0.7, 0, 1)
    result = bootstrap_intervals(truth, score, 0.5, rounds=200, seed=1)
    for name, value in result.items():
        assert value["ci95_low"] <= value["value"] <= value["ci95_high"], name
    assert result["accuracy"]["ci95_high"] - result["accuracy"]["ci95_low"] > 0.01


def test_auc_ties_share_their_rank():
    positive = np.array([True, True, False, False])
    assert roc_auc(positive, np.array([0.9, 0.8, 0.2, 0.1])) == 1.0
    assert roc_auc(positive, np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert roc_auc(positive, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert roc_auc(positive, np.array([0.9, 0.5, 0.5, 0.1])) == pytest.approx(0.875)
    assert np.isnan(roc_auc(np.array([True, True]), np.array([0.3, 0.4])))


def test_expected_calibration_error() -> None:
    from training.metrics import expected_calibration_error

    # Calibrated: in the 0.2 bin 2 of 10 are positive, in the 0.8 bin 8 of 10.
    p = np.r_[np.full(10, 0.2), np.full(10, 0.8)]
    y = np.r_[np.arange(10) < 2, np.arange(10) < 8]
    assert expected_calibration_error(y, p) == pytest.approx(0.0)
    # Over-confident: says 0.95 where half are positive -> |0.5 - 0.95| everywhere.
    assert expected_calibration_error(np.arange(20) % 2 == 0, np.full(20, 0.95)) == pytest.approx(0.45)
    assert expected_calibration_error(np.array([1.0]), np.array([1.0])) == 0.0  # p = 1 falls in the last bin


def test_per_image_thresholds_match_one_threshold_when_equal_and_apply_per_image():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 100)
    score = np.clip(truth * 0.3 + rng.random(100) * 0.7, 0, 1)
    one = bootstrap_intervals(truth, score, 0.5, rounds=50, seed=1)
    assert bootstrap_intervals(truth, score, np.full(100, 0.5), rounds=50, seed=1) == one
    thresholds = np.where(np.arange(100) < 50, 0.0, 1.1)  # first half all called cancer, second half none
    result = bootstrap_intervals(truth, score, thresholds, rounds=10, seed=1)
    expected = (truth[:50].sum() + (1 - truth[50:]).sum()) / 100
    assert result["accuracy"]["value"] == pytest.approx(expected)


def test_cluster_bootstrap_moves_a_clusters_rows_together():
    # every image twice (two repeats of a cross-validation): resampling images as clusters gives exactly
    # the intervals of the images alone, where resampling rows would pretend to twice the evidence
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 2, 80)
    score = np.clip(truth * 0.3 + rng.random(80) * 0.7, 0, 1)
    alone = bootstrap_intervals(truth, score, 0.5, rounds=100, seed=3)
    twice = bootstrap_intervals(
        np.r_[truth, truth], np.r_[score, score], 0.5, rounds=100, seed=3, clusters=np.r_[np.arange(80), np.arange(80)]
    )
    for name, value in alone.items():
        assert twice[name] == pytest.approx(value), name
    rows = bootstrap_intervals(np.r_[truth, truth], np.r_[score, score], 0.5, rounds=100, seed=3)
    width = rows["accuracy"]["ci95_high"] - rows["accuracy"]["ci95_low"]
    assert width < alone["accuracy"]["ci95_high"] - alone["accuracy"]["ci95_low"]
