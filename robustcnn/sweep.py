"""The sweep engine: each sweep point is a unit of work named by a hash of its resolved config; finished
points are stored and skipped on re-run, so an interrupted sweep resumes where it stopped.

    results = run_sweep(points, run_point, store=SweepStore(out / ".sweep-store" / "double-descent"))

Executors: `local` (sequential, or one process per worker) and `ray` (`pip install robustcnn[ray]`; pass an
address to use a cluster). All give the same records in the same order: a point's record depends only on its
config (seeds included), never on where or when it ran.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from robustcnn.errors import RobustcnnWarning, UsageError, first_line
from robustcnn.progress import task as progress_task
from robustcnn.results import atomic_write_text, to_jsonable


class Executor(str, Enum):
    LOCAL = "local"
    RAY = "ray"


# Bump when a change to the code alters what a point computes (training, metrics, record layout): every
# point then gets a new id, so stored points from older code are recomputed instead of silently reused.
SCHEMA_VERSION = 2


def point_id(point: dict[str, Any]) -> str:
    """A stable name for a point: sha1 of its canonical JSON (sorted keys) and the schema version."""
    canonical = json.dumps({"schema": SCHEMA_VERSION, "point": to_jsonable(point)}, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha1(canonical.encode()).hexdigest()[:16]


class SweepStore:
    """Finished points as `<dir>/<point-id>.json`, each written atomically (a killed run leaves whole files)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, pid: str) -> Path:
        return self.directory / f"{pid}.json"

    def get(self, pid: str) -> dict[str, Any] | None:
        """The stored record, or None when there is none or it is unreadable (empty, truncated, not a record):
        such a point is computed again, with a warning, and its record replaced."""
        path = self.path(pid)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            warnings.warn(f"sweep store record {path} is unreadable ({first_line(err)}); recomputing that point",
                          RobustcnnWarning, stacklevel=2)
            return None
        return record

    def put(self, pid: str, record: dict[str, Any]) -> None:
        atomic_write_text(self.path(pid), json.dumps(to_jsonable(record)) + "\n")


def _timed(fn: Callable[[dict[str, Any]], dict[str, Any]], point: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    record = fn(point)
    return {**record, "point_seconds": time.perf_counter() - t0}


def run_sweep(points: Sequence[dict[str, Any]], fn: Callable[[dict[str, Any]], dict[str, Any]], *,
              store: SweepStore | None = None, executor: Executor | str = Executor.LOCAL, workers: int = 1,
              address: str | None = None, on_done: Callable[[int, int], None] | None = None,
              progress: bool | None = None, label: str = "sweep",
              describe: Callable[[dict[str, Any]], str] | None = None) -> list[dict[str, Any]]:
    """Run fn over the points not already in the store; return every point's record, in the points' order.

    fn must be a module-level function (it is pickled for worker processes and Ray). Each record gets
    `point_id`, `point_seconds` and `resumed` (True when it came from the store). on_done(finished, total) after
    each point; progress (robustcnn.progress, named `label`): a bar, or a line per finished point (`describe`
    names it; default describe_point), on stderr.
    """
    executor = Executor(executor)
    ids = [point_id(p) for p in points]
    records: dict[str, dict[str, Any]] = {}
    for pid in ids:
        found = store.get(pid) if store is not None else None
        if found is not None:
            records[pid] = {**found, "resumed": True}
    todo = [(pid, p) for pid, p in zip(ids, points) if pid not in records]
    described = {pid: (describe or describe_point)(p) for pid, p in todo}
    stored = f" ({len(records)} of {len(ids)} points stored)" if records else ""

    with progress_task(label + stored, len(todo), enabled=progress) as bar:
        def finish(pid: str, record: dict[str, Any]) -> None:
            record = {**record, "point_id": pid}
            if store is not None:
                store.put(pid, record)
            records[pid] = {**record, "resumed": False}
            bar.advance(f"{described[pid]} in {record.get('point_seconds', 0.0):.1f}s")
            if on_done is not None:
                on_done(len(records), len(ids))

        if executor == Executor.RAY and todo:  # everything stored: no Ray instance to start
            _run_ray(todo, fn, finish, address)
        elif workers > 1 and len(todo) > 1:
            _run_processes(todo, fn, finish, workers)
        else:
            for pid, p in todo:
                finish(pid, _timed(fn, p))
    return [records[pid] for pid in ids]


def describe_point(point: dict[str, Any], width: int = 60) -> str:
    """A point in a few words for its progress line: its plain values (not nested configs, not the device)."""
    words = " ".join(f"{k}={v}" for k, v in point.items()
                     if isinstance(v, (str, int, float)) and not isinstance(v, bool) and k not in ("device", "sweep"))
    return words if len(words) <= width else words[:width - 3] + "..."


def _worker_init() -> None:
    """Ctrl-C reaches the whole process group: only the parent acts on it (it stops the workers); SIGTERM
    from the parent ends a worker at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run_processes(todo: list[tuple[str, dict[str, Any]]], fn: Callable, finish: Callable, workers: int) -> None:
    """Points in worker processes; each finished point is stored as it arrives. On an error or an interrupt the
    running points are abandoned at once (their workers terminated), so stopping takes a moment, not the
    length of the longest point, and nothing already finished is lost."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a fresh interpreter per worker, as on Ray (fork would copy the parent's torch threads and state); a
    # point that depends on the thread count sets it itself (experiments.common.train_unit)
    pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), initializer=_worker_init,
                               mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(_timed, fn, p): pid for pid, p in todo}
        for future in as_completed(futures):
            finish(futures[future], future.result())
    except BaseException:
        _stop_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)
        _stop_resource_tracker()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _stop_resource_tracker() -> None:
    """Spawned workers come with multiprocessing's resource tracker process; after an interrupt, end it now
    (it ends when its pipe closes, and is restarted on demand) rather than leave it to outlive the command."""
    from multiprocessing import resource_tracker

    stop = getattr(getattr(resource_tracker, "_resource_tracker", None), "_stop", None)
    if stop is not None:
        try:
            stop()
        except (OSError, ChildProcessError):  # already gone
            pass


def _stop_workers(pool: Any) -> None:
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()


def _run_ray(todo: list[tuple[str, dict[str, Any]]], fn: Callable, finish: Callable, address: str | None) -> None:
    already_imported = "ray" in sys.modules
    if address is None:
        # A local Ray instance advertises the loopback address only: Ray reads this variable when it is first
        # imported (without it, a single-machine instance offers its workers on the machine's network address).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise UsageError("the ray executor needs Ray: pip install 'robustcnn[ray]'") from None
    # ray.init(None) connects to $RAY_ADDRESS: check it as well
    target = address if address is not None else os.environ.get("RAY_ADDRESS")
    if target and not ray.is_initialized():
        check_ray_address(target, source="--address" if address is not None else "$RAY_ADDRESS")
    started = not ray.is_initialized()
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if address is None and started and already_imported and getattr(constants, "ENABLE_RAY_CLUSTER", False):
        warnings.warn("ray was imported before robustcnn started it, so the local Ray instance may listen on the "
                      "machine's network address; set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray",
                      RobustcnnWarning, stacklevel=3)
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        remote = ray.remote(_timed)
        pending = {remote.remote(fn, p): pid for pid, p in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                finish(pending.pop(ref), _ray_get(ray, ref))
    finally:
        if started:
            ray.shutdown()


def _ray_get(ray: Any, ref: Any) -> Any:
    """A task's result; a UsageError raised in the task is raised here as itself (Ray wraps it in a RayTaskError
    whose message is the task's name, not the user's one line)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(getattr(err, "cause", None), UsageError):
            raise err.cause from None
        raise


def check_placement(executor: Executor | str, workers: object, address: str | None) -> Executor:
    """Where units run, checked before any work (a study config's executor/workers/address, or the benchmark's):
    a known executor, a whole number of workers >= 1, an address only with Ray."""
    try:
        executor = Executor(executor)
    except ValueError:
        raise UsageError(f"unknown executor {executor!r}; choose local or ray") from None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError(f"workers must be a whole number >= 1, got {workers!r}")
    if address is not None and not address.strip():
        raise UsageError("the Ray address is empty: give host:port, ray://host:port or auto, or leave it out")
    if address is not None and executor != Executor.RAY:
        raise UsageError(f"address {address!r} names a Ray cluster: pass it with --executor ray (-s executor=ray)")
    return executor


def check_ray_address(address: str, timeout: float = 5.0, source: str = "--address") -> None:
    """One line, within seconds, for a Ray cluster address that is malformed or that nothing answers at (ray.init
    would retry for minutes). `auto` is left to Ray; `host:port` and `ray://host:port` are tried over TCP.
    source: where the address came from, for the message (--address, or $RAY_ADDRESS)."""
    if address == "auto":
        return
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if host.startswith("[") and host.endswith("]"):  # an IPv6 literal, [::1]:6379
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{source} {address!r} is not a Ray cluster address: give host:port, ray://host:port or auto")
    import socket

    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise UsageError(f"no Ray cluster answers at {address} ({first_line(err)}); start one (`ray start --head`) or "
                         f"check {source}") from None
