"""An independent PGD in bare torch (Madry et al. 2018), the tests' reference for robustcnn's attacks.

Written here from the paper, sharing no code with robustcnn.perturb or foolbox: a uniform random start in the
ball, `steps` steps of size `step` along the signed (L-inf) or normalized (L2) gradient of the cross-entropy,
each followed by projection onto the ball and the [0,1] box. A sample counts as robust if it is classified
correctly at the end; misclassified clean samples count as broken.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        size = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        delta = delta * (eps / size).clamp(max=1.0)
    return (x + delta).clamp(0, 1)


def _random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    if norm == "linf":
        noise = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    else:  # uniform in the L2 ball: a Gaussian direction and a radius eps * U^(1/d)
        direction = torch.randn(x.shape, generator=gen).flatten(1)
        direction = direction / direction.norm(dim=1, keepdim=True)
        radius = eps * torch.rand(len(x), 1, generator=gen) ** (1 / direction.shape[1])
        noise = (direction * radius).view_as(x)
    return (x + noise.to(x.device)).clamp(0, 1)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, step: float, norm: str,
        seed: int = 0) -> torch.Tensor:
    """Adversarial examples for (x, y): ||x_adv - x|| <= eps in `norm` ('linf' or 'l2'), x_adv in [0,1]."""
    gen = torch.Generator().manual_seed(seed)
    x_adv = _random_start(x, eps, norm, gen)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
        if norm == "linf":
            direction = grad.sign()
        else:
            direction = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        x_adv = _project(x_adv.detach() + step * direction, x, eps, norm)
    return x_adv.detach()


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw) -> float:
    """Fraction of samples classified correctly both clean and after pgd(**kw)."""
    x_adv = pgd(model, x, y, **kw)
    with torch.no_grad():
        clean, adv = model(x).argmax(1) == y, model(x_adv).argmax(1) == y
    return (clean & adv).float().mean().item()
