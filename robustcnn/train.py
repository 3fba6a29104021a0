"""The trainer: standard and adversarial (PGD-AT, FGSM-AT) training with a per-epoch history.

    result = train(model, data, TrainConfig(epochs=12, optimizer="adadelta"), seed=0, device="cpu")
    result.history  # DataFrame: epoch, train_loss, train_accuracy, test_loss, test_accuracy, seconds, ...

Train loss/accuracy are running averages over the epoch's batches in train mode (as Keras reports them);
test metrics are measured in eval mode after each epoch.
"""
from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from robustcnn.data import DataBundle, augment, batches
from robustcnn.errors import UsageError
from robustcnn.perturb import fgsm_rs, pgd_linf


class OptimizerName(str, Enum):
    SGD = "sgd"
    ADAM = "adam"
    ADADELTA = "adadelta"


class Schedule(str, Enum):
    CONSTANT = "constant"
    STEP = "step"
    COSINE = "cosine"


class AdversarialMethod(str, Enum):
    PGD = "pgd"    # Madry et al. 2018
    FGSM = "fgsm"  # FGSM with random start, Wong et al. 2020


DEFAULT_LR = {OptimizerName.SGD: 0.05, OptimizerName.ADAM: 1e-3, OptimizerName.ADADELTA: 1.0}


@dataclass(frozen=True)
class AdversarialTraining:
    """Train on adversarial examples. epsilon is a fraction of the [0,1] pixel range (L-inf).

    step_size: None -> 2.5 * epsilon / steps for PGD (Madry et al.), 1.25 * epsilon for FGSM (Wong et al.).
    eval_examples / eval_steps: robust test accuracy each epoch (PGD, same epsilon) on the first n test examples.
    warmup_epochs: ramp the training epsilon linearly up to `epsilon` over this many epochs (0: none); small
        models trained at a large epsilon from the first step often stay at chance without it.
    """

    method: AdversarialMethod = AdversarialMethod.PGD
    epsilon: float = 0.3
    steps: int = 10
    step_size: float | None = None
    eval_examples: int = 500
    eval_steps: int = 20
    warmup_epochs: int = 0

    def epsilon_at(self, epoch: int) -> float:
        """The training epsilon during `epoch` (0-based)."""
        return self.epsilon * min(1.0, (epoch + 1) / self.warmup_epochs) if self.warmup_epochs else self.epsilon

    def __post_init__(self) -> None:
        if not 0 <= self.epsilon <= 1:
            raise UsageError(f"adversarial epsilon must be in [0, 1] (a fraction of the pixel range), got {self.epsilon}")
        if self.steps < 1 or self.eval_steps < 1 or self.warmup_epochs < 0:
            raise UsageError("adversarial steps and eval_steps must be at least 1, warmup_epochs at least 0")

    @property
    def resolved_step_size(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return 1.25 * self.epsilon if self.method == AdversarialMethod.FGSM else 2.5 * self.epsilon / self.steps


@dataclass(frozen=True)
class TrainConfig:
    """How to train. lr None picks the optimizer's usual default (sgd 0.05, adam 1e-3, adadelta 1.0).

    early_stopping: stop after this many epochs without a better monitored accuracy (0: off). It monitors
    the test split (robust test accuracy under adversarial training): the studies have no validation split.
    crop_padding / flip: batch-wise augmentation (random crop with zero padding, horizontal flip).
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: OptimizerName = OptimizerName.ADAM
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Schedule = Schedule.CONSTANT
    step_epochs: int = 10
    step_gamma: float = 0.1
    early_stopping: int = 0
    crop_padding: int = 0
    flip: bool = False
    eval_batch_size: int = 1000
    adversarial: AdversarialTraining | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "step_epochs"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr is not None and not self.lr > 0:
            raise UsageError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0 or self.early_stopping < 0 or self.crop_padding < 0:
            raise UsageError("weight_decay, early_stopping and crop_padding must be non-negative")


@dataclass
class TrainResult:
    history: pd.DataFrame
    final_state: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    monitor: str  # the history column the best checkpoint maximizes
    extras: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so model init, shuffling and dropout repeat."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when present, else CPU; anything else is checked and passed through."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise UsageError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device '{device}' asked for, but CUDA is not available here; use --device cpu or auto")
    return resolved


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[OptimizerName(cfg.optimizer)]
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == OptimizerName.SGD:
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == OptimizerName.ADAM:
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adadelta(params, lr=lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Multiplier of the base lr during `epoch` (0-based)."""
    if cfg.schedule == Schedule.STEP:
        return cfg.step_gamma ** (epoch // cfg.step_epochs)
    if cfg.schedule == Schedule.COSINE:
        return 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    return 1.0


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """(mean loss, accuracy) in eval mode; the loss is the model's own training criterion."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for xb, yb in batches(x, y, batch_size):
        scores = model(xb)
        loss_sum += model.criterion(scores, yb) * len(yb)
        correct += (scores.argmax(1) == yb).sum()
    model.train(was_training)
    return (loss_sum / len(y)).item(), (correct.float() / len(y)).item()


def robust_accuracy_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: AdversarialTraining,
                        batch_size: int, generator: torch.Generator) -> float:
    """Accuracy under PGD at the training epsilon (eval mode): the robust-overfitting curve's y-value."""
    was_training = model.training
    model.eval()
    correct = 0
    for xb, yb in batches(x, y, batch_size):
        x_adv = pgd_linf(model, xb, yb, epsilon=adv.epsilon, steps=adv.eval_steps,
                         step_size=2.5 * adv.epsilon / adv.eval_steps, generator=generator)
        with torch.no_grad():
            correct += (model(x_adv).argmax(1) == yb).sum().item()
    model.train(was_training)
    return correct / len(y)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"), disable=not enabled,
                        transient=False)
    return progress


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def train(model: nn.Module, data: DataBundle, config: TrainConfig | None = None, *, seed: int = 0,
          device: str | torch.device = "auto", progress: bool | None = None, label: str = "train") -> TrainResult:
    """Train `model` on `data`; returns the per-epoch history and the final and best state_dicts.

    The model and the data are moved to `device`. With config.adversarial set, each batch is replaced by
    its adversarial examples (PGD-AT or FGSM-AT) and robust test accuracy is recorded every epoch.
    """
    cfg = config or TrainConfig()
    dev = resolve_device(device)
    model.to(dev)
    data = data.to(dev)
    seed_everything(seed)
    order_gen = torch.Generator().manual_seed(seed)  # shuffling and augmentation draws, device-independent
    opt = make_optimizer(model, cfg)
    base_lrs = [g["lr"] for g in opt.param_groups]
    adv = cfg.adversarial
    if adv is not None:
        n_eval = min(adv.eval_examples, len(data.y_test))
        x_rob, y_rob = data.x_test[:n_eval], data.y_test[:n_eval]
    monitor = "robust_test_accuracy" if adv is not None else "test_accuracy"
    rows: list[dict] = []
    best_value, best_epoch, best_state = -1.0, 0, _state_copy(model)
    show = sys.stderr.isatty() if progress is None else progress
    with _progress(show) as bar:
        task = bar.add_task(label, total=cfg.epochs, metrics="")
        for epoch in range(cfg.epochs):
            for group, base in zip(opt.param_groups, base_lrs):
                group["lr"] = base * lr_factor(cfg, epoch)
            model.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=dev)
            correct = torch.zeros((), device=dev, dtype=torch.long)
            for xb, yb in batches(data.x_train, data.y_train, cfg.batch_size, shuffle=True, generator=order_gen):
                if cfg.crop_padding or cfg.flip:
                    xb = augment(xb, crop_padding=cfg.crop_padding, flip=cfg.flip, generator=order_gen)
                if adv is not None:
                    # step sizes scale with the (possibly ramped) epsilon, so the ratio stays as configured
                    eps = adv.epsilon_at(epoch)
                    step = adv.resolved_step_size * eps / adv.epsilon if adv.epsilon > 0 else 0.0
                    if adv.method == AdversarialMethod.FGSM:
                        xb = fgsm_rs(model, xb, yb, epsilon=eps, step_size=step, generator=order_gen)
                    else:
                        xb = pgd_linf(model, xb, yb, epsilon=eps, steps=adv.steps, step_size=step,
                                      generator=order_gen)
                scores = model(xb)
                loss = model.criterion(scores, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                # accumulate on the device: no .item() sync per batch
                loss_sum += loss.detach() * len(yb)
                correct += (scores.detach().argmax(1) == yb).sum()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            train_seconds = time.perf_counter() - t0
            n = len(data.y_train)
            t1 = time.perf_counter()
            test_loss, test_acc = evaluate(model, data.x_test, data.y_test, cfg.eval_batch_size)
            row = {"epoch": epoch + 1, "train_loss": (loss_sum / n).item(), "train_accuracy": (correct.float() / n).item(),
                   "test_loss": test_loss, "test_accuracy": test_acc, "seconds": train_seconds,
                   "lr": opt.param_groups[0]["lr"]}
            if adv is not None:
                row["train_epsilon"] = adv.epsilon_at(epoch)
                row["robust_test_accuracy"] = robust_accuracy_pgd(model, x_rob, y_rob, adv, cfg.eval_batch_size,
                                                                  order_gen)
            row["eval_seconds"] = time.perf_counter() - t1
            rows.append(row)
            if not math.isfinite(row["train_loss"]):
                raise UsageError(f"training diverged at epoch {epoch + 1} (loss is {row['train_loss']}); lower the lr")
            if row[monitor] > best_value:
                best_value, best_epoch, best_state = row[monitor], epoch + 1, _state_copy(model)
            metrics = f"loss {row['train_loss']:.3f} train {row['train_accuracy']:.3f} test {test_acc:.3f}"
            if adv is not None:
                metrics += f" robust {row['robust_test_accuracy']:.3f}"
            bar.update(task, advance=1, metrics=metrics)
            if cfg.early_stopping and epoch + 1 - best_epoch >= cfg.early_stopping:
                break
    model.eval()
    return TrainResult(pd.DataFrame(rows), _state_copy(model), best_state, best_epoch, monitor)

