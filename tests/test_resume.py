"""One resumable engine: `study adversarial` and `benchmark` run their units (each trained model, each model x
attack over the epsilon grid, the lint) through the sweep store, so `kill -9` followed by the same command ends
with the tables of an uninterrupted run; a changed config never reuses a stale unit; `--workers 2` (spawned
workers, the study's thread count in each) trains and evaluates the very models a local run trains."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

# No thread count in the environment, one by flag: a spawned worker left to torch's default (a thread per core)
# would sum differently from the parent, so the study must hand its count to every worker.
ENV = {**{k: v for k, v in os.environ.items() if k not in ("ROBUSTCNN_DATA", "OMP_NUM_THREADS", "ROBUSTCNN_THREADS")},
       "PYTHONUNBUFFERED": "1"}
STUDY = ["study", "adversarial", "--device", "cpu", "--threads", "1", "-s", "data.train_subset=200",
         "-s", "models.0.train.epochs=1", "-s", "models.1.train.epochs=1",
         "-s", "models.1.train.adversarial.eval_examples=20", "-s", "evaluation.n_examples=40",
         "-s", "evaluation.epsilons=[0, 0.1]", "-s", "evaluation.lint_examples=20",
         "-s", 'evaluation.attacks=["fgsm", {name="pgd", steps=5}]', "-s", "evaluation.gallery=2"]
STUDY_UNITS = 8  # 2 models + 2 x (fgsm, pgd, lint)
TIMING = ("seconds", "eval_seconds", "train_seconds")  # wall-clock columns: the only ones a rerun may change


def robustcnn(args: list[str], out: Path, **kw) -> subprocess.Popen:
    env = {**ENV, "ROBUSTCNN_CACHE": str(out.parent / f"cache-{out.name}")}
    return subprocess.Popen([sys.executable, "-m", "robustcnn", *args, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]


def records(store: Path) -> dict[str, int]:
    """The store's finished units (their JSON records and weight files) -> mtime in ns."""
    return {p.name: p.stat().st_mtime_ns for p in store.glob("*") if p.suffix in (".json", ".pt")} if store.exists() else {}


def wait_for(proc: subprocess.Popen, store: Path, n: int) -> None:
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and sum(k.endswith(".json") for k in records(store)) < n:
        time.sleep(0.02)


def only_run(out: Path, kind: str) -> Path:
    (run,) = [p for p in (out / kind).iterdir() if not p.name.startswith(".")]  # a killed run's staging is hidden
    return run


def assert_same_tables(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        x, y = (pd.read_csv(run / "tables" / f"{name}.csv") for run in (a, b))
        drop = [c for c in x.columns if c in TIMING]
        pd.testing.assert_frame_equal(x.drop(columns=drop), y.drop(columns=drop), check_exact=True)


def assert_same_study(a: Path, b: Path) -> None:
    assert_same_tables(a, b, ["clean_accuracy", "robust_accuracy", "robust_samples", "lint", "attack_cost",
                              "history_lenet5", "history_lenet5-pgd"])
    ga, gb = np.load(a / "data" / "gallery.npz"), np.load(b / "data" / "gallery.npz")
    assert sorted(ga.files) == sorted(gb.files) and all(np.array_equal(ga[k], gb[k]) for k in ga.files)
    for name in ("lenet5-final.pt", "lenet5-pgd-final.pt"):  # the weights themselves, bit for bit
        sa, sb = (torch.load(run / "checkpoints" / name, weights_only=True) for run in (a, b))
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def clean_study(tmp_path_factory):
    """An uninterrupted local run, started at once and waited for only when a test compares with it."""
    out = tmp_path_factory.mktemp("clean") / "out"
    proc = robustcnn(STUDY, out)

    def folder() -> Path:
        if proc.returncode is None:
            finish(proc)
        return only_run(out, "adversarial")
    yield folder
    if proc.poll() is None:
        proc.kill()


@pytest.mark.slow
def test_kill_9_of_study_adversarial_then_the_same_command_resumes_to_the_same_tables(tmp_path, clean_study):
    out = tmp_path / "killed"
    store = out / ".sweep-store" / "adversarial"
    proc = robustcnn(STUDY, out)
    wait_for(proc, store, 3)  # both models and at least one attack stored
    proc.kill()
    proc.wait()
    stored = records(store)
    finished = sum(k.endswith(".json") for k in stored)
    assert 3 <= finished < STUDY_UNITS, stored  # killed in the middle ...
    assert [p for p in (out / "adversarial").iterdir() if not p.name.startswith(".")] == []  # ... before the end
    finish(robustcnn(STUDY, out))
    run = only_run(out, "adversarial")
    units = json.loads((run / "manifest.json").read_text())["units"]
    assert (units["models_resumed"], units["evaluation_units_resumed"]) == (2, finished - 2), units
    assert {k: v for k, v in records(store).items() if k in stored} == stored  # reused, not rewritten
    assert units["threads_per_unit"] == 1
    assert_same_study(run, clean_study())


@pytest.mark.slow
def test_sigterm_stops_a_workers_2_study_in_5_s_and_the_rerun_equals_a_local_run(tmp_path, clean_study):
    out = tmp_path / "workers"
    store = out / ".sweep-store" / "adversarial"
    args = [*STUDY, "--workers", "2"]
    proc = robustcnn(args, out, start_new_session=True)
    try:
        wait_for(proc, store, 1)
        finished = records(store)
        assert proc.poll() is None and finished, "nothing stored, or the run ended before the signal"
        start = time.time()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        stopped = time.time() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143 and stopped < 5, (proc.returncode, stopped, err[-2000:])
    assert err.strip().splitlines()[-1] == "robustcnn: interrupted (SIGTERM); the unfinished run folder was removed"
    assert "Traceback" not in err
    assert set(finished) <= set(records(store))
    assert_group_gone(proc.pid)
    finish(robustcnn(args, out))
    run = only_run(out, "adversarial")
    units = json.loads((run / "manifest.json").read_text())["units"]
    assert units["models_resumed"] >= 1, units
    # stopped while training (evaluations start after every model is trained): both evaluations ran in the
    # spawned workers, with the study's thread count, and the study's pass read their units back
    assert units["evaluated_by_workers"] == 2 and units["worker_processes"] >= 1 and units["worker_threads"] == [1], units
    assert (units["units_by_workers"], units["evaluation_units_resumed"]) == (STUDY_UNITS - 2, 0), units
    assert_same_study(run, clean_study())  # trained and evaluated in spawned workers: the local run's numbers
    shutil.rmtree(run)  # the same command once more: every unit is stored, nothing goes to a worker
    finish(robustcnn(args, out))
    units = json.loads((only_run(out, "adversarial") / "manifest.json").read_text())["units"]
    assert (units["evaluated_by_workers"], units["units_by_workers"], units["evaluation_units_resumed"]) == (
        0, 0, STUDY_UNITS - 2), units


def assert_group_gone(pgid: int) -> None:
    """No worker outlives the study: the group empties within 5 s (multiprocessing's resource tracker, a helper of
    spawned workers, ends when the study's pipe to it closes, and init reaps it a moment later)."""
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(subprocess.run(["ps", "-o", "pid,stat,args", "-g", str(pgid)], capture_output=True,
                                        text=True).stdout)


BENCH = ["benchmark", "lenet5", "--dataset", "digits", "--suite", "quick", "--attack-seeds", "3", "--n-examples", "150",
         "--eps", "0,0.1,0.2", "--device", "cpu", "--threads", "1"]
BENCH_UNITS = 7  # 3 seeds x (fgsm, pgd-40) + the lint


@pytest.mark.slow
def test_kill_9_of_benchmark_then_the_same_command_resumes_to_the_same_tables(tmp_path, trained_lenet):
    weights = tmp_path / "lenet5.pt"
    torch.save(trained_lenet.state_dict(), weights)
    args = [*BENCH, "--weights", str(weights)]
    clean = robustcnn(args, tmp_path / "clean")  # uninterrupted, meanwhile
    out = tmp_path / "killed"
    store = out / ".sweep-store" / "benchmark"
    proc = robustcnn(args, out)
    wait_for(proc, store, 2)
    proc.kill()
    proc.wait()
    stored = records(store)
    assert 2 <= len(stored) < BENCH_UNITS, stored
    assert not (out / "benchmark").exists() or [p for p in (out / "benchmark").iterdir()
                                                if not p.name.startswith(".")] == []
    finish(robustcnn(args, out))
    finish(clean)
    run = only_run(out, "benchmark")
    units = json.loads((run / "manifest.json").read_text())["units"]
    assert units == {"units": BENCH_UNITS, "resumed": len(stored)}, units
    assert {k: v for k, v in records(store).items() if k in stored} == stored
    assert_same_tables(run, only_run(tmp_path / "clean", "benchmark"),
                       ["robust_accuracy", "robust_samples", "lint", "preflight"])


# ------------------------------------------------------------------ in-process: stale units, damaged files, spawn
def tiny_study(**changes):
    from robustcnn.config import load_config
    from robustcnn.experiments.adversarial import AdversarialStudyConfig

    sets = {"models": '[{name="lenet5", train={epochs=1, batch_size=32}}]', "data.train_subset": "200",
            "evaluation.attacks": '["fgsm"]', "evaluation.epsilons": "[0, 0.1]", "evaluation.n_examples": "30",
            "evaluation.lint": "false", "evaluation.gallery": "0", "device": '"cpu"', **changes}
    return load_config(AdversarialStudyConfig, None, [f"{k}={v}" for k, v in sets.items()])


@pytest.mark.slow
def test_a_changed_config_recomputes_what_it_changes_and_reuses_the_rest(tmp_path):
    from robustcnn.experiments.adversarial import run_adversarial_study

    def run(cfg):
        path = run_adversarial_study(cfg, tmp_path, progress=False)
        units = json.loads((path / "manifest.json").read_text())["units"]
        return path, (units["models_resumed"], units["evaluation_units_resumed"])

    first, resumed = run(tiny_study())
    assert resumed == (0, 0)
    other_eps, resumed = run(tiny_study(**{"evaluation.epsilons": "[0, 0.2]"}))
    assert resumed == (1, 0)  # the same model; its attack over another grid is new
    robust = pd.read_csv(other_eps / "tables" / "robust_accuracy.csv")
    assert sorted(set(robust["epsilon"])) == [0.0, 0.2]
    _, resumed = run(tiny_study(models='[{name="lenet5", train={epochs=2, batch_size=32}}]'))
    assert resumed == (0, 0)  # another training: a new model, so new attacks too
    again, resumed = run(tiny_study())
    assert resumed == (1, 1)  # the first config once more: all of it from the store
    assert_same_tables(first, again, ["robust_accuracy", "robust_samples", "clean_accuracy", "history_lenet5"])


TWO_MODELS = ('[{name="lenet5", train={epochs=1, batch_size=32}}, '
              '{name="lenet5-b", arch="lenet5", train={epochs=1, batch_size=64}}]')


@pytest.mark.slow
def test_workers_compute_only_the_evaluation_units_a_resumed_study_lacks(tmp_path):
    """An attack added to a finished study, run with 2 workers: each worker reads its model's stored attack
    from the study's store and computes only the new attack and the lint (which names the attacks)."""
    from robustcnn.experiments.adversarial import run_adversarial_study

    def units(**changes) -> dict:
        path = run_adversarial_study(tiny_study(models=TWO_MODELS, **{"evaluation.lint": "true",
                                                                      "evaluation.lint_examples": "10", **changes}),
                                     tmp_path, progress=False)
        return json.loads((path / "manifest.json").read_text())["units"]

    first = units()
    assert (first["models"], first["evaluation_units"], first["evaluation_units_resumed"]) == (2, 4, 0), first
    more = units(**{"evaluation.attacks": '["fgsm", {name="pgd", steps=3}]', "workers": "2"})
    assert more["evaluated_by_workers"] == 2 and more["worker_processes"] >= 1, more
    assert (more["units_by_workers"], more["evaluation_units_resumed"]) == (4, 2), more  # pgd + lint; fgsm read


def test_a_worker_that_sees_other_examples_or_outputs_refuses_before_computing(tmp_path, monkeypatch):
    """The study hands each evaluation job the examples' fingerprint and the model's logits on 16 of them; a
    worker whose data or model differ (another node's files) refuses in one line instead of computing units the
    study's pass would not find."""
    import copy

    from robustcnn.errors import UsageError
    from robustcnn.experiments import adversarial

    jobs = []

    def capture(job_list, fn, store, probes, **kw) -> dict:
        jobs.extend(job_list)
        return {"evaluated_by_workers": 0, "units_by_workers": 0, "worker_processes": 0, "worker_threads": []}

    monkeypatch.setattr(adversarial, "spread_units", capture)
    adversarial.run_adversarial_study(tiny_study(models=TWO_MODELS, workers="2"), tmp_path, progress=False)
    job = {**jobs[0], "store": None}  # a node without the study's store folder (the pass above filled it)
    assert len(adversarial.evaluation_job(job)["records"]) == 1  # as handed over: it computes the model's unit
    other_logits, other_examples = copy.deepcopy(job), copy.deepcopy(job)
    other_logits["check"]["logits"][3][1] += 0.01
    other_examples["check"]["examples"] = "0" * len(job["check"]["examples"])
    for bad in (other_logits, other_examples):
        with pytest.raises(UsageError, match="a worker sees other test examples or gets other outputs"):
            adversarial.evaluation_job(bad)


def test_damaged_or_missing_weights_beside_a_record_are_recomputed_with_a_warning(tmp_path):
    from robustcnn.errors import RobustcnnWarning
    from robustcnn.units import BlobStore

    store = BlobStore(tmp_path)
    store.put("abc", {"value": 1, "blobs": {"final": b"weights"}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.get("abc") == {"value": 1, "blobs": {"final": b"weights"}}
    store.blob_path("abc", "final").write_bytes(b"weightZ")
    with pytest.warns(RobustcnnWarning, match="missing or damaged"):
        assert store.get("abc") is None
    store.blob_path("abc", "final").unlink()
    with pytest.warns(RobustcnnWarning, match="missing or damaged"):
        assert store.get("abc") is None


def fresh_interpreter(point: dict) -> dict:
    """Run in a worker: is the parent's study module already loaded (a forked copy) or not (a spawned one)?"""
    return {"inherited": "robustcnn.experiments.adversarial" in sys.modules}


@pytest.mark.slow
def test_sweep_workers_are_spawned_not_forked():
    import robustcnn.experiments.adversarial  # noqa: F401  (loaded here, so a forked worker would have it)
    from robustcnn.sweep import run_sweep

    done = run_sweep([{"i": 0}, {"i": 1}], fresh_interpreter, workers=2)
    assert [r["inherited"] for r in done] == [False, False]


def test_an_evaluation_unit_is_not_reused_for_other_examples_of_the_same_count(trained_lenet, digits28, tmp_path):
    """Same model, attacks, epsilons and n: only the test images differ (a changed data file, another subset). The
    stored attack must not be reused, and the robust accuracy must be that of the new images, counted here."""
    import dataclasses

    from robustcnn.evaluation import evaluate_model
    from robustcnn.sweep import SweepStore
    from robustcnn.units import Units

    n = 40
    other = dataclasses.replace(digits28, x_test=digits28.x_test.flip(0), y_test=digits28.y_test.flip(0))
    store = SweepStore(tmp_path / "store")
    kw = dict(name="m", attacks=["fgsm"], epsilons=[0.0, 0.3], n_examples=n, lint=False, clean_splits=("test",))
    first = Units(store)
    evaluate_model(trained_lenet, digits28, units=first, **kw)
    again = Units(store)
    evaluate_model(trained_lenet, digits28, units=again, **kw)
    assert again.counts["resumed"] == again.counts["units"] > 0     # the same images: every unit reused
    fresh = Units(store)
    ev = evaluate_model(trained_lenet, other, units=fresh, **kw)
    assert fresh.counts["resumed"] == 0
    with torch.no_grad():
        clean = (trained_lenet(other.x_test[:n]).argmax(1) == other.y_test[:n]).float().mean().item()
    at0 = ev.robust[(ev.robust["attack"] == "fgsm") & (ev.robust["epsilon"] == 0.0)]["robust_accuracy"].item()
    assert at0 == pytest.approx(clean)


def test_a_stored_table_reads_back_exactly_with_its_dtypes(tmp_path):
    """A unit's DataFrame is stored as a frame_record and read back (as_frame) equal to the original, dtypes and
    NaNs included, through the JSON on disk; the run that computed it gets the DataFrame itself."""
    from robustcnn.sweep import SweepStore
    from robustcnn.units import Units, as_frame

    n = 7
    table = pd.DataFrame({"index": range(n), "label": np.arange(n, dtype=np.int64) % 3, "attack": "pgd",
                          "correct": np.arange(n) % 2 == 0, "norm": (np.arange(n) / 7).astype(np.float32),
                          "l2": np.where(np.arange(n) % 3 == 0, np.nan, np.arange(n) / 3),
                          "kind": pd.Categorical(["a", "b"] * 3 + ["a"])})
    units = Units(SweepStore(tmp_path))
    fresh = units({"unit": "t"}, lambda: {"samples": table})
    assert fresh["samples"] is table and not fresh["resumed"]
    again = units({"unit": "t"}, lambda: pytest.fail("a stored unit was computed again"))
    assert again["resumed"]
    pd.testing.assert_frame_equal(as_frame(again["samples"]), table, check_exact=True)
    assert as_frame(again["samples"]).dtypes.to_dict() == table.dtypes.to_dict()


def test_a_study_without_its_own_image_size_keeps_the_train_unit_ids_of_before():
    """model_point adds `image_size` only for studies that resize every model's data (lineage, invariance), so
    the adversarial study's stored models stay valid; the size, when given, changes the id."""
    from robustcnn.experiments.common import DataSpec, ModelSpec, model_point
    from robustcnn.sweep import point_id

    spec, data = ModelSpec("lenet5"), DataSpec()
    plain = model_point(spec, data, seed=0, device=torch.device("cpu"), threads=1)
    assert "image_size" not in plain
    assert set(plain) == {"unit", "model", "data", "seed", "device", "threads"}
    sized = model_point(spec, data, seed=0, device=torch.device("cpu"), threads=1, image_size=28)
    assert point_id(sized) != point_id(plain)
