"""`robustcnn study invariance`: do convolution and pooling buy robustness to shifts, deformations and noise?

Trains the zoo's models on one dataset, then measures every model on the SAME transformed and corrupted test
images: accuracy vs magnitude (random and worst case over a grid) for translation, rotation, scaling, elastic
deformation (Simard et al. 2003), Gaussian noise and blur; consistency under two random draws (Zhang 2019); the
accuracy for every shift in a grid; the MNIST-C (greyscale) or CIFAR-10-C (colour) corruptions at five
severities with the mean corruption error against a named reference model (Hendrycks & Dietterich 2019); and a
table that states, model by model, whether the seed's claims hold, with the criterion written beside it.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from robustcnn import invariance as inv
from robustcnn.corruptions import as_corruption, corrupt, corruption_set
from robustcnn.data import DataBundle, Randomization
from robustcnn.errors import UsageError
from robustcnn.experiments.common import DataCache, DataSpec, ModelSpec, restore_model, save_training, train_models, unit_counts
from robustcnn.models import model_input_size
from robustcnn.progress import track
from robustcnn.report import redraw
from robustcnn.results import RunFolder, atomic_write_bytes, write_table
from robustcnn.sweep import Executor, check_placement
from robustcnn.train import TrainConfig, resolve_device
from robustcnn.transforms import RANDOM, Transform, apply_transform, as_transform, check_magnitude, generator
from robustcnn.units import BlobStore


@dataclass(frozen=True)
class Magnitudes:
    """The magnitude grid of each transformation (units: transforms.UNITS); an empty list skips one."""

    translate: list[float] = field(default_factory=lambda: list(inv.DEFAULT_MAGNITUDES[Transform.TRANSLATE]))
    rotate: list[float] = field(default_factory=lambda: list(inv.DEFAULT_MAGNITUDES[Transform.ROTATE]))
    scale: list[float] = field(default_factory=lambda: list(inv.DEFAULT_MAGNITUDES[Transform.SCALE]))
    elastic: list[float] = field(default_factory=lambda: list(inv.DEFAULT_MAGNITUDES[Transform.ELASTIC]))
    noise: list[float] = field(default_factory=lambda: list(inv.DEFAULT_MAGNITUDES[Transform.NOISE]))
    blur: list[float] = field(default_factory=lambda: list(inv.DEFAULT_MAGNITUDES[Transform.BLUR]))

    def __post_init__(self) -> None:
        for t, mags in self.items():
            for m in mags:
                check_magnitude(t, m)  # a bad magnitude fails when the config loads, not after training

    def items(self) -> list[tuple[Transform, list[float]]]:
        return [(Transform(f.name), list(getattr(self, f.name))) for f in fields(self) if getattr(self, f.name)]


@dataclass(frozen=True)
class Claim:
    """A claim of the seed, tested as: accuracy under the random transformation >= threshold x clean accuracy."""

    name: str
    transform: str
    magnitude: float
    threshold: float = 0.9

    def __post_init__(self) -> None:
        check_magnitude(as_transform(self.transform), self.magnitude)
        if not 0 < self.threshold <= 1:
            raise UsageError(f"claim '{self.name}': threshold must be in (0, 1], got {self.threshold}")


@dataclass(frozen=True)
class InvarianceEvaluation:
    """What to measure, on the first n_examples test images (in order)."""

    n_examples: int = 500
    batch_size: int = 500
    magnitudes: Magnitudes = field(default_factory=Magnitudes)
    elastic_sigma: float = 4.0   # Simard et al. 2003's sigma for MNIST
    fill: float = 0.0            # background of shifted/rotated images (0: black, MNIST's background)
    grid_steps: int = 31         # angles / zoom factors the worst case tries (Engstrom et al. 2019: 31 angles)
    worst_of: int = 10           # random draws the worst case tries for elastic and noise
    shift_grid: int = 4          # the accuracy map over every shift (dx, dy) in [-k, k]^2
    corruptions: list[str] | None = None  # None: MNIST-C's set for greyscale data, CIFAR-10-C's for colour
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    reference: str | None = "lenet5"  # the model whose corruption errors normalize the mCE
    gallery_index: int = 0       # the test image the gallery shows

    def __post_init__(self) -> None:
        if self.n_examples < 1 or self.batch_size < 1 or self.grid_steps < 1 or self.worst_of < 1:
            raise UsageError("n_examples, batch_size, grid_steps and worst_of must be at least 1")
        for c in self.corruptions or []:
            as_corruption(c)
        for s in self.severities:
            if not isinstance(s, int) or not 1 <= s <= 5:
                raise UsageError(f"severities must be whole numbers in 1..5, got {s!r}")


def _default_models() -> list[ModelSpec]:
    # digits at 28x28, batch 32: each trains in seconds to a minute on 2 cores
    return [ModelSpec("mlp", train=TrainConfig(epochs=30, batch_size=32, lr=1e-3)),
            ModelSpec("lenet5", train=TrainConfig(epochs=15, batch_size=32, lr=3e-3)),
            ModelSpec("lenet5_1998", train=TrainConfig(epochs=20, batch_size=32, lr=1e-3)),
            ModelSpec("cnn5", kwargs={"width": 16}, train=TrainConfig(epochs=15, batch_size=32, lr=1e-3))]


def _default_claims() -> list[Claim]:
    # magnitudes at which a person still reads a digit easily: the seed's "shifts", "deformation" and "noise"
    return [Claim("shift", "translate", 2), Claim("deformation", "elastic", 34), Claim("noise", "noise", 0.3)]


@dataclass(frozen=True)
class InvarianceStudyConfig:
    """Defaults: the CPU profile on the embedded digits at 28x28 (a few minutes on 2 cores)."""

    name: str = "digits-cpu"
    description: str = "mlp, lenet5, lenet5_1998 and cnn5 on scikit-learn digits (28x28): shifts, deformations, noise"
    data: DataSpec = field(default_factory=DataSpec)
    image_size: int | None = 28  # every model sees images of this size (None: the dataset's own)
    seed: int = 0
    device: str = "auto"
    checkpoints: bool = True
    models: list[ModelSpec] = field(default_factory=_default_models)
    evaluation: InvarianceEvaluation = field(default_factory=InvarianceEvaluation)
    claims: list[Claim] = field(default_factory=_default_claims)
    baseline: str | None = "mlp"  # claims compare every model with this one (no convolution, no pooling)
    executor: Executor = Executor.LOCAL  # where the models train (robustcnn.sweep), as in the adversarial study
    workers: int = 1
    address: str | None = None

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        if not names or len(set(names)) != len(names):
            raise UsageError(f"models need distinct names, got {names}")
        check_placement(self.executor, self.workers, self.address)
        if self.data.label_noise or Randomization(self.data.randomization) != Randomization.NONE:
            raise UsageError("the invariance study trains on clean data; leave data.label_noise and data.randomization unset")
        for m in self.models:
            fixed = model_input_size(m.architecture)
            if fixed is not None and self.image_size is not None and fixed != self.image_size:
                raise UsageError(f"model '{m.name}' takes {fixed}x{fixed} images but image_size is {self.image_size}; "
                                 "every model must see the same images: set image_size to match or drop the model")
        for role, name in (("evaluation.reference", self.evaluation.reference), ("baseline", self.baseline)):
            if name is not None and name not in names:
                raise UsageError(f"{role} '{name}' is not among the models ({', '.join(names)})")


def run_invariance_study(config: InvarianceStudyConfig, out: str | Path = "results", *,
                         progress: bool | None = None) -> Path:
    """Train every model of the config, measure them all, and write `<out>/invariance/<run-id>/`.

    Resumable: each trained model is a unit in `<out>/.sweep-store/invariance/` (as in the adversarial study);
    the same study into the same `out` after a kill trains only the models that were not finished."""
    device = resolve_device(config.device)
    cache = DataCache(config.data, seed=config.seed, device=device, image_size=config.image_size)
    store = BlobStore(Path(out) / ".sweep-store" / "invariance")
    with RunFolder(out, "invariance", config=config, seed=config.seed, device=str(device),
                   on_finish=lambda path: redraw(path, kind="invariance")) as run:
        records = train_models(config.models, config.data, seed=config.seed, device=device, store=store,
                               executor=config.executor, workers=config.workers, address=config.address,
                               image_size=config.image_size, progress=progress)
        groups: dict[int, tuple[DataBundle, dict[str, nn.Module]]] = {}
        for spec, record in zip(config.models, records):
            data = cache.for_model(spec.architecture)
            model, trained = restore_model(spec, record, data, seed=config.seed, device=device)
            save_training(run.path, spec.name, trained, checkpoints=config.checkpoints)
            groups.setdefault(id(data), (data, {}))[1][spec.name] = model
        tables: dict[str, list[pd.DataFrame]] = {}
        for data, models in track(groups.values(), "invariance: measure", describe=lambda g: ", ".join(g[1]),
                                  enabled=progress):  # models that share an input size see the same images
            for name, df in measure(models, data, config.evaluation, config.claims, seed=config.seed).items():
                tables.setdefault(name, []).append(df)
        merged = {name: pd.concat(dfs, ignore_index=True) for name, dfs in tables.items()}
        clean = dict(zip(merged["clean_accuracy"]["model"], merged["clean_accuracy"]["accuracy"]))
        per, summary = inv.corruption_summary(merged["corruption_accuracy"], clean,
                                              reference=config.evaluation.reference)
        merged.update(corruption_errors=per, corruption_summary=summary,
                      claims=claims_table(merged.pop("claim_samples"), clean, config))
        for name, df in merged.items():
            write_table(run.path, name, df, title=TITLES[name], markdown=name != "shift_grid")
        data = next(iter(groups.values()))[0]
        save_gallery(run.path / "data" / "gallery.npz", data, config.evaluation, seed=config.seed)
        run.extra["units"] = unit_counts(store, records)
    return run.path


TITLES = {"clean_accuracy": "Clean accuracy", "transform_accuracy": "Accuracy under transformations",
          "consistency": "Consistency (Zhang 2019)", "shift_grid": "Accuracy for every shift",
          "corruption_accuracy": "Accuracy per corruption and severity",
          "corruption_errors": "Corruption errors (CE against the reference)",
          "corruption_summary": "Mean corruption accuracy and mCE", "claims": "The seed's claims, model by model"}


def measure(models: dict[str, nn.Module], data: DataBundle, ev: InvarianceEvaluation, claims: list[Claim], *,
            seed: int) -> dict[str, pd.DataFrame]:
    """Every table of the study for models that take the same images."""
    n = min(ev.n_examples, len(data.y_test))
    x, y = data.x_test[:n], data.y_test[:n]
    kw = {"seed": seed, "batch_size": ev.batch_size, "fill": ev.fill}
    clean = inv.predictions(models, x, ev.batch_size)
    out = {"clean_accuracy": pd.DataFrame([{"model": m, "split": "test", "accuracy": (p == y).double().mean().item(),
                                            "n": n} for m, p in clean.items()])}
    acc, cons = [], []
    for t, mags in ev.magnitudes.items():
        acc.append(inv.transform_accuracy(models, x, y, t, mags, elastic_sigma=ev.elastic_sigma,
                                          grid_steps=ev.grid_steps, worst_of=ev.worst_of, **kw))
        if t in RANDOM:
            cons.append(inv.consistency(models, x, t, [m for m in mags if m > 0], elastic_sigma=ev.elastic_sigma, **kw))
    out["transform_accuracy"] = pd.concat(acc, ignore_index=True)
    out["consistency"] = pd.concat(cons, ignore_index=True) if cons else pd.DataFrame()
    out["shift_grid"] = inv.shift_grid(models, x, y, ev.shift_grid, batch_size=ev.batch_size, fill=ev.fill)
    out["corruption_accuracy"] = inv.corruption_accuracy(models, x, y, ev.corruptions, ev.severities, seed=seed,
                                                         batch_size=ev.batch_size)
    return out | {"claim_samples": _claim_samples(models, x, y, ev, claims, seed)}


def _claim_samples(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, ev: InvarianceEvaluation,
                   claims: list[Claim], seed: int) -> pd.DataFrame:
    """Per image and model: correct under each claim's (transform, magnitude), the same draw as
    transform_accuracy's random rows (so the claim table and the accuracy table agree)."""
    rows = []
    for t, m in dict.fromkeys((as_transform(c.transform), float(c.magnitude)) for c in claims):
        xt = apply_transform(x, t, m, generator(seed, t.value, m), fill=ev.fill, elastic_sigma=ev.elastic_sigma)
        for name, pred in inv.predictions(models, xt, ev.batch_size).items():
            rows.append(pd.DataFrame({"model": name, "transform": t.value, "magnitude": m, "index": range(len(y)),
                                      "correct": (pred == y).cpu().numpy()}))
    return pd.concat(rows, ignore_index=True)


def claims_table(samples: pd.DataFrame, clean: dict[str, float], config: InvarianceStudyConfig) -> pd.DataFrame:
    """Model by model, whether each claim holds; with the paired accuracy difference to the baseline model."""
    rows = []
    for claim in config.claims:
        t = as_transform(claim.transform).value
        part = samples[(samples["transform"] == t) & (samples["magnitude"] == float(claim.magnitude))]
        wide = part.pivot(index="index", columns="model", values="correct").astype(float)
        for model in wide.columns:
            acc = wide[model].mean()
            row = {"claim": claim.name, "model": model,
                   "criterion": f"accuracy under random {t} up to {claim.magnitude:g} >= {claim.threshold:g} x clean "
                                f"accuracy", "clean_accuracy": clean[model], "accuracy": acc,
                   "retained": acc / clean[model] if clean[model] else float("nan")}
            row["holds"] = bool(row["retained"] >= claim.threshold)
            if config.baseline is not None and config.baseline in wide.columns and model != config.baseline:
                diff = wide[model] - wide[config.baseline]  # paired: the same transformed images
                half = 1.96 * diff.std() / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
                row.update(baseline=config.baseline, minus_baseline=diff.mean(), ci_low=diff.mean() - half,
                           ci_high=diff.mean() + half)
            row["n"] = len(wide)
            rows.append(row)
    return pd.DataFrame(rows)


def save_gallery(path: Path, data: DataBundle, ev: InvarianceEvaluation, *, seed: int) -> None:
    """Arrays for the galleries (each corruption at each severity, each transformation at each magnitude) of one
    test image, so `robustcnn report` redraws them without torch."""
    i = min(ev.gallery_index, len(data.y_test) - 1)
    x = data.x_test[i:i + 1]
    chosen = [as_corruption(c) for c in (ev.corruptions or corruption_set(x.shape[1]))]
    corrupted = np.stack([np.stack([corrupt(x, c, s, seed)[0].cpu().numpy() for s in ev.severities])
                          for c in chosen])  # (corruptions, severities, C, H, W)
    arrays = {"clean": x[0].cpu().numpy(), "corruptions": np.array([c.value for c in chosen]),
              "severities": np.array(ev.severities), "corrupted": corrupted, "transforms": np.array([])}
    names = []
    for t, mags in ev.magnitudes.items():
        names.append(t.value)
        arrays[f"magnitudes__{t.value}"] = np.array(mags, dtype=float)
        arrays[f"transformed__{t.value}"] = np.stack([apply_transform(x, t, m, generator(seed, t.value, m),
                                                                      fill=ev.fill, elastic_sigma=ev.elastic_sigma)[0]
                                                      .cpu().numpy() for m in mags])
    arrays["transforms"] = np.array(names)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
