"""Datasets by name -> tensors in [0,1] on the device, plus subsets, label noise, randomization tests, a validation
split and batch-wise augmentation.

Every loader ends in the same `DataBundle`: float32 images (N, C, H, W) in [0,1] and int64 labels, decoded once.
Normalization is NOT applied here: it lives inside the model, so attacks always see [0,1] pixels.

Offline first: files already present are used (md5-checked against torchvision's own list); a data root we
did not create is only read, never written: archives are decompressed into the cache dir.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustcnn.datafiles import drop_bad_idx_entries, fill_idx_cache
from robustcnn.errors import UsageError, check_choice, first_line


class Randomization(str, Enum):
    """Zhang et al. 2017's randomization tests, applied to train and test images alike (not the common corruptions
    of robustcnn.corruptions, which perturb test images to measure robustness)."""

    NONE = "none"
    SHUFFLED_PIXELS = "shuffled_pixels"  # one fixed random permutation of pixel positions for every image
    RANDOM_PIXELS = "random_pixels"      # every image replaced by Gaussian noise with the data's mean and std


class DatasetName(str, Enum):
    """The named datasets; any folder of PNG/JPEG class folders is also accepted as 'imagefolder:<path>'."""

    DIGITS = "digits"
    MNIST = "mnist"
    FASHION_MNIST = "fashion-mnist"
    CIFAR10 = "cifar10"


IMAGEFOLDER_PREFIX = "imagefolder:"
NATIVE_SIZE = {"digits": 8, "mnist": 28, "fashion-mnist": 28, "cifar10": 32}
CHANNELS = {"digits": 1, "mnist": 1, "fashion-mnist": 1, "cifar10": 3}
DIGITS_TEST_SIZE = 500  # fixed split (seed 0) so every run on `digits` is scored on the same 500 images
CLASS_NAMES = {
    "digits": [str(i) for i in range(10)],
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


@dataclass
class DataBundle:
    """A dataset held as tensors. x_*: (N, C, H, W) float32 in [0,1]; y_*: (N,) int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str]
    noisy_indices: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images, for the normalization layer inside a model."""
        mean = self.x_train.mean(dim=(0, 2, 3))
        std = self.x_train.std(dim=(0, 2, 3)).clamp_min(1e-3)
        return mean.tolist(), std.tolist()

    def __repr__(self) -> str:
        # shapes, not tensors: the dataclass's default repr would print every pixel
        noisy = f", {len(self.noisy_indices)} noisy labels" if len(self.noisy_indices) else ""
        return (f"DataBundle({self.name!r}, train {tuple(self.x_train.shape)}, test {tuple(self.x_test.shape)}, "
                f"{self.num_classes} classes{noisy}, {self.x_train.dtype}, device={self.x_train.device})")

    def to(self, device: torch.device | str) -> DataBundle:
        moved = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")}
        return DataBundle(self.name, **moved, class_names=self.class_names, noisy_indices=self.noisy_indices,
                          source=self.source)


def cache_dir() -> Path:
    """Where downloads, extracted archives and decoded tensors go: $ROBUSTCNN_CACHE or the user cache dir."""
    base = os.environ.get("ROBUSTCNN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robustcnn"
    return Path(base)


def resolve_data_root(root: str | Path | None) -> Path | None:
    """--data-root, else $ROBUSTCNN_DATA, else None (meaning: the cache dir, where downloads may go)."""
    chosen = root if root is not None else os.environ.get("ROBUSTCNN_DATA")
    if not chosen:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():  # for every dataset, digits included: a mistyped root must not pass unnoticed
        where = "--data-root" if root is not None else "$ROBUSTCNN_DATA"
        raise UsageError(f"data root {path} ({where}) does not exist or is not a folder; point it at the folder "
                         "holding the datasets (e.g. ../shared/data) or leave it unset for the embedded digits")
    return path


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    image_size: int | None = None,
    train_subset: int | None = None,
    label_noise: float = 0.0,
    uniform_noise: bool = False,
    seed: int = 0,
    randomization: Randomization | str = Randomization.NONE,
    device: torch.device | str = "cpu",
) -> DataBundle:
    """Load a dataset by name as [0,1] tensors on `device`.

    image_size: resize (bilinear) to this square size; None keeps the native size.
    train_subset: keep a seeded random subset of this many training examples.
    label_noise: fraction of training labels replaced by a random *wrong* label (drawn once, from `seed`);
        the flipped positions are in `bundle.noisy_indices`. uniform_noise: draw the replacement uniformly
        over all classes instead (Zhang et al. 2017's "random labels"; it may equal the true label).
    """
    if label_noise < 0 or label_noise > 1:
        raise UsageError(f"label_noise must be in [0, 1], got {label_noise}")
    if image_size is not None and image_size < 4:
        raise UsageError(f"image_size must be at least 4, got {image_size}")
    data_root = resolve_data_root(root)
    if name.startswith(IMAGEFOLDER_PREFIX):
        bundle = _load_imagefolder(name[len(IMAGEFOLDER_PREFIX):], data_root)
    else:
        check_choice("dataset", name, [d.value for d in DatasetName] + ["imagefolder:<path>"])
        bundle = {"digits": _load_digits, "cifar10": _load_cifar10}.get(name, _load_mnist_family)(name, data_root)
    if train_subset is not None:
        if not 0 < train_subset <= len(bundle.y_train):
            raise UsageError(f"train_subset must be in 1..{len(bundle.y_train)} for {name}, got {train_subset}")
        keep = torch.randperm(len(bundle.y_train), generator=torch.Generator().manual_seed(seed))[:train_subset]
        bundle.x_train, bundle.y_train = bundle.x_train[keep], bundle.y_train[keep]
    if label_noise > 0:
        bundle.y_train, bundle.noisy_indices = apply_label_noise(bundle.y_train, label_noise, bundle.num_classes, seed,
                                                                 uniform=uniform_noise)
    if image_size is not None and image_size != bundle.image_size:
        bundle.x_train, bundle.x_test = resize(bundle.x_train, image_size), resize(bundle.x_test, image_size)
    randomization = Randomization(randomization)
    if randomization != Randomization.NONE:
        bundle.x_train, bundle.x_test = randomize_splits(bundle.x_train, bundle.x_test, randomization, seed)
    return bundle.to(device)


def randomize_splits(x_train: torch.Tensor, x_test: torch.Tensor, randomization: Randomization | str,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomize both splits from ONE random stream, so no test image repeats a training image.

    Shuffled pixels: one permutation of pixel positions, drawn once and applied to every image of both splits
    (the test asks whether a fixed, learnable scrambling of the input still generalizes).
    Random pixels: Gaussian noise with the training images' mean and std, the training images drawn first and
    the test images next from the same generator (two generators seeded alike would repeat the noise).
    """
    randomization = Randomization(randomization)
    g = torch.Generator().manual_seed(seed + 104729)
    if randomization == Randomization.SHUFFLED_PIXELS:
        perm = torch.randperm(x_train.shape[-2] * x_train.shape[-1], generator=g)
        return tuple(x.flatten(2)[:, :, perm].view(x.shape) for x in (x_train, x_test))  # type: ignore[return-value]
    if randomization == Randomization.NONE:
        return x_train, x_test
    mean, std = x_train.mean(), x_train.std()
    return tuple((torch.randn(x.shape, generator=g) * std + mean).clamp_(0, 1)  # type: ignore[return-value]
                 for x in (x_train, x_test))


def randomize(x: torch.Tensor, randomization: Randomization | str, seed: int) -> torch.Tensor:
    """One tensor randomized as the training split of `randomize_splits` would be (never call it once per split)."""
    return randomize_splits(x, x[:0], randomization, seed)[0]


def apply_label_noise(y: torch.Tensor, fraction: float, num_classes: int, seed: int, *,
                      uniform: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace exactly round(fraction * N) labels; returns (labels, replaced indices).

    Default: a uniformly drawn *wrong* label. uniform=True: a uniformly drawn label over all classes."""
    g = torch.Generator().manual_seed(seed + 7919)  # offset: independent of the subset draw with the same seed
    n_flip = int(round(fraction * len(y)))
    flipped = torch.randperm(len(y), generator=g)[:n_flip].sort().values
    noisy = y.clone()
    if uniform:
        noisy[flipped] = torch.randint(0, num_classes, (n_flip,), generator=g)
    else:
        shift = torch.randint(1, num_classes, (n_flip,), generator=g)  # 1..C-1, so never the true label
        noisy[flipped] = (y[flipped] + shift) % num_classes
    return noisy, flipped


def split_validation(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices) carved from training labels `y`, stratified and fixed by `seed`.

    Each class present in `y` gives round(fraction * its count) examples to validation. The validation
    indices come in a seeded random order (so "the first n validation examples" is a sample of every class,
    even when the training set is sorted by class); the train indices are ascending.
    """
    if not 0 < fraction <= 0.5:
        raise UsageError(f"val_fraction must be in (0, 0.5], got {fraction}")
    g = torch.Generator().manual_seed(seed + 15485863)  # offset: independent of the subset and noise draws
    y_cpu = y.cpu()
    perm = torch.randperm(len(y_cpu), generator=g)
    counts = torch.bincount(y_cpu, minlength=int(y_cpu.max()) + 1 if len(y_cpu) else 1)
    take = torch.round(counts.double() * fraction).long()
    short = ((counts > 0) & (take < 1)).nonzero().flatten().tolist()
    if short:
        raise UsageError(f"val_fraction {fraction} leaves no validation example for class(es) {short} "
                         f"({counts[short[0]].item()} training examples in class {short[0]}); raise val_fraction "
                         "or use more training data")
    # rank of each shuffled example within its class: position in a stable class sort minus the class start
    ys = y_cpu[perm]
    order = torch.sort(ys, stable=True).indices
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(perm)
    rank[order] = torch.arange(len(ys)) - starts[ys[order]]
    to_val = rank < take[ys]
    return perm[~to_val].sort().values.to(y.device), perm[to_val].to(y.device)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size), bilinear, kept in [0,1]."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)


# ---------------------------------------------------------------- digits (embedded in scikit-learn)
def _load_digits(name: str, _root: Path | None) -> DataBundle:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8), pixels 0..16
    y = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=DIGITS_TEST_SIZE, random_state=0,
                                           stratify=digits.target)
    return DataBundle(name, x[idx_train], y[idx_train], x[idx_test], y[idx_test], CLASS_NAMES[name],
                      source="sklearn.datasets.load_digits")


# ---------------------------------------------------------------- MNIST and Fashion-MNIST (IDX .gz files)
def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, md5: str | None) -> None:
    if md5 is not None and _md5(path) != md5:
        raise UsageError(f"{path} is corrupt or truncated (md5 differs from the original's {md5}); "
                         "replace it with the original file")


def _load_mnist_family(name: str, root: Path | None) -> DataBundle:
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    folder = cls.__name__  # torchvision's layout: <root>/MNIST/raw, <root>/FashionMNIST/raw
    work = cache_dir() / "torchvision"
    work_raw = work / folder / "raw"
    if root is not None:  # a user's folder: read-only; verify, then decompress into the cache
        src = root / folder / "raw"
        missing = [fn for fn, _ in cls.resources if not (src / fn).exists() and not (src / fn[:-3]).exists()]
        if missing:
            raise UsageError(f"{name} not found: {src} lacks {', '.join(missing)}; put the original .gz files "
                             f"there (torchvision layout) or unset --data-root/ROBUSTCNN_DATA to download them")
        fill_idx_cache(name, src, work_raw, cls.resources)  # checked copies; a damaged cache entry is rebuilt
    else:
        drop_bad_idx_entries(work_raw, cls.resources)  # torchvision fetches a damaged entry again
    try:
        train, test = (cls(str(work), train=t, download=root is None) for t in (True, False))
    except Exception as err:  # network failure, or torchvision's own integrity check
        raise UsageError(f"{name} is not in {work_raw} and could not be downloaded ({first_line(err)}); "
                         f"put the original .gz files in <dir>/{folder}/raw and pass --data-root <dir>") from err
    for split in (train, test):
        if len(split.data) != len(split.targets):
            raise UsageError(f"{name} in {src if root is not None else work_raw}: {len(split.data)} images but "
                             f"{len(split.targets)} labels; replace the files with the originals")
    try:
        def as_float(t: torch.Tensor) -> torch.Tensor:
            return t.unsqueeze(1).float().div_(255)
        bundle = DataBundle(name, as_float(train.data), train.targets.long(), as_float(test.data),
                            test.targets.long(), CLASS_NAMES[name], source=str(root or work))
    except Exception as err:
        raise UsageError(f"{name} files in {work_raw} are unreadable ({err}); delete that folder and retry") from err
    return bundle


# ---------------------------------------------------------------- CIFAR-10 (python pickle batches)
def _load_cifar10(name: str, root: Path | None) -> DataBundle:
    from torchvision import datasets

    cls = datasets.CIFAR10
    read_from = cache_dir() / "torchvision"
    if root is not None:
        if (root / cls.base_folder).is_dir():
            read_from = root  # extracted batches are only read, so the user's folder is used in place
        elif (root / cls.filename).exists():
            _verify(root / cls.filename, cls.tgz_md5)
            if not (read_from / cls.base_folder).is_dir():
                import tarfile
                with tarfile.open(root / cls.filename) as tar:
                    tar.extractall(read_from, filter="data")
        else:
            hint = (f"; the CIFAR-10 PNG subset there loads as imagefolder:{root / 'cifar10-png'}"
                    if (root / "cifar10-png").is_dir() else "")
            raise UsageError(f"cifar10 not found: {root} has neither {cls.base_folder}/ nor {cls.filename}{hint}")
    try:
        train, test = (cls(str(read_from), train=t, download=root is None) for t in (True, False))
    except Exception as err:
        raise UsageError(f"cifar10 in {read_from} is missing or corrupt ({str(err).splitlines()[0]}); "
                         f"put the original {cls.base_folder}/ or {cls.filename} there, or pass --data-root") from err

    def as_float(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).permute(0, 3, 1, 2).float().div_(255)  # (N, 32, 32, 3) uint8 -> (N, 3, 32, 32)

    return DataBundle(name, as_float(train.data), torch.tensor(train.targets), as_float(test.data),
                      torch.tensor(test.targets), CLASS_NAMES[name], source=str(read_from))


# ---------------------------------------------------------------- ImageFolder (<path>/train, <path>/test)
def _load_imagefolder(path: str, root: Path | None) -> DataBundle:
    base = Path(path).expanduser()
    if not base.is_absolute() and not base.exists() and root is not None and (root / base).exists():
        base = root / base  # 'imagefolder:cifar10-png' resolves against the data root
    for split in ("train", "test"):
        if not (base / split).is_dir():
            raise UsageError(f"imagefolder: {base / split} is not a folder; expected {base}/train/<class>/*.png "
                             f"and {base}/test/<class>/*.png")
    from robustcnn.datafiles import decode_splits, list_split

    (train_paths, y_train, classes), (test_paths, y_test, test_classes) = (list_split(base, s) for s in ("train", "test"))
    if test_classes != classes:
        raise UsageError(f"imagefolder: class folders differ between {base}/train {classes} and {base}/test {test_classes}")
    if len(classes) < 2:
        raise UsageError(f"imagefolder: {base}/train has a single class folder ({classes[0]}); a classifier needs "
                         "at least two classes")
    x_train, x_test = decode_splits(base, train_paths, test_paths, cache_dir() / "decoded")
    # Folders list images class by class, so "the first n test images" would be one class. Both splits are put in
    # one fixed order (a permutation drawn from a constant seed, the same for every run and --seed), so the first n
    # are a class-mixed sample and numbers on "the first n" compare across runs and tools.
    x_train, y_train = _fixed_order(x_train, y_train, salt=1)
    x_test, y_test = _fixed_order(x_test, y_test, salt=2)
    return DataBundle(f"{IMAGEFOLDER_PREFIX}{base}", x_train, y_train, x_test, y_test, classes, source=str(base))


def _fixed_order(x: torch.Tensor, y: torch.Tensor, *, salt: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(20261125 + salt))
    return x[order], y[order]


# ---------------------------------------------------------------- batches and augmentation, all on tensors
def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None):
    """Yield (x, y) slices of tensors already on the device; the shuffle order is drawn on the CPU generator
    so the order is the same on every device."""
    n = len(y)
    order = torch.randperm(n, generator=generator).to(y.device) if shuffle else None
    for start in range(0, n, batch_size):
        if order is None:
            yield x[start:start + batch_size], y[start:start + batch_size]
        else:
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]


def augment(x: torch.Tensor, *, crop_padding: int = 0, flip: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop (zero padding) and horizontal flip for a whole batch (B, C, H, W), with no per-sample loop."""
    b, _, h, w = x.shape
    if crop_padding > 0:
        padded = F.pad(x, (crop_padding,) * 4)
        off = torch.randint(0, 2 * crop_padding + 1, (2, b), generator=generator).to(x.device)
        rows = (off[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
        cols = (off[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
        x = padded[torch.arange(b, device=x.device)[:, None, None, None],
                   torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
    if flip:
        mask = (torch.rand(b, generator=generator) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(mask, x.flip(3), x)
    return x
