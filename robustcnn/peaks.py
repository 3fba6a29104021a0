"""Double-descent curve analysis: the interpolation threshold and the test-error peak of a sweep."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PeakReport:
    """`peak_at` is None when the curve has no peak (e.g. it falls monotonically)."""

    interpolation_threshold: float | None  # first x whose train error is <= the tolerance
    peak_at: float | None
    peak_test_error: float | None
    left_min_test_error: float | None      # lowest test error left of the peak
    right_min_test_error: float | None     # lowest test error right of the peak


def interpolation_threshold(x: Sequence[float], train_error: Sequence[float], tol: float = 0.01) -> float | None:
    for xi, e in zip(x, train_error):
        if e <= tol:
            return float(xi)
    return None


def find_peak(x: Sequence[float], test_error: Sequence[float], train_error: Sequence[float] | None = None, *,
              min_height: float = 0.01, tol: float = 0.01) -> PeakReport:
    """The interior point that rises highest above the lower of its two side minima.

    A point is a peak only if the test error is lower somewhere on BOTH sides by at least `min_height`
    (absolute), so a monotone curve, or a plateau, gives no peak.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(test_error, dtype=float)
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    threshold = None
    if train_error is not None:
        threshold = interpolation_threshold(xs, np.asarray(train_error, dtype=float)[order], tol)
    best, best_height = None, min_height
    for i in range(1, len(ys) - 1):
        left, right = ys[:i].min(), ys[i + 1:].min()
        height = ys[i] - max(left, right)
        if height >= best_height:
            best, best_height = i, height
    if best is None:
        return PeakReport(threshold, None, None, None, None)
    return PeakReport(threshold, float(xs[best]), float(ys[best]), float(ys[:best].min()), float(ys[best + 1:].min()))
