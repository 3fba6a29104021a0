"""`robustcnn study lineage`: the classic CNN story side by side on one dataset. Rosenblatt's perceptron (1958),
Fukushima's Neocognitron (1980, no backpropagation), the seed's LeNet-5 and LeCun et al.'s LeNet-5 (1998),
and alexnet_cifar (2012) where a config asks for it: year, parameters, training rule, training seconds,
clean test accuracy, FGSM/PGD robust accuracy and accuracy under random shifts of up to 2 pixels (the invariance
study's 'shift' claim, robustcnn.invariance.transform_accuracy with the same seed scheme), plus the anatomy
(kernels and feature maps, clean beside adversarial) of every model that has convolution or pooling layers.

Defaults: the CPU profile on scikit-learn's digits at 28x28; studies/lineage-mnist.toml is the MNIST profile.
Every model sees the data at the same size (its fixed input size, else `image_size`), so one epsilon means one
thing across the table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from robustcnn.anatomy import check_anatomy_index, save_study_anatomy, write_growth_table
from robustcnn.data import DataBundle
from robustcnn.errors import UsageError
from robustcnn.evaluation import evaluate_model
from robustcnn.experiments.adversarial import EvaluationConfig
from robustcnn.experiments.common import DataCache, DataSpec, ModelSpec, restore_model, save_training, train_models, unit_counts
from robustcnn.invariance import transform_accuracy
from robustcnn.learning_rules import learning_rule_of
from robustcnn.models import count_parameters
from robustcnn.progress import track
from robustcnn.report import redraw
from robustcnn.results import RunFolder, write_table
from robustcnn.sweep import Executor, check_placement
from robustcnn.train import TrainConfig, resolve_device
from robustcnn.transforms import Transform
from robustcnn.units import BlobStore, Units

SHIFT_PIXELS = 2  # the invariance study's 'shift' claim: random integer shifts, dx and dy each within +-2 px
SHIFT_COLUMN = f"shift{SHIFT_PIXELS}_accuracy"
YEARS = {"perceptron": 1958, "neocognitron": 1980, "lenet5": 1998, "lenet5_1998": 1998, "alexnet_cifar": 2012}


def _default_models() -> list[ModelSpec]:
    # digits (1,297 training images) at 28x28: each trains in seconds to a minute on 2 cores
    return [
        ModelSpec("perceptron", train=TrainConfig(epochs=20, batch_size=32)),
        ModelSpec("neocognitron", train=TrainConfig(epochs=2, batch_size=64)),
        ModelSpec("lenet5", train=TrainConfig(epochs=15, batch_size=32, lr=3e-3)),
        ModelSpec("lenet5_1998", train=TrainConfig(epochs=20, batch_size=32, schedule="cosine")),
    ]


def _default_evaluation() -> EvaluationConfig:
    return EvaluationConfig(epsilons=[0.0, 0.05, 0.1, 0.15, 0.2, 0.3], n_examples=500, gallery=0)


@dataclass(frozen=True)
class LineageStudyConfig:
    """anatomy_index: the test image whose feature maps are drawn for every CNN (-1: no anatomy figures);
    anatomy_epsilon: the PGD epsilon of its adversarial example (L-inf, fraction of the pixel range).
    executor / workers / address: where the models train (robustcnn.sweep), as in the adversarial study."""

    name: str = "digits-cpu"
    description: str = "perceptron, neocognitron, lenet5 and lenet5_1998 on scikit-learn digits (28x28)"
    data: DataSpec = field(default_factory=DataSpec)
    image_size: int = 28
    seed: int = 0
    device: str = "auto"
    checkpoints: bool = True
    models: list[ModelSpec] = field(default_factory=_default_models)
    evaluation: EvaluationConfig = field(default_factory=_default_evaluation)
    anatomy_index: int = 0
    anatomy_epsilon: float = 0.1
    executor: Executor = Executor.LOCAL
    workers: int = 1
    address: str | None = None

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        if not names or len(set(names)) != len(names):
            raise UsageError(f"models need distinct names, got {names}")
        check_placement(self.executor, self.workers, self.address)
        if self.image_size < 8:
            raise UsageError(f"image_size must be at least 8, got {self.image_size}")
        if self.anatomy_index < -1:
            raise UsageError(f"anatomy_index must be a test image index, or -1 for no anatomy figures; got "
                             f"{self.anatomy_index}")
        if not 0 <= self.anatomy_epsilon <= 1:
            raise UsageError(f"anatomy_epsilon must be in [0, 1] (a fraction of the pixel range), got "
                             f"{self.anatomy_epsilon}")


def _rule(model: torch.nn.Module, spec: ModelSpec) -> str:
    rule = learning_rule_of(model)
    if rule != "backpropagation":
        return rule
    t = spec.train
    return f"backpropagation ({getattr(t.optimizer, 'value', t.optimizer)}, {t.epochs} epochs, batch {t.batch_size})"


def run_lineage_study(config: LineageStudyConfig, out: str | Path = "results", *, progress: bool | None = None) -> Path:
    """Train every model of the config by its own rule, evaluate each, write `<out>/lineage/<run-id>/`.

    Resumable as the adversarial study is: each trained model and each model x attack and lint is a unit in
    `<out>/.sweep-store/lineage/`; the same study into the same `out` after a kill reuses the finished units."""
    device = resolve_device(config.device)
    ev = config.evaluation
    cache = DataCache(config.data, seed=config.seed, device=device, image_size=config.image_size)
    for spec in config.models:  # before any training
        check_anatomy_index(config.anatomy_index, cache.for_model(spec.architecture))
    store = BlobStore(Path(out) / ".sweep-store" / "lineage")
    with RunFolder(out, "lineage", config=config, seed=config.seed, device=str(device),
                   on_finish=lambda path: redraw(path, kind="lineage")) as run:
        trained_units = train_models(config.models, config.data, seed=config.seed, device=device, store=store,
                                     executor=config.executor, workers=config.workers, address=config.address,
                                     image_size=config.image_size, progress=progress)
        units = Units(store)
        rows, evaluations, growth = [], [], []
        for spec, record in track(list(zip(config.models, trained_units)), "lineage", describe=lambda m: m[0].name,
                                  enabled=progress):  # a line per model
            data = cache.for_model(spec.architecture)
            model, trained = restore_model(spec, record, data, seed=config.seed, device=device)
            save_training(run.path, spec.name, trained, checkpoints=config.checkpoints)
            e = evaluate_model(model, data, name=spec.name, attacks=ev.attacks, epsilons=ev.epsilons,
                               curve=ev.curve, n_examples=ev.n_examples, batch_size=ev.batch_size, lint=ev.lint,
                               lint_examples=ev.lint_examples, seed=config.seed,
                               units=units.bind(model=record["point_id"]))
            evaluations.append(e)
            robust = e.robust[e.robust["epsilon"] == max(ev.epsilons)].set_index("attack")["robust_accuracy"]
            clean = e.clean.set_index("split")["accuracy"]
            rows.append({"model": spec.name, "architecture": spec.architecture,
                         "year": YEARS.get(spec.architecture, ""), "input": f"{data.channels}x{data.image_size}x"
                         f"{data.image_size}", "parameters": count_parameters(model, trainable_only=False),
                         "training_rule": _rule(model, spec), "train_seconds": float(trained.history["seconds"].sum()),
                         "train_accuracy": clean.get("train"), "test_accuracy": clean.get("test"),
                         **{f"{a}_eps{max(ev.epsilons):g}": v for a, v in robust.items()},
                         SHIFT_COLUMN: shift_accuracy(model, data, ev, seed=config.seed),
                         "lint": ", ".join(f"{k} {v}" for k, v in e.lint["status"].value_counts().items()) or "off"})
            if config.anatomy_index >= 0:  # None for the perceptron: no conv or pooling layer to show
                table = save_study_anatomy(run.path, spec.name, model, data, index=config.anatomy_index,
                                           epsilon=config.anatomy_epsilon, seed=config.seed)
                growth += [table] if table is not None else []
        write_table(run.path, "lineage", pd.DataFrame(rows), title="Lineage: clean accuracy (eval mode) on the whole "
                    f"train and test splits; robust accuracy ({ev.curve}) at the largest epsilon and {SHIFT_COLUMN} "
                    f"(one random shift of up to {SHIFT_PIXELS} px per image) on the first {ev.n_examples} test "
                    "images; lint verdicts")
        for table, title in (("robust", "Robust accuracy"), ("clean", "Clean accuracy"), ("lint", "Evaluation lint"),
                             ("cost", "Attack cost")):
            df = pd.concat([getattr(e, table) for e in evaluations], ignore_index=True)
            name = {"robust": "robust_accuracy", "clean": "clean_accuracy", "cost": "attack_cost"}.get(table, table)
            write_table(run.path, name, df, title=title)
        write_growth_table(run.path, growth, index=config.anatomy_index, epsilon=config.anatomy_epsilon)
        run.extra["units"] = unit_counts(store, trained_units, units)
    return run.path


def shift_accuracy(model: torch.nn.Module, data: DataBundle, ev: EvaluationConfig, *, seed: int) -> float:
    """Accuracy under one random shift per image (dx, dy each an integer within +-SHIFT_PIXELS, black fill) on the
    first n_examples test images, the ones the attacks see: the invariance study's measure and draw (the same
    function, the same seed), so its 'shift' claim and this column are comparable."""
    n = min(ev.n_examples, len(data.y_test))
    table = transform_accuracy({"model": model}, data.x_test[:n], data.y_test[:n], Transform.TRANSLATE,
                               [SHIFT_PIXELS], seed=seed, batch_size=ev.batch_size, worst=False)
    return float(table["accuracy"].iloc[0])
