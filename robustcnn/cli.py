"""The `robustcnn` command: a thin layer over the Python API (every command has a Python twin).

Only typer and our errors are imported here: each command imports what it needs when it runs, so
`robustcnn --help` does not pay for torch. Every failure passes one boundary (robustcnn.cli_errors) that prints
one line and picks the exit code: 2 for a usage error, 128 + the signal's number for SIGINT/SIGTERM.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from robustcnn.cli_errors import OneLineErrors, error_line  # noqa: F401 (error_line: re-exported, tests use it)
from robustcnn.errors import UsageError

app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  pretty_exceptions_enable=False,
                  help="Train CNNs, measure generalization and adversarial robustness, write tables and figures.")


def _version(value: bool) -> None:
    """`robustcnn --version`: the installed package's version, without importing torch."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("robustcnn")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from robustcnn import __version__ as number
    typer.echo(f"robustcnn {number}")
    raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Train CNNs, measure generalization and adversarial robustness, write tables and figures."""


class StudyKind(str, Enum):
    ADVERSARIAL = "adversarial"
    OVERFITTING = "overfitting"
    GENERALIZATION = "generalization"
    MEMORIZATION = "memorization"
    DOUBLE_DESCENT = "double-descent"
    INVARIANCE = "invariance"
    LINEAGE = "lineage"


class OptimizerChoice(str, Enum):
    SGD = "sgd"
    ADAM = "adam"
    ADADELTA = "adadelta"


class DeviceKind(str, Enum):
    """Checked by the CLI before any work; cuda:N is checked against the GPUs present when it runs."""
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


def _device(value: str | None) -> str | None:
    if value is None:
        return None
    kind, _, index = value.partition(":")
    if kind not in {d.value for d in DeviceKind} or (index and (kind != "cuda" or not index.isdigit())):
        raise typer.BadParameter(f"'{value}' is not a device robustcnn runs on; use auto, cpu, cuda or cuda:N")
    return value


def _positive_number(value: float | None) -> float | None:
    """A finite number > 0 (click's min= lets nan through with a misleading 'should be >= 0')."""
    import math

    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} must be a finite number > 0")
    return value


SEED_MAX = 2**63 - 1
OUT = typer.Option(Path("results"), "--out", help="Folder for run folders (<out>/<kind>/<run-id>/).")
DEVICE = typer.Option(None, "--device", callback=_device, show_default="auto",
                      help="auto (CUDA when present), cpu, cuda, cuda:N.")
SEED = typer.Option(None, "--seed", min=0, max=SEED_MAX, show_default="0",
                    help="Seed for data subsets, init, shuffling and attacks.")
DATA_ROOT = typer.Option(None, "--data-root", show_default="$ROBUSTCNN_DATA, else the cache",
                         help="Folder with datasets.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress on stderr (bars in a terminal, else one line per "
                     "epoch, attack x epsilon, lint step, sweep point or model); results still print.")
SET = typer.Option([], "--set", "-s", help="Override any config value by its dotted key (TOML values): "
                   "train: -s model.train.epochs=3; study adversarial: -s models.0.train.epochs=3; "
                   "sweeps: -s seeds=[0,1].")
THREADS = typer.Option(None, "--threads", min=1, show_default="$ROBUSTCNN_THREADS, else $OMP_NUM_THREADS, else 1",
                       help="CPU threads for torch (1: measured fastest on shared machines, benchmarks/thread_policy.py).")


def _setup(threads: int | None, quiet: bool) -> None:
    """Before any torch work: the thread policy (robustcnn.devices; the manifest records the count) and --quiet
    (robustcnn.progress; OneLineErrors.main restores the setting after the command)."""
    from robustcnn import progress
    from robustcnn.devices import apply_threads, resolve_threads

    if quiet:
        progress.set_quiet(True)
    apply_threads(resolve_threads(threads))


def _overrides(pairs: dict[str, Any], extra: list[str]) -> list[str]:
    """Flags the user gave (None = not given) -> dotted overrides, then the user's own -s overrides (which win).
    A flag left at None never overrides, so a --config file's values stand unless the user passes a flag."""
    import json

    out = []
    for key, value in pairs.items():
        if value is None:
            continue
        if isinstance(value, Enum):
            value = value.value
        out.append(f"{key}={json.dumps(str(value) if isinstance(value, Path) else value)}")
    return out + list(extra)


def _writable(out: Path) -> None:
    from robustcnn.results import check_writable

    check_writable(out)


@app.command()
def train(
    model: str = typer.Option(None, "--model", "-m", show_default="lenet5",
                              help="A registered model (see `robustcnn models`)."),
    dataset: str = typer.Option(None, "--dataset", "-d", show_default="digits",
                                help="digits, mnist, fashion-mnist, cifar10, imagefolder:<path>."),
    epochs: int = typer.Option(None, "--epochs", min=1, show_default="10"),
    batch_size: int = typer.Option(None, "--batch-size", min=1, show_default="128"),
    optimizer: OptimizerChoice = typer.Option(None, "--optimizer", show_default="adam"),
    lr: float = typer.Option(None, "--lr", callback=_positive_number,
                             show_default="by optimizer: sgd 0.05, adam 0.001, adadelta 1.0"),
    width: int = typer.Option(None, "--width", min=1, show_default="the model's: cnn5 64, mlp 512, resnet18k 64",
                              help="Width multiplier k (cnn5, resnet18k, mlp)."),
    train_subset: int = typer.Option(None, "--train-subset", min=1, show_default="all",
                                     help="Train on this many examples."),
    label_noise: float = typer.Option(None, "--label-noise", min=0.0, max=1.0, show_default="0.0",
                                      help="Fraction of labels flipped."),
    config: Path = typer.Option(None, "--config", help="A TOML file with the run's config (flags override it)."),
    data_root: Path = DATA_ROOT, seed: int = SEED, device: str = DEVICE, out: Path = OUT, overrides: list[str] = SET,
    threads: int = THREADS, quiet: bool = QUIET,
) -> None:
    """Train one model and write a run folder with its history table and overfitting curve."""
    _setup(threads, quiet)
    from robustcnn.config import load_config
    from robustcnn.experiments.training import TrainRunConfig, run_train

    flags = {"model.name": model, "data.dataset": dataset, "model.train.epochs": epochs,
             "model.train.batch_size": batch_size, "model.train.optimizer": optimizer, "model.train.lr": lr,
             "data.data_root": data_root, "data.train_subset": train_subset, "data.label_noise": label_noise,
             "seed": seed, "device": device, "model.kwargs.width": width}
    cfg = load_config(TrainRunConfig, config, _overrides(flags, overrides))
    _writable(out)
    path = run_train(cfg, out)
    typer.echo(f"wrote {path}")


@app.command()
def study(
    kind: StudyKind = typer.Argument(StudyKind.ADVERSARIAL, help="Which study."),
    config: Path = typer.Option(None, "--config", "-c", show_default="the study's CPU profile",
                                help="A study config (studies/*.toml)."),
    dataset: str = typer.Option(None, "--dataset", "-d", show_default="the config's",
                                help="Override the config's dataset."),
    executor: str = typer.Option(None, "--executor", show_default="local",
                                 help="Where the points or models train: local or ray."),
    address: str = typer.Option(None, "--address", show_default="a local Ray instance",
                                help="The Ray cluster address."),
    workers: int = typer.Option(None, "--workers", min=1, show_default="1",
                                help="Worker processes for the points or models."),
    seed: int = typer.Option(None, "--seed", min=0, max=SEED_MAX, show_default="the config's; sweeps: its seed list",
                             help="Seed for data subsets, init, shuffling and attacks (sweeps: the only seed)."),
    data_root: Path = DATA_ROOT, device: str = DEVICE, out: Path = OUT, overrides: list[str] = SET,
    threads: int = THREADS, quiet: bool = QUIET,
) -> None:
    """Run a study and write its tables, figures and report.md (a study killed and run again resumes)."""
    _setup(threads, quiet)
    from robustcnn.config import load_config

    flags = {"data.dataset": dataset, "data.data_root": data_root, "device": device}
    spread = {"executor": executor, "address": address, "workers": workers}
    if kind == StudyKind.ADVERSARIAL:
        from robustcnn.experiments.adversarial import AdversarialStudyConfig, run_adversarial_study

        cfg = load_config(AdversarialStudyConfig, config, _overrides({**flags, **spread, "seed": seed}, overrides))
        _writable(out)
        path = run_adversarial_study(cfg, out)
    elif kind == StudyKind.INVARIANCE:
        from robustcnn.experiments.invariance import InvarianceStudyConfig, run_invariance_study

        cfg = load_config(InvarianceStudyConfig, config, _overrides({**flags, **spread, "seed": seed}, overrides))
        _writable(out)
        path = run_invariance_study(cfg, out)
    elif kind == StudyKind.LINEAGE:
        from robustcnn.experiments.lineage import LineageStudyConfig, run_lineage_study

        cfg = load_config(LineageStudyConfig, config, _overrides({**flags, **spread, "seed": seed}, overrides))
        _writable(out)
        path = run_lineage_study(cfg, out)
    else:
        from robustcnn.experiments.generalization import SweepStudy, SweepStudyConfig, default_config, run_sweep_study

        study = SweepStudy(kind.value)
        flags.update({**spread, "seeds": [seed] if seed is not None else None})
        # no config file: the study's CPU profile; a config file starts from plain defaults, so nothing of the
        # CPU profile (its dataset subset, say) leaks into it
        base = default_config(study) if config is None else SweepStudyConfig(study=study)
        cfg = load_config(SweepStudyConfig, config, _overrides(flags, overrides), base=base)
        if cfg.study != study:
            raise UsageError(f"config {config} is for study '{cfg.study.value}', not '{study.value}'")
        _writable(out)
        path = run_sweep_study(cfg, out)
    typer.echo(f"wrote {path}\nreport: {path / 'report.md'}")


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    import math

    items = [v.strip() for v in text.split(",")]
    if "" in items:  # '0.1,,0.2' or a trailing comma: a lost value, not a shorter list
        raise UsageError(f"{what} '{text}' has an empty item; give comma-separated numbers like 0,0.1 or 8/255")
    try:
        values = [_number(v) for v in items]
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"{what} must be comma-separated numbers or fractions like 8/255, got '{text}'") from None
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"{what} must be finite numbers, got '{text}'")
    return values


def _model_args(pairs: list[str]) -> dict[str, Any]:
    """--model-arg key=value pairs (TOML values) -> factory keyword arguments."""
    from robustcnn.config import parse_override

    return {".".join(keys): value for keys, value in map(parse_override, pairs)}


def _number(text: str) -> float:
    """'0.03' or a fraction 'a/b' of two plain numbers (8/255: epsilons are fractions of the pixel range)."""
    if "/" in text:
        num, den = text.split("/")
        return float(num) / float(den)
    return float(text)


@app.command()
def benchmark(
    model: str = typer.Argument(..., help="file.py:factory, package.module:factory, a zoo name, TorchScript or .pt2."),
    dataset: str = typer.Option("mnist", "--dataset", "-d", help="mnist, fashion-mnist, cifar10, digits, "
                                "imagefolder:<path>."),
    name: str = typer.Option(None, "--name", show_default="the model argument",
                             help="The model's name on the scorecard and leaderboard."),
    weights: Path = typer.Option(None, "--weights", help="A state_dict (read with weights_only=True)."),
    pretrained: str = typer.Option(None, "--pretrained", help="A zoo name's shipped weights by tag, e.g. mnist."),
    untrained: bool = typer.Option(False, "--untrained", help="Score a zoo name's random initialisation on purpose."),
    model_arg: list[str] = typer.Option([], "--model-arg", help="key=value passed to the factory (TOML values)."),
    suite: str = typer.Option(None, "--suite", show_default="standard", help="Attack suite: quick (FGSM + PGD-40), "
                              "standard (AutoAttack, as RobustBench), full (standard + PGD + DeepFool)."),
    attacks: str = typer.Option(None, "--attacks", help="Comma-separated attack names (overrides --suite)."),
    threat: str = typer.Option("linf", "--threat", help="linf, l2, corruptions (MNIST-C / CIFAR-10-C, 5 severities), "
                               "transforms (shifts, rotations, elastic, noise, blur) or all of them."),
    eps: str = typer.Option(None, "--eps", show_default="0,0.1,0.2,0.3; colour images 0,2/255,4/255,8/255",
                            help="Comma-separated epsilons, e.g. 0.1 or 8/255 (L-inf; L2's with --threat l2)."),
    n_examples: int = typer.Option(1000, "--n-examples", min=1, help="The first N test examples, in order."),
    attack_seeds: int = typer.Option(1, "--attack-seeds", min=1, help="Repeat random attacks over seeds."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="First attack seed (seeds seed .. seed + "
                             "attack-seeds - 1)."),
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Examples per attack batch."),
    mean: str = typer.Option(None, "--mean", help="Per-channel mean the model expects, e.g. 0.49,0.48,0.45."),
    std: str = typer.Option(None, "--std", help="Per-channel std the model expects."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow files that need pickled code (runs it)."),
    image_size: int = typer.Option(None, "--image-size", min=4, show_default="the dataset's; a zoo model's own",
                                   help="Resize the dataset's images to this size."),
    executor: str = typer.Option("local", "--executor", help="Where the attack units (attack x seed) run: local or "
                                 "ray."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes for the attack units."),
    address: str = typer.Option(None, "--address", show_default="a local Ray instance",
                                help="The Ray cluster address."),
    data_root: Path = DATA_ROOT, device: str = DEVICE, out: Path = OUT, threads: int = THREADS, quiet: bool = QUIET,
) -> None:
    """Scorecard for a model you bring: pre-flight checks, robust accuracy with intervals, lint, leaderboard."""
    _setup(threads, quiet)
    kwargs = _model_args(model_arg)
    from robustcnn.benchmark import check_run_settings
    from robustcnn.benchmark_spread import check_spread
    from robustcnn.benchmark_threats import check_threat
    from robustcnn.suites import resolve_suite

    resolve_suite("standard" if suite is None else suite)  # an unknown suite or threat: one line, before any work
    check_threat(threat)
    check_run_settings(name, seed, batch_size)
    check_spread(executor, workers, model, dataset, address=address, untrained=untrained)
    names = None if attacks is None else [a.strip() for a in attacks.split(",") if a.strip()]
    if names is not None and not names:
        raise UsageError(f"--attacks '{attacks}' names no attack; see `robustcnn attacks`")
    _writable(out)  # before any attack: a bad --out must not cost the whole benchmark
    from robustcnn.benchmark import benchmark as run_benchmark
    from robustcnn.benchmark import write_benchmark
    from robustcnn.benchmark_threats import headline
    from robustcnn.train import resolve_device

    config = {"model": model, "dataset": dataset, "weights": str(weights) if weights else None,
              "pretrained": pretrained, "untrained": untrained, "model_args": kwargs,
              "suite": suite, "attacks": names,
              "eps": _floats(eps, "--eps"), "n_examples": n_examples,
              "attack_seeds": attack_seeds, "mean": _floats(mean, "--mean"), "std": _floats(std, "--std"),
              "trust_pickle": trust_pickle, "image_size": image_size, "name": name, "seed": seed,
              "batch_size": batch_size, "threat": threat, "executor": executor, "workers": workers, "address": address}
    dev = str(resolve_device(device or "auto"))
    card = run_benchmark(model, dataset=dataset, weights=weights, model_args=kwargs, attacks=names,
                         epsilons=config["eps"], n_examples=n_examples, attack_seeds=attack_seeds, mean=config["mean"],
                         std=config["std"], trust_pickle=trust_pickle, data_root=data_root, image_size=image_size,
                         device=dev, pretrained=pretrained, untrained=untrained, suite=suite, name=name, seed=seed,
                         batch_size=batch_size, store=out / ".sweep-store" / "benchmark",  # resumable (benchmark_units)
                         threat=threat, executor=executor, workers=workers, address=address)
    path = write_benchmark(card, out, config=config, device=dev)
    typer.echo(f"{card.model} on {card.dataset}: clean {card.clean_accuracy:.4f}; {headline(card)} (suite {card.suite})")
    typer.echo(f"wrote {path}\nreport: {path / 'report.md'}")


@app.command()
def anatomy(
    model: str = typer.Argument(..., help="A zoo name (trained here unless --weights), file.py:factory, "
                                "package.module:factory, TorchScript or .pt2."),
    dataset: str = typer.Option("digits", "--dataset", "-d", help="digits, mnist, fashion-mnist, cifar10, imagefolder:<path>."),
    weights: Path = typer.Option(None, "--weights", help="A state_dict (read with weights_only=True)."),
    model_arg: list[str] = typer.Option([], "--model-arg", help="key=value passed to the factory (TOML values)."),
    index: int = typer.Option(0, "--index", "-i", help="Which test image (0-based, in the test split's order)."),
    eps: float = typer.Option(0.1, "--eps", help="PGD-40 epsilon for the adversarial example (L-inf, in [0,1])."),
    epochs: int = typer.Option(10, "--epochs", min=1, help="Epochs for a zoo model trained here (no --weights)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow files that need pickled code (runs it)."),
    data_root: Path = DATA_ROOT, seed: int = SEED, device: str = DEVICE, out: Path = OUT, threads: int = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Kernels and the feature maps after every convolution and pooling for one test image, beside its PGD example."""
    _setup(threads, quiet)
    kwargs = _model_args(model_arg)
    _writable(out)
    from robustcnn.anatomy import run_anatomy

    path = run_anatomy(model, dataset=dataset, weights=weights, model_args=kwargs, index=index, epsilon=eps,
                       epochs=epochs, data_root=data_root, seed=seed or 0, device=device or "auto", out=out,
                       trust_pickle=trust_pickle)
    typer.echo(f"wrote {path}\nreport: {path / 'report.md'}")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run folder, e.g. results/adversarial/<run-id>.")) -> None:
    """Redraw every figure and report.md of a run from its saved tables (no retraining)."""
    from robustcnn.report import redraw

    typer.echo(f"wrote {redraw(run_dir)}")


@app.command()
def models(
    pattern: str = typer.Argument("*", help="Shell-style pattern, e.g. 'lenet*'."),
    dataset: str = typer.Option("mnist", "--dataset", "-d", help="Dataset the parameter counts are for."),
) -> None:
    """List registered models: name, parameter count on a dataset at the factory's default width, description."""
    from robustcnn.models import MODELS, describe_models

    rows = describe_models(pattern, dataset)
    if not rows:
        raise UsageError(f"no model matches '{pattern}'; run `robustcnn models` to see them all")
    typer.echo(f"{'model':<14} {'parameters':>12}  {'width':>5}  description")
    for r in rows:
        width = MODELS.get(r["name"]).meta.get("width")
        typer.echo(f"{r['name']:<14} {r['parameters']:>12,}  {width if width else '-':>5}  {r['description']}")
    typer.echo(f"parameters: every learned value on {dataset}, each model built by its factory's defaults; width: "
               "the default width multiplier k those counts use ('-': the model has none; another k: --width in "
               "train, --model-arg width=K in benchmark and anatomy)")


@app.command()
def attacks() -> None:
    """List attacks with their threat model and default settings."""
    from robustcnn.attacks import describe_attacks

    for r in describe_attacks():
        typer.echo(f"{r['name']:<9} {r['threat_model']:<5} {r['description']}\n{'':<16}defaults: {r['defaults']}")
