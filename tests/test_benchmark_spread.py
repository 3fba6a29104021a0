"""`benchmark --workers N` / `--executor ray` (robustcnn.benchmark_spread): the attack units (attack x seed) are
computed in other processes and the scorecard is a local run's, bit for bit; a resumed benchmark sends out only
what is not stored; a worker that builds another model than the benchmark's is refused; settings a worker cannot
follow get one line."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from robustcnn.benchmark import benchmark
from robustcnn.cli import app
from robustcnn.errors import UsageError

SETTINGS = dict(dataset="digits", suite="quick", epsilons=[0.0, 0.1], n_examples=60, attack_seeds=2, device="cpu")
THREADS = 3  # neither 1 nor this machine's core count: a worker that does not take the benchmark's count shows
JOBS = 4  # 2 seeds x (fgsm, pgd-40)


@pytest.fixture(scope="module", autouse=True)
def benchmark_threads():
    """The benchmarks here run with THREADS CPU threads, which each worker must take from them (a spawned
    worker's own default is one thread per core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def weights(trained_lenet, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "lenet5.pt"
    torch.save(trained_lenet.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def local_card(weights, tmp_path_factory):
    return benchmark("lenet5", weights=weights, store=tmp_path_factory.mktemp("local"), **SETTINGS)


def same_numbers(a, b) -> None:
    for table in ("robust", "samples", "lint"):
        pd.testing.assert_frame_equal(getattr(a, table), getattr(b, table), check_exact=True)
    assert a.clean_accuracy == b.clean_accuracy and a.weights_hash == b.weights_hash


@pytest.mark.slow
def test_workers_compute_the_attack_units_and_the_scorecard_is_the_local_one(weights, local_card, tmp_path):
    card = benchmark("lenet5", weights=weights, store=tmp_path, workers=2, **SETTINGS)
    assert card.units["computed_by_workers"] == JOBS and 1 <= card.units["worker_processes"] <= 2, card.units
    assert card.units["worker_threads"] == [THREADS], card.units
    assert card.units["resumed"] == 0 and card.units["units"] == JOBS + 1  # + the lint, run here
    same_numbers(card, local_card)
    # the same benchmark again: every unit is stored, nothing goes to the workers
    again = benchmark("lenet5", weights=weights, store=tmp_path, workers=2, **SETTINGS)
    assert again.units["computed_by_workers"] == 0 and again.units["resumed"] == JOBS + 1, again.units
    same_numbers(again, local_card)


@pytest.mark.slow
def test_a_resumed_benchmark_sends_out_only_the_units_it_lacks(weights, local_card, tmp_path):
    one_seed = benchmark("lenet5", weights=weights, store=tmp_path, **{**SETTINGS, "attack_seeds": 1})
    assert one_seed.units["resumed"] == 0
    card = benchmark("lenet5", weights=weights, store=tmp_path, workers=2, **SETTINGS)
    assert card.units["computed_by_workers"] == JOBS - 2, card.units  # seed 0's fgsm and pgd were stored
    assert card.units["resumed"] == 3  # those two and the lint
    same_numbers(card, local_card)


@pytest.mark.slow
def test_ray_computes_the_same_scorecard(weights, local_card, tmp_path):
    pytest.importorskip("ray")
    card = benchmark("lenet5", weights=weights, store=tmp_path, executor="ray", **SETTINGS)
    assert card.units["computed_by_workers"] == JOBS and card.units["worker_processes"] >= 1, card.units
    same_numbers(card, local_card)


FACTORY = '''
import torch.nn as nn

def tiny(channels=1, classes=10, hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * 28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, classes))
'''


@pytest.mark.slow
def test_a_factory_with_arguments_and_a_relative_weights_file_through_the_cli(tmp_path, monkeypatch):
    """`robustcnn benchmark file.py:factory --model-arg ... --weights <relative> --workers 2`: the workers build the
    factory's model with its arguments (another `hidden` would not even load the weights) and the scorecard is
    the local run's."""
    import json

    import torch.nn as nn

    (tmp_path / "factory.py").write_text(FACTORY)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 10))
    torch.save(net.state_dict(), tmp_path / "tiny.pt")
    monkeypatch.chdir(tmp_path)
    args = ["benchmark", "factory.py:tiny", "--model-arg", "hidden=8", "--weights", "tiny.pt", "--dataset", "digits",
            "--image-size", "28", "--suite", "quick", "--eps", "0,0.1", "--n-examples", "40", "--device", "cpu",
            "--threads", str(THREADS)]
    runner = CliRunner()
    tables = {}
    for out, extra in (("local", []), ("spread", ["--workers", "2"])):
        result = runner.invoke(app, [*args, *extra, "--out", out])
        assert result.exit_code == 0, result.output
        (run,) = (tmp_path / out / "benchmark").iterdir()
        tables[out] = pd.read_csv(run / "tables" / "robust_accuracy.csv")
        units = json.loads((run / "manifest.json").read_text())["units"]
    assert units["computed_by_workers"] == 2 and units["worker_processes"] >= 1, units  # fgsm and pgd, elsewhere
    pd.testing.assert_frame_equal(tables["local"], tables["spread"], check_exact=True)


RANDOM_FACTORY = '''
import torch.nn as nn

def fresh(channels=1, classes=10):  # a new random initialisation in every process
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * 28 * 28, classes))
'''


@pytest.mark.slow
def test_a_worker_that_builds_other_weights_is_refused(tmp_path):
    path = tmp_path / "fresh.py"
    path.write_text(RANDOM_FACTORY)
    with pytest.raises(UsageError, match="other weights than the benchmark's"):
        benchmark(f"{path}:fresh", image_size=28, workers=2, lint=False, **{**SETTINGS, "attack_seeds": 1})


def test_objects_cannot_go_to_workers_and_bad_settings_are_one_line(tmp_path, digits28):
    with pytest.raises(UsageError, match="name the model"):
        benchmark(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), image_size=28, workers=2,
                  **{**SETTINGS, "dataset": "digits"})
    with pytest.raises(UsageError, match="name the model"):
        benchmark("lenet5", untrained=True, workers=2, **{**SETTINGS, "dataset": (digits28.x_test, digits28.y_test)})
    with pytest.raises(UsageError, match="unknown executor 'spark'"):
        benchmark("lenet5", untrained=True, executor="spark", **SETTINGS)
    with pytest.raises(UsageError, match="--untrained scores a random initialisation"):
        benchmark("lenet5", untrained=True, workers=2, **SETTINGS)
    with pytest.raises(UsageError, match="names a Ray cluster: pass it with --executor ray"):
        benchmark("lenet5", untrained=True, address="127.0.0.1:6379", **SETTINGS)
    for workers in (True, 2.0, 0):  # True is an int to Python, and would mean one worker
        with pytest.raises(UsageError, match=f"workers must be a whole number >= 1, got {workers!r}"):
            benchmark("lenet5", untrained=True, workers=workers, **SETTINGS)
    runner = CliRunner()
    for args, message in ((["--executor", "spark"], "unknown executor 'spark'"), (["--workers", "0"], "--workers")):
        result = runner.invoke(app, ["benchmark", "lenet5", "--untrained", "--dataset", "digits", *args, "--out",
                                     str(tmp_path / "out")])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
