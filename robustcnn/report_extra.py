"""Report pieces for attack suites and robustness radii, read from saved tables only (no torch), used by
robustcnn.report for the adversarial study and the benchmark scorecard."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from robustcnn.results import markdown_table

# what each suite ran, in a report's words (robustcnn.suites defines the suites; this module must not import torch)
SUITE_WORDS = {"quick": "FGSM + PGD-40", "standard": "AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square",
               "full": "AutoAttack standard + PGD-40 + DeepFool or C&W, worst case over all"}


def describe_suite(label: str) -> str:
    """'quick (FGSM + PGD-40)' for a suite name; an explicit attack list ('fgsm+pgd') says so."""
    return f"{label} ({SUITE_WORDS[label]})" if label in SUITE_WORDS else f"{label} (an explicit attack list)"


def suite_sentence(table: pd.DataFrame) -> list[str]:
    """'attack suite: quick (FGSM + PGD-40)' from a table's `suite` column (none in runs written before it)."""
    if "suite" not in table or table["suite"].isna().all():
        return []
    labels = list(dict.fromkeys(table["suite"].dropna().astype(str)))
    return ["**attack suite: " + "; ".join(describe_suite(s) for s in labels) + "**; every robust-accuracy number "
            "below comes from it (the `suite` column of the tables).", ""]


def radius_curve(radii: pd.Series, top: float, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Robust accuracy implied by per-example radii at `points` epsilons in [0, top]: the fraction with radius > eps
    (an example with radius r is broken at every eps >= r)."""
    eps = np.linspace(0.0, top, points)
    r = radii.to_numpy(dtype=float)
    return eps, (r[None, :] > eps[:, None]).mean(1)


def with_radius_curves(fig: Figure, run_dir: Path, robust: pd.DataFrame, colors: dict[str, str]) -> Figure:
    """Draw each model's curve from FMN radii (tables/radii.csv, when the study measured them) on the panel of its
    threat model, beside the fixed-epsilon curves of plot_robust_curves (the model's colour, thin dash-dot steps)."""
    from robustcnn.plotstyle import color_of, legend

    path = run_dir / "tables" / "radii.csv"
    if not path.exists():
        return fig
    radii = pd.read_csv(path)
    threats = list(dict.fromkeys(robust["threat_model"]))
    for (model, threat), g in radii.groupby(["model", "threat_model"], sort=False):
        if threat not in threats:
            continue
        ax = fig.axes[threats.index(threat)]
        top = float(robust.loc[robust["threat_model"] == threat, "epsilon"].max())
        eps, acc = radius_curve(g["radius"], top)
        ax.plot(eps, acc, color=color_of(colors, model), lw=1.0, ls="-.", alpha=0.9, drawstyle="steps-post",
                label=f"{model} / from FMN radii")
        legend(ax)
    return fig


def radius_lines(run_dir: Path) -> list[str]:
    """The radius summary section (median and quantiles per model), when the study measured radii."""
    path = run_dir / "tables" / "radius_summary.csv"
    if not path.exists():
        return []
    summary = pd.read_csv(path)
    said = "; ".join(f"**{r.model}** median {r.median:.4g} ({r.threat_model})" for r in summary.itertuples())
    return ["## Robustness radius (FMN, Pintor et al. 2021)", "",
            f"Smallest adversarial perturbation found per example on the same examples: {said}. Misclassified clean "
            "examples count as 0, examples FMN did not break as inf; the curve it implies is drawn thin in the "
            "robust-accuracy figure.", "", markdown_table(summary), "", "([CSV](tables/radius_summary.csv))", ""]
