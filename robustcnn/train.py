"""The trainer: standard and adversarial (PGD-AT, FGSM-AT) training with a per-epoch history.

    result = train(model, data, TrainConfig(epochs=12, optimizer="adadelta", val_fraction=0.1), seed=0, device="cpu")
    result.history  # DataFrame, one row per epoch, columns in COLUMNS order

One epoch is three steps, each a function: `train_epoch` (the updates), `evaluate_splits` (measurement, eval
mode, after the epoch) and `Selector` (best checkpoint and early stopping, from the validation split only).

History columns (eval mode = dropout off, BatchNorm on its running statistics):
  train_loss, train_accuracy       eval mode, clean inputs, on a fixed seeded subset of `train_eval_n` training
                                   examples: the train figure every train/test gap uses
  train_loss_running, train_accuracy_running   the running average over the epoch's batches in train mode, on
                                   the batches as trained (augmented, adversarial), as Keras reports it
  val_loss, val_accuracy           eval mode, the validation split (only with val_fraction > 0)
  test_loss, test_accuracy         eval mode, the whole test split: reported, never used to choose anything
  seconds (the training phase), lr, eval_seconds (the measurements), train_eval_n
  with adversarial training also train_epsilon, robust_val_accuracy (with a validation split) and
  robust_test_accuracy: PGD at the target epsilon (not the warm-up's) on the first `eval_examples` validation / test examples;
  robust_test_n (how many test examples that was) and robust_eval_steps (the PGD steps) label it
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from enum import Enum

import pandas as pd
import torch
import torch.nn as nn

from robustcnn.data import DataBundle, augment, batches, split_validation
from robustcnn.devices import resolve_device, seed_everything  # noqa: F401  (re-exported: robustcnn.train.*)
from robustcnn.errors import UsageError
from robustcnn.perturb import fgsm_rs, pgd_linf
from robustcnn.progress import task as progress_task


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


class AttackMode(str, Enum):
    """The model's mode while adversarial training generates its attacks."""

    EVAL = "eval"    # BatchNorm statistics frozen, dropout off (as TRADES does); the update step is in train mode
    TRAIN = "train"  # train mode: BatchNorm statistics move on every attack step, dropout weakens the attack


DEFAULT_LR = {OptimizerName.SGD: 0.05, OptimizerName.ADAM: 1e-3, OptimizerName.ADADELTA: 1.0}
MIN_TRAIN_EVAL = 2000  # eval-mode train metrics need at least this many examples, or the whole training set
COLUMNS = ["epoch", "train_loss", "train_accuracy", "train_loss_running", "train_accuracy_running", "val_loss",
           "val_accuracy", "test_loss", "test_accuracy", "seconds", "lr", "train_epsilon", "robust_val_accuracy",
           "robust_test_accuracy", "robust_test_n", "robust_eval_steps", "eval_seconds", "train_eval_n"]


REPR_COLUMNS = ["train_loss", "train_accuracy", "val_accuracy", "test_loss", "test_accuracy", "robust_val_accuracy",
                "robust_test_accuracy"]


def _integer(owner: str, name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UsageError(f"{owner} {name} must be an integer >= {minimum}, got {value!r}")


def _number(owner: str, name: str, value: object, low: float, high: float, *, low_open: bool = False,
            high_open: bool = False) -> None:
    finite = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not (finite and (low < value if low_open else low <= value) and (value < high if high_open else value <= high)):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise UsageError(f"{owner} {name} must be a finite number in {interval}, got {value!r}")


def _choice(owner: str, name: str, value: object, kind: type[Enum]) -> None:
    try:
        kind(value)
    except ValueError:
        raise UsageError(f"{owner} {name} must be one of {', '.join(e.value for e in kind)}, got {value!r}") from None


@dataclass(frozen=True)
class AdversarialTraining:
    """Train on adversarial examples. epsilon is a fraction of the [0,1] pixel range (L-inf).

    step_size: None -> 2.5 * epsilon / steps for PGD (Madry et al.), 1.25 * epsilon for FGSM (Wong et al.).
    eval_examples / eval_steps: robust accuracy each epoch (PGD, same epsilon) on the first n validation and
        test examples; the validation figure drives selection, the test figure is only reported.
    warmup_epochs: ramp the training epsilon linearly up to `epsilon` over this many epochs (0: none); small
        models trained at a large epsilon from the first step often stay at chance without it.
    attack_mode: "eval" generates the attacks with BatchNorm statistics frozen and dropout off, then trains in
        train mode; "train" attacks the model as it trains (BN statistics updated by every attack step).
    """

    method: AdversarialMethod = AdversarialMethod.PGD
    epsilon: float = 0.3
    steps: int = 10
    step_size: float | None = None
    eval_examples: int = 500
    eval_steps: int = 20
    warmup_epochs: int = 0
    attack_mode: AttackMode = AttackMode.EVAL

    def epsilon_at(self, epoch: int) -> float:
        """The training epsilon during `epoch` (0-based)."""
        return self.epsilon * min(1.0, (epoch + 1) / self.warmup_epochs) if self.warmup_epochs else self.epsilon

    def __post_init__(self) -> None:
        if not (isinstance(self.epsilon, numbers.Real) and math.isfinite(self.epsilon) and 0 <= self.epsilon <= 1):
            raise UsageError(f"adversarial epsilon must be in [0, 1] (a fraction of the pixel range), got {self.epsilon}")
        for name, minimum in (("steps", 1), ("eval_steps", 1), ("eval_examples", 1), ("warmup_epochs", 0)):
            _integer("adversarial", name, getattr(self, name), minimum)
        if self.step_size is not None:
            _number("adversarial", "step_size", self.step_size, 0, 1, low_open=True)
        _choice("adversarial", "method", self.method, AdversarialMethod)
        _choice("adversarial", "attack_mode", self.attack_mode, AttackMode)

    @property
    def resolved_step_size(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return 1.25 * self.epsilon if self.method == AdversarialMethod.FGSM else 2.5 * self.epsilon / self.steps


@dataclass(frozen=True)
class TrainConfig:
    """How to train. lr None picks the optimizer's usual default (sgd 0.05, adam 1e-3, adadelta 1.0).

    val_fraction: carve this fraction of each class out of the training data as a validation split (fixed by the
        seed, before training; 0: none). Early stopping, the best checkpoint and the robust monitor need it.
    early_stopping: stop after this many epochs without a better validation accuracy (robust validation
        accuracy under adversarial training); 0: off.
    train_eval_examples: eval-mode train metrics are measured on a fixed seeded subset of this many training
        examples (all of them if fewer); at least 2,000 unless it covers the whole training set.
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
    val_fraction: float = 0.0
    train_eval_examples: int = 10000
    crop_padding: int = 0
    flip: bool = False
    eval_batch_size: int = 1000
    adversarial: AdversarialTraining | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "step_epochs", "train_eval_examples"):
            _integer("train", name, getattr(self, name), 1)
        for name in ("early_stopping", "crop_padding"):
            _integer("train", name, getattr(self, name), 0)
        if self.lr is not None:
            _number("train", "lr", self.lr, 0, math.inf, low_open=True, high_open=True)
        _number("train", "momentum", self.momentum, 0, 1, high_open=True)
        _number("train", "weight_decay", self.weight_decay, 0, math.inf, high_open=True)
        _number("train", "step_gamma", self.step_gamma, 0, 1, low_open=True)
        _choice("train", "optimizer", self.optimizer, OptimizerName)
        _choice("train", "schedule", self.schedule, Schedule)
        if self.val_fraction != 0:
            _number("train", "val_fraction (0 for none)", self.val_fraction, 0, 0.5, low_open=True)
        if self.early_stopping and not self.val_fraction:
            raise UsageError("early_stopping selects on a validation split: set val_fraction too (e.g. 0.1)")


@dataclass
class TrainResult:
    history: pd.DataFrame
    final_state: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor] | None  # the state at best_epoch; None without a validation split
    best_epoch: int | None
    monitor: str | None  # the validation column the best checkpoint maximizes; None without a validation split
    extras: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        # the last epoch's metrics, not the state_dicts (the dataclass's default repr prints every weight)
        last = self.history.iloc[-1] if len(self.history) else {}
        shown = ", ".join(f"{c} {last[c]:.4g}" for c in REPR_COLUMNS if c in last and not pd.isna(last[c]))
        best = f", best epoch {self.best_epoch} by {self.monitor}" if self.best_epoch is not None else ""
        return f"TrainResult({len(self.history)} epochs{best}; final: {shown or 'no metrics'})"


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


def monitor_column(cfg: TrainConfig) -> str | None:
    """The history column selection maximizes: always a validation column, None without a validation split."""
    if not cfg.val_fraction:
        return None
    return "robust_val_accuracy" if cfg.adversarial is not None else "val_accuracy"


@dataclass
class Splits:
    """One run's tensors on the device. train: what the optimizer sees (the training data less validation);
    train_eval: a fixed seeded subset of train for the eval-mode train metrics; val: None without val_fraction."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_train_eval: torch.Tensor
    y_train_eval: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor


def make_splits(data: DataBundle, cfg: TrainConfig, seed: int) -> Splits:
    """Carve the validation split, then draw the train-eval subset, both fixed by `seed`."""
    x, y, x_val, y_val = data.x_train, data.y_train, None, None
    if cfg.val_fraction:
        keep, held = split_validation(y, cfg.val_fraction, seed)
        x, y, x_val, y_val = x[keep], y[keep], x[held], y[held]
    n, k = len(y), cfg.train_eval_examples
    if k >= n:
        x_eval, y_eval = x, y
    elif k < MIN_TRAIN_EVAL:
        raise UsageError(f"train_eval_examples {k} covers neither {MIN_TRAIN_EVAL} examples nor the whole training "
                         f"set ({n}); raise it")
    else:
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 32452843))[:k].sort().values
        x_eval, y_eval = x[pick.to(y.device)], y[pick.to(y.device)]
    return Splits(x, y, x_eval, y_eval, x_val, y_val, data.x_test, data.y_test)


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
    return (loss_sum / len(y)).item(), correct.item() / len(y)


def robust_accuracy_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: AdversarialTraining,
                        batch_size: int, generator: torch.Generator) -> float:
    """Accuracy under PGD at the target epsilon, adv.epsilon, not the warm-up's (eval mode): the robust-overfitting y."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for xb, yb in batches(x, y, batch_size):
        x_adv = pgd_linf(model, xb, yb, epsilon=adv.epsilon, steps=adv.eval_steps,
                         step_size=2.5 * adv.epsilon / adv.eval_steps, generator=generator)
        with torch.no_grad():
            correct += (model(x_adv).argmax(1) == yb).sum()
    model.train(was_training)
    return correct.item() / len(y)


def adversarial_batch(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, adv: AdversarialTraining, epoch: int,
                      generator: torch.Generator) -> torch.Tensor:
    """The batch's adversarial examples at the epoch's epsilon; the model is left in train mode."""
    eps = adv.epsilon_at(epoch)
    step = adv.resolved_step_size * eps / adv.epsilon if adv.epsilon > 0 else 0.0  # the ratio stays as configured
    if adv.attack_mode == AttackMode.EVAL:
        model.eval()
    try:
        if adv.method == AdversarialMethod.FGSM:
            return fgsm_rs(model, xb, yb, epsilon=eps, step_size=step, generator=generator)
        return pgd_linf(model, xb, yb, epsilon=eps, steps=adv.steps, step_size=step, generator=generator)
    finally:
        model.train()


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                epoch: int, generator: torch.Generator) -> tuple[float, float]:
    """One shuffled pass of updates; returns the running (loss, accuracy) over the batches as trained."""
    model.train()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for xb, yb in batches(x, y, cfg.batch_size, shuffle=True, generator=generator):
        if cfg.crop_padding or cfg.flip:
            xb = augment(xb, crop_padding=cfg.crop_padding, flip=cfg.flip, generator=generator)
        if cfg.adversarial is not None:
            xb = adversarial_batch(model, xb, yb, cfg.adversarial, epoch, generator)
        scores = model(xb)
        loss = model.criterion(scores, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # accumulate on the device: no .item() sync per batch
        loss_sum += loss.detach() * len(yb)
        correct += (scores.detach().argmax(1) == yb).sum()
    return (loss_sum / len(y)).item(), correct.item() / len(y)


def evaluate_splits(model: nn.Module, splits: Splits, cfg: TrainConfig, epoch: int, seed: int) -> dict[str, float]:
    """Eval-mode metrics after an epoch: clean loss/accuracy on train-eval, val and test; under adversarial training
    also PGD accuracy at the training epsilon on the first eval_examples val and test examples."""
    parts = {"train": (splits.x_train_eval, splits.y_train_eval), "val": (splits.x_val, splits.y_val),
             "test": (splits.x_test, splits.y_test)}
    row: dict[str, float] = {}
    for name, (x, y) in parts.items():
        if x is not None:
            row[f"{name}_loss"], row[f"{name}_accuracy"] = evaluate(model, x, y, cfg.eval_batch_size)
    adv = cfg.adversarial
    if adv is not None:
        row["train_epsilon"] = adv.epsilon_at(epoch)
        for name in ("val", "test"):
            x, y = parts[name]
            if x is not None:
                # the same random starts every epoch: epochs are compared on equal terms, training draws untouched
                gen = torch.Generator().manual_seed(seed + 49979687)
                n = min(adv.eval_examples, len(y))
                row[f"robust_{name}_accuracy"] = robust_accuracy_pgd(model, x[:n], y[:n], adv, cfg.eval_batch_size,
                                                                     gen)
                if name == "test":  # the figure's label: PGD-<steps>, eps, n
                    row["robust_test_n"], row["robust_eval_steps"] = n, adv.eval_steps
    return row


class Selector:
    """The best checkpoint and early stopping. It is handed one validation column, never a test column."""

    def __init__(self, monitor: str | None, patience: int) -> None:
        self.monitor, self.patience = monitor, patience
        self.best_value, self.best_epoch, self.best_state = -math.inf, None, None

    def update(self, epoch: int, value: float | None, model: nn.Module) -> None:
        if value is not None and value > self.best_value:
            self.best_value, self.best_epoch, self.best_state = value, epoch, _state_copy(model)

    def should_stop(self, epoch: int) -> bool:
        return bool(self.patience) and self.best_epoch is not None and epoch - self.best_epoch >= self.patience


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _summary(row: dict[str, float]) -> str:
    shown = {"loss": "train_loss_running", "train": "train_accuracy", "val": "val_accuracy", "test": "test_accuracy",
             "robust val": "robust_val_accuracy", "robust test": "robust_test_accuracy"}
    return " ".join(f"{label} {row[col]:.3f}" for label, col in shown.items() if col in row)


def train(model: nn.Module, data: DataBundle, config: TrainConfig | None = None, *, seed: int = 0,
          device: str | torch.device = "auto", progress: bool | None = None, label: str = "train") -> TrainResult:
    """Train `model` on `data`; returns the per-epoch history, the final state and (with a validation split) the
    best state. The model and the data are moved to `device`. progress: None shows a bar in a terminal, else a
    line per epoch on stderr, unless robustcnn.progress is quiet; False silences it (robustcnn.progress.task)."""
    cfg = config or TrainConfig()
    dev = resolve_device(device)
    from robustcnn.learning_rules import has_own_rule, train_by_own_rule
    if has_own_rule(model):  # perceptron, neocognitron: the model's own learning rule, no optimizer
        return train_by_own_rule(model, data, cfg, seed=seed, device=dev, progress=progress, label=label)
    model.to(dev)
    splits = make_splits(data.to(dev), cfg, seed)
    seed_everything(seed)
    order_gen = torch.Generator().manual_seed(seed)  # shuffling, augmentation, attack starts: device-independent
    opt = make_optimizer(model, cfg)
    base_lrs = [g["lr"] for g in opt.param_groups]
    selector = Selector(monitor_column(cfg), cfg.early_stopping)
    rows: list[dict] = []
    with progress_task(label, cfg.epochs, enabled=progress) as bar:  # robustcnn.progress: a bar or a line per epoch
        for epoch in range(cfg.epochs):
            for group, base in zip(opt.param_groups, base_lrs):
                group["lr"] = base * lr_factor(cfg, epoch)
            t0 = time.perf_counter()
            running_loss, running_acc = train_epoch(model, opt, splits.x_train, splits.y_train, cfg, epoch, order_gen)
            t1 = time.perf_counter()
            if not math.isfinite(running_loss):
                raise UsageError(f"training diverged at epoch {epoch + 1} (loss is {running_loss}); lower the lr")
            measured = evaluate_splits(model, splits, cfg, epoch, seed)
            values = {**measured, "epoch": epoch + 1, "train_loss_running": running_loss,
                      "train_accuracy_running": running_acc, "seconds": t1 - t0, "lr": opt.param_groups[0]["lr"],
                      "eval_seconds": time.perf_counter() - t1, "train_eval_n": len(splits.y_train_eval)}
            row = {col: values[col] for col in COLUMNS if col in values}
            rows.append(row)
            selector.update(epoch + 1, row.get(selector.monitor) if selector.monitor else None, model)
            bar.advance(f"epoch {epoch + 1}: {_summary(row)}")
            if selector.should_stop(epoch + 1):
                break
    model.eval()
    return TrainResult(pd.DataFrame(rows), _state_copy(model), selector.best_state, selector.best_epoch,
                       selector.monitor)
