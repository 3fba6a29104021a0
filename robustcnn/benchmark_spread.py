"""`benchmark --workers N` / `--executor ray`: a benchmark's L-p attack units (each attack x attack seed) computed
in worker processes or on a Ray cluster, through the sweep engine (robustcnn.sweep.run_sweep).

Each worker loads the model and the data again from the benchmark's own recipe (the same loading code,
robustcnn.preflight.load_data / load_net), checks that the model it built has the weights the benchmark scores
(weights_hash), sets the benchmark's CPU thread count, and runs one attack through evaluate_model exactly as the
benchmark does, into a store in memory; the unit records it hands back are put in the benchmark's store under
the ids a local run gives them. The benchmark then makes its usual pass, which finds every attack unit stored:
the numbers are a local run's, bit for bit. Units already stored (a resumed benchmark) are not sent out. The lint
and the natural threats run here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from robustcnn.attacks import AttackConfig, predict
from robustcnn.data import DataBundle
from robustcnn.errors import UsageError
from robustcnn.sweep import Executor, check_placement
from robustcnn.units import Units, run_into_memory, spread_units


class AttackJob(NamedTuple):
    """One attack unit as the benchmark's evaluate_model call makes it (its arguments, one attack)."""

    label: str
    attacks: list[AttackConfig]
    epsilons: list[float]
    n: int
    seed: int
    batch_size: int


def check_spread(executor: str, workers: int, model: Any, dataset: Any, *, address: str | None = None,
                 untrained: bool = False) -> bool:
    """Whether the attack units go to workers; one line for settings a worker cannot follow."""
    executor = check_placement(executor, workers, address)
    spread = executor == Executor.RAY or workers > 1
    if spread and not (isinstance(model, str) and isinstance(dataset, str)):
        raise UsageError("workers load the model and the data themselves: with --workers or --executor ray, name the "
                         "model (a zoo name or a file) and the dataset (a name) rather than passing objects")
    if spread and untrained:
        raise UsageError("--untrained scores a random initialisation, which each worker would draw anew: run it without "
                         "--workers or --executor ray")
    return spread


def _evaluate(net: nn.Module, data: DataBundle, job: AttackJob, units: Any) -> None:
    """The benchmark's evaluate_model call for one attack, without its lint (the lint runs in the benchmark)."""
    from robustcnn.evaluation import evaluate_model

    evaluate_model(net, data, name=job.label, attacks=job.attacks, epsilons=job.epsilons, n_examples=job.n,
                   lint=False, seed=job.seed, batch_size=job.batch_size, clean_splits=(), units=units)


class _Probed(Exception):
    pass


def job_unit_id(job: AttackJob, net: nn.Module, data: DataBundle, units: Units) -> str:
    """The id the benchmark's own pass gives this job's unit, found by running that pass until the unit is asked for
    (so the id comes from the very code that makes it, not from a copy of it)."""
    found: list[str] = []

    def probe(spec: dict[str, Any], compute: Any) -> dict[str, Any]:
        found.append(units.unit_id(spec))
        raise _Probed

    from robustcnn import progress

    try:
        with progress.task("unit ids", 0, enabled=False):  # silent: nothing is attacked
            _evaluate(net, data, job, probe)
    except _Probed:
        pass
    if len(found) != 1:  # pragma: no cover (the pass asks for exactly one unit per attack)
        raise RuntimeError(f"the attack job {job} asked for {len(found)} units")
    return found[0]


def spread_attacks(jobs: list[AttackJob], net: nn.Module, data: DataBundle, recipe: dict[str, Any], units: Units, *,
                   executor: str, workers: int, address: str | None) -> dict[str, Any]:
    """Compute the jobs whose units are not stored yet in workers; returns how many went out, how many processes
    (other than this one) computed them and the CPU thread counts they ran with (this process's, always)."""
    from robustcnn.model_loading import weights_hash

    ids = [job_unit_id(job, net, data, units) for job in jobs]
    recipe = {**recipe, **{k: str(Path(recipe[k]).resolve()) for k in ("weights", "data_root") if recipe[k]},
              "model": _absolute_model(recipe["model"])}  # a worker (or Ray) may start elsewhere
    logits = predict(net, data.x_test[:16]).cpu().tolist()  # what the model computes, not only what its weights are
    points = [{"recipe": recipe, "job": job._asdict(), "context": units.context, "weights": weights_hash(net),
               "logits": logits, "unit_id": unit_id} for job, unit_id in zip(jobs, ids)]
    probes = [lambda unit_id=unit_id: units.store.get(unit_id) is not None for unit_id in ids]
    counts = spread_units(points, attack_job, units.store, probes, executor=executor, workers=workers, address=address,
                          label="attack units", describe=_describe)
    return {"computed_by_workers": counts["evaluated_by_workers"], "worker_processes": counts["worker_processes"],
            "worker_threads": counts["worker_threads"]}


def _absolute_model(model: str) -> str:
    """A model file's path made absolute (`file.py:factory` or a model file); zoo and module names as they are
    (checked first, as load_model does: a file named like a zoo model in the working folder is not the model)."""
    from robustcnn.models import MODELS

    if model in MODELS:
        return model
    target, colon, factory = model.rpartition(":")
    if colon and target.endswith(".py") and Path(target).is_file():
        return f"{Path(target).resolve()}:{factory}"
    return str(Path(model).resolve()) if Path(model).is_file() else model


def _describe(point: dict[str, Any]) -> str:
    job = point["job"]
    return f"{job['attacks'][0].name} seed {job['seed']}"


def attack_job(point: dict[str, Any]) -> dict[str, Any]:
    """One attack unit in a worker (module-level: spawned processes and Ray pickle it): its records by unit id."""
    from robustcnn.devices import apply_threads
    from robustcnn.model_loading import weights_hash
    from robustcnn.preflight import load_data, load_net

    apply_threads(point["context"]["threads"])  # the benchmark's count: the same float sums, the same numbers
    recipe = point["recipe"]
    net, data, _ = load_net(load_data(**recipe), **recipe)
    same = torch.allclose(predict(net, data.x_test[:16]).cpu(), torch.tensor(point["logits"]), rtol=1e-4, atol=1e-5)
    if weights_hash(net) != point["weights"] or not same:
        raise UsageError(f"a worker built {recipe['model']!r} with other weights than the benchmark's (a random "
                         "initialisation, or files that differ on this machine); run without --workers/--executor")
    result = run_into_memory(point["context"], lambda runner: _evaluate(net, data, AttackJob(**point["job"]), runner))
    if set(result["records"]) != {point["unit_id"]}:  # the id the benchmark's own pass will ask for
        raise RuntimeError(f"a worker computed units {sorted(result['records'])}, not {point['unit_id']}")
    return result


def unit_counts(units: Units | None, spread: dict[str, Any] | None) -> dict[str, Any] | None:
    """The scorecard's unit counts: `resumed` counts units from an earlier run only, not those workers just
    computed (the benchmark's own pass reads those from the store too)."""
    if units is None:
        return None
    counts = dict(units.counts)
    if spread:
        if counts["resumed"] < spread["computed_by_workers"]:  # the pass computed again what workers computed
            raise RuntimeError(f"the benchmark's pass did not find the units its workers computed: {counts}, {spread}")
        counts = {**counts, "resumed": counts["resumed"] - spread["computed_by_workers"], **spread}
    return counts
