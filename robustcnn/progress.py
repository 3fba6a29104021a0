"""Progress for every long loop (training epochs, attack x epsilon, lint checks, sweep points, benchmark seeds, a
study's models), on stderr only: stdout carries results and paths.

    with progress.task("lenet5", total=10) as bar:
        for epoch in range(10):
            ...
            bar.advance(f"epoch {epoch + 1}")
    for spec in progress.track(config.models, "adversarial", describe=lambda s: s.name):
        ...

In a terminal: rich progress bars, a loop inside another as a bar below it that goes when it is done. Anywhere
else (nohup, SLURM, a redirected log, Jupyter, a test's CliRunner): one plain line per finished unit with the time
so far and an estimate of what remains, so a log file shows life:

    robustcnn: [lenet5] pgd eps=0.1  3/7  elapsed 12s  ~16s left

Silence: `set_quiet(True)`, `with quiet():` or the CLI's --quiet for everything; a loop's `enabled=False` for that
loop and every loop inside it (a sweep's points train silently); `enabled=True` shows a loop even when quiet.
Nothing here imports rich until a bar is drawn in a terminal, so `import robustcnn.progress` is free.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

_state: dict[str, Any] = {"quiet": False, "bars": None, "rich_open": 0}
_open: list[Task] = []  # the loops running now, outermost first
_lock = threading.RLock()


def set_quiet(value: bool = True) -> None:
    """Silence (True) or restore (False) all progress output of this process."""
    _state["quiet"] = bool(value)


def is_quiet() -> bool:
    return bool(_state["quiet"])


@contextmanager
def quiet(value: bool = True) -> Iterator[None]:
    """`with quiet():` no progress inside the block; the previous setting returns after it."""
    previous = is_quiet()
    set_quiet(value)
    try:
        yield
    finally:
        set_quiet(previous)


def wanted(enabled: bool | None) -> bool:
    """Whether a loop asked to show (enabled: None follows the quiet setting) would show, outside any other loop."""
    return not is_quiet() if enabled is None else bool(enabled)


def duration(seconds: float) -> str:
    """0.4s, 12s, 3m05s, 2h07m: short enough for a log line."""
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f}s"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # a closed or odd stream: not a terminal
        return False


def _terminal() -> bool:
    return _isatty(sys.stderr)


class Task:
    """One loop: `advance` once per finished unit (an epoch, an attack at one epsilon, a sweep point)."""

    def __init__(self, label: str, total: int, shown: bool, plain: bool, hush_inner: bool) -> None:
        self.label, self.total, self.done = label, max(0, int(total)), 0
        self.shown, self.plain, self.hush_inner = shown, plain, hush_inner
        self.start = time.perf_counter()
        self.bar_id: Any = None

    @property
    def inner_allowed(self) -> bool:
        """Loops inside this one may show: it shows itself, and (as plain lines) it did not ask for them to stay
        quiet (the lint's own attack runs are lint steps, not lines of their own)."""
        return self.shown and not (self.plain and self.hush_inner)

    def advance(self, detail: str = "", n: int = 1) -> None:
        self.done += n
        if not self.shown:
            return
        if self.plain:
            _write(self.line(detail))
        elif _state["bars"] is not None and self.bar_id is not None:
            _state["bars"].update(self.bar_id, advance=n, detail=detail)

    def line(self, detail: str = "") -> str:
        """`robustcnn: [label] detail  done/total  elapsed 12s  ~16s left` (no estimate once done)."""
        elapsed = time.perf_counter() - self.start
        head = f"robustcnn: [{self.label}]" + (f" {detail}" if detail else "")
        parts = [head, f"{self.done}/{self.total}" if self.total else str(self.done), f"elapsed {duration(elapsed)}"]
        if 0 < self.done < self.total:
            parts.append(f"~{duration(elapsed / self.done * (self.total - self.done))} left")
        return "  ".join(parts)


def _write(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed or gone (a detached job): progress must never stop the work
        pass


@contextmanager
def task(label: str, total: int, *, enabled: bool | None = None, hush_inner: bool = False) -> Iterator[Task]:
    """A loop of `total` units named `label`; call `.advance(detail)` after each unit.

    enabled: None shows it unless quiet; False silences it and everything inside it; True shows it even when
    quiet. A loop inside a silenced one stays silent. hush_inner: as plain lines, loops inside this one print
    nothing (in a terminal their bars still show)."""
    with _lock:
        parent = _open[-1] if _open else None
        shown = wanted(enabled) and (parent is None or parent.inner_allowed)
        plain = not (_state["bars"] is not None or _terminal())
        current = Task(label, total, shown, plain, hush_inner)
        if shown and not plain:
            _add_bar(current)
        _open.append(current)
    try:
        yield current
    finally:
        with _lock:
            if current in _open:
                _open.remove(current)
            if current.bar_id is not None:
                _close_bar(current)


def track(items: Iterable[T], label: str, *, describe: Callable[[T], str] = str, enabled: bool | None = None,
          total: int | None = None) -> Iterator[T]:
    """Yield each item, advancing a `task` after its loop body: `for spec in track(specs, "study"): ...`."""
    items = items if total is not None or hasattr(items, "__len__") else list(items)
    with task(label, total if total is not None else len(items), enabled=enabled) as bar:  # type: ignore[arg-type]
        for item in items:
            yield item
            bar.advance(describe(item))


def _add_bar(current: Task) -> None:
    if _state["bars"] is None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        # stderr writes (warnings) print above the bars; stdout too when it is the same terminal, but a redirected
        # stdout (results, paths) is never touched
        bars = Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[detail]}", markup=False), console=Console(file=sys.stderr),
                        redirect_stdout=_isatty(sys.stdout), transient=False)
        bars.start()
        _state["bars"] = bars
    current.bar_id = _state["bars"].add_task(current.label, total=current.total or None, detail="")
    _state["rich_open"] += 1


def _close_bar(current: Task) -> None:
    bars = _state["bars"]
    _state["rich_open"] -= 1
    if bars is None:
        return
    if _state["rich_open"] > 0:  # an inner loop: its bar goes, the outer bars stay
        bars.remove_task(current.bar_id)
        return
    if current.done < current.total:  # stopped early (early stopping, an error): the bar ends where it stopped
        bars.update(current.bar_id, total=current.done)
    bars.stop()
    _state["bars"] = None
