"""Stratified, grouped assignment of images to parts (cross-validation folds, a fold's validation carve):
a near-duplicate group always lands whole in one part, and each class is spread over the parts in
proportion to their shares."""

from __future__ import annotations

import numpy as np


class FoldError(ValueError):
    pass


def grouped_parts(targets: np.ndarray, groups: np.ndarray, shares: list[float], rng: np.random.Generator) -> np.ndarray:
    """The part index of every image. Groups are placed largest first (equal sizes in `rng`'s order), each
    into the part whose share of the group's classes is the least filled so far (ties: the part least
    filled overall, then the first). A class spread over at least as many groups as there are parts
    reaches every part."""
    targets, shares = np.asarray(targets), np.asarray(shares, dtype=np.float64)
    ids, group_of = np.unique(np.asarray(groups), return_inverse=True)
    classes = int(targets.max()) + 1
    counts = np.zeros((len(ids), classes))  # images of each class in each group
    np.add.at(counts, (group_of, targets), 1)
    per_class = counts.sum(axis=0)
    _check(counts, per_class, len(shares))
    want = shares[:, None] * per_class[None, :]  # (parts, classes)
    filled = np.zeros_like(want)
    order = rng.permutation(len(ids))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    part_of_group = np.empty(len(ids), dtype=np.int64)
    for g in order:
        mine = counts[g] > 0
        class_fill = (filled[:, mine] / want[:, mine]).sum(axis=1)
        overall = filled.sum(axis=1) / want.sum(axis=1)
        part = int(np.lexsort((np.arange(len(shares)), overall, class_fill))[0])
        filled[part] += counts[g]
        part_of_group[g] = part
    return part_of_group[group_of]


def _check(counts: np.ndarray, per_class: np.ndarray, parts: int) -> None:
    groups_per_class = (counts > 0).sum(axis=0)
    short = [c for c in range(len(per_class)) if 0 < groups_per_class[c] < parts]
    if short:
        detail = ", ".join(f"class {c}: {groups_per_class[c]} group(s)" for c in short)
        raise FoldError(f"{parts} parts need at least {parts} near-duplicate groups per class ({detail})")


def kfold(targets: np.ndarray, groups: np.ndarray, folds: int, seed: int, repeat: int) -> np.ndarray:
    """The fold (0..folds-1) of every image in one repeat; repeats reshuffle (seeded by seed and repeat)."""
    return grouped_parts(targets, groups, [1.0 / folds] * folds, np.random.default_rng([seed, repeat]))


def carve_validation(
    targets: np.ndarray, groups: np.ndarray, share: float, seed: int, repeat: int, fold: int
) -> np.ndarray:
    """True for the images of a fold's training part that become its validation split (about `share`)."""
    rng = np.random.default_rng([seed, repeat, fold, 1])
    return grouped_parts(targets, groups, [1.0 - share, share], rng) == 1
