"""`robustcnn train`: one model, one dataset, the per-epoch history and the overfitting curve (Chart 4)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from robustcnn.experiments.common import DataCache, DataSpec, ModelSpec, fit, save_training
from robustcnn.report import redraw
from robustcnn.results import RunFolder, write_table
from robustcnn.train import TrainConfig, TrainResult, resolve_device


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
        write_table(run.path, "summary", pd.DataFrame([summary_row(config, data.name, result)]), title="Summary")
    return run.path


def summary_row(config: TrainRunConfig, dataset: str, result: TrainResult) -> dict:
    """The run's one-line summary. train_accuracy is eval mode on train_eval_n training examples; best_epoch
    (and the test accuracy reported at it) comes from the validation split only, NaN without one."""
    h = result.history
    final = h.iloc[-1]
    at_best = h.loc[h["epoch"] == result.best_epoch, "test_accuracy"]
    return {"model": config.model.name, "dataset": dataset, "epochs": len(h),
            "train_accuracy": final["train_accuracy"], "train_eval_n": int(final["train_eval_n"]),
            "val_accuracy": final.get("val_accuracy", float("nan")), "test_accuracy": final["test_accuracy"],
            "monitor": result.monitor or "", "best_epoch": result.best_epoch or float("nan"),
            "test_accuracy_at_best": at_best.iloc[0] if len(at_best) else float("nan"),
            "seconds_per_epoch": h["seconds"].mean()}
