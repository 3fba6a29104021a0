"""Attack suites wired into `study adversarial` and `benchmark`: the suite replaces the attack list, and every
table and report says which suite produced its numbers."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from robustcnn.attacks import AttackConfig
from robustcnn.cli import app
from robustcnn.config import load_config
from robustcnn.experiments.adversarial import AdversarialStudyConfig, EvaluationConfig
from robustcnn.report_extra import suite_sentence
from robustcnn.suites import suite_label

runner = CliRunner()


@pytest.fixture
def lenet_weights(trained_lenet, tmp_path):
    import torch

    path = tmp_path / "lenet5.pt"
    torch.save(trained_lenet.state_dict(), path)
    return path


def test_suite_override_replaces_the_attack_list():
    config = load_config(AdversarialStudyConfig, overrides=["evaluation.suite=standard"])
    assert [a.name for a in config.evaluation.attacks] == ["autoattack"]
    assert config.evaluation.gallery_name == "autoattack"  # pgd is not in the grid
    full = load_config(AdversarialStudyConfig, "studies/adversarial-mnist-cpu.toml", overrides=["evaluation.suite=full"])
    assert [a.name for a in full.evaluation.attacks] == ["autoattack", "pgd", "deepfool"]


def test_the_digits_profile_keeps_quick_and_its_report_says_so():
    ev = EvaluationConfig()
    assert suite_label(ev.attacks, ev.suite) == "quick"
    text = "\n".join(suite_sentence(pd.DataFrame({"suite": ["quick"]})))
    assert "attack suite: quick (FGSM + PGD-40)" in text


def test_an_explicit_list_that_is_no_suite_is_named_by_its_attacks():
    assert suite_label([AttackConfig("fgsm"), AttackConfig("pgd", steps=5)]) == "fgsm+pgd"
    assert suite_label([AttackConfig("fgsm"), AttackConfig("pgd", steps=40)]) == "quick"  # pgd's default is 40
    assert suite_label([AttackConfig("fgsm")], "standard") == "standard"


@pytest.mark.parametrize("args", [["study", "adversarial", "-s", "evaluation.suite=strong"],
                                  ["benchmark", "lenet5", "--dataset", "digits", "--suite", "strong"]])
def test_unknown_suite_is_one_line_exit_2(args, tmp_path):
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "unknown attack suite 'strong'" in result.output and len(result.output.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_benchmark_records_the_suite_or_the_attacks_that_override_it(tmp_path, lenet_weights):
    fast = ["--dataset", "digits", "--image-size", "28", "--n-examples", "20", "--eps", "0,0.1", "--device", "cpu",
            "--weights", str(lenet_weights), "--out", str(tmp_path)]
    result = runner.invoke(app, ["benchmark", "lenet5", *fast, "--suite", "quick", "--attacks", "fgsm"])
    assert result.exit_code == 0, result.output
    (folder,) = [p for p in (tmp_path / "benchmark").iterdir() if not p.name.startswith(".")]
    assert json.loads((folder / "scorecard.json").read_text())["suite"] == "fgsm"
    assert set(pd.read_csv(folder / "tables" / "robust_accuracy.csv")["suite"]) == {"fgsm"}
    assert "attack suite: fgsm (an explicit attack list)" in (folder / "report.md").read_text()


def test_benchmark_api_runs_the_suite_when_no_attacks_are_given(lenet_weights):
    from robustcnn.benchmark import benchmark

    card = benchmark("lenet5", weights=lenet_weights, dataset="digits", image_size=28, suite="quick",
                     epsilons=[0.0, 0.1], n_examples=20, device="cpu", lint=False)
    assert card.suite == "quick" and set(card.robust["attack"]) == {"fgsm", "pgd", "worst_case"}


def test_study_writes_radii_and_their_summary(tmp_path):
    from test_cli import TINY_STUDY

    result = runner.invoke(app, ["study", "adversarial", "--out", str(tmp_path), *TINY_STUDY, "-s",
                                 "evaluation.radius=true", "-s", "evaluation.gallery=0"])
    assert result.exit_code == 0, result.output
    (folder,) = [p for p in (tmp_path / "adversarial").iterdir() if not p.name.startswith(".")]
    radii = pd.read_csv(folder / "tables" / "radii.csv")
    assert list(radii.columns) == ["model", "index", "threat_model", "radius"] and len(radii) == 2 * 40
    assert (radii["radius"] >= 0).all()
    summary = pd.read_csv(folder / "tables" / "radius_summary.csv").set_index("model")
    for model, g in radii.groupby("model"):  # the lower median, computed here independently
        assert summary.loc[model, "median"] == pytest.approx(sorted(g["radius"])[(len(g) + 1) // 2 - 1])
    assert "Robustness radius (FMN" in (folder / "report.md").read_text()


def test_robustbench_card_keys_and_values(lenet_weights, tmp_path):
    from robustcnn.benchmark import benchmark, write_benchmark
    from robustcnn.model_card import ROBUSTBENCH_KEYS, eps_text

    card = benchmark("lenet5", weights=lenet_weights, dataset="digits", image_size=28, attacks=["fgsm", "pgd"],
                     epsilons=[0.0, 0.1, 0.2], n_examples=30, device="cpu", lint=False)
    rb = json.loads((write_benchmark(card, tmp_path) / "robustbench.json").read_text())
    assert set(ROBUSTBENCH_KEYS) <= set(rb) and {"n_examples", "threat_model", "attack_suite"} <= set(rb)
    assert rb["name"] == rb["architecture"] == "lenet5" and rb["dataset"] == "digits"
    assert rb["eps"] == "0.2" and rb["threat_model"] == "Linf" and rb["n_examples"] == 30
    assert rb["attack_suite"] == "fgsm+pgd" and rb["additional_data"] is False and rb["number_forward_passes"] == 1
    assert rb["clean_acc"] == f"{100 * card.clean_accuracy:.2f}" and rb["autoattack_acc"] == ""
    assert "no AutoAttack" in rb["footnote"] and rb["link"] == rb["authors"] == rb["venue"] == rb["reported"] == ""
    assert eps_text(8 / 255) == "8/255" and eps_text(0.3) == "0.3"


def test_robustbench_card_takes_autoattack_at_the_largest_epsilon():
    from robustcnn.model_card import robustbench_card

    robust = pd.DataFrame({"attack": ["autoattack"] * 3 + ["pgd"] * 3, "threat_model": "linf",
                           "epsilon": [0, 2 / 255, 8 / 255] * 2, "robust_accuracy": [0.9, 0.5, 0.125, 0.9, 0.6, 0.3]})
    rb = robustbench_card("cnn5", "cifar10", "full", 100, 0.9, robust, "abc")
    assert rb["eps"] == "8/255" and rb["autoattack_acc"] == "12.50" and rb["clean_acc"] == "90.00"
    assert rb["footnote"] == "" and rb["attack_suite"] == "full"
