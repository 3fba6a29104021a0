"""The lint's cross-checks (robustcnn.lint_strength): each PASSes on a healthy trained lenet5 and WARNs or FAILs
when one implementation or attack is deliberately broken (tests/broken_models.py)."""
from __future__ import annotations

import torch
from broken_models import Quantized

import robustcnn.lint_strength as ls
from robustcnn.attacks import AttackConfig
from robustcnn.evaluation import evaluate_robustness

N = 40


def xy(small_xy):
    x, y = small_xy
    return x[:N], y[:N]


def per_eps(model, x, y, attacks, grid):
    return evaluate_robustness(model, x, y, attacks=attacks, epsilons=[0.0, *grid], curve="per-epsilon")


def test_implementations_agree_on_a_healthy_model(trained_lenet, small_xy):
    x, y = xy(small_xy)
    _, status, detail = ls.check_implementations_agree(trained_lenet, x, y, [AttackConfig("pgd")], [0.0, 0.05], 0)
    assert status == "PASS", detail


def test_a_weakened_foolbox_pgd_is_named(trained_lenet, small_xy, monkeypatch):
    import foolbox as fb
    x, y = xy(small_xy)
    real = fb.attacks.LinfPGD
    monkeypatch.setattr(fb.attacks, "LinfPGD", lambda **kw: real(**{**kw, "steps": 1}))  # foolbox's own, 1 step
    _, status, detail = ls.check_implementations_agree(trained_lenet, x, y, [AttackConfig("pgd")], [0.0, 0.1], 0)
    assert status == "WARN" and "foolbox pgd (40 steps) leaves" in detail, detail
    assert "examples only" in detail


def test_the_foolbox_pgd_takes_the_grids_pgd_settings(trained_lenet, small_xy):
    import re
    x, y = xy(small_xy)
    _, _, detail = ls.check_implementations_agree(trained_lenet, x, y, [AttackConfig("pgd", steps=1)], [0.0, 0.1], 0)
    ours, theirs = (int(re.search(rf"{who} pgd \(1 steps\) (\d+)", detail).group(1)) for who in ("robustcnn", "foolbox"))
    assert abs(ours - theirs) <= ls.agreement_tolerance(len(y)), detail  # both one step: equally weak


def test_the_foolbox_pgd_is_built_with_every_setting_of_the_grids_pgd(trained_lenet, small_xy, monkeypatch):
    import foolbox as fb
    x, y = xy(small_xy)
    real, built = fb.attacks.LinfPGD, {}
    monkeypatch.setattr(fb.attacks, "LinfPGD", lambda **kw: built.update(kw) or real(**kw))
    pgd = AttackConfig("pgd", steps=3, random_start=False, options={"abs_stepsize": 0.01})
    ls.check_implementations_agree(trained_lenet, x, y, [pgd], [0.0, 0.1], 0)
    assert built == {"steps": 3, "rel_stepsize": pgd.settings()["step_size"], "random_start": False,
                     "abs_stepsize": 0.01}


def test_a_weakened_robustcnn_pgd_is_named(trained_lenet, small_xy, monkeypatch):
    from robustcnn.attacks import LinfPGD
    x, y = xy(small_xy)
    monkeypatch.setattr(LinfPGD, "_run", lambda self, fmodel, x0, y, eps: x0)  # our PGD, doing nothing
    _, status, detail = ls.check_implementations_agree(trained_lenet, x, y, [AttackConfig("pgd")], [0.0, 0.1], 0)
    assert status == "WARN" and "robustcnn pgd (40 steps) leaves" in detail, detail


def test_agreement_skips_without_an_linf_attack(trained_lenet, small_xy):
    x, y = xy(small_xy)
    assert ls.check_implementations_agree(trained_lenet, x, y, [AttackConfig("l2-pgd")], [0.0, 1.0], 0)[1] == "SKIP"


def test_square_beating_white_box_fails_on_masked_gradients(trained_lenet, small_xy):
    x, y = xy(small_xy)
    grid = [0.1]
    healthy = ls.check_square_vs_whitebox(trained_lenet, x, y, per_eps(trained_lenet, x, y, ["pgd"], grid), grid, 0)
    assert healthy[1] == "PASS", healthy[2]
    masked = Quantized(trained_lenet).eval()  # rounds its inputs: zero input gradients
    status = ls.check_square_vs_whitebox(masked, x, y, per_eps(masked, x, y, ["pgd"], grid), grid, 0)
    assert status[1] == "FAIL" and "gradients are masked" in status[2], status[2]


def test_radius_curve_agrees_and_flags_a_weak_side(trained_lenet, small_xy, monkeypatch):
    x, y = xy(small_xy)
    grid = [0.05]
    strong = per_eps(trained_lenet, x, y, ["fgsm", "pgd"], grid)
    assert ls.check_radius_consistent(trained_lenet, x, y, strong, grid, 0)[1] == "PASS"
    grid = [0.1]
    weak = per_eps(trained_lenet, x, y, [AttackConfig("pgd", steps=1, step_size=0.05, random_start=False)], grid)
    _, status, detail = ls.check_radius_consistent(trained_lenet, x, y, weak, grid, 0)
    assert status == "WARN" and "fixed-epsilon attacks (pgd) are weak" in detail, detail
    monkeypatch.setattr(ls, "robustness_radii", lambda model, x, y, **kw: torch.full((len(y),), float("inf")))
    _, status, detail = ls.check_radius_consistent(trained_lenet, x, y, per_eps(trained_lenet, x, y, ["pgd"], grid),
                                                   grid, 0)
    assert status == "WARN" and "FMN misses" in detail, detail


def test_the_checks_are_skip_rows_when_off(trained_lenet, small_xy):
    x, y = xy(small_xy)
    rows = ls.strong_rows(trained_lenet, x, y, [], [0.1], None, 0, 500, run=False)
    assert list(rows["status"]) == ["SKIP"] * 3 and rows["detail"].str.contains("quick suite").all()
