"""Where the work runs: the device, the seeds, and how many CPU threads torch may use.

    apply_threads(resolve_threads(None))   # the measured default (see DEFAULT_THREADS), or the user's choice
    device = resolve_device("auto")       # CUDA when present, else CPU

Thread policy. torch's default is one intra-op thread per core. On a shared machine that is a trap: with two
OpenMP threads on two busy cores, each parallel region waits for a thread the scheduler has given to someone
else, and a lenet5 step that takes 2 ms on one thread takes 10-40 ms on two. The default is therefore
DEFAULT_THREADS, chosen from `benchmarks/thread_policy.py` (the quickstart's work with 1 and 2 threads, idle and
beside 4 busy processes; its numbers are in the README). Precedence: an explicit count (`--threads N`,
`threads=`), then $ROBUSTCNN_THREADS, then $OMP_NUM_THREADS (someone already chose), then DEFAULT_THREADS.
The CLI applies it at the start of every command; in Python, call `apply_threads(resolve_threads(None))` (the
library never changes torch's settings on import). The count in effect is recorded in each run's manifest.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from robustcnn.errors import UsageError

# Measured on 2 shared cores (benchmarks/thread_policy.py): one thread loses little when the machine is idle and
# is several times faster than two when other processes keep the cores busy, so one thread is the default.
DEFAULT_THREADS = 1
THREADS_ENV = "ROBUSTCNN_THREADS"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so model init, shuffling and dropout repeat."""
    if not (hasattr(seed, "__index__") and 0 <= seed.__index__() < 2**63):  # ints of any kind, torch's range
        raise UsageError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    seed = seed.__index__()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when present, else CPU; anything else is checked and passed through."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise UsageError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from err
    if resolved.type not in ("cpu", "cuda"):  # meta, mps, ...: tensors there cannot be trained or attacked here
        raise UsageError(f"device '{device}' is not supported; use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device '{device}' asked for, but CUDA is not available here; use --device cpu or auto")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise UsageError(f"device '{device}' asked for, but there are {torch.cuda.device_count()} GPU(s); "
                         f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return resolved


def _count(value: object, what: str) -> int:
    """A thread count: a positive integer (an int, or a string of one from the environment)."""
    text = str(value).strip()
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and text.isdigit())):
        raise UsageError(f"{what} must be a whole number of threads >= 1, got {value!r}")
    if int(text) < 1:
        raise UsageError(f"{what} must be at least 1 thread, got {value!r}")
    return int(text)


def resolve_threads(threads: int | None = None) -> int:
    """The CPU thread count to use: `threads` if given, else $ROBUSTCNN_THREADS, else $OMP_NUM_THREADS, else
    DEFAULT_THREADS (module docstring)."""
    if threads is not None:
        return _count(threads, "threads")
    for env in (THREADS_ENV, "OMP_NUM_THREADS"):
        if os.environ.get(env, "").strip():
            return _count(os.environ[env], f"${env}")
    return DEFAULT_THREADS


def apply_threads(threads: int) -> int:
    """Set torch's intra-op threads (and its inter-op threads, which torch lets a process set only once, before
    any parallel work); returns the intra-op count now in effect."""
    n = _count(threads, "threads")
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already set, or inter-op work has started: the intra-op count is what matters here
        pass
    return torch.get_num_threads()
