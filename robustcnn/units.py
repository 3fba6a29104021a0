"""Units of work for the runs that are not sweeps (the adversarial study, `benchmark`), through the sweep store:
a trained model, one attack over an epsilon grid, a lint, a set of radii. Each unit is named by the hash of
everything that decides its result (sweep.point_id: its inputs and the schema version); a finished unit is stored
whole and reused by the next run with the same inputs, so a run killed with `kill -9` resumes where it stopped.

    units = Units(SweepStore(out / ".sweep-store" / "benchmark"), {"model": model_id})
    record = units({"unit": "attack", "attack": "pgd", ...}, compute)   # compute() -> a JSON-able record
    table = as_frame(record["samples"])  # a DataFrame in a record is stored as its frame_record

Records are JSON: tables as columns with their dtypes (frame_record), tensors as base64 bytes (tensor_record), so
a record read back gives the very numbers that were computed. Model weights go beside their record as
`<point-id>.<name>.pt` files (BlobStore), checked against a sha256 on every reuse.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from robustcnn import progress
from robustcnn.errors import RobustcnnWarning
from robustcnn.results import atomic_write_bytes
from robustcnn.sweep import Executor, SweepStore, point_id, run_sweep

# (spec, compute) -> record: runs compute() for a unit named by spec, or returns its stored record
UnitRunner = Callable[[dict[str, Any], Callable[[], dict[str, Any]]], dict[str, Any]]


def compute_now(spec: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The runner without a store: every unit is computed."""
    return compute()


def frame_record(df: pd.DataFrame) -> dict[str, Any]:
    """A table as JSON-able columns and dtypes (record_frame restores it exactly: floats round-trip through JSON)."""
    return {"columns": [str(c) for c in df.columns], "dtypes": [str(t) for t in df.dtypes],
            "data": [_values(df[c]) for c in df.columns]}


def _values(column: pd.Series) -> list[Any]:
    # numpy's tolist is several times faster than pandas' for numeric columns; both give Python scalars
    return column.to_numpy().tolist() if isinstance(column.dtype, np.dtype) else column.tolist()


def record_frame(record: dict[str, Any]) -> pd.DataFrame:
    """The table of a frame_record, with its dtypes (numpy columns built as arrays: a per-attack record of a
    thousand samples is read back in about a millisecond, not ten)."""
    return pd.DataFrame({c: _column(values, dtype) for c, dtype, values in
                         zip(record["columns"], record["dtypes"], record["data"])}, columns=record["columns"])


def _column(values: list[Any], dtype: str) -> Any:
    try:
        numpy_dtype = np.dtype(dtype)
    except TypeError:  # a pandas extension dtype (category, string, nullable integers)
        return pd.Series(values, dtype=dtype)
    if numpy_dtype.kind in "biuf":
        return np.asarray(values, dtype=numpy_dtype)
    return pd.Series(values, dtype=dtype)


def as_frame(value: pd.DataFrame | dict[str, Any]) -> pd.DataFrame:
    """A unit's table: as computed (a DataFrame, when the unit ran just now) or as stored (its frame_record)."""
    return value if isinstance(value, pd.DataFrame) else record_frame(value)


def tensor_record(tensor: Any) -> dict[str, Any]:
    """A CPU tensor as dtype, shape and its raw bytes in base64 (exact, and far smaller than a list of floats)."""
    array = tensor.detach().cpu().contiguous().numpy()
    return {"dtype": str(array.dtype), "shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode()}


def record_tensor(record: dict[str, Any]) -> Any:
    import torch

    array = np.frombuffer(base64.b64decode(record["data"]), dtype=np.dtype(record["dtype"])).reshape(record["shape"])
    return torch.from_numpy(array.copy())


def state_bytes(state: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def load_state(data: bytes) -> dict[str, Any]:
    """A state_dict from state_bytes, read with weights_only=True (a store file never runs code)."""
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def examples_fingerprint(x: Any, y: Any) -> str:
    """sha1 of the evaluated examples (shape, pixels, labels): a unit never outlives a change to its data."""
    h = hashlib.sha1(str(tuple(x.shape)).encode())
    for t in (x, y):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class BlobStore(SweepStore):
    """A SweepStore whose records may carry `blobs` (name -> bytes, e.g. a state_dict): each blob is written to
    `<point-id>.<name>.pt` before the record (whose presence marks the unit finished) and checked by sha256 when
    the record is read; a missing or damaged blob makes the unit be computed again, with a warning."""

    def blob_path(self, pid: str, name: str) -> Any:
        return self.directory / f"{pid}.{name}.pt"

    def put(self, pid: str, record: dict[str, Any]) -> None:
        blobs, rest = record.get("blobs") or {}, {k: v for k, v in record.items() if k != "blobs"}
        for name, data in blobs.items():
            atomic_write_bytes(self.blob_path(pid, name), data)
        super().put(pid, {**rest, "blob_sha256": {n: hashlib.sha256(d).hexdigest() for n, d in blobs.items()}})

    def get(self, pid: str) -> dict[str, Any] | None:
        record = super().get(pid)
        if record is None:
            return None
        blobs = {}
        for name, digest in (record.pop("blob_sha256", None) or {}).items():
            path = self.blob_path(pid, name)
            try:
                data = path.read_bytes()
            except OSError:
                data = None
            if data is None or hashlib.sha256(data).hexdigest() != digest:
                warnings.warn(f"sweep store file {path} is missing or damaged; recomputing that unit",
                              RobustcnnWarning, stacklevel=2)
                return None
            blobs[name] = data
        return {**record, "blobs": blobs}


class Units:
    """Runs units through a store (None: computes each, stores nothing) and counts how many were reused.

    context: what every unit of this runner shares (the model's identity, the device, the thread count); it is
    hashed into each unit's id with the unit's own spec. `bind` gives a runner with more context and the same
    counts."""

    def __init__(self, store: SweepStore | None, context: dict[str, Any] | None = None,
                 counts: dict[str, int] | None = None) -> None:
        self.store, self.context = store, dict(context or {})
        self.counts = counts if counts is not None else {"units": 0, "resumed": 0}

    def bind(self, **context: Any) -> Units:
        return Units(self.store, {**self.context, **context}, self.counts)

    def unit_id(self, spec: dict[str, Any]) -> str:
        """The id of the unit named by spec under this runner's context."""
        return point_id({**self.context, **spec})

    def __call__(self, spec: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The unit's record, from the store when it is there (`resumed`: True), else computed and stored; the
        same fields as a sweep point's record (sweep.run_sweep), which runs units in parallel instead."""
        pid = self.unit_id(spec)
        found = self.store.get(pid) if self.store is not None else None
        self.counts["units"] += 1
        if found is not None:
            self.counts["resumed"] += 1
            return {**found, "resumed": True}
        t0 = time.perf_counter()
        record = {**compute(), "point_id": pid, "point_seconds": 0.0}
        record["point_seconds"] = time.perf_counter() - t0
        if self.store is not None:  # tables are stored as frame_records (read back with as_frame)
            self.store.put(pid, {k: frame_record(v) if isinstance(v, pd.DataFrame) else v for k, v in record.items()})
        return {**record, "resumed": False}


class MemoryStore(SweepStore):
    """A store that keeps records in a dict: what a worker hands back, or a benchmark's units without a folder."""

    def __init__(self) -> None:
        super().__init__("<memory>")
        self.records: dict[str, dict[str, Any]] = {}

    def get(self, pid: str) -> dict[str, Any] | None:
        return self.records.get(pid)

    def put(self, pid: str, record: dict[str, Any]) -> None:
        self.records[pid] = record


class IntoStore(SweepStore):
    """run_sweep's store for jobs that compute units in workers: nothing is stored per job; a finished job's unit
    records (its record's `records`, by unit id) go into `target` as they arrive, so a killed run keeps them."""

    def __init__(self, target: SweepStore) -> None:
        super().__init__(target.directory)
        self.target = target

    def get(self, pid: str) -> dict[str, Any] | None:
        return None

    def put(self, pid: str, record: dict[str, Any]) -> None:
        for unit_id, unit_record in record["records"].items():
            self.target.put(unit_id, unit_record)


def spread_units(jobs: list[dict[str, Any]], fn: Callable[[dict[str, Any]], dict[str, Any]], store: SweepStore,
                 probes: list[Callable[[], bool]], *, executor: str, workers: int, address: str | None,
                 label: str, describe: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Run in workers the jobs whose probe says their units are not all stored (each job returns its unit records
    by id, as run_into_memory does; they go into `store` as they arrive); returns how many went out, how many
    processes (other than this one) ran them, how many units they computed and the CPU thread counts they had."""
    todo = [job for job, stored in zip(jobs, probes) if not stored()]
    if Executor(executor) == Executor.LOCAL and len(todo) < 2:
        todo = []  # one job: the caller's own pass computes it here (as the sweep engine would)
    results = run_sweep(todo, fn, store=IntoStore(store), executor=executor, workers=workers, address=address,
                        label=label, describe=describe) if todo else []
    return {"evaluated_by_workers": len(todo), "units_by_workers": sum(len(r["records"]) for r in results),
            "worker_processes": len({r["pid"] for r in results} - {os.getpid()}),
            "worker_threads": sorted({r["threads"] for r in results})}


class ReadThroughStore(MemoryStore):
    """A worker's store: what it computes stays in memory (handed back); a unit the study's store already holds
    (a partly resumed model) is read from there when that folder is reachable (local workers; a Ray node
    without it computes the unit again, with the same result)."""

    def __init__(self, directory: str | None) -> None:
        super().__init__()
        self.stored = BlobStore(directory) if directory is not None and Path(directory).is_dir() else None

    def get(self, pid: str) -> dict[str, Any] | None:
        found = self.records.get(pid)
        return found if found is not None or self.stored is None else self.stored.get(pid)


def run_into_memory(context: dict[str, Any], evaluate: Callable[[Units], object],
                    store: str | None = None) -> dict[str, Any]:
    """A worker's side: evaluate(runner) silently; the job's record holds the unit records it computed (by unit
    id; units already in the caller's `store` folder are read, not recomputed), the worker's pid and thread count."""
    memory = ReadThroughStore(store)
    with progress.task("units", 0, enabled=False):  # silent: the caller reports each job as it arrives
        evaluate(Units(memory, context))
    return {"records": memory.records, "pid": os.getpid(), "threads": torch.get_num_threads()}
