"""Run folders: `<out>/<kind>/<run-id>/` with manifest.json, tables/, figures/, checkpoints/, data/, report.md.

Every file is written atomically (temp file in the same folder, then os.replace), and a run is staged in a
hidden `.<run-id>.partial` folder that is renamed only when the run finishes: an interrupted or failed run
leaves no half-written file and no folder that looks finished.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from robustcnn.errors import UsageError

SUBDIRS = ("tables", "figures", "checkpoints", "data")


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2) + "\n")


def write_table(run_dir: Path, name: str, df: pd.DataFrame, *, title: str | None = None, markdown: bool = True) -> Path:
    """tables/<name>.csv (full precision) and, unless markdown=False (per-sample tables), tables/<name>.md."""
    tables = Path(run_dir) / "tables"
    csv_path = atomic_write_text(tables / f"{name}.csv", df.to_csv(index=False))
    if markdown:
        atomic_write_text(tables / f"{name}.md", (f"### {title}\n\n" if title else "") + markdown_table(df) + "\n")
    return csv_path


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub-flavoured Markdown table, with no dependency beyond pandas."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
        self.run_id = run_id or datetime.now().strftime("%Y%m%d-%H%M%S")
        parent = Path(out) / kind
        try:
            parent.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".probe-", delete=True)
            probe.close()
        except OSError as err:
            raise UsageError(f"cannot write to the output folder {parent} ({err.strerror}); pass a writable --out") from err
        final = parent / self.run_id
        suffix = 1
        while final.exists():  # two runs in the same second get distinct folders
            suffix += 1
            final = parent / f"{self.run_id}-{suffix}"
        self.final_path = final
        self.path = parent / f".{final.name}.partial"
        self.extra: dict[str, Any] = {}

    def __enter__(self) -> RunFolder:
        shutil.rmtree(self.path, ignore_errors=True)
        for sub in SUBDIRS:
            (self.path / sub).mkdir(parents=True)
        self._start, self._t0 = _now(), time.perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for sub in SUBDIRS:  # empty subfolders are noise in a committed reference run
            if not any((self.path / sub).iterdir()):
                (self.path / sub).rmdir()
        self.write_manifest()
        try:
            if self.on_finish is not None:
                self.on_finish(self.path)
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        os.replace(self.path, self.final_path)
        self.path = self.final_path

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
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "start": self._start,
            "end": _now(),
            "wall_seconds": self.elapsed + time.perf_counter() - self._t0,
            "files": files,
            **self.extra,
        }
        write_json(self.path / "manifest.json", manifest)


def run_files(run_dir: Path) -> list[str]:
    """Every file of a run folder except the manifest, relative and sorted (the manifest's `files`)."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file() and p.name != "manifest.json")


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "manifest.json"
    if not path.exists():
        raise UsageError(f"{run_dir} is not a run folder (no manifest.json); pass a folder such as results/train/<run-id>")
    return json.loads(path.read_text())
