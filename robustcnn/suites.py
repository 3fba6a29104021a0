"""Named attack suites: which attacks produce a reported number, per threat model.

    resolve_suite("standard", threat_model="linf")   # [AttackConfig("autoattack")]

- quick:    FGSM + PGD-40 (L2: FGM + L2 PGD-40); a minute on CPU, a lower bound on the attack strength the
            field expects, fine for teaching and smoke runs.
- standard: AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square), what RobustBench reports.
- full:     standard + foolbox's PGD-40 and the minimal-norm attack of the threat model (DeepFool for L-inf,
            Carlini & Wagner for L2); the worst case over all of them is the strongest number we can give.
Each suite's attacks keep their registry names (and so their default settings), so a table row says which
attack produced it; a report says which suite chose the attacks.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from robustcnn.attacks import AttackConfig, ThreatModel
from robustcnn.errors import UsageError, check_choice


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    attacks: dict[ThreatModel, tuple[str, ...]]  # registry names, in the order they run


SUITES: dict[str, Suite] = {s.name: s for s in (
    Suite("quick", "FGSM + PGD-40 (L2: FGM + L2 PGD-40): fast, weaker than the field's standard",
          {ThreatModel.LINF: ("fgsm", "pgd"), ThreatModel.L2: ("l2-fgm", "l2-pgd")}),
    Suite("standard", "AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square), as RobustBench reports",
          {ThreatModel.LINF: ("autoattack",), ThreatModel.L2: ("autoattack-l2",)}),
    Suite("full", "AutoAttack standard + PGD-40 + a minimal-norm attack (DeepFool L-inf, C&W L2); worst case over all",
          {ThreatModel.LINF: ("autoattack", "pgd", "deepfool"), ThreatModel.L2: ("autoattack-l2", "l2-pgd", "cw-l2")}),
)}


def resolve_suite(name: str, threat_model: str | ThreatModel = ThreatModel.LINF) -> list[AttackConfig]:
    """The attacks of suite `name` for one threat model ("linf" or "l2"), with their default settings."""
    if not isinstance(name, str):
        raise UsageError(f"an attack suite is a name, got {name!r}; choose from: {', '.join(SUITES)}")
    check_choice("attack suite", name, SUITES)
    threat = ThreatModel(check_choice("threat model", str(getattr(threat_model, "value", threat_model)),
                                      [t.value for t in ThreatModel]))
    return [AttackConfig(attack) for attack in SUITES[name].attacks[threat]]


def list_suites() -> list[str]:
    return list(SUITES)


def _same(a: AttackConfig, b: AttackConfig) -> bool:
    return a.name == b.name and a.restarts == b.restarts and a.settings() == b.settings()


def suite_label(attacks: Sequence[AttackConfig], suite: str | None = None) -> str:
    """What a report calls the attacks that produced a number: the suite's name when given, or when `attacks` are
    exactly one suite's attacks with its settings (so `-s evaluation.attacks=[...]` equal to `quick` says quick);
    otherwise the attack names joined by '+' (an explicit list is its own suite)."""
    if suite is not None:
        return suite
    for name, s in SUITES.items():
        for listed in s.attacks.values():
            if len(listed) == len(attacks) and all(_same(AttackConfig(n), a) for n, a in zip(listed, attacks)):
                return name
    return "+".join(a.name for a in attacks)

