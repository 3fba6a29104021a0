"""Nakkiran et al. 2019 ("Deep Double Descent"), the 5-layer CNN: widths [k, 2k, 4k, 8k] then a linear layer."""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from robustcnn.models.common import Classifier, register_model

BASE_WIDTHS = (1, 2, 4, 8)  # times k (MadryLab/robustness style: one multiplier over base widths)


def conv_bn_relu(c_in: int, c_out: int, pool: bool, batchnorm: bool = True) -> list[nn.Module]:
    norm: list[nn.Module] = [nn.BatchNorm2d(c_out)] if batchnorm else []
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm), *norm, nn.ReLU()]
    return layers + ([nn.MaxPool2d(2, ceil_mode=True)] if pool else [])


class CNN5(Classifier):
    def __init__(self, *, in_channels: int, num_classes: int, input_size: int, width: int = 64, batchnorm: bool = True,
                 dropout: float = 0.0, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, mean, std)
        widths = [width * b for b in BASE_WIDTHS]
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c_out in enumerate(widths):  # pooling after layers 2-4, as in the paper
            layers += conv_bn_relu(c_in, c_out, pool=i > 0, batchnorm=batchnorm)
            c_in = c_out
        # The paper ends with MaxPool(4) on 32x32 (4x4 left); adaptive pooling does the same for any size.
        self.body = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(c_in, num_classes))


@register_model(width=64, description="Nakkiran et al. 2019 5-layer CNN, widths [k,2k,4k,8k] (width=k)")
def cnn5(**kw) -> CNN5:
    return CNN5(**kw)
