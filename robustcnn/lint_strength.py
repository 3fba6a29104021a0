"""Evaluation-lint checks that test the attacks against each other (AutoAttack's and Carlini et al.'s habit of
testing the tester), run by robustcnn.lint when its `strong_checks` is on:

- implementations_agree: robustcnn's PGD (the registry's `pgd`, plain torch), foolbox's LinfPGD called directly
  and AutoAttack's APGD-CE (no code shared between the three) must leave the same number of lint examples
  standing at each positive L-inf epsilon, within max(2, 2 % of n); a gap names the weaker implementation and
  the examples only the stronger one broke.
- square_vs_whitebox: the black-box Square attack must not break more than noise (max(2, 1 % of n)) examples the
  grid's white-box attacks left standing: if it does, the gradients are masked and white-box numbers overstate
  robustness (FAIL).
- radius_consistent: the curve implied by FMN radii (robustcnn.radius) must agree with the grid's fixed-epsilon
  worst case within max(2, 1 % of n) at every epsilon: far above means FMN is weak, far below means the
  fixed-epsilon attacks are weak (each a WARN).
Each uses independent per-epsilon attacks on the lint subset (examples counted, clean errors count as broken).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pandas as pd
import torch
import torch.nn as nn

from robustcnn.attacks import AttackConfig, ThreatModel, predict
from robustcnn.evaluation import RobustnessResult, evaluate_robustness
from robustcnn.radius import curve_from_radii, robustness_radii

APGD_STEPS = 25       # cheap APGD-CE for the agreement check (the standard version runs 100)
SQUARE_QUERIES = 300  # a few hundred queries: enough to expose masked gradients on the lint subset


def agreement_tolerance(n: int) -> int:
    """Examples by which implementations may differ: max(2, 2 % of n) (random starts differ between them)."""
    return max(2, math.ceil(0.02 * n))


def _material(n: int) -> int:
    return max(2, math.ceil(0.01 * n))


def _linf_eps(epsilons: Sequence[float]) -> list[float]:
    return sorted({float(e) for e in epsilons if e > 0})


def _broken(result: RobustnessResult, attack: str | None = None) -> dict[float, torch.Tensor]:
    """Per epsilon, (n,) bool: broken by `attack` (None: by any non-worst-case L-inf attack of the result)."""
    s = result.samples[(result.samples["threat_model"] == ThreatModel.LINF.value)
                       & ~result.samples["attack"].str.startswith("worst_case")]
    if attack is not None:
        s = s[s["attack"] == attack]
    return {float(e): torch.as_tensor(~g.groupby("index")["correct"].all().sort_index().to_numpy())
            for e, g in s.groupby("epsilon")}


def foolbox_pgd_broken(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pgd: AttackConfig, eps: float,
                       seed: int) -> torch.Tensor:
    """(n,) bool, on CPU: misclassified after foolbox's own LinfPGD with `pgd`'s settings, or clean."""
    import foolbox as fb

    s = pgd.settings()
    attack = fb.attacks.LinfPGD(steps=s["steps"], rel_stepsize=s["step_size"], random_start=s["random_start"],
                                abs_stepsize=s.get("abs_stepsize"))
    torch.manual_seed(seed + 1)  # not the registry run's draws: the two share no random start either
    _, (adv,), _ = attack(fb.PyTorchModel(model, bounds=(0, 1), device=x.device), x, y, epsilons=[eps])
    return (predict(model, adv).argmax(1) != y).cpu()


def check_implementations_agree(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: Sequence[AttackConfig],
                                epsilons: Sequence[float], seed: int, batch_size: int = 500) -> tuple[str, str, str]:
    """(status, detail) as described in the module docstring; the grid's own `pgd` settings are used if it has one."""
    name = "implementations_agree"
    grid = _linf_eps(epsilons)
    if not grid or not any(a.threat_model == ThreatModel.LINF for a in attacks):
        return name, "SKIP", "no L-inf attack with a positive epsilon in the grid"
    pgd = next((a for a in attacks if a.name == "pgd"), AttackConfig("pgd"))
    run = evaluate_robustness(model, x, y, attacks=[pgd, AttackConfig("apgd-ce", steps=APGD_STEPS)], epsilons=grid,
                              curve="per-epsilon", seed=seed, batch_size=batch_size)
    ours, apgd, steps = _broken(run, "pgd"), _broken(run, "apgd-ce"), pgd.settings()["steps"]
    n, tol, gaps, said = len(y), agreement_tolerance(len(y)), [], []
    for eps in grid:
        broken = {f"robustcnn pgd ({steps} steps)": ours[eps], f"apgd-ce ({APGD_STEPS} steps)": apgd[eps],
                  f"foolbox pgd ({steps} steps)": foolbox_pgd_broken(model, x, y, pgd, eps, seed)}
        standing = {k: int((~v).sum()) for k, v in broken.items()}
        said.append(f"eps {eps:g}: " + ", ".join(f"{k} {v}" for k, v in standing.items()))
        weak, strong = max(standing, key=standing.get), min(standing, key=standing.get)
        if standing[weak] - standing[strong] > tol:
            only = torch.nonzero(broken[strong] & ~broken[weak]).flatten().tolist()
            gaps.append(f"at eps {eps:g} {weak} leaves {standing[weak] - standing[strong]} more standing than "
                        f"{strong}; examples only {strong} broke: {only[:20]}{' ...' if len(only) > 20 else ''}")
    detail = f"examples left standing of n={n} (tolerance max(2, 2 % of n) = {tol}): " + "; ".join(said)
    if gaps:
        return name, "WARN", "; ".join(gaps) + f": the weaker implementation is not finding adversarial examples ({detail})"
    return name, "PASS", detail


def _grid_and_whitebox(per_eps: RobustnessResult | None, epsilons: Sequence[float]
                       ) -> tuple[list[float], dict[float, torch.Tensor]]:
    """The positive L-inf epsilons of the grid and, per epsilon, which examples the grid's white-box attacks broke."""
    return _linf_eps(epsilons), (_broken(per_eps) if per_eps is not None else {})


def check_square_vs_whitebox(model: nn.Module, x: torch.Tensor, y: torch.Tensor, per_eps: RobustnessResult | None,
                             epsilons: Sequence[float], seed: int, batch_size: int = 500) -> tuple[str, str, str]:
    name = "square_vs_whitebox"
    grid, white = _grid_and_whitebox(per_eps, epsilons)
    if not grid or not white:
        return name, "SKIP", "no white-box L-inf attack with a positive epsilon in the grid"
    run = evaluate_robustness(model, x, y, attacks=[AttackConfig("square", options={"n_queries": SQUARE_QUERIES})],
                              epsilons=grid, curve="per-epsilon", seed=seed, batch_size=batch_size)
    square = _broken(run, "square")
    n, tol, worst, said = len(y), _material(len(y)), 0, []
    for eps in grid:
        only = torch.nonzero(square[eps] & ~white[eps]).flatten().tolist()
        worst = max(worst, len(only))
        said.append(f"eps {eps:g}: {len(only)}" + (f" {only[:10]}" if only else ""))
    detail = (f"examples Square ({SQUARE_QUERIES} queries, black-box) broke that every white-box attack of the grid "
              f"left standing (n={n}, threshold more than {tol} = max(2, 1 % of n)): " + "; ".join(said))
    if worst > tol:
        return name, "FAIL", detail + ": a black-box attack beats the white-box ones, so the gradients are masked " \
                                      "and the white-box numbers overstate robustness"
    return name, "PASS", detail


def check_radius_consistent(model: nn.Module, x: torch.Tensor, y: torch.Tensor, per_eps: RobustnessResult | None,
                            epsilons: Sequence[float], seed: int, batch_size: int = 500) -> tuple[str, str, str]:
    name = "radius_consistent"
    grid, white = _grid_and_whitebox(per_eps, epsilons)
    if not grid or not white:
        return name, "SKIP", "no L-inf attack with a positive epsilon in the grid"
    names = sorted(set(per_eps.samples.loc[per_eps.samples["threat_model"] == ThreatModel.LINF.value, "attack"])
                   - {"worst_case"})
    radii = robustness_radii(model, x, y, norm="linf", batch_size=batch_size, seed=seed)
    n, tol = len(y), _material(len(y))
    from_radii = [round(a * n) for a in curve_from_radii(radii, grid)]
    fixed = [int((~white[e]).sum()) for e in grid]
    above = [f"eps {e:g}: {r} vs {f}" for e, r, f in zip(grid, from_radii, fixed) if r - f > tol]
    below = [f"eps {e:g}: {r} vs {f}" for e, r, f in zip(grid, from_radii, fixed) if f - r > tol]
    detail = (f"examples standing (n={n}, FMN radii vs fixed-epsilon worst case of {'+'.join(names)}; threshold more "
              f"than {tol} = max(2, 1 % of n)): " + ", ".join(f"eps {e:g}: {r} vs {f}"
                                                             for e, r, f in zip(grid, from_radii, fixed)))
    if above:
        return name, "WARN", f"the radius curve is above the fixed-epsilon worst case ({'; '.join(above)}): FMN " \
                             f"misses adversarial examples the fixed-epsilon attacks find ({detail})"
    if below:
        return name, "WARN", f"the radius curve is below the fixed-epsilon worst case ({'; '.join(below)}): the " \
                             f"fixed-epsilon attacks ({', '.join(names)}) are weak; FMN breaks examples they " \
                             f"leave standing ({detail})"
    return name, "PASS", detail


def strong_rows(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: Sequence[AttackConfig],
                  epsilons: Sequence[float], per_eps: RobustnessResult | None, seed: int, batch_size: int,
                  run: bool = True, on_check: Callable[[str], None] = lambda name: None) -> pd.DataFrame:
    """The three checks as lint rows; with run=False, SKIP rows that say how to turn them on.
    on_check(name) is called as each check finishes (the lint's progress)."""
    names = ("implementations_agree", "square_vs_whitebox", "radius_consistent")
    if not run:
        return pd.DataFrame([{"check": c, "status": "SKIP", "detail": "off (the quick suite skips it for speed; on "
                              "with the standard and full suites, or lint strong_checks=True)"} for c in names])
    rows = [check_implementations_agree(model, x, y, attacks, epsilons, seed, batch_size)]
    on_check(names[0])
    rows.append(check_square_vs_whitebox(model, x, y, per_eps, epsilons, seed, batch_size))
    on_check(names[1])
    rows.append(check_radius_consistent(model, x, y, per_eps, epsilons, seed, batch_size))
    on_check(names[2])
    return pd.DataFrame([{"check": c, "status": s, "detail": d} for c, s, d in rows])
