"""Drift: how far the recent inputs and answers have moved from the training split's.

The card carries a reference distribution per feature (service.card.DriftReference): the preprocessed
input's grey-level histogram, the OOD score and the calibrated P(not normal). The service keeps the
last requests in a window bounded by count and by age and reports the population stability index
(PSI) of each feature against its reference; 0.1 is a small shift, above 0.25 a large one. The export
stage builds the references with these same functions, so both sides bin alike.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from service.card import DriftFeature, DriftReference, InputSpec

GREY, OOD_SCORE, PROBABILITY = "grey_level", "ood_score", "probability"
FEATURES = (GREY, OOD_SCORE, PROBABILITY)
_FLOOR = 1e-4  # an empty bin counts as this share, so PSI stays finite


def bin_shares(values: np.ndarray, cuts: list[float] | np.ndarray) -> np.ndarray:
    """The share of `values` in each of the len(cuts) + 1 bins (bin i holds cuts[i-1] <= v < cuts[i])."""
    values = np.asarray(values, dtype=np.float64).ravel()
    counts = np.bincount(np.searchsorted(cuts, values, side="right"), minlength=len(cuts) + 1)
    return counts / max(len(values), 1)


GREY_STRIDE = 4  # every 4th pixel of every 4th row: 1/16 of the input estimates its histogram in ~10 µs


def grey_shares(tensor: np.ndarray, spec: InputSpec, cuts: list[float] | np.ndarray) -> np.ndarray:
    """The grey-level histogram (bin shares) of a preprocessed (1, S, S) input, back on the 0..1 grey
    scale; the letterbox padding is part of the input and counts too."""
    pixels = np.asarray(tensor, dtype=np.float32)[..., ::GREY_STRIDE, ::GREY_STRIDE]
    return bin_shares(pixels * np.float32(spec.std) + np.float32(spec.mean), cuts)


def grey_cuts(bins: int) -> list[float]:
    return [round(i / bins, 6) for i in range(1, bins)]


def quantile_cuts(values: np.ndarray, bins: int) -> list[float]:
    """Cuts that split the reference into `bins` equal shares (fewer where values tie)."""
    cuts = np.quantile(np.asarray(values, dtype=np.float64), np.arange(1, bins) / bins)
    return [float(c) for c in np.unique(cuts)]


def reference_feature(shares_per_image: np.ndarray, cuts: list[float]) -> DriftFeature:
    """The mean per-image bin shares (N, bins) as a card feature."""
    return DriftFeature(cuts=cuts, reference=[float(s) for s in np.mean(shares_per_image, axis=0)])


def scalar_reference(values: np.ndarray, bins: int) -> DriftFeature:
    """Equal-frequency bins of a per-image scalar (OOD score, probability) and their shares."""
    cuts = quantile_cuts(values, bins)
    return DriftFeature(cuts=cuts, reference=[float(s) for s in bin_shares(values, cuts)])


def psi(actual: np.ndarray, reference: np.ndarray) -> float:
    """Population stability index: sum((a - r) * ln(a / r)) over bins, empty bins floored."""
    a = np.maximum(np.asarray(actual, dtype=np.float64), _FLOOR)
    r = np.maximum(np.asarray(reference, dtype=np.float64), _FLOOR)
    return float(np.sum((a - r) * np.log(a / r)))


class DriftWindow:
    """The last `max_count` observations no older than `max_age_s`, as running bin sums per feature.

    Observing costs a bin lookup and a few additions; PSI is computed only when asked (on a scrape).
    Not thread-safe: the service observes and reads on its event loop.
    """

    def __init__(
        self,
        reference: DriftReference,
        max_count: int,
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reference = reference
        self.max_count, self.max_age_s, self._clock = max_count, max_age_s, clock
        self._cuts = {name: np.asarray(f.cuts) for name, f in reference.features.items()}
        self._sums = {name: np.zeros(len(f.reference)) for name, f in reference.features.items()}
        self._counts = dict.fromkeys(reference.features, 0)
        self._entries: deque[tuple[float, dict[str, np.ndarray]]] = deque()

    def cuts(self, name: str) -> np.ndarray | None:
        return self._cuts.get(name)

    def observe(self, grey: np.ndarray | None, ood_score: float | None, probability: float) -> None:
        """One image: its grey-level shares (`grey_shares` with this window's cuts), its OOD score and
        P(not normal); None for what was not measured."""
        now = self._clock()
        entry = {}
        for name, shares in ((GREY, grey), (OOD_SCORE, ood_score), (PROBABILITY, probability)):
            if shares is None or name not in self._cuts:
                continue
            if not isinstance(shares, np.ndarray):  # a scalar: one image in one bin
                index = int(np.searchsorted(self._cuts[name], shares, side="right"))
                shares = np.zeros(len(self._cuts[name]) + 1)
                shares[index] = 1.0
            self._sums[name] += shares
            self._counts[name] += 1
            entry[name] = shares
        self._entries.append((now, entry))
        self._expire(now)

    def psi(self) -> dict[str, float]:
        """PSI per feature over the window (nan for a feature with no observation in it)."""
        self._expire(self._clock())
        out = {}
        for name, feature in self.reference.features.items():
            count = self._counts[name]
            out[name] = psi(self._sums[name] / count, feature.reference) if count else math.nan
        return out

    def size(self) -> int:
        self._expire(self._clock())
        return len(self._entries)

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries and (len(entries) > self.max_count or now - entries[0][0] > self.max_age_s):
            _, old = entries.popleft()
            for name, shares in old.items():
                self._sums[name] -= shares
                self._counts[name] -= 1
