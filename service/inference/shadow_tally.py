"""What the shadow comparison has seen since start or since the last reset: outcomes, the directional
label table, the agreement rate with a Wilson interval and the probability differences.

Event-loop confined (the shadow worker records on the loop), so no locks. The differences live in a
fixed histogram of 0.001-wide bins: memory stays constant however long it runs, and quantiles are
exact to a thousandth.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import UTC, datetime

import numpy as np

AGREE, DISAGREE, DROPPED, ERROR = "agree", "disagree", "dropped", "error"
OUTCOMES = (AGREE, DISAGREE, DROPPED, ERROR)
ABSTAINED = "abstained"  # the label column for an image a model's OOD gate withheld its label from
_BINS = 1000
_Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = _Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95% by default); None without trials. Unlike the
    normal approximation it stays inside [0, 1] and is honest at 0 or 100% agreement."""
    if trials <= 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # At 0 or 100% the bound is exactly 0 or 1; floating point lands a hair inside.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


class ShadowTally:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.since = time.time()
        self.outcomes: Counter[str] = Counter()
        self.labels: Counter[tuple[str, str]] = Counter()
        self._differences = np.zeros(_BINS + 1, dtype=np.int64)
        self._difference_sum = 0.0
        self._difference_max = 0.0

    def compared(self, primary_label: str, candidate_label: str, difference: float) -> str:
        """Record one image both models answered; returns its outcome (agree or disagree)."""
        outcome = AGREE if primary_label == candidate_label else DISAGREE
        self.outcomes[outcome] += 1
        self.labels[primary_label, candidate_label] += 1
        difference = min(max(float(difference), 0.0), 1.0)
        self._differences[round(difference * _BINS)] += 1
        self._difference_sum += difference
        self._difference_max = max(self._difference_max, difference)
        return outcome

    def missed(self, outcome: str) -> None:
        """An image not compared: dropped (queue full, input the candidate cannot take) or an error."""
        self.outcomes[outcome] += 1

    def summary(self) -> dict[str, object]:
        agree, disagree = self.outcomes[AGREE], self.outcomes[DISAGREE]
        compared = agree + disagree
        interval = wilson_interval(agree, compared)
        table: dict[str, dict[str, int]] = {}
        for (primary, candidate), count in sorted(self.labels.items()):
            table.setdefault(primary, {})[candidate] = count
        return {
            "since": datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds"),
            "compared": compared,
            "agree": agree,
            "disagree": disagree,
            "dropped": self.outcomes[DROPPED],
            "errors": self.outcomes[ERROR],
            "agreement": agree / compared if compared else None,
            "agreement_interval": list(interval) if interval is not None else None,
            "labels": table,
            "probability_difference": self._difference_summary(compared),
        }

    def _difference_summary(self, compared: int) -> dict[str, float] | None:
        if not compared:
            return None
        cumulative = np.cumsum(self._differences)

        def quantile(q: float) -> float:
            return float(np.searchsorted(cumulative, math.ceil(q * compared))) / _BINS

        return {
            "mean": self._difference_sum / compared,
            "p50": quantile(0.5),
            "p90": quantile(0.9),
            "p99": quantile(0.99),
            "max": self._difference_max,
        }
