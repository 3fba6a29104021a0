"""`benchmark`'s units (robustcnn.units): each attack x attack seed and the lint, stored under
`<out>/.sweep-store/benchmark/` so a killed benchmark resumes where it stopped.

A unit's id hashes the model's identity (below), the device and CPU thread count, and the unit's own inputs
(the attack and its settings, the epsilons, the seed, a fingerprint of the evaluated examples: robustcnn.evaluation).
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from robustcnn.sweep import SweepStore
from robustcnn.units import MemoryStore, Units


def model_identity(model: str | nn.Module, net: nn.Module, weights: str, model_args: dict[str, Any] | None) -> dict:
    """What makes a benchmarked model this model: how it was named, the code that builds it (the file's sha256,
    where there is a file), its arguments, the weights it is scored with (`weights`: weights_hash of the model as
    attacked, wrappers such as Normalized included) and the wrapper's type (LogOf turns probabilities into logits)."""
    name = model if isinstance(model, str) else f"{type(model).__module__}.{type(model).__qualname__}"
    return {"model": name, "code": _code_hash(model), "model_args": model_args or {}, "weights": weights,
            "wrapper": type(net).__name__}


def _code_hash(model: str | nn.Module) -> str | None:
    """sha256 of the file that defines the model: a model file, a factory's .py file, or a factory's module."""
    if not isinstance(model, str):
        return None
    path = Path(model)
    if not path.is_file() and ":" in model:
        target = model.rpartition(":")[0]
        if target.endswith(".py"):
            path = Path(target)
        else:
            try:
                spec = importlib.util.find_spec(target)
            except (ImportError, ValueError):
                spec = None
            path = Path(spec.origin) if spec is not None and spec.origin and spec.has_location else path
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def benchmark_units(store: str | Path | None, identity: dict[str, Any], device: torch.device, *,
                    memory: bool = False) -> Units | None:
    """The runner for a benchmark's units (None without a store: everything is computed; with memory=True, for
    units computed by workers, a store in memory)."""
    if store is None and not memory:
        return None
    return Units(SweepStore(store) if store is not None else MemoryStore(),
                 {"unit_of": "benchmark", **identity, "device": str(device), "threads": torch.get_num_threads()})
