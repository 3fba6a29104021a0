"""Figures and report.md of `study invariance` runs, from the run folder's tables and data/gallery.npz only
(no torch). Registered under the kind "invariance" when robustcnn.report is imported."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from robustcnn.formatting import pct
from robustcnn.plotstyle import color_of, legend, model_colors, save_figure, subplots
from robustcnn.report import figure_lines, header, read_table, reporter, run_colors, table_section
from robustcnn.report_setup import setup_section
from robustcnn.results import load_npz, markdown_table


def plot_transform_curves(acc: pd.DataFrame, cons: pd.DataFrame | None, colors: dict[str, str] | None = None) -> Figure:
    """Row 1: accuracy vs magnitude, one panel per transformation, a line per model (solid: random draw,
    dashed: worst case), with the 95 % Wilson band of the random draw. Row 2: consistency under two random draws
    (no row 2 when `cons` is None: not measured)."""
    from robustcnn.plotstyle import accuracy_band

    transforms = list(dict.fromkeys(acc["transform"]))
    colors = model_colors(acc["model"]) if colors is None else colors
    rows = 1 if cons is None else 2
    fig, axes = subplots(rows, len(transforms), figsize=(3.6 * len(transforms), 3.3 * rows + 0.3), squeeze=False)
    for col, t in enumerate(transforms):
        ax = axes[0, col]
        for (model, mode), g in acc[acc["transform"] == t].groupby(["model", "mode"], sort=False):
            ax.plot(g["magnitude"], g["accuracy"], marker="o" if mode == "random" else "^", ms=3,
                    color=color_of(colors, model), ls="-" if mode == "random" else "--", label=f"{model} ({mode})")
            if mode == "random" and "n" in g:
                accuracy_band(ax, g["magnitude"], g["accuracy"], g["n"], color_of(colors, model))
        unit = acc.loc[acc["transform"] == t, "unit"].iloc[0]
        ax.set(title=t, ylim=(-0.02, 1.02), ylabel="accuracy" if col == 0 else None, xlabel=unit if rows == 1 else None)
        ax.grid(alpha=0.3)
        if cons is not None:
            _consistency_panel(axes[1, col], cons, t, unit, colors, col == 0)
    legend(axes[0, 0], fontsize=6)
    n = "/".join(str(int(v)) for v in sorted(set(acc["n"]))) if "n" in acc else "?"
    fig.suptitle(f"accuracy vs magnitude (solid: one random draw per image, band: its 95 % Wilson interval; dashed: "
                 f"worst case){'' if cons is None else ' and consistency'}; test, first n={n}")
    fig.tight_layout()
    return fig


def _consistency_panel(ax: Axes, cons: pd.DataFrame, t: str, unit: str, colors: dict[str, str], first: bool) -> None:
    part = cons[cons["transform"] == t] if len(cons) else cons
    for model, g in part.groupby("model", sort=False) if len(part) else []:
        ax.plot(g["magnitude"], g["consistency"], marker="o", ms=3, color=color_of(colors, model), label=model)
    ax.set(xlabel=unit, ylim=(-0.02, 1.02), ylabel="consistency" if first else None)
    ax.grid(alpha=0.3)
    if not len(part):
        ax.text(0.5, 0.5, "deterministic:\nconsistency 1 by definition", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)


def benchmark_natural_section(run_dir: Path, robust: pd.DataFrame, model: str, clean_accuracy: float) -> list[str]:
    """The benchmark report's corruption and transform results (`--threat corruptions|transforms|all`): the
    study's figures drawn from the scorecard's rows, and one table each."""
    lines: list[str] = []
    corr = robust[(robust["threat_model"] == "corruptions") & (robust["attack"] != "mean_corruption")]
    if len(corr):
        acc = pd.DataFrame({"model": model, "corruption": corr["attack"], "severity": corr["level"].astype(int),
                            "accuracy": corr["robust_accuracy"]})
        clean = pd.DataFrame({"model": [model], "accuracy": [clean_accuracy]})
        fig = save_figure(plot_corruption_heatmap(acc, clean), run_dir, "corruption_accuracy")
        mean = robust[robust["attack"] == "mean_corruption"].iloc[0]
        n = int(mean["n"])
        lines += ["## Common corruptions", "", f"Accuracy, {mean['level_unit']}: **{pct(mean['robust_accuracy'])}** "
                  f"(95 % CI {pct(mean['ci_low'])}-{pct(mean['ci_high'])}: a normal interval over the {n} images' "
                  f"mean correctness across those corruptions, the image being the independent unit); clean "
                  f"{pct(clean_accuracy)}. Each corruption is generated on the fly from the first {n} test images "
                  "(robustcnn.corruptions, seeded by the benchmark's seed).", "", f"![corruption accuracy]({fig})", "",
                  f"Accuracy per corruption (rows) and severity (columns, 1 mildest to 5), test split, first n={n}:", ""]
        wide = acc.pivot_table(index="corruption", columns="severity", values="accuracy", sort=False)
        wide.columns = [f"severity {c}" for c in wide.columns]
        lines += [markdown_table(wide.map(pct).reset_index()), ""]
    trans = robust[robust["threat_model"] == "transforms"]
    if len(trans):
        acc = pd.DataFrame({"model": model, "transform": trans["attack"].str.split("/").str[0],
                            "mode": ["worst" if a.endswith("/worst") else "random" for a in trans["attack"]],
                            "magnitude": trans["level"], "accuracy": trans["robust_accuracy"], "n": trans["n"],
                            "unit": trans["level_unit"].str.rsplit("; ", n=1).str[0]})  # "<unit>; <method>"
        fig = save_figure(plot_transform_curves(acc, None), run_dir, "transform_accuracy")
        n = int(trans["n"].iloc[0])
        lines += ["## Transformations", "", f"Accuracy under each transformation on the first n={n} test images, "
                  "test split (random: one seeded draw per image at that magnitude; worst: correct under every point "
                  "of a grid of transformations up to it, or under every one of several draws).", "",
                  f"![transform accuracy]({fig})", ""]
        table = acc.assign(method=trans["level_unit"].str.rsplit("; ", n=1).str[1].values)
        lines += [markdown_table(table[["transform", "mode", "magnitude", "unit", "method", "accuracy", "n"]]), ""]
    return lines


def plot_shift_grid(grid: pd.DataFrame) -> Figure:
    """Accuracy for every shift (dx, dy), one panel per model."""
    models = list(dict.fromkeys(grid["model"]))
    fig, axes = subplots(1, len(models), figsize=(3.3 * len(models), 3.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        wide = grid[grid["model"] == model].pivot(index="dy", columns="dx", values="accuracy")
        im = ax.imshow(wide.to_numpy(), vmin=0, vmax=1, cmap="viridis", origin="upper",
                       extent=[wide.columns.min() - 0.5, wide.columns.max() + 0.5, wide.index.max() + 0.5,
                               wide.index.min() - 0.5])
        ax.set(title=model, xlabel="dx (pixels, + = right)", ylabel="dy (pixels, + = down)")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="accuracy")
    return fig


def plot_corruption_heatmap(acc: pd.DataFrame, clean: pd.DataFrame) -> Figure:
    """Model x corruption: accuracy averaged over the severities, the clean accuracy in the first column."""
    mean = acc.groupby(["model", "corruption"], sort=False)["accuracy"].mean().unstack()
    mean = mean[list(dict.fromkeys(acc["corruption"]))].loc[list(dict.fromkeys(acc["model"]))]
    mean.insert(0, "clean", mean.index.map(dict(zip(clean["model"], clean["accuracy"]))))
    fig, ax = subplots(figsize=(0.62 * mean.shape[1] + 2, 0.5 * mean.shape[0] + 1.8))
    image = ax.imshow(mean.to_numpy(), vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="accuracy")  # the colours' scale, 0 to 1
    for (i, j), v in np.ndenumerate(mean.to_numpy()):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(mean.shape[1]), mean.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(mean.shape[0]), mean.index, fontsize=8)
    ax.set_title(f"accuracy per corruption (mean over severities {', '.join(map(str, sorted(acc['severity'].unique())))})")
    return fig


def _show(ax: Axes, img: np.ndarray, title: str) -> None:
    img = np.transpose(img, (1, 2, 0))
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def plot_corruption_gallery(npz: dict[str, np.ndarray]) -> Figure:
    names, sev = [str(c) for c in npz["corruptions"]], npz["severities"]
    fig, axes = subplots(len(names), len(sev) + 1, figsize=(1.3 * (len(sev) + 1), 1.35 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        _show(axes[i, 0], npz["clean"], f"{name}\nclean" if i == 0 else name)
        for j, s in enumerate(sev):
            _show(axes[i, j + 1], npz["corrupted"][i, j], f"severity {s}" if i == 0 else "")
    return fig


def plot_transform_gallery(npz: dict[str, np.ndarray]) -> Figure:
    names = [str(t) for t in npz["transforms"]]
    width = max(len(npz[f"magnitudes__{t}"]) for t in names)
    fig, axes = subplots(len(names), width, figsize=(1.3 * width, 1.45 * len(names)), squeeze=False)
    for i, t in enumerate(names):
        for j in range(width):
            ax = axes[i, j]
            if j < len(npz[f"magnitudes__{t}"]):
                _show(ax, npz[f"transformed__{t}"][j], f"{t} {npz[f'magnitudes__{t}'][j]:g}")
            else:
                ax.axis("off")
    return fig


@reporter("invariance")
def report_invariance(run_dir: Path) -> str:
    names = ("clean_accuracy", "transform_accuracy", "consistency", "shift_grid", "corruption_accuracy",
             "corruption_summary", "corruption_errors", "claims")
    clean, acc, cons, grid, corr, summary, errors, claims = (read_table(run_dir, n) for n in names)
    colors = run_colors(run_dir, clean, acc)
    figs = [("accuracy vs magnitude", save_figure(plot_transform_curves(acc, cons, colors), run_dir,
                                                  "transform_accuracy")),
            ("accuracy for every shift", save_figure(plot_shift_grid(grid), run_dir, "shift_grid")),
            ("corruption heatmap", save_figure(plot_corruption_heatmap(corr, clean), run_dir, "corruptions"))]
    gallery = run_dir / "data" / "gallery.npz"
    if gallery.exists():
        arrays = load_npz(gallery)
        figs += [("corruptions at each severity", save_figure(plot_corruption_gallery(arrays), run_dir,
                                                              "corruption_gallery")),
                 ("transformations at each magnitude", save_figure(plot_transform_gallery(arrays), run_dir,
                                                                   "transform_gallery"))]
    n = int(clean["n"].iloc[0])
    lines = header(run_dir, "Invariance study: shifts, deformations, noise and common corruptions")
    lines += [f"All numbers on the first n={n} test images; every model sees the same transformed and corrupted "
              "images. `random`: one transformation per image drawn within the magnitude; `worst`: correct under "
              "every grid point (or every one of k draws, see `method`).", ""]
    lines += setup_section(run_dir, [f"**n**: the first n={n} test images, for every number of this report"])
    lines += table_section(run_dir, "claims", "The seed's claims, model by model (minus_baseline: paired accuracy "
                           "difference to the baseline on the same images, 95 % interval)", claims)
    ref = summary["reference"].iloc[0] if len(summary) else ""
    lines += table_section(run_dir, "corruption_summary", "Common corruptions: mean accuracy and mCE" +
                           (f" (reference model: {ref})" if isinstance(ref, str) and ref else ""), summary)
    wide = acc.pivot_table(index=["model", "mode"], columns=["transform", "magnitude"], values="accuracy", sort=False)
    wide.columns = [f"{t} {m:g}" for t, m in wide.columns]
    lines += table_section(run_dir, "transform_accuracy", "Accuracy under transformations", wide.reset_index())
    if len(cons):
        cw = cons.pivot_table(index="model", columns=["transform", "magnitude"], values="consistency", sort=False)
        cw.columns = [f"{t} {m:g}" for t, m in cw.columns]
        lines += table_section(run_dir, "consistency", "Consistency under two random draws (Zhang 2019)", cw.reset_index())
    cwide = corr.pivot_table(index=["corruption"], columns=["model", "severity"], values="accuracy", sort=False)
    cwide.columns = [f"{m} s{s}" for m, s in cwide.columns]
    lines += table_section(run_dir, "corruption_accuracy", "Accuracy per corruption and severity", cwide.reset_index())
    lines += table_section(run_dir, "corruption_errors", "Corruption errors against the reference", errors)
    lines += table_section(run_dir, "clean_accuracy", "Clean accuracy", clean)
    return "\n".join(lines + figure_lines(figs))
