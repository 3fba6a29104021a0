"""Conveniences of the Python API: data in whatever form the user holds it, and adversarial examples on demand.

    x_adv = rc.attack(model.eval(), x, y, attack="pgd", epsilon=0.1)   # (N, C, H, W), like x
    card = rc.benchmark_model(model, dataset=(x, y))                    # or a name, a DataBundle, a DataLoader
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from robustcnn.attacks import AttackConfig
from robustcnn.data import DataBundle, load_dataset
from robustcnn.errors import UsageError

CUSTOM = "custom"  # the dataset name of tensors and loaders: not a named dataset, so never on a leaderboard
DATA_FORMS = "a dataset name, a DataBundle, an (x, y) pair of tensors or a torch DataLoader"


def check_images(x: Any, y: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x: (N, C, H, W) floating point in [0,1]; y: (N,) integer labels. Anything else is a one-line UsageError."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise UsageError(f"{what}: x and y must be torch tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.dim() != 4 or not x.is_floating_point():
        raise UsageError(f"{what}: x must be a float tensor of shape (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool or len(y) != len(x):
        raise UsageError(f"{what}: y must be {len(x)} integer labels (shape ({len(x)},)), got {y.dtype} "
                         f"{tuple(y.shape)}")
    if len(x) == 0:
        raise UsageError(f"{what}: no examples (x is empty)")
    if x.min() < 0 or x.max() > 1:
        raise UsageError(f"{what}: x must hold pixels in [0, 1] (got {x.min().item():.3g}..{x.max().item():.3g}); "
                         "normalize inside the model (benchmark: mean=/std=) so attacks see raw pixels")
    if y.min() < 0:
        raise UsageError(f"{what}: labels must be class indices >= 0, got {y.min().item()}")
    return x, y.long()


def _from_loader(loader: torch.utils.data.DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for i, batch in enumerate(loader):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise UsageError(f"the DataLoader's batch {i} is a {type(batch).__name__}, not an (images, labels) pair")
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        raise UsageError("the DataLoader yields no batches")
    return torch.cat(xs), torch.cat(ys)


def as_bundle(dataset: Any, *, root: Any = None, image_size: int | None = None,
              device: torch.device | str = "cpu") -> DataBundle:
    """Any supported form of evaluation data as a DataBundle on `device`.

    Tensors and DataLoaders become the test split of a bundle named 'custom' (their examples, in their order);
    its training split holds the same tensors, used only for the channel statistics a fresh zoo model
    normalizes with (weights loaded afterwards replace them). The class count is max(y) + 1 until
    `with_model_classes` widens it to the model's outputs."""
    if isinstance(dataset, str):
        return load_dataset(dataset, root=root, image_size=image_size, device=device)
    if isinstance(dataset, DataBundle):
        _check_size(dataset.x_test, image_size, "the DataBundle")
        return dataset.to(device)
    if isinstance(dataset, torch.utils.data.DataLoader):
        x, y = check_images(*_from_loader(dataset), "the DataLoader's data")
    elif isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        x, y = check_images(dataset[0], dataset[1], "dataset=(x, y)")
    else:
        raise UsageError(f"dataset must be {DATA_FORMS}, got {type(dataset).__name__}")
    _check_size(x, image_size, "the tensors")
    classes = [str(c) for c in range(int(y.max()) + 1)]
    x, y = x.to(device), y.to(device)
    return DataBundle(CUSTOM, x, y, x, y, classes, source="tensors given to the API")


def _check_size(x: torch.Tensor, image_size: int | None, what: str) -> None:
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        raise UsageError(f"{what} hold {x.shape[-2]}x{x.shape[-1]} images, the model needs {image_size}x{image_size}; "
                         f"resize them (load_dataset(..., image_size={image_size}))")


def with_model_classes(data: DataBundle, model: nn.Module) -> DataBundle:
    """For custom data: widen the class count to the model's output width when the labels do not use every class
    (the first examples of a test set may miss one); the pre-flight check still sees a mismatch as one."""
    if data.name != CUSTOM:
        return data
    try:
        with torch.no_grad():
            width = model(data.x_test[:2]).shape[-1]
    except Exception:  # the pre-flight check reports a model that rejects the inputs, in one line
        return data
    if isinstance(width, int) and width > data.num_classes:
        data.class_names = [str(c) for c in range(width)]
    return data


def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: str | AttackConfig = "pgd",
           epsilon: float, seed: int = 0, batch_size: int = 500) -> torch.Tensor:
    """Adversarial examples of (x, y) against `model`, one per input, shaped like x and on x's device.

    Each output is a verified adversarial example (inside the epsilon ball in the attack's norm, in [0,1], and
    misclassified by the model) where the attack succeeded, and the clean input itself where it failed or where
    the model already misclassifies the clean input (that input is its own adversarial example). So
    `(model(attack(...)).argmax(1) == y).float().mean()` is the robust accuracy at `epsilon`.

    attack: a registered name (`robustcnn attacks`) or an AttackConfig with settings (steps, restarts, ...).
    epsilon: a fraction of the [0,1] pixel range (L-inf) or an L2 radius, per the attack's threat model.
    The model is used as given: call model.eval() first. Random starts are seeded with `seed`.
    """
    from robustcnn.evaluation import evaluate_robustness

    x, y = check_images(x, y, "attack(model, x, y)")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise UsageError(f"epsilon must be a number (a fraction of the [0,1] pixel range), got {epsilon!r}")
    device = next((p.device for p in model.parameters()), x.device)
    result = evaluate_robustness(model, x.to(device), y.to(device), attacks=[attack], epsilons=[float(epsilon)],
                                 batch_size=batch_size, seed=seed, keep_adversarials=len(x))
    name = attack.name if isinstance(attack, AttackConfig) else attack
    ((key, adv),) = [(k, v) for k, v in result.adversarials.items() if k[0] == name]
    return adv.to(x.device)
