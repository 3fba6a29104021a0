"""The Setup section of a report: dataset, n, each model's training settings, every attack's settings (steps, step
size, restarts, suite), seeds, threads and device, all read from the run's manifest (its resolved config).

Attack settings the config left at their defaults (steps = None, ...) are filled from the manifest's
`attack_settings` when the run recorded them, else resolved with this robustcnn's attack registry (which the
report then says, since defaults can change between versions).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from robustcnn.formatting import number
from robustcnn.results import markdown_table, read_manifest


def _g(value: Any) -> str:
    return "–" if value is None else number(value) if isinstance(value, (int, float)) else str(value)


def _adversarial(adv: dict[str, Any] | None) -> str:
    if not adv:
        return "none"
    step = (f"step {_g(adv.get('step_size'))}" if adv.get("step_size") is not None else
            "step 2.5·eps/steps" if adv.get("method", "pgd") == "pgd" else "step 1.25·eps")
    steps = f", {adv.get('steps')} steps" if adv.get("method", "pgd") == "pgd" else ""
    warm = f", eps warm-up {adv['warmup_epochs']} epochs" if adv.get("warmup_epochs") else ""
    return (f"{str(adv.get('method', 'pgd')).upper()} L-inf eps {_g(adv.get('epsilon'))}{steps}, {step}{warm}; "
            f"attacks made in {adv.get('attack_mode', 'eval')} mode")


def model_row(label: str, spec: dict[str, Any]) -> dict[str, str]:
    """One model's training settings (a ModelSpec as the manifest stores it)."""
    t = spec.get("train") or {}
    kwargs = ", ".join(f"{k}={v}" for k, v in (spec.get("kwargs") or {}).items())
    arch = (spec.get("arch") or spec.get("name") or label) + (f" ({kwargs})" if kwargs else "")
    augment = ", ".join(a for a, on in ((f"crop pad {t.get('crop_padding')}", t.get("crop_padding")),
                                        ("flip", t.get("flip"))) if on) or "none"
    return {"model": label, "architecture": arch, "epochs": _g(t.get("epochs")), "batch": _g(t.get("batch_size")),
            "optimizer": f"{t.get('optimizer', '–')}, lr {_g(t.get('lr')) if t.get('lr') is not None else 'default'}"
                         f", {t.get('schedule', 'constant')}" + (f", wd {_g(t['weight_decay'])}" if t.get("weight_decay")
                                                                  else ""),
            "augmentation": augment, "val fraction": _g(t.get("val_fraction") or 0),
            "adversarial training": _adversarial(t.get("adversarial")), "evaluated": str(spec.get("evaluate", "final"))}


def model_specs(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, ModelSpec) of every model a config trains: `models`, or `model` and the variants that replace it."""
    if isinstance(config.get("models"), list):
        return [(m.get("name", "model"), m) for m in config["models"] if isinstance(m, dict)]
    if not isinstance(config.get("model"), dict):
        return []
    own = [(v["name"], v["model"]) for v in config.get("variants") or [] if isinstance(v.get("model"), dict)]
    base = [] if own and len(own) == len(config.get("variants") or []) else [(config["model"].get("name", "model"),
                                                                             config["model"])]
    return base + own


def _resolve(attack: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """An attack's settings with defaults filled in by this robustcnn's registry; (as written, False) if it cannot."""
    try:
        from robustcnn.attacks import AttackConfig  # torch: only for runs that did not record their settings

        cfg = AttackConfig(attack["name"], steps=attack.get("steps"), step_size=attack.get("step_size"),
                           random_start=attack.get("random_start"), restarts=attack.get("restarts", 1),
                           options=attack.get("options") or {})
        return {"name": cfg.name, "threat_model": cfg.threat_model.value, "restarts": cfg.restarts,
                **cfg.settings()}, True
    except Exception:  # an attack registered by user code that is not loaded now, or no torch: say what we know
        return dict(attack), False


def attack_settings(manifest: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Every attack's resolved settings and where they came from."""
    if manifest.get("attack_settings"):
        return list(manifest["attack_settings"]), "recorded by the run"
    config = manifest.get("config") or {}
    listed = (config.get("evaluation") or {}).get("attacks")
    if listed is None and manifest.get("kind") == "benchmark":
        threat = config.get("threat") or "linf"
        norms = {"all": ["linf", "l2"], "linf": ["linf"], "l2": ["l2"]}.get(threat, [])  # corruptions: no attacks
        listed = [{"name": a} for a in config.get("attacks") or
                  [a for t in norms for a in _suite_attacks(config.get("suite") or "standard", t)]]
    if not listed:
        return [], ""
    resolved = [_resolve(a if isinstance(a, dict) else {"name": a}) for a in listed]
    source = ("defaults filled in by this robustcnn version's attack registry at redraw"
              if all(ok for _, ok in resolved) else "as configured (unset values: the attack's defaults)")
    return [r for r, _ in resolved], source


def _suite_attacks(suite: str, threat: str = "linf") -> list[str]:
    try:
        from robustcnn.suites import resolve_suite

        return [a.name for a in resolve_suite(suite, threat)]
    except Exception:
        return [suite]


def attack_row(a: dict[str, Any], suite: str) -> dict[str, str]:
    threat = {"linf": "L-inf", "l2": "L2"}.get(str(a.get("threat_model")), _g(a.get("threat_model")))
    step = a.get("step_size")
    extra = ", ".join(f"{k}={v}" for k, v in a.items()
                      if k not in ("name", "threat_model", "restarts", "steps", "step_size", "random_start", "options"))
    return {"attack": a["name"], "threat model": threat, "steps": _g(a.get("steps")),
            "step size": f"{_g(step)}·eps" if isinstance(step, (int, float)) else "–",
            "random start": {True: "yes", False: "no"}.get(a.get("random_start"), "–"),
            "restarts": _g(a.get("restarts", 1)), "suite": suite,
            "other settings": extra or "–"}


def setup_section(run_dir: Path, n_lines: list[str], suite: str | None = None) -> list[str]:
    """## Setup, from the manifest; `n_lines` are the report's own sentences on which examples each number uses."""
    if not (run_dir / "manifest.json").exists():
        return ["## Setup", "", *n_lines, "", "(no manifest.json: training and attack settings unknown)", ""]
    m = read_manifest(run_dir)
    config = m.get("config") or {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {"dataset": config.get("dataset")}
    extras = [f"{k.replace('_', ' ')} {v}" for k, v in data.items()
              if k in ("train_subset", "label_noise", "randomization") and v not in (None, 0, 0.0, "none")]
    seeds = config.get("seeds", [m.get("seed")])
    lines = ["## Setup", "",
             f"- **Dataset**: {data.get('dataset')}" + (f" ({', '.join(extras)})" if extras else "") +
             (f", images resized to {config['image_size']}" if config.get("image_size") else ""),
             *[f"- {line}" for line in n_lines],
             f"- **Seeds**: {' '.join(str(s) for s in seeds) if isinstance(seeds, list) else seeds}",
             f"- **Device**: {m.get('device')}, torch {m.get('versions', {}).get('torch')}; **threads**: "
             f"{m.get('threads') if m.get('threads') is not None else 'not recorded'}", ""]
    models = [model_row(label, spec) for label, spec in model_specs(config)]
    if models:
        lines += ["Training settings:", "", markdown_table(pd.DataFrame(models)), ""]
    attacks, source = attack_settings(m)
    if attacks:
        label = suite or (config.get("evaluation") or {}).get("suite") or config.get("suite") or "explicit list"
        lines += [f"Attack settings ({source}; step size relative to epsilon):", "",
                  markdown_table(pd.DataFrame([attack_row(a, label) for a in attacks])), ""]
    return lines
