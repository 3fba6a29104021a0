"""Fukushima's Neocognitron: S-cells and C-cells over cell-planes, self-organized without a teacher.

K. Fukushima, "Neocognitron: a self-organizing neural network model for a mechanism of pattern recognition
unaffected by shift in position", Biological Cybernetics 36, 193-202 (1980). Equation numbers below are that
paper's; "2003" is K. Fukushima, "Neocognitron for handwritten digit recognition", Neurocomputing 51, 161-180.

S-layer l (eq. 1-3), for plane k at position n, with u the C-layer below (or the input) and phi[x] = max(x, 0):
    u_S(k, n) = r * phi[(1 + sum_{k', v in S} a(k', v, k) u(k', n + v)) / (1 + 2r/(1 + r) * b(k) * v_C(n)) - 1]
    v_C(n)    = sqrt(sum_{k', v in S} c(v) u(k', n + v)^2)           (the inhibitory V-cell, an r.m.s. of its input)
with c(v) fixed, non-increasing in |v| and sum_{k', v} c = 1. After learning a (sum of) vector(s) X, the cell
answers about r * phi[cos(X, u) / theta - 1] = (1 + r) * phi[cos - theta] with theta = r/(1+r) (cosine in the
c-weighted inner product): r = 4 (theta 0.8) accepts only near-copies, r = 0.3 (theta 0.23) any rough match.
C-layer l (eq. 4-6), fixed weights d(v) over the connecting area D, saturation alpha:
    u_C(k, n) = psi[(1 + sum_{v in D} d(v) u_S(k, n + v)) / (1 + v_S(n)) - 1],   psi[x] = phi[x] / (alpha + phi[x])
    v_S(n)    = (1/K) sum_k sum_{v in D} d(v) u_S(k, n + v)            (lateral inhibition; `c_inhibition`)
(the paper prints psi[x] = phi[x / (alpha + x)], which is positive again for x < -alpha; the later papers'
phi[x] / (alpha + phi[x]) is used). C-layers lower the cell density (`c_strides`), so receptive fields grow
with depth (US1 sees 5x5 pixels, US2 5x5 C1-cells = 13x13 pixels, UC2 about 21x21).
Learning (eq. 7-8), per presentation: in every S-column (all planes, a `columns` x `columns` window) the largest
positive S-cell is a candidate; each plane's strongest candidate is its representative; only the planes with a
representative learn, by  da(k', v, k^) = q c(v) u(k', n^ + v),  db(k^) = (q/2) v_C(n^). Initial a are small
positive values with a weak, plane-dependent orientation bias and no randomness; b starts at 0.
1980's simulation: 16x16 input, three modules of 24 planes, 5x5 S-areas, r = 4.0, 1.5, 1.5, q = 1, 16, 16,
alpha = 0.5, five training patterns. b_rule="1980" is eq. 8; "norm" sets b to half the c-norm of a (as
Fukushima 2003 does), so theta is exact rather than raised by the spread of the patches a plane learned: with
r = 1.5 in higher layers that mattered (3 modules, 5,000 images: 66 % with eq. 8, 90 % with "norm"); with the
defaults' r = 0.3 it does not (97.6 % either way).

Documented departures, and what each buys on MNIST (first 10,000 training images, the whole test set, least-
squares readout unless stated; the defaults reach 97.6 % there):
- Readout (1980 has none: each top C-cell comes to answer one of its five patterns): `least_squares` fits a linear
  map from the top C-layer to +-1 class targets in closed form (ridge; lambda chosen on a held-out tenth of the
  training set); `prototype` is the paper-era nearest-prototype rule (cosine to each class's mean top vector):
  85.7 % instead of 97.7 %. Neither uses a gradient; the scores are a differentiable function of the input.
- Two modules for 28x28 digits, with 32 and 64 planes (1980: three of 24): a third module loses more than it
  adds (read out from UC3: 94.1 % with 32/32/64 planes, 96.0 % with 32/32/128; from the same networks' UC2:
  97.1 %). Lower selectivity in US2 (r = 0.3; 1980: 1.5) buys +0.2 point over r = 0.6 (97.5 %), r = 0.1
  another +0.1; r = 2 instead of 4 in US1 costs 0.6.
- Batches: a batch of presentations is judged against the same weights and the reinforcements summed. A plane
  never reinforced yet takes only the batch's single strongest representative, as if that image had come first
  (otherwise one fresh plane would average the many unrelated patches that make it win in one batch).
- Layer by layer: each S-layer self-organizes (`epochs` passes over `learn_images`) before the next one starts.
- Box-shaped d (1980: decreasing): C-cells answer exactly alike to a feature anywhere in their field, at no cost
  in accuracy (Gaussian d: 97.6 % too). The C-cells' lateral inhibition (eq. 6) is kept: without it 96.6 %.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustcnn.models.common import Classifier, register_model


def profile(size: int, kind: str) -> torch.Tensor:
    """(size, size) weights, non-increasing with the distance from the centre, peak 1: 'box' or 'gaussian'."""
    if kind == "box":
        return torch.ones(size, size)
    if kind != "gaussian":
        raise TypeError(f"profile must be 'box' or 'gaussian', got {kind!r}")
    grid = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    dist2 = grid[:, None] ** 2 + grid[None, :] ** 2
    return torch.exp(-dist2 / (2 * (size / 3) ** 2))


def initial_weights(planes: int, in_planes: int, size: int, scale: float) -> torch.Tensor:
    """1980's start: small positive values, weakly tuned to an orientation that turns from plane to plane
    (a function of v, k/K and k'/K' - k/K, no randomness). (planes, in_planes, size, size)."""
    grid = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    angle = torch.atan2(grid[:, None], grid[None, :])                       # direction of v
    k = torch.arange(planes, dtype=torch.float32)[:, None, None, None] / planes
    kp = torch.arange(in_planes, dtype=torch.float32)[None, :, None, None] / in_planes
    orient = 1 + 0.5 * torch.cos(2 * (angle[None, None] - math.pi * k))     # weak orientation preference
    mixing = 1 + 0.5 * torch.cos(2 * math.pi * (kp - k))                    # weak preference among input planes
    return scale * orient * mixing * profile(size, "gaussian")


class SLayer(nn.Module):
    """S-cells (eq. 1) with their V-cells (eq. 3) and the reinforcement rule (eq. 7-8). Maps: (N, K, H, W)."""

    anatomy_kind = "S-layer"

    def __init__(self, in_planes: int, planes: int, size: int, r: float, q: float, column: int,
                 init_scale: float, b_rule: str = "1980") -> None:
        super().__init__()
        if size % 2 == 0 or column % 2 == 0:
            raise TypeError("S-areas and S-columns must have odd sizes")
        if b_rule not in ("1980", "norm"):
            raise TypeError(f"b_rule must be '1980' or 'norm', got {b_rule!r}")
        self.size, self.r, self.q, self.column, self.b_rule = size, r, q, column, b_rule
        self.a = nn.Parameter(initial_weights(planes, in_planes, size, init_scale), requires_grad=False)
        self.b = nn.Parameter(torch.zeros(planes), requires_grad=False)
        c = profile(size, "gaussian")
        self.register_buffer("c", (c / (c.sum() * in_planes)).expand(in_planes, size, size).contiguous())
        self.register_buffer("reinforced", torch.zeros(planes))  # presentations each plane has learned from

    def inhibition(self, u: torch.Tensor) -> torch.Tensor:
        """V-cell (eq. 3): c-weighted r.m.s. of the input over the S-area. (N, 1, H, W)."""
        sq = F.conv2d(u * u, self.c[None], padding=self.size // 2)
        return torch.sqrt(sq.clamp_min(1e-12))  # clamped: sqrt has an infinite slope at 0 (blank background)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        excite = F.conv2d(u, self.a, padding=self.size // 2)
        theta = 2 * self.r / (1 + self.r)
        inhibit = theta * self.b.view(1, -1, 1, 1) * self.inhibition(u)
        return self.r * F.relu((1 + excite) / (1 + inhibit) - 1)

    @torch.no_grad()
    def representatives(self, us: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image and plane: (the representative's output, 0 if none; its flat position). (N, K, H, W) -> 2x (N, K)."""
        pad = self.column // 2
        best = us.amax(1, keepdim=True)                           # the largest output at each position
        column_max = F.max_pool2d(best, self.column, 1, pad)      # the candidate's value in the column centred there
        # a cell is a candidate when it is the maximum of some column containing it, i.e. when it reaches the
        # smallest column maximum around it (max_pool pads with -inf, so border columns are simply smaller)
        floor = -F.max_pool2d(-column_max, self.column, 1, pad)
        score = torch.where((us >= floor) & (us > 0), us, torch.zeros_like(us)).flatten(2)
        return score.max(2)

    def patches(self, u: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """The input each (image, plane) representative sees: u (N, K', H, W), flat positions (N, K) ->
        (N, K, K', s, s), zero beyond the border (only these patches are cut, not every position's)."""
        pad, width = self.size // 2, u.shape[-1]
        padded = F.pad(u, (pad, pad, pad, pad))
        offsets = torch.arange(self.size, device=u.device)
        rows = (where // width)[..., None] + offsets                          # (N, K, s) in padded coordinates
        cols = (where % width)[..., None] + offsets
        image = torch.arange(len(u), device=u.device)[:, None, None, None]
        # advanced indices around a slice: the indexed dims come first, the planes last -> (N, K, s, s, K')
        return padded[image, :, rows[..., :, None], cols[..., None, :]].permute(0, 1, 4, 2, 3)

    @torch.no_grad()
    def reinforce(self, u: torch.Tensor) -> int:
        """Eq. (7)-(8) for a batch of presentations u: (N, K', H, W). Returns the number of reinforcements."""
        us = self(u)
        value, where = self.representatives(us)
        chosen = value > 0
        fresh = self.reinforced == 0
        if fresh.any():  # a plane's first lesson comes from one image only (see the module docstring)
            first = torch.zeros_like(chosen)
            first[value.argmax(0), torch.arange(chosen.shape[1])] = True
            chosen = torch.where(fresh[None], chosen & first, chosen)
        weight = chosen.to(u.dtype)                                          # (N, K)
        picked = self.patches(u, where)                                       # (N, K, K', s, s)
        v = self.inhibition(u).flatten(1).gather(1, where)                   # (N, K)
        self.a += self.q * self.c * torch.einsum("nk,nkcij->kcij", weight, picked)
        self.reinforced += weight.sum(0)
        if self.b_rule == "norm":  # 2003: b is the c-norm of what a has accumulated, so theta is exact
            self.b.copy_(0.5 * (self.a.pow(2) / self.c).sum((1, 2, 3)).sqrt() * (self.reinforced > 0))
        else:
            self.b += self.q / 2 * (v * weight).sum(0)
        return int(weight.sum().item())


class CLayer(nn.Module):
    """C-cells (eq. 4-6): fixed pooling d over a size x size area, shunting inhibition, saturation alpha."""

    anatomy_kind = "C-layer"

    def __init__(self, size: int, stride: int, alpha: float, kind: str = "box", inhibition: bool = True) -> None:
        super().__init__()
        self.size, self.stride, self.alpha, self.inhibition = size, stride, alpha, inhibition
        self.register_buffer("d", profile(size, kind))

    def forward(self, us: torch.Tensor) -> torch.Tensor:
        k = us.shape[1]
        pooled = F.conv2d(us, self.d.expand(k, 1, -1, -1), stride=self.stride, padding=self.size // 2, groups=k)
        v_s = pooled.mean(1, keepdim=True) if self.inhibition else torch.zeros_like(pooled[:, :1])
        x = F.relu((1 + pooled) / (1 + v_s) - 1)
        return x / (self.alpha + x)


class Moments:
    """Running sums for least squares in float64 (n, sum f, sum f f^T, sum f t^T, sum t) of features shifted by
    a fixed `shift` (about their mean, so the float32 products per chunk lose little to cancellation)."""

    def __init__(self, shift: torch.Tensor) -> None:
        self.shift, self.n, self.sums = shift, 0.0, None

    def add(self, f: torch.Tensor, t: torch.Tensor) -> None:
        f = f - self.shift
        parts = (f.sum(0), f.T @ f, f.T @ t, t.sum(0))
        self.sums = [p.double() for p in parts] if self.sums is None else [a + p.double()
                                                                            for a, p in zip(self.sums, parts)]
        self.n += len(f)

    def __add__(self, other: Moments) -> Moments:
        out = Moments(self.shift)
        out.n, out.sums = self.n + other.n, [a + b for a, b in zip(self.sums, other.sums)]
        return out

    def ridge(self, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(W (D, K), b (K)) minimizing ||f W + b - t||^2 + lam * mean_eigenvalue * ||W||^2 (Cholesky)."""
        s, gram, cross, ts = self.sums
        mu, t_mu = s / self.n, ts / self.n
        g = gram - self.n * torch.outer(mu, mu)
        p = cross - self.n * torch.outer(mu, t_mu)
        scale = (torch.diagonal(g).sum() / len(g)).clamp_min(1e-12)
        eye = torch.eye(len(g), dtype=g.dtype, device=g.device)
        for jitter in (0.0, 1e-8, 1e-6, 1e-4):  # round-off can leave a constant feature slightly negative
            factor, info = torch.linalg.cholesky_ex(g + (lam + jitter) * scale * eye)
            if info.item() == 0:
                break
        w = torch.cholesky_solve(p, factor)
        return w, t_mu - (mu + self.shift.double()) @ w


def ridge_readout(features: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, classes: int,
                  *, seed: int, batch_size: int = 1000,
                  lambdas: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Closed-form ridge regression of +-1 class targets on features(x) -> (W (classes, D), b, stats).

    Streams x in batches (the features of all of MNIST would not fit comfortably in memory). lambda (relative to
    the mean eigenvalue of the centred Gram matrix) is chosen on a held-out tenth of the training examples, then
    the map is refitted on all of them; the test set is never seen."""
    held = torch.zeros(len(y), dtype=torch.bool)
    held[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:max(1, len(y) // 10)]] = True
    held = held.to(y.device)
    fit_m = held_m = None
    held_f = []
    for i in range(0, len(y), batch_size):
        f = features(x[i:i + batch_size]).float()
        if fit_m is None:
            fit_m, held_m = Moments(f.mean(0)), Moments(f.mean(0))
        t = 2 * F.one_hot(y[i:i + batch_size], classes).float() - 1
        h = held[i:i + batch_size]
        fit_m.add(f[~h], t[~h])
        held_m.add(f[h], t[h])
        held_f.append(f[h])
    f_held, y_held = torch.cat(held_f), y[held]
    accs = []
    for lam in lambdas:
        w, b = fit_m.ridge(lam)
        accs.append(((f_held @ w.float() + b.float()).argmax(1) == y_held).double().mean().item())
    best = max(range(len(lambdas)), key=lambda i: (accs[i], lambdas[i]))  # ties: the stronger regularization
    w, b = (fit_m + held_m).ridge(lambdas[best])  # refitted on all training examples
    return w.T.float(), b.float(), {"readout_lambda": lambdas[best], "readout_heldout_accuracy": accs[best]}


class Neocognitron(Classifier):
    """U0 -> (US_l -> UC_l) x L -> readout. Every stage is configurable; see the module docstring."""

    learning_rule = "self-organization (Fukushima 1980, winner-take-all, no teacher) + closed-form readout"

    def __init__(self, *, in_channels: int, num_classes: int, input_size: int = 28,
                 planes: Sequence[int] = (32, 64), s_sizes: Sequence[int] = (5, 5),
                 c_sizes: Sequence[int] = (5, 5), c_strides: Sequence[int] = (2, 2),
                 r: Sequence[float] = (4.0, 0.3), q: Sequence[float] = (1.0, 16.0),
                 columns: Sequence[int] = (5, 5), alpha: float = 0.5, c_profile: str = "box",
                 c_inhibition: bool = True, init_scale: float = 0.01, b_rule: str = "1980",
                 readout: str = "least_squares",
                 learn_images: int | None = 20000, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, mean, std)
        sizes = {len(v) for v in (planes, s_sizes, c_sizes, c_strides, r, q, columns)}
        if len(sizes) != 1:
            raise TypeError("planes, s_sizes, c_sizes, c_strides, r, q and columns need one entry per module")
        if readout not in ("least_squares", "prototype"):
            raise TypeError(f"readout must be 'least_squares' or 'prototype', got {readout!r}")
        self.readout, self.learn_images, self.num_classes = readout, learn_images, num_classes
        ins = [in_channels, *planes[:-1]]
        self.s_layers = nn.ModuleList(SLayer(i, k, s, rr, qq, col, init_scale, b_rule)
                                      for i, k, s, rr, qq, col in zip(ins, planes, s_sizes, r, q, columns))
        self.c_layers = nn.ModuleList(CLayer(s, st, alpha, c_profile, c_inhibition) for s, st in zip(c_sizes, c_strides))
        with torch.no_grad():
            dim = self.top(torch.zeros(1, in_channels, input_size, input_size)).shape[1]
        # untrained readout: all scores 0 (finite), until fit_without_backprop fills it
        self.readout_weight = nn.Parameter(torch.zeros(num_classes, dim), requires_grad=False)
        self.readout_bias = nn.Parameter(torch.zeros(num_classes), requires_grad=False)

    def stages(self, u: torch.Tensor, modules: int | None = None) -> torch.Tensor:
        """The output of UC_modules (all modules when None) for normalized input u."""
        for s, c in list(zip(self.s_layers, self.c_layers))[:modules]:
            u = c(s(u))
        return u

    def top(self, u: torch.Tensor) -> torch.Tensor:
        """The top C-layer, flattened: (N, D); unit length for the prototype readout."""
        f = self.stages(u).flatten(1)
        return F.normalize(f, dim=1, eps=1e-6) if self.readout == "prototype" else f

    def body(self, u: torch.Tensor) -> torch.Tensor:
        return self.top(u) @ self.readout_weight.T + self.readout_bias

    @torch.no_grad()
    def fit_without_backprop(self, x_train: torch.Tensor, y_train: torch.Tensor, *, epochs: int = 1,
                             batch_size: int = 128, seed: int = 0, progress: bool = False) -> dict[str, float]:
        """Self-organize US1, US2, ... in turn (`epochs` passes over `learn_images` training images each),
        then fit the readout on all training images. Returns learning statistics."""
        self.eval()
        gen = torch.Generator().manual_seed(seed)
        n = len(y_train)
        shown = min(n, self.learn_images or n)
        stats: dict[str, float] = {}
        for depth, layer in enumerate(self.s_layers):
            t0, count = time.perf_counter(), 0
            for _ in range(epochs):
                order = torch.randperm(n, generator=gen)[:shown].to(y_train.device)
                for start in range(0, shown, batch_size):
                    xb = x_train[order[start:start + batch_size]]
                    count += layer.reinforce(self.stages((xb - self.mean) / self.std, depth))
            used = int((layer.reinforced > 0).sum())
            stats.update({f"us{depth + 1}_reinforcements": count, f"us{depth + 1}_planes_used": used,
                          f"us{depth + 1}_seconds": time.perf_counter() - t0})
            if progress:
                print(f"US{depth + 1}: {used}/{len(layer.b)} planes learned, {count} reinforcements", file=sys.stderr)
        t0 = time.perf_counter()
        if self.readout == "prototype":
            sums = x_train.new_zeros(self.num_classes, self.readout_weight.shape[1])
            for i in range(0, n, 1000):
                sums.index_add_(0, y_train[i:i + 1000], self.top((x_train[i:i + 1000] - self.mean) / self.std))
            self.readout_weight.copy_(F.normalize(sums, dim=1, eps=1e-6))  # direction of each class's mean
            self.readout_bias.zero_()
        else:
            w, b, fit_stats = ridge_readout(lambda xb: self.top((xb - self.mean) / self.std), x_train, y_train,
                                            self.num_classes, seed=seed)
            self.readout_weight.copy_(w)
            self.readout_bias.copy_(b)
            stats.update(fit_stats)
        stats["readout_seconds"] = time.perf_counter() - t0
        return stats


@register_model(input_size=28, normalize=False,
                description="Fukushima's Neocognitron (1980): S/C-cells, winner-take-all self-organization, "
                            "closed-form readout, no gradients")
def neocognitron(**kw) -> Neocognitron:
    return Neocognitron(**kw)
