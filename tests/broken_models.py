"""Deliberately broken models and attacks, each the failure one lint check exists to catch (Carlini et al. 2019;
AutoAttack's habit of testing the tester)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustcnn.attacks import ATTACKS, ThreatModel
from robustcnn.registry import Entry


class Softmaxed(nn.Module):
    """Returns probabilities instead of logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), 1)


class Quantized(nn.Module):
    """Rounds its input to 8 levels: a non-differentiable step, so input gradients are exactly zero."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 7) / 7)


class WithDropout(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.drop = model, nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.drop(x))


class Randomized(nn.Module):
    """Adds Gaussian noise to its input at test time (in eval mode): a random defence."""

    def __init__(self, model: nn.Module, sigma: float = 0.3) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x + self.sigma * torch.randn_like(x))


class Shield(nn.Module):
    """Memorizes (x, y). An input farther than `radius` (L-inf) from every memorized image, or within `near` of a
    protected one, gets the memorized label of its nearest image as a constant output: correct, with a zero
    input gradient. Elsewhere it is `model`.

    radius: masks gradients at large perturbations, so independent attacks get WEAKER as epsilon grows.
    protected: indices whose neighbourhood (L-inf < near) is masked, so those examples resist any attack.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, radius: float = float("inf"),
                 protected: list[int] = (), near: float = 0.05) -> None:
        super().__init__()
        self.model, self.radius, self.near = model, radius, near
        self.register_buffer("memory", x.flatten(1).clone())
        self.register_buffer("labels", y.clone())
        mask = torch.zeros(len(y), dtype=torch.bool)
        mask[list(protected)] = True
        self.register_buffer("protected", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        with torch.no_grad():
            flat = x.flatten(1)
            masked = torch.zeros(len(x), dtype=torch.bool, device=x.device)
            label = torch.zeros(len(x), dtype=torch.long, device=x.device)
            if self.radius < float("inf"):
                dist, nearest = torch.cdist(flat, self.memory, p=float("inf")).min(1)
                masked, label = dist > self.radius, self.labels[nearest]
            if self.protected.any():
                memory, labels = self.memory[self.protected], self.labels[self.protected]
                dist, nearest = (flat[:, None] - memory[None]).abs().amax(-1).min(1)
                near = dist < self.near
                masked, label = masked | near, torch.where(near, labels[nearest], label)
            constant = 20.0 * F.one_hot(label, out.shape[1]).float()
        return torch.where(masked[:, None], constant, out)


class Liar:
    """An attack (the registry's protocol) that claims every sample without moving it."""

    def __call__(self, fmodel, x: torch.Tensor, y: torch.Tensor, *, epsilons: list[float]):
        adv = [x.clone() for _ in epsilons]
        return adv, adv, torch.ones(len(epsilons), len(x), dtype=torch.bool)


def register_stub(monkeypatch: pytest.MonkeyPatch, factory: type = Liar, name: str = "liar") -> str:
    """Register an attack stub as an L-inf attack for one test (monkeypatch removes it afterwards)."""
    monkeypatch.setitem(ATTACKS._entries, name, Entry(name, factory, "test stub", {
        "norm": ThreatModel.LINF, "minimal": False, "defaults": {}, "options": ()}))
    return name
