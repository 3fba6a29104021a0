"""What every experiment shares: model specs, loading data at the size each model needs, fitting, saving."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from robustcnn.data import DataBundle, Randomization, load_dataset
from robustcnn.errors import UsageError
from robustcnn.models import create_model, model_input_size
from robustcnn.results import atomic_write_bytes, inside, safe_name, to_jsonable, write_table
from robustcnn.sweep import Executor, SweepStore, run_sweep
from robustcnn.train import TrainConfig, TrainResult, resolve_device, seed_everything, train
from robustcnn.units import Units, frame_record, load_state, record_frame, state_bytes


class Checkpoint(str, Enum):
    FINAL = "final"
    BEST = "best"  # best validation accuracy (robust validation accuracy under adversarial training)


@dataclass(frozen=True)
class ModelSpec:
    """A model to train: `name` labels it in tables; `arch` is the registry name (default: name).
    evaluate = "best" loads the checkpoint of the best validation epoch, so it needs train.val_fraction."""

    name: str
    arch: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: Checkpoint = Checkpoint.FINAL

    @property
    def architecture(self) -> str:
        return self.arch or self.name

    def __post_init__(self) -> None:
        from robustcnn.models import MODELS
        safe_name(self.name, "model name")  # it names files (history, checkpoints): '../x' fails here, early
        MODELS.get(self.architecture)  # unknown names fail here, with a close-match hint
        if Checkpoint(self.evaluate) == Checkpoint.BEST and not self.train.val_fraction:
            raise UsageError(f"model '{self.name}': evaluate = 'best' selects on a validation split; set "
                             "train.val_fraction (e.g. 0.1) or evaluate = 'final'")


@dataclass(frozen=True)
class DataSpec:
    """Which data: a dataset name (or imagefolder:<path>), an optional training subset and label noise."""

    dataset: str = "digits"
    data_root: str | None = None
    train_subset: int | None = None
    label_noise: float = 0.0
    uniform_noise: bool = False  # True: noisy labels drawn over all classes (Zhang et al.), else always wrong
    randomization: Randomization = Randomization.NONE  # Zhang et al. 2017 (was data.corruption)


class DataCache:
    """Loads a dataset once per input size (lenet5 wants 28x28, alexnet_cifar 32x32) and keeps it.
    image_size: the size for models without a fixed input size (None: the dataset's own)."""

    def __init__(self, spec: DataSpec, *, seed: int, device: torch.device, image_size: int | None = None) -> None:
        self.spec, self.seed, self.device, self.image_size = spec, seed, device, image_size
        self._by_size: dict[int | None, DataBundle] = {}

    def for_model(self, arch: str) -> DataBundle:
        size = model_input_size(arch) or self.image_size
        if size not in self._by_size:
            s = self.spec
            self._by_size[size] = load_dataset(s.dataset, root=s.data_root, image_size=size,
                                               train_subset=s.train_subset, label_noise=s.label_noise,
                                               uniform_noise=s.uniform_noise, randomization=s.randomization, seed=self.seed,
                                               device=self.device)
        return self._by_size[size]


def fit(spec: ModelSpec, data: DataBundle, *, seed: int, device: torch.device,
        progress: bool | None = None) -> tuple[nn.Module, TrainResult]:
    """Create the model under `seed`, train it, and return it (eval mode, chosen checkpoint loaded)."""
    seed_everything(seed)
    model = create_model(spec.architecture, dataset=data, **spec.kwargs)
    result = train(model, data, spec.train, seed=seed, device=device, progress=progress, label=spec.name)
    if spec.evaluate == Checkpoint.BEST:
        model.load_state_dict(result.best_state)
    return model.eval(), result


# ------------------------------------------------------------------ a trained model as a unit (robustcnn.units)
def model_point(spec: ModelSpec, data: DataSpec, *, seed: int, device: torch.device, threads: int,
                image_size: int | None = None) -> dict[str, Any]:
    """Everything that decides a trained model: its spec, its data (and the image size of a study that resizes
    every model's data), the seed, the device and the CPU thread count (which changes the float sums, so a point
    always trains with the same count, wherever it runs)."""
    point = {"unit": "train", "model": to_jsonable(spec), "data": to_jsonable(data), "seed": seed,
             "device": str(device), "threads": threads}
    return point if image_size is None else {**point, "image_size": image_size}  # absent: the ids of before


def train_models(specs: list[ModelSpec], data: DataSpec, *, seed: int, device: torch.device, store: SweepStore,
                 executor: Executor | str = Executor.LOCAL, workers: int = 1, address: str | None = None,
                 image_size: int | None = None, progress: bool | None = None) -> list[dict[str, Any]]:
    """Every model as a unit through the sweep engine (here, in worker processes or on Ray), in the specs' order;
    models already in the store are not trained again. Each trains with this process's CPU thread count
    wherever it runs, so the numbers do not depend on where. Records: train_unit's (restore_model reads them)."""
    threads = torch.get_num_threads()
    points = [model_point(s, data, seed=seed, device=device, threads=threads, image_size=image_size) for s in specs]
    local = Executor(executor) == Executor.LOCAL and workers == 1
    fn = partial(train_unit, progress=progress) if local else train_unit  # workers train silently
    return run_sweep(points, fn, store=store, executor=executor, workers=workers, address=address,
                     progress=progress, label="models", describe=lambda point: point["model"]["name"])


def train_unit(point: dict[str, Any], progress: bool | None = False) -> dict[str, Any]:
    """Train a model_point's model; its record holds the history and, as blobs (robustcnn.units.BlobStore), the
    state_dicts. Module-level, so worker processes and Ray can run it."""
    from robustcnn.config import from_dict
    from robustcnn.devices import apply_threads

    apply_threads(point["threads"])
    spec, device = from_dict(ModelSpec, point["model"]), resolve_device(point["device"])
    data = DataCache(from_dict(DataSpec, point["data"]), seed=point["seed"], device=device,
                     image_size=point.get("image_size")).for_model(spec.architecture)
    _, result = fit(spec, data, seed=point["seed"], device=device, progress=progress)
    blobs = {"final": state_bytes(result.final_state)}
    if result.best_state is not None:
        blobs["best"] = state_bytes(result.best_state)
    return {"history": frame_record(result.history), "best_epoch": result.best_epoch, "monitor": result.monitor,
            "blobs": blobs, "pid": os.getpid(), "threads": torch.get_num_threads()}  # where and how it trained


def unit_counts(store: SweepStore, trained: list[dict[str, Any]], units: Units | None = None,
                spread: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a study's manifest says of its units: where they are stored, the thread count each model trained
    with, and how many models and evaluation units came from the store (a resumed run) rather than computed.
    spread: what workers computed (robustcnn.experiments.spread), read back by the study's own pass but not
    resumed; a pass that did not find them all is an error."""
    counts = {"store": str(store.directory), "threads_per_unit": torch.get_num_threads(), "models": len(trained),
              "models_resumed": sum(bool(r["resumed"]) for r in trained)}
    if units is not None:
        resumed = units.counts["resumed"] - (spread["units_by_workers"] if spread else 0)
        if resumed < 0:
            raise RuntimeError(f"the study's pass did not find the units its workers computed: {units.counts}, {spread}")
        counts.update(evaluation_units=units.counts["units"], evaluation_units_resumed=resumed, **(spread or {}))
    return counts


def restore_model(spec: ModelSpec, record: dict[str, Any], data: DataBundle, *, seed: int,
                  device: torch.device) -> tuple[nn.Module, TrainResult]:
    """The model of a train_unit record (eval mode, the evaluated checkpoint loaded) and its TrainResult: the
    same model whether it was trained a moment ago, in a worker, or in a run that was killed afterwards."""
    blobs = record["blobs"]
    result = TrainResult(record_frame(record["history"]), load_state(blobs["final"]),
                         load_state(blobs["best"]) if "best" in blobs else None, record["best_epoch"], record["monitor"])
    seed_everything(seed)  # as fit does: whatever the factory draws outside the state_dict repeats too
    model = create_model(spec.architecture, dataset=data, **spec.kwargs)
    model.load_state_dict(result.best_state if spec.evaluate == Checkpoint.BEST else result.final_state)
    return model.to(device).eval(), result


def save_training(run_dir: Path, label: str, result: TrainResult, *, checkpoints: bool = True,
                  table: str | None = None) -> None:
    """tables/<table or history_<label>>.csv and checkpoints/<label>-{final,best}.pt (state_dicts; best only
    with a validation split)."""
    history = result.history.assign(model=label)
    stem = safe_name(label, "model name")  # the one way a user-given name becomes a file name
    write_table(run_dir, table or f"history_{stem}", history[["model", *result.history.columns]],
                title=f"Training history: {label}")
    if checkpoints:
        import io
        for which, state in (("final", result.final_state), ("best", result.best_state)):
            if state is None:
                continue
            buf = io.BytesIO()
            torch.save(state, buf)
            atomic_write_bytes(inside(run_dir, Path(run_dir) / "checkpoints" / f"{stem}-{which}.pt"), buf.getvalue())

