"""The evaluation lint passes a healthy model and flags deliberately broken ones."""
from __future__ import annotations

import copy

import pandas as pd
import torch
import torch.nn as nn

from robustcnn.attacks import AttackConfig, evaluate_robustness
from robustcnn.lint import check_gradients, check_logits, check_pgd_vs_fgsm, lint_evaluation

ATTACKS = [AttackConfig("fgsm"), AttackConfig("pgd", steps=10)]


def statuses(model, x, y, table=None) -> dict[str, str]:
    df = lint_evaluation(model, x, y, attacks=ATTACKS, table=table, n=100)
    return dict(zip(df["check"], df["status"]))


class Softmaxed(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), 1)


class Quantized(nn.Module):
    """Rounds its input to 8 levels: a non-differentiable step, so input gradients are exactly zero."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 7) / 7)


class WithDropout(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.drop = model, nn.Dropout(0.5)

    def forward(self, x):
        return self.model(self.drop(x))


def test_a_healthy_model_passes(trained_lenet, small_xy):
    x, y = small_xy
    table = evaluate_robustness(trained_lenet, x, y, attacks=ATTACKS, epsilons=[0, 0.05, 0.1, 0.2]).table
    result = statuses(trained_lenet, x, y, table)
    assert "FAIL" not in result.values(), result
    assert result["eps0_equals_clean"] == "PASS" and result["unbounded_attack"] == "PASS"


def test_softmax_outputs_fail(trained_lenet, small_xy):
    x, _ = small_xy
    assert check_logits(Softmaxed(trained_lenet).eval(), x).status == "FAIL"


def test_zero_gradients_fail_and_unbounded_attack_cannot_reach_chance(trained_lenet, small_xy):
    x, y = small_xy
    result = statuses(Quantized(trained_lenet).eval(), x, y)
    assert result["gradients"] == "FAIL"
    assert result["unbounded_attack"] == "FAIL"


def test_train_mode_with_dropout_fails(trained_lenet, small_xy):
    x, y = small_xy
    model = WithDropout(copy.deepcopy(trained_lenet)).train()
    result = statuses(model, x, y)
    assert result["eval_mode"] == "FAIL" and result["deterministic"] == "FAIL"


def test_batchnorm_in_train_mode_breaks_batch_invariance(small_xy):
    from robustcnn.models import create_model

    x, y = small_xy
    model = create_model("cnn5", dataset="mnist", width=2).train()
    assert statuses(model, x, y)["batch_size_invariance"] == "FAIL"


def test_weak_pgd_is_detected_and_explained():
    table = pd.DataFrame({"attack": ["fgsm", "fgsm", "pgd", "pgd"], "epsilon": [0, 0.3, 0, 0.3],
                          "robust_accuracy": [0.99, 0.10, 0.99, 0.40]})
    weak = AttackConfig("pgd", steps=40, step_size=0.01 / 0.3)  # foolbox's default relative step
    check = check_pgd_vs_fgsm(table, [AttackConfig("fgsm"), weak])
    assert check.status == "WARN" and "1.33 x epsilon" in check.detail


def test_gradient_check_on_a_healthy_model(trained_lenet, small_xy):
    x, y = small_xy
    assert check_gradients(trained_lenet, x, y).status == "PASS"
