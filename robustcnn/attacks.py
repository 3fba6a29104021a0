"""Attacks through foolbox, in a registry, and robust accuracy over an epsilon grid.

    result = evaluate_robustness(model, x, y, attacks=["fgsm", "pgd"], epsilons=[0, 0.1, 0.2, 0.3])
    result.table    # attack, epsilon, robust_accuracy, n   (plus the per-sample `worst_case` rows)
    result.samples  # one row per sample x attack x epsilon: correct, adv_pred, perturbation norms

Epsilon is a fraction of the [0,1] pixel range, in the attack's norm (L-inf or L2). Attacks see [0,1]
images; the model normalizes inside.

Cheap epsilon curves: a sample already broken at a smaller epsilon is broken at every larger one (its
adversarial example lies inside every larger ball), so each epsilon attacks only the samples still standing.
Minimal-norm attacks (DeepFool, C&W) run once and are clipped to each epsilon, as foolbox does.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from robustcnn.errors import UsageError
from robustcnn.registry import Registry


class ThreatModel(str, Enum):
    LINF = "linf"
    L2 = "l2"


@dataclass(frozen=True)
class AttackConfig:
    """An attack by registry name plus keyword settings (see `robustcnn attacks` for each one's defaults).

    restarts: run a random-start attack this many times; a sample falls if any run breaks it.
    """

    name: str
    steps: int | None = None
    step_size: float | None = None  # relative to epsilon (foolbox's rel_stepsize); None: 2.5 / steps
    random_start: bool | None = None
    restarts: int = 1
    options: dict[str, Any] = field(default_factory=dict)  # any other foolbox constructor argument

    def __post_init__(self) -> None:
        entry = ATTACKS.get(self.name)
        if self.restarts < 1 or (self.steps is not None and self.steps < 1):
            raise UsageError(f"attack {self.name}: steps and restarts must be at least 1")
        if self.step_size is not None and not self.step_size > 0:
            raise UsageError(f"attack {self.name}: step_size must be positive, got {self.step_size}")
        for key in ("steps", "step_size", "random_start"):
            if getattr(self, key) is not None and key not in entry.meta["defaults"]:
                raise UsageError(f"attack {self.name} has no '{key}' setting; it takes: "
                                 f"{', '.join(entry.meta['defaults']) or 'no settings'}")

    @property
    def threat_model(self) -> ThreatModel:
        return ATTACKS.get(self.name).meta["norm"]

    def settings(self) -> dict[str, Any]:
        """The resolved keyword settings, defaults filled in."""
        resolved = dict(ATTACKS.get(self.name).meta["defaults"])
        for key in ("steps", "step_size", "random_start"):
            if getattr(self, key) is not None:
                resolved[key] = getattr(self, key)
        if "step_size" in resolved and resolved["step_size"] is None:
            resolved["step_size"] = 2.5 / resolved["steps"]  # Madry et al.: 2.5 * eps / steps
        return {**resolved, **self.options}

    def build(self) -> Any:
        return ATTACKS.get(self.name).factory(**self.settings())

    @property
    def randomized(self) -> bool:
        return bool(self.settings().get("random_start", False))

    @property
    def minimal(self) -> bool:
        return bool(ATTACKS.get(self.name).meta["minimal"])


ATTACKS: Registry[Any] = Registry("attack")


def register_attack(name: str, *, norm: ThreatModel, description: str, minimal: bool = False,
                    **defaults: Any):
    return ATTACKS.register(name, description=description, norm=norm, minimal=minimal, defaults=defaults)


@register_attack("fgsm", norm=ThreatModel.LINF, description="FGSM, one signed-gradient step (Goodfellow et al. 2014)")
def _fgsm(**kw: Any) -> Any:
    import foolbox as fb
    return fb.attacks.LinfFastGradientAttack(random_start=False, **kw)


@register_attack("pgd", norm=ThreatModel.LINF, description="L-inf PGD with random start (Madry et al. 2018)",
                 steps=40, step_size=None, random_start=True)
def _pgd(*, steps: int, step_size: float, random_start: bool, **kw: Any) -> Any:
    import foolbox as fb
    return fb.attacks.LinfPGD(steps=steps, rel_stepsize=step_size, random_start=random_start, **kw)


@register_attack("l2-pgd", norm=ThreatModel.L2, description="L2 PGD with random start (Madry et al. 2018)",
                 steps=40, step_size=None, random_start=True)
def _l2_pgd(*, steps: int, step_size: float, random_start: bool, **kw: Any) -> Any:
    import foolbox as fb
    return fb.attacks.L2PGD(steps=steps, rel_stepsize=step_size, random_start=random_start, **kw)


@register_attack("l2-fgm", norm=ThreatModel.L2, description="fast gradient method, one L2-normalized step")
def _l2_fgm(**kw: Any) -> Any:
    import foolbox as fb
    return fb.attacks.L2FastGradientAttack(random_start=False, **kw)


@register_attack("deepfool", norm=ThreatModel.LINF, minimal=True, steps=50,
                 description="L-inf DeepFool, minimal perturbation (Moosavi-Dezfooli et al. 2016)")
def _deepfool(*, steps: int, **kw: Any) -> Any:
    import foolbox as fb
    return fb.attacks.LinfDeepFoolAttack(steps=steps, **kw)


@register_attack("cw-l2", norm=ThreatModel.L2, minimal=True, steps=100,
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


def check_epsilons(epsilons: Sequence[float]) -> list[float]:
    """Sorted unique epsilons, each a fraction of the pixel range in [0, 1]."""
    if len(epsilons) == 0:
        raise UsageError("give at least one epsilon")
    for eps in epsilons:
        if not isinstance(eps, (int, float)) or not 0 <= eps <= 1:
            raise UsageError(f"epsilon {eps!r} is outside [0, 1]; epsilons are fractions of the [0,1] pixel range "
                             "(8/255 is 0.0314)")
    return sorted({float(e) for e in epsilons})


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


@dataclass
class RobustnessResult:
    table: pd.DataFrame    # attack, threat_model, epsilon, robust_accuracy, n
    samples: pd.DataFrame  # index, label, clean_pred, attack, epsilon, correct, adv_pred, perturbation_linf/l2
    cost: pd.DataFrame     # attack, seconds, forward_passes, backward_passes (in examples)
    clean_accuracy: float
    adversarials: dict[tuple[str, float], torch.Tensor] = field(default_factory=dict)  # first k examples, CPU


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """(N, classes) scores, computed in batches."""
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate_robustness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attacks: Sequence[str | AttackConfig],
    epsilons: Sequence[float],
    batch_size: int = 500,
    seed: int = 0,
    reuse_broken: bool = True,
    keep_adversarials: int = 0,
) -> RobustnessResult:
    """Robust accuracy of `model` on (x, y) for each attack x epsilon, plus the per-sample worst case.

    The model is used as given (call model.eval() first; the lint flags a model left in train mode).
    reuse_broken=False attacks every clean-correct sample at every epsilon (foolbox's own behaviour).
    keep_adversarials: keep the adversarial images of the first k examples (for a gallery).
    """
    import foolbox as fb

    configs = [as_attack_config(a) for a in attacks]
    eps_grid = check_epsilons(epsilons)
    if len({c.name for c in configs}) != len(configs):
        raise UsageError("each attack may appear once in a grid")
    device = x.device
    counter = CountingModel(model)
    fmodel = fb.PyTorchModel(counter, bounds=(0, 1), device=device)
    scores = predict(model, x)
    clean_pred = scores.argmax(1)
    clean_correct = clean_pred == y
    n = len(y)
    sample_frames, cost_rows, adversarials = [], [], {}
    for cfg in configs:
        torch.manual_seed(seed)
        attack = cfg.build()
        counter.forwards = counter.backwards = 0
        t0 = time.perf_counter()
        states = (_minimal_states if cfg.minimal else _incremental_states)(
            attack, fmodel, x, y, clean_correct, eps_grid, cfg, batch_size, reuse_broken)
        for eps, broken, adv_x in states:
            delta = (adv_x - x).flatten(1)
            found = broken & clean_correct  # an adversarial example exists (NaN norms where none was found)
            adv_pred = clean_pred.clone()
            moved = torch.nonzero(found).flatten()
            if len(moved):
                adv_pred[moved] = predict(model, adv_x[moved]).argmax(1)
            sample_frames.append(pd.DataFrame({
                "index": range(n), "label": y.cpu().numpy(), "clean_pred": clean_pred.cpu().numpy(),
                "attack": cfg.name, "threat_model": cfg.threat_model.value, "epsilon": eps,
                "correct": (~broken).cpu().numpy(), "adv_pred": adv_pred.cpu().numpy(),
                "perturbation_linf": delta.abs().amax(1).where(found, torch.nan).cpu().numpy(),
                "perturbation_l2": delta.norm(dim=1).where(found, torch.nan).cpu().numpy(),
            }))
            if keep_adversarials:
                adversarials[(cfg.name, eps)] = adv_x[:keep_adversarials].detach().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        cost_rows.append({"attack": cfg.name, "seconds": time.perf_counter() - t0, "forward_passes": counter.forwards,
                          "backward_passes": counter.backwards})
    samples = pd.concat(sample_frames, ignore_index=True)
    samples = pd.concat([samples, worst_case_samples(samples)], ignore_index=True)
    table = (samples.groupby(["attack", "threat_model", "epsilon"], sort=False)["correct"]
             .agg(robust_accuracy="mean", n="size").reset_index())
    table["robust_accuracy"] = table["robust_accuracy"].astype(float)
    return RobustnessResult(table, samples, pd.DataFrame(cost_rows), float(clean_correct.float().mean()), adversarials)


def _run_attack(attack: Any, fmodel: Any, x: torch.Tensor, y: torch.Tensor, todo: torch.Tensor,
                epsilons: list[float], batch_size: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Attack x[todo] in batches -> (clipped adversarials per epsilon, fooled mask (E, len(todo)))."""
    advs: list[list[torch.Tensor]] = [[] for _ in epsilons]
    fooled = []
    for start in range(0, len(todo), batch_size):
        idx = todo[start:start + batch_size]
        _, clipped, success = attack(fmodel, x[idx], y[idx], epsilons=epsilons)
        for k, c in enumerate(clipped):
            advs[k].append(c.detach())
        fooled.append(success)
    return [torch.cat(a) for a in advs], torch.cat(fooled, dim=1)


def _incremental_states(attack: Any, fmodel: Any, x: torch.Tensor, y: torch.Tensor, clean_correct: torch.Tensor,
                        eps_grid: list[float], cfg: AttackConfig, batch_size: int, reuse_broken: bool):
    """Yield (eps, broken, adv_x) per epsilon, attacking only the samples still standing (or, without
    reuse, every clean-correct sample). eps = 0 admits no perturbation, so it is clean accuracy."""
    broken, adv_x = ~clean_correct, x.clone()
    for eps in eps_grid:
        if eps > 0:
            if not reuse_broken:
                broken, adv_x = ~clean_correct, x.clone()
            todo = torch.nonzero(~broken).flatten()
            for _ in range(cfg.restarts if cfg.randomized else 1):
                if len(todo) == 0:
                    break
                new_adv, fooled = _run_attack(attack, fmodel, x, y, todo, [eps], batch_size)
                adv_x[todo[fooled[0]]] = new_adv[0][fooled[0]]
                broken[todo[fooled[0]]] = True
                todo = todo[~fooled[0]]
        yield eps, broken.clone(), adv_x.clone()


def _minimal_states(attack: Any, fmodel: Any, x: torch.Tensor, y: torch.Tensor, clean_correct: torch.Tensor,
                    eps_grid: list[float], cfg: AttackConfig, batch_size: int, reuse_broken: bool):
    """Minimal-norm attacks find one perturbation per sample; foolbox clips it to each epsilon."""
    todo = torch.nonzero(clean_correct).flatten()
    positive = [e for e in eps_grid if e > 0]
    results = _run_attack(attack, fmodel, x, y, todo, positive, batch_size) if len(todo) and positive else None
    for eps in eps_grid:
        broken, adv_x = ~clean_correct, x.clone()
        if eps > 0 and results is not None:
            k = positive.index(eps)
            adv_x[todo] = results[0][k]
            broken[todo[results[1][k]]] = True
        yield eps, broken, adv_x


def worst_case_samples(samples: pd.DataFrame) -> pd.DataFrame:
    """Per sample and epsilon, correct only if correct under every attack of the same threat model.

    The L-inf rows are named `worst_case`, L2 rows `worst_case_l2`; each keeps the perturbation of the
    attack that broke the sample (the first such attack in grid order)."""
    frames = []
    for threat, group in samples.groupby("threat_model", sort=False):
        if group["attack"].nunique() < 2:
            continue
        ordered = group.sort_values(["index", "epsilon", "correct"], kind="stable")  # broken (False) first
        worst = ordered.groupby(["index", "epsilon"], sort=True).first().reset_index()
        worst["correct"] = group.groupby(["index", "epsilon"], sort=True)["correct"].all().values
        worst["attack"] = "worst_case" if threat == ThreatModel.LINF.value else f"worst_case_{threat}"
        frames.append(worst[samples.columns])
    return pd.concat(frames, ignore_index=True) if frames else samples.iloc[:0]
