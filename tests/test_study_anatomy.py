"""`study adversarial` draws the anatomy of one test image for every CNN (lineage does the same): the saved maps
are the model's own, checked here against its checkpoint; `robustcnn report` redraws the figures from the saved
arrays; a resumed run writes the same arrays; anatomy_index=-1 writes none and no number of the study changes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ANATOMY_FILES = ("data/anatomy__lenet5.npz", "tables/anatomy.csv", "figures/kernels_lenet5.png",
                 "figures/feature_maps_lenet5.png", "figures/growth.png")


def tiny_config(**changes: str):
    from robustcnn.config import load_config
    from robustcnn.experiments.adversarial import AdversarialStudyConfig

    sets = {"models": '[{name="perceptron", train={epochs=1, batch_size=32}}, '
                      '{name="lenet5", train={epochs=1, batch_size=32}}]',
            "data.train_subset": "200", "evaluation.attacks": '["fgsm"]', "evaluation.epsilons": "[0, 0.05, 0.1]",
            "evaluation.n_examples": "30", "evaluation.lint": "false", "evaluation.gallery": "0", "device": '"cpu"',
            **changes}
    return load_config(AdversarialStudyConfig, None, [f"{k}={v}" for k, v in sets.items()])


def run_study(out: Path, **changes: str) -> Path:
    from robustcnn.experiments.adversarial import run_adversarial_study

    return run_adversarial_study(tiny_config(**changes), out, progress=False)


@pytest.fixture(scope="module")
def anatomy_run(tmp_path_factory) -> Path:
    return run_study(tmp_path_factory.mktemp("on"), anatomy_index="3")


def test_adversarial_study_saves_the_models_own_maps_of_one_image(anatomy_run):
    from robustcnn.data import load_dataset
    from robustcnn.models import create_model

    run = anatomy_run
    for f in ANATOMY_FILES:
        assert (run / f).exists(), f
    assert not (run / "data" / "anatomy__perceptron.npz").exists()  # no conv or pooling layer
    assert set(pd.read_csv(run / "tables" / "anatomy.csv")["model"]) == {"lenet5"}
    data = load_dataset("digits", image_size=28, train_subset=200, seed=0)
    model = create_model("lenet5", dataset=data)
    model.load_state_dict(torch.load(run / "checkpoints" / "lenet5-final.pt", weights_only=True))
    model.eval()
    with np.load(run / "data" / "anatomy__lenet5.npz") as f:
        npz = {k: f[k] for k in f.files}
    x, x_adv = torch.from_numpy(npz["input"]), torch.from_numpy(npz["input_adv"])
    assert torch.equal(x, data.x_test[3])  # test image 3, as configured
    assert float(npz["epsilon"]) == 0.1  # the default: the grid's middle positive epsilon (upper middle of 0.05, 0.1)
    assert (x_adv - x).abs().max().item() <= 0.1 + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
    with torch.no_grad():  # the first conv's maps and both predictions, from the checkpoint by hand
        conv1 = model.body[0]
        assert np.allclose(npz["maps__0"], conv1(x[None])[0].numpy(), atol=1e-6)
        assert np.allclose(npz["adv__0"], conv1(x_adv[None])[0].numpy(), atol=1e-6)
        assert int(npz["clean_pred"]) == model(x[None]).argmax(1).item()
        assert int(npz["adv_pred"]) == model(x_adv[None]).argmax(1).item()
    assert np.array_equal(npz["kernels"], conv1.weight.detach().numpy())
    report = (run / "report.md").read_text()
    assert report.count("## Anatomy: lenet5") == 1
    assert "No anatomy for perceptron: no convolution or pooling layer" in report
    assert "test image 3, PGD-40 L-inf eps 0.1" in report


def test_report_redraws_the_anatomy_from_saved_arrays(anatomy_run, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from robustcnn.cli import app

    run = Path(shutil.copytree(anatomy_run, tmp_path / "copy"))
    before = (run / "report.md").read_text()
    for f in ("report.md", *[f for f in ANATOMY_FILES if f.startswith("figures/")]):
        (run / f).unlink()
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    for f in ANATOMY_FILES:
        assert (run / f).exists(), f
    assert (run / "report.md").read_text() == before


def test_a_resumed_run_writes_the_same_anatomy(anatomy_run):
    again = run_study(anatomy_run.parent.parent, anatomy_index="3")  # the same out: every unit from the store
    units = json.loads((again / "manifest.json").read_text())["units"]
    assert units["models_resumed"] == 2 and units["evaluation_units_resumed"] == units["evaluation_units"]
    a, b = (np.load(run / "data" / "anatomy__lenet5.npz") for run in (anatomy_run, again))
    assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_anatomy_off_writes_none_and_changes_no_number(anatomy_run, tmp_path):
    run = run_study(tmp_path, anatomy_index="-1")  # its own store: everything computed afresh
    for f in ANATOMY_FILES:
        assert not (run / f).exists(), f
    assert not list((run / "data").glob("anatomy*")) if (run / "data").exists() else True
    assert "Anatomy" not in (run / "report.md").read_text()
    for name in ("clean_accuracy", "robust_accuracy", "robust_samples", "history_lenet5"):
        x, y = (pd.read_csv(r / "tables" / f"{name}.csv") for r in (run, anatomy_run))
        drop = [c for c in x.columns if c in ("seconds", "eval_seconds")]
        pd.testing.assert_frame_equal(x.drop(columns=drop), y.drop(columns=drop), check_exact=True)


def test_bad_anatomy_settings_are_one_line_errors(tmp_path):
    from robustcnn.errors import UsageError

    with pytest.raises(UsageError, match="outside the test set") as err:
        run_study(tmp_path, anatomy_index="100000")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.glob(".sweep-store/adversarial/*.json"))  # refused before any model trained
    for changes, message in [({"anatomy_index": "-2"}, "anatomy_index must be"),
                             ({"anatomy_epsilon": "2.0"}, "anatomy_epsilon must be in"),
                             ({"anatomy_epsilon": "0"}, "anatomy_epsilon must be in")]:  # no perturbation to draw
        with pytest.raises(UsageError, match=message):
            tiny_config(**changes)
    # an L2-only study is not refused for a figure it did not ask for: it draws no anatomy
    assert tiny_config(**{"evaluation.attacks": '["l2-pgd"]', "evaluation.epsilons": "[0, 1.5]"}).anatomy_budget is None
    assert tiny_config(**{"evaluation.attacks": '["l2-pgd"]', "evaluation.epsilons": "[0, 1.5]",
                          "anatomy_epsilon": "0.1"}).anatomy_budget == 0.1


def test_anatomy_figures_name_the_image_the_attack_and_every_map_count(anatomy_run, tmp_path, monkeypatch):
    import shutil

    from robustcnn import report_lineage
    from robustcnn.models import create_model
    from robustcnn.report import redraw

    figs = {}
    monkeypatch.setattr(report_lineage, "save_figure", lambda fig, run_dir, name: figs.setdefault(name, fig) and name)
    redraw(shutil.copytree(anatomy_run, tmp_path / "copy"))
    # the counts from the architecture itself: lenet5's second conv and pool have 16 maps, of which 8 are drawn
    net = create_model("lenet5", num_classes=10)
    channels = {"body.0": net.body[0].out_channels, "body.3": net.body[3].out_channels}
    titles = {ax.get_ylabel().split("\n")[0]: ax.get_title() for ax in figs["feature_maps_lenet5"].axes if ax.get_ylabel()}
    assert channels == {"body.0": 6, "body.3": 16}
    assert titles["body.0"].startswith("clean, 6 maps 24x24") and "first" not in titles["body.0"]
    assert titles["body.3"].startswith("clean, the first 8 of 16 maps 8x8"), titles
    assert titles["body.5"].startswith("clean, the first 8 of 16 maps 4x4"), titles
    assert "test image 3 with label" in figs["feature_maps_lenet5"].get_suptitle()
    # every map drawn unsampled (crisp in SVG/PDF): input, adversarial, perturbation and 3 per layer
    assert all(im.get_interpolation() == "none" for ax in figs["feature_maps_lenet5"].axes for im in ax.images)
    growth = figs["growth"].axes[0]
    assert growth.get_title().endswith("(test image 3, PGD-40 L-inf eps 0.1)"), growth.get_title()
    table = pd.read_csv(anatomy_run / "tables" / "anatomy.csv")
    assert [t.get_text() for t in growth.get_xticklabels()] == [f"{n}\n{k}" for n, k in zip(table["layer"], table["kind"])]


def test_growth_of_models_with_other_layers_counts_positions_instead_of_naming_layers():
    from robustcnn.report_lineage import plot_growth

    growth = pd.DataFrame({"model": ["a"] * 3 + ["b"] * 2, "layer": ["input", "c1", "p1", "input", "s1"],
                           "kind": ["input", "conv", "pool", "input", "conv"], "relative_change": [0.1, 0.2, 0.3, 0.1, 0.5]})
    ax = plot_growth(growth).axes[0]
    assert "position" in ax.get_xlabel() and list(ax.get_xticks()) == [0, 1, 2]
    assert "c1" not in " ".join(t.get_text() for t in ax.get_xticklabels())
    same = plot_growth(growth[growth["model"] == "a"]).axes[0]
    assert [t.get_text() for t in same.get_xticklabels()] == ["input\ninput", "c1\nconv", "p1\npool"]


def test_anatomy_labels_take_the_steps_the_arrays_were_made_with(tmp_path):
    """A 7-step PGD example is labelled PGD-7; arrays saved before the steps were take the config's (`robustcnn
    anatomy` recorded them) or, for a study, the 40 it always used."""
    from robustcnn.anatomy import anatomy_of_test_image, save_npz
    from robustcnn.data import load_dataset
    from robustcnn.models import create_model
    from robustcnn.report_lineage import _anatomy_setting, anatomy_section
    from robustcnn.results import write_json

    data = load_dataset("digits", image_size=28, train_subset=100, seed=0)
    arrays, _ = anatomy_of_test_image(create_model("lenet5", dataset=data).eval(), data, 2, epsilon=0.1, steps=7)
    path = tmp_path / "data" / "anatomy__m.npz"
    save_npz(path, arrays | {"model": np.array("m")})
    assert "PGD-7 L-inf eps 0.1" in anatomy_section(tmp_path, path, "m")[2]
    assert _anatomy_setting({"m": path}, {}) == "test image 2, PGD-7 L-inf eps 0.1; "
    save_npz(path, {k: v for k, v in arrays.items() if k != "steps"})  # as saved before this round
    assert "PGD-40 L-inf" in _anatomy_setting({"m": path}, {}) and "PGD-5 L-inf" in _anatomy_setting({"m": path},
                                                                                                      {"steps": 5})
    write_json(tmp_path / "manifest.json", {"kind": "anatomy", "run_id": "r", "config": {"steps": 5}, "seed": 0,
                                            "versions": {}, "device": "cpu"})
    assert "PGD-5 L-inf" in anatomy_section(tmp_path, path, "m")[2]


def test_a_run_that_lost_a_models_anatomy_arrays_says_so(anatomy_run, tmp_path):
    import shutil

    from robustcnn.report import redraw

    run = Path(shutil.copytree(anatomy_run, tmp_path / "copy"))
    (run / "data" / "anatomy__lenet5.npz").unlink()
    text = redraw(run).read_text()
    assert "No anatomy for perceptron: no convolution or pooling layer" in text  # true: it has none
    assert "No anatomy figures for lenet5: its arrays (data/anatomy__<model>.npz) are missing" in text


def test_feature_map_titles_of_arrays_saved_before_the_count_was():
    """Such arrays hold at most 8 maps per layer: fewer means the layer had no more, 8 means the first 8."""
    from robustcnn.report_lineage import _how_many

    assert _how_many(6, None) == "6 maps" and _how_many(8, None) == "the first 8 maps"
    assert _how_many(6, 6) == "6 maps" and _how_many(8, 16) == "the first 8 of 16 maps"
