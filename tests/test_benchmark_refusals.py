"""A benchmark that refuses nonsense: a zoo name needs weights, and a model at chance level never reaches the
leaderboard (its scorecard is still written, and says why)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from robustcnn.benchmark import benchmark, chance_check, wilson_interval, write_benchmark
from robustcnn.cli import app
from robustcnn.errors import RobustcnnWarning, UsageError

FAST = dict(dataset="digits", image_size=28, attacks=["fgsm"], epsilons=[0.0, 0.1], n_examples=200, device="cpu",
            lint=False)


class Constant(nn.Module):
    """Always predicts class `k`: the best a model without information can do is the commonest class."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k, self.scale = k, nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.flatten(1)[:, :10] * 0 * self.scale
        out[:, self.k] = out[:, self.k] + 1.0
        return out


def test_a_zoo_name_without_weights_is_refused(tmp_path):
    with pytest.raises(UsageError, match="random weights: pass --weights FILE.* or --untrained"):
        benchmark("lenet5", **FAST)
    result = CliRunner().invoke(app, ["benchmark", "lenet5", "--dataset", "digits", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--untrained" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "benchmark").exists()


def test_chance_check_against_an_independent_count(digits28, trained_lenet):
    y = digits28.y_test[:200]
    commonest = torch.bincount(y).argmax().item()
    with torch.no_grad():
        const_correct = int((Constant(commonest)(digits28.x_test[:200]).argmax(1) == y).sum())
        lenet_correct = int((trained_lenet(digits28.x_test[:200]).argmax(1) == y).sum())
    assert const_correct == int((y == commonest).sum())  # the constant model scores the commonest share
    assert chance_check(const_correct, y, 10).status == "FAIL"
    assert chance_check(lenet_correct, y, 10).status == "PASS"
    # just above the commonest share is still noise: the interval's lower end decides
    k = const_correct + 3
    assert wilson_interval(k, 200)[0] <= const_correct / 200 and chance_check(k, y, 10).status == "FAIL"


def test_an_untrained_zoo_model_never_reaches_the_leaderboard(tmp_path):
    card = benchmark("lenet5", untrained=True, **FAST)
    checks = card.preflight.set_index("check")["status"]
    assert checks["chance_level"] == "FAIL" and card.off_leaderboard == "pre-flight FAIL: chance_level"
    with pytest.warns(RobustcnnWarning, match="not on the leaderboard"):
        run = write_benchmark(card, tmp_path)
    assert not (tmp_path / "leaderboard").exists()
    written = json.loads((run / "scorecard.json").read_text())
    assert written["off_leaderboard"] == "pre-flight FAIL: chance_level"
    assert any(r["check"] == "chance_level" and r["status"] == "FAIL" for r in written["preflight"])


def test_a_trained_model_passes_and_is_ranked(trained_lenet, tmp_path):
    card = benchmark(trained_lenet, name="lenet5-trained", **FAST)
    assert card.preflight.set_index("check")["status"]["chance_level"] == "PASS" and card.off_leaderboard is None
    write_benchmark(card, tmp_path)
    assert (tmp_path / "leaderboard" / "digits.csv").exists()


def test_cli_untrained_writes_the_scorecard_but_no_row(tmp_path):
    result = CliRunner().invoke(app, ["benchmark", "lenet5", "--untrained", "--dataset", "digits", "--attacks", "fgsm",
                                      "--eps", "0,0.1", "--n-examples", "100", "--device", "cpu", "--out",
                                      str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "not on the leaderboard (pre-flight FAIL: chance_level)" in result.output
    assert list(tmp_path.glob("benchmark/*/scorecard.json")) and not (tmp_path / "leaderboard").exists()
