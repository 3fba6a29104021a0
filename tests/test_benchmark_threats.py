"""`benchmark --threat corruptions|transforms|all`: the non-L-p threat models in the scorecard, its report and
their own leaderboards; bad threats are one line and exit 2."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from robustcnn.benchmark import benchmark, write_benchmark
from robustcnn.cli import app
from robustcnn.corruptions import corrupt
from robustcnn.errors import UsageError

N = 40
FAST = dict(dataset="digits", image_size=28, n_examples=N, device="cpu", lint=False)


@pytest.fixture
def lenet_weights(trained_lenet, tmp_path):
    path = tmp_path / "lenet5.pt"
    torch.save(trained_lenet.state_dict(), path)
    return path


def bare_accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).double().mean().item()


def test_corruption_rows_equal_a_bare_loop_and_reach_their_own_board(trained_lenet, lenet_weights, digits28, tmp_path):
    card = benchmark("lenet5", weights=lenet_weights, threat="corruptions", **FAST)
    assert set(card.robust["threat_model"]) == {"corruptions"} and card.lint.empty
    x, y = digits28.x_test[:N], digits28.y_test[:N]
    rows = card.robust[card.robust["attack"] != "mean_corruption"]
    assert len(rows) == 15 * 5 and rows["epsilon"].isna().all()
    for name, severity in [("fog", 2), ("zigzag", 5), ("shot_noise", 1)]:  # the scorecard's seed is 0
        row = rows[(rows["attack"] == name) & (rows["level"] == severity)].iloc[0]
        assert row["robust_accuracy"] == pytest.approx(bare_accuracy(trained_lenet, corrupt(x, name, severity, 0), y))
        assert row["ci_low"] <= row["robust_accuracy"] <= row["ci_high"] and row["n"] == N
    mean = card.robust[card.robust["attack"] == "mean_corruption"].iloc[0]
    assert mean["robust_accuracy"] == pytest.approx(rows["robust_accuracy"].mean())

    run = write_benchmark(card, tmp_path / "out")
    board = pd.read_csv(tmp_path / "out" / "leaderboard" / "digits-corruptions.csv")
    assert board.loc[0, "mean_corruption_accuracy"] == pytest.approx(mean["robust_accuracy"])
    fog = rows[rows["attack"] == "fog"]["robust_accuracy"].mean()
    assert board.loc[0, "fog accuracy (mean over severities 1-5)"] == pytest.approx(fog)
    assert not (tmp_path / "out" / "leaderboard" / "digits.csv").exists()  # no L-p numbers: no L-p row
    assert not (run / "robustbench.json").exists()
    report = (run / "report.md").read_text()
    assert "## Common corruptions" in report and (run / "figures" / "corruption_accuracy.png").exists()
    assert "| autoattack |" not in report  # no attack ran, and the setup section does not claim one
    assert json.loads((run / "scorecard.json").read_text())["threat"] == "corruptions"


def test_transform_rows_equal_a_bare_loop(trained_lenet, lenet_weights, digits28):
    card = benchmark("lenet5", weights=lenet_weights, threat="transforms", **FAST)
    x, y = digits28.x_test[:N], digits28.y_test[:N]
    rotate = card.robust[(card.robust["attack"] == "rotate") & (card.robust["level"] == 0)].iloc[0]
    assert rotate["robust_accuracy"] == pytest.approx(bare_accuracy(trained_lenet, x, y))  # magnitude 0: clean
    worst = card.robust[(card.robust["attack"] == "translate/worst") & (card.robust["level"] == 1)].iloc[0]
    standing = torch.ones(N, dtype=torch.bool)
    for dx in (-1, 0, 1):  # the grid-search attack written out: every integer shift within +-1 pixel
        for dy in (-1, 0, 1):
            shifted = F.pad(x, (1, 1, 1, 1))[..., 1 + dy:1 + dy + 28, 1 + dx:1 + dx + 28]  # zero-filled shift
            with torch.no_grad():
                standing &= trained_lenet(shifted).argmax(1) == y
    assert worst["robust_accuracy"] == pytest.approx(standing.double().mean().item())


def test_all_covers_every_threat_model_and_each_reaches_its_own_board(trained_lenet, lenet_weights, digits28, tmp_path):
    card = benchmark("lenet5", weights=lenet_weights, threat="all", suite="quick", epsilons=[0.0, 0.1], **FAST)
    assert set(card.robust["threat_model"]) == {"linf", "l2", "corruptions", "transforms"}
    l2 = card.robust[card.robust["threat_model"] == "l2"]
    assert sorted(set(l2["epsilon"])) == [0.0, 1.0, 2.0, 3.0] and {"l2-pgd", "worst_case_l2"} <= set(l2["attack"])
    assert sorted(set(card.robust[card.robust["threat_model"] == "linf"]["epsilon"])) == [0.0, 0.1]

    out = tmp_path / "out"
    run = write_benchmark(card, out)
    lp = pd.read_csv(out / "leaderboard" / "digits.csv")
    assert {"robust@0.1", "robust_l2@3"} <= set(lp.columns)
    assert not [c for c in lp.columns if "corruption" in c or "transform" in c or "nan" in c]  # L-p only
    from robustcnn.model_card import eps_text
    card_json = json.loads((run / "robustbench.json").read_text())
    assert card_json["threat_model"] == "Linf" and card_json["eps"] == eps_text(0.1)  # L-inf's largest, not L2's 3
    assert "level" in json.loads((run / "scorecard.json").read_text())["robust_accuracy"][0]
    report = (run / "report.md").read_text()
    assert "## Transformations" in report and "## Common corruptions" in report
    assert "| l2-pgd | L2 |" in report  # the Setup table lists the L2 attacks too (the robust table says "l2")
    elastic = [line for line in report.splitlines() if line.startswith("| elastic | worst | 34 |")][0]
    assert "Simard et al. 2003; sigma fixed) | worst of" in elastic  # the unit keeps its own ';', the method follows

    x, y = digits28.x_test[:N], digits28.y_test[:N]
    standing = torch.ones(N, dtype=torch.bool)
    for dx in range(-4, 5):  # the worst case over every integer shift within +-4 pixels, written out
        for dy in range(-4, 5):
            with torch.no_grad():
                standing &= trained_lenet(F.pad(x, (4, 4, 4, 4))[..., 4 + dy:32 + dy, 4 + dx:32 + dx]).argmax(1) == y
    board = pd.read_csv(out / "leaderboard" / "digits-transforms.csv")
    assert board.loc[0, "translate accuracy at +-4 px (worst case)"] == pytest.approx(standing.double().mean().item())
    random = [c for c in board.columns if c.endswith("(random draw)")]
    assert len(random) == 6 and board.loc[0, "mean_transform_accuracy"] == pytest.approx(board.loc[0, random].mean())


def test_l2_takes_the_given_budgets_and_the_figure_has_a_panel_per_norm(lenet_weights):
    from robustcnn.figures import plot_scorecard

    card = benchmark("lenet5", weights=lenet_weights, threat="l2", suite="quick", epsilons=[0.0, 1.5], **FAST)
    assert set(card.robust["threat_model"]) == {"l2"} and sorted(set(card.robust["epsilon"])) == [0.0, 1.5]
    both = pd.concat([card.robust, card.robust.assign(threat_model="linf", epsilon=card.robust["epsilon"] / 15)])
    fig = plot_scorecard(both, pd.DataFrame(columns=["source", "model", "epsilon", "robust_accuracy"]), "lenet5")
    assert len(fig.axes) == 2 and {"L2" in ax.get_title() for ax in fig.axes} == {True, False}


@pytest.mark.parametrize("args,match", [
    (["--threat", "bogus"], "threat model 'bogus'"),
    (["--threat", "corruptions", "--attacks", "pgd"], "threat 'corruptions' runs none"),
    (["--threat", "corruptions", "--eps", "0.1"], "only apply to L-p attacks"),
    (["--threat", "transforms", "--attack-seeds", "3"], "only apply to L-p attacks"),
    (["--threat", "l2", "--attacks", "pgd"], "attack pgd works in linf"),
    (["--threat", "corruptions", "--image-size", "4"], "needs at least 6x6"),
])
def test_cli_bad_threat_is_one_line_and_exit_2(lenet_weights, tmp_path, args, match):
    result = CliRunner().invoke(app, ["benchmark", "lenet5", "--weights", str(lenet_weights), "--dataset", "digits",
                                      "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and match in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out" / "benchmark").exists()


def test_api_bad_threat_is_a_usage_error(lenet_weights):
    with pytest.raises(UsageError, match="threat model"):
        benchmark("lenet5", weights=lenet_weights, threat="corruption", **FAST)
