"""Run folders: atomic, complete manifests, no half-written files."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from robustcnn.errors import UsageError
from robustcnn.results import RunFolder, atomic_write_text, write_table


def test_run_folder_writes_manifest_and_tables(tmp_path):
    with RunFolder(tmp_path, "train", config={"a": 1}, seed=3, device="cpu") as run:
        write_table(run.path, "history", pd.DataFrame({"epoch": [1], "test_accuracy": [0.5]}))
        assert run.path.name.endswith(".partial")
    final = run.final_path
    assert final.is_dir() and not list(tmp_path.glob("train/.*"))
    manifest = json.loads((final / "manifest.json").read_text())
    for key in ("config", "seed", "versions", "git_commit", "device", "start", "end", "wall_seconds", "files"):
        assert key in manifest
    assert manifest["seed"] == 3 and "tables/history.csv" in manifest["files"]
    assert {"python", "torch", "torchvision", "foolbox", "robustcnn"} <= set(manifest["versions"])
    assert pd.read_csv(final / "tables" / "history.csv")["test_accuracy"].iloc[0] == 0.5  # a float, not a string


def test_a_failed_run_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with RunFolder(tmp_path, "train", config={}, seed=0, device="cpu") as run:
            write_table(run.path, "history", pd.DataFrame({"x": [1]}))
            raise RuntimeError("interrupted")
    assert list((tmp_path / "train").iterdir()) == []


def test_unwritable_out_dir_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError, match="cannot write to the output folder"):
        RunFolder(blocker / "sub", "train", config={}, seed=0, device="cpu")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    atomic_write_text(path, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.txt"]
