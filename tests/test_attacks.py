"""Attack behaviour: eps 0 is clean, perturbations stay in the ball and in [0,1], PGD hurts, worst case."""
from __future__ import annotations

import pytest
import torch

from robustcnn.attacks import ATTACKS, AttackConfig, list_attacks
from robustcnn.errors import UsageError
from robustcnn.evaluation import evaluate_robustness

EPS = [0.0, 0.05, 0.1, 0.2]


def clean_accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def cheap(name: str) -> AttackConfig:
    """The attack with few steps/queries, so every registered attack runs in a test."""
    meta = ATTACKS.get(name).meta
    options = {k: v for k, v in (("n_queries", 20), ("n_target_classes", 2)) if k in meta["options"]}
    return AttackConfig(name, **({"steps": 5} if "steps" in meta["defaults"] else {}), options=options)


@pytest.mark.parametrize("attack", list_attacks())
def test_every_attack_keeps_the_protocol_and_eps0_is_clean(trained_lenet, small_xy, attack):
    """Called directly (the registry's protocol), each attack returns images inside its ball and [0,1] and
    flags success only where the model is fooled; through the evaluation, run for real at epsilon 0 (per-epsilon),
    it leaves clean accuracy and claims nothing."""
    import foolbox as fb

    x, y = small_xy
    x_before = x.clone()
    cfg = cheap(attack)
    eps = [0.0, 0.1, 0.5] if cfg.threat_model.value == "l2" else [0.0, 0.05, 0.1]
    torch.manual_seed(0)
    _, clipped, success = cfg.build()(fb.PyTorchModel(trained_lenet, bounds=(0, 1), device=x.device), x, y, epsilons=eps)
    assert torch.equal(x, x_before)  # inputs are never modified in place
    assert len(clipped) == len(eps) and tuple(success.shape) == (len(eps), len(y))
    for e, adv, fooled in zip(eps, clipped, success):
        assert adv.min() >= 0 and adv.max() <= 1
        delta = (adv - x).flatten(1)
        size = delta.abs().amax(1) if cfg.threat_model.value == "linf" else delta.norm(dim=1)
        assert (size <= e * (1 + 1e-5) + 1e-6).all()
        with torch.no_grad():
            assert torch.equal(fooled.bool(), trained_lenet(adv).argmax(1) != y)
    result = evaluate_robustness(trained_lenet, x, y, attacks=[cfg], epsilons=eps, curve="per-epsilon")
    assert result.table.set_index("epsilon").loc[0.0, "robust_accuracy"] == pytest.approx(clean_accuracy(trained_lenet, x, y))
    at0 = result.samples[(result.samples["epsilon"] == 0) & (result.samples["label"] == result.samples["clean_pred"])]
    assert not at0["attack_success"].any()


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


def test_the_cumulative_curve_matches_per_epsilon_attacks_for_fewer_passes(trained_lenet, small_xy):
    """On a healthy model the cheap cumulative curve is the per-epsilon curve within noise, for fewer passes."""
    x, y = small_xy
    cfg = AttackConfig("pgd", steps=20)
    cheap = evaluate_robustness(trained_lenet, x, y, attacks=[cfg], epsilons=EPS)
    full = evaluate_robustness(trained_lenet, x, y, attacks=[cfg], epsilons=EPS, curve="per-epsilon")
    diff = (cheap.table["robust_accuracy"] - full.table["robust_accuracy"]).abs().max()
    assert diff <= 0.03
    assert cheap.cost["backward_passes"].iloc[0] < full.cost["backward_passes"].iloc[0]


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


@pytest.mark.parametrize("settings", [{}, {"random_start": False}, {"steps": 7, "options": {"abs_stepsize": 0.02}}])
def test_registry_pgd_gives_foolbox_linfpgd_examples_bit_for_bit(trained_lenet, small_xy, settings):
    """The registry's `pgd` is our own torch loop (no eagerpy, no weight gradients); foolbox's LinfPGD is the
    reference: from the same seed both must return the same adversarial images and the same success flags."""
    import foolbox as fb

    from robustcnn.attacks import CountingModel
    x, y = small_xy
    cfg = AttackConfig("pgd", **settings)
    s = cfg.settings()
    reference = fb.attacks.LinfPGD(steps=s["steps"], rel_stepsize=s["step_size"], random_start=s["random_start"],
                                   abs_stepsize=s.get("abs_stepsize"))
    fmodel = fb.PyTorchModel(CountingModel(trained_lenet), bounds=(0, 1), device=x.device)  # foolbox moves the model
    torch.manual_seed(3)
    _, ours, ours_success = cfg.build()(fmodel, x, y, epsilons=[0.05, 0.1])
    torch.manual_seed(3)
    _, theirs, theirs_success = reference(fmodel, x, y, epsilons=[0.05, 0.1])
    assert 0 < theirs_success[0].sum() < len(y)  # a case where the steps matter
    assert torch.equal(ours_success, theirs_success)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_torch_model_builds_a_graph_only_when_the_input_asks_for_one():
    """TorchModel (how our own attacks call a model) keeps foolbox's wrapper semantics: a graph through the
    weights only when the input requires a gradient, whatever the caller's grad mode."""
    from robustcnn.attacks import TorchModel

    net = torch.nn.Linear(4, 3)
    call = TorchModel(net)
    x = torch.rand(2, 4)
    with torch.enable_grad():
        assert not call(x).requires_grad  # no input gradient asked: no graph, as foolbox's wrapper does
    with torch.no_grad():
        out = call(x.clone().requires_grad_(True))
    (grad,) = torch.autograd.grad(out.sum(), net.weight)  # the graph exists even under no_grad
    assert grad.shape == net.weight.shape
