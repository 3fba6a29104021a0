"""The CLI through Typer's CliRunner: run folders, stable table names, one-line errors with exit code 2."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from robustcnn.cli import app
from robustcnn.errors import UsageError

runner = CliRunner()
TINY_STUDY = ["-s", "models.0.train.epochs=1", "-s", "models.1.train.epochs=1",
              "-s", "models.1.train.adversarial.eval_examples=20", "-s", "evaluation.n_examples=40",
              "-s", "evaluation.epsilons=[0, 0.1, 0.2]", "-s", "evaluation.lint_examples=40",
              "-s", 'evaluation.attacks=["fgsm", {name="pgd", steps=5}]', "-s", "evaluation.gallery=2",
              "--device", "cpu"]


def run(*args: str):
    return runner.invoke(app, list(args))


def only_run(out: Path, kind: str) -> Path:
    (folder,) = [p for p in (out / kind).iterdir() if not p.name.startswith(".")]
    return folder


def test_train_writes_history_and_overfitting_figure(tmp_path):
    result = run("train", "--epochs", "2", "--out", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    folder = only_run(tmp_path, "train")
    history = pd.read_csv(folder / "tables" / "history.csv")
    assert {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds"} <= set(history.columns)
    assert len(history) == 2 and history["test_accuracy"].between(0, 1).all()
    for f in ("figures/overfitting.png", "figures/overfitting.svg", "report.md", "manifest.json",
              "checkpoints/lenet5-final.pt"):
        assert (folder / f).exists(), f


def test_study_adversarial_writes_the_stable_tables_and_report_redraws(tmp_path):
    result = run("study", "adversarial", "--out", str(tmp_path), *TINY_STUDY)
    assert result.exit_code == 0, result.output
    folder = only_run(tmp_path, "adversarial")
    robust = pd.read_csv(folder / "tables" / "robust_accuracy.csv")
    assert {"model", "attack", "epsilon", "robust_accuracy", "n"} <= set(robust.columns)
    assert set(robust["attack"]) == {"fgsm", "pgd", "worst_case"} and robust["robust_accuracy"].between(0, 1).all()
    assert set(robust["suite"]) == {"fgsm+pgd"}  # pgd with 5 steps is no named suite: the attacks name it
    assert "attack suite: fgsm+pgd (an explicit attack list)" in (folder / "report.md").read_text()
    clean = pd.read_csv(folder / "tables" / "clean_accuracy.csv")
    assert list(clean.columns) == ["model", "split", "accuracy", "n"]
    lint = pd.read_csv(folder / "tables" / "lint.csv")
    assert list(lint.columns) == ["model", "suite", "check", "status", "detail"] and set(lint["suite"]) == {"fgsm+pgd"}
    assert set(lint["status"]) <= {"PASS", "WARN", "FAIL", "SKIP"}
    cost = pd.read_csv(folder / "tables" / "attack_cost.csv")
    assert {"suite", "n"} <= set(cost.columns) and (cost["n"] == 40).all()  # evaluation.n_examples=40
    for fig in ("robust_accuracy", "gallery", "perturbation_norms", "adversarial_training"):
        assert all((folder / "figures" / f"{fig}.{fmt}").exists() for fmt in ("png", "svg", "pdf"))
    (folder / "figures" / "gallery.png").unlink()
    assert run("report", str(folder)).exit_code == 0
    assert (folder / "figures" / "gallery.png").exists()


def test_train_config_file_values_stand_unless_a_flag_is_given(tmp_path):
    """Only options the user passed override the file: --model/--dataset defaults must not replace its model."""
    config = tmp_path / "run.toml"
    config.write_text('[model]\nname = "mlp"\nkwargs = {width = 8}\n[model.train]\nepochs = 1\n'
                      '[data]\ndataset = "digits"\ntrain_subset = 60\n')
    result = run("train", "--config", str(config), "--out", str(tmp_path / "a"), "--device", "cpu")
    assert result.exit_code == 0, result.output
    manifest = json.loads((only_run(tmp_path / "a", "train") / "manifest.json").read_text())
    assert manifest["config"]["model"]["name"] == "mlp" and manifest["config"]["data"]["train_subset"] == 60
    result = run("train", "--config", str(config), "--model", "cnn5", "--width", "2", "--out", str(tmp_path / "b"),
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    manifest = json.loads((only_run(tmp_path / "b", "train") / "manifest.json").read_text())
    assert manifest["config"]["model"]["name"] == "cnn5" and manifest["config"]["model"]["kwargs"] == {"width": 2}


@pytest.mark.parametrize("command", ["train", "study"])
def test_an_error_after_the_run_folder_opened_leaves_nothing(tmp_path, monkeypatch, command):
    """The failure comes while the staging folder exists (checked), after training; nothing may stay."""
    import robustcnn.experiments.adversarial as adversarial
    import robustcnn.experiments.training as training

    out = tmp_path / "out"
    seen = []

    def fail_after_training(*args, **kwargs):
        seen.extend(p.name for p in out.glob("*/.*.partial"))
        raise UsageError("simulated failure after training")

    if command == "train":
        monkeypatch.setattr(training, "save_training", fail_after_training)
        args = ["train", "--epochs", "1", "-s", "data.train_subset=60"]
    else:
        monkeypatch.setattr(adversarial, "evaluate_model", fail_after_training)
        args = ["study", "adversarial", *TINY_STUDY, "-s", "models=[{name=\"lenet5\", train={epochs=1}}]",
                "-s", "data.train_subset=60"]
    result = run(*args, "--out", str(out), "--device", "cpu")
    assert result.exit_code == 2 and "simulated failure after training" in result.output, result.output
    said = [line for line in result.output.strip().splitlines() if not line.startswith("robustcnn: [")]  # progress
    assert len(said) == 1 and "Traceback" not in result.output
    assert len(seen) == 1  # the run folder was open when the error came
    # nothing but the study's finished units (the trained model), which the next run resumes from
    left = [p for p in out.rglob("*") if ".sweep-store" not in p.relative_to(out).parts] if out.exists() else []
    assert left == []
    if command == "study":
        assert [p.suffix for p in sorted((out / ".sweep-store" / "adversarial").iterdir())] == [".pt", ".json"]


def test_missing_data_and_unwritable_out(tmp_path):
    result = run("train", "--dataset", "mnist", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "mnist not found" in result.output
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    result = run("train", "--out", str(blocker / "x"))
    assert result.exit_code == 2 and "cannot write to the output folder" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_corrupt_data_file_is_one_line_exit_2(fake_mnist, tmp_path):
    root, _ = fake_mnist
    (root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    result = run("train", "--dataset", "mnist", "--data-root", str(root), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "corrupt or truncated" in result.output
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*/*"))


def test_listings():
    models = run("models", "lenet*")
    assert models.exit_code == 0 and "44,426" in models.output and "60,000" in models.output
    attacks = run("attacks")
    assert attacks.exit_code == 0 and all(a in attacks.output for a in ("fgsm", "pgd", "l2-pgd", "l2-fgm", "deepfool", "cw-l2"))


def test_sweep_study_through_the_cli_resumes(tmp_path):
    args = ["study", "memorization", "--out", str(tmp_path), "-s", "data.train_subset=100", "-s", "model.train.epochs=2",
            "-s", 'variants=[{name="clean", label_noise=0.0}, {name="random", label_noise=1.0}]']
    first = run(*args)
    assert first.exit_code == 0, first.output
    again = run(*args)
    assert again.exit_code == 0, again.output
    runs = sorted(p for p in (tmp_path / "memorization").iterdir() if not p.name.startswith("."))
    assert len(runs) == 2
    cost = pd.read_csv(runs[1] / "tables" / "point_cost.csv")
    assert cost["resumed"].all()
    pd.testing.assert_frame_equal(pd.read_csv(runs[0] / "tables" / "summary.csv"),
                                  pd.read_csv(runs[1] / "tables" / "summary.csv"))


def test_study_config_of_another_kind_is_refused(tmp_path):
    config = Path(__file__).resolve().parent.parent / "studies" / "overfitting-cifar10.toml"
    result = run("study", "memorization", "--config", str(config), "--out", str(tmp_path))
    assert result.exit_code == 2 and "is for study 'overfitting', not 'memorization'" in result.output


def test_a_damaged_store_record_is_one_warning_line_and_recomputed(tmp_path):
    args = ["study", "memorization", "--out", str(tmp_path), "-s", "data.train_subset=60", "-s", "model.train.epochs=1",
            "-s", 'variants=[{name="clean", label_noise=0.0}, {name="random", label_noise=1.0}]']
    assert run(*args).exit_code == 0
    record = sorted((tmp_path / ".sweep-store" / "memorization").glob("*.json"))[0]
    record.write_bytes(b"")
    again = run(*args)
    assert again.exit_code == 0, again.output
    warnings = [line for line in again.output.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("robustcnn: warning: sweep store record"), again.output
    assert json.loads(record.read_text())["point_id"] == record.stem


def test_epsilons_accept_fractions_like_8_over_255():
    from robustcnn.cli import _floats
    from robustcnn.errors import UsageError

    assert _floats("0,8/255, 0.1", "--eps") == [0.0, pytest.approx(0.0313725, abs=1e-6), 0.1]
    for bad in ("8/0", "1/2/3", "a/255", "0x1"):
        with pytest.raises(UsageError, match="8/255"):
            _floats(bad, "--eps")


# ---------------------------------------------------------------- friction: version, benchmark options, listings, help
def test_version_prints_the_installed_version_without_importing_torch():
    import subprocess
    import sys
    from importlib.metadata import version

    result = run("--version")
    assert result.exit_code == 0 and result.stdout == f"robustcnn {version('robustcnn')}\n", result.output
    code = ("import sys; from robustcnn.cli import app\ntry:\n    app(prog_name='robustcnn', args=['--version'])\n"
            "except SystemExit as done:\n    assert done.code in (0, None), done.code\n"
            "assert 'torch' not in sys.modules, 'imported torch'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("robustcnn "), proc.stderr


@pytest.mark.parametrize("flags,message", [
    (["--batch-size", "0"], "Invalid value for '--batch-size'"),
    (["--seed", "-1"], "Invalid value for '--seed'"),
    (["--name", " "], "must be one printable line"),
    (["--name", "a|b"], "without '|'"),
])
def test_benchmark_settings_are_checked_in_one_line_before_any_work(tmp_path, flags, message):
    result = run("benchmark", "lenet5", "--untrained", "--dataset", "digits", *flags, "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_benchmark_name_seed_and_batch_size_reach_the_run(tmp_path):
    result = run("benchmark", "lenet5", "--untrained", "--dataset", "digits", "--image-size", "28", "--n-examples", "20",
                 "--attacks", "fgsm", "--eps", "0,0.1", "--device", "cpu", "--name", "my lenet", "--seed", "7",
                 "--batch-size", "8", "--attack-seeds", "2", "--quiet", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    folder = only_run(tmp_path, "benchmark")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {k: manifest["config"][k] for k in ("name", "seed", "batch_size")} == {"name": "my lenet", "seed": 7,
                                                                                "batch_size": 8}
    assert json.loads((folder / "scorecard.json").read_text())["model"] == "my lenet"
    assert sorted(set(pd.read_csv(folder / "tables" / "robust_samples.csv")["seed"])) == [7, 8]


def test_models_listing_has_a_header_and_says_which_width_it_counts():
    from robustcnn.models import create_model

    result = run("models", "cnn5")
    assert result.exit_code == 0, result.output
    header, row, note = result.stdout.strip().splitlines()
    assert header.split() == ["model", "parameters", "width", "description"]
    name, count, width = row.split()[:3]
    explicit = create_model("cnn5", dataset="mnist", width=int(width))  # the width the row claims, passed explicitly
    assert name == "cnn5" and int(count.replace(",", "")) == sum(p.numel() for p in explicit.parameters())
    assert int(count.replace(",", "")) != sum(p.numel() for p in create_model("cnn5", dataset="mnist", width=8).parameters())
    assert "width" in note and "default" in note


def test_train_help_shows_the_defaults_a_run_uses():
    from robustcnn.experiments.training import TrainRunConfig
    from robustcnn.train import DEFAULT_LR, OptimizerName

    text = " ".join(run("train", "--help").stdout.split())
    cfg = TrainRunConfig()

    def shown(option: str) -> str:
        found = re.search(rf"{option} <[^>]*> .*?\[default: \((.*?)\)[;\]]", text)
        assert found, f"{option} shows no default"
        return found.group(1)

    assert shown("--model") == cfg.model.name and shown("--dataset") == cfg.data.dataset
    assert shown("--epochs") == str(cfg.model.train.epochs) and shown("--batch-size") == str(cfg.model.train.batch_size)
    assert shown("--optimizer") == OptimizerName(cfg.model.train.optimizer).value
    assert shown("--seed") == str(cfg.seed) and shown("--device") == cfg.device
    assert shown("--label-noise") == str(cfg.data.label_noise)
    lrs = dict(pair.split() for pair in shown("--lr").removeprefix("by optimizer: ").split(", "))
    assert cfg.model.train.lr is None and {k: float(v) for k, v in lrs.items()} == {o.value: DEFAULT_LR[o]
                                                                                   for o in OptimizerName}


class PlainConv(nn.Module):
    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.conv, self.drop, self.fc = nn.Conv2d(1, 4, 3), nn.Dropout(dropout), nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.conv(x)).flatten(1)))


def test_eval_mode_note_only_when_the_mode_changes_the_outputs(digits28):
    from robustcnn.benchmark import preflight
    from robustcnn.lint import check_eval_mode

    torch.manual_seed(0)
    for model, expected in ((PlainConv(), "PASS"), (PlainConv(dropout=0.5), "WARN")):
        assert model.training  # as a factory returns it
        _, report = preflight(model, digits28)
        eval_mode = {r.check: r for r in report}["eval_mode"]
        assert eval_mode.status == expected, eval_mode.detail
        assert not any(m.training for m in model.modules())  # attacked in eval mode either way
        lint = check_eval_mode(model.train(), digits28.x_test[:32]).status
        assert lint == {"PASS": "PASS", "WARN": "FAIL"}[expected]


def test_measuring_the_mode_leaves_batch_norm_statistics_and_the_random_state_alone(digits28):
    from robustcnn.lint import changes_with_mode

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(2 * 26 * 26, 10)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    changed, _ = changes_with_mode(model, digits28.x_test[:32])
    after_rng = torch.rand(1)
    torch.manual_seed(1)
    assert changed and torch.equal(after_rng, torch.rand(1))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.training
