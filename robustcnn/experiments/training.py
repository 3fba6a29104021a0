"""`robustcnn train`: one model, one dataset, the per-epoch history and the overfitting curve (Chart 4)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from robustcnn.experiments.common import DataCache, DataSpec, ModelSpec, fit, save_training
from robustcnn.report import redraw
from robustcnn.results import RunFolder, write_table
from robustcnn.train import TrainConfig, resolve_device


@dataclass(frozen=True)
class TrainRunConfig:
    model: ModelSpec = field(default_factory=lambda: ModelSpec("lenet5", train=TrainConfig(epochs=10)))
    data: DataSpec = field(default_factory=DataSpec)
    seed: int = 0
    device: str = "auto"
    checkpoints: bool = True


def run_train(config: TrainRunConfig, out: str | Path = "results", *, progress: bool | None = None) -> Path:
    """Train one model and write `<out>/train/<run-id>/`; returns the run folder."""
    device = resolve_device(config.device)
    data = DataCache(config.data, seed=config.seed, device=device).for_model(config.model.architecture)
    with RunFolder(out, "train", config=config, seed=config.seed, device=str(device),
                   on_finish=lambda path: redraw(path, kind="train")) as run:
        model, result = fit(config.model, data, seed=config.seed, device=device, progress=progress)
        save_training(run.path, config.model.name, result, checkpoints=config.checkpoints, table="history")
        final = result.history.iloc[-1]
        summary = {"model": config.model.name, "dataset": data.name, "epochs": len(result.history),
                   "train_accuracy": final["train_accuracy"], "test_accuracy": final["test_accuracy"],
                   "best_test_accuracy": result.history["test_accuracy"].max(), "best_epoch": result.best_epoch,
                   "seconds_per_epoch": result.history["seconds"].mean()}
        import pandas as pd
        write_table(run.path, "summary", pd.DataFrame([summary]), title="Summary")
    return run.path
