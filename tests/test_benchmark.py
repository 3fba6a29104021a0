"""`robustcnn benchmark`: every model form loads, pickles are refused, pre-flight catches broken models,
the scorecard agrees with the adversarial study, and the leaderboard keeps one row per model."""
from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from robustcnn.benchmark import benchmark, robust_over_seeds, wilson_interval, write_benchmark
from robustcnn.cli import app
from robustcnn.errors import UsageError
from robustcnn.evaluation import evaluate_model

FAST = dict(dataset="digits", image_size=28, attacks=["fgsm", "pgd"], epsilons=[0.0, 0.1, 0.2], n_examples=60,
            device="cpu", lint=False)

FACTORY_FILE = '''
import torch.nn as nn

def tiny(channels=1, classes=10, hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * 28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, classes))
'''


@pytest.fixture
def lenet_weights(trained_lenet, tmp_path):
    path = tmp_path / "lenet5.pt"
    torch.save(trained_lenet.state_dict(), path)
    return path


def test_zoo_name_with_weights_matches_the_study(trained_lenet, lenet_weights, digits28):
    card = benchmark("lenet5", weights=lenet_weights, **FAST)
    study = evaluate_model(trained_lenet, digits28, attacks=["fgsm", "pgd"], epsilons=[0.0, 0.1, 0.2], n_examples=60,
                           lint=False)
    ours = card.robust.set_index(["attack", "epsilon"])["robust_accuracy"]
    theirs = study.robust.set_index(["attack", "epsilon"])["robust_accuracy"]
    pd.testing.assert_series_equal(ours.sort_index(), theirs.sort_index())
    assert card.clean_accuracy == pytest.approx(ours[("fgsm", 0.0)])
    assert (card.robust["ci_low"] <= card.robust["robust_accuracy"]).all()
    assert (card.robust["robust_accuracy"] <= card.robust["ci_high"]).all()
    assert card.parameters == 44_426 and len(card.weights_hash) == 16


def test_python_file_factory_and_module_factory(tmp_path):
    path = tmp_path / "user_model.py"
    path.write_text(FACTORY_FILE)
    card = benchmark(f"{path}:tiny", model_args={"hidden": 8}, **FAST)
    assert card.parameters == 28 * 28 * 8 + 8 + 8 * 10 + 10
    card = benchmark("robustcnn.models.lenet:lenet5", model_args={"in_channels": 1, "num_classes": 10}, **FAST)
    assert card.parameters == 44_426
    with pytest.raises(UsageError, match="has no callable 'nope'"):
        benchmark(f"{path}:nope", **FAST)


def test_torchscript_and_export_programs(trained_lenet, tmp_path, digits28):
    scripted = tmp_path / "model.ts"
    torch.jit.trace(copy.deepcopy(trained_lenet), digits28.x_test[:4]).save(str(scripted))
    ts = benchmark(str(scripted), **FAST)
    exported = tmp_path / "model.pt2"
    batch = torch.export.Dim("batch", min=2, max=4096)
    program = torch.export.export(copy.deepcopy(trained_lenet), (digits28.x_test[:8],), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(exported))
    ex = benchmark(str(exported), **FAST)
    assert ts.clean_accuracy == pytest.approx(ex.clean_accuracy)
    assert ts.robust["robust_accuracy"].tolist() == pytest.approx(ex.robust["robust_accuracy"].tolist(), abs=0.05)


def test_pickled_code_is_refused_without_the_flag(trained_lenet, tmp_path):
    whole = tmp_path / "whole_model.pt"
    torch.save(trained_lenet, whole)  # pickles the class: loading it would run code
    with pytest.raises(UsageError, match="needs pickled code to load.*--trust-pickle"):
        benchmark(str(whole), **FAST)
    with pytest.raises(UsageError, match="needs pickled code"):
        benchmark("lenet5", weights=whole, **FAST)
    assert benchmark(str(whole), trust_pickle=True, **FAST).parameters == 44_426


class Wrong(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if self.kind == "channels":
            return self.conv(x).flatten(1)[:, :10]
        out = self.net(x)
        if self.kind == "outputs":
            return out[:, :5]
        if self.kind == "nan":
            return out * float("nan")
        if self.kind == "softmax":
            return out.softmax(1)
        if self.kind == "random":
            return out + torch.randn_like(out)
        return out


@pytest.mark.parametrize("kind,message", [("channels", "input_shape"), ("outputs", "output_shape: expected outputs "
                                          "of shape \\[N, 10\\]"), ("nan", "finite_outputs")])
def test_fatal_preflight_failures(kind, message):
    with pytest.raises(UsageError, match=f"pre-flight {message}"):
        benchmark(Wrong(kind).eval(), **FAST)


def test_warning_preflights_and_fixes():
    checks = benchmark(Wrong("softmax").train(), **FAST).preflight.set_index("check")["status"]
    assert checks["logits"] == "WARN" and checks["eval_mode"] == "PASS"  # train mode, but no dropout/BN: same outputs
    assert benchmark(Wrong("random").eval(), **FAST).preflight.set_index("check")["status"]["deterministic"] == "WARN"


def test_mean_std_are_wrapped_inside(tmp_path):
    path = tmp_path / "user_model.py"
    path.write_text(FACTORY_FILE)
    card = benchmark(f"{path}:tiny", mean=[0.5], std=[0.25], **FAST)
    assert card.n == 60
    with pytest.raises(UsageError, match="--mean/--std need 1 finite values"):
        benchmark(f"{path}:tiny", mean=[0.5, 0.5], std=[0.2, 0.2], **FAST)


def test_leaderboard_rows_from_real_runs(trained_lenet, lenet_weights, tmp_path):
    """Reruns of one setup keep one row; robust@eps is the scorecard's worst case; a run with a subset of the
    attacks does not replace the stronger row; another model gets its own row."""
    out = tmp_path / "out"
    for _ in range(2):
        strong = benchmark("lenet5", weights=lenet_weights, **FAST)
        path = write_benchmark(strong, out)
    with pytest.warns(UserWarning, match="stronger evaluation"):
        write_benchmark(benchmark("lenet5", weights=lenet_weights, **{**FAST, "attacks": ["fgsm"]}), out)
    other = copy.deepcopy(trained_lenet)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    write_benchmark(benchmark(other, name="lenet5-shifted", **FAST), out)
    board = pd.read_csv(out / "leaderboard" / "digits.csv")
    assert len(board) == 2 and board["weights_hash"].is_unique and (board["attacks"] == "fgsm+pgd").all()
    row = board[board["weights_hash"] == strong.weights_hash].iloc[0]
    worst = strong.robust[strong.robust["attack"] == "worst_case"].set_index("epsilon")["robust_accuracy"]
    assert [row[f"robust@{e:.4g}"] for e in worst.index] == pytest.approx(list(worst))
    assert row["run_dir"] == str(path) and row["n"] == 60 and row["epsilons"] == "0 0.1 0.2"
    assert board["robust@0.2"].is_monotonic_decreasing
    card = json.loads((path / "scorecard.json").read_text())
    assert {"clean_accuracy", "robust_accuracy", "robust_statistic", "attack_seeds"} <= set(card)
    assert {"attack", "epsilon", "robust_accuracy", "ci_low", "ci_high", "n"} <= set(card["robust_accuracy"][0])
    assert any(r["attack"] == "worst_case" for r in card["robust_accuracy"])
    assert (path / "figures" / "robust_accuracy.png").exists() and (path / "report.md").exists()


def test_a_corrupt_leaderboard_stops_the_write_before_any_run_folder(lenet_weights, tmp_path):
    board = tmp_path / "leaderboard" / "digits.csv"
    board.parent.mkdir()
    board.write_bytes(b"model,weights_hash\n\"broken,1\n")
    card = benchmark("lenet5", weights=lenet_weights, **{**FAST, "attacks": ["fgsm"], "epsilons": [0.0, 0.1]})
    with pytest.raises(UsageError, match="not a readable leaderboard CSV"):
        write_benchmark(card, tmp_path)
    assert board.read_bytes() == b"model,weights_hash\n\"broken,1\n" and not (tmp_path / "benchmark").exists()


def test_the_point_over_attack_seeds_is_the_per_example_worst_case_inside_its_interval():
    """Seed 0 leaves examples 0-49 robust, seed 1 examples 40-99: the mean over seeds (0.5) is not what an
    example-level worst case gives (10 of 100 survive both), and seed 0's interval does not hold the mean of
    seeds 0.5 and 0.9 in the second case."""
    def seed_samples(robust: range) -> pd.DataFrame:
        return pd.DataFrame({"index": range(100), "attack": "pgd", "threat_model": "linf", "epsilon": 0.1,
                             "correct": [i in robust for i in range(100)]})

    table = robust_over_seeds([seed_samples(range(0, 50)), seed_samples(range(40, 100))]).iloc[0]
    assert table["robust_accuracy"] == pytest.approx(0.10) and table["n"] == 100 and table["attack_seeds"] == 2
    assert table["mean_over_seeds"] == pytest.approx(0.55)
    assert (table["ci_low"], table["ci_high"]) == pytest.approx(wilson_interval(10, 100))
    table = robust_over_seeds([seed_samples(range(0, 50)), seed_samples(range(0, 90))]).iloc[0]
    assert table["ci_low"] <= table["robust_accuracy"] <= table["ci_high"]
    assert table["robust_accuracy"] == pytest.approx(0.50) and table["std_over_seeds"] == pytest.approx(0.2828, abs=1e-4)


def test_benchmark_over_attack_seeds_matches_an_independent_count(trained_lenet, lenet_weights, digits28):
    card = benchmark("lenet5", weights=lenet_weights, **{**FAST, "attacks": ["pgd"], "attack_seeds": 2})
    runs = [evaluate_model(trained_lenet, digits28, attacks=["pgd"], epsilons=[0.0, 0.1, 0.2], n_examples=60,
                           lint=False, seed=seed, clean_splits=()) for seed in (0, 1)]
    for eps, row in card.robust.set_index("epsilon").iterrows():
        correct = [r.samples[r.samples["epsilon"] == eps].sort_values("index")["correct"].to_numpy() for r in runs]
        survivors = int((correct[0] & correct[1]).sum())
        assert row["robust_accuracy"] == pytest.approx(survivors / 60)
        assert row["ci_low"] <= row["robust_accuracy"] <= row["ci_high"]
        assert row["mean_over_seeds"] == pytest.approx((correct[0].mean() + correct[1].mean()) / 2)


def test_cli_benchmark_and_its_errors(lenet_weights, tmp_path):
    runner = CliRunner()
    # the default (standard) suite at an epsilon that breaks every example of this undefended model: APGD-CE
    # breaks them all, so the CLI path runs in 10 s instead of a minute (test_autoattack covers the rest)
    ok = runner.invoke(app, ["benchmark", "lenet5", "--dataset", "digits", "--weights", str(lenet_weights),
                             "--eps", "0,0.3", "--n-examples", "40", "--out", str(tmp_path), "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    assert "worst case 0: " in ok.output and "(suite standard)" in ok.output
    bad = runner.invoke(app, ["benchmark", "lenet5", "--dataset", "digits", "--eps", "0,2", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "outside [0, 1]" in bad.output and len(bad.output.strip().splitlines()) == 1
    missing = runner.invoke(app, ["benchmark", "nowhere.py:f", "--dataset", "digits", "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "model file nowhere.py does not exist" in missing.output


def test_wilson_interval():
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.404, abs=1e-3) and high == pytest.approx(0.596, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0 and wilson_interval(10, 10)[1] == 1
    # hand-computed 95 % Wilson intervals (z = 1.96), typed in, not taken from the code
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)


@pytest.mark.parametrize("k,n", [(100, 100), (0, 100), (1000, 1000), (0, 7), (7, 7), (3, 7)])
def test_the_wilson_interval_always_contains_its_point(k, n):
    """At k = n the formula's upper end is 1 - 1e-16 in floating point: a point outside its own interval."""
    low, high = wilson_interval(k, n)
    assert low <= k / n <= high
    if k == n:
        assert high == 1.0
    if k == 0:
        assert low == 0.0
