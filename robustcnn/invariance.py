"""Robustness beyond L-p balls: accuracy under transformations (vs magnitude, random and worst case over a grid),
prediction consistency, and common-corruption accuracy with the mean corruption error (mCE).

Every function takes several models at once, `{name: model}`, and shows them the SAME transformed or corrupted
images (drawn once from the seed), so comparisons between models are paired. Models must be in eval mode and on
the images' device. Tables are DataFrames with one row per model x condition:

    transform_accuracy(models, x, y, "translate", [0, 1, 2])  # model, transform, magnitude, unit, mode, method, accuracy, n
    consistency(models, x, "translate", [1])                   # model, transform, magnitude, unit, consistency, n
    corruption_accuracy(models, x, y)                          # model, corruption, severity, accuracy, n
    corruption_summary(table, clean, reference="lenet5")       # mean corruption accuracy/error, mCE per model

Definitions. random: one transformation per image drawn within the magnitude (transforms.apply_transform).
worst: an image counts as correct only if it is correct under EVERY point of the grid (all integer shifts in
[-m, m]^2, `grid_steps` angles or zoom factors; Engstrom et al. 2019), or under `worst_of` random draws where a
transformation has no grid. consistency (Zhang 2019): the fraction of images whose predicted class is the same
under two independent random transformations. mCE (Hendrycks & Dietterich 2019): CE_c = sum_s E_{s,c}(model) /
sum_s E_{s,c}(reference), averaged over corruptions; relative mCE uses E - E_clean in both sums.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
import torch.nn as nn

from robustcnn.corruptions import (
    MNIST_C,
    MNIST_C_LEVEL,
    CommonCorruption,
    as_corruption,
    corrupt,
    corruption_set,
    parameters,
)
from robustcnn.errors import UsageError
from robustcnn.transforms import (
    RANDOM,
    UNITS,
    Transform,
    apply_grid_point,
    apply_transform,
    as_transform,
    check_magnitude,
    generator,
    transform_grid,
)

Models = Mapping[str, nn.Module]


@torch.no_grad()
def predictions(models: Models, x: torch.Tensor, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Predicted classes (N,) of every model, computed in batches."""
    return {name: torch.cat([m(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
            for name, m in models.items()}


def _check(models: Models, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    if not models:
        raise UsageError("pass at least one model")
    if y is not None and len(x) != len(y):
        raise UsageError(f"images and labels differ in number: {len(x)} vs {len(y)}")


def transform_accuracy(models: Models, x: torch.Tensor, y: torch.Tensor, transform: str | Transform,
                       magnitudes: Sequence[float], *, seed: int = 0, batch_size: int = 500, fill: float = 0.0,
                       elastic_sigma: float = 4.0, grid_steps: int = 31, worst_of: int = 10,
                       worst: bool = True) -> pd.DataFrame:
    """Accuracy under random transformations of each magnitude and, if `worst`, under the worst case."""
    _check(models, x, y)
    t = as_transform(transform)
    rows = []
    for m in magnitudes:
        check_magnitude(t, m, x)
        xt = apply_transform(x, t, m, generator(seed, t.value, m), fill=fill, elastic_sigma=elastic_sigma)
        for name, pred in predictions(models, xt, batch_size).items():
            rows.append(_row(name, t, m, "random", "one draw per image", (pred == y).double().mean().item(), len(y)))
        if worst:
            for name, (ok, method) in worst_case(models, x, y, t, m, seed=seed, batch_size=batch_size, fill=fill,
                                                 elastic_sigma=elastic_sigma, grid_steps=grid_steps,
                                                 worst_of=worst_of).items():
                rows.append(_row(name, t, m, "worst", method, ok.double().mean().item(), len(y)))
    return pd.DataFrame(rows)


def _row(name: str, t: Transform, m: float, mode: str, method: str, acc: float, n: int) -> dict:
    return {"model": name, "transform": t.value, "magnitude": float(m), "unit": UNITS[t], "mode": mode,
            "method": method, "accuracy": acc, "n": n}


def worst_case(models: Models, x: torch.Tensor, y: torch.Tensor, transform: str | Transform, magnitude: float, *,
               seed: int = 0, batch_size: int = 500, fill: float = 0.0, elastic_sigma: float = 4.0,
               grid_steps: int = 31, worst_of: int = 10) -> dict[str, tuple[torch.Tensor, str]]:
    """Per model: (N,) bool, correct under every grid point (or every one of `worst_of` draws), and the method."""
    t = as_transform(transform)
    grid = transform_grid(t, magnitude, grid_steps)
    correct = {name: torch.ones(len(y), dtype=torch.bool, device=y.device) for name in models}
    if grid is not None:
        batches = (apply_grid_point(x, t, point, fill=fill) for point in grid)
        method = f"grid of {len(grid)}"
    elif t in RANDOM:
        batches = (apply_transform(x, t, magnitude, generator(seed, "worst", t.value, magnitude, i), fill=fill,
                                   elastic_sigma=elastic_sigma) for i in range(worst_of))
        method = f"worst of {worst_of} draws"
    else:  # deterministic (blur): the one transformation is the worst case
        batches, method = iter([apply_transform(x, t, magnitude, generator(seed), fill=fill)]), "deterministic"
    for xt in batches:
        for name, pred in predictions(models, xt, batch_size).items():
            correct[name] &= pred == y
    return {name: (ok, method) for name, ok in correct.items()}


def consistency(models: Models, x: torch.Tensor, transform: str | Transform, magnitudes: Sequence[float], *,
                seed: int = 0, batch_size: int = 500, fill: float = 0.0, elastic_sigma: float = 4.0) -> pd.DataFrame:
    """Zhang 2019: the fraction of images with the same predicted class under two independent random draws."""
    _check(models, x)
    t = as_transform(transform)
    if t not in RANDOM:
        raise UsageError(f"consistency needs a random transformation; {t.value} is deterministic "
                         f"(choose from {', '.join(sorted(r.value for r in RANDOM))})")
    rows = []
    for m in magnitudes:
        a, b = (predictions(models, apply_transform(x, t, m, generator(seed, "consistency", t.value, m, i), fill=fill,
                                                    elastic_sigma=elastic_sigma), batch_size) for i in (0, 1))
        for name in models:
            rows.append({"model": name, "transform": t.value, "magnitude": float(m), "unit": UNITS[t],
                         "consistency": (a[name] == b[name]).double().mean().item(), "n": len(x)})
    return pd.DataFrame(rows)


def shift_grid(models: Models, x: torch.Tensor, y: torch.Tensor, k: int, *, batch_size: int = 500,
               fill: float = 0.0) -> pd.DataFrame:
    """Accuracy for every integer shift (dx, dy) in [-k, k]^2: model, dx, dy, accuracy, n."""
    _check(models, x, y)
    rows = []
    for point in transform_grid(Transform.TRANSLATE, k):
        for name, pred in predictions(models, apply_grid_point(x, Transform.TRANSLATE, point, fill=fill),
                                      batch_size).items():
            rows.append({"model": name, **point, "accuracy": (pred == y).double().mean().item(), "n": len(y)})
    return pd.DataFrame(rows)


def corruption_accuracy(models: Models, x: torch.Tensor, y: torch.Tensor,
                        corruptions: Sequence[str | CommonCorruption] | None = None,
                        severities: Sequence[int] = (1, 2, 3, 4, 5), *, seed: int = 0, batch_size: int = 500,
                        per_sample: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, dict[str, torch.Tensor]]:
    """Accuracy of every model on every corruption x severity (each corrupted batch generated once).

    corruptions None: MNIST-C's set for 1-channel images, CIFAR-10-C's for 3. per_sample: also return, per
    model, the (N, corruptions x severities) bool matrix of correct predictions (for intervals over images)."""
    _check(models, x, y)
    chosen = [as_corruption(c) for c in (corruptions or corruption_set(x.shape[1]))]
    for s in severities:
        parameters(chosen[0], s, x.shape[1])  # severity outside 1..5: one line, before any work
    published = MNIST_C_LEVEL if x.shape[1] == 1 and set(chosen) <= set(MNIST_C) else {}
    rows, hits = [], {name: [] for name in models}
    for c in chosen:
        for s in severities:
            for name, pred in predictions(models, corrupt(x, c, s, seed), batch_size).items():
                ok = pred == y
                hits[name].append(ok)
                rows.append({"model": name, "corruption": c.value, "severity": int(s), "accuracy": ok.double().mean().item(),
                             "n": len(y), "published_level": published.get(c) == s})
    table = pd.DataFrame(rows)
    return (table, {k: torch.stack(v, 1) for k, v in hits.items()}) if per_sample else table


def corruption_summary(table: pd.DataFrame, clean: Mapping[str, float], *,
                       reference: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per corruption, per model) tables from `corruption_accuracy`'s: mean accuracy over severities, error, and
    CE / relative CE against `reference` (a model in the table); then per model the means over corruptions:
    mean_corruption_accuracy, mean_corruption_error, mce, relative_mce (NaN without a reference)."""
    if reference is not None and reference not in set(table["model"]):
        raise UsageError(f"mCE reference '{reference}' is not among the evaluated models "
                         f"({', '.join(dict.fromkeys(table['model']))})")
    t = table.assign(error=1 - table["accuracy"], clean_error=table["model"].map(lambda m: 1 - clean[m]))
    t["relative_error"] = t["error"] - t["clean_error"]
    per = t.groupby(["model", "corruption"], sort=False).agg(
        accuracy=("accuracy", "mean"), error_sum=("error", "sum"), relative_sum=("relative_error", "sum")).reset_index()
    if reference is not None:
        ref = per[per["model"] == reference].set_index("corruption")
        per["ce"] = per["error_sum"] / per["corruption"].map(ref["error_sum"]).replace(0, math.nan)
        per["relative_ce"] = per["relative_sum"] / per["corruption"].map(ref["relative_sum"]).where(lambda v: v > 0)
    else:
        per["ce"] = per["relative_ce"] = math.nan
    per = per.assign(error=1 - per["accuracy"], reference=reference or "")
    summary = per.groupby("model", sort=False).agg(
        mean_corruption_accuracy=("accuracy", "mean"), mce=("ce", "mean"), relative_mce=("relative_ce", "mean"),
    ).reset_index()
    summary.insert(1, "clean_accuracy", summary["model"].map(clean))
    summary.insert(3, "mean_corruption_error", 1 - summary["mean_corruption_accuracy"])
    if "published_level" in table and table["published_level"].astype(bool).any():
        pub = table[table["published_level"].astype(bool)]
        summary["published_levels_accuracy"] = summary["model"].map(pub.groupby("model")["accuracy"].mean())
    summary["reference"] = reference or ""
    summary["corruptions"] = table["corruption"].nunique()
    summary["severities"] = ",".join(str(s) for s in sorted(table["severity"].unique()))
    return per[["model", "corruption", "accuracy", "error", "ce", "relative_ce", "reference"]], summary


# ------------------------------------------------------------------ a scorecard for one model (benchmark rows)
DEFAULT_MAGNITUDES: dict[Transform, list[float]] = {  # the invariance study's defaults too
    Transform.TRANSLATE: [0, 1, 2, 3, 4], Transform.ROTATE: [0, 5, 10, 15, 20, 25, 30],
    Transform.SCALE: [0, 0.1, 0.2, 0.3], Transform.ELASTIC: [0, 8, 16, 24, 34],  # alpha; Simard et al. used 34
    Transform.NOISE: [0, 0.1, 0.2, 0.3, 0.4, 0.5], Transform.BLUR: [0, 0.5, 1.0, 1.5, 2.0],
}
SCORECARD_COLUMNS = ["attack", "threat_model", "epsilon", "level", "level_unit", "robust_accuracy", "ci_low", "ci_high",
                     "n", "attack_seeds", "mean_over_seeds", "std_over_seeds", "curve"]


def invariance_scorecard(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, threat: str = "all", seed: int = 0,
                         batch_size: int = 500, corruptions: Sequence[str] | None = None,
                         severities: Sequence[int] = (1, 2, 3, 4, 5),
                         magnitudes: Mapping[str, Sequence[float]] | None = None) -> pd.DataFrame:
    """Rows in the benchmark's robust-accuracy layout (SCORECARD_COLUMNS) for threat 'corruptions', 'transforms'
    or 'all'. `epsilon` is NaN (these are not L-p balls); `level` is the severity or magnitude, `level_unit` says
    which. ci_low/ci_high: 95 % Wilson intervals over the n images; for 'mean_corruption' (the mean over
    corruptions x severities) a normal interval over the per-image mean correctness. The corruption numbers are
    those of `corruption_accuracy` with the same seed, so they equal the invariance study's for the same model."""
    from robustcnn.benchmark import wilson_interval  # here, not at the top: benchmark may come to import us

    if threat not in ("corruptions", "transforms", "all"):
        raise UsageError(f"unknown threat '{threat}'; choose corruptions, transforms or all")
    models = {"model": model}
    rows = []

    def add(attack: str, kind: str, level: float, unit: str, acc: float, n: int) -> None:
        low, high = wilson_interval(round(acc * n), n)
        rows.append({"attack": attack, "threat_model": kind, "epsilon": math.nan, "level": float(level),
                     "level_unit": unit, "robust_accuracy": acc, "ci_low": low, "ci_high": high, "n": n})

    if threat in ("corruptions", "all"):
        table, hits = corruption_accuracy(models, x, y, corruptions, severities, seed=seed, batch_size=batch_size,
                                          per_sample=True)
        for r in table.itertuples():
            add(r.corruption, "corruptions", r.severity, "severity 1-5", r.accuracy, r.n)
        per_image = hits["model"].float().mean(1)  # (N,) each image's accuracy over corruptions x severities
        mean, half = per_image.mean().item(), 1.96 * per_image.std().item() / math.sqrt(len(per_image))
        rows.append({"attack": "mean_corruption", "threat_model": "corruptions", "epsilon": math.nan,
                     "level": math.nan, "level_unit": f"mean over {table['corruption'].nunique()} corruptions x "
                     f"severities {','.join(map(str, severities))}", "robust_accuracy": mean,
                     "ci_low": max(0.0, mean - half), "ci_high": min(1.0, mean + half), "n": len(per_image)})
    if threat in ("transforms", "all"):
        chosen = {as_transform(k): v for k, v in (magnitudes or DEFAULT_MAGNITUDES).items()}
        for t, mags in chosen.items():
            for r in transform_accuracy(models, x, y, t, mags, seed=seed, batch_size=batch_size).itertuples():
                add(t.value if r.mode == "random" else f"{t.value}/worst", "transforms", r.magnitude,
                    f"{r.unit}; {r.method}", r.accuracy, r.n)
    out = pd.DataFrame(rows)
    out["attack_seeds"], out["mean_over_seeds"], out["std_over_seeds"] = 1, out["robust_accuracy"], 0.0
    out["curve"] = "per-level"
    return out[SCORECARD_COLUMNS]
