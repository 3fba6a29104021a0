"""Per-example robustness radius: the smallest adversarial perturbation found for each example, by the Fast
Minimum Norm attack (FMN, Pintor et al. 2021; foolbox's LInfFMNAttack / L2FMNAttack), and the robust-accuracy
curve it implies at every epsilon at once.

    radii = robustness_radii(model, x, y, norm="linf")     # (N,): 0 misclassified clean, inf none found
    curve_from_radii(radii, [0, 0.1, 0.2, 0.3])            # robust accuracy: the fraction with radius > eps
    radius_summary(radii)                                  # median and quantiles

An example whose smallest adversarial perturbation has norm r is broken at every epsilon >= r, so one attack
gives the whole curve. Each radius is the norm of a verified adversarial example (the model misclassifies it,
it is in [0,1]), so the curve is an upper bound on true robust accuracy, like any attack's; FMN finds a
minimal perturbation only approximately, so the curve can sit above a fixed-epsilon attack's by noise. By default
FMN also runs from a PGD warm start (see minimal_adversarials), which it needs on saturating models; neither run
sees the fixed-epsilon evaluation, so comparing the two curves (the lint's check) stays a fair test.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from robustcnn.attacks import ThreatModel
from robustcnn.errors import UsageError, check_choice


def _threat(norm: str | ThreatModel) -> ThreatModel:
    return ThreatModel(check_choice("threat model", str(getattr(norm, "value", norm)), [t.value for t in ThreatModel]))


def _norms(delta: torch.Tensor, norm: ThreatModel) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == ThreatModel.LINF else flat.norm(dim=1)


def minimal_adversarials(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str | ThreatModel = "linf",
                         steps: int = 100, warm_start: bool = True, batch_size: int = 500,
                         seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """FMN on every example -> (radii (N,), adversarials (N, C, H, W)).

    radii[i]: the norm of adversarials[i] - x[i] where it is misclassified; 0 (and x[i]) where x[i] is
    misclassified clean; inf (and x[i]) where no adversarial example was found.
    warm_start: besides FMN from the clean image (Pintor et al.'s default), run FMN again from a PGD-40
    adversarial at the batch's 90th-percentile FMN radius (FMN's warm-start mode: a binary search to the boundary,
    then minimization) and keep the smaller verified radius. From the clean image alone FMN can stall on
    saturating models (on lenet5/digits it leaves 10 % more examples standing at eps 0.1 than PGD-40 does)."""
    import foolbox as fb

    threat = _threat(norm)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UsageError(f"FMN steps must be a positive integer, got {steps!r}")
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
    devices = [x.device] if x.device.type == "cuda" else []
    radii, advs = [], []
    with torch.random.fork_rng(devices=devices):  # PGD's random start draws from torch's generator
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            r, adv = _fmn_batch(model, fmodel, xb, yb, threat, steps, warm_start)
            radii.append(r)
            advs.append(adv)
    return torch.cat(radii), torch.cat(advs)


def _fmn_batch(model: nn.Module, fmodel: Any, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, steps: int,
               warm_start: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import foolbox as fb

    fmn = (fb.attacks.LInfFMNAttack if threat == ThreatModel.LINF else fb.attacks.L2FMNAttack)(steps=steps)
    radii, adv = _verified(model, x, y, fmn(fmodel, x, y, epsilons=None)[0], threat)
    found = torch.isfinite(radii) & (radii > 0)
    if warm_start and found.any():
        eps = float(radii[found].quantile(0.9))
        pgd = (fb.attacks.LinfPGD if threat == ThreatModel.LINF else fb.attacks.L2PGD)(steps=40, rel_stepsize=2.5 / 40)
        _, start, ok = pgd(fmodel, x, y, epsilons=eps)
        ok &= radii > 0  # an example misclassified clean keeps radius 0
        if ok.any():
            warm = x.clone()
            warm[ok] = fmn.run(fmodel, x[ok], y[ok], starting_points=start[ok])
            r_warm, adv_warm = _verified(model, x, y, warm, threat)
            better = r_warm < radii
            radii, adv = torch.where(better, r_warm, radii), torch.where(_rows(better, x), adv_warm, adv)
    return radii, adv


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *[1] * (like.ndim - 1))


def _verified(model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor,
              threat: ThreatModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Radii of the candidates that are adversarial (in [0,1], misclassified): 0 where x is misclassified,
    inf (and x) where the candidate is not adversarial."""
    adv = adv.detach().clamp(0, 1)
    with torch.no_grad():
        clean_wrong = model(x).argmax(1) != y
        fooled = (model(adv).argmax(1) != y) & ~clean_wrong
    radii = torch.where(fooled, _norms(adv - x, threat), torch.full_like(y, math.inf, dtype=x.dtype))
    radii = torch.where(clean_wrong, torch.zeros_like(radii), radii)
    return radii, torch.where(_rows(fooled, x), adv, x)


def robustness_radii(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str | ThreatModel = "linf",
                     steps: int = 100, warm_start: bool = True, batch_size: int = 500, seed: int = 0) -> torch.Tensor:
    """(N,) smallest adversarial perturbation norm found per example (see minimal_adversarials)."""
    return minimal_adversarials(model, x, y, norm=norm, steps=steps, warm_start=warm_start, batch_size=batch_size,
                                seed=seed)[0]


def curve_from_radii(radii: torch.Tensor, epsilons: Sequence[float]) -> list[float]:
    """Robust accuracy at each epsilon (in the given order): the fraction of examples whose radius exceeds it.
    An example with radius r is broken at eps >= r, so the curve is non-increasing in epsilon."""
    if len(radii) == 0:
        raise UsageError("no radii: give at least one example")
    return [float((radii > float(eps)).double().mean()) for eps in epsilons]


def radius_summary(radii: torch.Tensor, quantiles: Sequence[float] = (0.1, 0.25, 0.5, 0.75, 0.9)) -> dict[str, float]:
    """Median and quantiles of the radius over all examples (misclassified clean count as 0, unbroken as inf:
    the median is where the implied robust accuracy falls to one half), the median over the examples
    classified correctly, and the counts."""
    if len(radii) == 0:
        raise UsageError("no radii: give at least one example")
    r = radii.double().cpu()
    correct = r[r > 0]
    out = {f"q{round(q * 100):02d}": _quantile(r, q) for q in quantiles}
    out.update(median=_quantile(r, 0.5), median_correct=_quantile(correct, 0.5) if len(correct) else math.nan,
               n=float(len(r)), n_misclassified=float((r == 0).sum()), n_not_broken=float(torch.isinf(r).sum()))
    return out


def _quantile(r: torch.Tensor, q: float) -> float:
    """The lower empirical quantile (an order statistic, so it can be inf, which torch.quantile rejects)."""
    ordered = r.sort().values
    return float(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))])
