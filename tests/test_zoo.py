"""The pretrained zoo: scripts/make-pretrained.py builds it from a run folder, create_model(pretrained=...) and
`benchmark --pretrained` load it (sha256 checked, weights_only=True), and only its curves are references."""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import robustcnn.zoo as zoo
from robustcnn.benchmark import benchmark, write_benchmark
from robustcnn.cli import app
from robustcnn.errors import UsageError
from robustcnn.models import create_model

ROOT = Path(__file__).resolve().parent.parent
FAST = dict(dataset="digits", image_size=28, attacks=["fgsm"], epsilons=[0.0, 0.1], n_examples=60, device="cpu",
            lint=False)


def make_pretrained_script():
    spec = importlib.util.spec_from_file_location("make_pretrained", ROOT / "scripts" / "make-pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(base: Path, state: dict, dataset: str = "digits") -> Path:
    """A run folder as `robustcnn study adversarial` leaves it: manifest and a final checkpoint."""
    run = base / "adversarial" / "20260101-000000-abcdef"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(state, run / "checkpoints" / "std-final.pt")
    config = {"data": {"dataset": dataset, "data_root": None}, "models": [{"name": "std", "arch": "lenet5", "kwargs": {}}]}
    manifest = {"kind": "adversarial", "run_id": run.name, "config": config, "versions": {}, "device": "cpu",
                "git_commit": "abc123"}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.fixture
def shipped(tmp_path, monkeypatch, trained_lenet):
    """A zoo of one entry (the tests' trained lenet5 as 'lenet5:digits'), in a tmp folder the package reads."""
    folder = tmp_path / "pretrained"
    monkeypatch.setattr(zoo, "PRETRAINED_DIR", folder)
    run = fake_run(tmp_path / "runs", trained_lenet.state_dict())
    assert make_pretrained_script().main(["--out", str(folder), "--add", str(run), "std", "digits", "--n-examples",
                                          "60", "--attacks", "fgsm", "--eps", "0,0.1"]) == 0
    return folder


def test_the_index_records_checksum_accuracy_source_and_reference(shipped, trained_lenet, digits28):
    (entry,) = json.loads((shipped / "index.json").read_text())["models"]
    data = (shipped / "lenet5-digits.pt").read_bytes()
    assert entry["file"] == "lenet5-digits.pt" and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry["bytes"] == len(data)
    with torch.no_grad():  # independent count on the whole test split
        expected = (trained_lenet(digits28.x_test).argmax(1) == digits28.y_test).float().mean().item()
    assert entry["clean_test_accuracy"] == pytest.approx(expected) and entry["n_test"] == len(digits28.y_test)
    assert entry["source"]["run_id"] == "20260101-000000-abcdef" and entry["source"]["label"] == "std"
    ref = entry["reference"]
    assert ref["suite"] == "fgsm" and ref["n"] == 60 and [p["epsilon"] for p in ref["robust_accuracy"]] == [0.0, 0.1]
    with torch.no_grad():
        clean60 = (trained_lenet(digits28.x_test[:60]).argmax(1) == digits28.y_test[:60]).float().mean().item()
    assert ref["robust_accuracy"][0]["robust_accuracy"] == pytest.approx(clean60)


def test_create_model_pretrained_loads_checked_weights_only(shipped, trained_lenet, digits28, monkeypatch):
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: calls.append(kw) or real_load(*a, **kw))
    model = create_model("lenet5", pretrained="digits")
    assert calls and all(kw.get("weights_only") is True for kw in calls)
    assert not model.training
    with torch.no_grad():
        assert torch.equal(model(digits28.x_test[:50]), trained_lenet(digits28.x_test[:50]))


def test_a_changed_file_or_unknown_tag_is_refused(shipped):
    with pytest.raises(UsageError, match=r"no pretrained weights 'mnist' for lenet5 \(shipped: lenet5:digits\)"):
        create_model("lenet5", pretrained="mnist")
    path = shipped / "lenet5-digits.pt"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="do not match their recorded sha256"):
        create_model("lenet5", pretrained="digits")


def test_nothing_shipped_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "PRETRAINED_DIR", tmp_path / "empty")
    with pytest.raises(UsageError, match="ships no pretrained weights"):
        create_model("lenet5", pretrained="mnist")


def test_benchmark_pretrained_and_its_refusals(shipped, trained_lenet, digits28, tmp_path):
    card = benchmark("lenet5", pretrained="digits", **FAST)
    direct = benchmark(trained_lenet, **FAST)
    assert card.weights_hash == direct.weights_hash and card.clean_accuracy == direct.clean_accuracy
    with pytest.raises(UsageError, match="--weights or --pretrained, not both"):
        benchmark("lenet5", pretrained="digits", weights=tmp_path / "w.pt", **FAST)
    with pytest.raises(UsageError, match="trained on digits, not mnist"):
        benchmark("lenet5", pretrained="digits", **{**FAST, "dataset": dataclasses.replace(digits28, name="mnist")})
    result = CliRunner().invoke(app, ["benchmark", "lenet5", "--pretrained", "nope", "--dataset", "digits", "--out",
                                      str(tmp_path)])
    assert result.exit_code == 2 and "shipped: lenet5:digits" in result.output


def test_reference_curves_are_the_shipped_ones_only(shipped, trained_lenet, tmp_path):
    """A run under --out (here a fake adversarial study on digits) is never drawn as a reference; the shipped
    entry is, labelled with its suite and n; the benchmarked model is not its own reference."""
    out = tmp_path / "out"
    stray = out / "adversarial" / "stray" / "tables"
    stray.mkdir(parents=True)
    pd.DataFrame({"model": ["smoke"], "attack": ["worst_case"], "epsilon": [0.1], "robust_accuracy": [0.5]}).to_csv(
        stray / "robust_accuracy.csv", index=False)
    (stray.parent / "manifest.json").write_text(json.dumps({"config": {"data": {"dataset": "digits"}}}))
    other = create_model("lenet5", pretrained="digits")
    with torch.no_grad():
        next(other.parameters()).mul_(0.9)
    run = write_benchmark(benchmark(other, name="other", **FAST), out)
    refs = pd.read_csv(run / "tables" / "reference_curves.csv")
    assert set(refs["model"]) == {"lenet5 [digits]"} and (refs["source"] == "shipped reference: fgsm, n=60").all()
    run = write_benchmark(benchmark("lenet5", pretrained="digits", **FAST), out)
    assert pd.read_csv(run / "tables" / "reference_curves.csv").empty


# ---------------------------------------------------------------- the weights this package actually ships
SHIPPED = json.loads((ROOT / "robustcnn" / "pretrained" / "index.json").read_text())["models"] \
    if (ROOT / "robustcnn" / "pretrained" / "index.json").exists() else []
SHIPPED_IDS = [f"{e['model']}-{e['tag']}" for e in SHIPPED]


@pytest.mark.parametrize("entry", SHIPPED, ids=SHIPPED_IDS)
def test_shipped_weights_match_their_sha256_and_load_as_plain_tensors(entry):
    path = ROOT / "robustcnn" / "pretrained" / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    state = torch.load(path, map_location="cpu", weights_only=True)   # no pickled code in a shipped file
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model = create_model(entry["model"], pretrained=entry["tag"])
    assert not model.training
    loaded = model.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)


DATA = __import__("os").environ.get("ROBUSTCNN_DATA")


@pytest.mark.integration
@pytest.mark.skipif(not DATA or not Path(DATA).is_dir(), reason="ROBUSTCNN_DATA is not set")
@pytest.mark.parametrize("entry", SHIPPED, ids=SHIPPED_IDS)
def test_shipped_weights_score_their_recorded_clean_accuracy_on_the_real_test_set(entry):
    """Recomputed here with a bare loop over the real test set (MNIST files, CIFAR-10 PNGs), not with the package's evaluation."""
    from robustcnn.data import load_dataset
    model = create_model(entry["model"], pretrained=entry["tag"])
    data = load_dataset(entry["dataset"], root=DATA, image_size=entry["model_args"]["input_size"])
    with torch.no_grad():
        correct = sum(int((model(data.x_test[i:i + 2000]).argmax(1) == data.y_test[i:i + 2000]).sum())
                      for i in range(0, len(data.y_test), 2000))
    assert len(data.y_test) == entry["n_test"] == 10000
    assert correct / len(data.y_test) == pytest.approx(entry["clean_test_accuracy"], abs=1e-9)
    floor = {"mnist": 0.97, "imagefolder:cifar10-png": 0.70}[entry["dataset"]]  # a new dataset must name its floor
    assert correct / len(data.y_test) > floor  # a trained model, not a random initialisation
