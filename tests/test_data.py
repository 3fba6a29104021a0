"""The data layer on tiny files in the real formats, so torchvision's real loaders run."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
import torch

from robustcnn.data import apply_label_noise, augment, batches, load_dataset, split_validation
from robustcnn.errors import UsageError


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_digits_is_embedded_fixed_split_and_in_unit_range():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=5)
    assert a.x_train.shape == (1297, 1, 8, 8) and a.x_test.shape == (500, 1, 8, 8)
    assert torch.equal(a.x_test, b.x_test)  # the split does not move with the run seed
    assert a.x_train.min() >= 0 and a.x_train.max() <= 1 and a.x_train.max() == 1
    resized = load_dataset("digits", image_size=32)
    assert resized.x_train.shape[-2:] == (32, 32) and 0 <= resized.x_train.min() and resized.x_train.max() <= 1


def test_mnist_reads_idx_files_without_writing_into_the_root(fake_mnist):
    root, arrays = fake_mnist
    before = snapshot(root)
    data = load_dataset("mnist", root=root)
    assert snapshot(root) == before  # decompressed into the cache, not next to the user's files
    assert data.x_train.shape == (60, 1, 28, 28) and data.x_test.shape == (20, 1, 28, 28)
    assert torch.equal(data.y_train, torch.tensor(arrays["train_y"]))
    expected = torch.tensor(arrays["test_x"][3], dtype=torch.float32) / 255
    assert torch.allclose(data.x_test[3, 0], expected)


def test_data_root_comes_from_the_environment(fake_mnist, monkeypatch):
    root, _ = fake_mnist
    monkeypatch.setenv("ROBUSTCNN_DATA", str(root))
    assert len(load_dataset("mnist").y_train) == 60


def test_corrupt_file_is_named_in_the_error(fake_mnist):
    root, _ = fake_mnist
    path = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-5])  # truncated
    with pytest.raises(UsageError, match="t10k-labels-idx1-ubyte.gz is corrupt or truncated"):
        load_dataset("mnist", root=root)


def test_missing_dataset_names_where_it_looked(tmp_path):
    with pytest.raises(UsageError, match=r"mnist not found: .*MNIST/raw lacks train-images"):
        load_dataset("mnist", root=tmp_path)
    with pytest.raises(UsageError, match="cifar10 not found"):
        load_dataset("cifar10", root=tmp_path)


def test_malformed_idx_content_is_a_clean_error(fake_mnist, monkeypatch):
    from torchvision import datasets

    root, _ = fake_mnist
    path = root / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x01garbage")  # valid gzip, broken IDX
    resources = [(fn, m) for fn, m in datasets.MNIST.resources]
    import hashlib
    resources[1] = (resources[1][0], hashlib.md5(path.read_bytes()).hexdigest())
    monkeypatch.setattr(datasets.MNIST, "resources", resources)
    with pytest.raises(UsageError, match="mnist"):
        load_dataset("mnist", root=root)


def test_cifar10_pickle_batches(fake_cifar):
    root, arrays = fake_cifar
    before = snapshot(root)
    data = load_dataset("cifar10", root=root)
    assert snapshot(root) == before
    assert data.x_train.shape == (40, 3, 32, 32) and data.x_test.shape == (8, 3, 32, 32)
    raw, labels = arrays["test_batch"]
    assert data.y_test.tolist() == labels
    # row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32
    assert torch.allclose(data.x_test[2, 1], torch.tensor(raw[2, 1024:2048].reshape(32, 32) / 255, dtype=torch.float32))


def test_imagefolder_decodes_once_and_caches(png_folder, monkeypatch):
    base, written = png_folder
    data = load_dataset(f"imagefolder:{base}")
    assert data.class_names == ["cat", "dog", "frog"]
    assert data.x_train.shape == (12, 3, 16, 16) and sorted(data.y_train.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    # every written test image is there once, with its folder's label (the split is in a fixed mixed order)
    for path, pixels in written.items():
        if "/test/" not in path:
            continue
        target = torch.tensor(pixels / 255, dtype=torch.float32).permute(2, 0, 1)
        hits = [i for i in range(len(data.y_test)) if torch.allclose(data.x_test[i], target)]
        assert len(hits) == 1 and data.class_names[int(data.y_test[hits[0]])] == Path(path).parent.name
    import robustcnn.datafiles as datafiles

    def no_decoding(paths):
        raise AssertionError("decoded again instead of using the cache")

    assert list((Path(os.environ["ROBUSTCNN_CACHE"]) / "decoded").glob("*.pt"))
    monkeypatch.setattr(datafiles, "decode_images", no_decoding)
    again = load_dataset(f"imagefolder:{base}")
    assert torch.equal(again.x_train, data.x_train)


def test_imagefolder_first_n_test_images_mix_the_classes(png_folder):
    """Folders list images class by class; "the first n test images" (what evaluations use) must not be one class,
    and the order is fixed: the same in every load, whatever the seed."""
    base, _ = png_folder
    data = load_dataset(f"imagefolder:{base}", seed=0)
    assert len(set(data.y_test[:4].tolist())) >= 2 and len(set(data.y_train[:4].tolist())) >= 2
    other = load_dataset(f"imagefolder:{base}", seed=5)
    assert torch.equal(other.y_test, data.y_test) and torch.equal(other.x_test, data.x_test)


def test_imagefolder_relative_to_data_root_and_bad_files(png_folder):
    base, _ = png_folder
    assert len(load_dataset("imagefolder:pngs", root=base.parent).y_test) == 12
    (base / "train" / "cat" / "00000.png").write_bytes(b"not a png")
    with pytest.raises(UsageError, match="cannot decode"):
        load_dataset(f"imagefolder:{base}")
    with pytest.raises(UsageError, match="is not a folder"):
        load_dataset(f"imagefolder:{base / 'nowhere'}")


def test_unknown_dataset_has_a_hint():
    with pytest.raises(UsageError, match="did you mean 'mnist'"):
        load_dataset("minst")


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 1.0])
def test_label_noise_flips_exactly_the_fraction_deterministically(fraction):
    y = torch.arange(1000) % 10
    noisy, flipped = apply_label_noise(y, fraction, 10, seed=3)
    assert len(flipped) == round(fraction * 1000)
    assert (noisy != y).sum() == len(flipped)  # every flipped label is wrong, and only those changed
    assert torch.equal(torch.nonzero(noisy != y).flatten(), flipped)
    again, flipped_again = apply_label_noise(y, fraction, 10, seed=3)
    assert torch.equal(again, noisy) and torch.equal(flipped, flipped_again)


def test_subset_and_noise_through_load_dataset():
    data = load_dataset("digits", train_subset=300, label_noise=0.2, seed=1)
    assert len(data.y_train) == 300 and len(data.noisy_indices) == 60
    with pytest.raises(UsageError, match="label_noise"):
        load_dataset("digits", label_noise=1.5)
    with pytest.raises(UsageError, match="train_subset"):
        load_dataset("digits", train_subset=10**6)


def test_batches_cover_every_example_once():
    x, y = torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10)
    seen = torch.cat([yb for _, yb in batches(x, y, 3, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10))


def test_augment_crops_within_padding_and_flips():
    x = torch.rand(64, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = augment(x, crop_padding=2, generator=g)
    assert out.shape == x.shape
    # each output is the input shifted by at most 2 pixels: some shift reproduces its centre region
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(8):
        assert any(torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))
    flipped = augment(x, flip=True, generator=g)
    same = [torch.equal(flipped[i], x[i]) for i in range(64)]
    mirrored = [torch.equal(flipped[i], x[i].flip(2)) for i in range(64)]
    assert all(a or b for a, b in zip(same, mirrored)) and 10 < sum(mirrored) < 54


def test_uniform_label_noise_may_keep_the_true_label():
    y = torch.arange(2000) % 10
    noisy, replaced = apply_label_noise(y, 1.0, 10, seed=0, uniform=True)
    assert len(replaced) == 2000 and torch.bincount(noisy, minlength=10).min() > 150
    kept = (noisy == y).float().mean().item()
    assert 0.05 < kept < 0.15  # about 1 in 10 draws lands on the true label


def _max_abs_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |Pearson correlation| between any row of a and any row of b (images flattened)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a = (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True)
    b = (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True)
    return ((a @ b.T) / (a.shape[1] - 1)).abs().max().item()


def test_random_pixel_test_images_share_nothing_with_training_images():
    """Zhang et al.'s random pixels: the test noise must be drawn apart from the training noise, or the test
    set holds copies of training images and 'test accuracy' measures memorized labels."""
    data = load_dataset("digits", image_size=16, randomization="random_pixels", seed=0)
    assert _max_abs_correlation(data.x_test, data.x_train) < 0.5  # 256 pixels: chance correlations stay < 0.35
    assert not any(torch.equal(t, data.x_train[i]) for i, t in enumerate(data.x_test))
    again = load_dataset("digits", image_size=16, randomization="random_pixels", seed=0)
    assert torch.equal(again.x_test, data.x_test)  # still fixed by the seed


def test_shuffled_pixels_use_one_permutation_for_train_and_test(fake_mnist):
    root, _ = fake_mnist
    clean = load_dataset("mnist", root=root)
    shuffled = load_dataset("mnist", root=root, randomization="shuffled_pixels", seed=3)
    # recover the permutation from the training images (60 random values per pixel identify it), apply it to test
    src = clean.x_train.flatten(1).T    # (pixels, images)
    dst = shuffled.x_train.flatten(1).T
    perm = [int(torch.nonzero((src == column).all(1))[0]) for column in dst]
    assert sorted(perm) == list(range(28 * 28)) and perm != list(range(28 * 28))
    assert torch.equal(shuffled.x_test.flatten(1), clean.x_test.flatten(1)[:, perm])


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_validation_split_is_stratified_disjoint_and_fixed_by_the_seed(fraction):
    y = torch.arange(1000) % 10
    y = y.sort().values  # a class-sorted training set, as ImageFolder gives
    keep, held = split_validation(y, fraction, seed=4)
    assert set(keep.tolist()).isdisjoint(held.tolist()) and len(keep) + len(held) == 1000
    assert torch.bincount(y[held], minlength=10).tolist() == [round(fraction * 100)] * 10
    assert len(set(y[held[:20]].tolist())) > 3  # the first validation examples are not one class
    again, held_again = split_validation(y, fraction, seed=4)
    assert torch.equal(keep, again) and torch.equal(held, held_again)
    assert not torch.equal(held.sort().values, split_validation(y, fraction, seed=5)[1].sort().values)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 0.6, float("nan")])
def test_bad_validation_fraction_is_a_usage_error(fraction):
    with pytest.raises(UsageError, match="val_fraction"):
        split_validation(torch.arange(100) % 10, fraction, seed=0)
    with pytest.raises(UsageError, match="no validation example for class"):
        split_validation(torch.arange(100) % 10, 0.04, seed=0)
