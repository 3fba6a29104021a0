"""Transformations and common corruptions on tensors: identities, exact shifts, ranges, determinism, severity
direction and one-line errors, checked against independent references (numpy slicing, torch.rot90,
torchvision's blur, PIL's JPEG, colorsys)."""
from __future__ import annotations

import colorsys
import io

import numpy as np
import pytest
import torch

from robustcnn.corruptions import (
    CIFAR10_C,
    FARTHER_WITH_SEVERITY,
    MNIST_C,
    CommonCorruption,
    corrupt,
)
from robustcnn.errors import UsageError
from robustcnn.transforms import Transform, affine_matrix, apply_transform, gaussian_blur, generator, translate, warp


@pytest.fixture(scope="module")
def digits(digits28) -> torch.Tensor:
    return digits28.x_test[:48]


@pytest.fixture(scope="module")
def colour() -> torch.Tensor:
    """Smooth colour images (bilinear up-sampled 6x6 noise): natural-image-like statistics, made here."""
    g = torch.Generator().manual_seed(3)
    small = torch.rand((24, 3, 6, 6), generator=g)
    return torch.nn.functional.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("t", list(Transform))
def test_magnitude_zero_is_the_identity(t: Transform) -> None:
    x = torch.rand((3, 3, 9, 7), generator=torch.Generator().manual_seed(0))
    out = apply_transform(x, t, 0, generator(0))
    assert out.shape == x.shape
    assert torch.allclose(out, x, atol=1e-5)


@pytest.mark.parametrize("dx,dy", [(1, 0), (0, -1), (3, 2), (-4, 1)])
def test_translate_moves_mass_by_exactly_the_requested_pixels(dx: int, dy: int) -> None:
    x = torch.zeros(2, 1, 16, 16)
    x[:, :, 5:9, 6:10] = torch.rand(2, 1, 4, 4) + 0.1  # a blob well inside the frame
    out = translate(x, dx, dy)
    ref = np.zeros((2, 1, 16, 16), dtype=np.float32)
    ref[:, :, 5 + dy:9 + dy, 6 + dx:10 + dx] = x[:, :, 5:9, 6:10].numpy()  # numpy slicing, no torch shifting
    assert np.array_equal(out.numpy(), ref)
    rows, cols = torch.arange(16.0)[:, None], torch.arange(16.0)[None, :]
    for img_in, img_out in zip(x[:, 0], out[:, 0]):
        com_in = ((img_in * rows).sum() / img_in.sum(), (img_in * cols).sum() / img_in.sum())
        com_out = ((img_out * rows).sum() / img_out.sum(), (img_out * cols).sum() / img_out.sum())
        assert torch.isclose(com_out[0] - com_in[0], torch.tensor(float(dy)), atol=1e-5)
        assert torch.isclose(com_out[1] - com_in[1], torch.tensor(float(dx)), atol=1e-5)


def test_translate_fills_the_background_and_per_image_shifts() -> None:
    x = torch.rand(2, 1, 5, 5)
    out = translate(x, torch.tensor([1, -2]), torch.tensor([0, 1]), fill=0.5)
    assert torch.all(out[0, :, :, 0] == 0.5) and torch.equal(out[0, :, :, 1:], x[0, :, :, :-1])
    assert torch.all(out[1, :, 0, :] == 0.5) and torch.equal(out[1, :, 1:, :3], x[1, :, :-1, 2:])


def test_rotate_by_90_degrees_is_rot90_counter_clockwise() -> None:
    x = torch.rand(2, 3, 9, 9)
    out = warp(x, affine_matrix(2, angle=90.0))
    assert torch.allclose(out, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)


def test_blur_matches_torchvision() -> None:
    from torchvision.transforms.functional import gaussian_blur as tv_blur

    x = torch.rand(2, 3, 28, 28)
    for sigma in (0.7, 1.5):
        radius = int(4 * sigma + 0.5)
        ref = tv_blur(x, kernel_size=[2 * radius + 1] * 2, sigma=[sigma, sigma])
        assert torch.allclose(gaussian_blur(x, sigma), ref, atol=1e-5)


def test_noise_has_the_requested_std_and_elastic_grows_with_alpha(digits: torch.Tensor) -> None:
    grey = torch.full((64, 1, 28, 28), 0.5)
    noisy = apply_transform(grey, "noise", 0.1, generator(1))
    assert abs((noisy - grey).std().item() - 0.1) < 0.005
    dist = [(apply_transform(digits, "elastic", a, generator(1)) - digits).norm().item() for a in (4, 16, 34)]
    assert dist[0] < dist[1] < dist[2]


@pytest.mark.parametrize("t,m", [("translate", 5), ("translate_circular", 5), ("rotate", 45), ("scale", 0.5),
                                 ("elastic", 60), ("noise", 0.8), ("blur", 3)])
def test_transform_outputs_keep_shape_and_range(t: str, m: float) -> None:
    x = torch.rand(4, 3, 12, 10)
    out = apply_transform(x, t, m, generator(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("c", [c for c in CommonCorruption])
def test_corruptions_keep_range_are_seeded_and_differ_by_severity(c: CommonCorruption, digits: torch.Tensor,
                                                                   colour: torch.Tensor) -> None:
    for x in (digits[:16], colour[:8]):
        outs = [corrupt(x, c, s, seed=0) for s in range(1, 6)]
        for out in outs:
            assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
        assert torch.equal(outs[2], corrupt(x, c, 3, seed=0))  # deterministic by seed
        assert not torch.equal(outs[0], outs[4])
        assert all((o - x).abs().max() > 0 for o in outs)


def test_seeds_change_the_random_corruptions(digits: torch.Tensor) -> None:
    for c in ("shot_noise", "impulse_noise", "glass_blur", "fog", "spatter", "dotted_line", "zigzag", "translate"):
        assert not torch.equal(corrupt(digits, c, 3, seed=0), corrupt(digits, c, 3, seed=1)), c


@pytest.mark.parametrize("which", ["mnist-c", "cifar10-c"])
def test_more_severe_is_farther_from_the_clean_image(which: str, digits: torch.Tensor, colour: torch.Tensor) -> None:
    x, chosen = (digits, MNIST_C) if which == "mnist-c" else (colour, CIFAR10_C)
    for c in chosen:
        if c not in FARTHER_WITH_SEVERITY:
            continue
        dist = [(corrupt(x, c, s, seed=0) - x).flatten(1).norm(dim=1).mean().item() for s in range(1, 6)]
        assert all(b >= a for a, b in zip(dist, dist[1:])) and dist[4] > dist[0], (c.value, dist)


def test_jpeg_matches_pil_and_canny_outlines_a_square() -> None:
    from PIL import Image

    x = torch.zeros(1, 1, 28, 28)
    x[:, :, 8:20, 8:20] = 1.0
    x = x + 0.3 * torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x = x.clamp(0, 1)
    pixels = (x[0, 0] * 255).round().to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, "JPEG", quality=15)
    ref = np.asarray(Image.open(buf), dtype=np.float32) / 255
    ours = corrupt(x, "jpeg_compression", 3)[0, 0].numpy()  # MNIST-C's quality 15
    assert np.abs(ours - ref).mean() < 2 / 255
    square = torch.zeros(1, 1, 28, 28)
    square[:, :, 8:20, 8:20] = 1.0
    edges = corrupt(square, "canny_edges", 5)[0, 0]  # severity 5: the edge map alone
    ring = torch.zeros(28, 28, dtype=torch.bool)
    ring[6:22, 6:22] = True
    ring[10:18, 10:18] = False
    assert edges.sum() > 30 and edges[~ring].sum() == 0


def test_colour_brightness_keeps_hue_and_saturation(colour: torch.Tensor) -> None:
    x = colour[:2]
    out = corrupt(x, "brightness", 4)  # CIFAR-10-C: HSV value + 0.2
    for rgb_in, rgb_out in zip(x.permute(0, 2, 3, 1).reshape(-1, 3)[::97], out.permute(0, 2, 3, 1).reshape(-1, 3)[::97]):
        h, s, v = colorsys.rgb_to_hsv(*rgb_in.tolist())
        assert np.allclose(colorsys.hsv_to_rgb(h, s, min(v + 0.2, 1.0)), rgb_out.tolist(), atol=1e-5)


@pytest.mark.parametrize("call,match", [
    (lambda x: corrupt(x, "fogg", 1), "unknown corruption 'fogg'"),
    (lambda x: corrupt(x, "fog", 0), "severity must be a whole number in 1..5"),
    (lambda x: corrupt(x, "fog", 6), "severity must be"),
    (lambda x: corrupt(x, "fog", 2.5), "severity must be"),
    (lambda x: apply_transform(x[:, :, :1, :1], "rotate", 10, generator(0)), "does not apply to 1x1-pixel images"),
    (lambda x: apply_transform(x, "translate", 1.5, generator(0)), "whole number of pixels"),
    (lambda x: apply_transform(x, "rotate", -5, generator(0)), "finite number >= 0"),
    (lambda x: apply_transform(x, "shear", 1, generator(0)), "unknown transformation 'shear'"),
])
def test_bad_input_is_one_line(call, match: str) -> None:
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(UsageError, match=match) as err:
        call(x)
    assert "\n" not in str(err.value)
