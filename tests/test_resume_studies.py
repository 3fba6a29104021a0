"""`study lineage` and `study invariance` train their models as units through the sweep store, as the adversarial
study does (tests/test_resume.py): `kill -9` then the same command ends with the tables of an uninterrupted run
and trains only what was not finished; `--workers 2` (spawned workers) trains the very models a local run trains.
Real processes, tiny configs on the embedded digits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_resume import assert_same_tables, finish, only_run, records, robustcnn, wait_for

EPOCHS = [f"models.{i}.train.epochs=1" for i in range(4)]
LINEAGE = ["study", "lineage", "--device", "cpu", "--threads", "1", "--quiet",
           *[a for s in ["data.train_subset=100", *EPOCHS, "evaluation.n_examples=20", "evaluation.lint_examples=10",
                         "evaluation.epsilons=[0, 0.1]", 'evaluation.attacks=["fgsm", {name="pgd", steps=5}]',
                         "anatomy_index=-1", "checkpoints=false"] for a in ("-s", s)]]
LINEAGE_UNITS = 16  # 4 models + 4 x (fgsm, pgd, lint)
LINEAGE_TABLES = ["lineage", "clean_accuracy", "robust_accuracy", "lint", "attack_cost", "history_perceptron",
                  "history_neocognitron", "history_lenet5", "history_lenet5_1998"]
INVARIANCE = ["study", "invariance", "--device", "cpu", "--threads", "1", "--quiet",
              *[a for s in ["data.train_subset=100", *EPOCHS, "evaluation.n_examples=20", "evaluation.grid_steps=3",
                            "evaluation.worst_of=2", "evaluation.shift_grid=1", 'evaluation.corruptions=["shot_noise"]',
                            "evaluation.severities=[1]", "checkpoints=false"] for a in ("-s", s)]]
INVARIANCE_TABLES = ["clean_accuracy", "transform_accuracy", "consistency", "shift_grid", "corruption_accuracy",
                     "claims", "history_mlp", "history_lenet5", "history_lenet5_1998", "history_cnn5"]


def units_of(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())["units"]


def train_records(out: Path, study: str) -> list[dict]:
    stored = [json.loads(p.read_text()) for p in (out / ".sweep-store" / study).glob("*.json")]
    return [r for r in stored if "history" in r]


def trainers(out: Path, study: str = "invariance") -> set[int]:
    """The processes that trained the stored models (each train unit's record names its pid)."""
    return {r["pid"] for r in train_records(out, study)}


@pytest.fixture(scope="module")
def clean_lineage(tmp_path_factory) -> Path:
    """An uninterrupted run whose models train in 2 spawned workers (the killed run below trains here: the tables
    must agree all the same)."""
    out = tmp_path_factory.mktemp("clean-lineage") / "out"
    proc = robustcnn([*LINEAGE, "--workers", "2"], out)
    finish(proc)
    assert proc.pid not in trainers(out, "lineage")
    return only_run(out, "lineage")


@pytest.mark.slow
def test_kill_9_of_study_lineage_then_the_same_command_resumes_to_the_same_tables(tmp_path, clean_lineage):
    out = tmp_path / "killed"
    store = out / ".sweep-store" / "lineage"
    proc = robustcnn(LINEAGE, out)
    wait_for(proc, store, 2)  # two of the four models trained
    proc.kill()
    proc.wait()
    stored = records(store)
    finished = sum(k.endswith(".json") for k in stored)
    assert 2 <= finished < LINEAGE_UNITS, stored
    assert not (out / "lineage").exists() or [p for p in (out / "lineage").iterdir() if not p.name.startswith(".")] == []
    finish(robustcnn(LINEAGE, out))
    run = only_run(out, "lineage")
    units = units_of(run)
    assert units["models"] == 4 and units["models_resumed"] == min(finished, 4), (units, finished)
    assert units["evaluation_units_resumed"] == max(finished - 4, 0), (units, finished)
    assert {k: v for k, v in records(store).items() if k in stored} == stored  # reused, not rewritten
    assert_same_tables(run, clean_lineage, LINEAGE_TABLES)
    # a third run computes nothing: every model and evaluation comes from the store
    finish(robustcnn(LINEAGE, out))
    third = [p for p in (out / "lineage").iterdir() if not p.name.startswith(".") and p != run]
    assert len(third) == 1 and units_of(third[0])["models_resumed"] == 4
    assert units_of(third[0])["evaluation_units_resumed"] == LINEAGE_UNITS - 4


@pytest.mark.slow
def test_study_invariance_trains_in_2_spawned_workers_the_models_a_local_run_trains_and_resumes_them(tmp_path):
    local, spread = tmp_path / "local", tmp_path / "workers"
    args = [a if a != "1" else "3" for a in INVARIANCE]  # --threads 3: neither 1 nor a worker's own default here
    here, there = robustcnn(args, local), robustcnn([*args, "--workers", "2"], spread)
    finish(here)
    finish(there)
    a, b = only_run(local, "invariance"), only_run(spread, "invariance")
    assert units_of(a)["models_resumed"] == units_of(b)["models_resumed"] == 0
    assert trainers(local) == {here.pid}  # trained in the run's own process ...
    assert there.pid not in trainers(spread) and len(trainers(spread)) <= 2  # ... and in spawned workers
    assert {r["threads"] for out in (local, spread) for r in train_records(out, "invariance")} == {3}
    assert_same_tables(a, b, INVARIANCE_TABLES)
    finish(robustcnn(args, local))  # the same command again: no model is trained
    rerun = [p for p in (local / "invariance").iterdir() if not p.name.startswith(".") and p != a]
    assert len(rerun) == 1 and units_of(rerun[0])["models_resumed"] == 4
    assert_same_tables(rerun[0], a, INVARIANCE_TABLES)
