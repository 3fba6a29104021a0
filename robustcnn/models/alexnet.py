"""AlexNet (Krizhevsky et al. 2012) as the seed adapts it to 32x32 CIFAR-10 in Keras.

Shapes on a 32x32 input: conv11/4 -> 6x6, pool3/2 -> 2x2, conv5 same -> 2x2, pool same -> 1x1, three conv3
same -> 1x1, pool -> 1x1, so the classifier sees 384 features. 22,589,642 trainable parameters, plus the
704 BatchNorm running statistics Keras also counts (22,590,346).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from robustcnn.models.common import Classifier, keras_init, register_model


class AlexNetCIFAR(Classifier):
    def __init__(self, *, in_channels: int, num_classes: int, input_size: int = 32, dropout: float = 0.5,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, mean, std)
        features = nn.Sequential(
            nn.Conv2d(in_channels, 96, 11, stride=4), nn.ReLU(), nn.BatchNorm2d(96), nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(), nn.BatchNorm2d(256), nn.MaxPool2d(3, 2, padding=1),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(3, 2, padding=1),
            nn.Flatten(),
        )
        # a shape probe in eval mode without autograd: it must not touch BatchNorm's running statistics
        with torch.no_grad():
            n_features = features.eval()(torch.zeros(1, in_channels, input_size, input_size)).shape[1]
        features.train()
        self.body = nn.Sequential(
            *features,
            nn.Linear(n_features, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        keras_init(self)


@register_model(input_size=32, description="AlexNet adapted to 32x32 (the seed's Keras CIFAR-10 model)")
def alexnet_cifar(**kw) -> AlexNetCIFAR:
    return AlexNetCIFAR(**kw)
