"""The evaluation lint: every check PASSes on a healthy model and FAILs or WARNs on a deliberately broken model,
attack or table (tests/broken_models.py)."""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from broken_models import FarFromHalf, Pusher, Quantized, Randomized, Shield, Softmaxed, WithDropout, register_stub

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
    stronger,
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


def unbounded_with_shielded(model, x, y, k: int):
    """The unbounded-attack check on `model` with its first k correctly classified examples shielded from attack."""
    with torch.no_grad():
        correct = torch.nonzero(model(x).argmax(1) == y).flatten()[:k].tolist()
    return check_unbounded(Shield(model, x, y, protected=correct).eval(), x, y, seed=0)


def test_masked_gradients_on_a_few_examples_warn_the_unbounded_attack(trained_lenet, small_xy):
    """3 % of the examples resist an unbounded attack: above 1 %, below chance / 2 (5 %)."""
    check = unbounded_with_shielded(trained_lenet, *small_xy, k=3)
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


def test_masked_gradients_between_half_chance_and_chance_fail_the_unbounded_attack(trained_lenet, small_xy):
    """8 % of the examples resist an unbounded attack: above chance / 2 (5 %), below chance (10 %): FAIL."""
    check = unbounded_with_shielded(trained_lenet, *small_xy, k=8)
    assert check.status == "FAIL" and "0.080" in check.detail, check.detail


@pytest.mark.parametrize("pgd, status", [(0.40, "PASS"), (0.42, "WARN"), (0.45, "WARN")])
def test_pgd_worse_than_fgsm_by_two_points_warns(pgd, status):
    """FGSM leaves 0.40; PGD leaving 2 or 5 points more is a weak PGD, not noise."""
    table = pd.DataFrame({"attack": ["fgsm", "fgsm", "pgd", "pgd"], "epsilon": [0, 0.1, 0, 0.1],
                          "robust_accuracy": [0.99, 0.40, 0.99, pgd]})
    check = check_pgd_vs_fgsm(table, [AttackConfig("fgsm"), AttackConfig("pgd")])
    assert check.status == status, check.detail


def test_eps0_check_is_not_run_without_epsilon_0_rows(trained_lenet, small_xy):
    x, y = small_xy[0][:20], small_xy[1][:20]
    check = check_eps0(trained_lenet, x, y, per_epsilon(trained_lenet, x, y, attacks=[AttackConfig("fgsm")],
                                                        grid=[0.1]))
    assert check.status == "FAIL" and "not run" in check.detail, check.detail


def test_the_lint_attacks_at_epsilon_0_even_when_the_grid_has_none(trained_lenet, small_xy, monkeypatch):
    """The grid given is [0.1]; the lint adds epsilon 0 itself, so it catches an attack that claims successes
    there (and clears FGSM)."""
    x, y = small_xy
    liar = AttackConfig(register_stub(monkeypatch))
    lint = lint_evaluation(trained_lenet, x, y, attacks=[AttackConfig("fgsm"), liar], epsilons=[0.1], n=20)
    row = lint.set_index("check").loc["eps0_equals_clean"]
    assert row["status"] == "FAIL" and "liar: " in row["detail"] and "successes claimed" in row["detail"], row["detail"]
    assert "fgsm: " not in row["detail"]


def test_convergence_runs_the_stronger_attack_with_three_restarts(monkeypatch):
    """An attack that breaks every sample only on its third random start at an epsilon: a single start leaves
    all 20 standing, so only a 3-restart paired attack finds them (WARN, 20 newly broken)."""
    x, y = torch.full((20, 1, 2, 2), 0.2), torch.zeros(20, dtype=torch.long)
    model = FarFromHalf(r=0.38).eval()  # mean 0.2: class 0 (correct); mean 0.1 (moved by eps=0.1): class 1
    name = register_stub(monkeypatch, lambda **kw: Pusher(lambda e: e, from_call=3), "third-start",
                         defaults={"steps": 1, "step_size": None, "random_start": True})
    cfg = AttackConfig(name)
    assert (stronger(cfg).settings()["steps"], stronger(cfg).restarts) == (2, 3)
    per_eps = per_epsilon(model, x, y, attacks=[cfg], grid=[0.0, 0.1])
    assert per_eps.table.set_index("epsilon")["robust_accuracy"][0.1] == 1.0  # one start: nothing broken
    check = check_convergence(model, x, y, cfg, per_eps, seed=0)
    assert check.status == "WARN" and "2 steps x 3 restarts" in check.detail and "break 20 of them" in check.detail, \
        check.detail
