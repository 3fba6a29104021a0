"""Deliberately broken models and attacks, each the failure one lint check exists to catch (Carlini et al. 2019;
AutoAttack's habit of testing the tester)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


class FarFromHalf(nn.Module):
    """Two classes on tiny images: class 1 where the pixel mean lies farther than `r` from 0.5, else class 0.
    Exact by construction, so a test can compute every outcome by hand."""

    def __init__(self, r: float) -> None:
        super().__init__()
        self.r = r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 10 * ((x.mean((1, 2, 3)) - 0.5).abs() - self.r)
        return torch.stack([torch.zeros_like(score), score], 1)


class Pusher:
    """An attack that claims every sample: moves each pixel by move(eps) away from 0.5 (clamped to [0,1] if
    `clamp`), only the samples whose index in the batch has the parity `parity` (None: all), and only from its
    `from_call`-th call at an epsilon on (an attack that needs that many random restarts)."""

    def __init__(self, move: Callable[[float], float], clamp: bool = True, parity: int | None = None,
                 from_call: int = 1, **settings: Any) -> None:
        self.move, self.clamp, self.parity, self.from_call = move, clamp, parity, from_call
        self.calls: dict[float, int] = {}

    def __call__(self, fmodel, x: torch.Tensor, y: torch.Tensor, *, epsilons: list[float]):
        away = torch.where(x.mean((1, 2, 3), keepdim=True) < 0.5, -1.0, 1.0)
        chosen = torch.ones(len(x), 1, 1, 1)
        if self.parity is not None:
            chosen = (torch.arange(len(x)) % 2 == self.parity).float().view(-1, 1, 1, 1)
        adv = []
        for e in epsilons:
            self.calls[e] = self.calls.get(e, 0) + 1
            adv.append(x + away * chosen * self.move(e) * (self.calls[e] >= self.from_call))
        adv = [a.clamp(0, 1) for a in adv] if self.clamp else adv
        return adv, adv, torch.ones(len(epsilons), len(x), dtype=torch.bool)


class Liar:
    """An attack (the registry's protocol) that claims every sample without moving it."""

    def __call__(self, fmodel, x: torch.Tensor, y: torch.Tensor, *, epsilons: list[float]):
        adv = [x.clone() for _ in epsilons]
        return adv, adv, torch.ones(len(epsilons), len(x), dtype=torch.bool)


def register_stub(monkeypatch: pytest.MonkeyPatch, factory: Callable[[], Any] = Liar, name: str = "liar",
                  norm: ThreatModel = ThreatModel.LINF, defaults: dict[str, Any] | None = None) -> str:
    """Register an attack stub (an L-inf attack unless `norm` says otherwise) for one test (monkeypatch removes it
    afterwards). defaults: its settings (steps, step_size, random_start), passed to the factory."""
    monkeypatch.setitem(ATTACKS._entries, name, Entry(name, factory, "test stub", {
        "norm": norm, "minimal": False, "defaults": dict(defaults or {}), "options": ()}))
    return name
