"""`robustcnn study adversarial`: train models (standard and adversarial), attack them over an epsilon grid,
lint the evaluation, and write tables, figures and a report.

From a notebook, `evaluate_model(model, data, ...)` gives the same tables for any model as DataFrames.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from robustcnn.attacks import AttackConfig, RobustnessResult, as_attack_config, evaluate_robustness, predict
from robustcnn.data import DataBundle
from robustcnn.errors import UsageError
from robustcnn.experiments.common import DataCache, DataSpec, ModelSpec, fit, save_training
from robustcnn.lint import lint_evaluation
from robustcnn.report import redraw
from robustcnn.results import RunFolder, atomic_write_bytes, write_table
from robustcnn.train import AdversarialTraining, TrainConfig, resolve_device


@dataclass(frozen=True)
class EvaluationConfig:
    """The attack grid. Robust accuracy is measured on the first n_examples of the test split (in order)."""

    attacks: list[AttackConfig] = field(default_factory=lambda: [AttackConfig("fgsm"), AttackConfig("pgd")])
    epsilons: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.15, 0.2, 0.3])
    n_examples: int = 500
    batch_size: int = 500
    lint: bool = True
    lint_examples: int = 200
    gallery: int = 6
    gallery_attack: str = "pgd"
    gallery_epsilon: float | None = None  # None: the largest epsilon in the grid

    def __post_init__(self) -> None:
        from robustcnn.attacks import check_epsilons
        check_epsilons(self.epsilons)
        if self.n_examples < 1 or self.batch_size < 1:
            raise UsageError("n_examples and batch_size must be at least 1")


def _default_models() -> list[ModelSpec]:
    # digits at 28x28: lenet5 trains in seconds; PGD-AT at eps 0.1 with 7 steps in about a minute on 2 cores
    standard = TrainConfig(epochs=15, batch_size=32, lr=3e-3)
    robust = TrainConfig(epochs=30, batch_size=32, lr=3e-3,
                         adversarial=AdversarialTraining(epsilon=0.1, steps=7, eval_examples=500, eval_steps=10))
    return [ModelSpec("lenet5", train=standard), ModelSpec("lenet5-pgd", arch="lenet5", train=robust)]


@dataclass(frozen=True)
class AdversarialStudyConfig:
    """Defaults: the CPU profile on the embedded digits (a few minutes on 2 cores)."""

    name: str = "digits-cpu"
    description: str = "lenet5 and a PGD-trained lenet5 on scikit-learn digits (28x28), FGSM and PGD-40"
    data: DataSpec = field(default_factory=DataSpec)
    seed: int = 0
    device: str = "auto"
    checkpoints: bool = True
    models: list[ModelSpec] = field(default_factory=_default_models)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        if not names or len(set(names)) != len(names):
            raise UsageError(f"models need distinct names, got {names}")


@dataclass
class Evaluation:
    """The tables of one model's evaluation, as DataFrames (the study writes these to CSV)."""

    clean: pd.DataFrame    # model, split, accuracy, n
    robust: pd.DataFrame   # model, attack, threat_model, epsilon, robust_accuracy, n
    samples: pd.DataFrame  # model + per-sample outcomes
    cost: pd.DataFrame     # model, attack, seconds, forward_passes, backward_passes
    lint: pd.DataFrame     # model, check, status, detail
    result: RobustnessResult


def evaluate_model(model: nn.Module, data: DataBundle, *, name: str = "model",
                   attacks: list[str | AttackConfig] | None = None, epsilons: list[float] | None = None,
                   n_examples: int = 500, batch_size: int = 500, lint: bool = True, lint_examples: int = 200,
                   seed: int = 0, keep_adversarials: int = 0,
                   clean_splits: tuple[str, ...] = ("train", "test")) -> Evaluation:
    """Clean accuracy (train and test), robust accuracy over attacks x epsilons and the lint, for any model.

    The model should be in eval mode (the lint FAILs a model in train mode) and on data's device.
    clean_splits: the splits whose whole clean accuracy goes in `clean` (the benchmark needs none).
    """
    defaults = EvaluationConfig()
    configs = [as_attack_config(a) for a in (attacks or defaults.attacks)]
    eps = list(epsilons if epsilons is not None else defaults.epsilons)
    n = min(n_examples, len(data.y_test))
    x, y = data.x_test[:n], data.y_test[:n]
    clean_rows = []
    splits = {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)}
    for split in clean_splits:
        xs, ys = splits[split]
        acc = (predict(model, xs).argmax(1) == ys).float().mean().item()
        clean_rows.append({"model": name, "split": split, "accuracy": acc, "n": len(ys)})
    result = evaluate_robustness(model, x, y, attacks=configs, epsilons=eps, batch_size=batch_size, seed=seed,
                                 keep_adversarials=keep_adversarials)
    lint_table = (lint_evaluation(model, x, y, attacks=configs, table=result.table, n=lint_examples, seed=seed)
                  if lint else pd.DataFrame(columns=["check", "status", "detail"]))

    def tag(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(model=name)[["model", *df.columns]]

    clean = pd.DataFrame(clean_rows, columns=["model", "split", "accuracy", "n"])
    return Evaluation(clean, tag(result.table), tag(result.samples), tag(result.cost),
                      tag(lint_table), result)


def run_adversarial_study(config: AdversarialStudyConfig, out: str | Path = "results", *,
                          progress: bool | None = None) -> Path:
    """Train every model of the config, evaluate each, and write `<out>/adversarial/<run-id>/`."""
    device = resolve_device(config.device)
    ev = config.evaluation
    if ev.gallery_attack not in {a.name for a in ev.attacks}:
        raise UsageError(f"gallery_attack '{ev.gallery_attack}' is not among the attacks "
                         f"({', '.join(a.name for a in ev.attacks)})")
    gallery_eps = ev.gallery_epsilon if ev.gallery_epsilon is not None else max(ev.epsilons)
    if gallery_eps not in ev.epsilons:
        raise UsageError(f"gallery_epsilon {gallery_eps} is not in the epsilon grid {ev.epsilons}")
    cache = DataCache(config.data, seed=config.seed, device=device)
    with RunFolder(out, "adversarial", config=config, seed=config.seed, device=str(device),
                   on_finish=lambda path: redraw(path, kind="adversarial")) as run:
        evaluations, gallery = [], {}
        for spec in config.models:
            data = cache.for_model(spec.architecture)
            model, trained = fit(spec, data, seed=config.seed, device=device, progress=progress)
            save_training(run.path, spec.name, trained, checkpoints=config.checkpoints)
            evaluation = evaluate_model(model, data, name=spec.name, attacks=ev.attacks, epsilons=ev.epsilons,
                                        n_examples=ev.n_examples, batch_size=ev.batch_size, lint=ev.lint,
                                        lint_examples=ev.lint_examples, seed=config.seed, keep_adversarials=ev.gallery)
            evaluations.append(evaluation)
            if ev.gallery:
                gallery[spec.name] = (model, data, evaluation.result.adversarials[(ev.gallery_attack, gallery_eps)])
        for table, title in (("clean", "Clean accuracy"), ("robust", "Robust accuracy"), ("lint", "Evaluation lint"),
                             ("cost", "Attack cost"), ("samples", None)):
            df = pd.concat([getattr(e, table) for e in evaluations], ignore_index=True)
            name = {"clean": "clean_accuracy", "robust": "robust_accuracy", "cost": "attack_cost",
                    "samples": "robust_samples"}.get(table, table)
            write_table(run.path, name, df, title=title, markdown=title is not None)
        if gallery:
            _save_gallery(run.path / "data" / "gallery.npz", gallery, ev.gallery_attack, gallery_eps)
    return run.path


def _save_gallery(path: Path, gallery: dict[str, tuple[nn.Module, DataBundle, torch.Tensor]], attack: str,
                  epsilon: float) -> None:
    """Arrays for the adversarial-example figure, so `robustcnn report` can redraw it without torch."""
    arrays: dict[str, np.ndarray] = {"attack": np.array(attack), "epsilon": np.array(epsilon),
                                     "models": np.array(list(gallery))}
    for name, (model, data, adv) in gallery.items():
        k = len(adv)
        x = data.x_test[:k]
        with torch.no_grad():
            clean_p = torch.softmax(model(x), 1).cpu()
            adv_p = torch.softmax(model(adv.to(x.device)), 1).cpu()
        arrays.update({f"x__{name}": x.cpu().numpy(), f"adv__{name}": adv.numpy(),
                       f"labels__{name}": data.y_test[:k].cpu().numpy(),
                       f"clean_pred__{name}": clean_p.argmax(1).numpy(), f"clean_conf__{name}": clean_p.amax(1).numpy(),
                       f"adv_pred__{name}": adv_p.argmax(1).numpy(), f"adv_conf__{name}": adv_p.amax(1).numpy()})
        arrays["class_names"] = np.array(data.class_names)
    import io
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())

