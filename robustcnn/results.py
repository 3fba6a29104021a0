"""Run folders: `<out>/<kind>/<run-id>/` with manifest.json, tables/, figures/, checkpoints/, data/, report.md.

Every file is written atomically (a temp file in the same folder, fsynced, then os.replace; permissions from
the umask, 0644 typically), and a run is staged in a hidden folder of its own (`.<run-id>-XXXX.partial`, from
mkdtemp) that is renamed only when the run finishes: an interrupted or failed run leaves no half-written file,
no folder that looks finished, and no empty `<kind>/` folder. Run ids carry a random suffix, so runs started in
the same second in the same --out never share a folder. User-given names become file names only through
`safe_name`, so nothing is written outside the run folder.
"""
from __future__ import annotations

import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from robustcnn.errors import UsageError, first_line

SUBDIRS = ("tables", "figures", "checkpoints", "data")


def umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part; the file is
    on disk (fsynced) before it gets its name, and its mode follows the umask like any new file's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600 files
            os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_UNSAFE_CHARS = re.compile(r"[^\w.+=-]")  # \w: letters of any script, digits and '_'


def safe_name(name: object, what: str = "name") -> str:
    """A user-given name (model, variant, dataset, run id) as one file-name component.

    Path syntax is refused (a separator, a NUL byte, a leading '.', as in '../x' or '/etc/x'); other characters
    that are awkward in file names (spaces, ':', ...) become '_'."""
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"{what} must be a non-empty string, got {name!r}")
    if "\x00" in name or "/" in name or "\\" in name or name.startswith(".") or len(name) > 120:
        raise UsageError(f"{what} {name!r} cannot be used in a file name (no '/', '\\', NUL bytes or leading '.', "
                         "at most 120 characters); use letters, digits, '-' and '_'")
    return _UNSAFE_CHARS.sub("_", name)


def inside(root: Path, path: Path) -> Path:
    """`path`, after checking that it resolves inside `root` (a last guard for files of a run folder)."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if resolved != base and base not in resolved.parents:
        raise UsageError(f"refusing to write {path}: it is outside {root}")
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, enums, paths and numpy/torch scalars -> plain JSON types (floats stay floats)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "value") and isinstance(obj.value, str):  # str enums
        return obj.value
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


def write_json(path: Path, obj: Any) -> Path:
    """JSON at full float64 precision, float32 noise removed (0.9760000109672546 is written 0.976)."""
    from robustcnn.formatting import clean_json

    return atomic_write_text(path, json.dumps(clean_json(to_jsonable(obj)), indent=2) + "\n")


def write_table(run_dir: Path, name: str, df: pd.DataFrame, *, title: str | None = None, markdown: bool = True) -> Path:
    """tables/<name>.csv (full float64 precision, float32 noise removed: robustcnn.formatting.clean_floats) and,
    unless markdown=False (per-sample tables), tables/<name>.md and tables/<name>.tex (booktabs, for papers;
    robustcnn.latex), both with fractions as percent with one decimal."""
    from robustcnn.formatting import clean_floats
    from robustcnn.latex import latex_table

    tables = Path(run_dir) / "tables"
    name = safe_name(name, "table name")
    df = clean_floats(df)
    csv_path = atomic_write_text(inside(run_dir, tables / f"{name}.csv"), df.to_csv(index=False))
    if markdown:
        atomic_write_text(tables / f"{name}.md", (f"### {title}\n\n" if title else "") + markdown_table(df) + "\n")
        atomic_write_text(tables / f"{name}.tex", latex_table(df, caption=title))
    return csv_path


def markdown_table(df: pd.DataFrame, percent: Sequence[str] = ()) -> str:
    """A GitHub-flavoured Markdown table. Fraction columns (robustcnn.formatting.is_percent, plus `percent`) are
    percent with one decimal and say '(%)' in their header; other floats have 4 significant digits."""
    from robustcnn.formatting import cell, is_percent

    as_pct = [is_percent(c) or str(c) in percent for c in df.columns]
    names = [f"{c} (%)" if p and "%" not in str(c) else str(c) for c, p in zip(df.columns, as_pct)]
    header = "| " + " | ".join(n.replace("|", "\\|") for n in names) + " |"
    right = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    rule = "| " + " | ".join("---:" if r else "---" for r in right) + " |"
    rows = ["| " + " | ".join(cell(v, p) for v, p in zip(row, as_pct)) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def git_commit() -> str | None:
    """The commit of the robustcnn checkout, if it is one (installed wheels have none); '-dirty' when tracked
    files other than the run outputs under results/ differ from it."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--",
                                ":(top)", ":(top,exclude)results"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str | None]:
    from importlib import metadata

    found: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "foolbox", "robustcnn", "numpy", "scikit-learn", "pandas"):
        try:
            found[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            found[pkg] = None
    return found


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        import torch
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def torch_threads() -> int | None:
    """torch's intra-op CPU thread count in effect (robustcnn.devices sets it); None if torch is not loaded."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_writable(out: str | Path) -> Path:
    """Raise a UsageError unless run folders can be created under `out`; creates nothing that stays (the
    nearest existing folder gets a probe file, removed at once), so a bad --out stops a run before any work."""
    out = Path(out)
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot write to the output folder {out} ({existing} is not a folder); pass a writable --out")
    try:
        probe_writable(existing)
    except OSError as err:
        raise UsageError(f"cannot write to the output folder {out} ({err.strerror or first_line(err)}); pass a "
                         "writable --out") from err
    return out


def probe_writable(folder: Path) -> None:
    """Create and remove a probe file in `folder`; raises OSError where it cannot be written."""
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".robustcnn-probe-")
    os.close(fd)
    os.unlink(probe)


def new_run_id() -> str:
    """Time-sortable and unique: two runs started in the same second get different ids."""
    return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


class RunFolder:
    """Use as a context manager: files go to a staging folder that becomes `<out>/<kind>/<run_id>` on success.

        with RunFolder(out, "train", config=cfg, seed=0, device="cpu") as run:
            write_table(run.path, "history", df)
        run.final_path  # the finished folder
    """

    def __init__(self, out: str | Path, kind: str, *, config: Any, seed: int | None, device: str,
                 run_id: str | None = None, on_finish: Any = None, elapsed: float = 0.0) -> None:
        """on_finish(path): called after the manifest is written and before the folder is renamed (the report).
        elapsed: seconds of the run's work done before the folder was opened (counted in wall_seconds)."""
        self.elapsed = elapsed
        self.kind, self.config, self.seed, self.device, self.on_finish = kind, config, seed, device, on_finish
        self.run_id = safe_name(run_id, "run id") if run_id is not None else new_run_id()
        self.out = check_writable(out)
        self.parent = self.out / safe_name(kind, "run kind")
        self.final_path = self.parent / self.run_id
        self.path = self.final_path  # the staging folder once entered
        self.extra: dict[str, Any] = {}
        self._created: list[Path] = []

    def __enter__(self) -> RunFolder:
        for attempt in range(3):  # a failing run beside us may remove an empty <kind>/ between our two calls
            try:
                self._created = _make_dirs(self.parent)
                self.path = Path(tempfile.mkdtemp(dir=self.parent, prefix=f".{self.run_id}-", suffix=".partial"))
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
            except OSError as err:
                self._discard()
                raise UsageError(f"cannot create a run folder in {self.parent} ({err.strerror or first_line(err)}); "
                                 "pass a writable --out") from err
        try:  # a signal (SIGTERM becomes an exception) can land here, before `with` would call __exit__
            os.chmod(self.path, 0o777 & ~umask())  # mkdtemp makes it 0700; the finished run is shared like any folder
            for sub in SUBDIRS:
                (self.path / sub).mkdir()
        except BaseException:
            self._discard()
            raise
        self._start, self._t0 = _now(), time.perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            for sub in SUBDIRS:  # empty subfolders are noise in a committed reference run
                if not any((self.path / sub).iterdir()):
                    (self.path / sub).rmdir()
            self.write_manifest()
            if self.on_finish is not None:
                self.on_finish(self.path)
            for folder in [self.path, *(p for p in self.path.rglob("*") if p.is_dir())]:
                _fsync_dir(folder)  # the files' names are durable too, before the run gets its final name
            self._publish()
        except BaseException:
            self._discard()
            raise
        self.path = self.final_path

    def _publish(self) -> None:
        """Rename the staging folder to its final name. rename() never replaces a non-empty folder, and the
        random id makes even an empty one at that name all but impossible; if it exists, take a new id."""
        while self.final_path.exists():
            self.run_id = new_run_id()
            self.final_path = self.parent / self.run_id
            self._rewrite_manifest_id()
        os.rename(self.path, self.final_path)
        _fsync_dir(self.parent)

    def _rewrite_manifest_id(self) -> None:
        manifest = json.loads((self.path / "manifest.json").read_text())
        manifest.update(run_id=self.run_id, run_dir=str(self.final_path))
        write_json(self.path / "manifest.json", manifest)

    def _discard(self) -> None:
        """Remove the staging folder and any folder this run created that is now empty."""
        shutil.rmtree(self.path, ignore_errors=True)
        for folder in reversed(self._created):
            try:
                folder.rmdir()  # only succeeds when empty: another run's files are never touched
            except OSError:
                break


    def write_manifest(self) -> None:
        files = run_files(self.path)
        manifest = {
            "kind": self.kind,
            "run_id": self.final_path.name,
            "run_dir": str(self.final_path),
            "config": self.config,
            "seed": self.seed,
            "versions": versions(),
            "git_commit": git_commit(),
            "device": device_description(self.device),
            "threads": torch_threads(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "start": self._start,
            "end": _now(),
            "wall_seconds": self.elapsed + time.perf_counter() - self._t0,
            "files": files,
            **self.extra,
        }
        write_json(self.path / "manifest.json", manifest)


def _make_dirs(folder: Path) -> list[Path]:
    """mkdir -p that returns the folders it created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            pass
    return list(reversed(missing))


def _fsync_dir(folder: Path) -> None:
    """Make a folder's entries (new names, renames) durable; not every platform can open a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

def run_files(run_dir: Path) -> list[str]:
    """Every file of a run folder except the manifest, relative and sorted (the manifest's `files`)."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file() and p.name != "manifest.json")


MANIFEST_KEYS = ("kind", "run_id", "config", "versions", "device")


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The manifest of a run folder; a missing, unreadable or incomplete one is a UsageError."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a run folder (no manifest.json); pass a folder such as results/train/<run-id>")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UsageError(f"{path} is corrupt ({first_line(err)}); restore it from a copy or rerun the study") from err
    missing = [k for k in MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise UsageError(f"{path} lacks {', '.join(repr(k) for k in missing)}; it is not a robustcnn manifest "
                         "(restore it from a copy or rerun the study)")
    _check_config_shape(path, manifest["config"])
    return manifest


def _check_config_shape(path: Path, config: Any) -> None:
    """The nesting every report reads (config, its evaluation, its models and their train/adversarial settings):
    a hand-edited or foreign manifest is one line naming the field, not a crash deep inside a report."""
    def expect(value: Any, kind: type, field: str) -> None:
        if value is not None and not isinstance(value, kind):
            raise UsageError(f"{path}: {field} must be {'a table' if kind is dict else 'a list'}, got {value!r:.40}; "
                             "restore the manifest from a copy or rerun the study")

    expect(config, dict, "config")
    config = config or {}
    expect(config.get("evaluation"), dict, "config.evaluation")
    expect(config.get("models"), list, "config.models")
    for i, spec in enumerate(config.get("models") or []):
        expect(spec, dict, f"config.models[{i}]")
        expect(spec.get("train"), dict, f"config.models[{i}].train")
        expect((spec.get("train") or {}).get("adversarial"), dict, f"config.models[{i}].train.adversarial")


def load_npz(path: str | Path, keys: Sequence[str] | None = None) -> dict[str, Any]:
    """The arrays of a run's data/*.npz (figures are redrawn from them): all, or those of `keys` the file has (only
    they are read and decompressed), never unpickling anything; a missing, truncated or foreign file is a
    UsageError naming it."""
    import zipfile

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in (f.files if keys is None else [k for k in keys if k in f.files])}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        # the error's type only: numpy's text for an object array invites loading it with pickle
        raise UsageError(f"{path} is missing or corrupt ({type(err).__name__}); rerun the study to write it "
                         "again") from None
