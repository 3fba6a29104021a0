"""Any supported model form -> an nn.Module with its weights loaded (the files themselves: model_files.py): a zoo
name with a state_dict file or a shipped pretrained tag, `file.py:factory`, `package.module:factory`, an
nn.Module, TorchScript or .pt2; plus the wrappers the benchmark puts around a model (Normalized, LogOf)."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from robustcnn.data import DataBundle
from robustcnn.errors import UsageError
from robustcnn.model_files import first_line, load_weights_into, read_model_file, read_weights
from robustcnn.models import MODELS, create_model


def load_model(spec: str | nn.Module, *, dataset: DataBundle, weights: str | Path | None = None,
               model_args: dict[str, Any] | None = None, trust_pickle: bool = False, pretrained: str | None = None,
               untrained: bool = False) -> nn.Module:
    """Resolve any supported model form to an nn.Module (weights loaded, not yet checked).

    A zoo name needs weights (a file, or a shipped `pretrained` tag); only `untrained=True` scores its random
    initialisation, on purpose."""
    if pretrained is not None:
        return _pretrained(spec, pretrained, dataset, weights, model_args)
    if isinstance(spec, nn.Module):
        model = spec
    elif spec in MODELS:
        if weights is None and not untrained:
            from robustcnn.zoo import shipped

            have = [s for s in shipped() if s.startswith(f"{spec}:")]
            raise UsageError(f"{spec} is a zoo architecture with random weights: pass --weights FILE"
                             f"{', --pretrained ' + '|'.join(h.split(':', 1)[1] for h in have) if have else ''} or "
                             "--untrained (to score the random initialisation on purpose)")
        model = create_model(spec, dataset=dataset, **(model_args or {}))
    elif ":" in spec and not Path(spec).exists():
        model = _from_factory(spec, model_args or {})
    else:
        model = _from_file(Path(spec), trust_pickle)
    if weights is not None:
        load_weights_into(model, read_weights(Path(weights), trust_pickle), Path(weights))
    return model


def _pretrained(spec: str | nn.Module, tag: str, data: DataBundle, weights: str | Path | None,
                model_args: dict[str, Any] | None) -> nn.Module:
    """A shipped zoo model, on the dataset its weights were trained on."""
    from robustcnn.zoo import dataset_key, find_pretrained

    if weights is not None:
        raise UsageError("pass --weights or --pretrained, not both")
    if not isinstance(spec, str) or spec not in MODELS:
        raise UsageError(f"--pretrained needs a zoo name (see `robustcnn models`), not {spec!r}")
    entry = find_pretrained(spec, tag)
    if dataset_key(entry["dataset"]) != dataset_key(data.name):
        raise UsageError(f"{spec} --pretrained {tag} was trained on {entry['dataset']}, not {data.name}; benchmark it "
                         f"with --dataset {entry['dataset']}")
    return create_model(spec, dataset=data, pretrained=tag, **(model_args or {}))


def _from_factory(spec: str, model_args: dict[str, Any]) -> nn.Module:
    target, _, name = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise UsageError(f"model file {path} does not exist")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)  # the user's own code runs here, by design
        else:
            module = importlib.import_module(target)
    except UsageError:
        raise
    except Exception as err:
        raise UsageError(f"cannot import {target} ({first_line(err)})") from err
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UsageError(f"{target} has no callable '{name}'")
    try:
        model = factory(**model_args)
    except TypeError as err:
        raise UsageError(f"{spec}: bad --model-arg ({first_line(err)})") from err
    except Exception as err:  # the user's factory failed: its own error, in one line
        raise UsageError(f"{spec} raised {first_line(err)}") from err
    if not isinstance(model, nn.Module):
        raise UsageError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _from_file(path: Path, trust_pickle: bool) -> nn.Module:
    if not path.is_file():
        raise UsageError(f"model '{path}' is neither a registered model, an existing file, nor module:factory "
                         "(see `robustcnn models`)")
    return read_model_file(path, trust_pickle)


def weights_hash(model: nn.Module) -> str:
    """sha256 over the state_dict's names and tensor bytes: the leaderboard's identity of a model."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class Normalized(nn.Module):
    """Wraps a model that expects normalized inputs: [0,1] pixels in, (x - mean) / std inside."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


class LogOf(nn.Module):
    """Turns probability outputs into log-probabilities, which attacks can use as logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.model(x).clamp_min(1e-12))


def to_eval(model: nn.Module) -> nn.Module:
    """model.eval(), also for torch.export modules, which refuse .eval(): their mode was fixed at export."""
    try:
        return model.eval()
    except NotImplementedError:
        for m in model.modules():
            m.training = False
        return model


