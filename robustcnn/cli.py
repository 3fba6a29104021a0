"""The `robustcnn` command: a thin layer over the Python API (every command has a Python twin)."""
from __future__ import annotations

import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from robustcnn.errors import UsageError

# typer >= 0.20 vendors click; its public BadParameter leads to whichever ClickException it raises.
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class OneLineErrors(TyperGroup):
    """Every usage mistake (click's or ours) ends as one line on stderr and exit code 2, no traceback."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        signal.signal(signal.SIGTERM, _terminate)  # a killed run cleans up its staging folder, as on Ctrl-C
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
        except ClickException as err:
            ctx = getattr(err, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            typer.echo(f"robustcnn: error: {err.format_message()}{hint}", err=True)
            sys.exit(err.exit_code)
        except UsageError as err:
            typer.echo(f"robustcnn: error: {err}", err=True)
            sys.exit(2)
        except (typer.Abort, KeyboardInterrupt):
            typer.echo("robustcnn: interrupted; the unfinished run folder was removed", err=True)
            sys.exit(130)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  pretty_exceptions_enable=False,
                  help="Train CNNs, measure generalization and adversarial robustness, write tables and figures.")


class StudyKind(str, Enum):
    ADVERSARIAL = "adversarial"
    OVERFITTING = "overfitting"
    GENERALIZATION = "generalization"
    MEMORIZATION = "memorization"
    DOUBLE_DESCENT = "double-descent"


class OptimizerChoice(str, Enum):
    SGD = "sgd"
    ADAM = "adam"
    ADADELTA = "adadelta"


OUT = typer.Option(Path("results"), "--out", help="Folder for run folders (<out>/<kind>/<run-id>/).")
DEVICE = typer.Option(None, "--device", help="auto (CUDA when present), cpu, cuda, cuda:N.")
SEED = typer.Option(None, "--seed", help="Seed for data subsets, init, shuffling and attacks.")
DATA_ROOT = typer.Option(None, "--data-root", help="Folder with datasets (else $ROBUSTCNN_DATA, else the cache).")
SET = typer.Option([], "--set", "-s", help="Override any config value: -s train.epochs=3 (TOML values).")


def _overrides(pairs: dict[str, Any], extra: list[str]) -> list[str]:
    """Flags that were given -> dotted overrides, followed by the user's own -s overrides (which win)."""
    import json

    out = []
    for key, value in pairs.items():
        if value is None:
            continue
        if isinstance(value, Enum):
            value = value.value
        out.append(f"{key}={json.dumps(str(value) if isinstance(value, Path) else value)}")
    return out + list(extra)


@app.command()
def train(
    model: str = typer.Option("lenet5", "--model", "-m", help="A registered model (see `robustcnn models`)."),
    dataset: str = typer.Option("digits", "--dataset", "-d", help="digits, mnist, fashion-mnist, cifar10, imagefolder:<path>."),
    epochs: int = typer.Option(None, "--epochs", min=1),
    batch_size: int = typer.Option(None, "--batch-size", min=1),
    optimizer: OptimizerChoice = typer.Option(None, "--optimizer"),
    lr: float = typer.Option(None, "--lr", min=0.0),
    width: int = typer.Option(None, "--width", min=1, help="Width multiplier k (cnn5, resnet18k, mlp)."),
    train_subset: int = typer.Option(None, "--train-subset", min=1, help="Train on this many examples."),
    label_noise: float = typer.Option(None, "--label-noise", min=0.0, max=1.0, help="Fraction of labels flipped."),
    config: Path = typer.Option(None, "--config", help="A TOML file with the run's config."),
    data_root: Path = DATA_ROOT, seed: int = SEED, device: str = DEVICE, out: Path = OUT, overrides: list[str] = SET,
) -> None:
    """Train one model and write a run folder with its history table and overfitting curve."""
    from robustcnn.config import load_config
    from robustcnn.experiments.training import TrainRunConfig, run_train

    flags = {"model.name": model, "data.dataset": dataset, "model.train.epochs": epochs,
             "model.train.batch_size": batch_size, "model.train.optimizer": optimizer, "model.train.lr": lr,
             "data.data_root": data_root, "data.train_subset": train_subset, "data.label_noise": label_noise,
             "seed": seed, "device": device}
    if width is not None:
        flags["model.kwargs.width"] = width
    cfg = load_config(TrainRunConfig, config, _overrides(flags, overrides))
    path = run_train(cfg, out)
    typer.echo(f"wrote {path}")


@app.command()
def study(
    kind: StudyKind = typer.Argument(StudyKind.ADVERSARIAL, help="Which study."),
    config: Path = typer.Option(None, "--config", "-c", help="A study config (studies/*.toml); default: the CPU profile."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Override the config's dataset."),
    executor: str = typer.Option(None, "--executor", help="Sweeps: local (default) or ray."),
    address: str = typer.Option(None, "--address", help="Sweeps: a Ray cluster address."),
    workers: int = typer.Option(None, "--workers", min=1, help="Sweeps: local worker processes."),
    data_root: Path = DATA_ROOT, seed: int = SEED, device: str = DEVICE, out: Path = OUT, overrides: list[str] = SET,
) -> None:
    """Run a study and write its tables, figures and report.md (sweeps resume from finished points)."""
    from robustcnn.config import load_config

    flags = {"data.dataset": dataset, "data.data_root": data_root, "device": device}
    if kind == StudyKind.ADVERSARIAL:
        from robustcnn.experiments.adversarial import AdversarialStudyConfig, run_adversarial_study

        cfg = load_config(AdversarialStudyConfig, config, _overrides({**flags, "seed": seed}, overrides))
        path = run_adversarial_study(cfg, out)
    else:
        from robustcnn.experiments.generalization import SweepStudy, SweepStudyConfig, default_config, run_sweep_study

        study = SweepStudy(kind.value)
        flags.update({"executor": executor, "address": address, "workers": workers,
                      "seeds": [seed] if seed is not None else None})
        # no config file: the study's CPU profile; a config file starts from plain defaults, so nothing of the
        # CPU profile (its dataset subset, say) leaks into it
        base = default_config(study) if config is None else SweepStudyConfig(study=study)
        cfg = load_config(SweepStudyConfig, config, _overrides(flags, overrides), base=base)
        if cfg.study != study:
            raise UsageError(f"config {config} is for study '{cfg.study.value}', not '{study.value}'")
        path = run_sweep_study(cfg, out)
    typer.echo(f"wrote {path}\nreport: {path / 'report.md'}")


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated numbers, got '{text}'") from None


@app.command()
def benchmark(
    model: str = typer.Argument(..., help="file.py:factory, package.module:factory, a zoo name, TorchScript or .pt2."),
    dataset: str = typer.Option("mnist", "--dataset", "-d"),
    weights: Path = typer.Option(None, "--weights", help="A state_dict (read with weights_only=True)."),
    model_arg: list[str] = typer.Option([], "--model-arg", help="key=value passed to the factory (TOML values)."),
    attacks: str = typer.Option("fgsm,pgd", "--attacks", help="Comma-separated attack names."),
    eps: str = typer.Option(None, "--eps", help="Comma-separated epsilons in [0,1] (default by dataset)."),
    n_examples: int = typer.Option(1000, "--n-examples", min=1, help="The first N test examples, in order."),
    attack_seeds: int = typer.Option(1, "--attack-seeds", min=1, help="Repeat random attacks over seeds."),
    mean: str = typer.Option(None, "--mean", help="Per-channel mean the model expects, e.g. 0.49,0.48,0.45."),
    std: str = typer.Option(None, "--std", help="Per-channel std the model expects."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow files that need pickled code (runs it)."),
    image_size: int = typer.Option(None, "--image-size", min=4, help="Resize the dataset's images to this size."),
    data_root: Path = DATA_ROOT, device: str = DEVICE, out: Path = OUT,
) -> None:
    """Scorecard for a model you bring: pre-flight checks, robust accuracy with intervals, lint, leaderboard."""
    from robustcnn.benchmark import benchmark as run_benchmark
    from robustcnn.benchmark import write_benchmark
    from robustcnn.config import parse_override
    from robustcnn.train import resolve_device

    kwargs = {}
    for pair in model_arg:
        keys, value = parse_override(pair)
        kwargs[".".join(keys)] = value
    config = {"model": model, "dataset": dataset, "weights": str(weights) if weights else None, "model_args": kwargs,
              "attacks": attacks.split(","), "eps": _floats(eps, "--eps"), "n_examples": n_examples,
              "attack_seeds": attack_seeds, "mean": _floats(mean, "--mean"), "std": _floats(std, "--std"),
              "trust_pickle": trust_pickle, "image_size": image_size}
    dev = str(resolve_device(device or "auto"))
    card = run_benchmark(model, dataset=dataset, weights=weights, model_args=kwargs,
                         attacks=[a.strip() for a in attacks.split(",") if a.strip()], epsilons=config["eps"],
                         n_examples=n_examples, attack_seeds=attack_seeds, mean=config["mean"], std=config["std"],
                         trust_pickle=trust_pickle, data_root=data_root, image_size=image_size, device=dev)
    path = write_benchmark(card, out, config=config, device=dev)
    worst = card.robust[card.robust["attack"] == "worst_case"]
    curve = ", ".join(f"{e:g}: {a:.3f}" for e, a in zip(worst["epsilon"], worst["robust_accuracy"]))
    typer.echo(f"{card.model} on {card.dataset}: clean {card.clean_accuracy:.4f}; worst case {curve}")
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
    """List registered models: name, parameter count on a dataset, description."""
    from robustcnn.models import describe_models

    rows = describe_models(pattern, dataset)
    if not rows:
        raise UsageError(f"no model matches '{pattern}'; run `robustcnn models` to see them all")
    for r in rows:
        typer.echo(f"{r['name']:<14} {r['parameters']:>12,}  {r['description']}")


@app.command()
def attacks() -> None:
    """List attacks with their threat model and default settings."""
    from robustcnn.attacks import describe_attacks

    for r in describe_attacks():
        typer.echo(f"{r['name']:<9} {r['threat_model']:<5} {r['description']}\n{'':<16}defaults: {r['defaults']}")


