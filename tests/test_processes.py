"""Real processes: runs started in the same second share nothing, and a --workers sweep stopped by SIGTERM or
Ctrl-C (SIGINT to the process group) exits within 5 s with 143/130, its one "interrupted" line, its finished
points kept and no worker left behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# the CLI with a frozen clock: both runs see the same second, the case that used to share one staging folder
FROZEN_CLI = """
import datetime, sys
import robustcnn.results as results
class Frozen(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.datetime(2026, 1, 1, 12, 0, 0)
results.datetime = Frozen
from robustcnn.cli import app
app(prog_name="robustcnn", args=sys.argv[1:])
"""


def robustcnn(*args: str) -> list[str]:
    return [sys.executable, "-m", "robustcnn", *args]


@pytest.mark.slow
def test_two_runs_in_the_same_second_in_the_same_out_both_complete(tmp_path):
    out = tmp_path / "out"
    train = ["train", "--epochs", "2", "-s", "data.train_subset=60", "--device", "cpu", "--out", str(out)]
    procs = [subprocess.Popen([sys.executable, "-c", FROZEN_CLI, *train, "--seed", str(seed)], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (0, 1)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    runs = sorted((out / "train").iterdir())
    assert len(runs) == 2 and all(r.name.startswith("20260101-120000-") for r in runs), runs  # none hidden/partial
    seeds = sorted(json.loads((r / "manifest.json").read_text())["seed"] for r in runs)
    assert seeds == [0, 1]
    for run in runs:
        assert (run / "tables" / "history.csv").is_file() and (run / "report.md").is_file()


SWEEP = ["study", "memorization", "--workers", "2", "--device", "cpu", "-s", "data.train_subset=300",
         "-s", "model.kwargs.width=64", "-s", "model.train.epochs=300",
         "-s", "variants=[" + ", ".join(f'{{name="noise {p}", label_noise={p}}}' for p in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0))
         + "]"]


@pytest.mark.slow
@pytest.mark.parametrize("how,code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_stopped_worker_sweep_ends_within_5_s_and_keeps_finished_points(tmp_path, how, code):
    out = tmp_path / "out"
    store = out / ".sweep-store" / "memorization"
    proc = subprocess.Popen(robustcnn(*SWEEP, "--out", str(out)), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None and not list(store.glob("*.json")):
            time.sleep(0.05)
        finished = {p.name for p in store.glob("*.json")}
        assert proc.poll() is None and 1 <= len(finished) < 6, finished  # stopped in the middle
        start = time.time()
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)  # `kill`: the parent only
        else:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole process group, workers included
        _, err = proc.communicate(timeout=60)
        stopped = time.time() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, err
    assert stopped < 5, f"took {stopped:.1f} s to stop"
    said = [line for line in err.strip().splitlines() if not line.startswith("robustcnn: [")]  # progress lines aside
    assert said == [f"robustcnn: interrupted ({how}); the unfinished run folder was removed"]
    kept = {p.name for p in store.glob("*.json")}
    assert finished <= kept and all(isinstance(json.loads((store / n).read_text()), dict) for n in kept)
    assert not (out / "memorization").exists()  # no staging folder, no empty <kind>/ folder
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):  # no worker outlived the sweep
        os.killpg(proc.pid, 0)


@pytest.mark.slow
def test_an_interrupted_train_run_exits_143_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(robustcnn("train", "--epochs", "1000", "-s", "data.train_subset=200", "--device", "cpu",
                                      "--out", str(out)), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None and not list(out.glob("train/.*.partial")):
        time.sleep(0.05)
    assert proc.poll() is None and list(out.glob("train/.*.partial"))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    said = [line for line in err.strip().splitlines() if not line.startswith("robustcnn: [")]  # progress lines aside
    assert proc.returncode == 143 and "interrupted (SIGTERM)" in err and len(said) == 1, err
    assert not out.exists() or list(out.rglob("*")) == []


def test_help_does_not_import_torch():
    code = ("import sys; sys.argv = ['robustcnn', '--help']\nfrom robustcnn.cli import app\n"
            "try:\n    app(prog_name='robustcnn')\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, 'imported'")
    result = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Usage" in result.stdout, result.stderr


def test_import_robustcnn_has_no_side_effects():
    code = """
import sys, matplotlib
backend, params = matplotlib.get_backend(), dict(matplotlib.rcParams)
import robustcnn as rc
assert 'torch' not in sys.modules
import robustcnn.report, robustcnn.train, robustcnn.benchmark  # submodules stay modules ...
assert type(rc.report).__name__ == type(rc.train).__name__ == type(rc.benchmark).__name__ == 'module'
assert callable(rc.redraw_report) and callable(rc.train_model) and callable(rc.benchmark_model)
assert matplotlib.get_backend() == backend and dict(matplotlib.rcParams) == params  # ... and plotting is untouched
"""
    result = subprocess.run([sys.executable, "-c", code], env={**ENV, "MPLBACKEND": "svg"}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
