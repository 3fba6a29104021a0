"""Training for models that learn by their own rule instead of backpropagation (perceptron, neocognitron).

A model opts in by having
    learning_rule: str                      # one line naming the rule, for tables
    fit_without_backprop(x_train, y_train, *, epochs, batch_size, seed, progress) -> dict[str, float]
`robustcnn.train.train` hands such a model here, so `robustcnn train --model neocognitron`, `fit()` and every
study train it the same way. epochs and batch_size mean what the rule says (the perceptron's passes and
minibatch; the neocognitron's self-organization passes per S-layer and presentation batch); optimizer, lr and
schedule do not apply. The history has ONE row, measured after learning in eval mode exactly as the gradient
trainer measures its epochs (train-eval subset, validation split if any, whole test split); its `epoch` is the
number of passes the rule made and `seconds` the learning time.
"""
from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

import pandas as pd
import torch
import torch.nn as nn

from robustcnn.data import DataBundle
from robustcnn.errors import UsageError
from robustcnn.progress import task as progress_task


@runtime_checkable
class OwnLearningRule(Protocol):
    learning_rule: str

    def fit_without_backprop(self, x_train: torch.Tensor, y_train: torch.Tensor, *, epochs: int, batch_size: int,
                             seed: int, progress: bool) -> dict[str, float]: ...


def has_own_rule(model: nn.Module) -> bool:
    return isinstance(model, OwnLearningRule)


def learning_rule_of(model: nn.Module) -> str:
    """The model's rule in words, or 'backpropagation' for every other model."""
    return model.learning_rule if has_own_rule(model) else "backpropagation"


def train_by_own_rule(model: nn.Module, data: DataBundle, cfg: Any, *, seed: int, device: torch.device,
                      progress: bool | None, label: str) -> Any:
    """Run the model's rule on the training split (less any validation split) and return a TrainResult."""
    from robustcnn.train import (
        COLUMNS,
        Selector,
        TrainResult,
        _state_copy,
        evaluate_splits,
        make_splits,
        monitor_column,
        seed_everything,
    )

    name = getattr(model, "model_name", "") or type(model).__name__
    if cfg.adversarial is not None or cfg.crop_padding or cfg.flip:
        raise UsageError(f"{name} learns by its own rule ({model.learning_rule}); adversarial training and "
                         "augmentation need backpropagation: drop train.adversarial, crop_padding and flip")
    model.to(device)
    splits = make_splits(data.to(device), cfg, seed)
    seed_everything(seed)
    t0 = time.perf_counter()
    with progress_task(label, 1, enabled=progress) as bar:  # one unit: the rule's passes (the model prints its layers)
        stats = model.fit_without_backprop(splits.x_train, splits.y_train, epochs=cfg.epochs,
                                           batch_size=cfg.batch_size, seed=seed, progress=bar.shown)
        bar.advance(f"learned by its own rule ({model.learning_rule})")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t1 = time.perf_counter()
    model.eval()
    passes = int(stats.get("epochs_run", cfg.epochs))
    measured = evaluate_splits(model, splits, cfg, passes - 1, seed)
    values = {**measured, "epoch": passes, "seconds": t1 - t0, "lr": float("nan"),
              "eval_seconds": time.perf_counter() - t1, "train_eval_n": len(splits.y_train_eval)}
    row = {col: values[col] for col in COLUMNS if col in values}
    selector = Selector(monitor_column(cfg), 0)
    selector.update(passes, row.get(selector.monitor) if selector.monitor else None, model)
    extras = {"learning_rule": model.learning_rule, "label": label, **stats}
    return TrainResult(pd.DataFrame([row]), _state_copy(model), selector.best_state, selector.best_epoch,
                       selector.monitor, extras)
