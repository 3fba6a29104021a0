"""Progress on stderr for every long loop: a plain line per unit when stderr is not a terminal (CliRunner, a log
file), rich bars in a terminal, nothing with --quiet / set_quiet / quiet(), and never a byte on stdout."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from robustcnn import progress
from robustcnn.cli import app
from robustcnn.evaluation import evaluate_robustness
from robustcnn.sweep import SweepStore, run_sweep

# robustcnn: [label] detail  done/total  elapsed 1.2s  ~3.4s left   (no estimate on the last unit)
LINE = re.compile(r"^robustcnn: \[(?P<label>[^\]]+)\] (?P<detail>.*?)  (?P<done>\d+)/(?P<total>\d+)  "
                  r"elapsed [\d.]+s(?P<left>  ~[\d.]+s left)?$")


def progress_lines(text: str) -> list[re.Match]:
    return [m for m in map(LINE.match, text.splitlines()) if m]


@pytest.fixture(autouse=True)
def not_quiet():
    with progress.quiet(False):
        yield


def test_train_prints_one_line_per_epoch_and_quiet_removes_them(tmp_path):
    args = ["train", "--epochs", "3", "--train-subset", "60", "--device", "cpu", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = progress_lines(result.stderr)
    assert [(m["label"], m["done"], m["total"]) for m in lines] == [("lenet5", str(k), "3") for k in (1, 2, 3)]
    assert [m["detail"].split(":")[0] for m in lines] == ["epoch 1", "epoch 2", "epoch 3"]
    assert [bool(m["left"]) for m in lines] == [True, True, False]  # an estimate until the last epoch
    assert "robustcnn: [" not in result.stdout and result.stdout.startswith("wrote ")  # stdout: the path only
    quiet = CliRunner().invoke(app, ["train", "--quiet", *args[1:]])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == "" and quiet.stdout.startswith("wrote ")


def test_benchmark_prints_each_attack_x_epsilon_the_lint_and_the_seed(tmp_path):
    args = ["benchmark", "lenet5", "--untrained", "--dataset", "digits", "--image-size", "28", "--n-examples", "20",
            "--attacks", "fgsm", "--eps", "0,0.1,0.2", "--device", "cpu", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = progress_lines(result.stderr)
    attack = [(m["detail"], m["done"], m["total"]) for m in lines if m["label"] == "lenet5"]
    assert attack == [("fgsm eps=0", "1", "3"), ("fgsm eps=0.1", "2", "3"), ("fgsm eps=0.2", "3", "3")]
    lint = [m for m in lines if m["label"] == "lint"]
    assert lint and lint[-1]["done"] == lint[-1]["total"] and len(lint) == int(lint[-1]["total"])
    assert [m["label"] for m in lines][-1] == "benchmark lenet5"
    assert {m["label"] for m in lines} == {"lenet5", "lint", "benchmark lenet5"}  # the lint's own attacks: no lines
    assert "robustcnn: [" not in result.stdout
    quiet = CliRunner().invoke(app, [*args, "--quiet"])
    assert quiet.exit_code == 0 and not progress_lines(quiet.stderr), quiet.stderr


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()


def evaluate_tiny() -> None:
    x, y = torch.rand(12, 1, 4, 4), torch.randint(0, 3, (12,))
    evaluate_robustness(tiny_model(), x, y, attacks=["fgsm"], epsilons=[0, 0.1], label="tiny")


def test_the_python_api_prints_by_default_and_can_be_silenced(capsys):
    evaluate_tiny()
    out, err = capsys.readouterr()
    assert [(m["label"], m["detail"]) for m in progress_lines(err)] == [("tiny", "fgsm eps=0"), ("tiny", "fgsm eps=0.1")]
    assert out == ""
    with progress.quiet():
        evaluate_tiny()
    assert capsys.readouterr().err == ""
    progress.set_quiet(True)
    try:
        evaluate_tiny()
        assert capsys.readouterr().err == ""
    finally:
        progress.set_quiet(False)


def test_a_silenced_loop_silences_the_loops_inside_it(capsys):
    with progress.task("outer", 1, enabled=False) as bar:
        evaluate_tiny()
        bar.advance("done")
    assert capsys.readouterr().err == ""


def square(point: dict) -> dict:
    return {"y": point["x"] ** 2}


def test_sweep_prints_one_line_per_finished_point_and_says_what_was_stored(tmp_path, capsys):
    store = SweepStore(tmp_path)
    run_sweep([{"x": 1}, {"x": 2}], square, store=store, label="squares")
    lines = progress_lines(capsys.readouterr().err)
    assert [(m["label"], m["detail"].split(" in ")[0], m["done"]) for m in lines] == [("squares", "x=1", "1"),
                                                                                     ("squares", "x=2", "2")]
    run_sweep([{"x": 1}, {"x": 2}, {"x": 3}], square, store=store, label="squares")
    lines = progress_lines(capsys.readouterr().err)
    assert [(m["label"], m["done"], m["total"]) for m in lines] == [("squares (2 of 3 points stored)", "1", "1")]


def test_in_a_terminal_nested_loops_draw_rich_bars_on_stderr_only(monkeypatch, capsys):
    monkeypatch.setattr(progress, "_terminal", lambda: True)
    with progress.task("outer", 2) as bar:
        for i in range(2):
            evaluate_tiny()  # a second bar while the first is live: one shared display, no LiveError
            print(f"result {i}")  # the caller's stdout stays its own
            bar.advance(f"step {i}")
    out, err = capsys.readouterr()
    assert out == "result 0\nresult 1\n"
    assert "outer" in err and not progress_lines(err)  # bars, not plain lines
    assert progress._state["bars"] is None and progress._open == []  # the display stopped with its last loop


def test_durations_read_naturally():
    assert [progress.duration(s) for s in (0.04, 9.9, 12.4, 185, 7620)] == ["0.0s", "9.9s", "12s", "3m05s", "2h07m"]
