"""Grouped, stratified fold assignment: groups stay whole, classes spread evenly, repeats reshuffle."""

from __future__ import annotations

import numpy as np
import pytest

from training.folds import FoldError, carve_validation, grouped_parts, kfold


def dataset(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """300 images, 3 classes in unequal numbers; a few near-duplicate groups of 2 to 12 images."""
    rng = np.random.default_rng(seed)
    targets = np.repeat([0, 1, 2], [60, 150, 90])
    groups = np.array([f"img{i}" for i in range(len(targets))], dtype=object)
    start = 0
    for size in (12, 8, 5, 5, 3, 2, 2):
        label_rows = np.flatnonzero(targets == rng.integers(0, 3))
        rows = label_rows[start : start + size]
        groups[rows] = f"group{size}-{start}"
        start += size
    return targets, groups


def test_groups_never_straddle_folds_and_classes_spread_evenly() -> None:
    targets, groups = dataset()
    fold_of = kfold(targets, groups, folds=5, seed=0, repeat=0)
    for g in set(groups):
        assert len(set(fold_of[groups == g])) == 1, g
    for label in range(3):
        per_fold = np.bincount(fold_of[targets == label], minlength=5)
        assert per_fold.max() - per_fold.min() <= 2, (label, per_fold)
    sizes = np.bincount(fold_of, minlength=5)
    assert sizes.min() >= 58 and sizes.max() <= 62, sizes


def test_repeats_reshuffle_and_a_repeat_is_reproducible() -> None:
    targets, groups = dataset()
    first = kfold(targets, groups, 5, seed=0, repeat=0)
    assert np.array_equal(first, kfold(targets, groups, 5, seed=0, repeat=0))
    # fold numbers are arbitrary: compare who is held out with whom
    together = first[:, None] == first[None, :]
    for other in (kfold(targets, groups, 5, seed=0, repeat=1), kfold(targets, groups, 5, seed=1, repeat=0)):
        assert (together != (other[:, None] == other[None, :])).mean() > 0.2


def test_validation_carve_is_grouped_stratified_and_about_its_share() -> None:
    targets, groups = dataset()
    fold_of = kfold(targets, groups, 5, seed=0, repeat=0)
    rest = fold_of != 0
    is_val = carve_validation(targets[rest], groups[rest], 0.15 / 0.85, seed=0, repeat=0, fold=0)
    assert 0.14 < is_val.mean() < 0.22
    for label in range(3):
        assert is_val[targets[rest] == label].any() and (~is_val[targets[rest] == label]).any()
    for g in set(groups[rest]):
        assert len(set(is_val[groups[rest] == g])) == 1, g


def test_mixed_label_groups_are_kept_whole() -> None:
    targets = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    groups = np.array(["a", "a", "b", "c", "d", "e", "f", "g", "h", "i"])
    parts = grouped_parts(targets, groups, [0.5, 0.5], np.random.default_rng(0))
    assert parts[0] == parts[1]
    assert set(np.bincount(parts)) == {5}


def test_a_class_in_fewer_groups_than_folds_is_refused_with_the_count() -> None:
    targets = np.array([0] * 10 + [1] * 4)
    groups = np.array([f"n{i}" for i in range(10)] + ["x", "x", "y", "y"])
    with pytest.raises(FoldError, match=r"3 parts need at least 3 near-duplicate groups per class \(class 1: 2"):
        kfold(targets, groups, 3, seed=0, repeat=0)
