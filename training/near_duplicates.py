"""Near-duplicate groups: images so alike that one in training and the other in validation or test
would let the model be scored on what it has already seen.

The Kaggle set holds the same slice several times (re-encoded, resized, with or without an annotation
line) and neighbouring slices of one patient. Exact copies are collapsed by pixel hash before this;
here every image gets a fingerprint (its 16x16 box-downsampled thumbnail, standardised to mean 0 and
standard deviation 1, so a change of window or brightness does not hide a copy) and images whose
fingerprints lie within `max_distance` (root-mean-square difference: 0 for the same picture, about 1.4
for unrelated ones) are joined, transitively, into one group. ingest keeps each group inside one split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

SIDE = 16
_BLOCK = 512  # rows of the distance matrix computed at a time (memory stays at _BLOCK x N floats)


def fingerprint(grey: Image.Image) -> np.ndarray:
    small = np.asarray(grey.resize((SIDE, SIDE), Image.Resampling.BOX), dtype=np.float32).ravel()
    return (small - small.mean()) / (small.std() + 1e-6)


@dataclass(frozen=True)
class Grouping:
    group: np.ndarray  # (N,) group index of each image; groups are numbered from 0 by their first image
    pairs: list[tuple[int, int, float]]  # every joined pair (i < j) with its distance

    @property
    def merged(self) -> int:
        """Groups of more than one image."""
        return int((np.bincount(self.group) > 1).sum()) if len(self.group) else 0

    def summary(self, max_distance: float) -> dict:
        sizes = np.bincount(self.group) if len(self.group) else np.zeros(0, int)
        return {
            "max_distance": max_distance,
            "images": int(len(self.group)),
            "groups": int(len(sizes)),
            "merged_groups": self.merged,
            "images_in_merged_groups": int(sizes[sizes > 1].sum()),
            "largest_group": int(sizes.max()) if len(sizes) else 0,
        }


def distances_from(prints: np.ndarray, rows: slice) -> np.ndarray:
    """RMS distance of fingerprints `rows` to every fingerprint."""
    block = prints[rows]
    squared = (block**2).sum(1)[:, None] + (prints**2).sum(1)[None, :] - 2.0 * block @ prints.T
    return np.sqrt(np.maximum(squared, 0.0) / prints.shape[1])


def group(prints: np.ndarray, max_distance: float) -> Grouping:
    """Join every pair within `max_distance` (union-find); max_distance <= 0 groups nothing."""
    n = len(prints)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    pairs: list[tuple[int, int, float]] = []
    if max_distance > 0:
        for start in range(0, n, _BLOCK):
            d = distances_from(prints, slice(start, start + _BLOCK))
            for a, j in zip(*np.nonzero(d <= max_distance), strict=True):
                i = start + int(a)
                if i < j:
                    pairs.append((i, int(j), float(d[a, j])))
                    parent[root(i)] = root(int(j))
    roots = [root(i) for i in range(n)]
    numbering: dict[int, int] = {}
    return Grouping(np.array([numbering.setdefault(r, len(numbering)) for r in roots], dtype=int), pairs)


def nearest_unjoined(prints: np.ndarray, grouping: Grouping, count: int) -> list[tuple[int, int, float]]:
    """The `count` closest pairs in different groups: what the threshold just missed (for the plot)."""
    best: list[tuple[int, int, float]] = []
    for start in range(0, len(prints), _BLOCK):
        d = distances_from(prints, slice(start, start + _BLOCK))
        for a in range(d.shape[0]):
            i = start + a
            row = np.where(grouping.group == grouping.group[i], np.inf, d[a])
            row[: i + 1] = np.inf
            j = int(np.argmin(row)) if len(row) else 0
            if len(row) and np.isfinite(row[j]):
                best.append((i, j, float(row[j])))
        best = sorted(best, key=lambda p: p[2])[:count]
    return best
