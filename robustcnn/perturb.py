"""Bare-torch L-inf perturbations for adversarial *training* (the hot loop, where foolbox's wrapping would
cost time on every batch). Evaluation goes through foolbox (attacks.py); tests check the two agree.

Both take x in [0,1] and return a new tensor (x is never modified in place) with ||x_adv - x||_inf <= eps
and x_adv in [0,1].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)  # sum-free mean: the sign of the gradient is all PGD uses
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilon: float, steps: int, step_size: float,
             random_start: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Madry et al. 2018: x_{t+1} = clip_{x,eps}(x_t + a * sign(grad)), from a uniform random start."""
    if epsilon == 0:
        return x.clone()
    x_adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device) * 2 - 1
        x_adv = (x_adv + epsilon * noise).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv + step_size * _input_gradient(model, x_adv, y).sign()
        x_adv = torch.min(torch.max(x_adv, x - epsilon), x + epsilon).clamp(0, 1)
    return x_adv.detach()


def fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilon: float, step_size: float | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Wong, Rice & Kolter 2020 ("Fast is better than free"): FGSM from a random start, step 1.25 * eps."""
    return pgd_linf(model, x, y, epsilon=epsilon, steps=1, step_size=step_size or 1.25 * epsilon,
                    random_start=True, generator=generator)
