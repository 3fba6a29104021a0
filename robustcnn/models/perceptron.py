"""Rosenblatt's perceptron: one layer of linear threshold units over the pixels, one unit per class.

F. Rosenblatt, "The perceptron: a probabilistic model for information storage and organization in the brain",
Psychological Review 65(6), 1958; the error-correction rule as in "Principles of Neurodynamics", 1962.

Unit c fires when w_c . x + b_c > 0. Training is one-vs-rest and mistake-driven, with no gradients: for every
example and every unit whose thresholded output disagrees with its target t_c = +1 (y = c) or -1 (y != c),
w_c += lr * t_c * x and b_c += lr * t_c; a unit that is right is left alone. The prediction is the unit with
the largest pre-threshold activation, and those activations are the model's scores (so attacks see a linear,
differentiable model), divided by one positive constant set after learning: their standard deviation on the
training set. That changes no decision and no step of the rule, but without it the activations (sums of
thousands of corrections) saturate a softmax, cross-entropy gradients are exactly zero in float32 and gradient
attacks go blind (the evaluation lint FAILs such a model: 89 % zero input gradients on digits).

Minibatches: the rule is applied to `batch_size` examples at once, every example's mistakes judged against the
weights at the start of the batch and the corrections summed (batch_size=1 is Rosenblatt's exact sequential
rule; larger batches are the usual vectorized variant and are much faster on tensors). Examples are visited in
a seeded random order every epoch. `average=True` returns the averaged perceptron (Freund & Schapire 1999)
instead of the last weights: a documented departure that trades faithfulness for a steadier result.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import torch
import torch.nn as nn

from robustcnn.models.common import Classifier, register_model


class Perceptron(Classifier):
    """scores = x.flatten() @ W.T + b; W: (classes, C*H*W). Learned by the perceptron rule only."""

    learning_rule = "perceptron rule (Rosenblatt 1958): mistake-driven, one-vs-rest, no gradients"

    def __init__(self, *, in_channels: int, num_classes: int, input_size: int = 28, lr: float = 1.0,
                 average: bool = False, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, mean, std)
        self.lr, self.average = lr, average
        features = in_channels * input_size * input_size
        # zero start, as Rosenblatt's association-to-response weights; never touched by a gradient
        self.weight = nn.Parameter(torch.zeros(num_classes, features), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(num_classes), requires_grad=False)
        self.register_buffer("score_scale", torch.ones(()))  # see the module docstring

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """The units' pre-threshold activations w . x + b for normalized x: (N, C, H, W) -> (N, classes)."""
        return x.flatten(1) @ self.weight.T + self.bias

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.activations(x) / self.score_scale

    @torch.no_grad()
    def perceptron_step(self, x: torch.Tensor, y: torch.Tensor) -> int:
        """One application of the rule to a batch; returns how many (example, unit) pairs were wrong."""
        inputs = (x - self.mean) / self.std  # the rule acts on what the units see, after the model's normalization
        scores = self.activations(inputs)
        targets = torch.full_like(scores, -1.0)
        targets[torch.arange(len(y)), y] = 1.0
        wrong = (targets * scores <= 0).to(scores.dtype)  # a zero activation is a mistake: it fires for nobody
        update = self.lr * wrong * targets                 # (N, classes): +lr, -lr or 0 per unit and example
        self.weight += update.T @ inputs.flatten(1)
        self.bias += update.sum(0)
        return int(wrong.sum().item())

    @torch.no_grad()
    def fit_without_backprop(self, x_train: torch.Tensor, y_train: torch.Tensor, *, epochs: int = 10,
                             batch_size: int = 128, seed: int = 0, progress: bool = False) -> dict[str, float]:
        """Run the perceptron rule for `epochs` passes; returns learning statistics (no test data seen)."""
        self.eval()
        gen = torch.Generator().manual_seed(seed)
        n = len(y_train)
        w_sum, b_sum, steps = torch.zeros_like(self.weight), torch.zeros_like(self.bias), 0
        stats: dict[str, float] = {}
        t0 = time.perf_counter()
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen).to(y_train.device)
            mistakes = 0
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                mistakes += self.perceptron_step(x_train[idx], y_train[idx])
                if self.average:
                    w_sum += self.weight
                    b_sum += self.bias
                    steps += 1
            stats[f"unit_mistakes_epoch_{epoch + 1}"] = float(mistakes)
            if progress:
                print(f"perceptron epoch {epoch + 1}/{epochs}: {mistakes} unit mistakes", file=sys.stderr)
            if mistakes == 0:  # converged: every unit is right on every example, the rule is at rest
                break
        if self.average and steps:
            self.weight.copy_(w_sum / steps)
            self.bias.copy_(b_sum / steps)
        spread = torch.cat([self.activations((x_train[i:i + 1000] - self.mean) / self.std).flatten()
                            for i in range(0, n, 1000)]).std()
        self.score_scale.fill_(spread.item() if spread > 0 else 1.0)
        stats.update(epochs_run=float(epoch + 1), learn_seconds=time.perf_counter() - t0)
        return stats


@register_model(normalize=False, description="Rosenblatt's perceptron (1958): threshold units over pixels, "
                "perceptron rule, no gradients")
def perceptron(**kw) -> Perceptron:
    return Perceptron(**kw)
