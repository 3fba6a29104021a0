"""Anatomy hooks: one map per convolution/pooling layer with the documented shapes, equal to a forward pass
written out step by step; user models; the adversarial maps; bad input as one-line errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from robustcnn.anatomy import anatomy, anatomy_arrays, first_kernels, run_anatomy
from robustcnn.errors import UsageError
from robustcnn.models import create_model


def test_lenet5_one_map_per_conv_and_pool_equal_to_a_stepwise_forward():
    torch.manual_seed(0)
    model = create_model("lenet5", dataset="mnist").eval()
    x = torch.rand(2, 1, 28, 28)
    layers = anatomy(model, x)
    assert [(layer.name, layer.kind, tuple(layer.maps.shape)) for layer in layers] == [
        ("body.0", "conv", (2, 6, 24, 24)), ("body.2", "pool", (2, 6, 12, 12)),
        ("body.3", "conv", (2, 16, 8, 8)), ("body.5", "pool", (2, 16, 4, 4))]
    # the same tensors from the Sequential run by hand, module after module
    seq, u, expected = model.body, x, {}
    with torch.no_grad():
        for i, module in enumerate(seq):
            u = module(u)
            expected[f"body.{i}"] = u
    for layer in layers:
        assert torch.equal(layer.maps, expected[layer.name])
        assert layer.adv_maps is None


def test_neocognitron_s_and_c_planes_and_adversarial_maps():
    model = create_model("neocognitron", dataset="mnist").eval()
    x, x_adv = torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28)
    layers = anatomy(model, x, x_adv=x_adv)
    k1, k2 = (len(s.b) for s in model.s_layers)
    assert [(layer.kind, tuple(layer.maps.shape)) for layer in layers] == [
        ("S-layer", (1, k1, 28, 28)), ("C-layer", (1, k1, 14, 14)), ("S-layer", (1, k2, 14, 14)),
        ("C-layer", (1, k2, 7, 7))]
    with torch.no_grad():
        s1 = model.s_layers[0](x_adv)
    assert torch.equal(layers[0].adv_maps, s1) and torch.equal(layers[1].adv_maps, model.c_layers[0](s1))
    assert first_kernels(model).shape == (k1, 1, 5, 5)


def test_a_user_model_with_conv_and_max_pooling():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 2, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 10))
    model.train()
    layers = anatomy(model, torch.rand(5, 3, 16, 16))
    assert [(layer.name, layer.kind, tuple(layer.maps.shape)) for layer in layers] == [
        ("0", "conv", (5, 4, 14, 14)), ("2", "pool", (5, 4, 7, 7)), ("3", "conv", (5, 2, 5, 5)),
        ("4", "pool", (5, 2, 1, 1))]
    assert model.training  # its mode is restored


def test_growth_table_rows_and_relative_change():
    model = create_model("lenet5", dataset="mnist").eval()
    x = torch.rand(1, 1, 28, 28)
    arrays, growth = anatomy_arrays(model, x, x.clone())
    assert list(growth["layer"]) == ["input", "body.0", "body.2", "body.3", "body.5"]
    assert (growth["relative_change"] == 0).all()  # no perturbation, no change anywhere
    assert arrays["maps__0"].shape == (6, 24, 24) and arrays["kernels"].shape == (6, 1, 5, 5)
    x_adv = (x + 0.1).clamp(0, 1)
    _, growth = anatomy_arrays(model, x, x_adv)
    assert growth.loc[0, "relative_change"] == pytest.approx(((x_adv - x).norm() / x.norm()).item())


def test_bad_input_is_one_line():
    with pytest.raises(UsageError, match="no convolution or pooling layer") as err:
        anatomy(create_model("perceptron", dataset="mnist"), torch.rand(1, 1, 28, 28))
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match=r"\(N, C, H, W\)"):
        anatomy(create_model("lenet5", dataset="mnist"), torch.rand(1, 784))
    with pytest.raises(UsageError, match="outside the test set"):
        run_anatomy("lenet5", dataset="digits", index=500, epochs=1, device="cpu")


def test_cli_anatomy_writes_a_run_folder_and_bad_input_exits_2(tmp_path):
    from typer.testing import CliRunner

    from robustcnn.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["anatomy", "neocognitron", "--dataset", "digits", "--model-arg", "planes=[4, 8]",
                             "--model-arg", "learn_images=300", "--epochs", "1", "--index", "3", "--device", "cpu",
                             "--out", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    (run,) = [p for p in (tmp_path / "anatomy").iterdir() if not p.name.startswith(".")]
    for f in ("report.md", "tables/anatomy.csv", "data/anatomy.npz", "figures/kernels.png", "figures/feature_maps.png",
              "figures/growth.png"):
        assert (run / f).exists(), f
    for args, message in [(["perceptron"], "no convolution or pooling layer"),
                          (["lenet5", "--index", "500"], "outside the test set"),
                          (["lenet5", "--dataset", "words"], "unknown dataset")]:
        bad = runner.invoke(app, ["anatomy", *args, "--device", "cpu", "--out", str(tmp_path / "bad")])
        assert bad.exit_code == 2 and message in bad.output, bad.output
        assert len(bad.output.strip().splitlines()) == 1
