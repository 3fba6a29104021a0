"""The evaluation lint: every check PASSes on a healthy model and FAILs or WARNs on a deliberately broken model,
attack or table (tests/broken_models.py)."""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from broken_models import Quantized, Randomized, Shield, Softmaxed, WithDropout, register_stub

from robustcnn.attacks import AttackConfig
from robustcnn.evaluation import evaluate_robustness
from robustcnn.lint import (
    check_batch_invariance,
    check_convergence,
    check_deterministic,
    check_eps0,
    check_eval_mode,
    check_gradients,
    check_logits,
    check_monotone,
    check_pgd_vs_fgsm,
    check_unbounded,
    lint_evaluation,
)

ATTACKS = [AttackConfig("fgsm"), AttackConfig("pgd", steps=20)]
GRID = [0.0, 0.05, 0.1, 0.2]


def per_epsilon(model, x, y, attacks=ATTACKS, grid=GRID):
    return evaluate_robustness(model, x, y, attacks=attacks, epsilons=grid, curve="per-epsilon")


def test_a_healthy_model_passes_every_check(trained_lenet, small_xy):
    x, y = small_xy
    table = evaluate_robustness(trained_lenet, x, y, attacks=ATTACKS, epsilons=GRID).table
    lint = lint_evaluation(trained_lenet, x, y, attacks=ATTACKS, epsilons=GRID, table=table, n=100)
    assert len(lint) == 13 and set(lint["status"][:10]) == {"PASS"}, lint.to_string()
    assert set(lint["status"][10:]) == {"SKIP"}  # strong_checks off: tests/test_lint_strength.py runs them


def test_train_mode_with_dropout_fails_eval_mode_and_determinism(trained_lenet, small_xy):
    x, _ = small_xy
    model = WithDropout(copy.deepcopy(trained_lenet)).train()
    assert check_eval_mode(model).status == "FAIL"
    assert check_deterministic(model, x).status == "FAIL"


def test_batchnorm_in_train_mode_breaks_batch_invariance(small_xy):
    from robustcnn.models import create_model

    x, _ = small_xy
    model = create_model("cnn5", dataset="mnist", width=2).train()
    assert check_batch_invariance(model, x).status == "FAIL"
    assert check_batch_invariance(model.eval(), x).status == "PASS"


def test_softmax_outputs_fail(trained_lenet, small_xy):
    x, _ = small_xy
    assert check_logits(Softmaxed(trained_lenet).eval(), x).status == "FAIL"


def test_rounded_inputs_fail_gradients_and_the_unbounded_attack(trained_lenet, small_xy):
    """Rounding the input masks every gradient: PGD cannot move, even with the whole pixel range."""
    x, y = small_xy
    model = Quantized(trained_lenet).eval()
    assert check_gradients(model, x, y).status == "FAIL"
    assert check_unbounded(model, x[:50], y[:50], seed=0).status == "FAIL"


def test_masked_gradients_on_a_few_examples_warn_the_unbounded_attack(trained_lenet, small_xy):
    """3 % of the examples resist an unbounded attack: above 1 %, below chance / 2 (5 %)."""
    x, y = small_xy
    with torch.no_grad():
        correct = torch.nonzero(trained_lenet(x).argmax(1) == y).flatten()[:3].tolist()
    check = check_unbounded(Shield(trained_lenet, x, y, protected=correct).eval(), x, y, seed=0)
    assert check.status == "WARN" and "0.030" in check.detail, check.detail


def test_a_random_model_fails_determinism_and_eps0(trained_lenet, small_xy):
    x, y = small_xy
    model = Randomized(trained_lenet).eval()
    assert check_deterministic(model, x).status == "FAIL"
    assert check_eps0(model, x, y, per_epsilon(model, x, y, grid=[0.0])).status == "FAIL"


def test_eps0_fails_an_attack_that_claims_successes(trained_lenet, small_xy, monkeypatch):
    x, y = small_xy
    stub = [AttackConfig(register_stub(monkeypatch))]
    check = check_eps0(trained_lenet, x, y, per_epsilon(trained_lenet, x, y, attacks=stub, grid=[0.0]))
    assert check.status == "FAIL" and "successes claimed" in check.detail


def test_monotonicity_fails_when_attacks_weaken_with_epsilon(trained_lenet, small_xy):
    """A model masking its gradients beyond 0.12 of every test image: independent attacks recover accuracy at
    eps 0.2, which the check sees; the cumulative curve hides it (monotone by construction)."""
    x, y = small_xy
    model = Shield(trained_lenet, x, y, radius=0.12).eval()
    pgd, grid = [AttackConfig("pgd", steps=10)], [0.0, 0.1, 0.2]
    check = check_monotone(per_epsilon(model, x, y, attacks=pgd, grid=grid))
    assert check.status == "FAIL" and "at eps 0.1 -> " in check.detail, check.detail
    cumulative = evaluate_robustness(model, x, y, attacks=pgd, epsilons=grid).table
    assert all(g.sort_values("epsilon")["robust_accuracy"].is_monotonic_decreasing
               for _, g in cumulative.groupby("attack"))


def test_convergence_warns_for_a_one_step_pgd(trained_lenet, small_xy):
    """PGD-1: a paired PGD-2 with 3 restarts on the same examples breaks many it left standing."""
    x, y = small_xy
    weak = AttackConfig("pgd", steps=1)
    check = check_convergence(trained_lenet, x, y, weak, per_epsilon(trained_lenet, x, y, attacks=[weak]), seed=0)
    assert check.status == "WARN", check.detail


def test_weak_pgd_is_detected_and_explained():
    table = pd.DataFrame({"attack": ["fgsm", "fgsm", "pgd", "pgd"], "epsilon": [0, 0.3, 0, 0.3],
                          "robust_accuracy": [0.99, 0.10, 0.99, 0.40]})
    weak = AttackConfig("pgd", steps=40, step_size=0.01 / 0.3)  # foolbox's default relative step
    check = check_pgd_vs_fgsm(table, [AttackConfig("fgsm"), weak])
    assert check.status == "WARN" and "1.33 x epsilon" in check.detail


@pytest.mark.parametrize("attacks", [[], [AttackConfig("fgsm")]])
def test_checks_that_do_not_apply_are_skipped(trained_lenet, small_xy, attacks):
    x, y = small_xy
    lint = lint_evaluation(trained_lenet, x[:20], y[:20], attacks=attacks, epsilons=[0.0, 0.1], n=20)
    status = dict(zip(lint["check"], lint["status"]))
    assert status["attack_converged"] == "SKIP" and status["pgd_at_least_fgsm"] == "SKIP"
