"""Every registered model (timm-style parametrization) plus the exact seed/paper parameter counts."""
from __future__ import annotations

import pytest
import torch

from robustcnn.errors import UsageError
from robustcnn.models import count_parameters, create_model, list_models, model_input_size
from robustcnn.models.lenet import digit_prototypes, map_loss


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("dataset,channels,native", [("mnist", 1, 28), ("cifar10", 3, 32)])
def test_forward_shape_and_finite(name, dataset, channels, native):
    kwargs = {"width": 4} if name in ("cnn5", "resnet18k", "mlp") else {}
    model = create_model(name, dataset=dataset, **kwargs).eval()
    size = model_input_size(name) or native
    out = model(torch.rand(3, channels, size, size))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


def test_registry_listing_and_errors():
    assert list_models("lenet*") == ["lenet5", "lenet5_1998"]
    with pytest.raises(UsageError, match="did you mean 'alexnet_cifar'"):
        create_model("alexnet")


def test_lenet5_has_the_seeds_44426_parameters():
    assert count_parameters(create_model("lenet5", dataset="mnist")) == 44_426


def test_lenet5_1998_has_60000_trainable_parameters_and_fixed_rbf():
    model = create_model("lenet5_1998", dataset="mnist")
    assert count_parameters(model) == 60_000
    protos = model.body[-1].prototypes
    assert protos.shape == (10, 84) and set(protos.unique().tolist()) == {-1.0, 1.0}
    assert len({tuple(r) for r in digit_prototypes().tolist()}) == 10  # ten distinct bitmaps


# LeCun, Bottou, Bengio & Haffner 1998, Table I, typed from the paper: rows are the S2 feature maps 0-5,
# columns the C3 feature maps 0-15, X where the C3 map takes input from the S2 map.
PAPER_TABLE_I = """
    0 1 2 3 4 5 6 7 8 9 A B C D E F
0   X . . . X X X . . X X X X . X X
1   X X . . . X X X . . X X X X . X
2   X X X . . . X X X . . X . X X X
3   . X X X . . X X X X . . X . X X
4   . . X X X . . X X X X . X X . X
5   . . . X X X . . X X X X . X X X
"""


def paper_connections() -> set[tuple[int, int]]:
    """(S2 map, C3 map) pairs marked X in the typed Table I."""
    rows = [line.split()[1:] for line in PAPER_TABLE_I.strip().splitlines()[1:]]
    assert len(rows) == 6 and all(len(r) == 16 for r in rows)
    return {(s2, c3) for s2, row in enumerate(rows) for c3, mark in enumerate(row) if mark == "X"}


def test_lenet5_1998_c3_connects_exactly_as_table_i_of_the_paper():
    """Which S2 maps each C3 map of the built model can see, measured by gradients, against the typed table."""
    model = create_model("lenet5_1998", dataset="mnist").eval()
    c3 = model.body[4]  # PaperInput, C1, squash, S2, C3
    assert len(paper_connections()) == 60  # 6x3 + 6x4 + 3x4 + 1x6 (the paper's 60 kernels, 1,500 weights)
    s2 = torch.rand(1, 6, 14, 14, requires_grad=True)
    assert c3(s2).shape == (1, 16, 10, 10)
    seen = set()
    for j in range(16):
        (grad,) = torch.autograd.grad(c3(s2)[0, j].sum(), s2)
        seen |= {(i, j) for i in range(6) if grad[0, i].abs().sum() > 0}
    assert seen == paper_connections()


def test_lenet5_1998_scores_are_negative_distances_and_map_loss_is_finite():
    model = create_model("lenet5_1998", dataset="mnist").eval()
    scores = model(torch.rand(4, 1, 28, 28))
    assert (scores <= 0).all()
    loss = map_loss(scores, torch.tensor([0, 1, 2, 3]), j=0.1)
    assert torch.isfinite(loss) and loss.item() > 0


def test_alexnet_cifar_matches_the_seeds_counts():
    model = create_model("alexnet_cifar", dataset="cifar10")
    assert count_parameters(model) == 22_589_642
    running = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert running == 704 and count_parameters(model) + running == 22_590_346


@pytest.mark.parametrize("name", ["cnn5", "resnet18k", "mlp"])
def test_width_is_one_multiplier(name):
    counts = [count_parameters(create_model(name, dataset="cifar10", width=k)) for k in (1, 2, 4)]
    assert counts[0] < counts[1] < counts[2]


def test_normalization_lives_inside_the_model(digits28):
    model = create_model("cnn5", dataset=digits28, width=2)
    mean, _ = digits28.channel_stats()
    assert torch.allclose(model.mean.flatten(), torch.tensor(mean))
    assert "mean" in model.state_dict()  # restored with a checkpoint
