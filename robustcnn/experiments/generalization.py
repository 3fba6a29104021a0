"""Generalization studies on the sweep engine: overfitting curves, the train/test gap under regularizers,
memorization (Zhang et al. 2017) and double descent (Nakkiran et al. 2019; Belkin et al. 2019).

Every study is a list of sweep points (data spec x model spec x seed); each point trains one model and its
record is stored under a hash of its config, so an interrupted study resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustcnn.data import Randomization
from robustcnn.errors import UsageError
from robustcnn.experiments.common import DataCache, DataSpec, ModelSpec, fit
from robustcnn.peaks import EPOCH_MIN_WIDTH, Z_DEFAULT, epoch_wise_peak, peaks_table
from robustcnn.results import RunFolder, to_jsonable, write_table
from robustcnn.sweep import Executor, SweepStore, check_placement, run_sweep
from robustcnn.train import TrainConfig, resolve_device


class SweepStudy(str, Enum):
    OVERFITTING = "overfitting"
    GENERALIZATION = "generalization"
    MEMORIZATION = "memorization"
    DOUBLE_DESCENT = "double-descent"


@dataclass(frozen=True)
class Variant:
    """One arm of a study: a model (default: the study's) and changes to the data."""

    name: str
    model: ModelSpec | None = None
    label_noise: float | None = None
    randomization: Randomization | None = None
    train_subset: int | None = None


@dataclass(frozen=True)
class RFFSweep:
    """Random Fourier features (min-norm least squares) on `train_size` examples, N swept over `features`."""

    features: list[int] = field(default_factory=lambda: [50, 100, 200, 400, 600, 800, 900, 1000, 1100, 1250, 1500,
                                                         2000, 3000])
    train_size: int = 1000
    sigma: float = 5.0


@dataclass(frozen=True)
class SweepStudyConfig:
    """A generalization study. `variants` drive overfitting/generalization/memorization; `widths`,
    `train_sizes` and `rff` drive double descent (each sweep is skipped when empty)."""

    study: SweepStudy = SweepStudy.DOUBLE_DESCENT
    name: str = "cpu"
    description: str = ""
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=lambda: ModelSpec("mlp"))
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "cpu"
    executor: Executor = Executor.LOCAL
    workers: int = 1
    address: str | None = None
    variants: list[Variant] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    train_sizes: list[int] = field(default_factory=list)
    sample_width: int | None = None  # the width of the sample-wise sweep (default: the model's own)
    rff: RFFSweep | None = None
    fit_threshold: float = 0.99  # memorization: the first epoch with train accuracy >= this "fits"
    peak_z: float = Z_DEFAULT  # a peak clears both side minima by more than this many standard errors
    peak_min_epochs: int = EPOCH_MIN_WIDTH  # epoch-wise: the raised region spans at least this many epochs

    def __post_init__(self) -> None:
        if not self.seeds:
            raise UsageError("give at least one seed")
        check_placement(self.executor, self.workers, self.address)
        if not self.peak_z > 0 or self.peak_min_epochs < 1:
            raise UsageError("peak_z must be > 0 and peak_min_epochs at least 1")
        # checked here, before any run folder or training: a bad value deep in a sweep is a traceback otherwise
        _positive_ints("widths", self.widths)
        _positive_ints("train_sizes", self.train_sizes)
        if self.sample_width is not None:
            _positive_ints("sample_width", [self.sample_width])
        if not 0 < self.fit_threshold <= 1:  # also false for nan
            raise UsageError(f"fit_threshold is a train accuracy in (0, 1], got {self.fit_threshold}")
        _check_data("data", self.data.label_noise, self.data.train_subset)
        for v in self.variants:
            _check_data(f"variant '{v.name}'", v.label_noise, v.train_subset)
        if self.rff is not None:
            if not self.rff.features:
                raise UsageError("rff.features is empty; give at least one feature count or drop rff")
            _positive_ints("rff.features", self.rff.features)
            _positive_ints("rff.train_size", [self.rff.train_size])
            if not self.rff.sigma > 0 or not math.isfinite(self.rff.sigma):
                raise UsageError(f"rff.sigma must be a finite number > 0, got {self.rff.sigma}")


def _positive_ints(what: str, values: list[int]) -> None:
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if bad:
        raise UsageError(f"{what} must be whole numbers >= 1, got {bad[0]!r}")


def _check_data(what: str, label_noise: float | None, train_subset: int | None) -> None:
    if label_noise is not None and not 0 <= label_noise <= 1:
        raise UsageError(f"{what}: label_noise is a fraction of labels in [0, 1], got {label_noise}")
    if train_subset is not None:
        _positive_ints(f"{what}: train_subset", [train_subset])


# ------------------------------------------------------------------ points
def make_points(cfg: SweepStudyConfig) -> list[dict[str, Any]]:
    base_data, base_model = to_jsonable(cfg.data), to_jsonable(cfg.model)
    points = []

    def add(sweep: str, label: str, x: float | str, data: dict, model: dict) -> None:
        for seed in cfg.seeds:
            points.append({"sweep": sweep, "variant": label, "x": x, "seed": seed, "device": cfg.device,
                           "data": data, "model": model})

    for v in cfg.variants:
        data = dict(base_data)
        for key in ("label_noise", "randomization", "train_subset"):
            if getattr(v, key) is not None:
                data[key] = to_jsonable(getattr(v, key))
        x = v.label_noise if cfg.study == SweepStudy.MEMORIZATION and v.label_noise is not None else v.name
        add("variants", v.name, x, data, to_jsonable(v.model) if v.model else base_model)
    for k in cfg.widths:
        add("model-wise", f"width={k}", k, base_data, {**base_model, "kwargs": {**base_model["kwargs"], "width": k}})
    for n in cfg.train_sizes:
        width = cfg.sample_width or base_model["kwargs"].get("width")
        kwargs = {**base_model["kwargs"], **({"width": width} if width else {})}
        add("sample-wise", f"n={n}", n, {**base_data, "train_subset": n}, {**base_model, "kwargs": kwargs})
    return points


def run_point(point: dict[str, Any]) -> dict[str, Any]:
    """Train one point's model and return its final metrics and per-epoch history (module-level: picklable)."""
    from robustcnn.config import from_dict

    data_spec, model_spec = from_dict(DataSpec, point["data"]), from_dict(ModelSpec, point["model"])
    device = resolve_device(point["device"])
    data = DataCache(data_spec, seed=point["seed"], device=device).for_model(model_spec.architecture)
    _, result = fit(model_spec, data, seed=point["seed"], device=device, progress=False)
    h = result.history
    return {"history": h.drop(columns=["seconds", "eval_seconds"]).to_dict("records"),
            "train_seconds": float(h["seconds"].sum()), "test_n": len(data.y_test)}


# ------------------------------------------------------------------ tables
def point_tables(points: list[dict[str, Any]], records: list[dict[str, Any]], fit_threshold: float
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(one row per point, per-epoch history, per-point cost); the first two depend only on the configs.

    train_accuracy, the gap and epochs_to_fit are eval mode (the history's train_accuracy, on train_eval_n
    examples); best_epoch is the best validation epoch, NaN for points trained without a validation split."""
    rows, histories, cost = [], [], []
    for p, r in zip(points, records):
        h = pd.DataFrame(r["history"])
        final = h.iloc[-1]
        fitted = h.index[h["train_accuracy"] >= fit_threshold]
        key = {"sweep": p["sweep"], "variant": p["variant"], "x": p["x"], "seed": p["seed"]}
        rows.append({**key, "train_accuracy": final["train_accuracy"], "test_accuracy": final["test_accuracy"],
                     "train_error": 1 - final["train_accuracy"], "test_error": 1 - final["test_accuracy"],
                     "gap": final["train_accuracy"] - final["test_accuracy"], "train_loss": final["train_loss"],
                     "test_loss": final["test_loss"], "train_accuracy_running": final["train_accuracy_running"],
                     "val_accuracy": final.get("val_accuracy", np.nan), "train_eval_n": final["train_eval_n"],
                     "epochs": len(h), "best_epoch": _best_validation_epoch(h),
                     "epochs_to_fit": int(h.loc[fitted[0], "epoch"]) if len(fitted) else np.nan})
        histories.append(h.assign(**key))
        cost.append({**key, "point_id": r["point_id"], "train_seconds": r["train_seconds"],
                     "point_seconds": r["point_seconds"], "resumed": r["resumed"]})
    history = pd.concat(histories, ignore_index=True)
    history = history[["sweep", "variant", "x", "seed", *[c for c in history.columns if c not in ("sweep", "variant",
                                                                                                  "x", "seed")]]]
    return pd.DataFrame(rows), history, pd.DataFrame(cost)


def _best_validation_epoch(h: pd.DataFrame) -> float:
    """The epoch the trainer selects (first maximum of its validation monitor); NaN without a validation split."""
    monitor = next((c for c in ("robust_val_accuracy", "val_accuracy") if c in h and h[c].notna().any()), None)
    return float(h.loc[h[monitor].idxmax(), "epoch"]) if monitor else np.nan


def summarize(per_point: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds (std is 0 for a single seed), with the seeds listed. Accuracies of the train
    split are eval mode; best_epoch is NaN for arms without a validation split."""
    metrics = ["train_accuracy", "test_accuracy", "train_error", "test_error", "gap", "epochs_to_fit",
               "train_accuracy_running"]
    metrics += [m for m in ("val_accuracy", "best_epoch") if m in per_point and per_point[m].notna().any()]
    grouped = per_point.groupby(["sweep", "variant", "x"], sort=False)
    mean, std = grouped[metrics].mean(), grouped[metrics].std(ddof=0).fillna(0.0)
    out = mean.add_suffix("_mean").join(std.add_suffix("_std")).reset_index()
    out["seeds"] = grouped["seed"].apply(lambda s: " ".join(map(str, sorted(s)))).values
    return out


def held_out_size(cfg: SweepStudyConfig, records: list[dict[str, Any]]) -> int:
    """n_test of the binomial term: from the point records (`test_n`) when they carry it, else the dataset's."""
    sizes = {int(r["test_n"]) for r in records if r.get("test_n") is not None}
    if sizes:
        return min(sizes)  # one test set per study; the smallest is the conservative choice if they ever differ
    from robustcnn.data import load_dataset

    return len(load_dataset(cfg.data.dataset, root=cfg.data.data_root).y_test)


def rff_point_from_spec(point: dict[str, Any]) -> dict[str, Any]:
    """One random-features fit (a sweep point, so finished ones are stored and resumed like the others)."""
    from robustcnn.config import from_dict
    from robustcnn.data import load_dataset
    from robustcnn.rff import rff_point

    d = from_dict(DataSpec, point["data"])
    data = load_dataset(d.dataset, root=d.data_root, train_subset=point["train_size"], label_noise=d.label_noise,
                        uniform_noise=d.uniform_noise, seed=point["seed"])
    flat = [t.flatten(1).double().numpy() for t in (data.x_train, data.x_test)]
    return rff_point(flat[0], data.y_train.numpy(), flat[1], data.y_test.numpy(), point["features"],
                     sigma=point["sigma"], seed=point["seed"], classes=data.num_classes)


def rff_table(cfg: SweepStudyConfig, store: SweepStore) -> pd.DataFrame:
    points = [{"sweep": "rff", "features": n, "train_size": cfg.rff.train_size, "sigma": cfg.rff.sigma, "seed": seed,
               "data": to_jsonable(cfg.data)} for seed in cfg.seeds for n in cfg.rff.features]
    records = run_sweep(points, rff_point_from_spec, store=store, executor=cfg.executor, workers=cfg.workers,
                        address=cfg.address, label="rff")
    keep = ["train_error", "test_error", "train_mse", "test_mse", "weight_norm"]
    return pd.DataFrame([{"features": p["features"], "train_size": p["train_size"], "seed": p["seed"],
                          **{k: r[k] for k in keep}} for p, r in zip(points, records)])


# ------------------------------------------------------------------ the study
def run_sweep_study(cfg: SweepStudyConfig, out: str | Path = "results", *, progress: bool | None = None) -> Path:
    """Run (or resume) a generalization study and write `<out>/<study>/<run-id>/`."""
    from robustcnn.report import redraw

    points = make_points(cfg)
    if not points and cfg.rff is None:
        raise UsageError(f"study {cfg.study.value} has nothing to run: give variants, widths, train_sizes or rff")
    store = SweepStore(Path(out) / ".sweep-store" / cfg.study.value)
    with RunFolder(out, cfg.study.value, config=cfg, seed=cfg.seeds[0], device=str(resolve_device(cfg.device)),
                   on_finish=lambda path: redraw(path)) as run:
        records = run_sweep(points, run_point, store=store, executor=cfg.executor, workers=cfg.workers,
                            address=cfg.address, progress=progress, label=cfg.study.value,
                            describe=lambda p: f"{p['variant']} seed {p['seed']}")
        if points:
            per_point, history, cost = point_tables(points, records, cfg.fit_threshold)
            summary = summarize(per_point)
            write_table(run.path, "points", per_point, title="One row per sweep point")
            write_table(run.path, "summary", summary, title="Mean and std over seeds")
            write_table(run.path, "history", history, markdown=False)
            write_table(run.path, "point_cost", cost, title="Seconds per point (resumed points cost ~0)")
            run.extra["resumed_points"] = int(cost["resumed"].sum())
        else:
            summary = pd.DataFrame(columns=["sweep"])
        rff = rff_table(cfg, store) if cfg.rff is not None else None
        if rff is not None:
            write_table(run.path, "rff", rff, title="Random Fourier features, min-norm least squares")
        if cfg.study == SweepStudy.DOUBLE_DESCENT:
            n_test = held_out_size(cfg, records)
            peaks = peaks_table(per_point if points else None, rff, n_test, z=cfg.peak_z)
            if points and cfg.widths:
                peaks = pd.concat([peaks, epoch_wise_peak(history, max(cfg.widths), n_test, z=cfg.peak_z,
                                                          min_width=cfg.peak_min_epochs)], ignore_index=True)
            write_table(run.path, "peaks", peaks, title=f"Peaks (significant: > {cfg.peak_z:g} standard errors above "
                        f"both side minima; n_test = {n_test})")
    return run.final_path


# ------------------------------------------------------------------ the CPU profiles (the defaults)
def default_config(study: SweepStudy) -> SweepStudyConfig:
    """Each study's CPU profile: shows its phenomenon on scikit-learn digits in minutes on 2 cores."""
    long_adam = TrainConfig(epochs=300, batch_size=128, lr=1e-3)
    if study == SweepStudy.DOUBLE_DESCENT:
        # Nakkiran et al.'s setting scaled down: 20 % label noise, an MLP swept in width, trained to
        # (near) interpolation; the sample-wise sweep fixes the width near the model-wise peak.
        return SweepStudyConfig(
            study=study, name="double-descent-cpu",
            description="mlp width sweep and sample-size sweep on digits (8x8) with 20 % label noise; RFF on n=1000",
            data=DataSpec("digits", label_noise=0.2), model=ModelSpec("mlp", train=long_adam), seeds=[0, 1],
            widths=[2, 4, 8, 16, 32, 64, 128, 192, 256, 384, 512, 1024, 2048, 4096],
            train_sizes=[100, 200, 300, 400, 600, 800, 1000, 1297], sample_width=128, rff=RFFSweep())
    if study == SweepStudy.MEMORIZATION:
        noise = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        variants = [Variant(f"labels {p:.0%} random", label_noise=p) for p in noise]
        variants += [Variant("shuffled pixels", randomization=Randomization.SHUFFLED_PIXELS),
                     Variant("random pixels", randomization=Randomization.RANDOM_PIXELS)]
        return SweepStudyConfig(study=study, name="memorization-cpu", data=DataSpec("digits", uniform_noise=True),
                                description="Zhang et al. 2017 on digits: an MLP of width 512 fits random labels",
                                model=ModelSpec("mlp", kwargs={"width": 512}, train=long_adam), variants=variants)
    if study == SweepStudy.GENERALIZATION:
        base = TrainConfig(epochs=60, batch_size=64, lr=1e-3)
        arm = lambda name, train=base, **kw: Variant(name, model=ModelSpec(  # noqa: E731
            "cnn5", kwargs={"width": 8, "batchnorm": False, **kw}, train=train))
        variants = [arm("none"), arm("dropout 0.5", dropout=0.5),
                    arm("weight decay 5e-4", train=dataclasses.replace(base, weight_decay=5e-4)),
                    arm("augmentation", train=dataclasses.replace(base, crop_padding=1)),
                    arm("early stopping", train=dataclasses.replace(base, early_stopping=10, val_fraction=0.1)),
                    arm("batch norm", batchnorm=True)]
        return SweepStudyConfig(study=study, name="generalization-cpu", data=DataSpec("digits", train_subset=300),
                                description="train/test gap of cnn5 (k=8) on 300 digits under each regularizer; "
                                            "the early-stopping arm trains on 90 % of them and stops on the other 10 %",
                                seeds=[0, 1, 2], variants=variants)
    return SweepStudyConfig(
        study=study, name="overfitting-cpu", data=DataSpec("digits", train_subset=300),
        description="train vs test curves of an MLP and cnn5 on 300 digits",
        variants=[Variant("mlp (k=512)", model=ModelSpec("mlp", kwargs={"width": 512},
                                                         train=TrainConfig(epochs=150, batch_size=32, lr=1e-3))),
                  Variant("cnn5 (k=16)", model=ModelSpec("cnn5", kwargs={"width": 16},
                                                         train=TrainConfig(epochs=60, batch_size=32, lr=1e-3)))],
        seeds=[0, 1])
