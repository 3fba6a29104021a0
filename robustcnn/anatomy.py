"""Anatomy of a CNN: its first-layer kernels and, for one input, the feature maps after every convolution and
every pooling (the S- and C-planes of the Neocognitron), beside the same maps for an adversarial example.

    layers = anatomy(model, x[:1], x_adv=x_adv[:1])
    for name, kind, maps, adv_maps in layers: ...      # maps: (N, C, H, W) on the CPU, the module's output

Forward hooks go on every nn.Conv2d, every pooling module (avg/max/adaptive/LP pooling, lenet5_1998's
trainable subsampling) and every module that declares `anatomy_kind` (the Neocognitron's S- and C-layers), so
it works for zoo models and user models alike. `run_anatomy` writes a run folder (`robustcnn anatomy`): the
maps of one test image and its PGD example (data/anatomy.npz), the per-layer growth of the perturbation
(tables/anatomy.csv: ||maps(x_adv) - maps(x)|| / ||maps(x)||, L2 over the whole layer), figures and report.md.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from robustcnn.errors import UsageError
from robustcnn.results import atomic_write_bytes, safe_name, write_table

POOLING = (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d)


class LayerMaps(NamedTuple):
    name: str                          # the module's path in the model, e.g. "body.0"
    kind: str                          # "conv", "pool", "S-layer", "C-layer"
    maps: torch.Tensor                 # (N, C, H, W): the module's output for x
    adv_maps: torch.Tensor | None      # the same for x_adv (None without x_adv)


def layer_kind(module: nn.Module) -> str | None:
    """'conv', 'pool' or the module's own anatomy_kind; None for modules anatomy does not show."""
    from robustcnn.models.lenet import PartialConv, Subsample

    declared = getattr(type(module), "anatomy_kind", None)
    if declared:
        return declared
    if isinstance(module, (nn.Conv2d, PartialConv)):
        return "conv"
    if isinstance(module, (*POOLING, Subsample)):
        return "pool"
    return None


def shown_layers(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(name, module, kind) of every layer anatomy hooks, in registration order."""
    found = [(name, m, layer_kind(m)) for name, m in model.named_modules() if name]
    return [(name, m, kind) for name, m, kind in found if kind is not None]


def _record(model: nn.Module, x: torch.Tensor, layers: list[tuple[str, nn.Module, str]]) -> dict[int, torch.Tensor]:
    """{layer index: its output} in the order the forward pass reaches them (a module's first call only)."""
    outputs: dict[int, torch.Tensor] = {}

    def keep(i: int, out: torch.Tensor) -> None:
        outputs.setdefault(i, out.detach().cpu())

    hooks = [m.register_forward_hook(lambda _m, _i, out, i=i: keep(i, out)) for i, (_, m, _) in enumerate(layers)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return outputs


def anatomy(model: nn.Module, x: torch.Tensor, *, x_adv: torch.Tensor | None = None) -> list[LayerMaps]:
    """The output of every conv/pool/S/C layer for images x (N, C, H, W) in [0,1], and for x_adv if given,
    in the order the forward pass runs them. The model runs in eval mode (its mode is restored); layers the
    forward pass never reaches are left out."""
    if x.dim() != 4:
        raise UsageError(f"anatomy needs images of shape (N, C, H, W); got a tensor of shape {tuple(x.shape)}")
    if x_adv is not None and x_adv.shape != x.shape:
        raise UsageError(f"x_adv has shape {tuple(x_adv.shape)}, x has {tuple(x.shape)}; they must match")
    layers = shown_layers(model)
    if not layers:
        name = getattr(model, "model_name", "") or type(model).__name__
        raise UsageError(f"{name} has no convolution or pooling layer to show; anatomy needs a CNN "
                         "(nn.Conv2d, a pooling module, or the Neocognitron's S/C-layers)")
    was_training = model.training
    model.eval()
    try:
        clean = _record(model, x, layers)
        adv = _record(model, x_adv, layers) if x_adv is not None else {}
    finally:
        model.train(was_training)
    return [LayerMaps(layers[i][0], layers[i][2], maps, adv.get(i)) for i, maps in clean.items()]


def first_kernels(model: nn.Module) -> np.ndarray | None:
    """The first conv-like layer's kernels, (out, in, k, k), or None when it has no weight tensor of that shape."""
    from robustcnn.models.lenet import PartialConv
    from robustcnn.models.neocognitron import SLayer

    for _, module, kind in shown_layers(model):
        if kind == "pool" or kind == "C-layer":
            continue
        if isinstance(module, SLayer):
            weight = module.a
        elif isinstance(module, PartialConv):
            weight = torch.zeros(module.out_maps * module.in_maps, module.k, module.k).index_copy(
                0, module.slots.cpu(), module.weight.detach().cpu()).view(module.out_maps, module.in_maps, module.k, module.k)
        else:
            weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 4:
            return weight.detach().cpu().numpy()
    return None


def growth_table(layers: list[LayerMaps], x: torch.Tensor, x_adv: torch.Tensor) -> pd.DataFrame:
    """Per layer: shape, clean L2 norm and the relative size of the adversarial change, input first."""
    rows = [{"layer": "input", "kind": "input", "shape": "x".join(map(str, x.shape[1:])),
             "clean_norm": x.norm().item(), "relative_change": ((x_adv - x).norm() / x.norm().clamp_min(1e-12)).item()}]
    for layer in layers:
        clean, adv = layer.maps.float(), layer.adv_maps.float()
        rows.append({"layer": layer.name, "kind": layer.kind, "shape": "x".join(map(str, clean.shape[1:])),
                     "clean_norm": clean.norm().item(),
                     "relative_change": ((adv - clean).norm() / clean.norm().clamp_min(1e-12)).item()})
    return pd.DataFrame(rows)


def anatomy_arrays(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, *,
                   max_maps: int = 8) -> tuple[dict[str, Any], pd.DataFrame]:
    """What the anatomy figures need as numpy arrays (the first `max_maps` maps of each layer), and the growth
    table, for one image: x and x_adv of shape (1, C, H, W)."""
    layers = anatomy(model, x, x_adv=x_adv)
    arrays: dict[str, Any] = {"names": np.array([layer.name for layer in layers]),
                              "kinds": np.array([layer.kind for layer in layers]),
                              "counts": np.array([layer.maps.shape[1] for layer in layers]),  # maps per layer, all
                              "input": x[0].cpu().numpy(), "input_adv": x_adv[0].cpu().numpy()}
    for i, layer in enumerate(layers):
        arrays[f"maps__{i}"] = layer.maps[0, :max_maps].numpy()
        arrays[f"adv__{i}"] = layer.adv_maps[0, :max_maps].numpy()
    kernels = first_kernels(model)
    if kernels is not None:
        arrays["kernels"] = kernels
    return arrays, growth_table(layers, x.cpu(), x_adv.cpu())


def anatomy_of_test_image(model: nn.Module, data: Any, index: int, *, epsilon: float, steps: int = 40,
                          seed: int = 0) -> tuple[dict[str, Any], pd.DataFrame]:
    """Arrays for the anatomy figures (data/anatomy*.npz) and the growth table for test image `index` and its
    PGD example (L-inf, `steps` steps of 2.5 * epsilon / steps from a seeded random start). Any study can call
    it and draw the result with robustcnn.report_lineage.anatomy_section."""
    from robustcnn.perturb import pgd_linf

    n = len(data.y_test)
    if not 0 <= index < n:
        raise UsageError(f"test image index {index} is outside the test set ({n} images); choose 0..{n - 1}")
    x, y = data.x_test[index:index + 1], data.y_test[index:index + 1]
    x_adv = pgd_linf(model, x, y, epsilon=epsilon, steps=steps, step_size=2.5 * epsilon / steps,
                     generator=torch.Generator().manual_seed(seed))
    arrays, growth = anatomy_arrays(model, x, x_adv)
    with torch.no_grad():
        preds = model(torch.cat([x, x_adv])).argmax(1).tolist()
    arrays.update(label=np.array(int(y)), clean_pred=np.array(preds[0]), adv_pred=np.array(preds[1]),
                  epsilon=np.array(epsilon), steps=np.array(steps), index=np.array(index),
                  class_names=np.array(data.class_names))
    return arrays, growth


def save_npz(path: Path, arrays: dict[str, Any]) -> None:
    """Arrays for a report to redraw from, written atomically (compressed)."""
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def check_anatomy_index(index: int, data: Any) -> None:
    """A study's anatomy_index against its test set, before any training (-1: no anatomy)."""
    n = len(data.y_test)
    if index >= n:
        raise UsageError(f"anatomy_index {index} is outside the test set ({n} images); choose 0..{n - 1}, or -1 "
                         "for no anatomy figures")


def save_study_anatomy(run_dir: Path, name: str, model: nn.Module, data: Any, *, index: int, epsilon: float,
                       seed: int) -> pd.DataFrame | None:
    """For a study (lineage, adversarial): test image `index` and its PGD example through `model`, saved as
    data/anatomy__<name>.npz (with the model's label, for the report to redraw without torch); returns the growth
    table with a `model` column, or None for a model with no convolution or pooling layer (the report names it)."""
    if not shown_layers(model):
        return None
    arrays, growth = anatomy_of_test_image(model, data, index, epsilon=epsilon, seed=seed)
    save_npz(Path(run_dir) / "data" / f"anatomy__{safe_name(name, 'model name')}.npz", arrays | {"model": np.array(name)})
    return growth.assign(model=name)


def write_growth_table(run_dir: Path, growth: list[pd.DataFrame], *, index: int, epsilon: float, steps: int = 40) -> None:
    """tables/anatomy.csv of a study: every CNN's growth table, model first (nothing when no model had one)."""
    if not growth:
        return
    df = pd.concat(growth, ignore_index=True)
    write_table(run_dir, "anatomy", df[["model", *[c for c in df.columns if c != "model"]]],
                title=f"Relative change of each layer's output under PGD-{steps} (L-inf eps {epsilon:g}), test image "
                      f"{index}")


def _model_for(model: str | nn.Module, data: Any, *, weights: str | Path | None, model_args: dict[str, Any],
               epochs: int, seed: int, device: torch.device, trust_pickle: bool) -> tuple[nn.Module, str]:
    """A zoo name without weights is trained here (TrainConfig(epochs=epochs)); anything else loads as given."""
    from robustcnn.benchmark import load_model
    from robustcnn.models import MODELS, create_model
    from robustcnn.train import TrainConfig, seed_everything, train

    if isinstance(model, str) and model in MODELS and weights is None:
        seed_everything(seed)
        net = create_model(model, dataset=data, **model_args)
        if not shown_layers(net):  # before training it: a model anatomy cannot show is an error now
            anatomy(net, data.x_test[:1])
        result = train(net, data, TrainConfig(epochs=epochs), seed=seed, device=device, label=model)  # progress
        return net, f"trained here for {len(result.history)} epoch(s), test accuracy " \
                    f"{result.history['test_accuracy'].iloc[-1]:.4f}"
    net = load_model(model, dataset=data, weights=weights, model_args=model_args, trust_pickle=trust_pickle,
                     untrained=True)
    return net, f"weights from {weights}" if weights is not None else "as constructed (no weights given)"


def run_anatomy(model: str | nn.Module, *, dataset: str = "digits", weights: str | Path | None = None,
                model_args: dict[str, Any] | None = None, index: int = 0, epsilon: float = 0.1, steps: int = 40,
                epochs: int = 10, data_root: str | Path | None = None, seed: int = 0, device: str = "auto",
                out: str | Path = "results", trust_pickle: bool = False) -> Path:
    """Kernels and feature maps of test image `index` and of its PGD example (L-inf, `epsilon`, `steps` steps of
    2.5 * epsilon / steps from a seeded random start); writes `<out>/anatomy/<run-id>/`.

    model: a zoo name (trained here for `epochs` unless `weights` is given), an nn.Module, or any form
    `robustcnn benchmark` accepts (file.py:factory, package.module:factory, TorchScript, .pt2)."""
    from robustcnn.attacks import AttackConfig, check_budget
    from robustcnn.data import load_dataset
    from robustcnn.devices import resolve_device
    from robustcnn.models import MODELS, model_input_size
    from robustcnn.report import redraw
    from robustcnn.results import RunFolder, check_writable

    started = time.perf_counter()
    check_budget([epsilon], [AttackConfig("pgd")])  # the L-inf bound too: eps 5 is not a budget in [0, 1]
    if not epsilon > 0:  # x_adv would be x: every change 0, nothing to draw on the growth figure's log axis
        raise UsageError(f"epsilon (--eps) must be above 0 for an adversarial example to compare with, got {epsilon}")
    check_writable(out)  # before any training: a bad --out must not cost the work
    dev = resolve_device(device)
    size = model_input_size(model) if isinstance(model, str) and model in MODELS else None
    data = load_dataset(dataset, root=data_root, image_size=size, device=dev)
    if data.x_test.dim() != 4:
        raise UsageError(f"dataset {dataset} does not hold images (N, C, H, W); anatomy needs an image dataset")
    n = len(data.y_test)
    if not 0 <= index < n:
        raise UsageError(f"--index {index} is outside the test set of {dataset} ({n} images); choose 0..{n - 1}")
    net, provenance = _model_for(model, data, weights=weights, model_args=model_args or {}, epochs=epochs, seed=seed,
                                 device=dev, trust_pickle=trust_pickle)
    net = net.to(dev).eval()
    if not shown_layers(net):
        anatomy(net, data.x_test[:1])  # raises the one-line error
    arrays, growth = anatomy_of_test_image(net, data, index, epsilon=epsilon, steps=steps, seed=seed)
    label = model if isinstance(model, str) else type(model).__name__
    config = {"model": label, "dataset": dataset, "weights": str(weights) if weights else None, "index": index,
              "epsilon": epsilon, "steps": steps, "epochs": epochs, "provenance": provenance}
    with RunFolder(out, "anatomy", config=config, seed=seed, device=str(dev), elapsed=time.perf_counter() - started,
                   on_finish=lambda path: redraw(path, kind="anatomy")) as run:
        save_npz(run.path / "data" / "anatomy.npz", arrays)
        write_table(run.path, "anatomy", growth.assign(model=label)[["model", *growth.columns]],
                    title=f"Relative change of each layer's output under PGD-{steps} (L-inf eps {epsilon:g}), test image {index}")
    return run.path
