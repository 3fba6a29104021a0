"""Pre-activation ResNet18 of width k (He et al. 2016, identity mappings), widths [k, 2k, 4k, 8k]:
the family of Nakkiran et al. 2019's model-wise double descent (k = 64 is the standard ResNet18)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustcnn.models.cnn5 import BASE_WIDTHS
from robustcnn.models.common import Classifier, register_model


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(Classifier):
    def __init__(self, *, in_channels: int, num_classes: int, input_size: int, width: int = 64,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, mean, std)
        widths = [width * b for b in BASE_WIDTHS]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
        c_in = widths[0]
        for i, c_out in enumerate(widths):
            for j in range(2):  # two blocks per stage; stages 2-4 halve the resolution
                layers.append(PreActBlock(c_in, c_out, stride=2 if (i > 0 and j == 0) else 1))
                c_in = c_out
        self.body = nn.Sequential(*layers, nn.BatchNorm2d(c_in), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(c_in, num_classes))


@register_model(width=64, description="pre-activation ResNet18, widths [k,2k,4k,8k] (width=k)")
def resnet18k(**kw) -> PreActResNet18:
    return PreActResNet18(**kw)
