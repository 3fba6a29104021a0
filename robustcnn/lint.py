"""The evaluation lint: automated sanity checks from Carlini et al. 2019, "On Evaluating Adversarial Robustness".

    checks = lint_evaluation(model, x, y, attacks=[AttackConfig("fgsm"), AttackConfig("pgd")], table=result.table)

Each check gives PASS / WARN / FAIL (or SKIP when it does not apply) with the evidence. FAIL means the robust
accuracy numbers should not be trusted as they stand; WARN means look before publishing.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustcnn.attacks import AttackConfig, evaluate_robustness, predict


class Status(str, Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Check:
    check: str
    status: Status
    detail: str


TOLERANCE = 0.01  # one accuracy point


def lint_evaluation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attacks: Sequence[AttackConfig] = (),
                    table: pd.DataFrame | None = None, n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Run every check on the first n examples; `table` is the evaluation's robust-accuracy table."""
    x, y = x[:n], y[:n]
    checks = [check_eval_mode(model), check_deterministic(model, x), check_batch_invariance(model, x),
              check_logits(model, x), check_gradients(model, x, y)]
    checks += [check_eps0(model, x, y, attacks, seed)]
    if table is not None:
        checks += [check_monotone(table), check_pgd_vs_fgsm(table, attacks)]
    pgd = next((a for a in attacks if a.name == "pgd"), None)
    checks += [check_convergence(model, x, y, pgd, table, seed), check_unbounded(model, x, y, seed)]
    return pd.DataFrame([{"check": c.check, "status": c.status.value, "detail": c.detail} for c in checks])


def check_eval_mode(model: nn.Module) -> Check:
    training = sorted({type(m).__name__ for m in model.modules() if m.training})
    if training:
        return Check("eval_mode", Status.FAIL, f"modules in train mode ({', '.join(training)}): dropout and batch norm "
                     "change the outputs; call model.eval() before evaluating")
    return Check("eval_mode", Status.PASS, "every module is in eval mode")


def check_deterministic(model: nn.Module, x: torch.Tensor) -> Check:
    a, b = predict(model, x), predict(model, x)
    diff = (a - b).abs().max().item()
    if diff > 1e-5 * (1 + a.abs().max().item()):
        return Check("deterministic", Status.FAIL, f"two forward passes on the same inputs differ by {diff:.3g}: "
                     "the model is random at test time, so attacks and accuracy are noisy (use EOT or remove it)")
    return Check("deterministic", Status.PASS, f"two forward passes agree (max difference {diff:.2g})")


def check_batch_invariance(model: nn.Module, x: torch.Tensor) -> Check:
    whole = predict(model, x[:64])
    pieces = predict(model, x[:64], batch_size=7)
    diff = (whole - pieces).abs().max().item()
    if diff > 1e-4 * (1 + whole.abs().max().item()):
        return Check("batch_size_invariance", Status.FAIL, f"outputs change with batch size (max difference {diff:.3g}):"
                     " a batch statistic (batch norm in train mode?) leaks between examples")
    return Check("batch_size_invariance", Status.PASS, f"batches of 64 and of 7 agree (max difference {diff:.2g})")


def check_logits(model: nn.Module, x: torch.Tensor) -> Check:
    out = predict(model, x)
    sums = out.sum(1)
    if out.min() >= 0 and out.max() <= 1 and torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
        return Check("outputs_are_logits", Status.FAIL, "outputs are probabilities (non-negative, rows sum to 1): "
                     "cross-entropy attacks on softmax outputs see vanishing gradients; return logits")
    lse = torch.logsumexp(out, 1)
    if out.max() <= 0 and torch.allclose(lse, torch.zeros_like(lse), atol=1e-3):
        return Check("outputs_are_logits", Status.PASS, "outputs are log-probabilities, which attacks treat as logits")
    return Check("outputs_are_logits", Status.PASS,
                 f"outputs look like logits (range {out.min().item():.3g} to {out.max().item():.3g}, row sums vary)")


def check_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Check:
    xg = x.detach().clone().requires_grad_(True)
    out = model(xg)
    if not out.requires_grad:
        return Check("gradients", Status.FAIL, "outputs do not depend differentiably on the input: gradient attacks "
                     "cannot run; the numbers would be meaningless")
    (grad,) = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), xg)
    if not torch.isfinite(grad).all():
        return Check("gradients", Status.FAIL, "input gradients contain NaN or inf")
    zero = (grad.flatten(1).abs().amax(1) == 0).float().mean().item()
    if zero > 0.5:
        return Check("gradients", Status.FAIL, f"input gradient is exactly zero for {zero:.0%} of examples: gradient "
                     "masking (quantization, saturation or a non-differentiable step); gradient attacks are blind")
    if zero > 0:
        return Check("gradients", Status.WARN, f"input gradient is exactly zero for {zero:.0%} of examples")
    return Check("gradients", Status.PASS, "input gradients are finite and non-zero for every example")


def check_eps0(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: Sequence[AttackConfig], seed: int) -> Check:
    """Run each attack for real at epsilon 0 (the evaluation itself skips it): accuracy must equal clean."""
    if not attacks:
        return Check("eps0_equals_clean", Status.SKIP, "no attacks given")
    import foolbox as fb

    clean = int((predict(model, x).argmax(1) == y).sum())
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
    bad = []
    for cfg in attacks:
        torch.manual_seed(seed)
        _, clipped, success = cfg.build()(fmodel, x, y, epsilons=[0.0])
        moved = (clipped[0] - x).abs().max().item()
        still = int((~success[0]).sum())
        if still != clean or moved > 0:
            bad.append(f"{cfg.name}: {still}/{len(y)} correct, inputs moved by up to {moved:.2g}")
    if bad:
        return Check("eps0_equals_clean", Status.FAIL, f"clean: {clean}/{len(y)} correct, but at epsilon 0 " + "; ".join(bad))
    return Check("eps0_equals_clean", Status.PASS, f"every attack run at epsilon 0 leaves the inputs unchanged and "
                 f"{clean}/{len(y)} correct, as clean")


def check_monotone(table: pd.DataFrame) -> Check:
    rises = []
    for attack, group in table.groupby("attack", sort=False):
        acc = group.sort_values("epsilon")[["epsilon", "robust_accuracy"]].to_numpy()
        rises += [f"{attack} {a[1]:.3f}->{b[1]:.3f} at eps {b[0]:g}" for a, b in zip(acc, acc[1:]) if b[1] > a[1] + 1e-12]
    if rises:
        return Check("monotone_in_epsilon", Status.FAIL, "robust accuracy rises with epsilon: " + "; ".join(rises))
    return Check("monotone_in_epsilon", Status.PASS, "robust accuracy never rises with epsilon, for every attack")


def check_pgd_vs_fgsm(table: pd.DataFrame, attacks: Sequence[AttackConfig]) -> Check:
    names = set(table["attack"])
    if not {"pgd", "fgsm"} <= names:
        return Check("pgd_at_least_fgsm", Status.SKIP, "needs both pgd and fgsm in the grid")
    acc = table.pivot_table(index="epsilon", columns="attack", values="robust_accuracy")
    weaker = acc[acc["pgd"] > acc["fgsm"] + TOLERANCE / 2]
    if len(weaker):
        pgd = next((a for a in attacks if a.name == "pgd"), AttackConfig("pgd")).settings()
        travel = pgd["step_size"] * pgd["steps"]
        at = ", ".join(f"eps {e:g}: pgd {r.pgd:.3f} > fgsm {r.fgsm:.3f}" for e, r in weaker.iterrows())
        why = (f"PGD's steps cover only {travel:.2f} x epsilon in total (step_size {pgd['step_size']:.4g} x "
               f"{pgd['steps']} steps; foolbox's default 0.01/0.3 gives 1.33 from a random start, which can stop "
               "short of the boundary FGSM reaches in one step); raise step_size, e.g. 2.5/steps")
        return Check("pgd_at_least_fgsm", Status.WARN, f"PGD is weaker than FGSM ({at}): {why}")
    return Check("pgd_at_least_fgsm", Status.PASS, "PGD accuracy is at or below FGSM's at every epsilon")


def check_convergence(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pgd: AttackConfig | None,
                      table: pd.DataFrame | None, seed: int) -> Check:
    """Doubling PGD's steps and adding restarts should move robust accuracy by less than one point."""
    if pgd is None or table is None:
        return Check("attack_converged", Status.SKIP, "needs pgd in the grid")
    rows = table[(table["attack"] == "pgd") & (table["epsilon"] > 0)]
    if rows.empty:
        return Check("attack_converged", Status.SKIP, "no positive epsilon in the grid")
    eps = float(rows.iloc[(rows["robust_accuracy"] - 0.5).abs().argmin()]["epsilon"])  # most informative point
    base = evaluate_robustness(model, x, y, attacks=[pgd], epsilons=[eps], seed=seed).table
    settings = pgd.settings()
    strong_cfg = replace(pgd, steps=2 * settings["steps"], step_size=settings["step_size"] / 2,
                         restarts=max(3, pgd.restarts + 2), random_start=True)
    strong = evaluate_robustness(model, x, y, attacks=[strong_cfg], epsilons=[eps], seed=seed + 1).table
    a = float(base.loc[base["epsilon"] == eps, "robust_accuracy"].iloc[0])
    b = float(strong.loc[strong["epsilon"] == eps, "robust_accuracy"].iloc[0])
    detail = (f"at eps {eps:g}: pgd-{settings['steps']} {a:.3f}, pgd-{2 * settings['steps']} with "
              f"{strong_cfg.restarts} restarts {b:.3f} (n={len(y)})")
    if abs(a - b) >= TOLERANCE:
        return Check("attack_converged", Status.WARN, detail + ": the attack has not converged; use more steps/restarts")
    return Check("attack_converged", Status.PASS, detail)


def check_unbounded(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> Check:
    """With epsilon = 1 (the whole pixel range) any working attack must reach chance accuracy or below.

    No random start: from a uniform start at epsilon 1 the inputs are noise, and chance accuracy would
    follow whether or not the gradients work."""
    classes = predict(model, x[:1]).shape[1]
    cfg = AttackConfig("pgd", steps=100, step_size=0.05, random_start=False)
    acc = float(evaluate_robustness(model, x, y, attacks=[cfg], epsilons=[1.0], seed=seed).table["robust_accuracy"].iloc[-1])
    chance = 1.0 / classes
    if acc > chance + TOLERANCE:
        return Check("unbounded_attack", Status.FAIL, f"PGD-100 at epsilon 1 leaves accuracy {acc:.3f}, above chance "
                     f"{chance:.3f}: the attack is failing (gradient masking?), so bounded results overstate robustness")
    return Check("unbounded_attack", Status.PASS, f"PGD-100 at epsilon 1 drives accuracy to {acc:.3f} (chance {chance:.3f})")
