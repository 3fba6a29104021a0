"""report.md of the generalization studies (overfitting, generalization, memorization, double descent): tables as
`mean ± std` over seeds, peaks with their noise margins, figures from robustcnn.figures_sweep. Registered for the
sweep kinds when robustcnn.report is imported.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from robustcnn.figures import plot_history
from robustcnn.figures_sweep import (  # noqa: F401  (re-exported through robustcnn.report)
    mean_histories,
    plot_epochs_to_fit,
    plot_memorization,
    plot_sweep_curves,
    plot_variants,
    seeds_note,
)
from robustcnn.formatting import mean_std_table, pct, seed_count
from robustcnn.plotstyle import model_colors, save_figure
from robustcnn.report import REPORTERS, figure_lines, header, read_csv, read_table, table_section
from robustcnn.report_setup import setup_section
from robustcnn.results import markdown_table, read_manifest

CLASSES = {"digits": 10, "mnist": 10, "fashion-mnist": 10, "cifar10": 10}  # chance lines; imagefolder: unknown
METRICS = ("train_accuracy", "test_accuracy", "gap", "val_accuracy", "epochs_to_fit", "best_epoch")


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
        bump = (f"at {r.candidate_at:g}, test error {pct(r.peak_test_error)} is {100 * r.peak_height:+.1f} points "
                f"above the higher side minimum (SE {100 * r.peak_se:.1f} points; {r.peak_z:.1f} SE above both sides")
        width = f", {int(r.raised_width)} consecutive points raised, {int(r.min_width)} needed" if r.min_width > 1 else ""
        verdict = f"peak {bump}{width})" if r.significant else f"{NO_PEAK}: the highest bump is {bump}, " \
                                                                 f"{r.z:g} needed{width})"
        lines.append(f"- **{r.sweep}**: {verdict}")
    n = int(peaks["n_test"].iloc[0]) if len(peaks) else 0
    return ["A peak is reported only when it exceeds the lowest test error on both sides by more than "
            f"{peaks['z'].iloc[0]:g} standard errors; each point's SE combines the spread over seeds (sd/sqrt(k)) "
            f"and the binomial error of the {n}-image test set. Epoch-wise, the raised region must also span "
            "several consecutive epochs above side minima held as long.", "", *lines, ""]


def summary_section(summary: pd.DataFrame) -> list[str]:
    """The summary as `mean ± std` columns (percent for accuracies and gaps), one column per metric."""
    k = seed_count(summary)
    metrics = [m for m in METRICS if f"{m}_mean" in summary and summary[f"{m}_mean"].notna().any()]
    table = mean_std_table(summary.assign(seeds=summary["seeds"].astype(str)) if "seeds" in summary else summary,
                           metrics, keep=["sweep", "variant", "seeds"])
    note = "1 seed: means only, no std" if k <= 1 else f"mean ± std over {k} seeds"
    return [f"## Summary ({note}; train accuracy in eval mode on clean inputs)", "", markdown_table(table), "",
            "([CSV](tables/summary.csv), full precision, `_mean` and `_std` columns)", ""]


def _n_lines(run_dir: Path) -> list[str]:
    tables = run_dir / "tables"
    n_train = ""
    if (tables / "points.csv").exists():
        points = read_csv(tables / "points.csv")
        if "train_eval_n" in points and points["train_eval_n"].notna().any():
            values = sorted({int(v) for v in points["train_eval_n"].dropna()})
            n_train = f" (n={values[0]}" + (f"-{values[-1]}" if len(values) > 1 else "") + ")"
    n_test = ""
    if (tables / "peaks.csv").exists():
        peaks = read_csv(tables / "peaks.csv")
        if "n_test" in peaks and len(peaks):
            n_test = f" (n={int(peaks['n_test'].iloc[0])})"
    return [f"**n**: train accuracy in eval mode on clean training examples, up to train_eval_examples of them"
            f"{n_train}; test accuracy on the whole test split{n_test}"]


def report_sweep(run_dir: Path) -> str:
    manifest = read_manifest(run_dir) if (run_dir / "manifest.json").exists() else {"config": {}}
    config = manifest.get("config") or {}
    study = config.get("study", "sweep")
    lines = header(run_dir, f"Study: {study}")
    lines += setup_section(run_dir, _n_lines(run_dir))
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
        variants = list(summary.loc[summary["sweep"] == "variants", "variant"])
        k = seed_count(summary)
        if study == "overfitting":
            means = mean_histories(read_table(run_dir, "history"))
            figs.append(("overfitting curves", save_figure(plot_history(
                means, "train vs test, " + ("one seed" if k <= 1 else f"mean over {k} seeds"),
                model_colors(variants)), run_dir, "overfitting")))
        if study == "memorization":
            dataset = str((config.get("data") or {}).get("dataset", ""))
            figs.append(("train and test accuracy", save_figure(plot_memorization(summary, CLASSES.get(dataset)),
                                                                run_dir, "variants")))
            threshold = config.get("fit_threshold", 0.99)
            figs.append(("epochs to fit", save_figure(plot_epochs_to_fit(summary, threshold), run_dir, "epochs_to_fit")))
        else:
            figs.append(("train and test accuracy", save_figure(plot_variants(summary, study), run_dir, "variants")))
    if len(summary):
        lines += summary_section(summary)
        cost = read_table(run_dir, "point_cost")  # x repeats the variant (a number for some, a name for others)
        lines += table_section(run_dir, "point_cost", "Cost per point", cost.drop(columns=["x"], errors="ignore"))
    if rff is not None:
        lines += table_section(run_dir, "rff", "Random Fourier features")
    return "\n".join(lines + figure_lines(figs))


for _study in ("overfitting", "generalization", "memorization", "double-descent", "sweep"):
    REPORTERS[_study] = report_sweep
