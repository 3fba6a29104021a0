"""The leaderboard: worst-case robust@eps, sorted by robustness, one row per evaluation setup, a weaker run never
replacing a stronger one, corrupt files reported and kept, and concurrent writers (real processes) losing nothing."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from robustcnn.errors import UsageError
from robustcnn.leaderboard import leaderboard_row, read_leaderboard, update_leaderboard, update_leaderboard_row

ROOT = Path(__file__).resolve().parents[1]


def card(weights: str = "aaaa", attacks: tuple[str, ...] = ("fgsm", "pgd"), eps: tuple[float, ...] = (0.0, 0.1, 0.2),
         n: int = 100, seeds: int = 1, clean: float = 0.9, level: float = 0.6, model: str = "net",
         lint: tuple[str, ...] = ("PASS",)) -> SimpleNamespace:
    """A scorecard stand-in: attack k at epsilon e has accuracy level - 0.1 k - e; the per-example worst case
    sits 0.05 below the weakest attack (as it can: it needs an example to survive every attack)."""
    rows = [{"attack": a, "threat_model": "linf", "epsilon": e, "robust_accuracy": max(0.0, level - 0.1 * k - e)}
            for k, a in enumerate(attacks) for e in eps]
    if len(attacks) > 1:
        rows += [{"attack": "worst_case", "threat_model": "linf", "epsilon": e,
                  "robust_accuracy": max(0.0, level - 0.1 * (len(attacks) - 1) - e - 0.05)} for e in eps]
    return SimpleNamespace(model=model, weights_hash=weights, dataset="digits", parameters=10, n=n,
                           clean_accuracy=clean, robust=pd.DataFrame(rows).assign(curve="cumulative"),
                           attack_seeds=seeds, suite=None,
                           lint=pd.DataFrame({"check": [f"c{i}" for i in range(len(lint))], "status": list(lint),
                                              "detail": ""}))


def test_robust_at_eps_is_the_worst_case_whatever_the_attack_order():
    for attacks in (("fgsm", "pgd"), ("pgd", "fgsm")):
        row = leaderboard_row(card(attacks=attacks), "run")
        assert row["robust@0.1"] == pytest.approx(0.6 - 0.1 - 0.1 - 0.05)  # the worst_case row, not an attack's
    single = leaderboard_row(card(attacks=("pgd",)), "run")
    assert single["robust@0.2"] == pytest.approx(0.4) and single["suite"] == single["attacks"] == "pgd"
    assert leaderboard_row(card(), "run")["attacks"] == "fgsm+pgd"


def test_sorted_by_worst_case_robust_accuracy_not_clean(tmp_path):
    path = tmp_path / "digits.csv"
    update_leaderboard(path, card("a", clean=0.99, level=0.4, model="accurate"), "r1")
    update_leaderboard(path, card("b", clean=0.80, level=0.7, model="robust"), "r2")
    update_leaderboard(path, card("c", clean=0.95, level=0.5, model="middle"), "r3")
    assert list(read_leaderboard(path)["model"]) == ["robust", "middle", "accurate"]


def test_rows_are_keyed_by_setup_and_a_weaker_run_never_replaces_a_stronger(tmp_path):
    path = tmp_path / "digits.csv"

    def board():
        return read_leaderboard(path)

    _, outcome = update_leaderboard_row(path, leaderboard_row(card(level=0.6), "strong"))
    assert outcome == "added"
    for weaker in (card(attacks=("fgsm",), level=0.9), card(n=50, level=0.9), card(attacks=("pgd",), n=10)):
        with pytest.warns(UserWarning, match="stronger evaluation"):
            assert update_leaderboard_row(path, leaderboard_row(weaker, "weak"))[1] == "kept stronger"
    assert list(board()["run_dir"]) == ["strong"]
    update_leaderboard(path, card(eps=(0.0, 0.3)), "other-eps")  # another setup: its own row
    assert sorted(board()["run_dir"]) == ["other-eps", "strong"]
    update_leaderboard(path, card(level=0.55), "rerun")  # the same setup again: replaces its row
    assert sorted(board()["run_dir"]) == ["other-eps", "rerun"]
    update_leaderboard(path, card(attacks=("fgsm", "pgd", "deepfool"), n=200, seeds=2, level=0.5), "stronger")
    assert sorted(board()["run_dir"]) == ["other-eps", "stronger"]
    rows = board().set_index("run_dir")
    assert rows.loc["stronger", "attacks"] == "fgsm+pgd+deepfool" and rows.loc["stronger", "n"] == 200
    assert rows.loc["stronger", "epsilons"] == "0 0.1 0.2" and rows.loc["stronger", "attack_seeds"] == 2


def test_a_run_with_fewer_attack_seeds_never_replaces_one_with_more(tmp_path):
    """Same weights, attacks, epsilons and n: 3 attack seeds beat 1, whichever comes first."""
    path = tmp_path / "digits.csv"
    update_leaderboard(path, card(seeds=3, level=0.5), "three-seeds")
    with pytest.warns(UserWarning, match="stronger evaluation"):
        assert update_leaderboard_row(path, leaderboard_row(card(seeds=1, level=0.7), "one-seed"))[1] == "kept stronger"
    assert list(read_leaderboard(path)["run_dir"]) == ["three-seeds"]
    other = tmp_path / "other.csv"
    update_leaderboard(other, card(seeds=1, level=0.7), "one-seed")
    assert update_leaderboard_row(other, leaderboard_row(card(seeds=3, level=0.5), "three-seeds"))[1] == "replaced"
    assert list(read_leaderboard(other)["run_dir"]) == ["three-seeds"]


@pytest.mark.parametrize("statuses, worst", [(("PASS", "SKIP"), "PASS"), (("PASS", "WARN", "SKIP"), "WARN"),
                                             (("WARN", "FAIL", "PASS"), "FAIL"), (("SKIP",), "not run"), ((), "not run")])
def test_a_row_carries_the_worst_lint_status_into_the_csv_and_the_markdown(tmp_path, statuses, worst):
    path = tmp_path / "digits.csv"
    update_leaderboard(path, card(lint=statuses), "run")
    assert read_leaderboard(path)["lint"].tolist() == [worst]
    lines = (tmp_path / "digits.md").read_text().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    assert row[header.index("lint")] == worst


def test_a_board_from_before_setups_were_recorded_is_read_and_its_row_replaced(tmp_path):
    path = tmp_path / "mnist.csv"
    path.write_text("model,weights_hash,dataset,parameters,n,clean_accuracy,robust@0,robust@0.1,run_dir\n"
                    "old,aaaa,digits,10,1000,0.9,0.9,0.7,results/benchmark/x\n"
                    "other,bbbb,digits,10,1000,0.8,0.8,0.2,results/benchmark/y\n")
    update_leaderboard(path, card(), "new")
    assert sorted(read_leaderboard(path)["run_dir"]) == ["new", "results/benchmark/y"]


@pytest.mark.parametrize("content", [b"model,weights_hash\n\"unterminated,1\n", b"", b"\xff\xfe\x00garbage\n",
                                     b"name,score\nx,1\n", b"model,weights_hash,clean_accuracy\nm,h,high\n"])
def test_a_corrupt_board_is_reported_in_one_line_and_never_overwritten(tmp_path, content):
    path = tmp_path / "digits.csv"
    path.write_bytes(content)
    with pytest.raises(UsageError, match="not a readable leaderboard CSV") as err:
        update_leaderboard(path, card(), "run")
    assert len(str(err.value).splitlines()) == 1 and str(path) in str(err.value)
    assert path.read_bytes() == content


WRITER = r"""
import sys, time, types
from pathlib import Path

root, board, i, go = sys.argv[1:5]
# a bare package object: the writer needs only robustcnn.leaderboard, not the torch-importing package __init__
package = types.ModuleType("robustcnn")
package.__path__ = [root]
sys.modules["robustcnn"] = package
from robustcnn.leaderboard import update_leaderboard_row

Path(go + ".ready" + i).touch()
while not Path(go).exists():
    time.sleep(0.0005)
update_leaderboard_row(Path(board), {"model": "m" + i, "weights_hash": "hash" + i, "dataset": "digits",
                                     "parameters": 1, "suite": "pgd", "attacks": "pgd", "attack_seeds": 1,
                                     "curve": "cumulative", "epsilons": "0 0.1", "n": 10, "clean_accuracy": 0.5,
                                     "robust@0": 0.5, "robust@0.1": int(i) / 10, "run_dir": "run" + i})
"""


def test_eight_concurrent_writers_keep_eight_rows(tmp_path):
    """Real processes released together (a start file they all poll for) write one row each."""
    board, go = tmp_path / "leaderboard" / "digits.csv", tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(ROOT / "robustcnn"), str(board), str(i), str(go)],
                              env=env, stderr=subprocess.PIPE) for i in range(8)]
    deadline = time.time() + 120
    while len(list(tmp_path.glob("go.ready*"))) < 8 and time.time() < deadline:
        time.sleep(0.01)
    go.touch()
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    rows = read_leaderboard(board)
    assert sorted(rows["weights_hash"]) == [f"hash{i}" for i in range(8)]
    assert list(rows["model"]) == [f"m{i}" for i in reversed(range(8))]  # sorted by robust@0.1


def test_the_markdown_board_gives_robust_and_clean_accuracy_both_as_percent(tmp_path):
    path = tmp_path / "digits.csv"
    update_leaderboard(path, card(level=0.5), "run")
    board = read_leaderboard(path)
    lines = (tmp_path / "digits.md").read_text().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    robust_cols = [c for c in board.columns if c.startswith("robust@")]
    assert robust_cols
    for col in robust_cols:
        cell = row[header.index(f"{col} (%)")]
        assert float(cell) == pytest.approx(100 * float(board[col].iloc[0]), abs=0.05)
