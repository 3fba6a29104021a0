"""The pretrained zoo: reference weights shipped inside the package, each with its checksum and scorecard.

    model = create_model("lenet5", pretrained="mnist")    # eval mode, weights checked against their sha256
    robustcnn benchmark lenet5 --pretrained mnist

Files: `robustcnn/pretrained/<model>-<tag>.pt` (a state_dict) and `robustcnn/pretrained/index.json`, written by
`scripts/make-pretrained.py` from reference run folders. Each index entry records the file's sha256 and size,
the run it came from, the model's clean accuracy on the whole test split (measured by loading the file), the
arguments that rebuild the architecture, and the reference curve: the source run's worst-case robust accuracy
per epsilon, with the attack suite and n that made it. Those curves are the benchmark's reference curves;
nothing else (no run that happens to sit under --out) is drawn as a reference.

A tag names the weights, not only the dataset: "mnist" (standard training), "mnist-pgd" (PGD-trained), ...
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from robustcnn.errors import UsageError, first_line

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
INDEX = "index.json"
IMAGEFOLDER = "imagefolder:"


def dataset_key(name: str) -> str:
    """A dataset name without its folder: 'imagefolder:/data/cifar10-png' and 'imagefolder:cifar10-png' are both
    'cifar10-png' (the leaderboard's file names use the same key)."""
    name = str(name)
    if name.startswith(IMAGEFOLDER):
        name = name[len(IMAGEFOLDER):]
    return name.rstrip("/").split("/")[-1]


def read_index(directory: Path | None = None) -> list[dict[str, Any]]:
    """The shipped entries (none when this installation ships no weights); a corrupt index is a UsageError."""
    path = Path(directory or PRETRAINED_DIR) / INDEX
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["models"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"the pretrained index {path} is corrupt ({first_line(err)}); reinstall robustcnn") from err
    return list(entries)


def shipped() -> list[str]:
    """'model:tag' for every shipped entry."""
    return [f"{e['model']}:{e['tag']}" for e in read_index()]


def find_pretrained(model: str, tag: str) -> dict[str, Any]:
    """The index entry of `model` pretrained as `tag`; a UsageError that lists what is shipped otherwise."""
    for entry in read_index():
        if entry["model"] == model and entry["tag"] == tag:
            return entry
    have = shipped()
    listing = f"shipped: {', '.join(have)}" if have else "this installation ships no pretrained weights"
    raise UsageError(f"no pretrained weights '{tag}' for {model} ({listing}); pass --weights FILE for your own")


def pretrained_path(entry: dict[str, Any]) -> Path:
    return PRETRAINED_DIR / entry["file"]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pretrained_state(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry's state_dict: the file's bytes are checked against the recorded sha256, then those very bytes
    are read with torch.load(weights_only=True), which unpickles only tensors and containers."""
    import torch

    path = pretrained_path(entry)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UsageError(f"pretrained weights {path} cannot be read ({err.strerror or first_line(err)}); "
                         "reinstall robustcnn") from err
    digest = sha256_bytes(data)
    if digest != entry["sha256"]:
        raise UsageError(f"pretrained weights {path} do not match their recorded sha256 ({digest[:12]}... instead of "
                         f"{entry['sha256'][:12]}...); the file was changed or damaged: reinstall robustcnn")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"pretrained weights {path} are not a state_dict; reinstall robustcnn")
    return state


def reference_curves(dataset: str, *, exclude_hash: str | None = None) -> pd.DataFrame:
    """The shipped references' worst-case curves on `dataset` (source, model, epsilon, robust_accuracy, suite,
    n, curve); `source` names the suite and n, so a figure's legend says what made each curve."""
    rows = []
    for e in read_index():
        ref = e.get("reference") or {}
        if dataset_key(e["dataset"]) != dataset_key(dataset) or not ref or e.get("weights_hash") == exclude_hash:
            continue
        source = f"shipped reference: {ref['suite']}, n={ref['n']}"
        for point in ref["robust_accuracy"]:
            rows.append({"source": source, "model": f"{e['model']} [{e['tag']}]", "epsilon": float(point["epsilon"]),
                         "robust_accuracy": float(point["robust_accuracy"]), "suite": ref["suite"], "n": int(ref["n"]),
                         "curve": ref.get("curve", "cumulative")})
    return pd.DataFrame(rows, columns=["source", "model", "epsilon", "robust_accuracy", "suite", "n", "curve"])
