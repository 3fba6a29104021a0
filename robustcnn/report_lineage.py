"""Figures and report.md of `study lineage` and `robustcnn anatomy` runs, from the run folder's tables and
data/anatomy*.npz only (no torch). Registered under the kinds "lineage" and "anatomy" when robustcnn.report
is imported. `anatomy_lines` draws a study's anatomy (lineage, adversarial).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from robustcnn.figures import plot_robust_curves
from robustcnn.plotstyle import color_of, legend, model_colors, save_figure, subplots
from robustcnn.report import (
    curve_kind,
    figure_lines,
    header,
    read_manifest,
    read_table,
    reporter,
    run_colors,
    suite_of,
    table_section,
    wide_robust,
)
from robustcnn.report_setup import setup_section
from robustcnn.results import load_npz

MAX_COLUMNS = 8  # feature maps shown per layer
SAVED_MAPS = 8  # maps per layer in arrays saved before their count was (robustcnn.anatomy.anatomy_arrays' max_maps)
SHIFT_LABEL = "random shift ≤2 px (%)"  # tables/lineage.csv's shift2_accuracy in Markdown


def mosaic(maps: np.ndarray, cols: int, gap: int = 1) -> np.ndarray:
    """(K, H, W) -> one (rows*(H+gap), cols*(W+gap)) image, NaN between tiles (drawn blank)."""
    k, h, w = maps.shape
    rows = -(-k // cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for i in range(k):
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = maps[i]
    return out


def _show(ax: Axes, img: np.ndarray, **kw: Any) -> None:
    ax.imshow(np.ma.masked_invalid(img), interpolation="none", **kw)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_kernels(kernels: np.ndarray, title: str) -> Figure:
    """First-layer kernels (out, in, k, k) in one mosaic on one symmetric colour scale (mean over input planes
    when there are several; RGB kernels each stretched to [0,1])."""
    out, planes = kernels.shape[:2]
    cols = min(out, 16)
    fig, ax = subplots(figsize=(min(12.0, 0.55 * cols + 1), 0.55 * -(-out // cols) + 0.8))
    if planes == 3:
        span = np.ptp(kernels, axis=(1, 2, 3), keepdims=True)
        rgb = (kernels - kernels.min(axis=(1, 2, 3), keepdims=True)) / np.where(span > 0, span, 1)
        _show(ax, np.nan_to_num(np.stack([mosaic(rgb[:, c], cols) for c in range(3)], -1), nan=1.0))
        scale = "each kernel stretched to [0,1]"
    else:
        limit = float(np.abs(kernels).max()) or 1.0
        _show(ax, mosaic(kernels.mean(1), cols), cmap="RdBu_r", vmin=-limit, vmax=limit)
        scale = f"colour scale +-{limit:.3g}" + ("" if planes == 1 else f", mean over {planes} input planes")
    ax.set_title(f"{title}: {out} first-layer kernels {kernels.shape[2]}x{kernels.shape[3]} ({scale})", fontsize=8)
    return fig


def plot_feature_maps(npz: dict[str, np.ndarray], title: str) -> Figure:
    """Per layer one row of three panels: clean maps, adversarial maps (one colour scale shared by both, per layer) and
    their difference (a symmetric scale per layer). The input comes first."""
    names, kinds = list(npz["names"]), list(npz["kinds"])
    blocks = [(n, k, npz[f"maps__{i}"], npz[f"adv__{i}"]) for i, (n, k) in enumerate(zip(names, kinds))]
    counts = list(npz["counts"]) if "counts" in npz else [None] * len(blocks)  # older arrays: only those shown
    fig, axes = subplots(len(blocks) + 1, 3, figsize=(12, 3.0 + 1.25 * len(blocks)), squeeze=False,
                         gridspec_kw={"height_ratios": [2.4] + [1] * len(blocks)})
    x, x_adv = npz["input"], npz["input_adv"]
    for col, (img, label) in enumerate(((x, "input"), (x_adv, "adversarial input"))):
        shown = img[0] if img.shape[0] == 1 else np.clip(img.transpose(1, 2, 0), 0, 1)
        _show(axes[0, col], shown, cmap="gray", vmin=0, vmax=1)
        axes[0, col].set_title(label, fontsize=8)
    delta = (x_adv - x).mean(0)
    spread = float(np.abs(delta).max()) or 1.0
    _show(axes[0, 2], delta, cmap="RdBu_r", vmin=-spread, vmax=spread)
    axes[0, 2].set_title(f"perturbation (+-{spread:.2g})", fontsize=8)
    for row, ((name, kind, clean, adv), count) in enumerate(zip(blocks, counts), start=1):
        cols = min(MAX_COLUMNS, clean.shape[0])
        low, high = float(min(clean.min(), adv.min())), float(max(clean.max(), adv.max()))
        diff = adv - clean
        spread = float(np.abs(diff).max()) or 1.0
        _show(axes[row, 0], mosaic(clean, cols), cmap="viridis", vmin=low, vmax=high)
        _show(axes[row, 1], mosaic(adv, cols), cmap="viridis", vmin=low, vmax=high)
        _show(axes[row, 2], mosaic(diff, cols), cmap="RdBu_r", vmin=-spread, vmax=spread)
        axes[row, 0].set_ylabel(f"{name}\n{kind}", fontsize=7)
        axes[row, 0].set_title(f"clean, {_how_many(clean.shape[0], count)} {clean.shape[1]}x{clean.shape[2]} "
                               f"(scale {low:.2g}..{high:.2g})", fontsize=7)
        axes[row, 1].set_title("adversarial (same scale)", fontsize=7)
        axes[row, 2].set_title(f"difference (+-{spread:.2g})", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _how_many(shown: int, count: int | None) -> str:
    """'6 maps', 'the first 8 of 16 maps'; for arrays saved before the count was, 'the first 8 maps' (at most 8
    were saved, so fewer means all)."""
    if count is None:
        return f"{shown} maps" if shown < SAVED_MAPS else f"the first {shown} maps"
    return f"{shown} maps" if int(count) == shown else f"the first {shown} of {int(count)} maps"


def plot_growth(growth: pd.DataFrame, colors: dict[str, str] | None = None, setting: str = "") -> Figure:
    """Relative change ||f(x_adv) - f(x)|| / ||f(x)|| through the layers, one line per model. setting: what made
    x_adv ('test image 0, PGD-40 L-inf eps 0.15'), for the title. The x axis names the layers when every model
    has the same ones, else it counts them."""
    colors = model_colors(growth["model"]) if colors is None else colors
    fig, ax = subplots(figsize=(7.5, 3.8))
    layer_lists = [tuple(zip(g["layer"], g["kind"])) for _, g in growth.groupby("model", sort=False)]
    for model, g in growth.groupby("model", sort=False):
        ax.plot(range(len(g)), g["relative_change"], marker="o", color=color_of(colors, model), label=model)
    longest = max(layer_lists, key=len)
    if len(set(layer_lists)) == 1:
        ax.set_xticks(range(len(longest)), [f"{n}\n{k}" for n, k in longest], fontsize=6)
        ax.set_xlabel("layer (input first)")
    else:  # models with other layers: a position means the k-th shown layer of each
        ax.set_xticks(range(len(longest)))
        ax.set_xlabel("layer position (0 = input; models with different layers)")
    ax.set(ylabel="relative change (log scale)", yscale="log",
           title="where the adversarial perturbation grows" + (f" ({setting})" if setting else ""))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
    # minor ticks labelled (as plain numbers) only when the values span under a decade: else their labels pile up
    values = growth["relative_change"].to_numpy(dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    narrow = len(values) > 0 and values.max() < 10 * values.min()
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2g") if narrow else NullFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=6)
    ax.grid(alpha=0.3)
    legend(ax)
    return fig


def _steps(npz: dict[str, Any], config: dict[str, Any]) -> int:
    """The anatomy's PGD steps: saved with the arrays; before they were, `robustcnn anatomy` recorded them in its
    config and the studies always took 40."""
    return int(npz["steps"]) if "steps" in npz else int(config.get("steps", 40))


def _config(run_dir: Path) -> dict[str, Any]:
    config = (read_manifest(run_dir).get("config") or {}) if (run_dir / "manifest.json").exists() else {}
    return config if isinstance(config, dict) else {}


def anatomy_section(run_dir: Path, npz_path: Path, model: str, config: dict[str, Any] | None = None) -> list[str]:
    """Kernels and feature-map figures for one model's data/anatomy*.npz (config: the run's, read when not given)."""
    npz = load_npz(npz_path)
    steps = _steps(npz, _config(run_dir) if config is None else config)
    names = list(npz["class_names"])
    label, clean, adv = (names[int(npz[k])] for k in ("label", "clean_pred", "adv_pred"))
    image = f"test image {int(npz['index'])}" if "index" in npz else "test image"
    title = (f"{model}: {image} with label {label}, predicted {clean}; PGD-{steps} L-inf eps "
             f"{float(npz['epsilon']):g} -> predicted {adv}")
    stem = npz_path.stem.removeprefix("anatomy").lstrip("_")
    suffix = f"_{stem}" if stem else ""
    lines = [f"## Anatomy: {model}", "", title, ""]
    if "kernels" in npz:
        lines += [f"![kernels]({save_figure(plot_kernels(npz['kernels'], model), run_dir, 'kernels' + suffix)})", ""]
    lines += [f"![feature maps]({save_figure(plot_feature_maps(npz, title), run_dir, 'feature_maps' + suffix)})", ""]
    return lines


@reporter("anatomy")
def report_anatomy(run_dir: Path) -> str:
    growth = read_table(run_dir, "anatomy")
    model = str(growth["model"].iloc[0])
    lines = header(run_dir, f"Anatomy: {model}")
    lines += ["Feature maps after every convolution and pooling (S- and C-layers for the Neocognitron) for one test "
              "image and its PGD example; each layer's clean and adversarial maps share one colour scale. The table "
              "gives the relative L2 change of each layer's whole output.", ""]
    lines += setup_section(run_dir, ["**n**: one test image and its PGD adversarial example"])
    config = _config(run_dir)
    setting = _anatomy_setting({model: run_dir / "data" / "anatomy.npz"}, config)
    lines += table_section(run_dir, "anatomy", f"Growth of the perturbation through the layers ({setting}relative L2 "
                           "change of each layer's whole output)", growth)
    lines += [f"![growth]({save_figure(plot_growth(growth, setting=setting.rstrip('; ')), run_dir, 'growth')})", ""]
    return "\n".join(lines + anatomy_section(run_dir, run_dir / "data" / "anatomy.npz", model, config))


@reporter("lineage")
def report_lineage(run_dir: Path) -> str:
    table, robust = read_table(run_dir, "lineage"), read_table(run_dir, "robust_accuracy")
    colors = run_colors(run_dir, table, robust)
    n = int(robust["n"].iloc[0])
    lines = header(run_dir, "Lineage: perceptron -> Neocognitron -> LeNet-5")
    lines += ["One dataset, each model trained by its own rule (no gradient for the perceptron and the Neocognitron). "
              "Attacks on the no-backprop models go through their differentiable forward pass (the lint's gradient "
              "check says whether that is meaningful).", ""]
    lines += setup_section(run_dir, [f"**n**: clean accuracy on the whole test split; robust accuracy on the first "
                                     f"n={n} test images, so its eps=0 column can differ from the clean accuracy"],
                           suite_of(robust))
    shift = (f"; {SHIFT_LABEL}: accuracy under one random integer shift per image, dx and dy each within +-2 px, "
             f"black fill (the invariance study's 'shift' claim, same draw), on the same first n={n}"
             if "shift2_accuracy" in table else "")
    table = table.rename(columns={"shift2_accuracy": SHIFT_LABEL})
    lines += table_section(run_dir, "lineage", "Side by side (clean accuracy: whole test split; <attack>_eps<e>: "
                           f"robust accuracy on the first n={n}{shift})", table,
                           percent=[c for c in table.columns if "_eps" in str(c)] + [SHIFT_LABEL])
    wide, eps_cols = wide_robust(robust)
    lines += table_section(run_dir, "robust_accuracy", f"Robust accuracy, % (test, first n={n} images; the eps=0 "
                           "column is accuracy on those n, not the whole split)", wide, percent=eps_cols)
    figs = [("robust accuracy vs epsilon", save_figure(plot_robust_curves(robust, colors, curve_kind(robust),
                                                                          suite=suite_of(robust)),
                                                       run_dir, "robust_accuracy"))]
    if (run_dir / "tables" / "lint.csv").exists():
        lines += table_section(run_dir, "lint", "Evaluation lint")
    lines += figure_lines(figs)
    return "\n".join(lines + anatomy_lines(run_dir, [str(m) for m in table["model"]], colors))


def _npz_model(path: Path) -> str:
    """The model an anatomy__<name>.npz shows (runs before the label was stored: the file name's)."""
    npz = load_npz(path, keys=("model",))  # the label alone: the maps are read once, by anatomy_section
    return str(npz["model"]) if "model" in npz else path.stem.split("__", 1)[1]


def _anatomy_setting(found: dict[str, Path], config: dict) -> str:
    """'test image 3, PGD-40 L-inf eps 0.15; ' from the saved arrays (older ones lack the index: the config's)."""
    if not found:
        return ""
    npz = load_npz(next(iter(found.values())), keys=("index", "steps", "epsilon"))
    index = int(npz["index"]) if "index" in npz else config.get("anatomy_index")
    return ((f"test image {index}, " if index is not None else "") +
            f"PGD-{_steps(npz, config)} L-inf eps {float(npz['epsilon']):g}; ")


def anatomy_lines(run_dir: Path, models: list[str], colors: dict[str, str]) -> list[str]:
    """A study's anatomy: the growth table and figure, then kernels and feature maps per model in `models`' order.
    A model of the run without its data/anatomy__<name>.npz, when the config asked for anatomy, has no
    convolution or pooling layer: one line names it."""
    found = {_npz_model(p): p for p in sorted((run_dir / "data").glob("anatomy__*.npz"))}
    config = _config(run_dir)
    wanted = int(config.get("anatomy_index", 0 if found else -1)) >= 0
    lines = []
    if (run_dir / "tables" / "anatomy.csv").exists():
        growth = read_table(run_dir, "anatomy")
        setting = _anatomy_setting(found, config)
        lines += table_section(run_dir, "anatomy", "Growth of the perturbation through the layers (" + setting +
                               "relative L2 change of each layer's whole output)", growth)
        figure = plot_growth(growth, colors, setting.rstrip("; "))
        lines += [f"![growth]({save_figure(figure, run_dir, 'growth')})", ""]
    drawn = set(growth["model"].astype(str)) if (run_dir / "tables" / "anatomy.csv").exists() else set()
    skipped = [m for m in models if m not in found and m not in drawn] if wanted else []
    if skipped:
        lines += [f"No anatomy for {', '.join(skipped)}: no convolution or pooling layer to show.", ""]
    lost = [m for m in models if m not in found and m in drawn]  # in the growth table, but its arrays are gone
    if lost:
        lines += [f"No anatomy figures for {', '.join(lost)}: its arrays (data/anatomy__<model>.npz) are missing; "
                  "rerun the study to write them again.", ""]
    for model in sorted(found, key=lambda m: models.index(m) if m in models else len(models)):
        lines += anatomy_section(run_dir, found[model], model, config)
    return lines
