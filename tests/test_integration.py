"""Integration tests on the real files in ../shared/data; they run when ROBUSTCNN_DATA points there (CI sets it)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from robustcnn.data import load_dataset

DATA = os.environ.get("ROBUSTCNN_DATA_FOR_TESTS") or os.environ.get("ROBUSTCNN_DATA")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not DATA or not Path(DATA).is_dir(), reason="ROBUSTCNN_DATA is not set")]


def listing(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize("name,first_labels", [("mnist", [5, 0, 4, 1, 9]), ("fashion-mnist", [9, 0, 0, 3, 0])])
def test_real_mnist_family_is_read_without_writing_into_shared(name, first_labels):
    root = Path(DATA)
    before = listing(root)
    data = load_dataset(name, root=root)
    assert listing(root) == before
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.y_train[:5].tolist() == first_labels
    assert torch.bincount(data.y_test).min() >= 800


def test_real_cifar10_png_subset():
    data = load_dataset("imagefolder:cifar10-png", root=DATA)
    assert data.x_train.shape == (20000, 3, 32, 32) and data.x_test.shape == (10000, 3, 32, 32)
    assert data.class_names[:3] == ["airplane", "automobile", "bird"]
    mean = data.x_test.mean(dim=(0, 2, 3))  # the README's quoted test-set channel means
    assert torch.allclose(mean, torch.tensor([0.4942, 0.4851, 0.4504]), atol=2e-4)


def test_lenet5_learns_real_mnist_in_one_epoch():
    from robustcnn.models import create_model
    from robustcnn.train import TrainConfig, seed_everything, train

    data = load_dataset("mnist", root=DATA, train_subset=10000)
    seed_everything(0)
    model = create_model("lenet5", dataset=data)
    result = train(model, data, TrainConfig(epochs=1, batch_size=64, lr=3e-3), seed=0, device="cpu", progress=False)
    assert result.history["test_accuracy"].iloc[-1] > 0.85
