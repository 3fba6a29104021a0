"""The evaluation path: agreement with an independent bare-torch PGD, restarts, cumulative vs per-epsilon
curves, verified attack successes, L2 budgets up to the image's diameter, and config validation."""
from __future__ import annotations

import math

import pytest
import reference_pgd
import torch
from broken_models import FarFromHalf, Liar, Pusher, Shield, register_stub

from robustcnn.attacks import AttackConfig, ThreatModel, check_budget
from robustcnn.errors import UsageError
from robustcnn.evaluation import evaluate_model, evaluate_robustness
from robustcnn.experiments.adversarial import EvaluationConfig

STEPS = 10
TOLERANCE = 0.02  # 4 of 200 examples: two random-start PGDs differ only in their random draws


@pytest.fixture
def xy200(digits28) -> tuple[torch.Tensor, torch.Tensor]:
    return digits28.x_test[:200], digits28.y_test[:200]


@pytest.mark.parametrize("attack, norm, grid", [("pgd", "linf", [0.05, 0.1]), ("l2-pgd", "l2", [1.0, 2.0])])
def test_pgd_agrees_with_an_independent_bare_torch_pgd(trained_lenet, xy200, attack, norm, grid):
    """Same settings (steps, step 2.5 * eps / steps, random start), per-epsilon: robust accuracies agree
    within TOLERANCE at every epsilon (L2 budgets up to 2, beyond the old cap of 1)."""
    x, y = xy200
    table = evaluate_robustness(trained_lenet, x, y, attacks=[AttackConfig(attack, steps=STEPS)], epsilons=grid,
                                curve="per-epsilon").table.set_index("epsilon")["robust_accuracy"]
    for eps in grid:
        reference = reference_pgd.robust_accuracy(trained_lenet, x, y, eps=eps, steps=STEPS, step=2.5 * eps / STEPS,
                                                  norm=norm)
        assert 0.05 < reference < 0.95  # an informative point, where a broken attack would show
        assert table[eps] == pytest.approx(reference, abs=TOLERANCE), (attack, eps)


def test_restarts_break_examples_a_single_start_does_not(trained_lenet, xy200):
    """A weak random-start PGD, seeded: the first of 5 restarts is the single start, so 5 restarts break a
    superset of its examples, and strictly more of them."""
    x, y = xy200
    runs = {}
    for restarts in (1, 5):
        cfg = AttackConfig("pgd", steps=3, restarts=restarts)
        samples = evaluate_robustness(trained_lenet, x, y, attacks=[cfg], epsilons=[0.1], seed=3).samples
        runs[restarts] = set(samples.loc[samples["epsilon"].eq(0.1) & ~samples["correct"], "index"])
    assert runs[1] <= runs[5]
    assert len(runs[5] - runs[1]) >= 3, (len(runs[1]), len(runs[5]))


def test_cumulative_and_per_epsilon_curves(trained_lenet, small_xy):
    """On a model that masks its gradients beyond 0.12 of every test image, independent attacks fail at large
    epsilon. Cumulative: a sample broken at a smaller epsilon stays broken, and epsilon 0 is not attacked.
    Per-epsilon: every epsilon attacked afresh, epsilon 0 included, so the curve rises again."""
    x, y = small_xy
    model = Shield(trained_lenet, x, y, radius=0.12).eval()
    grid = [0.0, 0.1, 0.2]
    cfg = AttackConfig("pgd", steps=STEPS)
    cum = evaluate_robustness(model, x, y, attacks=[cfg], epsilons=grid)
    per = evaluate_robustness(model, x, y, attacks=[cfg], epsilons=grid, curve="per-epsilon")
    assert set(cum.table["curve"]) == {"cumulative"} and set(per.table["curve"]) == {"per-epsilon"}
    acc_cum, acc_per = (r.table.set_index("epsilon")["robust_accuracy"] for r in (cum, per))
    assert acc_cum[0.2] <= acc_cum[0.1] < 0.5 < acc_per[0.2]

    def broken(result):  # (samples, epsilons) bool
        s = result.samples[result.samples["attack"] == "pgd"]
        return ~s.pivot(index="index", columns="epsilon", values="correct").to_numpy(bool)

    b_cum = broken(cum)
    assert (b_cum[:, 1:] >= b_cum[:, :-1]).all()  # once broken, broken at every larger epsilon
    with torch.no_grad():
        clean_correct = int((trained_lenet(x).argmax(1) == y).sum())
    # per-epsilon attacks every clean-correct sample at epsilon 0 too: STEPS gradient passes each
    assert per.cost["backward_passes"].iloc[0] >= cum.cost["backward_passes"].iloc[0] + STEPS * clean_correct


class _Mover(Liar):
    """Claims every sample and moves it by 0.5, far outside any ball used here."""

    def __call__(self, fmodel, x, y, *, epsilons):
        adv = [(x + 0.5).clamp(0, 1) for _ in epsilons]
        return adv, adv, torch.ones(len(epsilons), len(x), dtype=torch.bool)


@pytest.mark.parametrize("stub", [Liar, _Mover])
def test_claimed_successes_are_verified(trained_lenet, xy200, monkeypatch, stub):
    """A success counts only if the image is inside the ball and misclassified; the claim is still recorded."""
    x, y = xy200
    name = register_stub(monkeypatch, stub)
    result = evaluate_robustness(trained_lenet, x, y, attacks=[name], epsilons=[0.0, 0.1], curve="per-epsilon")
    with torch.no_grad():
        clean = (trained_lenet(x).argmax(1) == y).float().mean().item()
    assert result.table["robust_accuracy"].tolist() == pytest.approx([clean, clean])
    assert result.samples["attack_success"].sum() == 2 * round(clean * len(y))


def test_worst_case_is_the_per_sample_minimum_over_attacks(monkeypatch):
    """Attack A breaks the even samples, B the odd ones: each alone leaves 0.5, together (per sample) 0, in
    either order; epsilon 0 stays clean (1.0). Checked against the hand count and a bare per-sample AND."""
    x, y = torch.full((8, 1, 2, 2), 0.2), torch.zeros(8, dtype=torch.long)
    model = FarFromHalf(r=0.38).eval()  # mean 0.2: class 0 (correct); mean 0.1 (moved by eps=0.1): class 1
    even = register_stub(monkeypatch, lambda: Pusher(lambda e: e, parity=0), "breaks-even")
    odd = register_stub(monkeypatch, lambda: Pusher(lambda e: e, parity=1), "breaks-odd")
    for order in ([even, odd], [odd, even]):
        result = evaluate_robustness(model, x, y, attacks=order, epsilons=[0.0, 0.1])
        acc = result.table.set_index(["attack", "epsilon"])["robust_accuracy"]
        assert acc[(even, 0.1)] == acc[(odd, 0.1)] == 0.5, order
        assert acc[("worst_case", 0.1)] == 0.0 and acc[("worst_case", 0.0)] == 1.0, order
        s = result.samples[result.samples["epsilon"] == 0.1].set_index(["attack", "index"])["correct"]
        bare = [bool(s[(even, i)] and s[(odd, i)]) for i in range(8)]
        assert bare == [False] * 8 and s["worst_case"].tolist() == bare, order
        worst = result.samples[(result.samples["attack"] == "worst_case") & (result.samples["epsilon"] == 0.1)]
        assert worst["perturbation_linf"].to_numpy() == pytest.approx([0.1] * 8)  # the breaking attack's


# (threat, eps, clean pixel values, r, per-pixel move, clamp, whether the claimed success must count)
_VERIFY_CASES = {
    "linf-in-range": ("linf", 0.1, (0.95, 0.05), 0.48, lambda e: 0.07, True, True),
    "linf-outside-[0,1]": ("linf", 0.1, (0.95, 0.05), 0.48, lambda e: 0.07, False, False),
    "linf-on-the-ball": ("linf", 0.1, (0.2, 0.2), 0.38, lambda e: e, True, True),
    "linf-1.2-eps": ("linf", 0.1, (0.2, 0.2), 0.38, lambda e: 1.2 * e, True, False),
    "l2-in-range": ("l2", 0.2, (0.95, 0.05), 0.48, lambda e: 0.07, True, True),
    "l2-outside-[0,1]": ("l2", 0.2, (0.95, 0.05), 0.48, lambda e: 0.07, False, False),
    "l2-on-the-ball": ("l2", 0.2, (0.2, 0.2), 0.38, lambda e: e / 2, True, True),  # 4 pixels: L2 = 2 x move
    "l2-1.2-eps": ("l2", 0.2, (0.2, 0.2), 0.38, lambda e: 1.2 * e / 2, True, False),
}


@pytest.mark.parametrize("case", list(_VERIFY_CASES))
def test_successes_outside_the_ball_or_the_pixel_range_are_rejected(monkeypatch, case):
    """Every move below misclassifies (hand-computed on FarFromHalf); it counts only inside [0,1] and inside the
    ball. Images 0.02 outside [0,1] or at 1.2 eps are rejected (not broken), the claim still recorded."""
    threat, eps, values, r, move, clamp, counts = _VERIFY_CASES[case]
    x = torch.tensor(values * 4).view(8, 1, 1, 1).expand(8, 1, 2, 2).contiguous()
    y = torch.zeros(8, dtype=torch.long)
    model = FarFromHalf(r).eval()
    adv = x + torch.where(x < 0.5, -1.0, 1.0) * move(eps)
    adv = adv.clamp(0, 1) if clamp else adv
    assert (model(x).argmax(1) == 0).all() and (model(adv).argmax(1) == 1).all()  # the move does misclassify
    name = register_stub(monkeypatch, lambda: Pusher(move, clamp), "pusher", ThreatModel(threat))
    result = evaluate_robustness(model, x, y, attacks=[name], epsilons=[0.0, eps])
    acc = result.table.set_index("epsilon")["robust_accuracy"]
    assert acc[eps] == (0.0 if counts else 1.0), case
    claimed = result.samples.loc[result.samples["epsilon"] == eps, "attack_success"]
    assert claimed.all()


def test_l2_budgets_reach_the_image_diameter(trained_lenet, small_xy):
    x, y = small_xy
    diameter = math.sqrt(28 * 28)
    assert check_budget([0, 2.0, diameter], [AttackConfig("l2-pgd")], (1, 28, 28)) == [0, 2.0, diameter]
    with pytest.raises(UsageError, match=r"outside \[0, 28\] for the L2 attack l2-pgd: 28 is the L2 diameter of a "
                                         r"1x28x28 image"):
        evaluate_robustness(trained_lenet, x, y, attacks=[AttackConfig("l2-pgd", steps=2)], epsilons=[0, 28.5])
    with pytest.raises(UsageError, match=r"epsilon 1.5 is outside \[0, 1\] for the L-inf attack pgd"):
        evaluate_robustness(trained_lenet, x, y, attacks=["pgd"], epsilons=[0, 1.5])
    EvaluationConfig(attacks=[AttackConfig("l2-pgd")], epsilons=[0, 1.5, 2.0], gallery_attack="l2-pgd")  # no data yet
    result = evaluate_robustness(trained_lenet, x, y, attacks=[AttackConfig("l2-pgd", steps=5)], epsilons=[1.0, diameter])
    assert result.table.set_index("epsilon").loc[diameter, "robust_accuracy"] == 0.0


@pytest.mark.parametrize("eps", [[-0.1], [math.nan], [math.inf], [], ["0.1"]])
def test_bad_epsilons(trained_lenet, small_xy, eps):
    x, y = small_xy
    with pytest.raises(UsageError, match="epsilon"):
        evaluate_robustness(trained_lenet, x, y, attacks=["fgsm"], epsilons=eps)
    with pytest.raises(UsageError, match="epsilon"):
        EvaluationConfig(epsilons=eps)


@pytest.mark.parametrize("kwargs, message", [
    ({"attacks": []}, "evaluation.attacks is empty"),
    ({"attacks": [AttackConfig("pgd"), AttackConfig("pgd")]}, "names an attack twice"),
    ({"n_examples": 0}, "n_examples must be at least 1"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"lint_examples": 0}, "lint_examples must be at least 1"),
    ({"gallery": -1}, "gallery must be at least 0"),
    ({"curve": "cumulativ"}, "unknown curve 'cumulativ' .*choose from: cumulative, per-epsilon"),
    ({"epsilons": [0, 1.5]}, r"outside \[0, 1\] for the L-inf attack fgsm"),
    ({"gallery_attack": "deepfool"}, "gallery_attack 'deepfool' is not among the attacks"),
])
def test_evaluation_config_rejects_bad_values(kwargs, message):
    with pytest.raises(UsageError, match=message) as err:
        EvaluationConfig(**kwargs)
    assert "\n" not in str(err.value)
    EvaluationConfig(gallery=0, gallery_attack="deepfool")  # no gallery, no gallery attack needed


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "pgd", "step_size": 0.0}, "step_size must be a positive number"),
    ({"name": "pgd", "step_size": -0.1}, "step_size must be a positive number"),
    ({"name": "pgd", "steps": 0}, "steps and restarts must be at least 1"),
    ({"name": "pgd", "options": {"rel_stepsiz": 0.1}},
     "attack pgd has no option 'rel_stepsiz'; valid settings: steps, step_size, random_start, restarts, abs_stepsize"),
    ({"name": "fgsm", "steps": 3}, "fgsm has no 'steps' setting; valid settings: restarts"),
    ({"name": "fgsm", "restarts": 3}, "fgsm has no random start, so restarts=3"),
    ({"name": "pdg"}, "did you mean 'pgd'"),
])
def test_attack_config_rejects_bad_settings(kwargs, message):
    with pytest.raises(UsageError, match=message) as err:
        AttackConfig(**kwargs)
    assert "\n" not in str(err.value)
    assert AttackConfig("cw-l2", options={"confidence": 1.0}).settings()["confidence"] == 1.0


def test_evaluate_model_needs_an_attack_and_examples(trained_lenet, digits28):
    with pytest.raises(UsageError, match="at least one attack"):
        evaluate_model(trained_lenet, digits28, attacks=[], lint=False)
    with pytest.raises(UsageError, match="lint_examples must be at least 1"):
        evaluate_model(trained_lenet, digits28, attacks=["fgsm"], lint_examples=0)
    ev = evaluate_model(trained_lenet, digits28, attacks=["fgsm"], epsilons=[0, 0.1], n_examples=50, lint=False,
                        curve="per-epsilon", clean_splits=("test",))
    assert set(ev.robust["curve"]) == {"per-epsilon"} and list(ev.clean["split"]) == ["test"]
