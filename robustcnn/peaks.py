"""Double-descent curve analysis: the interpolation threshold and the test-error peak of a sweep, with a noise model.

A point is a peak only when its test error exceeds the lowest test error on BOTH sides by more than `z` (2)
standard errors of the difference. Each point's standard error combines the spread over seeds and the binomial
error of a finite test set:

    se(x) = sqrt(s(x)^2 / k + p(x) (1 - p(x)) / n_test)

with s the sample standard deviation (ddof=1) over k seeds, p the mean test error and n_test the test-set size.
The test set is the same for every seed, so its binomial term does not shrink with k. The difference's standard
error is sqrt(se_peak^2 + se_min^2): points scored on the same test set are positively correlated, so this
overstates the difference's error, and the test errs on the side of "no peak".

On a curve with many points (an epoch-wise curve), a peak must also be sustained: at least `min_width`
consecutive points must each clear their side minima, and each side minimum is the lowest level the curve
holds for `min_width` consecutive points (the minimum over windows of the window's maximum), so neither a
one-epoch spike up nor a one-epoch dip down makes a peak.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from robustcnn.errors import UsageError

Z_DEFAULT = 2.0         # a peak clears both side minima by more than this many standard errors
EPOCH_MIN_WIDTH = 5     # epoch-wise curves: the raised region spans at least this many consecutive epochs
NO_PEAK = "no peak detected (within noise)"


@dataclass(frozen=True)
class PeakReport:
    """`peak_at` is None unless a peak survives the noise model; the candidate's numbers are kept either way so
    a table can say how far the highest bump was from significance."""

    interpolation_threshold: float | None  # first x whose train error is <= the tolerance
    peak_at: float | None                  # the significant peak's x, else None
    candidate_at: float | None             # the interior point that rises most (in standard errors) above both sides
    peak_test_error: float | None          # the candidate's test error
    left_min_test_error: float | None      # lowest (sustained) test error left of the candidate
    right_min_test_error: float | None     # lowest (sustained) test error right of the candidate
    peak_height: float | None              # candidate minus the higher of the two side minima
    peak_se: float | None                  # standard error of that difference
    peak_z: float | None                   # min over the two sides of (candidate - side minimum) / its SE
    raised_width: int | None               # consecutive points around the candidate that clear both sides
    significant: bool = False


def interpolation_threshold(x: Sequence[float], train_error: Sequence[float], tol: float = 0.01) -> float | None:
    for xi, e in zip(x, train_error):
        if e <= tol:
            return float(xi)
    return None


def point_standard_error(error: Sequence[float], std_over_seeds: Sequence[float], seeds: Sequence[int] | int,
                         n_test: int) -> np.ndarray:
    """se = sqrt(std^2 / k + p (1 - p) / n_test): seed spread (sample std, ddof=1) plus test-set binomial error."""
    if n_test < 1:
        raise UsageError(f"n_test must be a positive test-set size, got {n_test}")
    p = np.clip(np.asarray(error, dtype=float), 0.0, 1.0)
    k = np.broadcast_to(np.asarray(seeds, dtype=float), p.shape)
    s = np.nan_to_num(np.asarray(std_over_seeds, dtype=float))
    return np.sqrt(s ** 2 / np.maximum(k, 1) + p * (1 - p) / n_test)


def find_peak(x: Sequence[float], test_error: Sequence[float], train_error: Sequence[float] | None = None, *,
              se: Sequence[float] | float, z: float = Z_DEFAULT, min_width: int = 1, tol: float = 0.01) -> PeakReport:
    """The significant interior peak of a test-error curve, or none (see the module docstring).

    se: per-point standard errors (a scalar applies to every point). Passing se=0 switches the noise model
    off, which only a test should do. The reported peak is the highest point of the qualifying raised regions.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(test_error, dtype=float)
    ses = np.broadcast_to(np.asarray(se, dtype=float), ys.shape).astype(float)
    if min_width < 1:
        raise UsageError(f"min_width must be at least 1, got {min_width}")
    order = np.argsort(xs, kind="stable")
    xs, ys, ses = xs[order], ys[order], ses[order]
    threshold = None
    if train_error is not None:
        threshold = interpolation_threshold(xs, np.asarray(train_error, dtype=float)[order], tol)
    floors, floor_ses = _window_floors(ys, ses, min_width)  # floors[j]: the level held over points j..j+w-1
    n, w = len(ys), min_width
    z_of = np.full(n, -np.inf)
    sides: dict[int, tuple[int, int]] = {}
    for i in range(w, n - w):
        left = int(np.argmin(floors[:i - w + 1]))      # windows that end before point i
        right = i + 1 + int(np.argmin(floors[i + 1:]))  # windows that start after point i
        z_left = (ys[i] - floors[left]) / _diff_se(ses[i], floor_ses[left])
        z_right = (ys[i] - floors[right]) / _diff_se(ses[i], floor_ses[right])
        z_of[i], sides[i] = min(z_left, z_right), (left, right)
    raised = z_of > z
    runs = _run_lengths(raised)
    qualifying = raised & (runs >= w)
    if not sides:
        return PeakReport(threshold, None, None, None, None, None, None, None, None, None, False)
    best = int(np.argmax(np.where(qualifying, ys, -np.inf))) if qualifying.any() else int(np.argmax(z_of))
    left, right = sides[best]
    higher = int(left if floors[left] >= floors[right] else right)
    return PeakReport(threshold, float(xs[best]) if qualifying.any() else None, float(xs[best]), float(ys[best]),
                      float(floors[left]), float(floors[right]), float(ys[best] - floors[higher]),
                      float(_diff_se(ses[best], floor_ses[higher])), float(z_of[best]), int(runs[best]),
                      bool(qualifying.any()))


def _diff_se(a: float, b: float) -> float:
    return max(float(np.hypot(a, b)), 1e-12)  # se=0 (noise model off) still divides safely


def _window_floors(ys: np.ndarray, ses: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per window of w consecutive points: its maximum (the level the curve stays under) and that point's SE."""
    if len(ys) < w:
        return np.empty(0), np.empty(0)
    windows = np.lib.stride_tricks.sliding_window_view(ys, w)
    top = windows.argmax(1) + np.arange(len(windows))
    return ys[top], ses[top]


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """For each True entry, the length of the run of consecutive Trues it belongs to (0 where False)."""
    out = np.zeros(len(mask), dtype=int)
    start = None
    for i, v in enumerate([*mask, False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out[start:i] = i - start
            start = None
    return out


# ------------------------------------------------------------------ tables of a double-descent study
PEAK_COLUMNS = ["sweep", "interpolation_threshold", "verdict", "peak_at", "candidate_at", "peak_test_error",
                "left_min_test_error", "right_min_test_error", "peak_height", "peak_se", "peak_z", "raised_width",
                "significant", "z", "min_width", "n_test", "seeds"]


def _peak_row(sweep: str, p: PeakReport, *, z: float, min_width: int, n_test: int, seeds: int) -> dict[str, Any]:
    verdict = f"peak (> {z:g} SE above both sides)" if p.significant else NO_PEAK
    return {"sweep": sweep, **dataclasses.asdict(p), "verdict": verdict, "z": z, "min_width": min_width,
            "n_test": n_test, "seeds": seeds}


def _seed_stats(frame: pd.DataFrame, by: str, cols: list[str]) -> pd.DataFrame:
    """Mean over seeds of `cols`, with the test error's sample std (ddof=1; 0 for one seed) and the seed count k."""
    g = frame.groupby(by, sort=True)
    out = g[cols].mean()
    out["test_error_sd"] = g["test_error"].std(ddof=1).fillna(0.0)
    out["k"] = g["test_error"].size()
    return out.reset_index()


def _peak_of(sweep: str, g: pd.DataFrame, x: str, train: str, n_test: int, *, z: float, min_width: int = 1,
             tol: float = 0.01) -> dict[str, Any]:
    se = point_standard_error(g["test_error"], g["test_error_sd"], g["k"], n_test)
    p = find_peak(g[x], g["test_error"], g[train], se=se, z=z, min_width=min_width, tol=tol)
    return _peak_row(sweep, p, z=z, min_width=min_width, n_test=n_test, seeds=int(g["k"].min()))


def peaks_table(per_point: pd.DataFrame | None, rff: pd.DataFrame | None, n_test: int, *, z: float = Z_DEFAULT
                ) -> pd.DataFrame:
    """Interpolation threshold and peak of each sweep (model-wise, sample-wise, RFF), tested against noise.

    per_point: one row per sweep point and seed (sweep, x, seed, train_error, test_error); rff: one row per
    feature count and seed (features, test_error, train_mse); n_test: the test-set size."""
    rows = []
    for sweep in ("model-wise", "sample-wise"):
        part = per_point[per_point["sweep"] == sweep] if per_point is not None and len(per_point) else None
        if part is not None and len(part):
            g = _seed_stats(part.assign(x=part["x"].astype(float)), "x", ["test_error", "train_error"])
            rows.append(_peak_of(sweep, g, "x", "train_error", n_test, z=z))
    if rff is not None and len(rff):
        # min-norm least squares interpolates in squared loss only at N >= n: the threshold uses train MSE
        g = _seed_stats(rff, "features", ["test_error", "train_mse"])
        rows.append(_peak_of("rff", g, "features", "train_mse", n_test, z=z, tol=1e-3))
    return pd.DataFrame(rows, columns=PEAK_COLUMNS)


def epoch_wise_peak(history: pd.DataFrame, width: int, n_test: int, *, z: float = Z_DEFAULT,
                    min_width: int = EPOCH_MIN_WIDTH) -> pd.DataFrame:
    """Epoch-wise double descent: the test error per epoch of the widest model (mean over seeds). The peak must
    stay raised for `min_width` consecutive epochs above side minima the curve also holds for `min_width`
    epochs, so a one-epoch optimizer spike is not a peak."""
    h = history[(history["sweep"] == "model-wise") & (history["x"].astype(float) == float(width))]
    errors = h.assign(test_error=1 - h["test_accuracy"], train_error=1 - h["train_accuracy"])
    g = _seed_stats(errors, "epoch", ["test_error", "train_error"])
    row = _peak_of(f"epoch-wise (width={width})", g, "epoch", "train_error", n_test, z=z, min_width=min_width)
    return pd.DataFrame([row], columns=PEAK_COLUMNS)
