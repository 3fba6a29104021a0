"""The perceptron's rule against a bare sequential loop, its convergence and its mistake-driven updates; the
trainer's dispatch to a model's own learning rule; the lineage study end to end on a tiny profile."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from robustcnn.models import create_model
from robustcnn.train import TrainConfig, train


def separable(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 4, 4) images in [0,1] and 3 classes given by which of three pixel sums is largest, with a margin."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=gen)
    sums = torch.stack([x[:, 0, 0].sum(1), x[:, 0, 1].sum(1), x[:, 0, 2].sum(1)], 1)
    top2 = sums.topk(2, dim=1).values
    keep = top2[:, 0] - top2[:, 1] > 0.3  # a margin, so the perceptron convergence theorem applies
    return x[keep], sums[keep].argmax(1)


def test_perceptron_matches_a_bare_sequential_loop():
    """batch_size=1 is Rosenblatt's rule example by example; written here from scratch, in the same order."""
    x, y = separable()
    model = create_model("perceptron", dataset="mnist", in_channels=1, num_classes=3, input_size=4)
    model.fit_without_backprop(x, y, epochs=3, batch_size=1, seed=5)
    w, b = torch.zeros(3, 16), torch.zeros(3)
    gen = torch.Generator().manual_seed(5)
    for _ in range(3):
        for i in torch.randperm(len(y), generator=gen).tolist():
            for unit in range(3):
                target = 1.0 if y[i] == unit else -1.0
                if target * (w[unit] @ x[i].flatten() + b[unit]) <= 0:
                    w[unit] += target * x[i].flatten()
                    b[unit] += target
    assert torch.allclose(model.weight, w) and torch.allclose(model.bias, b)


def test_perceptron_converges_on_linearly_separable_data():
    x, y = separable()
    model = create_model("perceptron", dataset="mnist", in_channels=1, num_classes=3, input_size=4)
    stats = model.fit_without_backprop(x, y, epochs=500, batch_size=1, seed=0)
    assert stats["epochs_run"] < 500  # it stopped because an epoch made no mistake
    assert (model(x).argmax(1) == y).all()


def test_perceptron_never_updates_on_a_correct_example():
    x, y = separable()
    model = create_model("perceptron", dataset="mnist", in_channels=1, num_classes=3, input_size=4)
    model.fit_without_backprop(x, y, epochs=500, batch_size=1, seed=0)
    w, b = model.weight.clone(), model.bias.clone()
    assert model.perceptron_step(x, y) == 0  # every unit right on every example: nothing to correct
    assert torch.equal(model.weight, w) and torch.equal(model.bias, b)
    # a mixed batch: the correction is the sum over the wrong (example, unit) pairs only, computed here by hand
    wrong_y = (y + 1) % 3
    xb, yb = torch.cat([x[:5], x[5:8]]), torch.cat([y[:5], wrong_y[5:8]])
    scores = xb.flatten(1) @ w.T + b
    targets = -torch.ones(8, 3)
    targets[torch.arange(8), yb] = 1
    expected = w.clone()
    for i in range(8):
        for unit in range(3):
            if targets[i, unit] * scores[i, unit] <= 0:
                assert i >= 5  # the five correct examples are never wrong for any unit
                expected[unit] += targets[i, unit] * xb[i].flatten()
    model.perceptron_step(xb, yb)
    assert torch.allclose(model.weight, expected)


def test_train_dispatches_to_the_models_own_rule(digits28):
    model = create_model("perceptron", dataset=digits28)
    result = train(model, digits28, TrainConfig(epochs=3, batch_size=32), seed=0, device="cpu", progress=False)
    assert len(result.history) == 1 and int(result.history["epoch"].iloc[0]) == 3
    assert result.extras["learning_rule"].startswith("perceptron rule")
    assert all(p.grad is None for p in model.parameters()) and model.weight.abs().sum() > 0
    # the reported test accuracy is the model's, measured here independently in eval mode
    with torch.no_grad():
        acc = (model(digits28.x_test).argmax(1) == digits28.y_test).float().mean().item()
    assert result.history["test_accuracy"].iloc[0] == pytest.approx(acc)
    assert acc > 0.8
    with pytest.raises(Exception, match="own rule"):
        from robustcnn.train import AdversarialTraining
        train(model, digits28, TrainConfig(adversarial=AdversarialTraining(epsilon=0.1)), device="cpu", progress=False)


def test_lineage_study_tiny_profile(tmp_path):
    from robustcnn.attacks import AttackConfig
    from robustcnn.experiments.adversarial import EvaluationConfig
    from robustcnn.experiments.common import DataSpec, ModelSpec
    from robustcnn.experiments.lineage import LineageStudyConfig, run_lineage_study

    small_neo = dict(planes=[4, 8], s_sizes=[5, 5], c_sizes=[5, 5], c_strides=[2, 2], r=[4.0, 0.6], q=[1.0, 16.0],
                     columns=[5, 5], learn_images=200)
    cfg = LineageStudyConfig(
        data=DataSpec(train_subset=300), device="cpu",
        models=[ModelSpec("perceptron", train=TrainConfig(epochs=2, batch_size=32)),
                ModelSpec("neocognitron", kwargs=small_neo, train=TrainConfig(epochs=1, batch_size=50))],
        evaluation=EvaluationConfig(attacks=[AttackConfig("fgsm"), AttackConfig("pgd", steps=5)],
                                    epsilons=[0.0, 0.1], n_examples=40, lint=False, gallery=0))
    run = run_lineage_study(cfg, tmp_path)
    table = pd.read_csv(run / "tables" / "lineage.csv")
    assert list(table["model"]) == ["perceptron", "neocognitron"]
    assert list(table["year"]) == [1958, 1980]
    assert table.loc[0, "training_rule"].startswith("perceptron rule")
    assert table.loc[1, "training_rule"].startswith("self-organization")
    assert set(table["input"]) == {"1x28x28"}
    assert (table["test_accuracy"] > 0.1).all() and "pgd_eps0.1" in table
    growth = pd.read_csv(run / "tables" / "anatomy.csv")
    assert set(growth["model"]) == {"neocognitron"}  # the perceptron has no conv or pooling layer
    assert list(growth["kind"]) == ["input", "S-layer", "C-layer", "S-layer", "C-layer"]
    assert (run / "figures" / "feature_maps_neocognitron.png").exists()
    report = (run / "report.md").read_text()
    assert report.count("## Anatomy") == 1
    assert "No anatomy for perceptron: no convolution or pooling layer" in report
    # the shift column: each trained model, reloaded from its checkpoint, counted here on the same first 40 images
    from robustcnn.data import load_dataset

    data = load_dataset("digits", image_size=28, train_subset=300, seed=0)
    for i, (name, kwargs) in enumerate([("perceptron", {}), ("neocognitron", small_neo)]):
        model = create_model(name, dataset=data, **kwargs)
        model.load_state_dict(torch.load(run / "checkpoints" / f"{name}-final.pt", weights_only=True))
        expected = bare_shift_accuracy(model.eval(), data.x_test[:40], data.y_test[:40], seed=0, k=2)
        assert table.loc[i, "shift2_accuracy"] == pytest.approx(expected, abs=1e-12), name
    assert "random shift ≤2 px (%)" in report and "same first n=40" in report


def bare_shift(img: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """(C, H, W) moved dx right and dy down, zeros where nothing moved in."""
    _, h, w = img.shape
    out = torch.zeros_like(img)
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = img[:, max(-dy, 0):h - max(dy, 0),
                                                                        max(-dx, 0):w - max(dx, 0)]
    return out


def bare_shift_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int, k: int) -> float:
    """The invariance study's 'shift' measure written out: one shift per image drawn from its seed scheme
    (dx row, then dy row, uniform on the integers in [-k, k]), applied and classified image by image."""
    from robustcnn.transforms import generator

    d = torch.randint(-k, k + 1, (2, len(y)), generator=generator(seed, "translate", k))
    correct = 0
    with torch.no_grad():
        for i in range(len(y)):
            shifted = bare_shift(x[i], int(d[0, i]), int(d[1, i]))
            correct += int(model(shifted[None]).argmax(1).item() == int(y[i]))
    return correct / len(y)


@pytest.mark.parametrize("name", ["lineage-mnist.toml", "lineage-cifar10.toml"])
def test_shipped_lineage_configs_resolve(name):
    from pathlib import Path

    from robustcnn.config import load_config
    from robustcnn.experiments.lineage import LineageStudyConfig

    cfg = load_config(LineageStudyConfig, Path(__file__).resolve().parent.parent / "studies" / name)
    assert [m.name for m in cfg.models][:4] == ["perceptron", "neocognitron", "lenet5", "lenet5_1998"]


def test_perceptron_scores_keep_attack_gradients_alive(digits28):
    """Raw activations saturate a softmax (zero cross-entropy gradients: attacks go blind); the scores are the
    activations over one positive constant, so decisions are unchanged and gradients are not zero."""
    model = create_model("perceptron", dataset=digits28)
    model.fit_without_backprop(digits28.x_train, digits28.y_train, epochs=20, batch_size=32)
    x, y = digits28.x_test[:200].clone().requires_grad_(True), digits28.y_test[:200]
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y, reduction="sum"), x)
    dead = (grad.flatten(1).abs().sum(1) == 0).float().mean().item()
    assert dead < 0.05, dead
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), model.activations(x).argmax(1))
