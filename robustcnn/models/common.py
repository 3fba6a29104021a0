"""Pieces every model family shares: the registry, the [0,1]-in base class, Keras-style init."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustcnn.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")


def register_model(name: str | None = None, *, description: str = "", input_size: int | None = None,
                   normalize: bool = True, width: int | None = None) -> Callable:
    """Register a factory `f(*, in_channels, num_classes, input_size, mean=None, std=None, **kw) -> Classifier`.

    input_size: the fixed square size the model needs (None: any, the dataset's own).
    normalize: whether the model standardizes its [0,1] input with the dataset's channel mean/std.
    width: the default width multiplier k of a width-scalable family (None: not scalable).
    """
    return MODELS.register(name, description=description, input_size=input_size, normalize=normalize, width=width)


class Classifier(nn.Module):
    """Base class: scores = body((x - mean) / std). x: (N, C, H, W) in [0,1]; scores: (N, classes).

    `criterion(scores, y)` is the training loss (cross-entropy unless a model defines its own).
    mean/std are persistent buffers, so a checkpoint restores the exact normalization it was trained with.
    """

    model_name: str = ""

    def __init__(self, in_channels: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        shape = (1, in_channels, 1, 1)
        mean_t = torch.tensor(mean if mean is not None else [0.0] * in_channels).view(shape)
        std_t = torch.tensor(std if std is not None else [1.0] * in_channels).view(shape)
        self.register_buffer("mean", mean_t.float())
        self.register_buffer("std", std_t.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)

    def criterion(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(scores, y)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def keras_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases, Keras's defaults, for the models that follow a Keras seed."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
