"""One way to write a number: fractions (accuracies, errors, gaps, intervals) as percent with one decimal in
Markdown, LaTeX and report prose; CSV and JSON at full float64 precision without float32 noise.

No robustcnn imports (results.py, latex.py and the report modules all use it).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

# columns whose values are fractions in [0, 1] (or differences of them): shown as percent
PERCENT_WORDS = ("accuracy", "error", "gap", "consistency")
PERCENT_COLUMNS = ("ci_low", "ci_high", "mean_over_seeds", "std_over_seeds", "minus_baseline", "robust@")
NOT_PERCENT = ("errors",)  # e.g. corruption_errors: relative CE values, not fractions


def is_percent(column: object) -> bool:
    """Whether a column holds fractions a reader wants as percent (accuracy, error, gap, their intervals)."""
    name = str(column).lower()
    if any(word in name for word in NOT_PERCENT):
        return False
    return (any(word in name for word in PERCENT_WORDS) or any(name.startswith(c) for c in PERCENT_COLUMNS)
            or re.search(r"_eps[0-9.e-]+$", name) is not None)  # the lineage table's robust accuracy at eps, e.g. pgd_eps0.3


def percent(value: float, digits: int = 1) -> str:
    """0.9781 -> '97.8' (no sign: table headers say '(%)'); NaN -> '–'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * float(value):.{digits}f}"


def pct(value: float, digits: int = 1) -> str:
    """0.9781 -> '97.8 %', for prose."""
    return f"{percent(value, digits)} %"


def number(value: Any) -> str:
    """Any other number: integers as they are, floats with 4 significant digits, NaN as '–'."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}"


def cell(value: Any, as_percent: bool) -> str:
    """A Markdown table cell: percent for fraction columns, number() for other numbers, escaped text."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        return str(value).replace("|", "\\|").replace("\n", " ")
    if as_percent and math.isfinite(float(value)):
        return percent(value)
    return number(value)


def snap_float32(values: np.ndarray) -> np.ndarray:
    """float64 values that are exactly float32 numbers (accuracy computed in float32, then widened:
    0.9760000109672546) -> the shortest decimal that float32 prints (0.976). Values a float64 computation made
    are left alone: they are almost never exactly representable in float32 unless they are short already."""
    out = np.array(values, dtype=np.float64, copy=True)
    with np.errstate(over="ignore", invalid="ignore"):
        f32 = out.astype(np.float32)
    exact = np.isfinite(out) & (f32.astype(np.float64) == out)
    for i in np.flatnonzero(exact):
        out.flat[i] = float(str(f32.flat[i]))  # str of a float32: its shortest round-tripping decimal
    return out


def clean_float(value: float) -> float:
    """One float through snap_float32."""
    return float(snap_float32(np.array([value]))[0])


def clean_floats(df: pd.DataFrame) -> pd.DataFrame:
    """Every float column as float64 without float32 noise (for CSV files)."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = snap_float32(out[col].to_numpy(dtype=np.float64))
    return out


def clean_json(obj: Any) -> Any:
    """JSON-ready data (dicts, lists, floats) with every float through clean_float."""
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clean_json(v) for v in obj]
    if isinstance(obj, float):
        return clean_float(obj)
    return obj


def mean_std_table(summary: pd.DataFrame, metrics: Iterable[str], keep: Iterable[str]) -> pd.DataFrame:
    """Sweep summaries for Markdown: `keep` columns as they are, then one `metric` column per metric holding
    'mean ± std' (percent for fractions; the mean alone where only one seed ran, since its std says nothing)."""
    out = summary[[c for c in keep if c in summary]].copy()
    single = _seed_counts(summary) <= 1
    for m in metrics:
        if f"{m}_mean" not in summary:
            continue
        fmt = percent if is_percent(m) else _one_decimal
        head = f"{m} (%)" if is_percent(m) else m
        std = summary[f"{m}_std"] if f"{m}_std" in summary else pd.Series(np.nan, index=summary.index)
        out[head] = [fmt(mu) if one or pd.isna(sd) or pd.isna(mu) else f"{fmt(mu)} ± {fmt(sd)}"
                     for mu, sd, one in zip(summary[f"{m}_mean"], std, single)]
    return out


def _one_decimal(value: float) -> str:
    return "–" if pd.isna(value) else f"{float(value):.1f}"


def _seed_counts(summary: pd.DataFrame) -> np.ndarray:
    """Seeds behind each summary row (the `seeds` column lists them, space-separated)."""
    if "seeds" not in summary:
        return np.full(len(summary), 2)
    return np.array([len(str(s).split()) if pd.notna(s) else 0 for s in summary["seeds"]])


def seed_count(summary: pd.DataFrame) -> int:
    """The largest number of seeds behind any row of a sweep summary."""
    counts = _seed_counts(summary)
    return int(counts.max()) if len(counts) else 0
