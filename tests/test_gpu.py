"""The CUDA path (runs only where a GPU is present): training, attacks and the lint on the device."""
from __future__ import annotations

import pytest
import torch

from robustcnn import AttackConfig, TrainConfig, create_model, evaluate_model, seed_everything
from robustcnn import train_model as train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_train_attack_and_lint_on_cuda(digits28):
    data = digits28.to("cuda")
    seed_everything(0)
    model = create_model("lenet5", dataset=data)
    history = train(model, data, TrainConfig(epochs=6, batch_size=32, lr=3e-3), seed=0, device="cuda",
                    progress=False).history
    assert next(model.parameters()).device.type == "cuda"
    assert history["test_accuracy"].iloc[-1] > 0.85
    ev = evaluate_model(model.eval(), data, attacks=["fgsm", AttackConfig("pgd", steps=10)], epsilons=[0, 0.1, 0.3],
                        n_examples=200, lint_examples=100)
    acc = ev.robust.pivot_table(index="epsilon", columns="attack", values="robust_accuracy")
    assert acc.loc[0.0, "pgd"] == pytest.approx(ev.clean.set_index("split").loc["test", "accuracy"], abs=0.05)
    assert acc.loc[0.3, "pgd"] < 0.1
    assert "FAIL" not in set(ev.lint["status"]), ev.lint


def test_cuda_and_cpu_training_agree_closely(digits28):
    results = {}
    for device in ("cpu", "cuda"):
        seed_everything(0)
        model = create_model("lenet5", dataset=digits28)
        results[device] = train(model, digits28, TrainConfig(epochs=3, batch_size=64, lr=3e-3), seed=0, device=device,
                                progress=False).history
    diff = (results["cpu"]["test_accuracy"] - results["cuda"]["test_accuracy"]).abs().max()
    assert diff < 0.05  # same init and batch order; only float rounding differs between devices
