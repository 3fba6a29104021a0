"""AutoAttack through the registry: equal to the authors' package on the same inputs and seed, at least as strong
as PGD-40, inside the ball, cheap epsilon curves, bad input; and the named attack suites."""
from __future__ import annotations

import foolbox as fb
import pytest
import torch
import torch.nn as nn

from robustcnn.attacks import ATTACKS, AttackConfig, CountingModel, ThreatModel, list_attacks
from robustcnn.autoattack import AutoAttackAdapter
from robustcnn.errors import UsageError
from robustcnn.evaluation import evaluate_robustness
from robustcnn.suites import SUITES, resolve_suite

EPS = 0.06  # digits lenet5: about half the examples survive PGD-40, so every component gets work
# reduced budgets for speed on 2 CPU cores; 100 iterations (the default) keep APGD's step-size schedule as published
FAST = {"n_target_classes": 1, "n_queries": 100, "seed": 0}
TINY = {"n_target_classes": 1, "n_queries": 30, "seed": 0}
AA_NAMES = [n for n in list_attacks() if n.startswith(("autoattack", "apgd", "fab", "square"))]


def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def tiny(name: str, **options) -> AttackConfig:
    """A few iterations and queries: for behaviour, not strength."""
    opts = {k: v for k, v in {**TINY, **options}.items() if k in ATTACKS.get(name).meta["options"]}
    return AttackConfig(name, steps=5, options=opts) if "steps" in ATTACKS.get(name).meta["defaults"] \
        else AttackConfig(name, options=opts)


@pytest.fixture(scope="module")
def ours_and_package(trained_lenet, digits28):
    """Our evaluation (PGD-40 and AutoAttack) and the package's own run_standard_evaluation on the same 24
    examples, seed and budgets. One batch each, so both attack exactly the same examples together."""
    from pyautoattack import AutoAttack

    x, y = digits28.x_test[:24], digits28.y_test[:24]
    ours = evaluate_robustness(trained_lenet, x, y, attacks=["pgd", AttackConfig("autoattack", options=FAST)],
                               epsilons=[0, EPS], keep_adversarials=len(y))
    package = AutoAttack(trained_lenet, norm="Linf", eps=EPS, seed=0, version="standard", device="cpu")
    package.apgd_targeted.n_target_classes = package.fab.n_target_classes = FAST["n_target_classes"]
    package.square.n_queries = FAST["n_queries"]
    x_adv, y_adv = package.run_standard_evaluation(x, y, batch_size=500)
    return x, y, ours, x_adv, y_adv


def test_autoattack_equals_the_authors_package(ours_and_package):
    x, y, ours, x_adv, y_adv = ours_and_package
    rows = ours.samples[(ours.samples["attack"] == "autoattack") & (ours.samples["epsilon"] == EPS)]
    assert rows["correct"].tolist() == (y_adv == y).tolist()  # the same examples survive, not just as many
    assert ours.table.set_index(["attack", "epsilon"]).loc[("autoattack", EPS), "robust_accuracy"] == \
        pytest.approx((y_adv == y).float().mean().item())
    assert torch.allclose(ours.adversarials[("autoattack", EPS)], x_adv, atol=1e-6)  # the same adversarial images


def test_autoattack_is_at_least_as_strong_as_pgd40(ours_and_package, trained_lenet):
    x, y, ours, _, _ = ours_and_package
    acc = ours.table.pivot_table(index="epsilon", columns="attack", values="robust_accuracy")
    clean = (predictions(trained_lenet, x) == y).float().mean().item()
    assert acc.loc[0.0, "autoattack"] == pytest.approx(clean)
    assert acc.loc[EPS, "autoattack"] <= acc.loc[EPS, "pgd"] < clean
    assert acc.loc[EPS, "autoattack"] < clean - 0.2


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_defaults_are_the_standard_version(trained_lenet, norm):
    """Each component is configured as the package's AutoAttack(version="standard") configures its own."""
    from pyautoattack import AutoAttack

    threat = ThreatModel.LINF if norm == "Linf" else ThreatModel.L2
    package = AutoAttack(trained_lenet, norm=norm, eps=0.1, seed=3, version="standard")
    ours = AttackConfig("autoattack" if norm == "Linf" else "autoattack-l2", options={"seed": 3}).build()
    assert ours.components == tuple(package.attacks_to_run) and ours.norm == threat
    theirs = {"apgd-ce": package.apgd, "apgd-t": package.apgd_targeted, "fab-t": package.fab, "square": package.square}
    keys = ("n_iter", "n_iter_2", "n_iter_min", "size_decr", "n_restarts", "eps", "norm", "seed", "thr_decr", "eot_iter",
            "n_target_classes", "n_queries", "p_init", "rescale_schedule", "alpha_max", "eta", "beta", "loss")
    for name, reference in theirs.items():
        mine = ours._component(name, trained_lenet, 0.1, 10, torch.device("cpu"))
        assert type(mine) is type(reference)
        for key in keys:
            if hasattr(reference, key) and not callable(getattr(reference, key)):
                assert getattr(mine, key) == getattr(reference, key), (name, key)
    assert ours._component("fab-t", trained_lenet, 0.1, 10, torch.device("cpu")).targeted  # AutoAttack sets it per run


@pytest.mark.parametrize("name", AA_NAMES)
def test_every_autoattack_attack_keeps_the_protocol(trained_lenet, small_xy, name):
    """eps 0 is clean; clipped images lie in the ball and [0,1]; success means misclassified (checked here)."""
    x, y = small_xy[0][:10], small_xy[1][:10]
    x_before = x.clone()
    cfg = tiny(name)
    eps = [0.0, 1.0, 3.0] if cfg.threat_model == ThreatModel.L2 else [0.0, 0.1, 0.3]
    attack = cfg.build()
    fmodel = fb.PyTorchModel(CountingModel(trained_lenet), bounds=(0, 1), device=x.device)
    _, clipped, success = attack(fmodel, x, y, epsilons=eps)
    assert torch.equal(x, x_before) and success.shape == (3, 10)
    assert torch.equal(clipped[0], x) and torch.equal(success[0], predictions(trained_lenet, x) != y)
    for e, c, s in zip(eps, clipped, success):
        delta = (c - x).flatten(1)
        size = delta.abs().amax(1) if cfg.threat_model == ThreatModel.LINF else delta.norm(dim=1)
        assert (size <= e + 1e-6).all() and c.min() >= 0 and c.max() <= 1
        assert torch.equal(s, predictions(trained_lenet, c) != y)
    assert success[-1].sum() > success[0].sum()  # it breaks some examples at the largest epsilon


def test_cheap_curve_does_not_attack_broken_examples_again(trained_lenet, small_xy, monkeypatch):
    """Cumulative curve: each epsilon attacks only the examples standing at the previous one (counted at the
    adapter); the per-epsilon curve attacks every clean-correct example at every epsilon and costs more."""
    x, y = small_xy[0][:40], small_xy[1][:40]
    attacked: list[tuple[float, int]] = []
    original = AutoAttackAdapter.__call__

    def spy(self, fmodel, xb, yb, *, epsilons):
        attacked.extend((e, len(xb)) for e in epsilons)
        return original(self, fmodel, xb, yb, epsilons=epsilons)

    monkeypatch.setattr(AutoAttackAdapter, "__call__", spy)
    cfg = AttackConfig("apgd-ce", steps=10, options={"seed": 0})
    grid = [0.0, 0.03, 0.06, 0.1]
    cheap = evaluate_robustness(trained_lenet, x, y, attacks=[cfg], epsilons=grid)
    standing = (cheap.table.set_index("epsilon")["robust_accuracy"] * len(y)).round().astype(int)
    assert attacked == [(e, standing[prev]) for prev, e in zip(grid, grid[1:])]
    assert standing[0.1] < standing[0.0]
    attacked.clear()
    fresh = evaluate_robustness(trained_lenet, x, y, attacks=[cfg], epsilons=grid, curve="per-epsilon")
    assert [n for _, n in attacked] == [standing[0.0]] * len(grid)
    assert fresh.cost["backward_passes"].iloc[0] > cheap.cost["backward_passes"].iloc[0] > 0


def test_the_callers_random_stream_is_left_alone(trained_lenet, small_xy):
    x, y = small_xy[0][:8], small_xy[1][:8]
    attack = tiny("apgd-ce").build()
    fmodel = fb.PyTorchModel(trained_lenet, bounds=(0, 1), device=x.device)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    attack(fmodel, x, y, epsilons=[0.1])  # every component reseeds torch with its own seed
    assert torch.equal(torch.rand(3), expected)


def test_seed_comes_from_the_evaluation_unless_given():
    torch.manual_seed(0)
    a = AttackConfig("apgd-ce").build().seed
    torch.manual_seed(0)
    assert AttackConfig("apgd-ce").build().seed == a
    torch.manual_seed(1)
    assert AttackConfig("apgd-ce").build().seed != a
    assert AttackConfig("apgd-ce", options={"seed": 7}).build().seed == 7


class Noisy(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + 0.5 * torch.randn(len(x), 10)


def test_probabilities_random_outputs_and_few_classes_are_refused(trained_lenet, small_xy):
    x, y = small_xy[0][:10], small_xy[1][:10]
    cases = [(nn.Sequential(trained_lenet, nn.Softmax(dim=1)), "returns probabilities"),
             (Noisy(trained_lenet), "changes between two identical forward passes"),
             (nn.Sequential(trained_lenet, nn.Linear(10, 3)), "needs at least 4 classes")]
    for model, message in cases:
        with pytest.raises(UsageError, match=message):
            evaluate_robustness(model.eval(), x, y % 3 if "classes" in message else y,
                                attacks=[tiny("autoattack")], epsilons=[0.1])
    # log-probabilities are logits up to a shift, which every AutoAttack loss ignores: accepted
    logp = nn.Sequential(trained_lenet, nn.LogSoftmax(dim=1)).eval()
    evaluate_robustness(logp, x, y, attacks=[tiny("autoattack")], epsilons=[0.1])


@pytest.mark.parametrize(("name", "options", "message"), [
    ("square", {"n_queries": 0}, "n_queries .* must be a positive integer"),
    ("square-l2", {"n_queries": -5}, "n_queries .* must be a positive integer"),
    ("autoattack", {"n_queries": 2.5}, "n_queries .* must be a positive integer"),
    ("apgd-t", {"n_target_classes": 0}, "n_target_classes must be a positive integer"),
    ("apgd-ce", {"n_restarts": 0}, "n_restarts must be a positive integer"),
    ("square", {"p_init": 0}, r"p_init must be in \(0, 1\]"),
    ("fab-t", {"seed": "zero"}, "seed must be an integer"),
])
def test_bad_settings_are_one_line_usage_errors(name, options, message):
    with pytest.raises(UsageError, match=message) as info:
        AttackConfig(name, options=options).build()
    assert "\n" not in str(info.value)


def test_bad_steps_and_unknown_settings():
    with pytest.raises(UsageError, match="steps"):
        AttackConfig("autoattack", steps=0)
    with pytest.raises(UsageError, match="has no 'steps' setting"):
        AttackConfig("square", steps=10)  # Square counts queries: n_queries
    with pytest.raises(UsageError, match="has no option 'queries'"):
        AttackConfig("autoattack", options={"queries": 10})


class OnlyAtCorners(nn.Module):
    """4 classes on 1x4x4 images of 0.5: class 1 when at least 90 % of the pixels, rounded to 0.01, lie 0.09 or
    more from 0.5, i.e. only near the corners of the eps=0.1 L-inf ball, where Square's stripes start. The rounding
    zeroes every input gradient, and a random start puts about 10 % of the pixels there: gradient attacks fail."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.round(x * 100) / 100
        frac = ((q - 0.5).abs() >= 0.09).float().flatten(1).mean(1)
        s = 20 * (frac - 0.9) + 0 * q.flatten(1).sum(1)  # keeps a (zero) gradient path for the attacks
        return torch.stack([-s, s, torch.full_like(s, -10.0), torch.full_like(s, -10.0)], 1)


@pytest.mark.parametrize("name", ["autoattack", "autoattack-l2"])
def test_the_standard_version_asks_for_all_four_components(name):
    assert AttackConfig(name).build().components == ("apgd-ce", "apgd-t", "fab-t", "square")  # Croce & Hein 2020


def test_the_standard_version_runs_square_where_gradients_fail():
    """On OnlyAtCorners each gradient component alone leaves every example standing, Square alone breaks all of
    them (hand-checked: its stripes move every pixel by eps), so AutoAttack must reach 0 only through Square."""
    x, y = torch.full((4, 1, 4, 4), 0.5), torch.zeros(4, dtype=torch.long)
    model = OnlyAtCorners().eval()
    corner = x + 0.1 * torch.where(torch.arange(16).view(1, 1, 4, 4) % 2 == 0, 1.0, -1.0)
    assert (predictions(model, x) == 0).all() and (predictions(model, corner) == 1).all()
    attacks = [tiny("autoattack", n_queries=20), tiny("apgd-ce"), tiny("apgd-t"), tiny("fab-t"),
               tiny("square", n_queries=20)]
    result = evaluate_robustness(model, x, y, attacks=attacks, epsilons=[0.0, 0.1], curve="per-epsilon")
    acc = result.table.set_index(["attack", "epsilon"])["robust_accuracy"]
    assert [acc[(a, 0.1)] for a in ("apgd-ce", "apgd-t", "fab-t", "square")] == [1.0, 1.0, 1.0, 0.0]
    assert acc[("autoattack", 0.1)] == 0.0 and acc[("autoattack", 0.0)] == 1.0


# ------------------------------------------------------------------ suites
@pytest.mark.parametrize("threat", ["linf", "l2"])
def test_every_suite_resolves_to_registered_attacks_of_its_threat_model(threat):
    for name in SUITES:
        configs = resolve_suite(name, threat_model=threat)
        assert configs and all(c.threat_model.value == threat for c in configs)
    assert [c.name for c in resolve_suite("standard", threat)] == ["autoattack" if threat == "linf" else "autoattack-l2"]
    assert {c.name for c in resolve_suite("standard", threat)} < {c.name for c in resolve_suite("full", threat)}


def test_unknown_suite_lists_the_choices():
    with pytest.raises(UsageError, match=r"unknown attack suite 'standrd' \(did you mean 'standard'\?\); choose from: "
                                         "full, quick, standard"):
        resolve_suite("standrd")
    with pytest.raises(UsageError, match="unknown threat model"):
        resolve_suite("quick", threat_model="l1")
