"""LeNet-5 twice: the seed's Keras variant, and LeCun, Bottou, Bengio & Haffner 1998 done faithfully.

"Gradient-based learning applied to document recognition", Proc. IEEE 86(11), 1998, Section II-B.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustcnn.models.common import Classifier, keras_init, register_model


# ------------------------------------------------------------------ the seed's Keras LeNet-5
class LeNet5(Classifier):
    """conv 6@5x5 tanh, avgpool 2, conv 16@5x5 tanh, avgpool 2, dense 120 sigmoid, dense 84 sigmoid, dense 10.

    On 28x28 input: 28 -> 24 -> 12 -> 8 -> 4, so the first dense layer sees 16*4*4 = 256 features and the
    model has 44,426 parameters (the seed's count).
    """

    def __init__(self, *, in_channels: int, num_classes: int, input_size: int = 28,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, mean, std)
        side = ((input_size - 4) // 2 - 4) // 2
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.Sigmoid(),
            nn.Linear(120, 84), nn.Sigmoid(),
            nn.Linear(84, num_classes),
        )
        keras_init(self)


@register_model(input_size=28, normalize=False, description="LeNet-5, the seed's Keras variant (tanh/sigmoid, avgpool)")
def lenet5(**kw) -> LeNet5:
    return LeNet5(**kw)


# ------------------------------------------------------------------ LeCun et al. 1998
A, S = 1.7159, 2.0 / 3.0  # squashing f(a) = A tanh(S a) (paper, Appendix A)
BACKGROUND, FOREGROUND = -0.1, 1.175  # input levels: white -> -0.1, black -> 1.175 (mean ~0, variance ~1)

# Table I: which S2 feature maps (rows 0-5) feed each C3 map (columns 0-15).
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),  # 3 neighbouring maps
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),  # 4 neighbouring maps
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),  # 4 non-neighbouring
    (0, 1, 2, 3, 4, 5),  # all six
)

# The output RBF units' fixed parameter vectors: stylised 7x12 bitmaps of the digits, '#' = +1, '.' = -1
# (drawn for robustcnn in the spirit of the paper's Fig. 3; 84 = 7 * 12 = the size of F6).
DIGIT_BITMAPS: tuple[str, ...] = (
    ".......|..###..|.#...#.|#.....#|#.....#|#.....#|#.....#|#.....#|#.....#|.#...#.|..###..|.......",  # 0
    ".......|...#...|..##...|.#.#...|...#...|...#...|...#...|...#...|...#...|...#...|.#####.|.......",  # 1
    ".......|..###..|.#...#.|#.....#|......#|.....#.|....#..|...#...|..#....|.#.....|#######|.......",  # 2
    ".......|.#####.|#.....#|......#|......#|...###.|......#|......#|......#|#.....#|.#####.|.......",  # 3
    ".......|.....#.|....##.|...#.#.|..#..#.|.#...#.|#....#.|#######|.....#.|.....#.|.....#.|.......",  # 4
    ".......|#######|#......|#......|######.|......#|......#|......#|......#|#.....#|.#####.|.......",  # 5
    ".......|..####.|.#.....|#......|#......|#.###..|##...#.|#.....#|#.....#|.#...#.|..###..|.......",  # 6
    ".......|#######|......#|.....#.|....#..|....#..|...#...|...#...|..#....|..#....|..#....|.......",  # 7
    ".......|..###..|.#...#.|#.....#|.#...#.|..###..|.#...#.|#.....#|#.....#|.#...#.|..###..|.......",  # 8
    ".......|..###..|.#...#.|#.....#|#.....#|.#...##|..###.#|......#|......#|.....#.|.####..|.......",  # 9
)


def digit_prototypes() -> torch.Tensor:
    """(10, 84) tensor of +-1: row i is the bitmap of digit i read row by row."""
    rows = []
    for art in DIGIT_BITMAPS:
        lines = art.split("|")
        assert len(lines) == 12 and all(len(line) == 7 for line in lines), "bitmaps are 12 rows of 7"
        rows.append([1.0 if ch == "#" else -1.0 for ch in "".join(lines)])
    return torch.tensor(rows)


def squash(a: torch.Tensor) -> torch.Tensor:
    return A * torch.tanh(S * a)


class Squash(nn.Module):
    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return squash(a)


class PaperInput(nn.Module):
    """[0,1] image -> the paper's levels, centred in a 32x32 field (a 28x28 digit gets a 2-pixel border)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (32 - x.shape[-1]) // 2
        x = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
        return BACKGROUND + (FOREGROUND - BACKGROUND) * x


class Subsample(nn.Module):
    """S2/S4: per map, (sum of a 2x2 block) * coefficient + bias, then squashing. 2 parameters per map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        bound = 2.4 / 4  # fan-in of a unit is 4
        self.coef = nn.Parameter(torch.empty(channels).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(channels).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        summed = F.avg_pool2d(x, 2) * 4
        return squash(summed * self.coef.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1))


class PartialConv(nn.Module):
    """C3: a 5x5 convolution in which output map j sees only the input maps in C3_TABLE[j].

    Only the 60 connected 5x5 kernels are parameters (1,500 weights + 16 biases = 1,516); forward scatters
    them into a dense (16, 6, 5, 5) kernel whose unconnected slots stay zero.
    """

    def __init__(self, table: tuple[tuple[int, ...], ...] = C3_TABLE, in_maps: int = 6, k: int = 5) -> None:
        super().__init__()
        self.out_maps, self.in_maps, self.k = len(table), in_maps, k
        flat = [out * in_maps + inp for out, inputs in enumerate(table) for inp in inputs]
        self.register_buffer("slots", torch.tensor(flat), persistent=False)
        fan_in = torch.tensor([len(table[out]) * k * k for out, inputs in enumerate(table) for _ in inputs])
        bound = (2.4 / fan_in.float()).view(-1, 1, 1)
        self.weight = nn.Parameter((torch.rand(len(flat), k, k) * 2 - 1) * bound)
        self.bias = nn.Parameter((torch.rand(len(table)) * 2 - 1) * 2.4 / 75)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = x.new_zeros(self.out_maps * self.in_maps, self.k, self.k).index_copy(0, self.slots, self.weight)
        return F.conv2d(x, dense.view(self.out_maps, self.in_maps, self.k, self.k), self.bias)


class EuclideanRBF(nn.Module):
    """Output layer: y_i = sum_j (x_j - w_ij)^2 with fixed w (the digit bitmaps). Returns scores = -y,
    so argmax is the nearest prototype and attacks/accuracy treat them like logits."""

    def __init__(self, prototypes: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("prototypes", prototypes)  # (classes, 84), not trainable

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 84) -> (N, classes)
        return -torch.cdist(x, self.prototypes).pow(2)


def map_loss(scores: torch.Tensor, y: torch.Tensor, j: float) -> torch.Tensor:
    """The paper's MAP criterion (eq. 9): y_D + log(exp(-j) + sum_i exp(-y_i)), with scores = -y.

    The exp(-j) term is a "rubbish class" that keeps the penalties from collapsing (pushing every
    y_i down at once); the paper leaves the constant j unstated, so it is a parameter here."""
    rubbish = torch.full_like(scores[:, :1], -j)
    return (-scores.gather(1, y[:, None]).squeeze(1) + torch.logsumexp(torch.cat([rubbish, scores], 1), 1)).mean()


class LeNet5_1998(Classifier):
    """C1 6@5x5, S2, C3 16@5x5 (Table I), S4, C5 120@5x5, F6 84, RBF output: 60,000 trainable parameters."""

    def __init__(self, *, in_channels: int, num_classes: int = 10, input_size: int = 28, map_j: float = 0.1,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, mean, std)
        if num_classes != 10:
            raise TypeError("lenet5_1998's RBF prototypes are the ten digits; it needs exactly 10 classes")
        self.map_j = map_j
        c1, c5, f6 = nn.Conv2d(in_channels, 6, 5), nn.Conv2d(16, 120, 5), nn.Linear(120, 84)
        for layer in (c1, c5, f6):  # weights uniform in +-2.4/F_i, F_i the fan-in (paper, Appendix A)
            bound = 2.4 / (layer.weight[0].numel())
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.uniform_(layer.bias, -bound, bound)
        self.body = nn.Sequential(
            PaperInput(),                      # (N, C, 32, 32)
            c1, Squash(), Subsample(6),        # C1 (N, 6, 28, 28) -> S2 (N, 6, 14, 14)
            PartialConv(), Squash(), Subsample(16),  # C3 (N, 16, 10, 10) -> S4 (N, 16, 5, 5)
            c5, Squash(), nn.Flatten(),        # C5 (N, 120)
            f6, Squash(),                      # F6 (N, 84)
            EuclideanRBF(digit_prototypes()),  # (N, 10) scores = -distance^2
        )

    def criterion(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return map_loss(scores, y, self.map_j)


@register_model(input_size=28, normalize=False,
                description="LeNet-5 of LeCun et al. 1998: Table I C3, RBF outputs, MAP loss (60,000 params)")
def lenet5_1998(**kw) -> LeNet5_1998:
    return LeNet5_1998(**kw)
