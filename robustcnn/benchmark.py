"""`robustcnn benchmark`: a robustness scorecard for a model the user brings.

    card = benchmark("examples/my_cnn.py:small_cnn", dataset="mnist", weights="examples/my_cnn_mnist.pt")
    card.robust  # attack, epsilon, robust_accuracy, ci_low, ci_high, n (worst_case rows included)

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
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from robustcnn.attacks import AttackConfig, predict
from robustcnn.data import DataBundle, load_dataset
from robustcnn.errors import UsageError
from robustcnn.models import MODELS, count_parameters, create_model, model_input_size


# ------------------------------------------------------------------ loading
def load_model(spec: str | nn.Module, *, dataset: DataBundle, weights: str | Path | None = None,
               model_args: dict[str, Any] | None = None, trust_pickle: bool = False) -> nn.Module:
    """Resolve any supported model form to an nn.Module (weights loaded, not yet checked)."""
    if isinstance(spec, nn.Module):
        model = spec
    elif spec in MODELS:
        model = create_model(spec, dataset=dataset, **(model_args or {}))
    elif ":" in spec and not Path(spec).exists():
        model = _from_factory(spec, model_args or {})
    else:
        model = _from_file(Path(spec), trust_pickle)
    if weights is not None:
        state = read_weights(Path(weights), trust_pickle)
        try:
            model.load_state_dict(state)
        except (RuntimeError, AttributeError) as err:
            raise UsageError(f"weights {weights} do not fit the model: {str(err).splitlines()[0]}") from err
    return model


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
        raise UsageError(f"cannot import {target} ({type(err).__name__}: {err})") from err
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UsageError(f"{target} has no callable '{name}'")
    try:
        model = factory(**model_args)
    except TypeError as err:
        raise UsageError(f"{spec}: bad --model-arg ({err})") from err
    if not isinstance(model, nn.Module):
        raise UsageError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _from_file(path: Path, trust_pickle: bool) -> nn.Module:
    if not path.is_file():
        raise UsageError(f"model '{path}' is neither a registered model, an existing file, nor module:factory "
                         "(see `robustcnn models`)")
    if path.suffix == ".pt2":
        try:
            return torch.export.load(str(path)).module()
        except Exception as err:
            raise UsageError(f"cannot load torch.export program {path} ({err})") from err
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            is_script = any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
        if is_script:
            try:
                return torch.jit.load(str(path), map_location="cpu")
            except Exception as err:
                raise UsageError(f"cannot load TorchScript {path} ({err})") from err
    obj = _torch_load(path, trust_pickle)
    if isinstance(obj, nn.Module):
        return obj
    raise UsageError(f"{path} holds a {type(obj).__name__}, not a model; pass the architecture as MODEL and this "
                     "file as --weights")


def read_weights(path: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    obj = _torch_load(path, trust_pickle)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"{path} is not a state_dict (a mapping of names to tensors)")
    return obj


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    if not path.is_file():
        raise UsageError(f"{path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as err:
        if not trust_pickle and ("weights_only" in str(err).lower() or "unpickl" in str(err).lower()):
            raise UsageError(f"{path} needs pickled code to load, and unpickling can run arbitrary code; save a "
                             "state_dict instead, or pass --trust-pickle if you trust the file's author") from err
        raise UsageError(f"cannot read {path} ({type(err).__name__}: {str(err).splitlines()[0]})") from err


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

    if model.training:
        to_eval(model)
        report.append(Preflight("eval_mode", "WARN", "the model was in train mode; switched to eval mode"))
    else:
        report.append(Preflight("eval_mode", "PASS", "the model is in eval mode"))
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:
        fail("input_shape", f"the model rejects {data.name} inputs of shape (N, {', '.join(map(str, shape))}) "
                            f"({type(err).__name__}: {str(err).splitlines()[0]})")
    report.append(Preflight("input_shape", "PASS", f"accepts (N, {', '.join(map(str, shape))}) in [0,1]"))
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape != (len(x), data.num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        fail("output_shape", f"expected outputs of shape [N, {data.num_classes}] for {data.name}, got {got}")
    report.append(Preflight("output_shape", "PASS", f"outputs [N, {data.num_classes}]"))
    if not torch.isfinite(out).all():
        fail("finite_outputs", "the model outputs NaN or inf on clean test images")
    report.append(Preflight("finite_outputs", "PASS", "outputs are finite"))
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


# ------------------------------------------------------------------ scorecard
def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for k successes out of n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Scorecard:
    model: str
    dataset: str
    weights_hash: str
    parameters: int
    n: int
    clean_accuracy: float
    robust: pd.DataFrame     # attack, threat_model, epsilon, robust_accuracy, ci_low, ci_high, n, std_over_seeds
    lint: pd.DataFrame
    preflight: pd.DataFrame
    cost: pd.DataFrame
    throughput: dict[str, float]
    wall_seconds: float
    samples: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)

    def to_json(self) -> dict[str, Any]:
        """The stable scorecard.json layout (floats in [0,1])."""
        records = self.robust[["attack", "epsilon", "robust_accuracy", "ci_low", "ci_high", "n", "std_over_seeds"]]
        return {"model": self.model, "dataset": self.dataset, "weights_hash": self.weights_hash,
                "parameters": self.parameters, "n_examples": self.n, "clean_accuracy": self.clean_accuracy,
                "robust_accuracy": records.to_dict("records"), "lint": self.lint.to_dict("records"),
                "preflight": self.preflight.to_dict("records"), "throughput": self.throughput,
                "wall_seconds": self.wall_seconds}


def benchmark(model: str | nn.Module, *, dataset: str = "mnist", weights: str | Path | None = None,
              model_args: dict[str, Any] | None = None, attacks: Sequence[str | AttackConfig] = ("fgsm", "pgd"),
              epsilons: Sequence[float] | None = None, n_examples: int = 1000, attack_seeds: int = 1,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None, trust_pickle: bool = False,
              data_root: str | Path | None = None, image_size: int | None = None, device: str = "auto",
              lint: bool = True, name: str | None = None) -> Scorecard:
    """Load, pre-flight check and attack a model; returns its scorecard (DataFrames inside)."""
    from robustcnn.experiments.adversarial import evaluate_model
    from robustcnn.train import resolve_device

    t0 = time.perf_counter()
    dev = resolve_device(device)
    if isinstance(model, str) and model in MODELS and image_size is None:
        image_size = model_input_size(model)
    data = load_dataset(dataset, root=data_root, image_size=image_size, device=dev)
    if (mean is None) != (std is None):
        raise UsageError("pass both --mean and --std, or neither")
    net = load_model(model, dataset=data, weights=weights, model_args=model_args, trust_pickle=trust_pickle)
    if mean is not None:
        if len(mean) != data.channels or len(std) != data.channels or min(std) <= 0:
            raise UsageError(f"--mean/--std need {data.channels} values each (std > 0) for {dataset}")
        net = Normalized(net, mean, std)
    net = net.to(dev)
    label = name or (model if isinstance(model, str) else type(model).__name__)
    net, checks = preflight(net, data)
    if epsilons is None:
        epsilons = [0.0, 2 / 255, 4 / 255, 8 / 255] if data.channels == 3 else [0.0, 0.1, 0.2, 0.3]
    n = min(n_examples, len(data.y_test))
    runs = [evaluate_model(net, data, name=label, attacks=list(attacks), epsilons=list(epsilons), n_examples=n,
                           lint=lint and seed == 0, seed=seed, batch_size=min(n, 500), clean_splits=())
            for seed in range(max(1, attack_seeds))]
    first = runs[0]
    robust = first.robust.drop(columns="model").copy()
    per_seed = pd.concat([r.robust.assign(seed=s) for s, r in enumerate(runs)])
    stats = per_seed.groupby(["attack", "epsilon"], sort=False)["robust_accuracy"].agg(["mean", "std"]).reset_index()
    robust = robust.merge(stats, on=["attack", "epsilon"])
    robust["robust_accuracy"] = robust.pop("mean")
    robust["std_over_seeds"] = robust.pop("std").fillna(0.0)
    bounds = [wilson_interval(round(a * k), k) for a, k in zip(first.robust["robust_accuracy"], first.robust["n"])]
    robust["ci_low"], robust["ci_high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    t1 = time.perf_counter()
    clean_pred = predict(net, data.x_test[:n]).argmax(1)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    clean_seconds = time.perf_counter() - t1
    clean = (clean_pred == data.y_test[:n]).float().mean().item()  # the same n examples the attacks see
    cost = first.cost.drop(columns="model")
    throughput = {"clean_images_per_second": n / max(clean_seconds, 1e-9)}
    for row in cost.itertuples():
        throughput[f"{row.attack}_images_per_second"] = n * len(epsilons) / max(row.seconds, 1e-9)
    return Scorecard(label, data.name, weights_hash(net), count_parameters(net, trainable_only=False), n, clean,
                     robust, first.lint.drop(columns="model"), pd.DataFrame([c.__dict__ for c in checks]), cost,
                     throughput, time.perf_counter() - t0, first.samples)


# ------------------------------------------------------------------ run folder and leaderboard
def write_benchmark(card: Scorecard, out: str | Path = "results", *, config: dict[str, Any] | None = None,
                    device: str = "cpu") -> Path:
    """Write `<out>/benchmark/<run-id>/` (scorecard.json, tables, figure, report.md) and update the leaderboard."""
    from robustcnn.report import redraw
    from robustcnn.results import RunFolder, write_json, write_table

    references = reference_curves(Path(out), card)
    with RunFolder(out, "benchmark", config=config or {}, seed=0, device=device, elapsed=card.wall_seconds,
                   on_finish=lambda path: redraw(path, kind="benchmark")) as run:
        write_json(run.path / "scorecard.json", card.to_json())
        write_table(run.path, "robust_accuracy", card.robust.assign(model=card.model), title="Robust accuracy")
        write_table(run.path, "lint", card.lint, title="Evaluation lint")
        write_table(run.path, "preflight", card.preflight, title="Pre-flight checks")
        write_table(run.path, "attack_cost", card.cost, title="Attack cost")
        write_table(run.path, "reference_curves", references, title="Reference curves")
        write_table(run.path, "robust_samples", card.samples, markdown=False)
    update_leaderboard(Path(out) / "leaderboard" / f"{_slug(card.dataset)}.csv", card, run.final_path)
    return run.final_path


def _slug(dataset: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset.split("/")[-1] if c)


def leaderboard_row(card: Scorecard, run_dir: Path) -> dict[str, Any]:
    worst = card.robust[card.robust["attack"] == "worst_case"] if "worst_case" in set(card.robust["attack"]) \
        else card.robust[card.robust["attack"] == card.robust["attack"].iloc[0]]
    row = {"model": card.model, "weights_hash": card.weights_hash, "dataset": card.dataset,
           "parameters": card.parameters, "n": card.n, "clean_accuracy": card.clean_accuracy}
    row.update({f"robust@{e:.4g}": a for e, a in zip(worst["epsilon"], worst["robust_accuracy"])})
    row["run_dir"] = str(run_dir)
    return row


def update_leaderboard(path: Path, card: Scorecard, run_dir: Path) -> pd.DataFrame:
    """One row per model: a rerun of the same weights (same hash) replaces its row."""
    from robustcnn.results import atomic_write_text

    board = pd.read_csv(path) if path.exists() else pd.DataFrame()
    if len(board):
        board = board[board["weights_hash"] != card.weights_hash]
    board = pd.concat([board, pd.DataFrame([leaderboard_row(card, run_dir)])], ignore_index=True)
    board = board.sort_values("clean_accuracy", ascending=False, kind="stable")
    atomic_write_text(path, board.to_csv(index=False))
    return board


def reference_curves(out: Path, card: Scorecard) -> pd.DataFrame:
    """Worst-case curves on the same dataset to draw beside the scorecard: the leaderboard's other models and
    the zoo models of committed adversarial studies under `out`."""
    import json

    rows = []
    board = out / "leaderboard" / f"{_slug(card.dataset)}.csv"
    if board.exists():
        frame = pd.read_csv(board)
        frame = frame[frame["weights_hash"] != card.weights_hash]
        for _, r in frame.iterrows():
            for col in [c for c in frame.columns if c.startswith("robust@")]:
                if not pd.isna(r[col]):
                    rows.append({"source": "leaderboard", "model": r["model"], "epsilon": float(col[len("robust@"):]),
                                 "robust_accuracy": float(r[col])})
    for table in sorted(out.glob("adversarial/*/tables/robust_accuracy.csv")):
        manifest = table.parent.parent / "manifest.json"
        if not manifest.exists():
            continue
        dataset = json.loads(manifest.read_text()).get("config", {}).get("data", {}).get("dataset", "")
        if dataset.split("/")[-1] != card.dataset.split("/")[-1]:
            continue
        df = pd.read_csv(table)
        for _, r in df[df["attack"] == "worst_case"].iterrows():
            rows.append({"source": f"zoo ({table.parent.parent.name})", "model": r["model"],
                         "epsilon": float(r["epsilon"]), "robust_accuracy": float(r["robust_accuracy"])})
    return pd.DataFrame(rows, columns=["source", "model", "epsilon", "robust_accuracy"])
