"""How the reports print a measured number: about three significant figures, "n/a" when it is missing."""

from __future__ import annotations


def number(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"
    return str(v)
