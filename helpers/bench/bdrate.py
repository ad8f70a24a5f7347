"""Bjontegaard delta rate (VCEG-M33) between two rate-distortion curves."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _curve(rates: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    """Clean an RD curve: finite points with rate > 0, sorted by metric, duplicate metric values merged
    (their log-rates averaged). Returns (metric, log-rate) or None when fewer than 2 distinct points."""
    pts: dict[float, list[float]] = {}
    for r, v in zip(rates, values):
        if r is None or v is None:
            continue
        r, v = float(r), float(v)
        if not (math.isfinite(r) and math.isfinite(v)) or r <= 0:
            continue
        pts.setdefault(v, []).append(math.log(r))
    if len(pts) < 2:
        return None
    m = np.array(sorted(pts))
    return m, np.array([np.mean(pts[v]) for v in m])


def bd_overlap(ref_values: Sequence[float], test_values: Sequence[float]) -> tuple[float, float] | None:
    """The metric interval both curves cover, or None when they do not overlap."""
    a = [float(v) for v in ref_values if v is not None and math.isfinite(float(v))]
    b = [float(v) for v in test_values if v is not None and math.isfinite(float(v))]
    if not a or not b:
        return None
    lo, hi = max(min(a), min(b)), min(max(a), max(b))
    return (lo, hi) if hi > lo else None


def bd_rate(
    ref_rates: Sequence[float], ref_values: Sequence[float], test_rates: Sequence[float], test_values: Sequence[float]
) -> float | None:
    """Bjontegaard delta rate of ``test`` against ``ref``, in percent (negative = test needs fewer bits).

    Each curve's log-rate is fitted as a polynomial of the quality metric (cubic, as Bjontegaard's VCEG-M33;
    degree ``n - 1`` when a curve has fewer than 4 distinct points), both fits are integrated over the
    metric interval the two curves share, and the mean log-rate difference ``d`` is reported as
    ``(exp(d) - 1) * 100``. Returns None when the metric intervals do not overlap ("no overlap") or a
    curve has fewer than 2 distinct points. The metric's direction does not matter: the mean log-rate
    difference over the shared interval is the same for ``-metric`` (a polynomial in ``-m`` is a polynomial in
    ``m``), so lower-is-better metrics (LPIPS, distances) need no sign flip.
    """
    c_ref, c_test = _curve(ref_rates, ref_values), _curve(test_rates, test_values)
    if c_ref is None or c_test is None:
        return None
    inter = bd_overlap(c_ref[0], c_test[0])
    if inter is None:
        return None
    lo, hi = inter
    integrals = []
    for m, lr in (c_ref, c_test):
        poly = np.polyfit(m, lr, min(3, len(m) - 1))
        prim = np.polyint(poly)
        integrals.append(np.polyval(prim, hi) - np.polyval(prim, lo))
    diff = (integrals[1] - integrals[0]) / (hi - lo)
    return float((math.exp(diff) - 1.0) * 100.0)
