"""Run folders: atomic, complete manifests, no half-written files, unique staging, names that stay inside."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest

from robustcnn import results
from robustcnn.errors import UsageError
from robustcnn.results import RunFolder, atomic_write_text, read_manifest, safe_name, write_table


def test_run_folder_writes_manifest_and_tables(tmp_path):
    with RunFolder(tmp_path, "train", config={"a": 1}, seed=3, device="cpu") as run:
        write_table(run.path, "history", pd.DataFrame({"epoch": [1], "test_accuracy": [0.5]}))
        assert run.path.name.endswith(".partial") and run.path.name.startswith(".")
    final = run.final_path
    assert final.is_dir() and not list(tmp_path.glob("train/.*"))
    manifest = json.loads((final / "manifest.json").read_text())
    for key in ("config", "seed", "versions", "git_commit", "device", "start", "end", "wall_seconds", "files"):
        assert key in manifest
    assert manifest["seed"] == 3 and "tables/history.csv" in manifest["files"] and manifest["run_id"] == final.name
    assert {"python", "torch", "torchvision", "foolbox", "robustcnn"} <= set(manifest["versions"])
    assert pd.read_csv(final / "tables" / "history.csv")["test_accuracy"].iloc[0] == 0.5  # a float, not a string


def test_a_failed_run_leaves_nothing_not_even_its_kind_folder(tmp_path):
    with pytest.raises(RuntimeError):
        with RunFolder(tmp_path, "train", config={}, seed=0, device="cpu") as run:
            write_table(run.path, "history", pd.DataFrame({"x": [1]}))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_report_leaves_nothing(tmp_path):
    def broken_report(path):
        raise ValueError("report failed")

    with pytest.raises(ValueError):
        with RunFolder(tmp_path / "new" / "out", "train", config={}, seed=0, device="cpu", on_finish=broken_report):
            pass
    assert list(tmp_path.iterdir()) == []  # the folders this run created are gone too


def test_unwritable_out_dir_is_a_usage_error_and_creates_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError, match="cannot write to the output folder"):
        RunFolder(blocker / "sub", "train", config={}, seed=0, device="cpu")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        if os.access(read_only, os.W_OK):  # root ignores permissions
            pytest.skip("running as root")
        with pytest.raises(UsageError, match="cannot write to the output folder"):
            RunFolder(read_only / "a" / "b", "train", config={}, seed=0, device="cpu")
        assert list(read_only.iterdir()) == []
    finally:
        read_only.chmod(0o755)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "ro"]


def test_runs_opened_at_once_get_separate_folders(tmp_path, monkeypatch):
    """Two runs in the same second: separate staging and final folders, both complete (a real-process
    version is in test_processes.py)."""
    monkeypatch.setattr(results, "datetime", type("Frozen", (), {"now": staticmethod(
        lambda *a: __import__("datetime").datetime(2026, 1, 1, 12, 0, 0))}))
    with RunFolder(tmp_path, "train", config={}, seed=0, device="cpu") as first:
        with RunFolder(tmp_path, "train", config={}, seed=1, device="cpu") as second:
            assert first.path != second.path and first.final_path != second.final_path
            write_table(second.path, "t", pd.DataFrame({"x": [2]}))
        write_table(first.path, "t", pd.DataFrame({"x": [1]}))
    assert first.final_path.name.startswith("20260101-120000-") and first.final_path.is_dir()
    assert pd.read_csv(first.final_path / "tables" / "t.csv")["x"].item() == 1
    assert pd.read_csv(second.final_path / "tables" / "t.csv")["x"].item() == 2


def test_the_final_rename_never_replaces_an_existing_folder(tmp_path, monkeypatch):
    ids = iter(["20260101-000000-aaaaaa", "20260101-000000-bbbbbb"])
    monkeypatch.setattr(results, "new_run_id", lambda: next(ids))
    taken = tmp_path / "train" / "20260101-000000-aaaaaa"
    with RunFolder(tmp_path, "train", config={}, seed=0, device="cpu") as run:
        taken.mkdir(parents=True)  # an empty folder: rename() would silently replace it
    assert taken.is_dir() and not any(taken.iterdir())
    assert run.final_path.name == "20260101-000000-bbbbbb"
    assert json.loads((run.final_path / "manifest.json").read_text())["run_id"] == run.final_path.name


@pytest.mark.parametrize("mask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_files_and_folders_follow_the_umask(tmp_path, mask, file_mode, dir_mode):
    old = os.umask(mask)
    try:
        with RunFolder(tmp_path, "train", config={}, seed=0, device="cpu") as run:
            write_table(run.path, "t", pd.DataFrame({"x": [1]}))
    finally:
        os.umask(old)
    assert stat.S_IMODE((run.final_path / "tables" / "t.csv").stat().st_mode) == file_mode
    assert stat.S_IMODE((run.final_path / "manifest.json").stat().st_mode) == file_mode
    assert stat.S_IMODE(run.final_path.stat().st_mode) == dir_mode


def test_files_are_fsynced_before_they_get_their_name(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    atomic_write_text(tmp_path / "t.txt", "data")
    assert events == ["fsync", "replace"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    atomic_write_text(path, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.txt"]


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", "a\\b", "nul\x00byte", ".hidden", "..", "", " ",
                                  "x" * 121])
def test_names_with_path_syntax_are_refused(tmp_path, name):
    with pytest.raises(UsageError):
        safe_name(name, "model name")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(UsageError):
        write_table(run_dir, name, pd.DataFrame({"x": [1]}))
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")] == ["run"]


def test_awkward_characters_become_underscores():
    assert safe_name("mlp (k=512)") == "mlp__k=512_"
    assert safe_name("lenet5-pgd") == "lenet5-pgd" and safe_name("imagefolder:x") == "imagefolder_x"


@pytest.mark.parametrize("content,match", [("{not json", "is corrupt"), ("[1, 2]", "lacks 'kind'"),
                                           ('{"kind": "train"}', "lacks 'run_id'"), (b"\xff\xfe", "is corrupt")])
def test_a_bad_manifest_is_a_usage_error(tmp_path, content, match):
    path = tmp_path / "manifest.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UsageError, match=match):
        read_manifest(tmp_path)


def test_csv_and_json_written_from_float32_read_back_as_the_exact_decimal(tmp_path):
    """An accuracy computed in float32 (0.976 is 0.9760000109672546 once widened) is written as 0.976; a value a
    float64 computation made keeps its full precision."""
    widened = float(np.float32(0.976))
    assert widened != 0.976  # the noise this test is about
    df = pd.DataFrame({"as_float32": np.array([0.976], dtype=np.float32), "widened": [widened],
                       "float64": [0.1 + 0.2], "seconds": [16.210340786]})
    write_table(tmp_path, "t", df, title="t")
    text = (tmp_path / "tables" / "t.csv").read_text()
    assert text.splitlines()[1] == "0.976,0.976,0.30000000000000004,16.210340786"
    back = pd.read_csv(tmp_path / "tables" / "t.csv")
    assert back["as_float32"].item() == 0.976 and back["widened"].item() == 0.976 and back["float64"].dtype == float
    results.write_json(tmp_path / "card.json", {"clean_accuracy": widened, "curve": [np.float32(0.25), widened],
                                                "n": 500})
    assert json.loads((tmp_path / "card.json").read_text()) == {"clean_accuracy": 0.976, "curve": [0.25, 0.976],
                                                                "n": 500}
