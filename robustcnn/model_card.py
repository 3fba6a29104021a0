"""A benchmarked model's entry in RobustBench's model-card form (the JSON files of RobustBench's model_info/
folders), so a robustcnn row can be set beside a RobustBench one or submitted next to it.

RobustBench's keys are filled where robustcnn knows them (accuracies as percentage strings with two decimals,
eps as RobustBench writes it, e.g. "8/255"); what only the model's authors know (link, authors, venue, the
reported number) stays an empty string. Our own keys say what produced the numbers: n_examples, threat_model,
attack_suite, and the weights hash.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

ROBUSTBENCH_KEYS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                    "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote")
_THREAT = {"linf": "Linf", "l2": "L2"}


def eps_text(eps: float) -> str:
    """RobustBench's spelling: "8/255" for a small whole number of 1/255 steps (the colour-image budgets), else
    the number ("0.3", as for MNIST)."""
    steps = round(eps * 255)
    return f"{steps}/255" if 0 < eps < 0.1 and abs(eps * 255 - steps) < 1e-9 else f"{eps:g}"


def percent(acc: float) -> str:
    return f"{100 * acc:.2f}"


def robustbench_card(model: str, dataset: str, suite: str | None, n: int, clean_accuracy: float,
                     robust: pd.DataFrame, weights_hash: str) -> dict[str, Any]:
    """The card at the largest epsilon of the grid (RobustBench reports one epsilon per entry).

    robust: the scorecard's table (attack, threat_model, epsilon, robust_accuracy, ...). autoattack_acc is the
    `autoattack` (or `autoattack-l2`) row's; without one it stays empty and the footnote says which suite ran."""
    threats = list(robust["threat_model"].unique())  # one card per entry: L-inf when the scorecard has it
    robust = robust[robust["threat_model"] == ("linf" if "linf" in threats else threats[0])]
    aa = robust[robust["attack"].isin(["autoattack", "autoattack-l2"])]
    rows = aa if len(aa) else robust
    eps = float(rows["epsilon"].max())
    threat = str(rows["threat_model"].iloc[0])
    at = aa[aa["epsilon"] == eps]
    footnote = "" if len(at) else (f"no AutoAttack in attack suite {suite}; robustcnn's worst case over that suite is "
                                   "in scorecard.json")
    return {"link": "", "name": model, "authors": "", "additional_data": False, "number_forward_passes": 1,
            "dataset": dataset, "venue": "", "architecture": model, "eps": eps_text(eps),
            "clean_acc": percent(clean_accuracy), "reported": "",
            "autoattack_acc": percent(float(at["robust_accuracy"].iloc[0])) if len(at) else "", "footnote": footnote,
            "n_examples": n, "threat_model": _THREAT.get(threat, threat), "attack_suite": suite or "",
            "weights_hash": weights_hash}
