"""The one error boundary of the `robustcnn` command (robustcnn.cli): every failure, click's or ours, ends as one
line on stderr with its exit code (2 for a usage error, 128 + the signal's number for SIGINT/SIGTERM, 1 for a bug,
with its traceback kept for a report). Only typer and our errors are imported: `robustcnn --help` stays fast."""
from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import typer
from typer.core import TyperGroup

from robustcnn.errors import Interrupted, RobustcnnWarning, UsageError, first_line

# typer >= 0.20 vendors click; its public BadParameter leads to whichever ClickException it raises.
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
PREFIX = "robustcnn: error: "


def _interrupt(signum: int, frame: Any) -> None:
    # not KeyboardInterrupt: typer turns that into a silent exit 130, even for SIGTERM
    raise Interrupted(signum)


def _install_signal_handlers() -> dict[int, Any]:
    """SIGINT and SIGTERM raise Interrupted, so `with RunFolder(...)` removes the staging folder on the way out;
    returns the previous handlers (only the main thread may set them)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}


def error_line(err: BaseException) -> tuple[str, int]:
    """(the one line to print, the exit code) for any exception; never raises, whatever the exception holds."""
    try:
        if isinstance(err, Interrupted):
            name = signal.Signals(err.signum).name
            return f"robustcnn: interrupted ({name}); the unfinished run folder was removed", 128 + err.signum
        if isinstance(err, KeyboardInterrupt):
            return "robustcnn: interrupted; the unfinished run folder was removed", 130
        if isinstance(err, ClickException):
            ctx = getattr(err, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            return f"{PREFIX}{_flat(err.format_message())}{hint}", int(getattr(err, "exit_code", 2))
        if isinstance(err, UsageError):
            return f"{PREFIX}{_flat(str(err)) or 'invalid input'}", 2
        if isinstance(err, OSError):  # the environment refused (disk full, permissions): say what, not where
            where = f": {err.filename}" if getattr(err, "filename", None) else ""
            return f"{PREFIX}{err.strerror or first_line(err)}{where}", 2
        if isinstance(err, MemoryError):
            return f"{PREFIX}out of memory; use a smaller batch size, subset or model", 1
    except Exception:  # a broken __str__ or an odd attribute must not hide the original error
        pass
    return f"{PREFIX}internal error ({_flat(first_line(err))}); please report it with the command line", 1


def _flat(text: str) -> str:
    """One line: the first non-empty line of a message."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _one_line_warnings() -> Any:
    """Our own warnings (a store record recomputed, a cache entry rebuilt) print as one line; returns the
    previous warnings.showwarning to restore."""
    import warnings

    previous = warnings.showwarning

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if issubclass(category, RobustcnnWarning):
            typer.echo(f"robustcnn: warning: {_flat(str(message))}", err=True)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    return previous


class OneLineErrors(TyperGroup):
    """Every usage mistake (click's or ours) ends as one line on stderr and exit code 2, no traceback."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        import warnings

        from robustcnn import progress  # stdlib only: --help stays fast

        previous, show_warning, was_quiet = _install_signal_handlers(), _one_line_warnings(), progress.is_quiet()
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
        except typer.Exit as done:
            rv = done.exit_code
        except typer.Abort:
            typer.echo("robustcnn: aborted", err=True)
            rv = 1
        except BaseException as err:  # noqa: BLE001 - the one boundary: everything becomes one line
            if isinstance(err, SystemExit):
                raise
            line, rv = error_line(err)
            if rv == 1 and not isinstance(err, MemoryError):  # a bug, not bad input: keep the trace for a report
                import traceback

                traceback.print_exception(err, file=sys.stderr)
            typer.echo(line, err=True)
        finally:
            warnings.showwarning = show_warning
            progress.set_quiet(was_quiet)  # --quiet lasts one command (CliRunner and notebooks run many)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if standalone_mode and rv in (130, 143) and sys.stdout is sys.__stdout__:  # a real interrupt, not a test
            _exit_now(rv)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


def _exit_now(code: int) -> None:
    """After an interrupt (the run folder already removed, workers stopped): run the atexit handlers (Ray,
    logging, multiprocessing) but skip the interpreter's teardown of torch, which alone can take seconds."""
    import atexit
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
