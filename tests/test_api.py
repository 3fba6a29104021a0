"""API friction: short reprs, benchmark data in any form, rc.attack returning adversarial examples, and the
exports (register_attack, attack) a user reaches from `import robustcnn`."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from reference_pgd import pgd

import robustcnn as rc
from robustcnn.errors import UsageError

FAST = dict(attacks=["fgsm", "pgd"], epsilons=[0.0, 0.1], n_examples=60, device="cpu", lint=False, image_size=28)


def test_short_reprs(digits28):
    text = repr(digits28)
    assert "digits" in text and "(1297, 1, 28, 28)" in text and "(500, 1, 28, 28)" in text and "10 classes" in text
    assert "tensor(" not in text and len(text) < 200
    model = rc.create_model("mlp", dataset=digits28, width=8)
    result = rc.train_model(model, digits28, rc.TrainConfig(epochs=2, val_fraction=0.1), device="cpu", progress=False)
    text = repr(result)
    assert text.startswith("TrainResult(2 epochs, best epoch") and "tensor(" not in text and len(text) < 300
    assert f"test_accuracy {result.history['test_accuracy'].iloc[-1]:.4g}" in text


def robust_numbers(card) -> pd.Series:
    return card.robust.set_index(["attack", "epsilon"])["robust_accuracy"].sort_index()


def test_benchmark_takes_a_name_a_bundle_tensors_or_a_loader(trained_lenet, digits28):
    x, y = digits28.x_test[:60], digits28.y_test[:60]
    by_name = rc.benchmark_model(trained_lenet, dataset="digits", **FAST)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    for form in (digits28, (x, y), loader):
        card = rc.benchmark_model(trained_lenet, dataset=form, **FAST)
        pd.testing.assert_series_equal(robust_numbers(card), robust_numbers(by_name))
        assert card.clean_accuracy == by_name.clean_accuracy and card.n == 60
    assert rc.benchmark_model(trained_lenet, dataset=(x, y), **FAST).off_leaderboard.startswith("evaluated on tensors")


@pytest.mark.parametrize("bad,message", [(42, "got int"), ({"x": 1}, "got dict"),
                                         ((torch.zeros(4, 1, 28, 28).numpy(), torch.zeros(4)), "torch tensors"),
                                         ((torch.zeros(4, 28, 28), torch.zeros(4, dtype=torch.long)), r"\(N, C, H, W\)"),
                                         ((torch.full((4, 1, 28, 28), 255.0), torch.zeros(4, dtype=torch.long)), r"\[0, 1\]")])
def test_other_data_is_a_one_line_usage_error(trained_lenet, bad, message):
    with pytest.raises(UsageError, match=message) as info:
        rc.benchmark_model(trained_lenet, dataset=bad, **FAST)
    assert "\n" not in str(info.value)


def test_attack_returns_verified_adversarial_examples(trained_lenet, digits28):
    x, y, eps = digits28.x_test[:200], digits28.y_test[:200], 0.1
    adv = rc.attack(trained_lenet, x, y, attack="pgd", epsilon=eps)
    assert adv.shape == x.shape and adv.device == x.device
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        clean, fooled = trained_lenet(x).argmax(1), trained_lenet(adv).argmax(1)
    moved = (adv != x).flatten(1).any(1)
    assert (fooled[moved] != y[moved]).all()  # every changed input is a real adversarial example
    assert torch.equal(adv[clean != y], x[clean != y])  # misclassified inputs come back as they were
    # an independent bare-torch PGD-40 reaches about the same robust accuracy
    reference = (trained_lenet(pgd(trained_lenet, x, y, eps=eps, steps=40, step=2.5 * eps / 40, norm="linf"))
                 .argmax(1) == y).float().mean().item()
    ours = (fooled == y).float().mean().item()
    assert ours < (clean == y).float().mean().item() - 0.2 and abs(ours - reference) < 0.06
    assert torch.equal(rc.attack(trained_lenet, x, y, attack=rc.AttackConfig("fgsm"), epsilon=0.0), x)


def test_attack_refuses_bad_input(trained_lenet, digits28):
    x, y = digits28.x_test[:8], digits28.y_test[:8]
    with pytest.raises(UsageError, match="8 integer labels"):
        rc.attack(trained_lenet, x, y[:4], epsilon=0.1)
    with pytest.raises(UsageError, match="unknown attack"):
        rc.attack(trained_lenet, x, y, attack="nope", epsilon=0.1)
    with pytest.raises(UsageError, match="outside"):
        rc.attack(trained_lenet, x, y, epsilon=2.0)


def test_register_attack_is_exported_and_usable(trained_lenet, digits28):
    import foolbox as fb

    @rc.register_attack("test-fgsm-twice", norm=rc.ThreatModel.LINF, description="FGSM, for a test")
    def _twice(**kw):
        return fb.attacks.LinfFastGradientAttack(random_start=False, **kw)

    try:
        x, y = digits28.x_test[:50], digits28.y_test[:50]
        ours = rc.attack(trained_lenet, x, y, attack="test-fgsm-twice", epsilon=0.1)
        assert torch.equal(ours, rc.attack(trained_lenet, x, y, attack="fgsm", epsilon=0.1))
        assert "test-fgsm-twice" in rc.list_attacks()
    finally:
        from robustcnn.attacks import ATTACKS
        ATTACKS._entries.pop("test-fgsm-twice", None)  # the registry has no public removal: tests only
