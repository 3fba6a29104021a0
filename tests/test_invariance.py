"""Invariance evaluation: consistency of a shift-invariant-by-construction net, accuracy against bare torch
loops, the grid worst case, mCE arithmetic, the study end to end and its agreement with the scorecard."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustcnn import invariance as inv
from robustcnn.corruptions import corrupt
from robustcnn.errors import UsageError


class CircularGAP(nn.Module):
    """Circular-padded convolutions (translation-equivariant under circular shifts) + global average pooling:
    invariant to every circular shift by construction. flatten=True swaps the pooling for a dense head (a
    negative control: not invariant)."""

    def __init__(self, flatten: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, padding_mode="circular")
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, padding_mode="circular")
        self.flatten = flatten
        self.head = nn.Linear(16 * 28 * 28 if flatten else 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.head(h.flatten(1) if self.flatten else h.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def xy(digits28) -> tuple[torch.Tensor, torch.Tensor]:
    return digits28.x_test[:64], digits28.y_test[:64]


def test_a_shift_invariant_net_scores_consistency_one(xy) -> None:
    x, _ = xy
    models = {"gap": CircularGAP().eval(), "dense": CircularGAP(flatten=True).eval()}
    table = inv.consistency(models, x, "translate_circular", [1, 3]).set_index(["model", "magnitude"])
    assert (table.loc["gap", "consistency"] == 1.0).all()
    assert (table.loc["dense", "consistency"] < 1.0).all()  # the metric can fail


def _bare_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_accuracy_at_zero_is_clean_and_worst_is_the_grid_minimum(trained_lenet, xy) -> None:
    x, y = xy
    table = inv.transform_accuracy({"m": trained_lenet}, x, y, "translate", [0, 1]).set_index(["mode", "magnitude"])
    clean = _bare_accuracy(trained_lenet, x, y)
    assert table.loc[("random", 0.0), "accuracy"] == pytest.approx(clean)
    assert table.loc[("worst", 0.0), "accuracy"] == pytest.approx(clean)
    ok = torch.ones(len(y), dtype=torch.bool)
    for dy in (-1, 0, 1):  # a bare reference: pad and crop for each of the 9 shifts
        for dx in (-1, 0, 1):
            padded = F.pad(x, (1, 1, 1, 1))
            shifted = padded[:, :, 1 - dy:29 - dy, 1 - dx:29 - dx]
            with torch.no_grad():
                ok &= trained_lenet(shifted).argmax(1) == y
    assert table.loc[("worst", 1.0), "accuracy"] == pytest.approx(ok.float().mean().item())
    assert table.loc[("worst", 1.0), "accuracy"] <= table.loc[("random", 1.0), "accuracy"]
    assert table.loc[("worst", 1.0), "method"] == "grid of 9"


def test_corruption_accuracy_matches_a_bare_loop(trained_lenet, xy) -> None:
    x, y = xy
    table = inv.corruption_accuracy({"m": trained_lenet}, x, y, ["fog", "zigzag"], [2, 5], seed=3)
    for row in table.itertuples():
        assert row.accuracy == pytest.approx(_bare_accuracy(trained_lenet, corrupt(x, row.corruption, row.severity, 3), y))
    assert set(table["corruption"]) == {"fog", "zigzag"} and len(table) == 4


def test_mce_against_a_hand_computed_reference() -> None:
    rows = [("a", "fog", 1, 0.8), ("a", "fog", 2, 0.6), ("a", "zigzag", 1, 0.9), ("a", "zigzag", 2, 0.7),
            ("ref", "fog", 1, 0.6), ("ref", "fog", 2, 0.4), ("ref", "zigzag", 1, 0.9), ("ref", "zigzag", 2, 0.5)]
    table = pd.DataFrame(rows, columns=["model", "corruption", "severity", "accuracy"]).assign(n=100)
    per, summary = inv.corruption_summary(table, {"a": 0.95, "ref": 0.9}, reference="ref")
    s = summary.set_index("model")
    ce_fog, ce_zig = (0.2 + 0.4) / (0.4 + 0.6), (0.1 + 0.3) / (0.1 + 0.5)
    assert s.loc["a", "mce"] == pytest.approx((ce_fog + ce_zig) / 2)
    rel_fog, rel_zig = (0.15 + 0.35) / (0.3 + 0.5), (0.05 + 0.25) / (0.0 + 0.4)
    assert s.loc["a", "relative_mce"] == pytest.approx((rel_fog + rel_zig) / 2)
    assert s.loc["ref", "mce"] == pytest.approx(1.0)
    assert s.loc["a", "mean_corruption_accuracy"] == pytest.approx(0.75)
    assert s.loc["a", "mean_corruption_error"] == pytest.approx(0.25)
    with pytest.raises(UsageError, match="reference 'alexnet' is not among"):
        inv.corruption_summary(table, {"a": 0.95, "ref": 0.9}, reference="alexnet")


def test_bad_requests_are_one_line(trained_lenet, xy) -> None:
    x, y = xy
    with pytest.raises(UsageError, match="blur is deterministic"):
        inv.consistency({"m": trained_lenet}, x, "blur", [1])
    with pytest.raises(UsageError, match="unknown corruption"):
        inv.corruption_accuracy({"m": trained_lenet}, x, y, ["frostt"])
    with pytest.raises(UsageError, match="severity must be"):
        inv.corruption_accuracy({"m": trained_lenet}, x, y, ["fog"], [0])
    with pytest.raises(UsageError, match="unknown threat"):
        inv.invariance_scorecard(trained_lenet, x, y, threat="linf")


@pytest.mark.slow
def test_study_end_to_end_and_the_scorecard_agrees(tmp_path) -> None:
    from robustcnn.config import load_config
    from robustcnn.data import load_dataset
    from robustcnn.experiments.invariance import InvarianceStudyConfig, run_invariance_study
    from robustcnn.models import create_model

    cfg = load_config(InvarianceStudyConfig, None, [
        "models=[{name='mlp', kwargs={width=32}, train={epochs=2}}, {name='lenet5', train={epochs=2}}]",
        "evaluation.n_examples=40", "evaluation.shift_grid=1", "evaluation.corruptions=['fog','stripe']",
        "evaluation.severities=[1,4]", "evaluation.grid_steps=3", "evaluation.worst_of=2",
        "evaluation.magnitudes={translate=[0,1,2], rotate=[0,10], scale=[], elastic=[0,34], noise=[0.3], blur=[1]}",
        "device='cpu'"])
    run = run_invariance_study(cfg, tmp_path, progress=False)
    claims = pd.read_csv(run / "tables" / "claims.csv")
    acc = pd.read_csv(run / "tables" / "transform_accuracy.csv")
    shift = claims[(claims["claim"] == "shift") & (claims["model"] == "lenet5")].iloc[0]
    table = acc[(acc["model"] == "lenet5") & (acc["transform"] == "translate") & (acc["magnitude"] == 2)]
    assert shift["accuracy"] == pytest.approx(table[table["mode"] == "random"]["accuracy"].iloc[0])
    assert shift["holds"] == (shift["accuracy"] >= 0.9 * shift["clean_accuracy"])
    assert "The seed's claims" in (run / "report.md").read_text()
    assert (run / "figures" / "corruption_gallery.png").exists()

    data = load_dataset("digits", image_size=28)  # the scorecard on the study's checkpoint, the same seed
    model = create_model("lenet5", dataset=data)
    model.load_state_dict(torch.load(run / "checkpoints" / "lenet5-final.pt", weights_only=True))
    card = inv.invariance_scorecard(model.eval(), data.x_test[:40], data.y_test[:40], threat="corruptions",
                                    corruptions=["fog", "stripe"], severities=[1, 4])
    study = pd.read_csv(run / "tables" / "corruption_accuracy.csv").query("model == 'lenet5'")
    merged = card.merge(study, left_on=["attack", "level"], right_on=["corruption", "severity"])
    assert len(merged) == 4 and (merged["robust_accuracy"] - merged["accuracy"]).abs().max() < 1e-9
    assert (merged["ci_low"] <= merged["robust_accuracy"]).all() and (merged["robust_accuracy"] <= merged["ci_high"]).all()
    mean = card[card["attack"] == "mean_corruption"].iloc[0]
    assert mean["robust_accuracy"] == pytest.approx(study["accuracy"].mean()) and math.isnan(mean["epsilon"])


@pytest.mark.parametrize("override,match", [
    ("evaluation.severities=[6]", "severities must be whole numbers in 1..5"),
    ("evaluation.corruptions=['frostt']", "unknown corruption 'frostt'"),
    ("claims=[{name='shift', transform='translate', magnitude=1.5}]", "whole number of pixels"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, override: str, match: str) -> None:
    from typer.testing import CliRunner

    from robustcnn.cli import app

    result = CliRunner().invoke(app, ["study", "invariance", "--out", str(tmp_path), "-s", override])
    assert result.exit_code == 2 and match in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "invariance").exists() or not any((tmp_path / "invariance").iterdir())


def test_the_corruption_heatmap_has_a_colour_scale() -> None:
    from robustcnn.report_invariance import plot_corruption_heatmap

    acc = pd.DataFrame({"model": ["a", "a", "b", "b"], "corruption": ["fog", "fog", "fog", "fog"],
                        "severity": [1, 2, 1, 2], "accuracy": [0.9, 0.7, 0.5, 0.3]})
    fig = plot_corruption_heatmap(acc, pd.DataFrame({"model": ["a", "b"], "accuracy": [1.0, 0.6]}))
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "accuracy"]
    assert len(fig.axes) == 2 and len(bars) == 1  # the heatmap and its colour bar, labelled
    assert bars[0].get_ylim() == (0.0, 1.0)
