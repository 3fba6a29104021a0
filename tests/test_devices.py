"""The thread policy: who decides the count, that it reaches torch, and that every run's manifest records it."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from robustcnn.cli import app
from robustcnn.devices import DEFAULT_THREADS, apply_threads, resolve_threads
from robustcnn.errors import UsageError
from robustcnn.results import RunFolder, write_json


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_thread_env(monkeypatch):
    for name in ("ROBUSTCNN_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_precedence_explicit_then_env_then_omp_then_default(no_thread_env):
    assert resolve_threads(None) == DEFAULT_THREADS == 1
    no_thread_env.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads(None) == 3
    no_thread_env.setenv("ROBUSTCNN_THREADS", "5")
    assert resolve_threads(None) == 5
    assert resolve_threads(2) == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "two"])
def test_bad_counts_are_usage_errors(bad, no_thread_env):
    with pytest.raises(UsageError, match="thread"):
        resolve_threads(bad)
    no_thread_env.setenv("ROBUSTCNN_THREADS", str(bad))
    with pytest.raises(UsageError, match=r"\$ROBUSTCNN_THREADS"):
        resolve_threads(None)


def test_the_count_reaches_torch_and_the_manifest(tmp_path, restore_threads):
    for n in (2, 1):
        assert apply_threads(n) == n and torch.get_num_threads() == n
        with RunFolder(tmp_path, "train", config={}, seed=0, device="cpu") as run:
            write_json(run.path / "tables" / "x.json", {})
        assert json.loads((run.final_path / "manifest.json").read_text())["threads"] == n


def _cli_train_threads(tmp_path, *flags: str) -> int:
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    result = CliRunner().invoke(app, ["train", "--epochs", "1", "--train-subset", "100", "--device", "cpu", "--out",
                                      str(out), *flags])
    assert result.exit_code == 0, result.output
    (manifest,) = out.glob("train/*/manifest.json")
    return json.loads(manifest.read_text())["threads"]


def test_cli_threads_flag_env_and_default(tmp_path, no_thread_env, restore_threads):
    torch.set_num_threads(2)  # as torch starts on 2 cores: the CLI must bring it to the policy's count
    assert _cli_train_threads(tmp_path) == DEFAULT_THREADS == torch.get_num_threads()
    assert _cli_train_threads(tmp_path, "--threads", "2") == 2 == torch.get_num_threads()
    no_thread_env.setenv("ROBUSTCNN_THREADS", "3")
    assert _cli_train_threads(tmp_path) == 3 == torch.get_num_threads()
    bad = CliRunner().invoke(app, ["train", "--threads", "0", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1
