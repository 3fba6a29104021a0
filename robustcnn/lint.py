"""The evaluation lint: automated sanity checks from Carlini et al. 2019, "On Evaluating Adversarial Robustness".

    checks = lint_evaluation(model, x, y, attacks=["fgsm", "pgd"], epsilons=[0, 0.1, 0.3], table=result.table)

Each check gives PASS / WARN / FAIL (or SKIP when it does not apply) with the evidence. FAIL means the robust
accuracy numbers should not be trusted as they stand; WARN means look before publishing. Every check can FAIL
or WARN on a real failure (tests/test_lint.py breaks a model or an attack for each one). The attack checks run
their own INDEPENDENT per-epsilon attacks on the lint subset, through the same evaluation path as the reported
numbers: the cumulative curve is monotone and equals clean accuracy at epsilon 0 by construction, so it
cannot test either property.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustcnn import progress
from robustcnn.attacks import AttackConfig, as_attack_config, predict
from robustcnn.evaluation import RobustnessResult, evaluate_robustness
from robustcnn.lint_strength import strong_rows


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


def material(n: int) -> int:
    """How many examples a difference must exceed to be more than noise: max(2, 1 % of n)."""
    return max(2, math.ceil(0.01 * n))


def lint_evaluation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attacks: Sequence[str | AttackConfig] = (),
                    epsilons: Sequence[float] | None = None, table: pd.DataFrame | None = None, n: int = 200,
                    seed: int = 0, batch_size: int = 500, strong_checks: bool = False) -> pd.DataFrame:
    """Run every check on the first n examples.

    strong_checks: also test the attacks against each other (robustcnn.lint_strength: implementations_agree,
    square_vs_whitebox, radius_consistent); they cost a few attacks more, so off they are SKIP rows saying so.

    epsilons: the evaluation's grid (default: the epsilons of `table`); the lint attacks each one independently.
    table: the evaluation's robust-accuracy table, for pgd_at_least_fgsm (else the lint's per-epsilon table).
    """
    x, y = x[:n], y[:n]
    configs = [as_attack_config(a) for a in attacks]
    grid = sorted({0.0, *(epsilons if epsilons is not None else (table["epsilon"] if table is not None else []))})
    iterative = [c for c in configs if c.iterative]
    steps = 3 + max(1, len(iterative)) + (3 if strong_checks else 0)
    # a bar, or a line per step; the lint's own attack runs are its steps, not lines of their own
    with progress.task("lint", steps, hush_inner=True) as bar:
        checks = [check_eval_mode(model, x), check_deterministic(model, x), check_batch_invariance(model, x),
                  check_logits(model, x), check_gradients(model, x, y)]
        bar.advance("model checks")
        per_eps = (evaluate_robustness(model, x, y, attacks=configs, epsilons=grid, curve="per-epsilon", seed=seed,
                                       batch_size=batch_size, label="lint per-epsilon") if configs else None)
        checks += [check_eps0(model, x, y, per_eps), check_monotone(per_eps),
                   check_pgd_vs_fgsm(table if table is not None else (per_eps.table if per_eps else None), configs)]
        bar.advance("independent per-epsilon attacks")
        for c in iterative:
            checks.append(check_convergence(model, x, y, c, per_eps, seed, batch_size))
            bar.advance(f"attack_converged {c.name}")
        if not iterative:
            checks.append(Check("attack_converged", Status.SKIP, "no iterative attack (one with steps) in the grid"))
            bar.advance("attack_converged")
        checks += [check_unbounded(model, x, y, seed, batch_size)]
        bar.advance("unbounded_attack")
        rows = pd.DataFrame([{"check": c.check, "status": c.status.value, "detail": c.detail} for c in checks])
        strong = strong_rows(model, x, y, configs, grid, per_eps, seed, batch_size, run=strong_checks,
                             on_check=bar.advance)
    return pd.concat([rows, strong], ignore_index=True)


def _set_mode(model: nn.Module, training: bool) -> None:
    try:
        model.train(training)
    except NotImplementedError:  # torch.export modules refuse .train()/.eval(): their mode was fixed at export
        for m in model.modules():
            m.training = training


def mode_difference(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(largest |train-mode output - eval-mode output| on x, largest |eval-mode output|). Each module's mode,
    the buffers (batch-norm running statistics) and the random state are left as they were: measuring must not
    change the model."""
    modes = {m: m.training for m in model.modules()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    cuda = [x.device.index if x.device.index is not None else torch.cuda.current_device()] if x.is_cuda else []
    try:
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            _set_mode(model, True)
            trained = model(x)
            _set_mode(model, False)
            evaluated = model(x)
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        for m, training in modes.items():
            m.training = training
    return (trained.float() - evaluated.float()).abs().max().item(), evaluated.float().abs().max().item()


def changes_with_mode(model: nn.Module, x: torch.Tensor) -> tuple[bool, float]:
    """(whether train and eval mode give different outputs on x beyond float noise, the largest difference):
    a factory's fresh module is in train mode, but without dropout or batch norm the mode changes nothing."""
    diff, scale = mode_difference(model, x)
    return not diff <= 1e-5 * (1 + scale), diff  # NaN counts as a change


def check_eval_mode(model: nn.Module, x: torch.Tensor | None = None) -> Check:
    """With x: FAIL only when modules are in train mode AND the outputs on x differ from eval mode's (dropout, batch
    norm); without x, any module in train mode FAILs."""
    training = sorted({type(m).__name__ for m in model.modules() if m.training})
    if not training:
        return Check("eval_mode", Status.PASS, "every module is in eval mode")
    if x is not None:
        changed, diff = changes_with_mode(model, x[:32])
        if not changed:
            return Check("eval_mode", Status.PASS, f"modules in train mode ({', '.join(training)}), but the outputs "
                         f"are the same in eval mode (max difference {diff:.2g})")
    return Check("eval_mode", Status.FAIL, f"modules in train mode ({', '.join(training)}): dropout and batch norm "
                 "change the outputs; call model.eval() before evaluating")


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


def check_eps0(model: nn.Module, x: torch.Tensor, y: torch.Tensor, per_eps: RobustnessResult | None) -> Check:
    """Each attack, run for real at epsilon 0 through the evaluation path (per-epsilon), must leave every
    sample as clean prediction has it: a difference means the model is random or batch-dependent, or the attack
    reports successes it did not find."""
    if per_eps is None:
        return Check("eps0_equals_clean", Status.SKIP, "no attacks given")
    attacks = [a for a in per_eps.samples["attack"].unique() if not a.startswith("worst_case")]
    at0 = per_eps.samples[per_eps.samples["epsilon"] == 0]
    missing = [a for a in attacks if not (at0["attack"] == a).any()]
    if missing:  # nothing was compared: passing would claim a check that never ran
        return Check("eps0_equals_clean", Status.FAIL, f"not run: no epsilon-0 rows for {', '.join(missing)} (the "
                     "lint's per-epsilon grid must include epsilon 0)")
    clean = (predict(model, x).argmax(1) == y).cpu().numpy()
    bad = []
    for attack, rows in at0.groupby("attack", sort=False):
        if attack.startswith("worst_case"):
            continue
        rows = rows.sort_values("index")
        differ = int((rows["correct"].to_numpy() != clean).sum())
        claims = int((rows["attack_success"].to_numpy() & clean).sum())
        if differ or claims:
            bad.append(f"{attack}: {int(rows['correct'].sum())}/{len(y)} correct, {differ} samples differ from clean, "
                       f"{claims} successes claimed")
    if bad:
        return Check("eps0_equals_clean", Status.FAIL, f"clean: {int(clean.sum())}/{len(y)} correct, but at epsilon 0 "
                     + "; ".join(bad))
    return Check("eps0_equals_clean", Status.PASS, f"every attack run at epsilon 0 leaves the same {int(clean.sum())}/"
                 f"{len(y)} samples correct as clean prediction, and claims no success")


def check_monotone(per_eps: RobustnessResult | None) -> Check:
    """Independent per-epsilon attacks: robust accuracy must not rise with epsilon by more than noise
    (a rise means the attack fails at large epsilon: gradient masking, a bad step size)."""
    if per_eps is None:
        return Check("monotone_in_epsilon", Status.SKIP, "no attacks given")
    table = per_eps.table
    n = int(table["n"].iloc[0])
    rises, largest = [], 0
    for attack, group in table.groupby("attack", sort=False):
        acc = group.sort_values("epsilon")[["epsilon", "robust_accuracy"]].to_numpy()
        for a, b in zip(acc, acc[1:]):
            rise = round((b[1] - a[1]) * n)
            largest = max(largest, rise)
            if rise > material(n):
                rises.append(f"{attack} {a[1]:.3f} at eps {a[0]:g} -> {b[1]:.3f} at eps {b[0]:g}")
    if rises:
        return Check("monotone_in_epsilon", Status.FAIL, f"independent per-epsilon attacks (n={n}): robust accuracy "
                     f"rises with epsilon by more than {material(n)} examples: " + "; ".join(rises)
                     + ": the attack fails at larger epsilon (gradient masking? step size?)")
    return Check("monotone_in_epsilon", Status.PASS, f"independent per-epsilon attacks (n={n}): robust accuracy never "
                 f"rises with epsilon by more than {material(n)} examples (largest rise {largest})")


def check_pgd_vs_fgsm(table: pd.DataFrame | None, attacks: Sequence[AttackConfig]) -> Check:
    names = set(table["attack"]) if table is not None else set()
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


def stronger(cfg: AttackConfig) -> AttackConfig:
    """Twice the steps at half the step size (the same total travel, finer), and at least 3 restarts where
    the attack has a random start."""
    s = cfg.settings()
    kw: dict = {"steps": 2 * s["steps"]}
    if "step_size" in s:
        kw["step_size"] = s["step_size"] / 2
    if "random_start" in s:
        kw.update(random_start=True, restarts=max(3, cfg.restarts + 2))
    return replace(cfg, **kw)


def check_convergence(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig,
                      per_eps: RobustnessResult, seed: int, batch_size: int = 500) -> Check:
    """A paired comparison on the same examples and seed: the stronger attack (`stronger`) runs on the samples
    the attack left standing, at the epsilon where its accuracy is nearest 0.5; the examples it newly breaks are
    real adversarial examples the evaluation missed. WARN when they exceed max(2, 1 % of n)."""
    samples = per_eps.samples[(per_eps.samples["attack"] == cfg.name) & (per_eps.samples["epsilon"] > 0)]
    if samples.empty:
        return Check("attack_converged", Status.SKIP, f"{cfg.name}: no positive epsilon in the grid")
    acc = samples.groupby("epsilon")["correct"].mean()
    eps = float((acc - 0.5).abs().idxmin())  # most informative point
    rows = samples[samples["epsilon"] == eps].sort_values("index")
    standing = torch.as_tensor(rows["index"].to_numpy()[rows["correct"].to_numpy()], device=x.device)
    strong = stronger(cfg)
    newly = 0
    if len(standing):
        result = evaluate_robustness(model, x[standing], y[standing], attacks=[strong], epsilons=[eps],
                                     curve="per-epsilon", seed=seed, batch_size=batch_size)
        newly = int((~result.samples["correct"]).sum())
    s = strong.settings()
    restarts = f" x {strong.restarts} restarts" if strong.restarts > 1 else ""
    detail = (f"{cfg.name} at eps {eps:g} (n={len(y)}): {cfg.settings()['steps']} steps leave {len(standing)} standing; "
              f"{s['steps']} steps{restarts} (same examples, same seed) break {newly} of them "
              f"(threshold: more than {material(len(y))} = max(2, 1 % of n))")
    if newly > material(len(y)):
        return Check("attack_converged", Status.WARN, detail + ": the attack has not converged; use more steps/restarts")
    return Check("attack_converged", Status.PASS, detail)


def check_unbounded(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, batch_size: int = 500) -> Check:
    """With epsilon = 1 (the whole pixel range) a working attack reaches about 0 % (Carlini et al. 2019):
    PASS at most 1 %, WARN up to chance / 2, FAIL above.

    No random start: from a uniform start at epsilon 1 the inputs are noise, and low accuracy would follow
    whether or not the gradients work."""
    classes = predict(model, x[:1]).shape[1]
    cfg = AttackConfig("pgd", steps=100, step_size=0.05, random_start=False)
    result = evaluate_robustness(model, x, y, attacks=[cfg], epsilons=[1.0], seed=seed, batch_size=batch_size)
    acc = float(result.table["robust_accuracy"].iloc[-1])
    chance = 1.0 / classes
    said = (f"PGD-100 at epsilon 1 (no random start) leaves accuracy {acc:.3f} (n={len(y)}; "
            f"chance 1/classes = {chance:.3f})")
    if acc > chance / 2:
        return Check("unbounded_attack", Status.FAIL, f"{said}, above chance/2: the attack is failing (gradient "
                     "masking?), so bounded results overstate robustness")
    if acc > TOLERANCE:
        return Check("unbounded_attack", Status.WARN, f"{said}, above 1 %: some examples resist an unbounded attack "
                     "(masked gradients on part of the input space?)")
    return Check("unbounded_attack", Status.PASS, f"{said}, at most 1 %")
