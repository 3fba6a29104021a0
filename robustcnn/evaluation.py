"""Robust accuracy over an epsilon grid: per-sample outcomes, the worst case over attacks, cumulative or
per-epsilon curves, and `evaluate_model` for a model and its dataset.

    result = evaluate_robustness(model, x, y, attacks=["fgsm", "pgd"], epsilons=[0, 0.1, 0.2, 0.3])
    result.table    # attack, threat_model, epsilon, robust_accuracy, n, curve  (plus the `worst_case` rows)
    result.samples  # one row per sample x attack x epsilon: correct, adv_pred, attack_success, perturbation norms

Two curves (`curve=`):
- "cumulative" (the default, and the fast path): a sample broken at a smaller epsilon counts as broken at
  every larger one (its adversarial example lies inside every larger ball), so each epsilon attacks only the
  samples still standing, and epsilon 0 is clean accuracy without running the attack. It is a valid robust
  accuracy at each epsilon, at most the per-epsilon figure, and monotone by construction.
- "per-epsilon": every clean-correct sample is attacked afresh at every epsilon, epsilon 0 included (foolbox's
  own multi-epsilon behaviour); what a single attack at that epsilon achieves.
Minimal-norm attacks (DeepFool, C&W) run once and are clipped to each epsilon, as foolbox does.

Every success an attack reports is verified before it counts: the returned image lies in the epsilon ball and
in [0,1], and the model misclassifies it. `attack_success` records what the attack claimed.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

import pandas as pd
import torch
import torch.nn as nn

from robustcnn import progress
from robustcnn.attacks import AttackConfig, CountingModel, ThreatModel, TorchModel, as_attack_config, check_budget, predict
from robustcnn.data import DataBundle
from robustcnn.errors import UsageError, check_choice
from robustcnn.units import (
    UnitRunner,
    as_frame,
    compute_now,
    examples_fingerprint,
    frame_record,
    record_frame,
    record_tensor,
    tensor_record,
)

DEFAULT_ATTACKS = ("fgsm", "pgd")
DEFAULT_EPSILONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


class Curve(str, Enum):
    CUMULATIVE = "cumulative"
    PER_EPSILON = "per-epsilon"


def as_curve(curve: str | Curve) -> Curve:
    return Curve(check_choice("curve", str(getattr(curve, "value", curve)), [c.value for c in Curve]))


@dataclass
class RobustnessResult:
    table: pd.DataFrame    # attack, threat_model, epsilon, robust_accuracy, n, curve
    samples: pd.DataFrame  # index, label, clean_pred, attack, threat_model, epsilon, correct, adv_pred,
    #                        attack_success, perturbation_linf, perturbation_l2
    cost: pd.DataFrame     # attack, seconds, forward_passes, backward_passes (in examples, verification included)
    clean_accuracy: float
    curve: str = Curve.CUMULATIVE.value
    adversarials: dict[tuple[str, float], torch.Tensor] = field(default_factory=dict)  # first k examples, CPU


def evaluate_robustness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attacks: Sequence[str | AttackConfig],
                        epsilons: Sequence[float], curve: str | Curve = Curve.CUMULATIVE, batch_size: int = 500,
                        seed: int = 0, keep_adversarials: int = 0, label: str = "attacks",
                        units: UnitRunner | None = None) -> RobustnessResult:
    """Robust accuracy of `model` on (x, y) for each attack x epsilon, plus the per-sample worst case.

    The model is used as given (call model.eval() first; the lint flags a model left in train mode).
    curve: "cumulative" or "per-epsilon" (module docstring). Each attack is seeded with `seed`.
    keep_adversarials: keep the adversarial images of the first k examples (for a gallery).
    label: names the progress (robustcnn.progress): a bar, or a line per attack x epsilon, on stderr.
    units: runs each attack as a unit (robustcnn.units.Units: stored, and reused by a resumed run); None computes.
    """
    import foolbox as fb

    configs = [as_attack_config(a) for a in attacks]
    mode = as_curve(curve)
    if not configs:
        raise UsageError("give at least one attack")
    if len({c.name for c in configs}) != len(configs):
        raise UsageError("each attack may appear once in a grid")
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    eps_grid = check_budget(epsilons, configs, tuple(x.shape[1:]))
    counter = CountingModel(model)
    fmodel = fb.PyTorchModel(counter, bounds=(0, 1), device=x.device)
    clean_pred = predict(model, x).argmax(1)
    clean_correct = clean_pred == y
    grid = _Grid(fmodel, counter, x, y, clean_pred, clean_correct, eps_grid, mode == Curve.PER_EPSILON, batch_size,
                 seed, keep_adversarials)
    run, examples = (compute_now, None) if units is None else (units, examples_fingerprint(x, y))
    sample_frames, cost_rows, adversarials = [], [], {}
    with progress.task(label, len(configs) * len(eps_grid)) as bar:  # a bar, or a line per attack x epsilon
        for cfg in configs:
            # one unit: everything that decides this attack's outcome (attacks are seeded one by one, so an
            # attack's outcome does not depend on the others in the grid)
            spec = {"unit": "attack", "attack": cfg, "epsilons": eps_grid, "curve": mode.value, "seed": seed,
                    "batch_size": batch_size, "keep_adversarials": keep_adversarials, "examples": examples}
            record = run(spec, lambda cfg=cfg: _attack_record(cfg, grid, bar))
            for eps in eps_grid if record.get("resumed") else ():
                bar.advance(f"{cfg.name} eps={eps:.4g} (stored)")
            sample_frames.append(as_frame(record["samples"]))
            cost_rows.append(record["cost"])
            adversarials.update({(cfg.name, eps): record_tensor(adv) for eps, adv in zip(eps_grid, record["adversarials"])})
    samples = pd.concat(sample_frames, ignore_index=True)
    samples = pd.concat([samples, worst_case_samples(samples)], ignore_index=True)
    table = (samples.groupby(["attack", "threat_model", "epsilon"], sort=False)["correct"]
             .agg(robust_accuracy="mean", n="size").reset_index())
    table["robust_accuracy"] = table["robust_accuracy"].astype(float)
    table["curve"] = mode.value
    return RobustnessResult(table, samples, pd.DataFrame(cost_rows).assign(n=len(y)),
                            clean_correct.sum().item() / len(y), mode.value, adversarials)


class _Grid(NamedTuple):
    """What every attack of one evaluation shares."""

    fmodel: Any
    counter: CountingModel
    x: torch.Tensor
    y: torch.Tensor
    clean_pred: torch.Tensor
    clean_correct: torch.Tensor
    eps_grid: list[float]
    per_epsilon: bool
    batch_size: int
    seed: int
    keep: int


def _attack_record(cfg: AttackConfig, g: _Grid, bar: Any) -> dict[str, Any]:
    """One attack over the epsilon grid as a unit record (robustcnn.units): its per-sample outcomes, its cost, and
    the adversarials of the first `keep` examples at each epsilon (in grid order)."""
    torch.manual_seed(g.seed)
    attack = cfg.build()
    model = TorchModel(g.counter) if getattr(attack, "torch_model", False) else g.fmodel  # ours skip foolbox's wrapper
    attacker = _Attacker(attack, model, g.x, g.y, cfg.threat_model, g.batch_size)
    g.counter.forwards = g.counter.backwards = 0
    t0 = time.perf_counter()
    states = _minimal_states if cfg.minimal else _incremental_states
    frames, kept = [], []
    for state in states(attacker, cfg, g.clean_correct, g.clean_pred, g.eps_grid, g.per_epsilon):
        frames.append(_sample_frame(state, cfg, g.x, g.y, g.clean_pred, g.clean_correct))
        if g.keep:
            kept.append(tensor_record(state.adv_x[:g.keep]))
        bar.advance(f"{cfg.name} eps={state.eps:.4g}")
    if g.x.device.type == "cuda":
        torch.cuda.synchronize(g.x.device)
    cost = {"attack": cfg.name, "seconds": time.perf_counter() - t0, "forward_passes": g.counter.forwards,
            "backward_passes": g.counter.backwards}
    return {"samples": pd.concat(frames, ignore_index=True), "cost": cost, "adversarials": kept}


class _State(NamedTuple):
    """One attack's outcome at one epsilon, over all N samples."""

    eps: float
    broken: torch.Tensor    # (N,) bool: misclassified clean, or a verified adversarial example found
    claimed: torch.Tensor   # (N,) bool: the attack reported success
    adv_x: torch.Tensor     # (N, C, H, W): the adversarial example where broken, else x
    adv_pred: torch.Tensor  # (N,) the model's prediction on adv_x


class _Batch(NamedTuple):
    advs: list[torch.Tensor]  # per epsilon: (len(todo), C, H, W) clipped adversarials
    fooled: torch.Tensor      # (E, len(todo)) bool: verified (inside the ball, in [0,1], misclassified)
    claimed: torch.Tensor     # (E, len(todo)) bool: the attack's own success flags
    preds: torch.Tensor       # (E, len(todo)) the model's predictions on advs


class _Attacker:
    """Runs one attack on x[todo] in batches and verifies every success it reports."""

    def __init__(self, attack: Any, fmodel: Any, x: torch.Tensor, y: torch.Tensor, norm: ThreatModel,
                 batch_size: int) -> None:
        self.attack, self.fmodel, self.x, self.y, self.norm, self.batch_size = attack, fmodel, x, y, norm, batch_size

    def __call__(self, todo: torch.Tensor, epsilons: list[float]) -> _Batch:
        parts = []
        for start in range(0, len(todo), self.batch_size):
            idx = todo[start:start + self.batch_size]
            x, y = self.x[idx], self.y[idx]
            _, clipped, success = self.attack(self.fmodel, x, y, epsilons=epsilons)
            clipped = [c.detach() for c in clipped]
            with torch.no_grad():
                preds = torch.stack([self.fmodel(c).argmax(1) for c in clipped])
            size = [_norm(c - x, self.norm) for c in clipped]
            inside = torch.stack([(s <= e * (1 + 1e-5) + 1e-6) & (c.flatten(1).amin(1) >= 0) & (c.flatten(1).amax(1) <= 1)
                                  for s, e, c in zip(size, epsilons, clipped)])
            success = torch.as_tensor(success, device=x.device).bool()
            parts.append(_Batch(clipped, success & inside & (preds != y), success, preds))
        return _Batch([torch.cat([p.advs[k] for p in parts]) for k in range(len(epsilons))],
                      *(torch.cat([getattr(p, f) for p in parts], dim=1) for f in ("fooled", "claimed", "preds")))


def _norm(delta: torch.Tensor, norm: ThreatModel) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == ThreatModel.LINF else flat.norm(dim=1)


def _fresh(clean_correct: torch.Tensor, clean_pred: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
    """broken, claimed, adv_x, adv_pred before any attack."""
    return [~clean_correct, torch.zeros_like(clean_correct), x.clone(), clean_pred.clone()]


def _apply(state: list[torch.Tensor], todo: torch.Tensor, out: _Batch, k: int, new: torch.Tensor) -> None:
    """Record the k-th epsilon of an attack on x[todo]: samples `new` (a mask over todo) are now broken."""
    broken, claimed, adv_x, adv_pred = state
    claimed[todo[out.claimed[k]]] = True
    hit = todo[new]
    adv_x[hit], adv_pred[hit], broken[hit] = out.advs[k][new], out.preds[k][new], True


def _incremental_states(attacker: _Attacker, cfg: AttackConfig, clean_correct: torch.Tensor, clean_pred: torch.Tensor,
                        eps_grid: list[float], per_epsilon: bool) -> Iterator[_State]:
    """Fixed-budget attacks, one epsilon at a time, `restarts` times on the samples still standing.
    Cumulative: carry the broken samples to the next epsilon, and take epsilon 0 as clean without attacking."""
    state = _fresh(clean_correct, clean_pred, attacker.x)
    for eps in eps_grid:
        if per_epsilon:
            state = _fresh(clean_correct, clean_pred, attacker.x)
        if per_epsilon or eps > 0:
            todo = torch.nonzero(~state[0]).flatten()
            for _ in range(cfg.restarts if cfg.randomized else 1):
                if len(todo) == 0:
                    break
                out = attacker(todo, [eps])
                _apply(state, todo, out, 0, out.fooled[0])
                todo = todo[~out.fooled[0]]
        yield _State(eps, *(t.clone() for t in state))


def _minimal_states(attacker: _Attacker, cfg: AttackConfig, clean_correct: torch.Tensor, clean_pred: torch.Tensor,
                    eps_grid: list[float], per_epsilon: bool) -> Iterator[_State]:
    """Minimal-norm attacks find one perturbation per sample, clipped to each epsilon by foolbox; cumulative
    keeps a sample broken at a smaller epsilon (with its smaller perturbation) at every larger one."""
    todo = torch.nonzero(clean_correct).flatten()
    attacked = eps_grid if per_epsilon else [e for e in eps_grid if e > 0]
    out = attacker(todo, attacked) if len(todo) and attacked else None
    state = _fresh(clean_correct, clean_pred, attacker.x)
    for eps in eps_grid:
        if per_epsilon:
            state = _fresh(clean_correct, clean_pred, attacker.x)
        if out is not None and eps in attacked:
            k = attacked.index(eps)
            _apply(state, todo, out, k, out.fooled[k] & ~state[0][todo])
        yield _State(eps, *(t.clone() for t in state))


def _sample_frame(state: _State, cfg: AttackConfig, x: torch.Tensor, y: torch.Tensor, clean_pred: torch.Tensor,
                  clean_correct: torch.Tensor) -> pd.DataFrame:
    delta = (state.adv_x - x).flatten(1)
    found = state.broken & clean_correct  # an adversarial example exists (NaN norms where none was found)
    return pd.DataFrame({
        "index": range(len(y)), "label": y.cpu().numpy(), "clean_pred": clean_pred.cpu().numpy(),
        "attack": cfg.name, "threat_model": cfg.threat_model.value, "epsilon": state.eps,
        "correct": (~state.broken).cpu().numpy(), "adv_pred": state.adv_pred.cpu().numpy(),
        "attack_success": state.claimed.cpu().numpy(),
        "perturbation_linf": delta.abs().amax(1).where(found, torch.nan).cpu().numpy(),
        "perturbation_l2": delta.norm(dim=1).where(found, torch.nan).cpu().numpy(),
    })


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


# ------------------------------------------------------------------ a model and its dataset
@dataclass
class Evaluation:
    """The tables of one model's evaluation, as DataFrames (the study writes these to CSV)."""

    clean: pd.DataFrame    # model, split, accuracy, n
    robust: pd.DataFrame   # model, attack, threat_model, epsilon, robust_accuracy, n, curve
    samples: pd.DataFrame  # model + per-sample outcomes
    cost: pd.DataFrame     # model, attack, seconds, forward_passes, backward_passes
    lint: pd.DataFrame     # model, check, status, detail
    result: RobustnessResult


def evaluate_model(model: nn.Module, data: DataBundle, *, name: str = "model",
                   attacks: Sequence[str | AttackConfig] | None = None, epsilons: Sequence[float] | None = None,
                   curve: str | Curve = Curve.CUMULATIVE, n_examples: int = 500, batch_size: int = 500,
                   lint: bool = True, lint_examples: int = 200, seed: int = 0, keep_adversarials: int = 0,
                   clean_splits: tuple[str, ...] = ("train", "test"), strong_lint: bool = False,
                   units: UnitRunner | None = None) -> Evaluation:
    """Clean accuracy (whole splits), robust accuracy over attacks x epsilons on the first n_examples of the
    test split, and the lint on the first lint_examples of those, for any model.

    attacks / epsilons: None means DEFAULT_ATTACKS / DEFAULT_EPSILONS (an empty list is an error).
    The model should be in eval mode (the lint FAILs a model in train mode) and on data's device.
    clean_splits: the splits whose whole clean accuracy goes in `clean` (the benchmark needs none).
    strong_lint: the lint also tests the attacks against each other (lint_evaluation's strong_checks).
    units: runs each attack and the lint as units (robustcnn.units.Units: stored, reused on resume); None computes.
    """
    from robustcnn.lint import lint_evaluation  # the lint runs evaluations itself

    configs = [as_attack_config(a) for a in (DEFAULT_ATTACKS if attacks is None else attacks)]
    eps = list(DEFAULT_EPSILONS if epsilons is None else epsilons)
    if n_examples < 1 or lint_examples < 1:
        raise UsageError(f"n_examples and lint_examples must be at least 1, got {n_examples} and {lint_examples}")
    n = min(n_examples, len(data.y_test))
    x, y = data.x_test[:n], data.y_test[:n]
    clean_rows = []
    for split in clean_splits:
        xs, ys = getattr(data, f"x_{split}", None), getattr(data, f"y_{split}", None)
        if xs is None:
            raise UsageError(f"unknown split '{split}' for clean accuracy")
        acc = (predict(model, xs).argmax(1) == ys).sum().item() / len(ys)
        clean_rows.append({"model": name, "split": split, "accuracy": acc, "n": len(ys)})
    result = evaluate_robustness(model, x, y, attacks=configs, epsilons=eps, curve=curve, batch_size=batch_size,
                                 seed=seed, keep_adversarials=keep_adversarials, label=name, units=units)
    lint_table = pd.DataFrame(columns=["check", "status", "detail"])
    if lint:
        spec = {"unit": "lint", "attacks": configs, "epsilons": eps, "curve": result.curve, "n": lint_examples,
                "seed": seed, "batch_size": batch_size, "strong": strong_lint,
                "examples": None if units is None else examples_fingerprint(x, y)}
        record = (units or compute_now)(spec, lambda: {"lint": frame_record(lint_evaluation(
            model, x, y, attacks=configs, epsilons=eps, table=result.table, n=lint_examples, seed=seed,
            batch_size=batch_size, strong_checks=strong_lint))})
        lint_table = record_frame(record["lint"])

    def tag(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(model=name)[["model", *df.columns]]

    clean = pd.DataFrame(clean_rows, columns=["model", "split", "accuracy", "n"])
    return Evaluation(clean, tag(result.table), tag(result.samples), tag(result.cost), tag(lint_table), result)
