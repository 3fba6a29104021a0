"""A study's evaluation units computed in worker processes or on Ray, as its models are trained there.

Each job evaluates one trained model in a worker: the worker rebuilds the data and the model from the job (the
model's weights travel with it), takes the study's CPU thread count, and runs the study's own evaluation code
into a store in memory; the unit records it hands back go into the study's store under the ids the study's own
pass asks for. The study then makes its usual pass, which finds every unit stored, so its tables are a local
run's, bit for bit. A model whose units are all stored already (a resumed run) is not sent out; a worker reads
the units of its model that are stored and computes only the others. Before computing, a worker checks that
it sees the study's examples and that its model gives the study's logits (outputs_check), else it refuses.

    jobs = [{"context": scope.context, ...}]       # one per model, each with what its worker needs
    counts = units.spread_units(jobs, job_fn, store, probes, executor="local", workers=2, address=None)
    # in the worker: units.run_into_memory(job["context"], evaluate, job["store"])
"""
from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import torch

from robustcnn import progress
from robustcnn.units import Units


class _Missing(Exception):
    """A unit the store does not hold (ends all_stored's probe)."""


def all_stored(evaluate: Callable[[Units], object], units: Units) -> bool:
    """Whether every unit `evaluate(runner)` asks for is in units' store: the evaluation runs silently against the
    store alone, and the first unit it lacks ends it."""

    class _StoredOnly(Units):
        def __call__(self, spec: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
            found = self.store.get(self.unit_id(spec)) if self.store is not None else None
            if found is None:
                raise _Missing
            return {**found, "resumed": True}

    try:
        with progress.task("stored units", 0, enabled=False):
            evaluate(_StoredOnly(units.store, units.context))
    except _Missing:
        return False
    return True


def outputs_check(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """What a worker must reproduce before it computes anything: the evaluated examples and the model's logits
    on the first 16 of them (a node with other data files or other code would otherwise compute other units)."""
    from robustcnn.attacks import predict
    from robustcnn.units import examples_fingerprint

    return {"examples": examples_fingerprint(x, y), "logits": predict(model, x[:16]).cpu().tolist()}


def same_outputs(expected: dict[str, Any], model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> bool:
    got = outputs_check(model, x, y)
    return got["examples"] == expected["examples"] and torch.allclose(
        torch.tensor(got["logits"]), torch.tensor(expected["logits"]), rtol=1e-4, atol=1e-5)


def wire_record(record: dict[str, Any]) -> dict[str, Any]:
    """A train record made JSON-able for a job (a job is hashed like a sweep point): blobs as base64 text."""
    return {**{k: v for k, v in record.items() if k not in ("blobs", "resumed")},
            "blobs64": {name: base64.b64encode(data).decode("ascii") for name, data in record["blobs"].items()}}


def unwire_record(record: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in record.items() if k != "blobs64"},
            "blobs": {name: base64.b64decode(text) for name, text in record["blobs64"].items()}}
