"""A model that is NOT in robustcnn's zoo, as a new user would bring it: plain PyTorch, its own factory.

It expects inputs normalized with the dataset's mean and std, as many published models do, so the benchmark
is told about them with --mean/--std and wraps the normalization inside (attacks still see [0,1] pixels).

    robustcnn benchmark examples/my_cnn.py:small_cnn --model-arg in_channels=1 --dataset mnist \
        --weights examples/my_cnn_mnist.pt --mean 0.1307 --std 0.3081 --data-root ../shared/data
"""
from __future__ import annotations

import torch
import torch.nn as nn


class SmallCNN(nn.Module):
    """conv 32 -> conv 64 (each 3x3, ReLU, max-pool 2) -> dense 128 -> classes. Works on 28x28 and 32x32."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def small_cnn(in_channels: int = 1, num_classes: int = 10, width: int = 32) -> SmallCNN:
    return SmallCNN(in_channels, num_classes, width)
