"""The CLI through Typer's CliRunner: run folders, stable table names, one-line errors with exit code 2."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from robustcnn.cli import app

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
    clean = pd.read_csv(folder / "tables" / "clean_accuracy.csv")
    assert list(clean.columns) == ["model", "split", "accuracy", "n"]
    lint = pd.read_csv(folder / "tables" / "lint.csv")
    assert list(lint.columns) == ["model", "check", "status", "detail"] and set(lint["status"]) <= {"PASS", "WARN", "FAIL", "SKIP"}
    for fig in ("robust_accuracy", "gallery", "perturbation_norms", "adversarial_training"):
        assert (folder / "figures" / f"{fig}.png").exists() and (folder / "figures" / f"{fig}.svg").exists()
    (folder / "figures" / "gallery.png").unlink()
    assert run("report", str(folder)).exit_code == 0
    assert (folder / "figures" / "gallery.png").exists()


@pytest.mark.parametrize("args,message", [
    (["train", "--model", "lenet"], "unknown model 'lenet' (did you mean 'lenet5'?)"),
    (["train", "--dataset", "mnsit"], "unknown dataset 'mnsit' (did you mean 'mnist'?)"),
    (["train", "--epochs", "zero"], "Invalid value for '--epochs'"),
    (["train", "--epochs", "0"], "Invalid value for '--epochs'"),
    (["study", "adversarial", "-s", "evaluation.epsilons=[-0.1]"], "outside [0, 1]"),
    (["study", "adversarial", "-s", "evaluation.epsilons=[1.5]"], "outside [0, 1]"),
    (["study", "adversarial", "-s", 'evaluation.attacks=["fsgm"]'], "unknown attack 'fsgm' (did you mean 'fgsm'?)"),
    (["study", "adversarial", "-s", "evaluation.typo=1"], "unknown config key 'evaluation.typo'"),
    (["study", "adversarial", "--config", "nowhere.toml"], "config file nowhere.toml does not exist"),
    (["study", "generalisation"], "'generalisation' is not one of 'adversarial'"),
    (["report", "."], "is not a run folder"),
    (["models", "vgg*"], "no model matches 'vgg*'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = run(*args, *(["--out", str(tmp_path)] if args[0] in ("train", "study") else []))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not list(tmp_path.glob("*/*"))  # nothing half-written


def test_missing_data_and_unwritable_out(tmp_path):
    result = run("train", "--dataset", "mnist", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "mnist not found" in result.output
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    result = run("train", "--out", str(blocker / "x"))
    assert result.exit_code == 2 and "cannot write to the output folder" in result.output


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
