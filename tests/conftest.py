"""Shared fixtures: tiny datasets written in the REAL file formats (IDX .gz, CIFAR-10 pickle batches,
PNG class folders) so the real loaders run, plus a small trained model for attack and lint tests."""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = os.environ.get("ROBUSTCNN_DATA")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache dir, and unit tests do not see the CI's ROBUSTCNN_DATA."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("ROBUSTCNN_CACHE", str(cache))
    monkeypatch.delenv("ROBUSTCNN_DATA", raising=False)
    return cache


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """IDX3: magic 2051, count, rows, cols (big-endian int32), then uint8 pixels; gzip-compressed."""
    n, rows, cols = images.shape
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, rows, cols) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def make_mnist_like(root: Path, folder: str, n_train: int = 60, n_test: int = 20, seed: int = 0) -> dict:
    """Write <root>/<folder>/raw/*.gz with torchvision's file names; returns the arrays and their md5s."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {"train_x": rng.integers(0, 256, (n_train, 28, 28)), "train_y": rng.integers(0, 10, n_train),
              "test_x": rng.integers(0, 256, (n_test, 28, 28)), "test_y": rng.integers(0, 10, n_test)}
    write_idx_images(raw / "train-images-idx3-ubyte.gz", arrays["train_x"])
    write_idx_labels(raw / "train-labels-idx1-ubyte.gz", arrays["train_y"])
    write_idx_images(raw / "t10k-images-idx3-ubyte.gz", arrays["test_x"])
    write_idx_labels(raw / "t10k-labels-idx1-ubyte.gz", arrays["test_y"])
    arrays["resources"] = [(p, md5(raw / p)) for p in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")]
    return arrays


@pytest.fixture
def fake_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """A tiny MNIST in torchvision's layout; torchvision's md5 list is pointed at these files' md5s."""
    from torchvision import datasets

    root = tmp_path / "data"
    arrays = make_mnist_like(root, "MNIST")
    monkeypatch.setattr(datasets.MNIST, "resources", arrays["resources"])
    return root, arrays


@pytest.fixture
def fake_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """Tiny CIFAR-10 python pickle batches (data: N x 3072 uint8 rows, R then G then B planes)."""
    from torchvision import datasets

    rng = np.random.default_rng(1)
    base = tmp_path / "data" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    arrays = {}
    train_list, test_list = [], []
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        data = rng.integers(0, 256, (8, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 8).tolist()
        with open(base / name, "wb") as f:
            # the originals are Python 2 pickles whose str keys load as str under encoding="latin1"
            pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": ["x.png"] * 8}, f, protocol=2)
        arrays[name] = (data, labels)
        (test_list if name == "test_batch" else train_list).append([name, md5(base / name)])
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": 8}, f, protocol=2)
    monkeypatch.setattr(datasets.CIFAR10, "train_list", train_list)
    monkeypatch.setattr(datasets.CIFAR10, "test_list", test_list)
    monkeypatch.setattr(datasets.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                                    "md5": md5(base / "batches.meta")})
    return tmp_path / "data", arrays


def write_png_folder(base: Path, classes: list[str], per_class: int, size: int = 16, mode: str = "RGB",
                     seed: int = 2) -> dict[str, np.ndarray]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = {}
    for split in ("train", "test"):
        for c in classes:
            (base / split / c).mkdir(parents=True)
            for i in range(per_class):
                shape = (size, size, 3) if mode == "RGB" else (size, size)
                arr = rng.integers(0, 256, shape, dtype=np.uint8)
                path = base / split / c / f"{i:05d}.png"
                Image.fromarray(arr, mode=mode).save(path)
                written[str(path)] = arr
    return written


@pytest.fixture
def png_folder(tmp_path: Path) -> tuple[Path, dict]:
    base = tmp_path / "pngs"
    return base, write_png_folder(base, ["cat", "dog", "frog"], per_class=4)


@pytest.fixture(scope="session")
def digits28():
    from robustcnn.data import load_dataset

    return load_dataset("digits", image_size=28)


@pytest.fixture(scope="session")
def trained_lenet(digits28):
    """lenet5 trained for a few seconds on digits: ~95 % test accuracy, in eval mode."""
    from robustcnn.models import create_model
    from robustcnn.train import TrainConfig, seed_everything, train

    seed_everything(0)
    model = create_model("lenet5", dataset=digits28)
    train(model, digits28, TrainConfig(epochs=8, batch_size=32, lr=3e-3), seed=0, device="cpu", progress=False)
    return model.eval()


@pytest.fixture
def small_xy(digits28) -> tuple[torch.Tensor, torch.Tensor]:
    return digits28.x_test[:100], digits28.y_test[:100]
