"""Figures and report.md, drawn only from a run folder's saved tables and data (no torch, no retraining),
so `robustcnn report <run-dir>` can redraw any run.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from robustcnn import report_extra
from robustcnn.errors import UsageError, first_line
from robustcnn.results import (
    atomic_write_bytes,
    atomic_write_text,
    markdown_table,
    probe_writable,
    read_manifest,
    run_files,
    write_json,
)

# Figures are matplotlib Figure objects, never pyplot's: no backend switch, no global rcParams change, no
# figure shown in (or leaked into) a notebook that imports robustcnn.


def subplots(*args: Any, figsize: tuple[float, float] | None = None, **kwargs: Any) -> tuple[Figure, Any]:
    """pyplot.subplots without pyplot."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)

REPORTERS: dict[str, Callable[[Path], str]] = {}


def reporter(kind: str) -> Callable:
    def decorate(fn: Callable[[Path], str]) -> Callable[[Path], str]:
        REPORTERS[kind] = fn
        return fn
    return decorate


def redraw(run_dir: str | Path, kind: str | None = None) -> Path:
    """Redraw every figure and report.md of a run folder; returns the report's path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} is not a folder; pass a run folder such as results/train/<run-id>")
    if kind is None:
        kind = read_manifest(run_dir)["kind"]
    if kind not in REPORTERS:
        raise UsageError(f"no report for runs of kind '{kind}'")
    _check_writable_run(run_dir)
    for csv in sorted((run_dir / "tables").glob("*.csv")):  # the Markdown copies, from the CSVs
        md = csv.with_suffix(".md")
        if md.exists():
            first = md.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
            title = first + "\n\n" if first.startswith("### ") else ""
            atomic_write_text(md, title + markdown_table(read_csv(csv)) + "\n")
    try:
        body = REPORTERS[kind](run_dir)
    except (KeyError, IndexError, TypeError, ValueError) as err:  # a table without the columns/rows it needs
        if isinstance(err, UsageError):
            raise
        raise UsageError(f"the tables of {run_dir} do not have the layout a {kind} report needs ({first_line(err)}); "
                         "restore them or rerun the study") from err
    report = atomic_write_text(run_dir / "report.md", body)
    if (run_dir / "manifest.json").exists():  # a finished run: keep its file list true
        manifest = read_manifest(run_dir)
        manifest["files"] = run_files(run_dir)
        write_json(run_dir / "manifest.json", manifest)
    return report


def read_table(run_dir: Path, name: str) -> pd.DataFrame:
    path = run_dir / "tables" / f"{name}.csv"
    if not path.exists():
        raise UsageError(f"{path} is missing; the run folder is incomplete (rerun the study)")
    return read_csv(path)


def read_csv(path: Path) -> pd.DataFrame:
    """A saved table; an empty, truncated or non-CSV file is a UsageError naming it."""
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as err:
        raise UsageError(f"{path} is not a readable table ({first_line(err)}); restore it or rerun the study") from err
    if df.columns.empty:
        raise UsageError(f"{path} has no columns; restore it or rerun the study")
    return df


def _check_writable_run(run_dir: Path) -> None:
    """A redraw rewrites figures and report.md in place: fail before drawing if the folder is read-only."""
    try:
        probe_writable(run_dir)
    except OSError as err:
        raise UsageError(f"cannot write to run folder {run_dir} ({err.strerror or first_line(err)}); redraw a "
                         "writable copy of it") from err


def save_figure(fig: Figure, run_dir: Path, name: str) -> str:
    """figures/<name>.png and .svg, written atomically; returns the PNG's path relative to the run."""
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": "robustcnn"}):  # stable SVG ids: a redraw is byte-identical
            fig.savefig(buf, format=fmt, dpi=130, bbox_inches="tight",
                        metadata={"Date": None} if fmt == "svg" else None)
        atomic_write_bytes(run_dir / "figures" / f"{name}.{fmt}", buf.getvalue())
    return f"figures/{name}.png"


def header(run_dir: Path, title: str) -> list[str]:
    lines = [f"# {title}", ""]
    if (run_dir / "manifest.json").exists():
        m = read_manifest(run_dir)
        lines += [f"Run `{m['run_id']}`: {m['device']}, torch {m['versions'].get('torch')}, "
                  f"commit `{m.get('git_commit') or 'n/a'}`, {m['wall_seconds']:.0f} s. "
                  "Resolved config and versions: [manifest.json](manifest.json).", ""]
    return lines


def table_section(run_dir: Path, name: str, title: str, df: pd.DataFrame | None = None) -> list[str]:
    df = read_table(run_dir, name) if df is None else df
    return [f"## {title}", "", markdown_table(df), "", f"([CSV](tables/{name}.csv))", ""]


# ------------------------------------------------------------------ train runs
def plot_history(histories: dict[str, pd.DataFrame], title: str) -> Figure:
    """Train (eval mode) vs validation and test accuracy and loss per epoch (the seed's Chart 4); the best
    validation epoch is marked when there is a validation split (selection never looks at test)."""
    fig, (ax_acc, ax_loss) = subplots(1, 2, figsize=(11, 4))
    for i, (label, h) in enumerate(histories.items()):
        color = f"C{i}"
        prefix = f"{label} " if len(histories) > 1 else ""
        ax_acc.plot(h["epoch"], h["train_accuracy"], color=color, ls="--", label=f"{prefix}train (eval mode)")
        ax_acc.plot(h["epoch"], h["test_accuracy"], color=color, label=f"{prefix}test")
        ax_loss.plot(h["epoch"], h["train_loss"], color=color, ls="--", label=f"{prefix}train (eval mode)")
        ax_loss.plot(h["epoch"], h["test_loss"], color=color, label=f"{prefix}test")
        if "val_accuracy" in h and h["val_accuracy"].notna().any():
            ax_acc.plot(h["epoch"], h["val_accuracy"], color=color, ls=":", label=f"{prefix}validation")
            ax_loss.plot(h["epoch"], h["val_loss"], color=color, ls=":", label=f"{prefix}validation")
            monitor = "robust_val_accuracy" if "robust_val_accuracy" in h else "val_accuracy"  # as train() selects
            best = h.loc[h[monitor].idxmax()]
            ax_acc.plot(best["epoch"], best["val_accuracy"], "o", color=color, mfc="none", ms=9)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (o = selected epoch, on validation)")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


@reporter("train")
def report_train(run_dir: Path) -> str:
    history = read_table(run_dir, "history")
    summary = read_table(run_dir, "summary")
    s = summary.iloc[0]
    fig = save_figure(plot_history({s["model"]: history}, f"{s['model']} on {s['dataset']}"), run_dir, "overfitting")
    lines = header(run_dir, f"Training: {s['model']} on {s['dataset']}")
    best = (f"best validation epoch {int(s['best_epoch'])} (test accuracy there {s['test_accuracy_at_best']:.4f})"
            if "test_accuracy_at_best" in s and pd.notna(s["best_epoch"]) else "no validation split, no best epoch")
    lines += [f"Final train accuracy (eval mode, n={int(s.get('train_eval_n', 0))}) {s['train_accuracy']:.4f}, test "
              f"accuracy {s['test_accuracy']:.4f} (gap {s['train_accuracy'] - s['test_accuracy']:+.4f}); {best}; "
              f"{s['seconds_per_epoch']:.2f} s per epoch.", "",
              f"![overfitting curve]({fig})", ""]
    lines += table_section(run_dir, "history", "History")
    return "\n".join(lines)


# ------------------------------------------------------------------ adversarial studies
CURVE_WORDS = {"cumulative": "cumulative curve: a sample broken at a smaller epsilon counts as broken at every larger "
                             "one (each epsilon attacks only the samples still standing)",
               "per-epsilon": "per-epsilon curve: every epsilon attacked afresh"}


def curve_kind(robust: pd.DataFrame) -> str:
    """'cumulative' or 'per-epsilon' from a robust-accuracy table (tables without the column are cumulative:
    it was the only curve before the column existed)."""
    kinds = sorted(set(robust["curve"])) if "curve" in robust else ["cumulative"]
    return kinds[0] if len(kinds) == 1 else "/".join(kinds)


def plot_robust_curves(robust: pd.DataFrame) -> Figure:
    threats = list(dict.fromkeys(robust["threat_model"]))
    fig, axes = subplots(1, len(threats), figsize=(6 * len(threats), 4.2), squeeze=False)
    models = list(dict.fromkeys(robust["model"]))
    for ax, threat in zip(axes[0], threats):
        part = robust[robust["threat_model"] == threat]
        for (model, attack), g in part.groupby(["model", "attack"], sort=False):
            worst = attack.startswith("worst_case")
            ax.plot(g["epsilon"], g["robust_accuracy"], marker="o", ms=3, color=f"C{models.index(model)}",
                    ls=":" if worst else ("--" if attack in ("fgsm", "l2-fgm") else "-"), lw=2.5 if worst else 1.5,
                    label=f"{model} / {attack}")
        ax.set(xlabel=f"epsilon ({threat}, fraction of pixel range)", ylabel="robust accuracy", ylim=(-0.02, 1.02),
               title=f"robust accuracy vs epsilon ({threat}, {curve_kind(robust)})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def plot_gallery(npz: dict[str, np.ndarray]) -> Figure:
    """Per model: original, amplified perturbation, adversarial, with predictions and confidences
    (the spirit of Goodfellow et al.'s panda -> gibbon figure)."""
    models = [str(m) for m in npz["models"]]
    names = [str(c) for c in npz["class_names"]]
    k = len(npz[f"x__{models[0]}"])
    fig, axes = subplots(k, 3 * len(models), figsize=(2.0 * 3 * len(models), 2.1 * k), squeeze=False)

    def show(ax: Axes, img: np.ndarray, title: str) -> None:
        img = np.transpose(img, (1, 2, 0))
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=7)
        ax.axis("off")

    for m, model in enumerate(models):
        x, adv = npz[f"x__{model}"], npz[f"adv__{model}"]
        for i in range(k):
            delta = adv[i] - x[i]
            scale = float(np.abs(delta).max())
            cols = axes[i, 3 * m:3 * m + 3]
            label = int(npz[f"labels__{model}"][i])
            show(cols[0], x[i], f"{model} (true {names[label]})\n{names[npz[f'clean_pred__{model}'][i]]} "
                                f"({npz[f'clean_conf__{model}'][i]:.0%})")
            if scale > 0:
                show(cols[1], 0.5 + 0.5 * delta / scale, f"perturbation\nx{1 / scale:.1f}, |d|inf={scale:.3g}")
            else:
                why = "misclassified clean" if npz[f"clean_pred__{model}"][i] != label else "attack failed"
                show(cols[1], 0.5 + 0 * delta, f"no perturbation\n({why})")
            show(cols[2], adv[i], f"adversarial\n{names[npz[f'adv_pred__{model}'][i]]} "
                                  f"({npz[f'adv_conf__{model}'][i]:.0%})")
    fig.suptitle(f"{npz['attack']} up to epsilon {float(npz['epsilon']):g} (each example at the smallest grid epsilon "
                 "that breaks it): original | amplified perturbation | adversarial", fontsize=10)
    return fig


def plot_norms(samples: pd.DataFrame) -> Figure | None:
    """Histograms of the perturbation norms (L-inf and L2) of every adversarial example found, per model x
    attack at its largest epsilon. Examples broken at a smaller epsilon keep that smaller perturbation, so
    the L-inf row is the distribution of the smallest grid epsilon that breaks each example."""
    found = samples[samples["perturbation_l2"].notna() & ~samples["attack"].str.startswith("worst_case")]
    if found.empty:
        return None
    found = found[found["epsilon"] == found.groupby("attack")["epsilon"].transform("max")]
    attacks = list(dict.fromkeys(found["attack"]))
    fig, axes = subplots(2, len(attacks), figsize=(4.5 * len(attacks), 6.5), squeeze=False)
    for col, attack in enumerate(attacks):
        part = found[found["attack"] == attack]
        for row, norm in enumerate(("perturbation_linf", "perturbation_l2")):
            ax = axes[row, col]
            for i, (model, g) in enumerate(part.groupby("model", sort=False)):
                ax.hist(g[norm], bins=30, alpha=0.5, color=f"C{i}", label=f"{model} (n={len(g)})")
            ax.set(xlabel=norm.replace("perturbation_", "") + " norm", ylabel="adversarial examples",
                   title=f"{attack} (eps up to {part['epsilon'].iloc[0]:g}, {part['threat_model'].iloc[0]})")
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_adversarial_training(histories: dict[str, pd.DataFrame]) -> Figure:
    """Clean and robust test accuracy per epoch (robust overfitting, Rice et al. 2020)."""
    fig, ax = subplots(figsize=(6.5, 4))
    for i, (label, h) in enumerate(histories.items()):
        ax.plot(h["epoch"], h["test_accuracy"], color=f"C{i}", label=f"{label} clean test")
        ax.plot(h["epoch"], h["robust_test_accuracy"], color=f"C{i}", ls="--", label=f"{label} robust test (PGD)")
        running = "train_accuracy_running" if "train_accuracy_running" in h else "train_accuracy"
        ax.plot(h["epoch"], h[running], color=f"C{i}", ls=":", label=f"{label} adversarial train (running)")
    ax.set(xlabel="epoch", ylabel="accuracy", title="adversarial training", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


@reporter("adversarial")
def report_adversarial(run_dir: Path) -> str:
    clean, robust, lint = (read_table(run_dir, t) for t in ("clean_accuracy", "robust_accuracy", "lint"))
    samples = read_table(run_dir, "robust_samples")
    histories = {p.stem[len("history_"):]: read_csv(p) for p in sorted((run_dir / "tables").glob("history_*.csv"))}
    lines = header(run_dir, "Adversarial robustness study")
    figs = [("robust accuracy vs epsilon", save_figure(report_extra.with_radius_curves(
        plot_robust_curves(robust), run_dir, robust), run_dir, "robust_accuracy"))]
    if (run_dir / "data" / "gallery.npz").exists():
        with np.load(run_dir / "data" / "gallery.npz") as npz:
            figs.append(("adversarial examples", save_figure(plot_gallery(dict(npz)), run_dir, "gallery")))
    norms = plot_norms(samples)
    if norms is not None:
        figs.append(("perturbation norms", save_figure(norms, run_dir, "perturbation_norms")))
    adv_hist = {k: h for k, h in histories.items() if "robust_test_accuracy" in h}
    if adv_hist:
        figs.append(("adversarial training", save_figure(plot_adversarial_training(adv_hist), run_dir,
                                                         "adversarial_training")))
    if histories:
        figs.append(("training curves", save_figure(plot_history(histories, "training"), run_dir, "training")))
    wide = robust.pivot_table(index=["model", "attack"], columns="epsilon", values="robust_accuracy", sort=False)
    wide.columns = [f"eps={c:g}" for c in wide.columns]
    lines += table_section(run_dir, "clean_accuracy", "Clean accuracy", clean)
    lines += report_extra.suite_sentence(robust)
    lines += table_section(run_dir, "robust_accuracy", f"Robust accuracy (first n={int(robust['n'].iloc[0])} test "
                           f"examples; {CURVE_WORDS.get(curve_kind(robust), curve_kind(robust))}; worst_case = "
                           "per-sample minimum over attacks)", wide.reset_index())
    lines += report_extra.radius_lines(run_dir)
    verdicts = lint.groupby("model")["status"].agg(lambda s: ", ".join(f"{v} {k}" for k, v in s.value_counts().items()))
    lines += ["Lint summary: " + "; ".join(f"**{m}**: {v}" for m, v in verdicts.items()), ""]
    lines += table_section(run_dir, "lint", "Evaluation lint (Carlini et al. 2019)", lint)
    lines += table_section(run_dir, "attack_cost", "Attack cost (passes counted in examples)")
    for title, path in figs:
        lines += [f"## {title.capitalize()}", "", f"![{title}]({path})", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ benchmark scorecards
def plot_scorecard(robust: pd.DataFrame, references: pd.DataFrame, model: str) -> Figure:
    """The model's robust accuracy vs epsilon (with 95 % intervals) beside reference models' worst case."""
    fig, ax = subplots(figsize=(7, 4.5))
    for i, (attack, g) in enumerate(robust.groupby("attack", sort=False)):
        worst = attack.startswith("worst_case")
        ax.errorbar(g["epsilon"], g["robust_accuracy"], yerr=[g["robust_accuracy"] - g["ci_low"],
                    g["ci_high"] - g["robust_accuracy"]], marker="o", ms=3, capsize=2, lw=2.5 if worst else 1.2,
                    color="k" if worst else f"C{i}", label=f"{model} / {attack}")
    for j, ((source, ref), g) in enumerate(references.groupby(["source", "model"], sort=False)):
        ax.plot(g["epsilon"], g["robust_accuracy"], ls=":", color=f"C{(j + 4) % 10}", label=f"{ref} ({source})")
    ax.set(xlabel="epsilon (fraction of pixel range)", ylabel="robust accuracy", ylim=(-0.02, 1.02),
           title=f"robust accuracy vs epsilon ({curve_kind(robust)}; bars: 95 % Wilson interval over the examples)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


@reporter("benchmark")
def report_benchmark(run_dir: Path) -> str:
    import json

    card = json.loads((run_dir / "scorecard.json").read_text())
    robust, references = read_table(run_dir, "robust_accuracy"), read_table(run_dir, "reference_curves")
    fig = save_figure(plot_scorecard(robust, references, card["model"]), run_dir, "robust_accuracy")
    lines = header(run_dir, f"Robustness scorecard: {card['model']} on {card['dataset']}")
    thr = ", ".join(f"{k.replace('_images_per_second', '')} {v:,.0f}/s" for k, v in card["throughput"].items())
    lines += [f"Clean accuracy **{card['clean_accuracy']:.4f}** on the first {card['n_examples']} test examples; "
              f"{card['parameters']:,} parameters; weights hash `{card['weights_hash']}`; throughput (images): "
              f"{thr}; {card['wall_seconds']:.0f} s in all.", "", f"![robust accuracy]({fig})", ""]
    lines += report_extra.suite_sentence(robust)
    seeds = int(card.get("attack_seeds", 1))
    statistic = (f"per example, robust only if every one of {seeds} attack seeds fails; " if seeds > 1 else "")
    lines += table_section(run_dir, "robust_accuracy", f"Robust accuracy ({statistic}95 % Wilson intervals over the "
                           f"{card['n_examples']} examples; {CURVE_WORDS.get(curve_kind(robust), curve_kind(robust))}; "
                           "worst_case: robust under every attack)",
                           robust.drop(columns=["model"], errors="ignore"))
    lines += table_section(run_dir, "preflight", "Pre-flight checks")
    lines += table_section(run_dir, "lint", "Evaluation lint (Carlini et al. 2019)")
    lines += table_section(run_dir, "attack_cost", "Attack cost")
    return "\n".join(lines)


# ------------------------------------------------------------------ generalization studies (sweeps)
def _errorbars(ax: Axes, x: pd.Series, g: pd.DataFrame, col: str, **kw) -> None:
    ax.errorbar(x, g[f"{col}_mean"], yerr=g[f"{col}_std"], marker="o", ms=3, capsize=2, **kw)


def plot_sweep_curves(summary: pd.DataFrame, peaks: pd.DataFrame, rff: pd.DataFrame | None,
                      history: pd.DataFrame | None) -> Figure:
    """Test error with train error beside it for each sweep; threshold (dotted) and a peak (red) marked only
    when it survives the noise model (robustcnn.peaks), else the panel says so."""
    panels = [s for s in ("model-wise", "sample-wise") if s in set(summary["sweep"])] + (["rff"] if rff is not None else [])
    epoch_rows = peaks[peaks["sweep"].str.startswith("epoch-wise")]
    if history is not None and len(epoch_rows):
        panels.append(epoch_rows["sweep"].iloc[0])
    fig, axes = subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    for ax, sweep in zip(axes[0], panels):
        if sweep == "rff":
            g = rff.groupby("features", as_index=False).mean(numeric_only=True)
            x, test, train = g["features"], g["test_error"], g["train_error"]
            ax.plot(x, test, "o-", ms=3, label="test error")
            ax.plot(x, train, "s--", ms=3, label="train error")
            ax.set(xlabel=f"random features N (n = {int(g['train_size'].iloc[0])})", title="random Fourier features")
        elif sweep.startswith("epoch-wise"):
            width = float(sweep.split("=")[1].rstrip(")"))
            h = history[(history["sweep"] == "model-wise") & (history["x"].astype(float) == width)]
            g = h.groupby("epoch", as_index=False)[["train_accuracy", "test_accuracy"]].mean()
            ax.plot(g["epoch"], 1 - g["test_accuracy"], label="test error")
            ax.plot(g["epoch"], 1 - g["train_accuracy"], ls="--", label="train error")
            ax.set(xlabel="epoch", title=sweep)
        else:
            g = summary[summary["sweep"] == sweep]
            x = g["x"].astype(float)
            _errorbars(ax, x, g, "test_error", label="test error")
            _errorbars(ax, x, g, "train_error", ls="--", label="train error")
            ax.set(xlabel="width k" if sweep == "model-wise" else "training examples", title=f"{sweep} double descent")
        ax.set_xscale("log" if not sweep.startswith("epoch-wise") else "linear")
        p = peaks[peaks["sweep"] == sweep]
        if len(p) and not pd.isna(p["interpolation_threshold"].iloc[0]):
            ax.axvline(p["interpolation_threshold"].iloc[0], color="gray", ls=":", label="interpolation threshold")
        _mark_peak(ax, p)
        ax.set_ylabel("error")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
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


def peak_sentences(peaks: pd.DataFrame) -> list[str]:
    """One line per sweep: the peak with its margin in standard errors, or why none is reported."""
    from robustcnn.peaks import NO_PEAK

    if "significant" not in peaks:
        return []
    lines = []
    for r in peaks.itertuples():
        if pd.isna(r.candidate_at) or r.peak_height <= 0:
            why = "too few points" if pd.isna(r.candidate_at) else "no interior point is above both side minima"
            lines.append(f"- **{r.sweep}**: {NO_PEAK} ({why})")
            continue
        bump = (f"at {r.candidate_at:g}, test error {r.peak_test_error:.3f} is {r.peak_height:+.3f} above the higher "
                f"side minimum (SE {r.peak_se:.3f}; {r.peak_z:.1f} SE above both sides")
        width = f", {int(r.raised_width)} consecutive points raised, {int(r.min_width)} needed" if r.min_width > 1 else ""
        verdict = f"peak {bump}{width})" if r.significant else f"{NO_PEAK}: the highest bump is {bump}, " \
                                                                 f"{r.z:g} needed{width})"
        lines.append(f"- **{r.sweep}**: {verdict}")
    n = int(peaks["n_test"].iloc[0]) if len(peaks) else 0
    return ["A peak is reported only when it exceeds the lowest test error on both sides by more than "
            f"{peaks['z'].iloc[0]:g} standard errors; each point's SE combines the spread over seeds (sd/sqrt(k)) "
            f"and the binomial error of the {n}-image test set. Epoch-wise, the raised region must also span "
            "several consecutive epochs above side minima held as long.", "", *lines, ""]


def _variant_bars(summary: pd.DataFrame, height: float) -> tuple[Figure, Axes, pd.DataFrame, np.ndarray]:
    """A bar-chart axis with one labelled slot per variant of a study."""
    g = summary[summary["sweep"] == "variants"]
    fig, ax = subplots(figsize=(max(6, 1.1 * len(g)), height))
    pos = np.arange(len(g))
    ax.set_xticks(pos, g["variant"], rotation=25, ha="right", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return fig, ax, g, pos


def plot_variants(summary: pd.DataFrame, title: str) -> Figure:
    """Train and test accuracy (mean +- std over seeds) per variant."""
    fig, ax, g, pos = _variant_bars(summary, 4)
    ax.bar(pos - 0.2, g["train_accuracy_mean"], 0.4, yerr=g["train_accuracy_std"], capsize=3, label="train")
    ax.bar(pos + 0.2, g["test_accuracy_mean"], 0.4, yerr=g["test_accuracy_std"], capsize=3, label="test")
    ax.set(ylabel="accuracy", ylim=(0, 1.05), title=title)
    ax.legend()
    return fig


def plot_epochs_to_fit(summary: pd.DataFrame, threshold: float) -> Figure:
    """Memorization: how many epochs each variant needs to fit its training set."""
    fig, ax, g, pos = _variant_bars(summary, 3.8)
    ax.bar(pos, g["epochs_to_fit_mean"].fillna(0), yerr=g["epochs_to_fit_std"].fillna(0), capsize=3, color="C2")
    for i, v in enumerate(g["epochs_to_fit_mean"]):
        if pd.isna(v):
            ax.text(i, 0, "not fitted", ha="center", va="bottom", fontsize=7)
    ax.set(ylabel=f"epochs to {threshold:.0%} train accuracy", title="epochs to fit the training set")
    return fig


def _mean_histories(history: pd.DataFrame) -> dict[str, pd.DataFrame]:
    cols = ["train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    return {v: g.groupby("epoch", as_index=False)[cols].mean() for v, g in history.groupby("variant", sort=False)}


def report_sweep(run_dir: Path) -> str:
    study = read_manifest(run_dir)["config"]["study"] if (run_dir / "manifest.json").exists() else "sweep"
    lines = header(run_dir, f"Study: {study}")
    tables = run_dir / "tables"
    rff = read_csv(tables / "rff.csv") if (tables / "rff.csv").exists() else None
    summary = read_table(run_dir, "summary") if (tables / "summary.csv").exists() else pd.DataFrame(columns=["sweep"])
    figs = []
    if (tables / "peaks.csv").exists():
        peaks = read_table(run_dir, "peaks")
        history = read_table(run_dir, "history") if (tables / "history.csv").exists() else None
        figs.append(("double descent", save_figure(plot_sweep_curves(summary, peaks, rff, history), run_dir,
                                                   "double_descent")))
        lines += table_section(run_dir, "peaks", "Interpolation thresholds and peaks", peaks)
        lines += peak_sentences(peaks)
    if (summary["sweep"] == "variants").any():
        if study == "overfitting":
            history = read_table(run_dir, "history")
            figs.append(("overfitting curves", save_figure(plot_history(_mean_histories(history), "train vs test "
                                                                        "(mean over seeds)"), run_dir, "overfitting")))
        figs.append(("train and test accuracy", save_figure(plot_variants(summary, study), run_dir, "variants")))
        if study == "memorization":
            threshold = read_manifest(run_dir)["config"]["fit_threshold"]
            figs.append(("epochs to fit", save_figure(plot_epochs_to_fit(summary, threshold), run_dir, "epochs_to_fit")))
    if len(summary):
        keep = [c for c in summary.columns if c.split("_")[0] in ("sweep", "variant", "x", "seeds") or
                c.startswith(("train_accuracy", "test_accuracy", "gap", "epochs_to_fit", "best_epoch"))]
        lines += table_section(run_dir, "summary", "Summary (mean and std over seeds)", summary[keep])
        lines += table_section(run_dir, "point_cost", "Cost per point")
    if rff is not None:
        lines += table_section(run_dir, "rff", "Random Fourier features")
    for title, path in figs:
        lines += [f"## {title.capitalize()}", "", f"![{title}]({path})", ""]
    return "\n".join(lines)


for _study in ("overfitting", "generalization", "memorization", "double-descent", "sweep"):
    REPORTERS[_study] = report_sweep

# registers the "invariance", "lineage" and "anatomy" reporters
from robustcnn import report_invariance, report_lineage  # noqa: E402,F401,I001
