"""What `robustcnn benchmark` does before any attack, here and again in each of its workers
(robustcnn.benchmark_spread): load the data and the model as the user named them, then the pre-flight checks
(input and output shapes, finite outputs, eval mode, logits, determinism), which return the model to attack."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from robustcnn.api import as_bundle, with_model_classes
from robustcnn.data import DataBundle
from robustcnn.errors import UsageError
from robustcnn.model_files import first_line
from robustcnn.model_loading import LogOf, Normalized, load_model, to_eval
from robustcnn.models import MODELS, model_input_size


# ------------------------------------------------------------------ pre-flight
@dataclass(frozen=True)
class Preflight:
    check: str
    status: str  # PASS, WARN or FAIL (FAIL stops the benchmark)
    detail: str


def preflight(model: nn.Module, data: DataBundle) -> tuple[nn.Module, list[Preflight]]:
    """Checks before any attack; returns the model to attack (eval mode, log-probs if needed) and the report."""
    x = data.x_test[:16]
    shape = tuple(x.shape[1:])
    report: list[Preflight] = []

    def fail(check: str, detail: str) -> None:
        raise UsageError(f"pre-flight {check}: {detail}")

    was_training = any(m.training for m in model.modules())  # a factory's fresh module is in train mode
    to_eval(model)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:
        fail("input_shape", f"the model rejects {data.name} inputs of shape (N, {', '.join(map(str, shape))}) "
                            f"({first_line(err)})")
    report.append(Preflight("input_shape", "PASS", f"accepts (N, {', '.join(map(str, shape))}) in [0,1]"))
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape != (len(x), data.num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        fail("output_shape", f"expected outputs of shape [N, {data.num_classes}] for {data.name}, got {got}")
    report.append(Preflight("output_shape", "PASS", f"outputs [N, {data.num_classes}]"))
    if not out.is_floating_point():  # attacks need gradients of real-valued scores
        fail("output_dtype", f"the model outputs {out.dtype} scores; gradient attacks need floating-point logits")
    if not torch.isfinite(out).all():
        fail("finite_outputs", "the model outputs NaN or inf on clean test images")
    report.append(Preflight("finite_outputs", "PASS", "outputs are finite"))
    report.insert(0, _eval_mode_check(model, x) if was_training else Preflight("eval_mode", "PASS", "the model is in "
                                                                                "eval mode"))
    # the rest are the evaluation lint's own checks; here a problem is a warning the benchmark works around
    from robustcnn.lint import check_batch_invariance, check_deterministic, check_logits

    if check_logits(model, x).status == "FAIL":
        model = to_eval(LogOf(model))
        report.append(Preflight("logits", "WARN", "outputs are probabilities; attacking their logarithm instead"))
    else:
        report.append(Preflight("logits", "PASS", "outputs look like logits"))
    for name, check in (("deterministic", check_deterministic), ("batch_invariance", check_batch_invariance)):
        result = check(model, x)
        report.append(Preflight(name, "WARN" if result.status == "FAIL" else "PASS", result.detail))
    return model, report


def _eval_mode_check(model: nn.Module, x: torch.Tensor) -> Preflight:
    """A model handed over in train mode (now in eval mode): WARN only when the mode changes its outputs."""
    from robustcnn.lint import changes_with_mode

    changed, diff = changes_with_mode(model, x)
    if changed:
        return Preflight("eval_mode", "WARN", f"the model was in train mode, where its outputs differ from eval mode's "
                                              f"(max difference {diff:.3g}: dropout or batch norm?); switched to eval mode")
    return Preflight("eval_mode", "PASS", "the model was in train mode, but its outputs are the same in eval mode; "
                                          "switched to eval mode")


# ------------------------------------------------------------------ loading (here, and again in a worker)
def load_data(*, model: str | nn.Module, dataset: Any, data_root: str | Path | None, image_size: int | None,
              device: str, **_: Any) -> DataBundle:
    """The benchmark's data: a zoo model at its own input size unless image_size says otherwise."""
    if isinstance(model, str) and model in MODELS and image_size is None:
        image_size = model_input_size(model)
    return as_bundle(dataset, root=data_root, image_size=image_size, device=torch.device(device))


def load_net(data: DataBundle, *, model: str | nn.Module, weights: str | Path | None, model_args: dict[str, Any] | None,
             mean: Sequence[float] | None, std: Sequence[float] | None, trust_pickle: bool, pretrained: str | None,
             untrained: bool, device: str, **_: Any) -> tuple[nn.Module, DataBundle, list[Preflight]]:
    """The model to attack (normalized, on the device, pre-flight checked), the data with its classes, the checks."""
    if (mean is None) != (std is None):
        raise UsageError("pass both --mean and --std, or neither")
    net = load_model(model, dataset=data, weights=weights, model_args=model_args, trust_pickle=trust_pickle,
                     pretrained=pretrained, untrained=untrained)
    if mean is not None:
        if len(mean) != data.channels or len(std) != data.channels or not all(
                math.isfinite(v) for v in [*mean, *std]) or min(std) <= 0:
            raise UsageError(f"--mean/--std need {data.channels} finite values each (std > 0) for {data.name}, got "
                             f"mean {list(mean)}, std {list(std)}")
        net = Normalized(net, mean, std)
    net = net.to(device)
    data = with_model_classes(data, net)
    net, checks = preflight(net, data)
    return net, data, checks
