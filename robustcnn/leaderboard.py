"""The per-dataset leaderboard, `<out>/leaderboard/<dataset>.csv`: one row per model x evaluation setup.

A row is keyed by (weights_hash, suite, attacks, epsilons, n), so different evaluation setups are different
rows; `lint` is the run's worst lint status (FAIL, WARN, PASS, or 'not run'), and `<dataset>.md` shows the board
as a Markdown table. `robust@<eps>` is always the worst case over the row's attacks (per example: robust only if every attack
fails), for L-inf; other threat models get `robust_<threat>@<eps>`. Rows are sorted by worst-case robust
accuracy at the largest epsilon (ties: the next smaller epsilon, then clean accuracy).

Stronger and weaker runs: of two runs of the same weights on the same epsilons, the one whose attack set
contains the other's, with no fewer examples and no fewer attack seeds, is at least as strong. A new run that
a recorded one strictly beats is not recorded (the scorecard's run folder still holds it); a new run that
strictly beats recorded rows replaces them; a rerun of the same setup replaces its row. Rows of boards written
before setups were recorded (no `attacks` column) cannot be compared and are replaced by any run of their weights.

Concurrent writers (many shells, Ray workers) read-modify-write the file under a file lock (`filelock`) and
replace it atomically; a file that does not parse is reported, never overwritten.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock, Timeout

from robustcnn.errors import UsageError
from robustcnn.results import atomic_write_text, markdown_table

KEY = ["weights_hash", "suite", "attacks", "epsilons", "n"]
TEXT = ["model", "weights_hash", "dataset", "suite", "attacks", "curve", "epsilons", "lint", "run_dir"]
REQUIRED = ["model", "weights_hash", "clean_accuracy"]
LOCK_TIMEOUT_S = 120.0


def board_path(out: str | Path, dataset: str) -> Path:
    return Path(out) / "leaderboard" / f"{_slug(dataset)}.csv"


def _slug(dataset: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset.split("/")[-1] if c)


def robust_columns(card: Any) -> dict[str, float]:
    """Worst case over the attacks per threat model and epsilon: the `worst_case*` rows of the scorecard, or
    the only attack of a threat model that has one."""
    robust = card.robust
    out: dict[str, float] = {}
    for threat, part in robust.groupby("threat_model", sort=False):
        worst = part[part["attack"].str.startswith("worst_case")]
        attacks = part[~part["attack"].str.startswith("worst_case")]["attack"].unique()
        if worst.empty:
            if len(attacks) != 1:
                raise UsageError(f"the scorecard has {len(attacks)} {threat} attacks but no worst_case rows")
            worst = part
        prefix = "robust" if threat == "linf" else f"robust_{threat}"
        out.update({f"{prefix}@{e:.4g}": float(a) for e, a in zip(worst["epsilon"], worst["robust_accuracy"])})
    return out


def leaderboard_row(card: Any, run_dir: Path | str) -> dict[str, Any]:
    """A scorecard's row: identity, evaluation setup, clean and worst-case robust accuracy, its run folder."""
    attacks = [a for a in dict.fromkeys(card.robust["attack"]) if not a.startswith("worst_case")]
    epsilons = sorted(set(float(e) for e in card.robust["epsilon"]))
    suite = getattr(card, "suite", None) or "+".join(attacks)
    return {"model": card.model, "weights_hash": card.weights_hash, "dataset": card.dataset,
            "parameters": card.parameters, "suite": suite, "attacks": "+".join(attacks),
            "attack_seeds": int(getattr(card, "attack_seeds", 1)), "curve": _curve(card.robust),
            "epsilons": " ".join(f"{e:.4g}" for e in epsilons),
            "n": int(card.n), "clean_accuracy": card.clean_accuracy, "lint": lint_status(getattr(card, "lint", None)),
            **robust_columns(card), "run_dir": str(run_dir)}


def lint_status(lint: pd.DataFrame | None) -> str:
    """The worst status of a run's lint (FAIL over WARN over PASS; SKIP rows say nothing), or 'not run'."""
    statuses = set() if lint is None or "status" not in lint else set(lint["status"])
    return next((s for s in ("FAIL", "WARN", "PASS") if s in statuses), "not run")


def _curve(robust: Any) -> str:
    return str(robust["curve"].iloc[0]) if "curve" in robust and len(robust) else "cumulative"


def read_leaderboard(path: Path) -> pd.DataFrame:
    """The board at `path` (empty if there is none); UsageError in one line if the file is not a leaderboard."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame()
    try:
        board = pd.read_csv(path, dtype={c: str for c in TEXT}, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise _corrupt(path, f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}") \
            from err
    missing = [c for c in REQUIRED if c not in board.columns]
    if missing:
        raise _corrupt(path, f"missing column(s) {', '.join(missing)}")
    numeric = ["clean_accuracy", *[c for c in board.columns if c.startswith("robust")]]
    for col in numeric:
        values = pd.to_numeric(board[col], errors="coerce")
        if (values.isna() & board[col].notna()).any() or ((values < 0) | (values > 1)).any():
            raise _corrupt(path, f"column {col} holds values that are not accuracies in [0, 1]")
        board[col] = values
    for col in KEY + ["attack_seeds", "curve"]:  # boards written before setups were recorded: their rows stay, unmatched
        if col not in board.columns:
            board[col] = pd.NA
    return board


def _corrupt(path: Path, reason: str) -> UsageError:
    return UsageError(f"leaderboard {path} is not a readable leaderboard CSV ({reason}); fix it or move it aside "
                      "(nothing was written to it)")


def at_least_as_strong(a: dict[str, Any] | pd.Series, b: dict[str, Any] | pd.Series) -> bool:
    """Same weights and epsilons; a's attacks contain b's; a's n and attack seeds are no smaller; a's curve is
    the same as b's or cumulative (which carries broken examples to larger epsilons: never a weaker bound)."""
    if any(_missing(x[c]) for x in (a, b) for c in ("weights_hash", "attacks", "epsilons", "n")):
        return False
    return (a["weights_hash"] == b["weights_hash"] and _eps(a["epsilons"]) == _eps(b["epsilons"])
            and set(str(a["attacks"]).split("+")) >= set(str(b["attacks"]).split("+"))
            and int(a["n"]) >= int(b["n"]) and _seeds(a) >= _seeds(b)
            and (str(a.get("curve")) in (str(b.get("curve")), "cumulative") or _missing(b.get("curve"))))


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _eps(text: Any) -> frozenset[float]:
    return frozenset(float(e) for e in str(text).split())


def _seeds(row: dict[str, Any] | pd.Series) -> int:
    return 1 if _missing(row.get("attack_seeds")) else int(row["attack_seeds"])


def merge_row(board: pd.DataFrame, row: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """(new board, outcome): outcome is 'added', 'replaced' or 'kept stronger' (the board is unchanged)."""
    if board.empty:
        return sort_board(pd.DataFrame([row])), "added"
    same = board.apply(lambda r: all(str(r[c]) == str(row[c]) for c in KEY), axis=1)
    stronger = board.apply(lambda r: at_least_as_strong(r, row) and not at_least_as_strong(row, r), axis=1)
    if stronger.any():  # a same-setup rerun with fewer attack seeds (or a weaker curve) is weaker, not a rerun
        return board, "kept stronger"
    # rows from boards written before setups were recorded cannot be compared: a new run of their weights replaces them
    legacy = board["attacks"].isna() & (board["weights_hash"] == row["weights_hash"])
    weaker = board.apply(lambda r: at_least_as_strong(row, r), axis=1) | same | legacy
    kept = board[~weaker]
    merged = pd.concat([kept, pd.DataFrame([row])], ignore_index=True) if len(kept) else pd.DataFrame([row])
    return sort_board(merged), "replaced" if weaker.any() else "added"


def sort_board(board: pd.DataFrame) -> pd.DataFrame:
    """Worst-case robust accuracy at the largest epsilon first (L-inf before other threat models), then the next
    smaller epsilon, then clean accuracy; rows without a value at an epsilon go below those with one."""
    def order(col: str) -> tuple[int, float]:
        threat, eps = col.split("@")
        return (0 if threat == "robust" else 1, -float(eps))

    robust = sorted((c for c in board.columns if c.startswith("robust") and "@" in c), key=order)
    cols = [*robust, "clean_accuracy"]
    front = [c for c in board.columns if not (c.startswith("robust") and "@" in c) and c != "run_dir"]
    layout = [*front, *robust, *(["run_dir"] if "run_dir" in board.columns else [])]
    return board.sort_values(cols, ascending=False, na_position="last", kind="stable")[layout].reset_index(drop=True)


def locked_board_update(path: Path, merge: Callable[[pd.DataFrame], pd.DataFrame | None]) -> pd.DataFrame | None:
    """Read the board at `path` under its lock, let `merge` return the new board (None: leave the file as it is)
    and replace the CSV and its Markdown twin atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path.parent / f".{path.name}.lock"), timeout=LOCK_TIMEOUT_S):
            board = merge(read_leaderboard(path))
            if board is not None:
                atomic_write_text(path, board.to_csv(index=False))
                atomic_write_text(path.with_suffix(".md"), markdown_table(board) + "\n")  # for reading
    except Timeout as err:
        raise UsageError(f"leaderboard {path} stayed locked by another process for {LOCK_TIMEOUT_S:g} s; "
                         "retry when the other benchmark has finished") from err
    return board


def update_leaderboard_row(path: Path, row: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """Merge one row into the board at `path` under its lock; returns (board, outcome) (see merge_row)."""
    result: dict[str, Any] = {}

    def merge(board: pd.DataFrame) -> pd.DataFrame | None:
        result["board"], result["outcome"] = merge_row(board, row)
        return None if result["outcome"] == "kept stronger" else result["board"]

    locked_board_update(path, merge)
    if result["outcome"] == "kept stronger":
        warnings.warn(f"leaderboard {path}: a stronger evaluation of weights {row['weights_hash']} on the same "
                      f"epsilons is already recorded; this run ({row['attacks']}, n={row['n']}) stays in "
                      f"{row['run_dir']} only", stacklevel=2)
    return result["board"], result["outcome"]


def update_leaderboard(path: Path, card: Any, run_dir: Path | str) -> pd.DataFrame:
    """Add a scorecard to the board at `path` (see the module docstring for which row wins)."""
    return update_leaderboard_row(path, leaderboard_row(card, run_dir))[0]
