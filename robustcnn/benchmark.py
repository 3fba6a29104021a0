"""`robustcnn benchmark`: a robustness scorecard for a model the user brings.

    card = benchmark("examples/my_cnn.py:small_cnn", dataset="mnist", weights="examples/my_cnn_mnist.pt")
    card.robust  # attack, epsilon, robust_accuracy (per-example worst case over attack seeds), ci_low, ci_high, n

Model forms: `file.py:factory` or `package.module:factory` (called with model_args; this RUNS the user's
code), a registered zoo name, a TorchScript file, or a torch.export program (.pt2). Weights are a state_dict
read with torch.load(weights_only=True); anything that needs pickled code is refused unless trust_pickle.
Examples are the first n of the test split, in the dataset's order (as RobustBench does).
"""
from __future__ import annotations

import dataclasses
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

from robustcnn.api import CUSTOM
from robustcnn.attacks import AttackConfig, as_attack_config, check_budget, predict
from robustcnn.benchmark_spread import AttackJob, check_spread, spread_attacks, unit_counts
from robustcnn.benchmark_threats import (
    LP,
    check_natural_inputs,
    check_threat,
    check_threat_settings,
    default_l2_epsilons,
    lp_threats,
    natural_rows,
    natural_threats,
    update_natural_boards,
)
from robustcnn.benchmark_units import benchmark_units, model_identity
from robustcnn.data import DataBundle
from robustcnn.devices import resolve_device
from robustcnn.errors import RobustcnnWarning, UsageError
from robustcnn.leaderboard import board_path, read_leaderboard, update_leaderboard
from robustcnn.model_loading import LogOf, Normalized, load_model, to_eval, weights_hash  # noqa: F401 (re-exported)
from robustcnn.models import count_parameters
from robustcnn.preflight import Preflight, load_data, load_net, preflight  # noqa: F401 (re-exported)


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
    threat: str = "linf"  # the threat models covered (robustcnn.benchmark_threats)

    def to_json(self) -> dict[str, Any]:
        """The stable scorecard.json layout (floats in [0,1])."""
        records = self.robust[[c for c in ["attack", "threat_model", "epsilon", "level", "level_unit", "robust_accuracy",
                                           "ci_low", "ci_high", "n", "attack_seeds", "mean_over_seeds",
                                           "std_over_seeds", "curve"] if c in self.robust.columns]]
        return {"model": self.model, "dataset": self.dataset, "weights_hash": self.weights_hash,
                "parameters": self.parameters, "n_examples": self.n, "clean_accuracy": self.clean_accuracy,
                "suite": self.suite, "threat": self.threat, "attack_seeds": self.attack_seeds, "robust_statistic": STATISTIC,
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
              untrained: bool = False, suite: str | None = None, seed: int = 0, batch_size: int = 500,
              store: str | Path | None = None, threat: str = "linf", executor: str = "local", workers: int = 1,
              address: str | None = None) -> Scorecard:
    """Load, pre-flight check and attack a model; returns its scorecard (DataFrames inside).

    dataset: a name, a DataBundle, an (x, y) pair of tensors in [0,1] or a torch DataLoader; the examples are
        the first n_examples of its test split (of the tensors), in order. Scorecards on tensors or loaders
        are not on a named dataset and stay off the leaderboard.
    weights / pretrained: a state_dict file, or a shipped tag (robustcnn.zoo) for a zoo name; a zoo name with
        neither is refused unless untrained=True.
    A clean accuracy not above chance is a pre-flight FAIL (chance_check): the scorecard is complete and says
    so, and write_benchmark keeps it off the leaderboard.
    suite: the named attack suite (robustcnn.suites; None: standard) run when `attacks` is None; given attacks
        override it, and the scorecard then records the joined attack names as its suite. A suite named with a
        threat that has no L-p attacks (corruptions, transforms) is refused: it would be ignored.
    name: the model's name on the scorecard and leaderboard (default: the model argument).
    seed / batch_size: the attacks use seeds seed .. seed + attack_seeds - 1; examples per attack batch.
    store: a folder (the CLI's `<out>/.sweep-store/benchmark`) where each attack x seed and the lint is stored as
        a unit (robustcnn.benchmark_units), so a benchmark killed midway resumes with the same numbers.
    threat: linf (default), l2, corruptions, transforms or all (robustcnn.benchmark_threats). `epsilons` are the
        L-inf budgets (L2's with threat="l2"; under "all" L2 uses default_l2_epsilons); given `attacks` are one grid
        in their own norms (with "all", the corruptions and transforms run beside them).
    executor / workers / address: where the L-p attack units run (robustcnn.benchmark_spread: each attack x seed
        in a worker process or on Ray, each with this process's thread count, so the numbers are those of a local
        run); the model must then be named by a string and the dataset by its name."""
    from robustcnn import progress
    from robustcnn.evaluation import evaluate_model
    from robustcnn.suites import resolve_suite

    check_run_settings(name, seed, batch_size)
    lp, natural = lp_threats(check_threat(threat)), natural_threats(threat)
    attacks = None if attacks is None else [as_attack_config(a) for a in attacks]
    check_threat_settings(threat, attacks, epsilons, attack_seeds)
    if suite is not None and not lp:
        raise UsageError(f"--suite {suite} picks L-p attacks and --threat {threat} runs none: leave --suite out, or use "
                         "--threat all")
    suite = "standard" if suite is None else suite
    if attacks is None:
        resolve_suite(suite)  # an unknown suite: one line, before any work
        suite_name = suite if lp else "+".join(natural)
    else:
        suite_name = "+".join(a.name for a in attacks)
        if not attacks:
            raise UsageError("attacks is empty; name at least one attack, or pass attacks=None for the suite")

    t0 = time.perf_counter()
    dev = resolve_device(device)
    spread = check_spread(executor, workers, model, dataset, address=address, untrained=untrained)
    recipe = {"model": model, "dataset": dataset, "weights": weights, "model_args": model_args, "mean": mean,
              "std": std, "trust_pickle": trust_pickle, "data_root": data_root, "image_size": image_size,
              "device": str(dev), "pretrained": pretrained, "untrained": untrained}
    data = load_data(**recipe)
    check_natural_inputs(natural, data.x_test[:1])
    grids = lp_grids(lp, threat, attacks, suite, epsilons, data.channels)
    for grid_attacks, grid_eps in grids:
        check_budget(grid_eps, grid_attacks, tuple(data.x_test.shape[1:]))  # before any work
        if len({a.name for a in grid_attacks}) != len(grid_attacks):
            raise UsageError(f"each attack may appear once in a grid, got {[a.name for a in grid_attacks]}")
    net, data, checks = load_net(data, **recipe)
    label = name or (model if isinstance(model, str) else type(model).__name__)
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
    units = benchmark_units(store, model_identity(model, net, hashed, model_args), dev, memory=spread)
    batch = min(n, batch_size)  # one value for the workers' jobs and the pass below: their units' ids must agree
    jobs = [AttackJob(label, [a], grid_eps, n, s, batch) for s in seeds for grid_attacks, grid_eps in grids
            for a in grid_attacks]  # every attack x seed: independent units (each attack is seeded on its own)
    spread_counts = spread_attacks(jobs, net, data, recipe, units, executor=executor, workers=workers,
                                   address=address) if spread and jobs else None
    runs = [[evaluate_model(net, data, name=label, attacks=grid_attacks, epsilons=grid_eps, n_examples=n,
                            lint=lint and s == seed and g == 0, seed=s, batch_size=batch, clean_splits=(),
                            strong_lint=suite_name in ("standard", "full"), units=units)
             for g, (grid_attacks, grid_eps) in enumerate(grids)]  # the lint runs on the first grid (L-inf if any)
            for s in progress.track(seeds if grids else [], f"benchmark {label}", describe=lambda s: f"attack seed {s} done")]
    throughput = {"clean_images_per_second": n / max(clean_seconds, 1e-9)}
    robust, lint_table, cost, samples = pd.DataFrame(), pd.DataFrame(columns=["check", "status", "detail"]), \
        pd.DataFrame(columns=["attack", "seconds"]), pd.DataFrame()
    if runs:
        robust = robust_over_seeds([pd.concat([r.samples for r in per_seed], ignore_index=True) for per_seed in runs])
        robust["curve"] = runs[0][0].robust["curve"].iloc[0]  # one evaluation mode per benchmark
        lint_table = runs[0][0].lint.drop(columns="model")
        cost = pd.concat([r.cost for r in runs[0]], ignore_index=True).drop(columns="model")
        n_eps = {a.name: len(es) for grid_attacks, es in grids for a in grid_attacks}
        for row in cost.itertuples():
            throughput[f"{row.attack}_images_per_second"] = n * n_eps[row.attack] / max(row.seconds, 1e-9)
        samples = pd.concat([r.samples.assign(seed=s) for s, per in zip(seeds, runs) for r in per], ignore_index=True)
    if natural:
        rows = natural_rows(net, data.x_test[:n], data.y_test[:n], natural, seed=seed, batch_size=min(n, batch_size),
                            units=units)
        robust = pd.concat([robust, rows], ignore_index=True) if len(robust) else rows
    return Scorecard(label, data.name, hashed, count_parameters(net, trainable_only=False), n, correct / n,
                     robust, lint_table, pd.DataFrame([c.__dict__ for c in checks]), cost,
                     throughput, time.perf_counter() - t0, samples, attack_seeds=len(seeds) if runs else 1,
                     suite=suite_name, off_leaderboard=_off_leaderboard(data, checks),
                     units=unit_counts(units, spread_counts), threat=threat)


def lp_grids(lp: Sequence[str], threat: str, attacks: Sequence[AttackConfig] | None, suite: str,
             epsilons: Sequence[float] | None, channels: int) -> list[tuple[list[AttackConfig], list[float]]]:
    """(attacks, epsilons) per L-p evaluation: given attacks are one grid; else the suite's attacks per norm, with
    `epsilons` for L-inf (or for L2 when threat is l2) and the defaults otherwise."""
    linf_default = [0.0, 2 / 255, 4 / 255, 8 / 255] if channels == 3 else [0.0, 0.1, 0.2, 0.3]
    if attacks is not None:
        return [(list(attacks), list(epsilons) if epsilons is not None else linf_default)]
    from robustcnn.suites import resolve_suite

    grids = []
    for t in lp:
        default = linf_default if t == "linf" else default_l2_epsilons(channels)
        mine = epsilons is not None and (t == "linf" or threat == "l2")
        grids.append((resolve_suite(suite, t), list(epsilons) if mine else default))
    return grids


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
    lp_card = dataclasses.replace(card, robust=card.robust[card.robust["threat_model"].isin(LP)])
    if card.off_leaderboard is None:
        read_leaderboard(board)  # a corrupt board stops here, before any write
        for threat in card.robust["threat_model"].unique():
            if threat not in LP:
                read_leaderboard(board_path(out, f"{card.dataset}-{threat}"))
    references = reference_curves(card.dataset, exclude_hash=card.weights_hash)  # shipped references only
    config = {**(config or {}), "threat": card.threat, "suite": card.suite}  # what ran (an API call's manifest too)
    with RunFolder(out, "benchmark", config=config, seed=0, device=device, elapsed=card.wall_seconds,
                   on_finish=lambda path: redraw(path, kind="benchmark")) as run:
        write_json(run.path / "scorecard.json", card.to_json())
        if card.units is not None:
            run.extra["units"] = card.units  # how many attack x seed units (and the lint) came from the store
        if len(lp_card.robust):  # RobustBench's entries are L-p
            write_json(run.path / "robustbench.json", robustbench_card(card.model, card.dataset, card.suite, card.n,
                                                                       card.clean_accuracy, lp_card.robust,
                                                                       card.weights_hash))
        write_table(run.path, "robust_accuracy", card.robust.assign(model=card.model, suite=card.suite),
                    title="Robust accuracy")
        write_table(run.path, "lint", card.lint.assign(suite=card.suite)[["suite", *card.lint.columns]],
                    title="Evaluation lint")
        write_table(run.path, "preflight", card.preflight, title="Pre-flight checks")
        write_table(run.path, "attack_cost", card.cost, title="Attack cost")
        write_table(run.path, "reference_curves", references, title="Reference curves (shipped pretrained models)")
        write_table(run.path, "robust_samples", card.samples, markdown=False)
    if card.off_leaderboard is None:
        if len(lp_card.robust):
            update_leaderboard(board, lp_card, run.final_path)
        update_natural_boards(out, card, run.final_path)
    else:
        warnings.warn(RobustcnnWarning(f"{card.model} is not on the leaderboard ({card.off_leaderboard}); its "
                                       f"scorecard is in {run.final_path}"), stacklevel=2)
    return run.final_path
