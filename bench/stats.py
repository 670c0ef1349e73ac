"""Percentiles and the median-of-runs every reported figure is."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(data[lo] + (data[hi] - data[lo]) * (pos - lo))


def summary(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """n, p50, p90, p99, max of one run."""

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, digits)

    return {
        "n": len(values),
        "p50": r(percentile(values, 50)),
        "p90": r(percentile(values, 90)),
        "p99": r(percentile(values, 99)),
        "max": r(max(values)) if values else None,
    }


def median_of(runs: Iterable[float | None], digits: int = 3) -> float | None:
    """The median of one figure over repeated runs (runs that produced nothing are ignored)."""
    values = [v for v in runs if v is not None]
    return round(statistics.median(values), digits) if values else None


def across(runs: Sequence[dict[str, Any]], keys: Sequence[str], digits: int = 3) -> dict[str, Any]:
    """For each key, the median over runs plus the spread (min, max) so the reader sees the noise."""
    out: dict[str, Any] = {"runs": len(runs)}
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = median_of(values, digits)
        if len(values) > 1:
            out[f"{key}_range"] = [round(min(values), digits), round(max(values), digits)]
    return out


def ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)
