"""Attack behaviour: eps 0 is clean, perturbations stay in the ball and in [0,1], PGD hurts, worst case."""
from __future__ import annotations

import pytest
import torch

from robustcnn.attacks import AttackConfig, evaluate_robustness, list_attacks
from robustcnn.errors import UsageError
from robustcnn.perturb import pgd_linf

EPS = [0.0, 0.05, 0.1, 0.2]


def clean_accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("attack", list_attacks())
def test_every_attack_eps0_is_clean_and_stays_in_the_ball(trained_lenet, small_xy, attack):
    x, y = small_xy
    x_before = x.clone()
    cfg = AttackConfig(attack, steps=5) if attack in ("pgd", "l2-pgd", "deepfool", "cw-l2") else AttackConfig(attack)
    eps = [0.0, 0.1, 0.5] if cfg.threat_model.value == "l2" else [0.0, 0.05, 0.1]
    result = evaluate_robustness(trained_lenet, x, y, attacks=[cfg], epsilons=eps, keep_adversarials=len(y))
    assert torch.equal(x, x_before)  # inputs are never modified in place
    table = result.table.set_index("epsilon")
    assert table.loc[0.0, "robust_accuracy"] == pytest.approx(clean_accuracy(trained_lenet, x, y))
    norm = "perturbation_linf" if cfg.threat_model.value == "linf" else "perturbation_l2"
    for e in eps:
        adv = result.adversarials[(attack, e)]
        assert adv.min() >= 0 and adv.max() <= 1
        delta = (adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "perturbation_linf" else delta.norm(dim=1)
        assert (size <= e + 1e-5).all()
        rows = result.samples[(result.samples["attack"] == attack) & (result.samples["epsilon"] == e)]
        assert (rows[norm].dropna() <= e + 1e-5).all()


def test_pgd_lowers_accuracy_and_is_at_least_as_strong_as_fgsm(trained_lenet, small_xy):
    x, y = small_xy
    result = evaluate_robustness(trained_lenet, x, y, attacks=["fgsm", AttackConfig("pgd", steps=20)], epsilons=EPS)
    acc = result.table.pivot_table(index="epsilon", columns="attack", values="robust_accuracy")
    assert acc.loc[0.2, "pgd"] < 0.2 < acc.loc[0.0, "pgd"]
    assert (acc["pgd"] <= acc["fgsm"] + 0.02).all()
    assert (acc["worst_case"] <= acc[["fgsm", "pgd"]].min(axis=1) + 1e-12).all()
    assert acc["worst_case"].is_monotonic_decreasing
    cost = result.cost.set_index("attack")
    assert cost.loc["pgd", "backward_passes"] > 10 * cost.loc["fgsm", "backward_passes"] > 0


def test_reusing_broken_samples_matches_attacking_everything(trained_lenet, small_xy):
    """The cheap epsilon curve gives the same curve as a fresh attack at every epsilon, within noise, for fewer passes."""
    x, y = small_xy
    cfg = AttackConfig("pgd", steps=20)
    cheap = evaluate_robustness(trained_lenet, x, y, attacks=[cfg], epsilons=EPS)
    full = evaluate_robustness(trained_lenet, x, y, attacks=[cfg], epsilons=EPS, reuse_broken=False)
    diff = (cheap.table["robust_accuracy"] - full.table["robust_accuracy"]).abs().max()
    assert diff <= 0.03
    assert cheap.cost["backward_passes"].iloc[0] < full.cost["backward_passes"].iloc[0]


def test_foolbox_pgd_agrees_with_an_independent_torch_pgd(trained_lenet, small_xy):
    x, y = small_xy
    steps, eps = 20, 0.1
    torch.manual_seed(0)
    ours = pgd_linf(trained_lenet, x, y, epsilon=eps, steps=steps, step_size=2.5 * eps / steps)
    assert (ours - x).abs().max() <= eps + 1e-6 and ours.min() >= 0 and ours.max() <= 1
    reference = clean_accuracy(trained_lenet, ours, y)
    fb = evaluate_robustness(trained_lenet, x, y, attacks=[AttackConfig("pgd", steps=steps)], epsilons=[eps])
    assert abs(fb.table["robust_accuracy"].iloc[-1] - reference) <= 0.05


def test_restarts_never_raise_accuracy(trained_lenet, small_xy):
    x, y = small_xy
    one = evaluate_robustness(trained_lenet, x, y, attacks=[AttackConfig("pgd", steps=5)], epsilons=[0.1])
    three = evaluate_robustness(trained_lenet, x, y, attacks=[AttackConfig("pgd", steps=5, restarts=3)], epsilons=[0.1])
    assert three.table["robust_accuracy"].iloc[-1] <= one.table["robust_accuracy"].iloc[-1] + 0.02


@pytest.mark.parametrize("eps", [[-0.1], [1.5], []])
def test_bad_epsilons(trained_lenet, small_xy, eps):
    x, y = small_xy
    with pytest.raises(UsageError, match="epsilon"):
        evaluate_robustness(trained_lenet, x, y, attacks=["fgsm"], epsilons=eps)


def test_bad_attack_names_and_settings():
    with pytest.raises(UsageError, match="did you mean 'pgd'"):
        AttackConfig("pdg")
    with pytest.raises(UsageError, match="fgsm has no 'steps' setting"):
        AttackConfig("fgsm", steps=3)
