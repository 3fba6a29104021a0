"""The Neocognitron's cells against Fukushima 1980's equations written out by hand, its learning rule (only
the winners learn), the C-cells' shift tolerance, and learning without a single gradient."""
from __future__ import annotations

import math

import pytest
import torch

from robustcnn.models import create_model
from robustcnn.models.neocognitron import SLayer


def s_cell_by_hand(u: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, r: float, k: int,
                   ny: int, nx: int) -> float:
    """Eq. (1)-(3) of the 1980 paper for one cell, as nested sums over the connectable area (zero outside)."""
    planes_in, size = a.shape[1], a.shape[2]
    half = size // 2
    excite, rms = 0.0, 0.0
    for kp in range(planes_in):
        for dy in range(-half, half + 1):
            for dx in range(-half, half + 1):
                y, x = ny + dy, nx + dx
                value = float(u[kp, y, x]) if 0 <= y < u.shape[1] and 0 <= x < u.shape[2] else 0.0
                excite += float(a[k, kp, dy + half, dx + half]) * value
                rms += float(c[kp, dy + half, dx + half]) * value ** 2
    v = math.sqrt(rms)
    return r * max((1 + excite) / (1 + 2 * r / (1 + r) * float(b[k]) * v) - 1, 0.0)


def test_s_cells_follow_equation_1_of_the_paper():
    torch.manual_seed(0)
    layer = SLayer(in_planes=2, planes=3, size=3, r=1.5, q=1.0, column=3, init_scale=0.01)
    with torch.no_grad():
        layer.a.copy_(torch.rand_like(layer.a))
        layer.b.copy_(torch.rand(3) * 3)
    u = torch.rand(1, 2, 6, 6)
    out = layer(u)
    assert abs(float(layer.c.sum()) - 1) < 1e-6  # sum over k' and v of c is 1, as in the paper
    for k, ny, nx in [(0, 0, 0), (1, 2, 3), (2, 5, 5), (0, 3, 1)]:
        assert out[0, k, ny, nx].item() == pytest.approx(s_cell_by_hand(u[0], layer.a, layer.b, layer.c, 1.5, k, ny, nx),
                                                       rel=1e-5, abs=1e-6)


def bar(vertical: bool, size: int = 9) -> torch.Tensor:
    img = torch.zeros(1, 1, size, size)
    if vertical:
        img[0, 0, 2:7, 4] = 1.0
    else:
        img[0, 0, 4, 2:7] = 1.0
    return img


def trained_layer() -> SLayer:
    """Three planes that already learned: 0 a vertical bar, 1 a horizontal bar, 2 a diagonal (b > 0 for all)."""
    layer = SLayer(in_planes=1, planes=3, size=3, r=4.0, q=1.0, column=3, init_scale=0.01)
    templates = [torch.zeros(1, 3, 3), torch.zeros(1, 3, 3), torch.eye(3)[None]]
    templates[0][0, :, 1] = 1.0
    templates[1][0, 1, :] = 1.0
    with torch.no_grad():
        for k, t in enumerate(templates):
            layer.a[k] = layer.c * t                                  # one lesson from the template (eq. 7)
            layer.b[k] = 0.5 * math.sqrt(float((layer.c * t * t).sum()))  # and its inhibitory synapse (eq. 8)
        layer.reinforced.fill_(1)
    return layer


def test_learning_changes_only_the_winners_weights_two_patterns():
    layer = trained_layer()
    before_a, before_b = layer.a.clone(), layer.b.clone()
    x = torch.cat([bar(vertical=True), bar(vertical=False)])  # pattern 1 wins plane 0, pattern 2 wins plane 1
    response = layer(x)
    assert response[0, 0].max() > 0 and response[1, 1].max() > 0
    assert response[0, 1:].max() == 0 and response[1, [0, 2]].max() == 0  # the other planes are silent
    layer.reinforce(x)
    assert torch.equal(layer.a[2], before_a[2]) and layer.b[2] == before_b[2]  # the diagonal plane won nothing
    # each winner gained q * c(v) * u(n^ + v) at its representative: a 3x3 patch centred on the bar (rows 3-5
    # of column 4 all see the same full stroke)
    for k, img in ((0, bar(vertical=True)), (1, bar(vertical=False))):
        patch = img[0, :, 3:6, 3:6]
        assert torch.allclose(layer.a[k] - before_a[k], layer.c * patch, atol=1e-6)
        v = math.sqrt(float((layer.c * patch * patch).sum()))
        assert (layer.b[k] - before_b[k]).item() == pytest.approx(0.5 * v, rel=1e-5)


def test_a_fresh_plane_learns_from_one_image_per_batch():
    """Before its first lesson a plane takes only the batch's strongest representative (see the docstring)."""
    layer = SLayer(in_planes=1, planes=1, size=3, r=4.0, q=1.0, column=3, init_scale=0.01)
    x = torch.cat([bar(vertical=True), bar(vertical=False) * 0.5])
    layer.reinforce(x)
    assert layer.reinforced.item() == 1
    assert torch.allclose(layer.a[0] - SLayer(1, 1, 3, 4.0, 1.0, 3, 0.01).a[0], layer.c * bar(True)[0, :, 3:6, 3:6])


def test_c_cells_respond_identically_to_a_pattern_shifted_within_their_pooling_field():
    """The shift tolerance the seed claims: one S-cell firing anywhere inside a C-cell's connecting area gives
    that C-cell the same output (the model's default C-layer: box-shaped d, 5x5, stride 2)."""
    c_layer = create_model("neocognitron", dataset="mnist").c_layers[0]
    outputs = []
    for dy, dx in [(0, 0), (1, 0), (0, -2), (2, 2), (-2, 1)]:  # all within the 5x5 field of the C-cell at (5, 5)
        s = torch.zeros(1, 4, 20, 20)
        s[0, 1, 10 + dy, 10 + dx] = 0.8  # C-cell (5, 5) pools S positions 8..12 (stride 2, padding 2)
        s[0, 3, 4, 4] = 0.3              # something elsewhere, for the lateral inhibition
        outputs.append(c_layer(s)[0, :, 5, 5])
    assert outputs[0][1] > 0
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])
    s = torch.zeros(1, 4, 20, 20)
    s[0, 1, 13, 10] = 0.8  # outside the field: that C-cell no longer sees it
    assert c_layer(s)[0, 1, 5, 5] == 0


def test_training_uses_no_gradient_and_scores_are_differentiable(digits28):
    torch.manual_seed(0)
    model = create_model("neocognitron", dataset=digits28, planes=(8, 16), s_sizes=(5, 5), c_sizes=(5, 5),
                         c_strides=(2, 2), r=(4.0, 0.6), q=(1.0, 16.0), columns=(5, 5), learn_images=400)
    assert not any(p.requires_grad for p in model.parameters())
    stats = model.fit_without_backprop(digits28.x_train[:600], digits28.y_train[:600], epochs=1, batch_size=50)
    assert stats["us1_planes_used"] > 1 and stats["us2_planes_used"] > 1
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        acc = (model(digits28.x_test).argmax(1) == digits28.y_test).float().mean().item()
    assert acc > 0.8, acc  # chance is 0.1
    x = digits28.x_test[:8].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).logsumexp(1).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_ridge_readout_matches_a_direct_least_squares_solve():
    """The streamed, shifted float64 moments give the same map as solving the normal equations in one go."""
    import numpy as np

    from robustcnn.models.neocognitron import Moments

    gen = torch.Generator().manual_seed(0)
    f = torch.rand(300, 12, generator=gen) + 5.0  # a large mean: the shift has to cope with it
    t = torch.randn(300, 3, generator=gen)
    m = Moments(f[:50].mean(0))
    for i in range(0, 300, 70):
        m.add(f[i:i + 70], t[i:i + 70])
    w, b = m.ridge(0.01)
    fc = f.double().numpy() - f.double().numpy().mean(0)
    g = fc.T @ fc
    w_ref = np.linalg.solve(g + 0.01 * np.trace(g) / 12 * np.eye(12), fc.T @ (t.double().numpy() - t.double().numpy().mean(0)))
    b_ref = t.double().numpy().mean(0) - f.double().numpy().mean(0) @ w_ref
    assert np.allclose(w.numpy(), w_ref, atol=1e-5) and np.allclose(b.numpy(), b_ref, atol=1e-4)
