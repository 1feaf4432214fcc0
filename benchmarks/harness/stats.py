"""The statistics the benchmark and reliability reports quote, defined once."""

from __future__ import annotations

import math
from collections.abc import Iterable


def nearest_rank(values: Iterable[float], q: float) -> float:
    """The nearest-rank q-th percentile: the smallest value with at least q% of the values at or below
    it (an observed value, never interpolated); nan for no values. q=100 is the maximum."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered), max(1, math.ceil(q / 100.0 * len(ordered)))) - 1]
