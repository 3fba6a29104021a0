"""report.md and every figure of a run folder, drawn only from its saved tables, data and manifest (no torch, no
retraining), so `robustcnn report <run-dir>` can redraw any run.

This module orchestrates: drawing lives in robustcnn.figures / figures_sweep (look: robustcnn.plotstyle), number
formatting in robustcnn.formatting, the Setup section in robustcnn.report_setup. Each run kind registers a
reporter here (train, adversarial, benchmark; sweeps in report_sweep, invariance, lineage and anatomy in their
own modules).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from robustcnn import report_extra
from robustcnn.errors import UsageError, first_line
from robustcnn.figures import (  # noqa: F401  (re-exported: robustcnn.report's drawing API)
    plot_adversarial_training,
    plot_gallery,
    plot_history,
    plot_norms,
    plot_radii,
    plot_robust_curves,
    plot_scorecard,
)
from robustcnn.formatting import pct
from robustcnn.latex import latex_table
from robustcnn.plotstyle import model_colors, save_figure, subplots  # noqa: F401
from robustcnn.report_setup import setup_section
from robustcnn.results import (
    atomic_write_text,
    load_npz,
    markdown_table,
    probe_writable,
    read_manifest,
    run_files,
    write_json,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
    for csv in sorted((run_dir / "tables").glob("*.csv")):  # the Markdown and LaTeX copies, from the CSVs
        md = csv.with_suffix(".md")
        if md.exists():
            first = md.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
            title = first[len("### "):] if first.startswith("### ") else None
            df = read_csv(csv)
            atomic_write_text(md, (f"### {title}\n\n" if title else "") + markdown_table(df) + "\n")
            if csv.with_suffix(".tex").exists():
                atomic_write_text(csv.with_suffix(".tex"), latex_table(df, caption=title))
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


def header(run_dir: Path, title: str) -> list[str]:
    lines = [f"# {title}", ""]
    if (run_dir / "manifest.json").exists():
        m = read_manifest(run_dir)
        lines += [f"Run `{m['run_id']}`: {m['device']}, torch {m['versions'].get('torch')}, "
                  f"commit `{m.get('git_commit') or 'n/a'}`, {m['wall_seconds']:.0f} s. "
                  "Resolved config and versions: [manifest.json](manifest.json).", ""]
    return lines


def table_section(run_dir: Path, name: str, title: str, df: pd.DataFrame | None = None,
                  percent: Sequence[str] = ()) -> list[str]:
    df = read_table(run_dir, name) if df is None else df
    return [f"## {title}", "", markdown_table(df, percent=percent), "", f"([CSV](tables/{name}.csv))", ""]


def figure_lines(figs: list[tuple[str, str]]) -> list[str]:
    lines = []
    for title, path in figs:
        stem = path[:-len(".png")]
        lines += [f"## {title[0].upper()}{title[1:]}", "", f"![{title}]({path})", "",
                  f"(also [SVG]({stem}.svg) and [PDF]({stem}.pdf))", ""]
    return lines


def run_colors(run_dir: Path, *tables: pd.DataFrame) -> dict[str, str]:
    """One colour per model for every figure of the run: the config's model order, then any model the tables
    name that the config does not."""
    names: list[str] = []
    if (run_dir / "manifest.json").exists():
        from robustcnn.report_setup import model_specs

        names = [label for label, _ in model_specs(read_manifest(run_dir).get("config") or {})]
    for t in tables:
        if "model" in t:
            names += [str(m) for m in t["model"]]
    return model_colors(names)


def wide_robust(robust: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Model x attack rows, an `eps=...` column per epsilon (robust accuracy, shown as percent)."""
    wide = robust.pivot_table(index=["model", "attack"], columns="epsilon", values="robust_accuracy", sort=False)
    wide.columns = [f"eps={c:g}" for c in wide.columns]
    return wide.reset_index(), list(wide.columns)


# ------------------------------------------------------------------ train runs
@reporter("train")
def report_train(run_dir: Path) -> str:
    history = read_table(run_dir, "history")
    summary = read_table(run_dir, "summary")
    s = summary.iloc[0]
    colors = run_colors(run_dir, summary)
    fig = save_figure(plot_history({s["model"]: history}, f"{s['model']} on {s['dataset']}", colors), run_dir,
                      "overfitting")
    lines = header(run_dir, f"Training: {s['model']} on {s['dataset']}")
    n_train = f", n={int(s['train_eval_n'])}" if "train_eval_n" in s and pd.notna(s["train_eval_n"]) else ""
    lines += setup_section(run_dir, [f"**n**: train accuracy in eval mode on a fixed subset of the training split"
                                     f"{n_train}; test accuracy on the whole test split"])
    best = (f"best validation epoch {int(s['best_epoch'])} (test accuracy there {pct(s['test_accuracy_at_best'])})"
            if "test_accuracy_at_best" in s and pd.notna(s["best_epoch"]) else "no validation split, no best epoch")
    lines += ["## Result", "",
              f"Final train accuracy (eval mode{n_train}) {pct(s['train_accuracy'])}, test accuracy "
              f"{pct(s['test_accuracy'])} (gap {100 * (s['train_accuracy'] - s['test_accuracy']):+.1f} points); "
              f"{best}; {s['seconds_per_epoch']:.2f} s per epoch.", "", f"![overfitting curve]({fig})", ""]
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


def suite_of(table: pd.DataFrame) -> str | None:
    if "suite" not in table or table["suite"].isna().all():
        return None
    return "; ".join(dict.fromkeys(table["suite"].dropna().astype(str)))


def clean_vs_eps0(clean: pd.DataFrame, robust: pd.DataFrame) -> str:
    """Where clean accuracy and the eps=0 point are measured, and whether on the same n."""
    test = clean[clean["split"] == "test"] if "split" in clean else clean
    n_clean = sorted({int(v) for v in test["n"]}) if "n" in test else []
    n_robust = sorted({int(v) for v in robust["n"]}) if "n" in robust else []
    same = n_clean and n_clean == n_robust
    return (f"Clean test accuracy is measured on the whole test split (n={'/'.join(map(str, n_clean)) or '?'}); the "
            f"robust table's eps=0 column on the first n={'/'.join(map(str, n_robust)) or '?'} test examples, the ones "
            "attacked. " + ("Here they are the same examples." if same else
                            "The two n differ, so the eps=0 point can differ from the clean test accuracy."))


def _lint_n(run_dir: Path, robust: pd.DataFrame) -> str:
    if not (run_dir / "manifest.json").exists():
        return ""
    ev = (read_manifest(run_dir).get("config") or {}).get("evaluation") or {}
    if not ev.get("lint", True) or "lint_examples" not in ev:
        return ""
    return f"; the lint on the first {min(int(ev['lint_examples']), int(robust['n'].max()))} of them"


@reporter("adversarial")
def report_adversarial(run_dir: Path) -> str:
    clean, robust, lint = (read_table(run_dir, t) for t in ("clean_accuracy", "robust_accuracy", "lint"))
    samples = read_table(run_dir, "robust_samples")
    histories = {p.stem[len("history_"):]: read_csv(p) for p in sorted((run_dir / "tables").glob("history_*.csv"))}
    colors = run_colors(run_dir, clean, robust)
    histories = dict(sorted(histories.items(), key=lambda kv: list(colors).index(kv[0]) if kv[0] in colors else 99))
    curve = curve_kind(robust)
    figs = [("robust accuracy vs epsilon", save_figure(report_extra.with_radius_curves(
        plot_robust_curves(robust, colors, curve, suite=suite_of(robust)), run_dir, robust, colors), run_dir, "robust_accuracy"))]
    if (run_dir / "data" / "gallery.npz").exists():
        figs.append(("adversarial examples", save_figure(plot_gallery(load_npz(run_dir / "data" / "gallery.npz"),
                                                                      curve=curve), run_dir, "gallery")))
    radii_path = run_dir / "tables" / "radii.csv"
    norms = plot_radii(read_csv(radii_path), colors) if radii_path.exists() else plot_norms(samples, colors, curve)
    if norms is not None:
        figs.append(("robustness radii (FMN)" if radii_path.exists() else "perturbation norms",
                     save_figure(norms, run_dir, "perturbation_norms")))
    test_n = dict(zip(clean.loc[clean["split"] == "test", "model"], clean.loc[clean["split"] == "test", "n"]))
    adv_hist = {k: h for k, h in histories.items() if "robust_test_accuracy" in h}
    if adv_hist:
        figs.append(("adversarial training", save_figure(_training_figure(run_dir, adv_hist, colors), run_dir,
                                                         "adversarial_training")))
    if histories:
        figs.append(("training curves", save_figure(plot_history(histories, "training", colors, test_n=test_n),
                                                    run_dir, "training")))
    n = int(robust["n"].iloc[0])
    lines = header(run_dir, "Adversarial robustness study")
    lines += setup_section(run_dir, [
        f"**n**: clean accuracy in eval mode on the whole train and test splits; robust accuracy on the first n={n} "
        f"test examples{_lint_n(run_dir, robust)}"], suite_of(robust))
    lines += table_section(run_dir, "clean_accuracy", "Clean accuracy (eval mode, whole splits)", clean)
    lines += [clean_vs_eps0(clean, robust), ""]  # under each of the two tables it compares (as is the one below)
    lines += report_extra.suite_sentence(robust)
    wide, eps_cols = wide_robust(robust)
    lines += table_section(run_dir, "robust_accuracy", f"Robust accuracy, % (test, first n={n} examples; "
                           f"{CURVE_WORDS.get(curve, curve)}; worst_case = per-sample minimum over attacks)", wide,
                           percent=eps_cols)
    lines += [clean_vs_eps0(clean, robust), ""]
    lines += report_extra.radius_lines(run_dir)
    verdicts = lint.groupby("model")["status"].agg(lambda s: ", ".join(f"{v} {k}" for k, v in s.value_counts().items()))
    lines += ["Lint summary: " + "; ".join(f"**{m}**: {v}" for m, v in verdicts.items()), ""]
    lines += table_section(run_dir, "lint", "Evaluation lint (Carlini et al. 2019)", lint)
    lines += table_section(run_dir, "attack_cost", "Attack cost (passes counted in examples; n = examples attacked)")
    models = list(dict.fromkeys(str(m) for m in clean["model"]))
    return "\n".join(lines + figure_lines(figs) + report_lineage.anatomy_lines(run_dir, models, colors))


def _adversarial_settings(run_dir: Path, histories: dict[str, pd.DataFrame]) -> dict[str, dict[str, Any]]:
    """Per adversarially trained model of `histories`, its train.adversarial settings from the manifest's config
    (none for a run without a manifest: the figure's labels then say less)."""
    if not (run_dir / "manifest.json").exists():
        return {}
    from robustcnn.report_setup import model_specs

    specs = model_specs(read_manifest(run_dir).get("config") or {})
    settings = {label: (spec.get("train") or {}).get("adversarial") if isinstance(spec.get("train"), dict) else None
                for label, spec in specs if label in histories}
    return {label: adv for label, adv in settings.items() if isinstance(adv, dict) and adv}


def _training_attack(adv: dict[str, Any]) -> str:
    """'PGD-3', 'FGSM-RS' (FGSM with a random start, Wong et al.), else the method as the config names it."""
    method = str(adv["method"]).lower()
    if method == "pgd":
        return f"PGD-{adv['steps']}" if adv.get("steps") else "PGD"
    return "FGSM-RS" if method == "fgsm" else method


def _training_figure(run_dir: Path, histories: dict[str, pd.DataFrame], colors: dict[str, str]) -> Figure:
    """plot_adversarial_training labelled from the config: how many test examples each model's per-epoch robust
    accuracy used, and the attack that made its training batches ('PGD-3'; 'FGSM-RS': FGSM with a random start)."""
    settings = _adversarial_settings(run_dir, histories)
    robust_n = {k: int(a["eval_examples"]) for k, a in settings.items() if a.get("eval_examples")}
    attacks = {k: _training_attack(a) for k, a in settings.items() if a.get("method")}
    robust_eps = {k: float(a["epsilon"]) for k, a in settings.items() if a.get("epsilon") is not None}
    return plot_adversarial_training(histories, colors, robust_n=robust_n, attacks=attacks, robust_eps=robust_eps)


# ------------------------------------------------------------------ benchmark scorecards
@reporter("benchmark")
def report_benchmark(run_dir: Path) -> str:
    card = json.loads((run_dir / "scorecard.json").read_text())
    robust, references = read_table(run_dir, "robust_accuracy"), read_table(run_dir, "reference_curves")
    from robustcnn.report_invariance import benchmark_natural_section

    is_natural = robust["threat_model"].isin(["corruptions", "transforms"])
    natural, robust = robust[is_natural], robust[~is_natural]  # L-p rows: the scorecard figure and table
    curve = curve_kind(robust) if len(robust) else "per-level"
    fig = save_figure(plot_scorecard(robust, references, card["model"], curve,
                                     suite=card.get("suite") or suite_of(robust)), run_dir, "robust_accuracy") \
        if len(robust) else None
    n = card["n_examples"]
    lines = header(run_dir, f"Robustness scorecard: {card['model']} on {card['dataset']}")
    lines += setup_section(run_dir, [f"**n**: clean and robust accuracy on the same first n={n} test examples, in "
                                     "the dataset's order (as RobustBench)"], card.get("suite") or suite_of(robust))
    thr = ", ".join(f"{k.replace('_images_per_second', '')} {v:,.0f}/s" for k, v in card["throughput"].items())
    lines += ["## Result", "",
              f"Clean accuracy **{pct(card['clean_accuracy'])}** on the first {n} test examples; "
              f"{card['parameters']:,} parameters; weights hash `{card['weights_hash']}`; throughput (images): "
              f"{thr}; {card['wall_seconds']:.0f} s in all.", ""]
    lines += benchmark_natural_section(run_dir, natural, card["model"], card["clean_accuracy"])
    if fig is None:  # no L-p threat model: no attacks, no lint
        return "\n".join(lines + table_section(run_dir, "preflight", "Pre-flight checks"))
    lines += ["## Adversarial (L-p) robustness", "", f"![robust accuracy]({fig})", ""]
    if references.empty:  # say why the figure has no dotted reference curves
        lines += [f"No reference curves (tables/reference_curves.csv is empty): robustcnn ships no pretrained "
                  f"reference with a measured robustness curve for {card['dataset']}, other than this very model "
                  "(a shipped model is never its own reference).", ""]
    lines += report_extra.suite_sentence(robust)
    seeds = int(card.get("attack_seeds", 1))
    statistic = (f"per example, robust only if every one of {seeds} attack seeds fails; " if seeds > 1 else "")
    lines += table_section(run_dir, "robust_accuracy", f"Robust accuracy ({statistic}95 % Wilson intervals over the "
                           f"{n} examples; {CURVE_WORDS.get(curve, curve)}; worst_case: robust under every attack)",
                           robust.drop(columns=["model", "level", "level_unit"], errors="ignore"))
    lines += table_section(run_dir, "preflight", "Pre-flight checks")
    lines += table_section(run_dir, "lint", "Evaluation lint (Carlini et al. 2019)")
    lines += table_section(run_dir, "attack_cost", "Attack cost")
    return "\n".join(lines)


# registers the sweep, "invariance", "lineage" and "anatomy" reporters
from robustcnn import report_invariance, report_lineage  # noqa: E402,F401,I001
from robustcnn.report_sweep import peak_sentences, plot_epochs_to_fit, plot_sweep_curves, plot_variants  # noqa: E402,F401,I001
from robustcnn.report_sweep import report_sweep  # noqa: E402,F401,I001
