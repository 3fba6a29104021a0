"""Figures of the generalization studies (overfitting, generalization, memorization, double descent), drawn from a
sweep's saved tables only. Intervals are ± std over seeds; a one-seed sweep gets no error bars (a std of one
value says nothing) and its figure says n_seeds=1.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from robustcnn.figures import epoch_axis
from robustcnn.formatting import seed_count
from robustcnn.plotstyle import PALETTE, legend, std_band, subplots

TEST, TRAIN, GAP = PALETTE[0], PALETTE[1], PALETTE[2]


def seeds_note(k: int) -> str:
    """What a sweep figure's points and bars are."""
    return "one seed: n_seeds=1, no error bars" if k <= 1 else f"mean over {k} seeds, bars: ± std"


def _points(ax: Axes, x: np.ndarray, mean: pd.Series, std: pd.Series | None, k: int, **kw) -> None:
    """Points (and a line through them where x is ordered) with ± std bars only when several seeds ran."""
    yerr = std.to_numpy(dtype=float) if std is not None and k > 1 else None
    ax.errorbar(x, mean.to_numpy(dtype=float), yerr=yerr, **{"capsize": 3, "ms": 5, **kw})


def plot_sweep_curves(summary: pd.DataFrame, peaks: pd.DataFrame, rff: pd.DataFrame | None,
                      history: pd.DataFrame | None) -> Figure:
    """Test error with train error beside it for each sweep; threshold (dotted) and a peak (red) marked only
    when it survives the noise model (robustcnn.peaks), else the panel says so."""
    panels = [s for s in ("model-wise", "sample-wise") if s in set(summary["sweep"])] + (["rff"] if rff is not None else [])
    epoch_rows = peaks[peaks["sweep"].str.startswith("epoch-wise")]
    if history is not None and len(epoch_rows):
        panels.append(epoch_rows["sweep"].iloc[0])
    k = seed_count(summary) if len(summary) else int(peaks["seeds"].max()) if "seeds" in peaks and len(peaks) else 1
    fig, axes = subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, sweep in zip(axes[0], panels):
        if sweep == "rff":
            g = rff.groupby("features")[["train_error", "test_error"]].agg(["mean", "std"])
            x, seeds = g.index.to_numpy(dtype=float), int(rff.groupby("features").size().max())
            for col, color, ls, marker in (("test_error", TEST, "-", "o"), ("train_error", TRAIN, "--", "s")):
                ax.plot(x, g[(col, "mean")], ls=ls, marker=marker, ms=3, color=color, label=col.replace("_", " "))
                if seeds > 1:
                    std_band(ax, x, g[(col, "mean")], g[(col, "std")].fillna(0), color)
            ax.set(xlabel=f"random features N (n = {int(rff['train_size'].iloc[0])})", title="random Fourier features")
        elif sweep.startswith("epoch-wise"):
            width = float(sweep.split("=")[1].rstrip(")"))
            h = history[(history["sweep"] == "model-wise") & (history["x"].astype(float) == width)]
            g = h.groupby("epoch")[["train_accuracy", "test_accuracy"]].agg(["mean", "std"])
            for col, color, ls in (("test_accuracy", TEST, "-"), ("train_accuracy", TRAIN, "--")):
                ax.plot(g.index, 1 - g[(col, "mean")], color=color, ls=ls, label=col.replace("accuracy", "error")
                        .replace("_", " "))
                if k > 1:
                    std_band(ax, g.index, 1 - g[(col, "mean")], g[(col, "std")].fillna(0), color)
            ax.set(title=sweep)
            epoch_axis(ax, float(g.index.max()))
        else:
            g = summary[summary["sweep"] == sweep]
            x = g["x"].astype(float).to_numpy()
            _points(ax, x, g["test_error_mean"], g.get("test_error_std"), k, color=TEST, marker="o", ms=3,
                    label="test error")
            _points(ax, x, g["train_error_mean"], g.get("train_error_std"), k, color=TRAIN, marker="s", ms=3,
                    ls="--", label="train error (eval mode)")
            ax.set(xlabel="width k" if sweep == "model-wise" else "training examples", title=f"{sweep} double descent")
        if not sweep.startswith("epoch-wise"):
            ax.set_xscale("log")
        p = peaks[peaks["sweep"] == sweep]
        if len(p) and not pd.isna(p["interpolation_threshold"].iloc[0]):
            ax.axvline(p["interpolation_threshold"].iloc[0], color="gray", ls=":", label="interpolation threshold")
        _mark_peak(ax, p)
        ax.set_ylabel("error")
        ax.grid(alpha=0.3)
        legend(ax)
    fig.suptitle(f"double descent ({seeds_note(k)}; random features and epoch-wise: bands ± std)" if k > 1 else
                 f"double descent ({seeds_note(k)})", fontsize=10)
    fig.tight_layout()
    return fig


def _mark_peak(ax: Axes, p: pd.DataFrame) -> None:
    """A significant peak gets a red circle; a sweep without one says "no peak detected (within noise)".
    Tables from before the noise model (no `significant` column) keep their unqualified marker."""
    from robustcnn.peaks import NO_PEAK

    if not len(p):
        return
    row = p.iloc[0]
    if not pd.isna(row["peak_at"]):
        label = f"peak (> {row['z']:g} SE)" if "significant" in row else "peak (no noise test)"
        ax.plot(float(row["peak_at"]), row["peak_test_error"], "o", color="red", ms=9, mfc="none", label=label)
    elif "significant" in row:
        ax.set_title(f"{ax.get_title()}\n{NO_PEAK}")


def _variants(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[summary["sweep"] == "variants"].reset_index(drop=True)


def plot_variants(summary: pd.DataFrame, title: str) -> Figure:
    """Per variant: train (eval mode) and test accuracy, and the generalization gap with the first variant's gap
    as a reference line, as points with ± std bars over seeds (not bars from zero, which hide gaps of a few
    points)."""
    g, k = _variants(summary), seed_count(summary)
    fig, (ax_acc, ax_gap) = subplots(1, 2, figsize=(max(9, 1.2 * len(g) + 4), 4.3))
    pos = np.arange(len(g), dtype=float)
    _points(ax_acc, pos - 0.08, g["train_accuracy_mean"], g.get("train_accuracy_std"), k, color=TRAIN, marker="s",
            ls="none", label="train (clean, eval mode)")
    _points(ax_acc, pos + 0.08, g["test_accuracy_mean"], g.get("test_accuracy_std"), k, color=TEST, marker="o",
            ls="none", label="test")
    _points(ax_gap, pos, g["gap_mean"], g.get("gap_std"), k, color=GAP, marker="D", ls="none",
            label="train - test accuracy")
    ax_gap.axhline(g["gap_mean"].iloc[0], color=GAP, ls=":", lw=1, label=f"{g['variant'].iloc[0]} (reference)")
    ax_gap.axhline(0, color="gray", lw=0.6)
    ax_acc.set(ylabel="accuracy", title="train and test accuracy")
    ax_gap.set(ylabel="generalization gap (accuracy)", title="generalization gap")
    for ax in (ax_acc, ax_gap):
        ax.set_xticks(pos, g["variant"], rotation=25, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(g) - 0.5)
        ax.grid(alpha=0.3, axis="y")
        legend(ax)
    fig.suptitle(f"{title} ({seeds_note(k)})", fontsize=10)
    fig.tight_layout()
    return fig


def _split_noise(g: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Variants with a numeric x (the fraction of labels randomized) and the others (pixel corruptions)."""
    x = pd.to_numeric(g["x"], errors="coerce")
    return g[x.notna()].assign(noise=x[x.notna()]).sort_values("noise"), g[x.isna()]


def plot_memorization(summary: pd.DataFrame, classes: int | None) -> Figure:
    """Zhang et al. 2017: train (eval mode) and test accuracy against the fraction of random labels, as lines,
    with chance (1/classes) drawn; the pixel-corruption variants as points beside it."""
    g, k = _variants(summary), seed_count(summary)
    noise, other = _split_noise(g)
    fig, axes = subplots(1, 2, figsize=(10.5, 4.3), gridspec_kw={"width_ratios": [3, max(1, len(other))]},
                         sharey=True, squeeze=False)
    ax, ax_other = axes[0]
    for col, color, marker, ls, label in (("train_accuracy", TRAIN, "s", "--", "train (clean, eval mode)"),
                                          ("test_accuracy", TEST, "o", "-", "test")):
        if len(noise):
            _points(ax, noise["noise"].to_numpy(), noise[f"{col}_mean"], noise.get(f"{col}_std"), k, color=color,
                    marker=marker, ls=ls, label=label)
        if len(other):
            _points(ax_other, np.arange(len(other)) + (0.08 if col == "test_accuracy" else -0.08),
                    other[f"{col}_mean"], other.get(f"{col}_std"), k, color=color, marker=marker, ls="none")
    for a in (ax, ax_other):
        if classes:
            a.axhline(1 / classes, color="gray", ls=":", lw=1.2, label=f"chance (1/{classes})" if a is ax else None)
        a.grid(alpha=0.3)
        a.set_ylim(-0.02, 1.04)
    ax.set(xlabel="fraction of training labels replaced by random labels", ylabel="accuracy",
           title="random labels")
    ax_other.set_xticks(np.arange(len(other)), other["variant"], rotation=25, ha="right", fontsize=8)
    ax_other.set_xlim(-0.5, max(len(other), 1) - 0.5)
    ax_other.set_title("pixel corruptions (true labels)" if len(other) else "")
    legend(ax)
    fig.suptitle(f"memorization ({seeds_note(k)})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_epochs_to_fit(summary: pd.DataFrame, threshold: float) -> Figure:
    """Memorization: epochs each variant needs to reach `threshold` train accuracy, against the fraction of
    random labels (a line) and for the other variants (points); variants that never fit are named."""
    g, k = _variants(summary), seed_count(summary)
    noise, other = _split_noise(g)
    fig, axes = subplots(1, 2, figsize=(10.5, 3.9), gridspec_kw={"width_ratios": [3, max(1, len(other))]},
                         sharey=True, squeeze=False)
    ax, ax_other = axes[0]
    if len(noise):
        _points(ax, noise["noise"].to_numpy(), noise["epochs_to_fit_mean"], noise.get("epochs_to_fit_std"), k,
                color=GAP, marker="o", label="epochs to fit")
    if len(other):
        _points(ax_other, np.arange(len(other)), other["epochs_to_fit_mean"], other.get("epochs_to_fit_std"), k,
                color=GAP, marker="o", ls="none")
    never = [v for v, e in zip(g["variant"], g["epochs_to_fit_mean"]) if pd.isna(e)]
    ax.set(xlabel="fraction of training labels replaced by random labels",
           ylabel=f"epochs to {threshold:.0%} train accuracy", title="epochs to fit the training set" +
           (f"\nnot fitted: {', '.join(never)}" if never else ""))
    ax_other.set_xticks(np.arange(len(other)), other["variant"], rotation=25, ha="right", fontsize=8)
    ax_other.set_xlim(-0.5, max(len(other), 1) - 0.5)
    ax_other.set_title("pixel corruptions (true labels)" if len(other) else "")
    for a in (ax, ax_other):
        a.grid(alpha=0.3)
    fig.suptitle(f"epochs to fit ({seeds_note(k)})", fontsize=10)
    fig.tight_layout()
    return fig


def mean_histories(history: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per variant, the mean over seeds of each epoch's train and test metrics, with *_std columns when several
    seeds ran (plot_history shades them)."""
    cols = [c for c in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "train_accuracy_running",
                        "train_eval_n") if c in history]
    out = {}
    for variant, g in history.groupby("variant", sort=False):
        grouped = g.groupby("epoch")[cols]
        mean = grouped.mean().reset_index()
        if g["seed"].nunique() > 1 if "seed" in g else False:
            std = grouped.std(ddof=0).add_suffix("_std").reset_index(drop=True)
            mean = pd.concat([mean, std[[f"{c}_std" for c in ("train_loss", "train_accuracy", "test_loss",
                                                                "test_accuracy")]]], axis=1)
        out[variant] = mean
    return out
