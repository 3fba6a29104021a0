"""The attack registry: attacks by name with keyword settings, and the protocol every attack follows.

    attack = AttackConfig("pgd", steps=100, restarts=5).build()
    raw, clipped, success = attack(fmodel, x, y, epsilons=[0.1, 0.3])

Epsilon is a fraction of the [0,1] pixel range, in the attack's norm (L-inf or L2). Attacks see [0,1]
images; the model normalizes inside. Robust accuracy over an epsilon grid lives in robustcnn.evaluation.

The attack protocol (what a registered factory returns; foolbox's attacks follow it, and so must any adapter,
such as one for AutoAttack):

    raw, clipped, success = attack(fmodel, x, y, epsilons=[eps_1, ..., eps_E])

- fmodel is `foolbox.PyTorchModel(CountingModel(model), bounds=(0, 1), device=x.device)`: `fmodel(x)` on a
  torch tensor returns the model's logits as a torch tensor, differentiable when x.requires_grad, and every
  pass through it is counted as cost. Call the model only through fmodel.
- x: (N, C, H, W) in [0, 1] on the model's device (never modified in place); y: (N,) int64 labels.
- clipped: a list of E tensors shaped like x, each inside the epsilon ball (in the attack's norm) and [0, 1].
- success: a bool tensor (E, N), True where clipped[k][i] is misclassified by the model.
- raw: anything (unused).
- Randomness comes from torch's global generator, which the evaluation seeds before each attack; a
  random-start attack is called again on the survivors for each restart.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustcnn.errors import UsageError
from robustcnn.registry import Registry


class ThreatModel(str, Enum):
    LINF = "linf"
    L2 = "l2"


_NAMED = ("steps", "step_size", "random_start")  # settings with their own field; the rest go in `options`


@dataclass(frozen=True)
class AttackConfig:
    """An attack by registry name plus keyword settings (see `robustcnn attacks` for each one's defaults).

    restarts: run a random-start attack this many times; a sample falls if any run breaks it.
    options: the attack's other constructor arguments (each registered attack lists the ones it takes).
    """

    name: str
    steps: int | None = None
    step_size: float | None = None  # relative to epsilon (foolbox's rel_stepsize); None: 2.5 / steps
    random_start: bool | None = None
    restarts: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        entry = ATTACKS.get(self.name)
        defaults, extra = entry.meta["defaults"], entry.meta["options"]
        valid = ", ".join([*defaults, "restarts", *extra])
        for key in _NAMED:
            if getattr(self, key) is not None and key not in defaults:
                raise UsageError(f"attack {self.name} has no '{key}' setting; valid settings: {valid}")
        unknown = sorted(set(self.options) - set(extra))
        if unknown:
            raise UsageError(f"attack {self.name} has no option '{unknown[0]}'; valid settings: {valid}")
        if self.restarts < 1 or (self.steps is not None and self.steps < 1):
            raise UsageError(f"attack {self.name}: steps and restarts must be at least 1")
        if self.step_size is not None and not (math.isfinite(self.step_size) and self.step_size > 0):
            raise UsageError(f"attack {self.name}: step_size must be a positive number, got {self.step_size}")
        for key, value in self.options.items():
            _check_option(self.name, key, value)
        if self.restarts > 1 and not self.randomized:
            raise UsageError(f"attack {self.name} has no random start, so restarts={self.restarts} would repeat "
                             "the same attack; use restarts=1 (or random_start=true)")

    @property
    def threat_model(self) -> ThreatModel:
        return ATTACKS.get(self.name).meta["norm"]

    def settings(self) -> dict[str, Any]:
        """The resolved keyword settings, defaults filled in."""
        resolved = dict(ATTACKS.get(self.name).meta["defaults"])
        for key in _NAMED:
            if getattr(self, key) is not None:
                resolved[key] = getattr(self, key)
        if "step_size" in resolved and resolved["step_size"] is None:
            resolved["step_size"] = 2.5 / resolved["steps"]  # Madry et al.: 2.5 * eps / steps
        return {**resolved, **self.options}

    def build(self) -> Any:
        """The attack object, called as the module docstring's protocol says."""
        return ATTACKS.get(self.name).factory(**self.settings())

    @property
    def randomized(self) -> bool:
        return bool(self.settings().get("random_start", False))

    @property
    def minimal(self) -> bool:
        return bool(ATTACKS.get(self.name).meta["minimal"])

    @property
    def iterative(self) -> bool:
        """A fixed-budget attack with a number of steps (PGD-like), whose convergence the lint can test."""
        return not self.minimal and "steps" in self.settings()


ATTACKS: Registry[Any] = Registry("attack")


def register_attack(name: str, *, norm: ThreatModel, description: str, minimal: bool = False,
                    options: Sequence[str] = (), **defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register an attack factory (exported as `robustcnn.register_attack`). The factory returns an object
    called as the module docstring's protocol says (any foolbox attack qualifies); afterwards the name works
    everywhere an attack name does: AttackConfig, evaluate_model, rc.attack, `robustcnn benchmark --attacks`.

        @rc.register_attack("my-pgd", norm=rc.ThreatModel.LINF, description="PGD, 20 steps", steps=20,
                            step_size=None, random_start=True)
        def my_pgd(*, steps, step_size, random_start):
            return foolbox.attacks.LinfPGD(steps=steps, rel_stepsize=step_size, random_start=random_start)

    norm: the threat model its epsilons are measured in. minimal: a minimal-norm attack (run once, clipped to
    each epsilon) rather than a fixed-budget one. `defaults` are the settings with their own AttackConfig field
    (steps, step_size, random_start); `options` names the other keyword arguments the factory accepts. A name
    registered twice is an error."""
    return ATTACKS.register(name, description=description, norm=norm, minimal=minimal, defaults=defaults,
                            options=tuple(options))


@register_attack("fgsm", norm=ThreatModel.LINF, description="FGSM, one signed-gradient step (Goodfellow et al. 2014)")
def _fgsm(**kw: Any) -> Any:
    import foolbox as fb
    return fb.attacks.LinfFastGradientAttack(random_start=False, **kw)


@register_attack("pgd", norm=ThreatModel.LINF, description="L-inf PGD with random start (Madry et al. 2018)",
                 options=("abs_stepsize",), steps=40, step_size=None, random_start=True)
def _pgd(*, steps: int, step_size: float, random_start: bool, abs_stepsize: float | None = None) -> Any:
    return LinfPGD(steps=steps, rel_stepsize=step_size, random_start=random_start, abs_stepsize=abs_stepsize)


class LinfPGD:
    """L-inf PGD in plain torch that computes, operation for operation and random draw for random draw, what
    foolbox's LinfPGD computes (so both give the same adversarial examples; tests/test_attacks.py checks that
    against foolbox itself). Why not call foolbox: its eagerpy wrapping and `loss.backward()` (which also fills
    the weights' .grad) cost about half a step again when a small model is launch-bound, as lenet5 is on a GPU;
    here the gradient is taken for the input alone."""

    torch_model = True  # takes any callable (N, C, H, W) -> (N, classes), not only foolbox's model wrapper

    def __init__(self, *, steps: int, rel_stepsize: float, random_start: bool, abs_stepsize: float | None = None) -> None:
        self.steps, self.rel_stepsize, self.random_start, self.abs_stepsize = steps, rel_stepsize, random_start, abs_stepsize

    def __call__(self, fmodel: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
                 epsilons: Sequence[float]) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        clipped, success = [], []
        for eps in epsilons:
            # foolbox clips the perturbation once more after the attack, then asks the model
            adv = x + (self._run(fmodel, x, y, float(eps)) - x).clamp(-eps, eps)
            with torch.no_grad():
                success.append(fmodel(adv).argmax(-1) != y)  # (N,)
            clipped.append(adv)
        return clipped, clipped, torch.stack(success)  # success: (E, N)

    def _run(self, fmodel: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, y: torch.Tensor,
             eps: float) -> torch.Tensor:
        step = self.rel_stepsize * eps if self.abs_stepsize is None else self.abs_stepsize
        x = x0
        if self.random_start:  # uniform in [-eps, eps], drawn as eagerpy's uniform draws it
            x = (x0 + (torch.rand(x0.shape, dtype=x0.dtype, device=x0.device) * (2 * eps) - eps)).clamp(0, 1)
        with torch.enable_grad():
            for _ in range(self.steps):
                x = x.detach().requires_grad_(True)
                loss = F.cross_entropy(fmodel(x), y, reduction="none").sum()  # summed, as foolbox sums
                (grad,) = torch.autograd.grad(loss, x)
                x = x.detach() + step * grad.sign()
                x = (x0 + (x - x0).clamp(-eps, eps)).clamp(0, 1)
        return x


@register_attack("l2-pgd", norm=ThreatModel.L2, description="L2 PGD with random start (Madry et al. 2018)",
                 options=("abs_stepsize",), steps=40, step_size=None, random_start=True)
def _l2_pgd(*, steps: int, step_size: float, random_start: bool, **kw: Any) -> Any:
    import foolbox as fb
    return fb.attacks.L2PGD(steps=steps, rel_stepsize=step_size, random_start=random_start, **kw)


@register_attack("l2-fgm", norm=ThreatModel.L2, description="fast gradient method, one L2-normalized step")
def _l2_fgm(**kw: Any) -> Any:
    import foolbox as fb
    return fb.attacks.L2FastGradientAttack(random_start=False, **kw)


@register_attack("deepfool", norm=ThreatModel.LINF, minimal=True, options=("candidates", "overshoot", "loss"), steps=50,
                 description="L-inf DeepFool, minimal perturbation (Moosavi-Dezfooli et al. 2016)")
def _deepfool(*, steps: int, **kw: Any) -> Any:
    import foolbox as fb
    return fb.attacks.LinfDeepFoolAttack(steps=steps, **kw)


@register_attack("cw-l2", norm=ThreatModel.L2, minimal=True, steps=100,
                 options=("binary_search_steps", "stepsize", "confidence", "initial_const", "abort_early"),
                 description="Carlini & Wagner 2017 L2, minimal perturbation (5 binary-search steps)")
def _cw_l2(*, steps: int, **kw: Any) -> Any:
    import foolbox as fb
    return fb.attacks.L2CarliniWagnerAttack(steps=steps, **{"binary_search_steps": 5, **kw})


def list_attacks(pattern: str = "*") -> list[str]:
    return ATTACKS.names(pattern)


def describe_attacks() -> list[dict[str, Any]]:
    rows = []
    for name in list_attacks():
        entry = ATTACKS.get(name)
        defaults = AttackConfig(name).settings()
        rows.append({"name": name, "threat_model": entry.meta["norm"].value, "description": entry.description,
                     "defaults": ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in defaults.items()) or "-"})
    return rows


def as_attack_config(attack: str | AttackConfig) -> AttackConfig:
    return attack if isinstance(attack, AttackConfig) else AttackConfig(attack)


# numeric attack options and the least value each may take (None: no bound); a negative step size walks away
# from the loss and a zero step count does nothing, so the attack would report robustness it never tested
_POSITIVE_OPTIONS = {"abs_stepsize", "stepsize", "binary_search_steps", "candidates", "initial_const"}
_NON_NEGATIVE_OPTIONS = {"overshoot", "confidence"}


def _check_option(attack: str, key: str, value: Any) -> None:
    if value is None or key not in _POSITIVE_OPTIONS | _NON_NEGATIVE_OPTIONS:
        return
    number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if key in _POSITIVE_OPTIONS and not (number and value > 0):
        raise UsageError(f"attack {attack}: option {key} must be a finite number > 0, got {value!r}")
    if key in _NON_NEGATIVE_OPTIONS and not (number and value >= 0):
        raise UsageError(f"attack {attack}: option {key} must be a finite number >= 0, got {value!r}")


def check_epsilons(epsilons: Sequence[float]) -> list[float]:
    """Sorted unique epsilons; the universal part of the check (finite, >= 0), valid for every threat model.
    The upper bound depends on the threat model and the image size: see check_budget."""
    if len(epsilons) == 0:
        raise UsageError("give at least one epsilon")
    for eps in epsilons:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps >= 0):
            raise UsageError(f"epsilon {eps!r} must be a finite number >= 0; epsilons are fractions of the [0,1] "
                             "pixel range (8/255 is 0.0314)")
    return sorted({float(e) for e in epsilons})


def max_epsilon(threat: ThreatModel, input_shape: Sequence[int] | None = None) -> float | None:
    """The largest meaningful budget: 1 for L-inf (the whole pixel range); for L2 the L2 diameter of the
    [0,1] image cube, sqrt(C*H*W) (28.0 for 1x28x28, 55.4 for 3x32x32); None when the shape is not known."""
    if threat == ThreatModel.LINF:
        return 1.0
    return None if input_shape is None else math.sqrt(math.prod(input_shape))


def check_budget(epsilons: Sequence[float], attacks: Sequence[AttackConfig],
                 input_shape: Sequence[int] | None = None) -> list[float]:
    """check_epsilons, then each epsilon against each attack's threat model: L-inf in [0, 1], L2 in
    [0, sqrt(C*H*W)] for images of `input_shape` (C, H, W). Without a shape only the L-inf bound is checked."""
    grid = check_epsilons(epsilons)
    for cfg in attacks:
        limit = max_epsilon(cfg.threat_model, input_shape)
        if limit is not None and grid[-1] > limit + 1e-9:
            if cfg.threat_model == ThreatModel.LINF:
                raise UsageError(f"epsilon {grid[-1]:g} is outside [0, 1] for the L-inf attack {cfg.name}; L-inf "
                                 "epsilons are fractions of the [0,1] pixel range (8/255 is 0.0314)")
            shape = "x".join(map(str, input_shape))
            raise UsageError(f"epsilon {grid[-1]:g} is outside [0, {limit:.4g}] for the L2 attack {cfg.name}: "
                             f"{limit:.4g} is the L2 diameter of a {shape} image in [0,1]")
    return grid


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """(N, classes) scores, computed in batches."""
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


class TorchModel:
    """A model as attacks that take plain callables (`torch_model = True`) call it: foolbox's wrapper semantics (the
    output carries a graph only when the input requires a gradient) without its eagerpy round trip, which costs
    tens of microseconds a call: AutoAttack makes thousands of calls per batch."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.model = model

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(x.requires_grad):
            return self.model(x)


class CountingModel(nn.Module):
    """Wraps a model to count passes, in examples (a batch of 100 counts 100). A forward pass that builds a
    graph is counted as a backward pass too: gradient attacks differentiate every such pass, and counting at
    forward time keeps hooks out of the hot loop."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forwards = 0
        self.backwards = 0
        self.training = model.training  # mirror the wrapped model's mode without changing it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += len(x)
        if torch.is_grad_enabled() and x.requires_grad:
            self.backwards += len(x)
        return self.model(x)




from robustcnn import autoattack as _autoattack  # noqa: E402,F401  (registers AutoAttack; imports this module)
