"""`benchmark --threat`: which threat models a scorecard covers, the non-L-p ones (common corruptions and
natural transformations, robustcnn.invariance) as scorecard rows, and their leaderboards.

    linf, l2       attacks of the suite in that norm (epsilons: --eps for linf; L2 has its own defaults)
    corruptions    the MNIST-C / CIFAR-10-C set, five severities, generated on the fly from the same examples
    transforms     shifts, rotations, scaling, elastic deformation, noise, blur (random and worst over a grid)
    all            every one of the above in one scorecard

Corruption and transform rows have no epsilon (NaN); `level` is the severity or magnitude and `level_unit` says
which. Each threat model ranks on a board of its own: L-p on `<dataset>.csv` (robust@eps columns, as before),
corruptions on `<dataset>-corruptions.csv` (mean corruption accuracy, then `<corruption> accuracy`: its mean over
the severities), transforms on `<dataset>-transforms.csv` (mean_transform_accuracy: the mean over the transformations
of one random draw per image at each one's largest magnitude; then each at that magnitude, random and the worst
case: over a grid, or the worst of several draws).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from robustcnn.errors import UsageError, check_choice
from robustcnn.units import UnitRunner, compute_now, examples_fingerprint, frame_record, record_frame

# a transformation's magnitude in a board column's name (robustcnn.transforms documents each)
MAGNITUDE_WORDS = {"translate": "+-{m:g} px", "rotate": "+-{m:g} deg", "scale": "zoom +-{m:g}", "elastic": "alpha {m:g}",
                   "noise": "std {m:g}", "blur": "sigma {m:g} px"}
THREATS = ("linf", "l2", "corruptions", "transforms", "all")
LP = ("linf", "l2")
NATURAL = ("corruptions", "transforms")


def check_threat(threat: str) -> str:
    """The threat name, or one line naming the choices."""
    return check_choice("threat model", threat, list(THREATS))


def lp_threats(threat: str) -> list[str]:
    return list(LP) if threat == "all" else [threat] if threat in LP else []


def natural_threats(threat: str) -> list[str]:
    return list(NATURAL) if threat == "all" else [threat] if threat in NATURAL else []


def check_threat_settings(threat: str, attacks: Sequence[Any] | None, epsilons: Sequence[float] | None,
                          attack_seeds: int) -> None:
    """One line, before any work, for settings the threat models would silently ignore or contradict."""
    lp = lp_threats(threat)
    if not lp:
        given = [what for what, on in (("attacks", attacks is not None), ("epsilons (--eps)", epsilons is not None),
                                       ("attack_seeds > 1", attack_seeds > 1)) if on]
        if given:
            raise UsageError(f"{' and '.join(given)} only apply to L-p attacks, and threat '{threat}' runs none; drop "
                             "them, or use threat linf, l2 or all")
        return
    for a in attacks or []:
        norm = getattr(a.threat_model, "value", a.threat_model)
        if norm not in lp:
            raise UsageError(f"attack {a.name} works in {norm}, and threat '{threat}' covers {' and '.join(lp)}; "
                             f"use threat {norm} (or all), or an attack in that norm")


def check_natural_inputs(threats: Sequence[str], x: torch.Tensor) -> None:
    """One line, before any attack, when the images are too small for a corruption or a default transformation."""
    from robustcnn.corruptions import MIN_SIZE
    from robustcnn.invariance import DEFAULT_MAGNITUDES
    from robustcnn.transforms import check_images, check_magnitude

    if "corruptions" in threats:
        check_images(x, "the corruption set", min_size=MIN_SIZE)
    if "transforms" in threats:
        for t, magnitudes in DEFAULT_MAGNITUDES.items():
            for m in magnitudes:
                check_magnitude(t, m, x)


def default_l2_epsilons(channels: int) -> list[float]:
    """L2 budgets in the [0,1] pixel range: MNIST-like images up to 3 (Croce & Hein's MNIST L2 setting is 2),
    colour images up to 1 (RobustBench's CIFAR-10 L2 setting is 0.5)."""
    return [0.0, 0.25, 0.5, 1.0] if channels == 3 else [0.0, 1.0, 2.0, 3.0]


def natural_rows(net: nn.Module, x: torch.Tensor, y: torch.Tensor, threats: list[str], *, seed: int, batch_size: int,
                 units: UnitRunner | None = None) -> pd.DataFrame:
    """Scorecard rows (robustcnn.invariance.SCORECARD_COLUMNS) for each non-L-p threat model, each one a unit
    (stored and reused by a resumed benchmark when `units` has a store)."""
    from robustcnn.invariance import invariance_scorecard

    run, examples = (compute_now, None) if units is None else (units, examples_fingerprint(x, y))
    frames = []
    for threat in threats:
        spec = {"unit": "natural", "threat": threat, "seed": seed, "batch_size": batch_size, "examples": examples}
        record = run(spec, lambda threat=threat: {"rows": frame_record(
            invariance_scorecard(net, x, y, threat=threat, seed=seed, batch_size=batch_size))})
        frames.append(record_frame(record["rows"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ------------------------------------------------------------------ leaderboards per threat model
def natural_board_rows(card: Any, run_dir: Path | str) -> dict[str, dict[str, Any]]:
    """Per non-L-p threat model in the scorecard, its leaderboard row (see the module docstring)."""
    rows = {}
    for threat in NATURAL:
        part = card.robust[card.robust["threat_model"] == threat]
        if part.empty:
            continue
        row = {"model": card.model, "weights_hash": card.weights_hash, "dataset": card.dataset,
               "parameters": card.parameters, "threat_model": threat, "n": int(card.n),
               "clean_accuracy": card.clean_accuracy}
        if threat == "corruptions":
            mean = part[part["attack"] == "mean_corruption"]
            per_level = part[part["attack"] != "mean_corruption"]
            sevs = "-".join(f"{v:g}" for v in (per_level["level"].min(), per_level["level"].max()))
            row["mean_corruption_accuracy"] = float(mean["robust_accuracy"].iloc[0])
            per = per_level.groupby("attack", sort=False)["robust_accuracy"].mean()
            row.update({f"{c} accuracy (mean over severities {sevs})": float(v) for c, v in per.items()})
        else:  # each transformation at its largest magnitude: one random draw per image, and the worst over the grid
            tops = {attack: g.loc[g["level"].idxmax()] for attack, g in part.groupby("attack", sort=False)}
            random = [float(t["robust_accuracy"]) for a, t in tops.items() if not a.endswith("/worst")]
            row["mean_transform_accuracy"] = sum(random) / len(random)
            for attack, top in tops.items():
                name, worst = attack.removesuffix("/worst"), attack.endswith("/worst")
                at = MAGNITUDE_WORDS.get(name, "{m:g}").format(m=top["level"])
                row[f"{name} accuracy at {at} ({'worst case' if worst else 'random draw'})"] = \
                    float(top["robust_accuracy"])
        rows[threat] = {**row, "run_dir": str(run_dir)}
    return rows


def update_natural_boards(out: str | Path, card: Any, run_dir: Path | str) -> list[Path]:
    """Write each non-L-p row to `<out>/leaderboard/<dataset>-<threat>.csv` (and .md): a new row replaces one of
    the same weights on the same n; rows are sorted by their first score column."""
    from robustcnn.leaderboard import board_path, locked_board_update

    written = []
    for threat, row in natural_board_rows(card, run_dir).items():
        path = board_path(out, f"{card.dataset}-{threat}")

        def merge(board: pd.DataFrame, row: dict[str, Any] = row, threat: str = threat) -> pd.DataFrame:
            if not board.empty:
                board = board[~((board["weights_hash"].astype(str) == row["weights_hash"]) & (board["n"] == row["n"]))]
            merged = pd.concat([board, pd.DataFrame([row])], ignore_index=True) if len(board) else pd.DataFrame([row])
            score = f"mean_{'corruption' if threat == 'corruptions' else 'transform'}_accuracy"
            layout = [c for c in merged.columns if c != "run_dir"] + ["run_dir"]
            return merged.sort_values([score, "clean_accuracy"], ascending=False, kind="stable")[layout]

        locked_board_update(path, merge)
        written.append(path)
    return written


def headline(card: Any) -> str:
    """One line of results: the L-inf (else first L-p) worst-case curve, and the mean corruption accuracy."""
    robust, parts = card.robust, []
    lp = robust[robust["threat_model"].isin(LP)]
    if len(lp):
        threat = "linf" if (lp["threat_model"] == "linf").any() else lp["threat_model"].iloc[0]
        part = lp[lp["threat_model"] == threat]
        worst = part[part["attack"].str.startswith("worst_case")]
        worst = worst if len(worst) else part[part["attack"] == part["attack"].iloc[0]]  # one attack: the worst case
        parts.append(f"worst case {'' if threat == 'linf' else threat + ' '}" + ", ".join(f"{e:g}: {a:.3f}" for e, a in
                                                         zip(worst["epsilon"], worst["robust_accuracy"])))
    mean = robust[robust["attack"] == "mean_corruption"]
    if len(mean):
        parts.append(f"mean corruption accuracy {mean['robust_accuracy'].iloc[0]:.3f}")
    if (robust["threat_model"] == "transforms").any():
        parts.append("transforms: see the report")
    return "; ".join(parts)
