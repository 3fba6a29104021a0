"""`robustcnn benchmark`: a robustness scorecard for a model the user brings.

    card = benchmark("examples/my_cnn.py:small_cnn", dataset="mnist", weights="examples/my_cnn_mnist.pt")
    card.robust  # attack, epsilon, robust_accuracy (per-example worst case over attack seeds), ci_low, ci_high, n

Model forms: `file.py:factory` or `package.module:factory` (called with model_args; this RUNS the user's
code), a registered zoo name, a TorchScript file, or a torch.export program (.pt2). Weights are a state_dict
read with torch.load(weights_only=True); anything that needs pickled code is refused unless trust_pickle.
Examples are the first n of the test split, in the dataset's order (as RobustBench does).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from robustcnn.api import CUSTOM, as_bundle, with_model_classes
from robustcnn.attacks import AttackConfig, as_attack_config, check_budget, predict
from robustcnn.benchmark_units import benchmark_units, model_identity
from robustcnn.data import DataBundle
from robustcnn.devices import resolve_device
from robustcnn.errors import RobustcnnWarning, UsageError
from robustcnn.leaderboard import board_path, read_leaderboard, update_leaderboard
from robustcnn.model_files import first_line, load_weights_into, read_model_file, read_weights
from robustcnn.models import MODELS, count_parameters, create_model, model_input_size


# ------------------------------------------------------------------ loading (the files themselves: model_files.py)
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


# ------------------------------------------------------------------ scorecard
def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for k successes out of n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # The interval always contains p; min/max only undo rounding (at k = n, centre + half is 1 - 1e-16).
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


STATISTIC = ("robust_accuracy: per example, robust only if it withstands the attack under every attack seed; "
             "ci_low/ci_high: its 95 % Wilson interval over the n examples; mean_over_seeds/std_over_seeds: the "
             "per-seed accuracies")


def robust_over_seeds(samples: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Robust accuracy per attack x epsilon over attack seeds, with an interval that matches the point.

    The point is the per-example worst case over seeds (the seeds act as restarts: an example counts as robust
    only if every seed's attack fails), so it is the strongest bound the runs give. Its 95 % Wilson interval is
    over the n examples, the sampled unit: every seed re-attacks the same examples, so pooling seeds x examples
    as independent trials would make the interval too narrow. samples: one frame per seed (index, attack,
    threat_model, epsilon, correct), worst_case rows included."""
    keys = ["attack", "threat_model", "epsilon"]
    per_seed = pd.concat([s.assign(seed=i) for i, s in enumerate(samples)], ignore_index=True)
    held = per_seed.groupby([*keys, "index"], sort=False)["correct"].all().reset_index()
    table = held.groupby(keys, sort=False)["correct"].agg(robust="sum", n="size").reset_index()
    accs = per_seed.groupby([*keys, "seed"], sort=False)["correct"].mean().reset_index()
    spread = accs.groupby(keys, sort=False)["correct"].agg(mean_over_seeds="mean", std_over_seeds="std").reset_index()
    table = table.merge(spread, on=keys, how="left", validate="one_to_one")
    table["robust_accuracy"] = table["robust"] / table["n"]
    bounds = [wilson_interval(int(k), int(n)) for k, n in zip(table["robust"], table["n"])]
    table["ci_low"], table["ci_high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    table["attack_seeds"] = len(samples)
    table["std_over_seeds"] = table["std_over_seeds"].fillna(0.0)  # one seed: no spread
    return table[[*keys, "robust_accuracy", "ci_low", "ci_high", "n", "attack_seeds", "mean_over_seeds",
                  "std_over_seeds"]]


@dataclass
class Scorecard:
    model: str
    dataset: str
    weights_hash: str
    parameters: int
    n: int
    clean_accuracy: float
    robust: pd.DataFrame     # attack, threat_model, epsilon, robust_accuracy, ci_low, ci_high, n, curve, ... (STATISTIC)
    lint: pd.DataFrame
    preflight: pd.DataFrame
    cost: pd.DataFrame
    throughput: dict[str, float]
    wall_seconds: float
    samples: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)  # per example, attack, epsilon, seed
    attack_seeds: int = 1
    suite: str | None = None  # a named attack suite, if the attacks came from one (the leaderboard records it)
    off_leaderboard: str | None = None  # why write_benchmark keeps it off the leaderboard (None: it goes on)
    units: dict[str, int] | None = None  # with a store: how many units ran, how many were reused (the manifest's)

    def to_json(self) -> dict[str, Any]:
        """The stable scorecard.json layout (floats in [0,1])."""
        records = self.robust[["attack", "threat_model", "epsilon", "robust_accuracy", "ci_low", "ci_high", "n",
                               "attack_seeds", "mean_over_seeds", "std_over_seeds", "curve"]]
        return {"model": self.model, "dataset": self.dataset, "weights_hash": self.weights_hash,
                "parameters": self.parameters, "n_examples": self.n, "clean_accuracy": self.clean_accuracy,
                "suite": self.suite, "attack_seeds": self.attack_seeds, "robust_statistic": STATISTIC,
                "robust_accuracy": records.to_dict("records"), "lint": self.lint.to_dict("records"),
                "preflight": self.preflight.to_dict("records"), "off_leaderboard": self.off_leaderboard,
                "throughput": self.throughput, "wall_seconds": self.wall_seconds}


def chance_check(correct: int, labels: torch.Tensor, classes: int) -> Preflight:
    """FAIL when clean accuracy is not above chance: the lower end of its 95 % Wilson interval does not clear
    what a constant prediction scores on these examples (the larger of 1/classes and the commonest label's
    share). A randomly initialised net fails it; a robustness curve of such a model means nothing."""
    n = len(labels)
    chance = max(1 / classes, torch.bincount(labels.cpu()).max().item() / n)
    low, high = wilson_interval(correct, n)
    detail = (f"clean accuracy {correct / n:.3f} (95 % CI {low:.3f}-{high:.3f}, n={n}), chance {chance:.3f} "
              f"(the larger of 1/classes = {1 / classes:.3f} and the majority-class share of these n examples)")
    if low <= chance:
        return Preflight("chance_level", "FAIL", f"{detail}: not above chance (untrained or broken weights?); "
                                                 "the scorecard stays off the leaderboard")
    return Preflight("chance_level", "PASS", f"{detail}: above chance")


def benchmark(model: str | nn.Module, *, dataset: Any = "mnist", weights: str | Path | None = None,
              model_args: dict[str, Any] | None = None, attacks: Sequence[str | AttackConfig] | None = None,
              epsilons: Sequence[float] | None = None, n_examples: int = 1000, attack_seeds: int = 1,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None, trust_pickle: bool = False,
              data_root: str | Path | None = None, image_size: int | None = None, device: str = "auto",
              lint: bool = True, name: str | None = None, pretrained: str | None = None,
              untrained: bool = False, suite: str = "standard", seed: int = 0, batch_size: int = 500,
              store: str | Path | None = None) -> Scorecard:
    """Load, pre-flight check and attack a model; returns its scorecard (DataFrames inside).

    dataset: a name, a DataBundle, an (x, y) pair of tensors in [0,1] or a torch DataLoader; the examples are
        the first n_examples of its test split (of the tensors), in order. Scorecards on tensors or loaders
        are not on a named dataset and stay off the leaderboard.
    weights / pretrained: a state_dict file, or a shipped tag (robustcnn.zoo) for a zoo name; a zoo name with
        neither is refused unless untrained=True.
    A clean accuracy not above chance is a pre-flight FAIL (chance_check): the scorecard is complete and says
    so, and write_benchmark keeps it off the leaderboard.
    suite: the named attack suite (robustcnn.suites; L-inf) run when `attacks` is None; given attacks override it,
        and the scorecard then records the joined attack names as its suite.
    name: the model's name on the scorecard and leaderboard (default: the model argument).
    seed / batch_size: the attacks use seeds seed .. seed + attack_seeds - 1; examples per attack batch.
    store: a folder (the CLI's `<out>/.sweep-store/benchmark`) where each attack x seed and the lint is stored as
        a unit (robustcnn.benchmark_units), so a benchmark killed midway resumes with the same numbers."""
    from robustcnn import progress
    from robustcnn.evaluation import evaluate_model
    from robustcnn.suites import resolve_suite

    check_run_settings(name, seed, batch_size)

    if attacks is None:
        attacks, suite_name = resolve_suite(suite, "linf"), suite
    else:
        attacks = [as_attack_config(a) for a in attacks]
        suite_name = "+".join(a.name for a in attacks)
        if not attacks:
            raise UsageError("attacks is empty; name at least one attack, or pass attacks=None for the suite")

    t0 = time.perf_counter()
    dev = resolve_device(device)
    if isinstance(model, str) and model in MODELS and image_size is None:
        image_size = model_input_size(model)
    data = as_bundle(dataset, root=data_root, image_size=image_size, device=dev)
    if epsilons is None:
        epsilons = [0.0, 2 / 255, 4 / 255, 8 / 255] if data.channels == 3 else [0.0, 0.1, 0.2, 0.3]
    check_budget(epsilons, [as_attack_config(a) for a in attacks], tuple(data.x_test.shape[1:]))  # before any work
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
    net = net.to(dev)
    data = with_model_classes(data, net)
    label = name or (model if isinstance(model, str) else type(model).__name__)
    net, checks = preflight(net, data)
    n = min(n_examples, len(data.y_test))
    t1 = time.perf_counter()
    clean_pred = predict(net, data.x_test[:n]).argmax(1)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    clean_seconds = time.perf_counter() - t1
    correct = int((clean_pred == data.y_test[:n]).sum())  # the same n examples the attacks see
    checks.append(chance_check(correct, data.y_test[:n], data.num_classes))
    seeds = list(range(seed, seed + max(1, attack_seeds)))
    hashed = weights_hash(net)
    units = benchmark_units(store, model_identity(model, net, hashed, model_args), dev)
    runs = [evaluate_model(net, data, name=label, attacks=list(attacks), epsilons=list(epsilons), n_examples=n,
                           lint=lint and s == seed, seed=s, batch_size=min(n, batch_size), clean_splits=(),
                           strong_lint=suite_name in ("standard", "full"), units=units)
            for s in progress.track(seeds, f"benchmark {label}", describe=lambda s: f"attack seed {s} done")]
    first = runs[0]
    robust = robust_over_seeds([r.samples for r in runs])
    robust["curve"] = first.robust["curve"].iloc[0]  # one evaluation mode per benchmark (cumulative or per-epsilon)
    cost = first.cost.drop(columns="model")
    throughput = {"clean_images_per_second": n / max(clean_seconds, 1e-9)}
    for row in cost.itertuples():
        throughput[f"{row.attack}_images_per_second"] = n * len(epsilons) / max(row.seconds, 1e-9)
    samples = pd.concat([r.samples.assign(seed=s) for s, r in zip(seeds, runs)], ignore_index=True)
    return Scorecard(label, data.name, hashed, count_parameters(net, trainable_only=False), n, correct / n,
                     robust, first.lint.drop(columns="model"), pd.DataFrame([c.__dict__ for c in checks]), cost,
                     throughput, time.perf_counter() - t0, samples, attack_seeds=len(runs), suite=suite_name,
                     off_leaderboard=_off_leaderboard(data, checks), units=dict(units.counts) if units else None)


def check_run_settings(name: str | None, seed: int, batch_size: int) -> None:
    """One line for a bad --name, --seed or --batch-size, before any work."""
    if name is not None and (not name.strip() or not name.isprintable() or "|" in name or len(name) > 120):
        raise UsageError(f"name {name!r} must be one printable line of at most 120 characters without '|' (it names "
                         "the model on the scorecard and the leaderboard)")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a whole number >= 0, got {seed!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a whole number >= 1, got {batch_size!r}")


def _off_leaderboard(data: DataBundle, checks: Sequence[Preflight]) -> str | None:
    """Why a scorecard must not reach the leaderboard, or None."""
    failed = [c.check for c in checks if c.status == "FAIL"]
    if failed:
        return f"pre-flight FAIL: {', '.join(failed)}"
    if data.name == CUSTOM:
        return "evaluated on tensors or a DataLoader, not a named dataset"
    return None


# ------------------------------------------------------------------ run folder and leaderboard
def write_benchmark(card: Scorecard, out: str | Path = "results", *, config: dict[str, Any] | None = None,
                    device: str = "cpu") -> Path:
    """Write `<out>/benchmark/<run-id>/` (scorecard.json, tables, figure, report.md) and update the leaderboard,
    unless the scorecard is marked off it (a pre-flight FAIL, custom data): then a warning says why."""
    from robustcnn.model_card import robustbench_card
    from robustcnn.report import redraw
    from robustcnn.results import RunFolder, write_json, write_table
    from robustcnn.zoo import reference_curves

    board = board_path(out, card.dataset)
    if card.off_leaderboard is None:
        read_leaderboard(board)  # a corrupt board stops here, before any write
    references = reference_curves(card.dataset, exclude_hash=card.weights_hash)  # shipped references only
    with RunFolder(out, "benchmark", config=config or {}, seed=0, device=device, elapsed=card.wall_seconds,
                   on_finish=lambda path: redraw(path, kind="benchmark")) as run:
        write_json(run.path / "scorecard.json", card.to_json())
        if card.units is not None:
            run.extra["units"] = card.units  # how many attack x seed units (and the lint) came from the store
        write_json(run.path / "robustbench.json", robustbench_card(card.model, card.dataset, card.suite, card.n,
                                                                   card.clean_accuracy, card.robust, card.weights_hash))
        write_table(run.path, "robust_accuracy", card.robust.assign(model=card.model, suite=card.suite),
                    title="Robust accuracy")
        write_table(run.path, "lint", card.lint.assign(suite=card.suite)[["suite", *card.lint.columns]],
                    title="Evaluation lint")
        write_table(run.path, "preflight", card.preflight, title="Pre-flight checks")
        write_table(run.path, "attack_cost", card.cost, title="Attack cost")
        write_table(run.path, "reference_curves", references, title="Reference curves (shipped pretrained models)")
        write_table(run.path, "robust_samples", card.samples, markdown=False)
    if card.off_leaderboard is None:
        update_leaderboard(board, card, run.final_path)
    else:
        warnings.warn(RobustcnnWarning(f"{card.model} is not on the leaderboard ({card.off_leaderboard}); its "
                                       f"scorecard is in {run.final_path}"), stacklevel=2)
    return run.final_path
