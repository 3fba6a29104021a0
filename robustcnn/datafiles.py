"""Dataset files checked before they are trusted: raw files before they enter the cache, cache entries before
they are used, image folders before they are decoded.

MNIST-family files reach the cache decompressed (torchvision reads them there). A file copied in is checked
first: a .gz against torchvision's md5, an uncompressed original against the md5 of the genuine file (known for
the real datasets) and, always, against the IDX layout (header, length, label range). Each entry we write gets
a `.sha256` beside it; an entry that no longer matches it (or has none and is not the genuine file) is
rebuilt, with a warning, never trusted: a damaged cache must not poison every later run.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from robustcnn.errors import RobustcnnWarning, UsageError, first_line
from robustcnn.results import atomic_write_bytes, atomic_write_text

# md5 of each decompressed original, keyed by the md5 of its .gz in torchvision's resource list
RAW_MD5 = {
    "f68b3c2dcbeaaa9fbdd348bbdeb94873": "6bbc9ace898e44ae57da46a324031adb",  # MNIST train-images-idx3-ubyte
    "d53e105ee54ea40749a09fcbcd1e9432": "a25bea736e30d166cdddb491f175f624",  # MNIST train-labels-idx1-ubyte
    "9fb629c4189551a2d022fa330f9573f3": "2646ac647ad5339dbf082846283269ea",  # MNIST t10k-images-idx3-ubyte
    "ec29112dd5afa0611ce80d1b7f02629c": "27ae3e4e09519cfbb04c329615203637",  # MNIST t10k-labels-idx1-ubyte
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d": "f4a8712d7a061bf5bd6d2ca38dc4d50a",  # FashionMNIST train-images
    "25c81989df183df01b3e8a0aad5dffbe": "9018921c3c673c538a1fc5bad174d6f9",  # FashionMNIST train-labels
    "bef4ecab320f06d8554ea6380940ec79": "8181f5470baa50b63fa0f6fddb340f0a",  # FashionMNIST t10k-images
    "bb300cfdad3c16e7a12a480ee83cd310": "15d484375f8d13e6eb1aabb0c3f46965",  # FashionMNIST t10k-labels
}
NUM_CLASSES = 10
MAX_IMAGE_PIXELS = 1 << 24  # 16.8 MP: far above any dataset image; a decompression bomb stops here, undecoded


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def idx_problem(data: bytes, labels: bool) -> str | None:
    """What is wrong with an IDX file of uint8 images (N, H, W) or labels (N,), or None."""
    ndim = 1 if labels else 3
    if len(data) < 4 + 4 * ndim:
        return f"{len(data)} bytes, shorter than an IDX header"
    zero, dtype, dims_in_file = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or dims_in_file != ndim:
        return f"its header is not that of uint8 {'labels' if labels else 'images'} (magic {data[:4].hex()})"
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    expected = 4 + 4 * ndim + math.prod(dims)
    if len(data) != expected:
        return f"{len(data)} bytes where its header {list(dims)} implies {expected}"
    if labels and dims[0] and max(data[8:]) >= NUM_CLASSES:
        return f"it holds label {max(data[8:])}, outside 0..{NUM_CLASSES - 1}"
    return None


def _sidecar(entry: Path) -> Path:
    return entry.with_name(entry.name + ".sha256")


def entry_ok(entry: Path) -> bool:
    """True when a cache entry is whole: it matches the checksum written with it."""
    side = _sidecar(entry)
    if not (entry.is_file() and side.is_file()):
        return False
    try:
        return hashlib.sha256(entry.read_bytes()).hexdigest() == side.read_text().strip()
    except OSError:
        return False


def write_entry(entry: Path, data: bytes) -> None:
    """The entry, then its checksum: a kill in between leaves an entry without one, which is rebuilt."""
    atomic_write_bytes(entry, data)
    atomic_write_text(_sidecar(entry), hashlib.sha256(data).hexdigest() + "\n")


def _raw_bytes(src: Path, fn: str, gz_md5: str | None) -> tuple[bytes, Path]:
    """The decompressed content of one resource from the user's folder, checked; (bytes, the file read)."""
    packed, plain = src / fn, src / fn[:-3]
    try:
        if packed.exists():
            data = packed.read_bytes()
            if gz_md5 is not None and md5_hex(data) != gz_md5:
                raise UsageError(f"{packed} is corrupt or truncated (md5 differs from the original's {gz_md5}); "
                                 "replace it with the original file")
            try:
                return gzip.decompress(data), packed
            except (OSError, EOFError, zlib.error) as err:
                raise UsageError(f"{packed} cannot be decompressed ({first_line(err)}); replace it with the "
                                 "original") from err
        data = plain.read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {packed if packed.exists() else plain} ({err.strerror})") from err
    if gz_md5 in RAW_MD5 and md5_hex(data) != RAW_MD5[gz_md5]:
        raise UsageError(f"{plain} is corrupt or truncated (md5 differs from the original's {RAW_MD5[gz_md5]}); "
                         "replace it with the original file")
    return data, plain


def fill_idx_cache(name: str, src: Path, cache: Path, resources: Sequence[tuple[str, str | None]]) -> None:
    """Copy (decompressing) each resource of `src` into `cache` unless a whole entry is already there."""
    for fn, gz_md5 in resources:
        entry = cache / fn[:-3]
        if entry_ok(entry):
            continue
        data, origin = _raw_bytes(src, fn, gz_md5)
        problem = idx_problem(data, labels="labels" in fn)
        if problem:
            raise UsageError(f"{name}: {origin} is not a valid IDX file ({problem}); replace it with the original")
        if entry.exists():
            warnings.warn(f"cache entry {entry} was damaged; rebuilt it from {origin}", RobustcnnWarning, stacklevel=2)
        write_entry(entry, data)


def drop_bad_idx_entries(cache: Path, resources: Sequence[tuple[str, str | None]]) -> None:
    """Download mode (torchvision fills the cache): an entry that is not the genuine file (or, for datasets
    without a known checksum, not a valid IDX file) is deleted, so torchvision fetches and checks it again."""
    for fn, gz_md5 in resources:
        entry = cache / fn[:-3]
        if not entry.is_file() or entry_ok(entry):
            continue
        data = entry.read_bytes()
        good = md5_hex(data) == RAW_MD5[gz_md5] if gz_md5 in RAW_MD5 else idx_problem(data, "labels" in fn) is None
        if good:
            write_entry(entry, data)
            continue
        warnings.warn(f"cache entry {entry} is damaged; fetching it again", RobustcnnWarning, stacklevel=2)
        entry.unlink()
        _sidecar(entry).unlink(missing_ok=True)


# ---------------------------------------------------------------- image folders (<path>/train, <path>/test)
def list_split(base: Path, split: str) -> tuple[list[str], torch.Tensor, list[str]]:
    """Image paths, labels and class names of one split. Files that resolve outside `base` (symlinks out of
    the data root) are skipped with a warning: a dataset is what lies under its folder."""
    from torchvision.datasets import ImageFolder

    try:
        listing = ImageFolder(str(base / split))
    except (FileNotFoundError, RuntimeError, OSError) as err:
        raise UsageError(f"imagefolder: {base / split}: {first_line(err)}") from err
    home = base.resolve()
    kept = [(p, t) for p, t in listing.samples if home in Path(p).resolve().parents]
    if len(kept) < len(listing.samples):
        warnings.warn(f"imagefolder: skipped {len(listing.samples) - len(kept)} file(s) of {base / split} that link "
                      f"outside {base}", RobustcnnWarning, stacklevel=3)
    empty = sorted(set(listing.classes) - {listing.classes[t] for _, t in kept})
    if empty:
        raise UsageError(f"imagefolder: class folder '{empty[0]}' of {base / split} has no images inside {base}")
    return [p for p, _ in kept], torch.tensor([t for _, t in kept], dtype=torch.long), listing.classes


def decode_splits(base: Path, train: list[str], test: list[str], cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode both splits once, together (one channel count and one size for the whole dataset), and cache the
    uint8 tensors, keyed by the files' names, sizes and mtimes; a damaged cache entry is decoded again."""
    listing = [(p, os.stat(p)) for p in train + test]
    key = hashlib.sha1(repr(("v2", str(base.resolve()), len(train),
                             [(p, s.st_size, s.st_mtime_ns) for p, s in listing])).encode())
    cached = cache / f"{key.hexdigest()}.pt"
    if cached.exists():
        try:
            blob = torch.load(cached, map_location="cpu", weights_only=True)
            x_train, x_test = blob["x_train"], blob["x_test"]
            if not (x_train.dtype == x_test.dtype == torch.uint8 and x_train.dim() == x_test.dim() == 4
                    and x_train.shape[1:] == x_test.shape[1:] and (len(x_train), len(x_test)) == (len(train), len(test))):
                raise ValueError("tensors of the wrong type or shape")
            return x_train.float().div_(255), x_test.float().div_(255)
        except Exception as err:  # torch.load's errors vary with the damage
            warnings.warn(f"decoded-image cache entry {cached} is damaged ({first_line(err)}); decoding again",
                          RobustcnnWarning, stacklevel=3)
    x = decode_images(train + test)
    x_train, x_test = x[:len(train)], x[len(train):]
    buf = io.BytesIO()
    torch.save({"x_train": x_train.clone(), "x_test": x_test.clone()}, buf)
    atomic_write_bytes(cached, buf.getvalue())
    return x_train.float().div_(255), x_test.float().div_(255)


def decode_images(paths: list[str]) -> torch.Tensor:
    """Paths -> (N, C, H, W) uint8; all resized to the first image's size; greyscale only if all are."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image, UnidentifiedImageError

    def read(p: str) -> Image.Image:
        try:
            with Image.open(p) as im:
                if im.size[0] * im.size[1] > MAX_IMAGE_PIXELS:  # checked on the header, before decoding
                    raise UsageError(f"imagefolder: {p} is {im.size[0]}x{im.size[1]} pixels, more than "
                                     f"{MAX_IMAGE_PIXELS:,}; resize the dataset's images")
                im.load()
                return im
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as err:
            if isinstance(err, UsageError):
                raise
            raise UsageError(f"imagefolder: cannot decode {p} ({first_line(err)}); remove or replace the file") from err

    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size check above decides
        images = list(pool.map(read, paths))
    mode = "L" if all(im.mode in ("L", "1", "I;16") for im in images) else "RGB"
    size = images[0].size
    arrays = [np.asarray((im if im.size == size else im.resize(size, Image.BILINEAR)).convert(mode)) for im in images]
    stacked = torch.from_numpy(np.stack(arrays))
    return stacked.unsqueeze(1) if mode == "L" else stacked.permute(0, 3, 1, 2).contiguous()
