"""Sweep engine and generalization studies: peaks, RFF, resume after a crash, executors agree."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from robustcnn.data import Randomization, randomize
from robustcnn.experiments import generalization as gen
from robustcnn.experiments.common import DataSpec, ModelSpec
from robustcnn.experiments.generalization import RFFSweep, SweepStudy, SweepStudyConfig, Variant, run_sweep_study
from robustcnn.peaks import EPOCH_MIN_WIDTH, NO_PEAK, find_peak, peaks_table, point_standard_error
from robustcnn.rff import min_norm_fit, rff_features
from robustcnn.sweep import SweepStore, point_id, run_sweep
from robustcnn.train import TrainConfig


def square(point: dict) -> dict:
    return {"value": point["x"] ** 2}


# ------------------------------------------------------------------ peaks with a noise model
def binomial_se(p, n):
    """The test-set term alone, written out: sqrt(p (1 - p) / n)."""
    return np.sqrt(np.asarray(p) * (1 - np.asarray(p)) / n)


def test_point_standard_error_combines_seed_spread_and_test_set_size():
    # two seeds at 0.09 and 0.11 (sample sd 0.01414), mean 0.10, 500 test images: 0.0002 / 2 + 0.09 / 500
    se = point_standard_error([0.10], [np.std([0.09, 0.11], ddof=1)], [2], 500)
    assert se[0] == pytest.approx(np.sqrt(0.0001 + 0.00018), rel=1e-9)


def test_a_real_double_descent_peak_is_found_with_its_margin():
    x = [1, 2, 4, 8, 16, 32, 64]
    test = [0.30, 0.20, 0.25, 0.45, 0.22, 0.15, 0.12]
    train = [0.25, 0.10, 0.05, 0.0, 0.0, 0.0, 0.0]
    se = binomial_se(test, 500)
    p = find_peak(x, test, train, se=se)
    assert p.significant and p.peak_at == 8 and p.peak_test_error == 0.45
    assert p.left_min_test_error == 0.20 and p.right_min_test_error == 0.12
    assert p.interpolation_threshold == 8
    assert p.peak_height == pytest.approx(0.25)  # above the higher side minimum (0.20)
    assert p.peak_se == pytest.approx(np.hypot(se[3], se[1]))
    assert p.peak_z > 2


@pytest.mark.parametrize("bump,found", [(0.027, False), (0.030, True)])
def test_a_bump_counts_only_beyond_two_standard_errors(bump, found):
    """Every point has SE 0.01, so a difference has SE 0.01414 and 2 SE = 0.0283."""
    test = [0.30, 0.20, 0.20 + bump, 0.15, 0.12]
    p = find_peak(range(5), test, se=0.01)
    assert p.significant is found and (p.peak_at == 2 if found else p.peak_at is None)
    assert p.candidate_at == 2 and p.peak_height == pytest.approx(bump)


def test_a_bump_inside_the_test_set_noise_is_not_a_peak():
    # 0.03 above both sides looks like a peak, but 500 test images give each point SE ~0.018 (2 SE ~0.05)
    test = [0.30, 0.20, 0.23, 0.15, 0.12]
    p = find_peak([1, 2, 4, 8, 16], test, se=binomial_se(test, 500))
    assert p.peak_at is None and not p.significant and p.candidate_at == 4 and p.peak_z < 2
    assert find_peak([1, 2, 4, 8, 16], test, se=binomial_se(test, 100_000)).peak_at == 4  # a big test set resolves it


def epoch_curve(events: dict[range, float], epochs: int = 120, floor: float = 0.10) -> np.ndarray:
    """A learning curve falling to `floor` by epoch 20, with the given epochs overwritten."""
    y = np.maximum(floor, 0.9 - 0.04 * np.arange(epochs))
    for span, value in events.items():
        y[list(span)] = value
    return y


def test_a_single_epoch_spike_is_not_an_epoch_wise_peak():
    y = epoch_curve({range(60, 61): 0.30})  # 0.20 above the floor: 7 SE, but for one epoch only
    se = binomial_se(y, 500)
    assert find_peak(range(len(y)), y, se=se, min_width=EPOCH_MIN_WIDTH).peak_at is None
    assert find_peak(range(len(y)), y, se=se, min_width=1).peak_at == 60  # the width rule is what rejects it


def test_a_sustained_epoch_wise_peak_is_found():
    y = epoch_curve({range(40, 70): 0.18, range(55, 56): 0.19, range(70, 120): 0.12})
    p = find_peak(range(len(y)), y, se=binomial_se(y, 500), min_width=EPOCH_MIN_WIDTH)
    assert p.significant and p.peak_at == 55 and p.raised_width == 30
    assert p.left_min_test_error == pytest.approx(0.10) and p.right_min_test_error == pytest.approx(0.12)


def test_one_epoch_dips_do_not_lower_the_side_minima():
    # plateau 0.15 with a one-epoch dip to 0.05 on each side of a mild rise to 0.17 (within noise of 0.15)
    y = epoch_curve({range(20, 120): 0.15, range(30, 31): 0.05, range(50, 70): 0.17, range(100, 101): 0.05})
    p = find_peak(range(len(y)), y, se=binomial_se(y, 500), min_width=EPOCH_MIN_WIDTH)
    assert p.peak_at is None and p.left_min_test_error == pytest.approx(0.15)


@pytest.mark.parametrize("curve", [[0.5, 0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.2, 0.2, 0.2, 0.2],
                                   [0.3, 0.2, 0.205, 0.1]])
def test_no_peak_on_monotone_flat_or_tiny_wiggles(curve):
    assert find_peak(range(len(curve)), curve, se=binomial_se(curve, 500)).peak_at is None


def test_peaks_table_uses_the_spread_over_seeds():
    """Two seeds agree on a bump (a peak), or one seed alone makes it (the same mean, but no peak)."""
    x, base = [1, 2, 4, 8, 16], [0.30, 0.15, 0.25, 0.12, 0.10]

    def points(seed_errors):
        return pd.DataFrame([{"sweep": "model-wise", "x": xi, "seed": s, "test_error": e, "train_error": 0.0}
                             for s, errors in enumerate(seed_errors) for xi, e in zip(x, errors)])

    agree = peaks_table(points([base, base]), None, n_test=2000)
    split = peaks_table(points([[0.30, 0.15, 0.35, 0.12, 0.10], [0.30, 0.15, 0.15, 0.12, 0.10]]), None, n_test=2000)
    assert agree.loc[0, "significant"] and agree.loc[0, "peak_at"] == 4
    assert agree.loc[0, "peak_test_error"] == split.loc[0, "peak_test_error"] == pytest.approx(0.25)
    assert not split.loc[0, "significant"] and pd.isna(split.loc[0, "peak_at"])
    assert split.loc[0, "verdict"] == NO_PEAK and split.loc[0, "seeds"] == 2 and split.loc[0, "n_test"] == 2000


def test_the_report_says_no_peak_instead_of_marking_noise(tmp_path):
    from robustcnn.report import plot_sweep_curves, report_sweep

    x, test = [1, 2, 4, 8, 16], [0.30, 0.20, 0.23, 0.15, 0.12]
    per_point = pd.DataFrame({"sweep": "model-wise", "x": x, "seed": 0, "test_error": test, "train_error": 0.0})
    peaks = peaks_table(per_point, None, n_test=500)
    summary = pd.DataFrame({"sweep": "model-wise", "variant": [f"width={k}" for k in x], "x": x,
                            "test_error_mean": test, "test_error_std": 0.0, "train_error_mean": 0.0,
                            "train_error_std": 0.0, "seeds": "0"})
    fig = plot_sweep_curves(summary, peaks, None, None)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert NO_PEAK in fig.axes[0].get_title() and not any(label.startswith("peak") for label in labels)
    (tmp_path / "tables").mkdir()
    summary.to_csv(tmp_path / "tables" / "summary.csv", index=False)
    peaks.to_csv(tmp_path / "tables" / "peaks.csv", index=False)
    summary[["sweep", "variant", "x"]].assign(train_seconds=1.0).to_csv(tmp_path / "tables" / "point_cost.csv")
    assert f"**model-wise**: {NO_PEAK}" in report_sweep(tmp_path)


@pytest.mark.parametrize("n_features", [40, 100, 250])  # fewer, as many as, and more features than examples
def test_rff_min_norm_solution_agrees_with_numpy_lstsq(n_features):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 8)), np.eye(3)[rng.integers(0, 3, 100)]
    phi = rff_features(x, n_features, sigma=2.0, seed=1)
    ours, theirs = min_norm_fit(phi, y), np.linalg.lstsq(phi, y, rcond=None)[0]
    assert np.allclose(ours, theirs, atol=1e-6)
    assert np.array_equal(phi, rff_features(x, n_features, sigma=2.0, seed=1))


def test_corruptions():
    x = torch.rand(5, 1, 6, 6)
    shuffled = randomize(x, Randomization.SHUFFLED_PIXELS, seed=0)
    assert torch.equal(shuffled.flatten(1).sort(1).values, x.flatten(1).sort(1).values)  # a permutation of each image
    assert not torch.equal(shuffled, x)
    assert torch.equal(shuffled, randomize(x, Randomization.SHUFFLED_PIXELS, seed=0))
    noise = randomize(x, Randomization.RANDOM_PIXELS, seed=0)
    assert noise.shape == x.shape and 0 <= noise.min() and noise.max() <= 1 and not torch.equal(noise, x)


def test_sweep_store_skips_finished_points(tmp_path):
    points = [{"x": i} for i in range(5)]
    store = SweepStore(tmp_path)
    first = run_sweep(points, square, store=store)
    again = run_sweep(points, square, store=store)
    assert [r["value"] for r in again] == [0, 1, 4, 9, 16] and all(r["resumed"] for r in again)
    assert not any(r["resumed"] for r in first)
    assert point_id({"a": 1, "b": 2}) == point_id({"b": 2, "a": 1}) != point_id({"a": 1, "b": 3})


def test_process_workers_agree_with_sequential(tmp_path):
    points = [{"x": i} for i in range(6)]
    assert [r["value"] for r in run_sweep(points, square, workers=2)] == [r["value"] for r in run_sweep(points, square)]


def test_ray_and_local_executors_agree():
    pytest.importorskip("ray")
    from robustcnn.rff import rff_sweep_point  # importable by Ray's workers (a test module is not)

    points = [{"x": [[0.1 * i, 0.2], [0.3, 0.4 * i], [0.5, 0.6]], "y": [0, 1, 0], "features": 2 + i, "seed": i}
              for i in range(3)]
    on_ray = run_sweep(points, rff_sweep_point, executor="ray")
    local = run_sweep(points, rff_sweep_point)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("point_seconds", "resumed")} for r in rs]  # noqa: E731
    assert strip(on_ray) == strip(local)
    import ray

    assert ray.is_initialized() is False  # the executor shut down the instance it started


TINY = SweepStudyConfig(
    study=SweepStudy.DOUBLE_DESCENT, data=DataSpec("digits", train_subset=200, label_noise=0.2),
    model=ModelSpec("mlp", train=TrainConfig(epochs=3, batch_size=64)), widths=[2, 8, 32], train_sizes=[100, 200],
    sample_width=8, rff=RFFSweep(features=[50, 200, 400], train_size=200))

STABLE = ["points", "summary", "history", "peaks", "rff"]


def tables(run_dir) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(run_dir / "tables" / f"{name}.csv") for name in STABLE}


def test_a_crashed_sweep_resumes_to_identical_tables(tmp_path, monkeypatch):
    clean = tables(run_sweep_study(TINY, tmp_path / "clean"))
    calls = {"n": 0}
    real = gen.run_point

    def crash_after_three(point):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("simulated kill")
        return real(point)

    monkeypatch.setattr(gen, "run_point", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_sweep_study(TINY, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "double-descent").exists()  # no run folder, staging or empty <kind>/
    assert len(list((tmp_path / "resumed" / ".sweep-store" / "double-descent").glob("*.json"))) == 3
    monkeypatch.setattr(gen, "run_point", real)
    run_dir = run_sweep_study(TINY, tmp_path / "resumed")
    resumed = tables(run_dir)
    for name in STABLE:
        pd.testing.assert_frame_equal(resumed[name], clean[name], check_exact=False, rtol=1e-9)
    cost = pd.read_csv(run_dir / "tables" / "point_cost.csv")
    assert cost["resumed"].sum() == 3


def test_variant_studies_write_their_tables(tmp_path):
    cfg = SweepStudyConfig(study=SweepStudy.MEMORIZATION, data=DataSpec("digits", train_subset=100),
                           model=ModelSpec("mlp", kwargs={"width": 64}, train=TrainConfig(epochs=2, batch_size=50)),
                           variants=[Variant("clean", label_noise=0.0), Variant("all random", label_noise=1.0),
                                     Variant("random pixels", randomization=Randomization.RANDOM_PIXELS)], seeds=[0, 1])
    run_dir = run_sweep_study(cfg, tmp_path)
    summary = pd.read_csv(run_dir / "tables" / "summary.csv")
    assert list(summary["variant"]) == ["clean", "all random", "random pixels"]
    assert {"train_accuracy_mean", "test_accuracy_std", "gap_mean", "epochs_to_fit_mean"} <= set(summary.columns)
    assert (summary["seeds"] == "0 1").all()
    assert (run_dir / "figures" / "variants.png").exists() and (run_dir / "report.md").exists()


KILL_CONFIG = """
study = "double-descent"
seeds = [0]
widths = [2, 4, 8, 16, 32, 64]
train_sizes = []
[data]
dataset = "digits"
train_subset = 300
label_noise = 0.2
[model]
name = "mlp"
[model.train]
epochs = 40
batch_size = 64
"""


@pytest.mark.slow
def test_kill_9_in_the_middle_then_resume_gives_identical_tables(tmp_path):
    """The real thing: SIGKILL the CLI once some points are stored, run it again, compare with a clean run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "dd.toml"
    config.write_text(KILL_CONFIG)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def study(out):
        return [sys.executable, "-m", "robustcnn", "study", "double-descent", "--config", str(config), "--out", str(out)]

    clean = tmp_path / "clean"
    subprocess.run(study(clean), check=True, capture_output=True, env=env, timeout=600)
    killed = tmp_path / "killed"
    store = killed / ".sweep-store" / "double-descent"
    proc = subprocess.Popen(study(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(store.glob("*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stored = len(list(store.glob("*.json")))
    assert 2 <= stored < 6, stored  # killed in the middle
    subprocess.run(study(killed), check=True, capture_output=True, env=env, timeout=600)

    def finished(out):
        (run,) = [p for p in (out / "double-descent").iterdir() if not p.name.startswith(".")]
        return run

    for name in ("points", "summary", "history", "peaks"):
        a = pd.read_csv(finished(clean) / "tables" / f"{name}.csv")
        b = pd.read_csv(finished(killed) / "tables" / f"{name}.csv")
        pd.testing.assert_frame_equal(a, b)
    cost = pd.read_csv(finished(killed) / "tables" / "point_cost.csv")
    assert cost["resumed"].sum() == stored


RAY_NODE_PROBE = """
from robustcnn.sweep import run_sweep

def where(point):
    import ray
    return {"ip": ray.util.get_node_ip_address()}

print(run_sweep([{"i": 0}], where, executor="ray", progress=False)[0]["ip"])
"""


@pytest.mark.slow
def test_a_local_ray_instance_advertises_only_the_loopback_address(tmp_path):
    """A Ray instance the sweep starts itself must not offer its workers on the machine's network address."""
    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run([sys.executable, "-c", RAY_NODE_PROBE], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "127.0.0.1"


@pytest.mark.parametrize("address,host,port", [("10.1.2.3:6379", "10.1.2.3", 6379), ("ray://head:10001", "head", 10001),
                                               ("[::1]:6379", "::1", 6379), ("[fe80::1]:1", "fe80::1", 1)])
def test_a_ray_address_is_dialled_at_its_host_and_port(monkeypatch, address, host, port):
    """The address check dials the host Ray would (an IPv6 literal without its brackets) and says who did not answer."""
    import socket

    from robustcnn.errors import UsageError
    from robustcnn.sweep import check_ray_address

    dialled = []

    def refuse(target, timeout):
        dialled.append(target)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(UsageError, match=f"no Ray cluster answers at {address.replace('[', '.').replace(']', '.')}"):
        check_ray_address(address)
    assert dialled == [(host, port)]


@pytest.mark.timeout(120)
def test_a_dead_ray_address_in_the_environment_is_one_line_not_a_hang(tmp_path):
    """ray.init() without an address connects to $RAY_ADDRESS: nothing answering there is one line in seconds."""
    pytest.importorskip("ray")
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "robustcnn", "study", "memorization", "--executor", "ray",
                           "--device", "cpu", "-s", "data.train_subset=100", "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=110)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(
        "robustcnn: error: no Ray cluster answers at 127.0.0.1:1"), done.stderr[-2000:]
    assert "check $RAY_ADDRESS" in done.stderr and "Traceback" not in done.stderr
