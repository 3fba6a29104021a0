"""A one-hidden-layer MLP of width k: the classic model-wise double-descent subject."""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from robustcnn.models.common import Classifier, register_model


class MLP(Classifier):
    def __init__(self, *, in_channels: int, num_classes: int, input_size: int, width: int = 512, dropout: float = 0.0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, mean, std)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size * input_size, width), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(width, num_classes))


@register_model(width=512, description="MLP, one hidden ReLU layer of width k (width=k)")
def mlp(**kw) -> MLP:
    return MLP(**kw)
