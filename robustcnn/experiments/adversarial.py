"""`robustcnn study adversarial`: train models (standard and adversarial), attack them over an epsilon grid,
lint the evaluation, and write tables, figures and a report.

From a notebook, `robustcnn.evaluate_model(model, data, ...)` (robustcnn.evaluation) gives the same tables for
any model as DataFrames. Like `study lineage`, the study draws the anatomy of one test image (anatomy_index) for
every model with convolution or pooling layers: kernels and feature maps, clean beside its PGD example.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from robustcnn.anatomy import check_anatomy_index, save_study_anatomy, write_growth_table
from robustcnn.attacks import AttackConfig, ThreatModel, check_budget
from robustcnn.data import DataBundle
from robustcnn.errors import UsageError
from robustcnn.evaluation import DEFAULT_ATTACKS, DEFAULT_EPSILONS, Curve, Evaluation, as_curve, evaluate_model
from robustcnn.experiments import spread
from robustcnn.experiments.common import DataCache, DataSpec, ModelSpec, restore_model, save_training, train_models, unit_counts
from robustcnn.progress import track
from robustcnn.radius import radius_summary, robustness_radii
from robustcnn.report import redraw
from robustcnn.results import RunFolder, atomic_write_bytes, write_table
from robustcnn.suites import resolve_suite, suite_label
from robustcnn.sweep import Executor, check_placement
from robustcnn.train import AdversarialTraining, TrainConfig, resolve_device
from robustcnn.units import BlobStore, Units, examples_fingerprint, record_tensor, run_into_memory, spread_units, tensor_record


@dataclass(frozen=True)
class EvaluationConfig:
    """The attack grid. Robust accuracy is measured on the first n_examples of the test split (in order).

    curve: "cumulative" (a sample broken at a smaller epsilon counts as broken at every larger one; the fast
    default) or "per-epsilon" (every epsilon attacked afresh); see robustcnn.evaluation.
    Epsilons are checked here for what needs no data (finite, >= 0, at most 1 for an L-inf attack) and
    against the image size before training (L2 budgets up to sqrt(C*H*W)).
    suite: a named attack suite (robustcnn.suites: quick, standard, full); when set it replaces `attacks` with its
    attacks for `threat_model`; None keeps the explicit `attacks`. Every table records the suite (`suite_label`: the
    suite's name, or the joined attack names for an explicit list that is no suite).
    gallery_attack: None picks pgd when it is in the grid, else the first attack.
    """

    attacks: list[AttackConfig] = field(default_factory=lambda: [AttackConfig(a) for a in DEFAULT_ATTACKS])
    epsilons: list[float] = field(default_factory=lambda: list(DEFAULT_EPSILONS))
    curve: str = Curve.CUMULATIVE.value
    n_examples: int = 500
    batch_size: int = 500
    lint: bool = True
    lint_examples: int = 200
    gallery: int = 6
    gallery_attack: str | None = None
    gallery_epsilon: float | None = None  # None: the largest epsilon in the grid
    suite: str | None = None
    radius: bool | None = None  # FMN radii of the n_examples (tables/radii.csv); None: on for standard and full
    strong_lint: bool | None = None  # the lint's cross-checks (lint_strength); None: on for standard and full
    threat_model: str = "linf"  # which of the suite's attack lists (read only with a suite)

    @property
    def radii(self) -> bool:
        """Whether the study measures per-example FMN radii: radius, else on for the standard and full suites
        (the quick digits profile stays a one-minute job)."""
        return self.radius if self.radius is not None else suite_label(self.attacks, self.suite) in ("standard", "full")

    @property
    def cross_checks(self) -> bool:
        """Whether the lint tests the attacks against each other: strong_lint, else on for standard and full."""
        return self.strong_lint if self.strong_lint is not None else suite_label(self.attacks, self.suite) in (
            "standard", "full")

    @property
    def gallery_name(self) -> str:
        """The gallery's attack: gallery_attack, else pgd when in the grid, else the first attack."""
        names = [a.name for a in self.attacks]
        return self.gallery_attack or ("pgd" if "pgd" in names else names[0])

    def __post_init__(self) -> None:
        if self.suite is not None:
            # the suite replaces the attack list, so `-s evaluation.suite=standard` works on any profile
            object.__setattr__(self, "attacks", resolve_suite(self.suite, self.threat_model))
        if not self.attacks:
            raise UsageError("evaluation.attacks is empty; name at least one attack (see `robustcnn attacks`)")
        names = [a.name for a in self.attacks]
        if len(set(names)) != len(names):
            raise UsageError(f"evaluation.attacks names an attack twice ({', '.join(names)}); give each once")
        check_budget(self.epsilons, self.attacks)
        as_curve(self.curve)
        for key, low in (("n_examples", 1), ("batch_size", 1), ("lint_examples", 1), ("gallery", 0)):
            if getattr(self, key) < low:
                raise UsageError(f"evaluation.{key} must be at least {low}, got {getattr(self, key)}")
        if self.gallery and self.gallery_attack is not None and self.gallery_attack not in names:
            raise UsageError(f"gallery_attack '{self.gallery_attack}' is not among the attacks ({', '.join(names)})")
        if self.gallery and self.gallery_epsilon is not None and self.gallery_epsilon not in self.epsilons:
            raise UsageError(f"gallery_epsilon {self.gallery_epsilon} is not in the epsilon grid {self.epsilons}")


def _default_models() -> list[ModelSpec]:
    # digits at 28x28: lenet5 trains in seconds. PGD-AT at eps 0.1 with 3 steps (step 2.5 eps / 3) for 15 epochs
    # takes about 15 s on one core: it scored 77.6 % under PGD-40 at eps 0.1 where 7 steps for 30 epochs (the
    # previous profile, 73 s) scored 79.4 %, within the interval of 500 examples. The per-epoch robust test
    # accuracy uses 200 examples: it is a training curve, not a reported number, and cost as much as training.
    standard = TrainConfig(epochs=15, batch_size=32, lr=3e-3)
    robust = TrainConfig(epochs=15, batch_size=32, lr=3e-3,
                         adversarial=AdversarialTraining(epsilon=0.1, steps=3, eval_examples=200, eval_steps=10))
    return [ModelSpec("lenet5", train=standard), ModelSpec("lenet5-pgd", arch="lenet5", train=robust)]


@dataclass(frozen=True)
class AdversarialStudyConfig:
    """Defaults: the CPU profile on the embedded digits (a few minutes on 2 cores).

    executor / workers / address: where the models train and are evaluated (robustcnn.sweep: here, local worker
    processes, or Ray; robustcnn.experiments.spread): each model trains, and its attacks, lint and radii run, with
    the study's CPU thread count wherever they run, so the numbers do not depend on where. The gallery, the
    anatomy and the figures are made here. On 2 shared cores, 2 workers gained little (benchmarks/study_load.py:
    69 vs 74 s idle, 219 vs 228 s beside 4 busy processes): starting each worker costs a torch import.

    anatomy_index: the test image whose kernels and feature maps are drawn for every CNN, clean beside its PGD-40
    example (L-inf), as in `study lineage` (-1: no anatomy figures); anatomy_epsilon: that example's budget
    (fraction of the pixel range); None takes the middle positive epsilon of the grid (sorted, the upper middle
    of an even count: 0.15 for the digits grid, 8/255 for CIFAR-10's); a grid with no L-inf attack or no positive
    epsilon (an L2-only study) draws no anatomy unless anatomy_epsilon is set."""

    name: str = "digits-cpu"
    description: str = "lenet5 and a PGD-trained lenet5 on scikit-learn digits (28x28), FGSM and PGD-40"
    data: DataSpec = field(default_factory=DataSpec)
    seed: int = 0
    device: str = "auto"
    checkpoints: bool = True
    models: list[ModelSpec] = field(default_factory=_default_models)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    executor: Executor = Executor.LOCAL
    workers: int = 1
    address: str | None = None
    anatomy_index: int = 0
    anatomy_epsilon: float | None = None

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        if not names or len(set(names)) != len(names):
            raise UsageError(f"models need distinct names, got {names}")
        check_placement(self.executor, self.workers, self.address)
        if self.anatomy_index < -1:
            raise UsageError(f"anatomy_index must be a test image index, or -1 for no anatomy figures; got "
                             f"{self.anatomy_index}")
        if self.anatomy_epsilon is not None and not 0 < self.anatomy_epsilon <= 1:
            raise UsageError(f"anatomy_epsilon must be in (0, 1] (an L-inf budget, a fraction of the pixel range), got "
                             f"{self.anatomy_epsilon}")

    @property
    def anatomy_budget(self) -> float | None:
        """The anatomy's PGD epsilon: anatomy_epsilon, else the middle positive epsilon of an L-inf grid; None (no
        anatomy) for a grid without one, such as an L2-only study, unless anatomy_epsilon is set."""
        if self.anatomy_epsilon is not None:
            return self.anatomy_epsilon
        positive = sorted(e for e in self.evaluation.epsilons if e > 0)
        if not positive or all(a.threat_model != ThreatModel.LINF for a in self.evaluation.attacks):
            return None
        return positive[len(positive) // 2]


CLEAN_TITLE = "Clean accuracy (eval mode, the evaluated checkpoint, whole train and test splits)"


def run_adversarial_study(config: AdversarialStudyConfig, out: str | Path = "results", *,
                          progress: bool | None = None) -> Path:
    """Train every model of the config, evaluate each, and write `<out>/adversarial/<run-id>/`.

    Resumable: each trained model and each model x attack (over the epsilon grid), lint and radius set is a unit
    in `<out>/.sweep-store/adversarial/` (robustcnn.units), named by a hash of all it depends on; running the same
    study into the same `out` after a kill reuses the finished units and ends with the same tables."""
    device = resolve_device(config.device)
    ev = config.evaluation
    gallery_eps = ev.gallery_epsilon if ev.gallery_epsilon is not None else max(ev.epsilons)
    cache = DataCache(config.data, seed=config.seed, device=device)
    for spec in config.models:  # L2 budgets depend on the image size: check them before any training
        check_budget(ev.epsilons, ev.attacks, tuple(cache.for_model(spec.architecture).x_test.shape[1:]))
        check_anatomy_index(config.anatomy_index, cache.for_model(spec.architecture))
    store = BlobStore(Path(out) / ".sweep-store" / "adversarial")
    with RunFolder(out, "adversarial", config=config, seed=config.seed, device=str(device),
                   on_finish=lambda path: redraw(path, kind="adversarial")) as run:
        trained = train_models(config.models, config.data, seed=config.seed, device=device, store=store,
                               executor=config.executor, workers=config.workers, address=config.address,
                               progress=progress)
        units = Units(store)
        spread_counts = _spread_evaluations(config, trained, cache, units, device) if _spreads(config) else None
        evaluations, gallery, radius_frames, growth = [], {}, [], []
        for spec, record in track(list(zip(config.models, trained)), "adversarial", describe=lambda m: m[0].name,
                                  enabled=progress):  # a line per model
            data = cache.for_model(spec.architecture)
            model, result = restore_model(spec, record, data, seed=config.seed, device=device)
            save_training(run.path, spec.name, result, checkpoints=config.checkpoints)
            scope = units.bind(model=record["point_id"])  # the model's id holds its spec, data, seed, device, threads
            evaluation, radii = _evaluate(model, data, spec.name, ev, config.seed, scope)
            evaluations.append(evaluation)
            radius_frames += [radii] if radii is not None else []
            if ev.gallery:
                gallery[spec.name] = (model, data, evaluation.result.adversarials[(ev.gallery_name, gallery_eps)])
            if config.anatomy_index >= 0 and config.anatomy_budget is not None:  # one image, after every number
                table = save_study_anatomy(run.path, spec.name, model, data, index=config.anatomy_index,
                                           epsilon=config.anatomy_budget, seed=config.seed)
                growth += [table] if table is not None else []  # None: no conv or pooling layer (the report says)
        for table, title in (("clean", CLEAN_TITLE), ("robust", "Robust accuracy"), ("lint", "Evaluation lint"),
                             ("cost", "Attack cost"), ("samples", None)):
            df = pd.concat([getattr(e, table) for e in evaluations], ignore_index=True)
            if table in ("robust", "cost", "lint"):  # every number says which suite's attacks produced it
                df.insert(1, "suite", suite_label(ev.attacks, ev.suite))
            name = {"clean": "clean_accuracy", "robust": "robust_accuracy", "cost": "attack_cost",
                    "samples": "robust_samples"}.get(table, table)
            write_table(run.path, name, df, title=title, markdown=title is not None)
        if radius_frames:
            radii = pd.concat(radius_frames, ignore_index=True)
            write_table(run.path, "radii", radii, markdown=False)
            write_table(run.path, "radius_summary", radius_table(radii), title="Robustness radius (FMN)")
        if gallery:
            _save_gallery(run.path / "data" / "gallery.npz", gallery, ev.gallery_name, gallery_eps)
        if config.anatomy_index >= 0 and config.anatomy_budget is not None:
            write_growth_table(run.path, growth, index=config.anatomy_index, epsilon=config.anatomy_budget)
        run.extra["attack_settings"] = [{"name": a.name, "threat_model": a.threat_model.value, "restarts": a.restarts,
                                         **a.settings()} for a in ev.attacks]  # defaults resolved, for the report
        run.extra["units"] = unit_counts(store, trained, units, spread_counts)
    return run.path


def _evaluate(model: nn.Module, data: DataBundle, name: str, ev: EvaluationConfig, seed: int,
              units: Units, clean: bool = True) -> tuple[Evaluation, pd.DataFrame | None]:
    """One model's evaluation (attacks, lint) and radii as units: what the study's pass and its workers both run
    (clean=False: without the whole-split clean accuracy, which is no unit: the study's pass measures it)."""
    evaluation = evaluate_model(model, data, name=name, attacks=ev.attacks, epsilons=ev.epsilons, curve=ev.curve,
                                n_examples=ev.n_examples, batch_size=ev.batch_size, lint=ev.lint,
                                lint_examples=ev.lint_examples, seed=seed, keep_adversarials=ev.gallery,
                                strong_lint=ev.cross_checks, clean_splits=("train", "test") if clean else (),
                                units=units)
    return evaluation, (_radii(model, data, name, ev, seed, units) if ev.radii else None)


def _spreads(config: AdversarialStudyConfig) -> bool:
    return config.executor == Executor.RAY or config.workers > 1


def _spread_evaluations(config: AdversarialStudyConfig, trained: list[dict[str, Any]], cache: DataCache, units: Units,
                        device: torch.device) -> dict[str, Any]:
    """Each model's evaluation units computed in a worker (robustcnn.experiments.spread), unless all are stored."""
    ev, jobs, probes = config.evaluation, [], []
    for spec, record in zip(config.models, trained):
        scope, data = units.bind(model=record["point_id"]), cache.for_model(spec.architecture)
        model, _ = restore_model(spec, record, data, seed=config.seed, device=device)
        n = min(ev.n_examples, len(data.y_test))
        jobs.append({"model": spec, "data": config.data, "evaluation": ev, "seed": config.seed, "device": str(device),
                     "threads": torch.get_num_threads(), "record": spread.wire_record(record), "context": scope.context,
                     "store": str(Path(units.store.directory).resolve()),
                     "check": spread.outputs_check(model, data.x_test[:n], data.y_test[:n])})

        def evaluate(runner: Units, model: nn.Module = model, data: DataBundle = data, name: str = spec.name) -> object:
            return _evaluate(model, data, name, ev, config.seed, runner, clean=False)
        probes.append(lambda evaluate=evaluate, scope=scope: spread.all_stored(evaluate, scope))
    return spread_units(jobs, evaluation_job, units.store, probes, executor=config.executor, workers=config.workers,
                        address=config.address, label="evaluations", describe=lambda job: job["model"].name)


def evaluation_job(job: dict[str, Any]) -> dict[str, Any]:
    """One model's evaluation in a worker (module-level: spawned processes and Ray pickle it)."""
    from robustcnn.devices import apply_threads

    apply_threads(job["threads"])  # the study's count: the same float sums, the same numbers
    spec, device, ev = job["model"], resolve_device(job["device"]), job["evaluation"]
    data = DataCache(job["data"], seed=job["seed"], device=device).for_model(spec.architecture)
    model, _ = restore_model(spec, spread.unwire_record(job["record"]), data, seed=job["seed"], device=device)
    n = min(ev.n_examples, len(data.y_test))
    if not spread.same_outputs(job["check"], model, data.x_test[:n], data.y_test[:n]):
        raise UsageError(f"a worker sees other test examples or gets other outputs from {spec.name!r} than the study "
                         "(data or code that differ on that machine); run without --workers/--executor ray")
    return run_into_memory(job["context"], lambda runner: _evaluate(model, data, spec.name, ev, job["seed"], runner,
                                                             clean=False), job["store"])


def _radii(model: nn.Module, data: DataBundle, name: str, ev: EvaluationConfig, seed: int, units: Units) -> pd.DataFrame:
    """Per-example FMN radius (robustcnn.radius) on the same first n_examples the attacks see (a unit)."""
    n = min(ev.n_examples, len(data.y_test))
    x, y = data.x_test[:n], data.y_test[:n]
    spec = {"unit": "radii", "norm": ev.threat_model, "batch_size": ev.batch_size, "seed": seed,
            "examples": examples_fingerprint(x, y)}
    record = units(spec, lambda: {"radii": tensor_record(robustness_radii(model, x, y, norm=ev.threat_model,
                                                                          batch_size=ev.batch_size, seed=seed))})
    return pd.DataFrame({"model": name, "index": range(n), "threat_model": ev.threat_model,
                         "radius": record_tensor(record["radii"]).numpy()})


def radius_table(radii: pd.DataFrame) -> pd.DataFrame:
    """Median and quantiles per model (radius_summary: misclassified clean count as 0, unbroken as inf)."""
    return pd.DataFrame([{"model": model, "threat_model": g["threat_model"].iloc[0],
                          **radius_summary(torch.tensor(g["radius"].to_numpy(dtype=float)))}
                         for model, g in radii.groupby("model", sort=False)])


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

