"""Per-example robustness radii (FMN): verified adversarials at each radius, a monotone curve that starts at clean
accuracy, agreement with fixed-epsilon PGD, the summary, bad input."""
from __future__ import annotations

import math

import pytest
import torch

from robustcnn.errors import UsageError
from robustcnn.evaluation import evaluate_robustness
from robustcnn.radius import curve_from_radii, minimal_adversarials, radius_summary, robustness_radii

GRID = {"linf": [0.0, 0.03, 0.06, 0.1, 0.2], "l2": [0.0, 0.5, 1.0, 2.0, 3.0]}


@pytest.fixture(scope="module", params=["linf", "l2"])
def radii_run(request, trained_lenet, digits28):
    x, y = digits28.x_test[:40], digits28.y_test[:40]
    radii, adv = minimal_adversarials(trained_lenet, x, y, norm=request.param, steps=50, batch_size=16)
    return request.param, x, y, radii, adv


def test_each_radius_is_a_verified_adversarial_at_that_norm(radii_run, trained_lenet):
    norm, x, y, radii, adv = radii_run
    with torch.no_grad():
        clean_pred, adv_pred = trained_lenet(x).argmax(1), trained_lenet(adv).argmax(1)
    assert torch.equal(radii == 0, clean_pred != y)  # 0 exactly for the examples misclassified clean
    found = torch.isfinite(radii) & (radii > 0)
    assert found.sum() >= 0.9 * (clean_pred == y).sum()  # FMN breaks nearly every example of an undefended model
    assert (adv_pred[found] != y[found]).all() and adv.min() >= 0 and adv.max() <= 1
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert torch.allclose(size[found], radii[found], atol=1e-6)


def test_the_radius_curve_is_monotone_and_starts_at_clean_accuracy(radii_run, trained_lenet):
    norm, x, y, radii, _ = radii_run
    curve = curve_from_radii(radii, GRID[norm])
    with torch.no_grad():
        assert curve[0] == pytest.approx((trained_lenet(x).argmax(1) == y).float().mean().item())
    assert all(a >= b for a, b in zip(curve, curve[1:])) and curve[-1] < curve[0]


def test_the_radius_curve_agrees_with_fixed_epsilon_pgd(radii_run, trained_lenet):
    """FMN's curve is never above PGD-40's per-epsilon curve by more than noise (2 examples, the lint's
    threshold at this n), and it is not trivially low: at the smallest epsilon it is not below PGD's by more."""
    norm, x, y, radii, _ = radii_run
    pgd = evaluate_robustness(trained_lenet, x, y, attacks=["pgd" if norm == "linf" else "l2-pgd"],
                              epsilons=GRID[norm][1:], curve="per-epsilon")
    pgd_standing = [round(a * len(y)) for a in pgd.table["robust_accuracy"]]
    fmn_standing = [round(a * len(y)) for a in curve_from_radii(radii, GRID[norm][1:])]
    assert all(f <= p + 2 for f, p in zip(fmn_standing, pgd_standing)), (fmn_standing, pgd_standing)
    assert fmn_standing[0] >= pgd_standing[0] - 2


def test_summary_quantiles_count_misclassified_as_zero_and_unbroken_as_infinite():
    radii = torch.tensor([0.0, 0.3, 0.1, math.inf, 0.2])
    s = radius_summary(radii)
    assert s["median"] == pytest.approx(0.2) and s["q10"] == 0.0 and s["q90"] == math.inf
    assert s["median_correct"] == pytest.approx(0.2)  # lower median of 0.1, 0.2, 0.3, inf
    assert (s["n"], s["n_misclassified"], s["n_not_broken"]) == (5, 1, 1)
    assert curve_from_radii(radii, [0, 0.1, 0.25, 1]) == [0.8, 0.6, 0.4, 0.2]  # an example with radius r falls at r


def test_bad_input(trained_lenet, small_xy):
    x, y = small_xy
    with pytest.raises(UsageError, match="steps must be a positive integer"):
        robustness_radii(trained_lenet, x, y, steps=0)
    with pytest.raises(UsageError, match="unknown threat model 'l1'"):
        robustness_radii(trained_lenet, x, y, norm="l1")
    with pytest.raises(UsageError, match="no radii"):
        curve_from_radii(torch.tensor([]), [0.1])
