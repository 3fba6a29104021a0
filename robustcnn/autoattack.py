"""AutoAttack (Croce & Hein 2020) in the attack registry, run through the authors' own code (`pyautoattack`
0.2.0, the package RobustBench 1.1.1 uses).

    autoattack      the standard version: APGD-CE, APGD-T, FAB-T, Square, L-inf (autoattack-l2: L2)
    apgd-ce         APGD on the cross-entropy loss               (-l2: the L2 version of each)
    apgd-dlr        APGD on the DLR loss
    apgd-t          APGD on the targeted DLR loss, 9 target classes
    fab-t           targeted FAB, 9 target classes
    square          Square Attack, black-box, 5000 queries

Defaults are the standard version's (`AutoAttack(version="standard")`): 100 iterations, 1 restart, 9 target
classes (at most C - 1), 5000 Square queries with p_init 0.8. Settings: `steps` (APGD and FAB iterations), and as
options `n_restarts`, `n_target_classes`, `n_queries`, `p_init`, `seed` (the authors' names). The seed defaults to
one drawn from torch's generator when the attack is built, so the evaluation's seed decides it; the package
itself defaults to the clock (`seed=None`), and reseeds every component call with the same seed, as here.

The ensemble runs its components in the authors' order, each on the examples the earlier ones left standing,
exactly as `AutoAttack.run_standard_evaluation` does on one batch; the components are the package's classes,
called on the counted model (robustcnn.attacks.TorchModel, not foolbox's wrapper) so passes are still counted.

Before the first attack on a model, two checks that AutoAttack itself only warns about are errors here (a
number computed despite them would not mean what its label says):
- outputs that are probabilities (rows >= 0 summing to 1): the losses need logits;
- outputs that differ between two identical forward passes: the standard version assumes a deterministic
  model (a randomized defense needs an EOT attack, which this is not).
Each component reseeds torch's generator (the authors' design, for reproducibility); the caller's generator state
is restored afterwards.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

from robustcnn.attacks import ThreatModel, register_attack
from robustcnn.errors import UsageError

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")  # the standard version, in the authors' order
COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")
_AA_NORM = {ThreatModel.LINF: "Linf", ThreatModel.L2: "L2"}
_MIN_CLASSES = {"apgd-t": 4, "apgd-dlr": 3}  # the DLR losses read the 3rd (targeted: 4th) largest logit
_LOG = logging.getLogger("auto-attack")  # the logger the package's own AutoAttack class uses
Predict = Callable[[torch.Tensor], torch.Tensor]


def _positive_int(name: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"attack {name}: {key} must be a positive integer, got {value!r}")
    return value


class AutoAttackAdapter:
    """One registered AutoAttack attack: `attack(fmodel, x, y, epsilons=[...]) -> (raw, clipped, success)`.

    components: which of the authors' attacks run, in order, each on the examples still standing.
    """

    torch_model = True  # called with robustcnn.attacks.TorchModel (the counted model, no foolbox wrapper)

    def __init__(self, name: str, *, components: Sequence[str], norm: ThreatModel, steps: int = 100,
                 n_restarts: int = 1, n_target_classes: int = 9, n_queries: int = 5000, p_init: float = 0.8,
                 seed: int | None = None) -> None:
        self.name, self.components, self.norm = name, tuple(components), norm
        self.steps = _positive_int(name, "steps", steps)
        self.n_restarts = _positive_int(name, "n_restarts", n_restarts)
        self.n_target_classes = _positive_int(name, "n_target_classes", n_target_classes)
        self.n_queries = _positive_int(name, "n_queries (the Square query budget)", n_queries)
        if isinstance(p_init, bool) or not isinstance(p_init, (int, float)) or not 0 < p_init <= 1:
            raise UsageError(f"attack {name}: p_init must be in (0, 1], got {p_init!r}")
        if seed is None:  # drawn from torch's generator, which the evaluation seeds before building each attack
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UsageError(f"attack {name}: seed must be an integer, got {seed!r}")
        self.p_init, self.seed = float(p_init), seed
        self._checked: set[int] = set()  # ids of the models already checked (logits, determinism)

    def __call__(self, fmodel: Predict, x: torch.Tensor, y: torch.Tensor, *,
                 epsilons: Sequence[float]) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Attack x (N, C, H, W) in [0,1] at each epsilon; success (E, N) is True where clipped[k] is misclassified
        (examples misclassified clean count as successes, as in foolbox, and are not attacked)."""
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            logits = fmodel(x)
            if id(fmodel) not in self._checked:
                self._check_model(fmodel, x, logits)
                self._checked.add(id(fmodel))
            correct = logits.argmax(1) == y
            runs = [self._run(fmodel, x, y, correct, float(eps), logits.shape[1]) for eps in epsilons]
        raws = [adv for adv, _ in runs]
        clipped = [_clip(adv, x, float(eps), self.norm) for adv, eps in zip(raws, epsilons)]
        # success as the components judged it; the evaluation re-verifies every success on the clipped images
        return raws, clipped, torch.stack([broken for _, broken in runs])

    def _run(self, predict: Predict, x: torch.Tensor, y: torch.Tensor, correct: torch.Tensor, eps: float,
             n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One epsilon: the components in order on the examples still standing (run_standard_evaluation's loop).
        Returns (x with the adversarial examples found in place of the broken rows, broken (N,) bool)."""
        adv, standing = x.clone(), correct.clone()
        if eps == 0:  # no perturbation is allowed: robust accuracy is clean accuracy
            return adv, ~standing
        for component in self.components:
            idx = torch.nonzero(standing).flatten()
            if len(idx) == 0:
                break
            attack = self._component(component, predict, eps, n_classes, x.device)
            adv_curr = attack.perturb(x[idx].clone(), y[idx].clone())
            fooled = predict(adv_curr).argmax(1) != y[idx]
            adv[idx[fooled]] = adv_curr[fooled].detach()
            standing[idx[fooled]] = False
        return adv, ~standing

    def _component(self, component: str, predict: Predict, eps: float, n_classes: int, device: torch.device) -> Any:
        """The authors' attack object, configured as AutoAttack(version="standard") configures it."""
        from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
        from pyautoattack.fab_pt import FABAttack_PT
        from pyautoattack.square import SquareAttack

        norm, targets = _AA_NORM[self.norm], min(self.n_target_classes, n_classes - 1)
        common = {"norm": norm, "eps": eps, "seed": self.seed, "n_restarts": self.n_restarts, "device": device}
        if component in ("apgd-ce", "apgd-dlr"):
            return APGDAttack(predict, n_iter=self.steps, loss=component[5:], eot_iter=1, rho=0.75, logger=_LOG,
                              **common)
        if component == "apgd-t":
            return APGDAttack_targeted(predict, n_iter=self.steps, n_target_classes=targets, eot_iter=1, rho=0.75,
                                       logger=_LOG, **common)
        if component == "fab-t":
            return FABAttack_PT(predict, n_iter=self.steps, targeted=True, n_target_classes=targets, **common)
        return SquareAttack(predict, n_queries=self.n_queries, p_init=self.p_init, resc_schedule=False, **common)

    def _check_model(self, predict: Predict, x: torch.Tensor, logits: torch.Tensor) -> None:
        """The pre-attack checks of the module docstring, on this (first) batch."""
        if logits.ndim != 2:
            raise UsageError(f"attack {self.name}: the model must return (N, classes) scores, got shape "
                             f"{tuple(logits.shape)}")
        if (logits >= 0).all() and torch.allclose(logits.sum(1), torch.ones_like(logits[:, 0]), atol=1e-4):
            raise UsageError(f"attack {self.name}: the model returns probabilities (every row >= 0 and sums to 1); "
                             "AutoAttack's losses need logits: return the scores before the softmax")
        need = max(_MIN_CLASSES.get(c, 2) for c in self.components)
        if logits.shape[1] < need:
            raise UsageError(f"attack {self.name}: its DLR loss needs at least {need} classes, the model has "
                             f"{logits.shape[1]}; use apgd-ce, fab-t, square or pgd")
        again = predict(x)
        # AutoAttack's own test (checks.check_randomized): L2-normalized outputs differing by more than 1e-4
        unit = [o / (o.flatten(1).norm(dim=1, keepdim=True) + 1e-10) for o in (logits, again)]
        diff = (unit[0] - unit[1]).flatten(1).norm(dim=1).max().item()
        if diff > 1e-4:
            raise UsageError(f"attack {self.name}: the model's output changes between two identical forward passes "
                             f"(normalized difference {diff:.2g}); AutoAttack's standard version needs a deterministic "
                             "model: call model.eval() and remove test-time randomness")


def _clip(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: ThreatModel) -> torch.Tensor:
    """adv projected into the epsilon ball around x and into [0,1] (the authors' attacks already stay inside;
    this removes float round-off at the boundary)."""
    delta = adv - x
    if norm == ThreatModel.LINF:
        delta = delta.clamp(-eps, eps)
    else:
        size = delta.flatten(1).norm(dim=1).view(-1, *[1] * (x.ndim - 1))
        delta = delta * torch.where(size > eps, eps / size.clamp_min(1e-12), torch.ones_like(size))
    return (x + delta).clamp(0, 1)


def _factory(name: str, components: Sequence[str], norm: ThreatModel, **settings: Any) -> AutoAttackAdapter:
    try:
        import pyautoattack  # noqa: F401
    except ImportError:
        raise UsageError(f"attack {name} needs the pyautoattack package: pip install pyautoattack==0.2.0") from None
    return AutoAttackAdapter(name, components=components, norm=norm, **settings)


_OPTIONS = {"apgd-ce": ("n_restarts", "seed"), "apgd-dlr": ("n_restarts", "seed"),
            "apgd-t": ("n_restarts", "n_target_classes", "seed"), "fab-t": ("n_restarts", "n_target_classes", "seed"),
            "square": ("n_restarts", "n_queries", "p_init", "seed")}
_DESCRIPTIONS = {
    "apgd-ce": "APGD on the cross-entropy, step-size free (Croce & Hein 2020; authors' code)",
    "apgd-dlr": "APGD on the DLR loss, shift- and scale-invariant (Croce & Hein 2020; authors' code)",
    "apgd-t": "APGD on the targeted DLR loss, 9 target classes (Croce & Hein 2020; authors' code)",
    "fab-t": "targeted FAB, minimal-norm boundary attack, 9 targets (Croce & Hein 2020; authors' code)",
    "square": "Square Attack, black-box random search, 5000 queries (Andriushchenko et al. 2020; authors' code)",
}


def _register() -> None:
    for norm, suffix, label in ((ThreatModel.LINF, "", "L-inf"), (ThreatModel.L2, "-l2", "L2")):
        name = f"autoattack{suffix}"
        register_attack(name, norm=norm, steps=100, options=("n_restarts", "n_target_classes", "n_queries", "seed"),
                        description=f"{label} AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square (Croce & Hein "
                                    "2020; pyautoattack, as RobustBench)")(partial(_factory, name, STANDARD, norm))
        for component in COMPONENTS:
            name = f"{component}{suffix}"
            defaults = {} if component == "square" else {"steps": 100}
            register_attack(name, norm=norm, options=_OPTIONS[component], **defaults,
                            description=f"{label} {_DESCRIPTIONS[component]}")(partial(_factory, name, (component,),
                                                                                         norm))


_register()
