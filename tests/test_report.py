"""report.md: a Setup section from the manifest, numbers written one way (percent with one decimal), n stated
where clean accuracy and the eps=0 point appear, sweep summaries as mean ± std columns."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from report_fixtures import adversarial_run

from robustcnn import report
from robustcnn.latex import latex_table
from robustcnn.results import markdown_table, write_table


@pytest.fixture
def no_figures(monkeypatch):
    """Reports without drawing (the figure tests draw)."""
    monkeypatch.setattr(report, "save_figure", lambda fig, run_dir, name: f"figures/{name}.png")
    monkeypatch.setattr("robustcnn.report_sweep.save_figure", lambda fig, run_dir, name: f"figures/{name}.png")


def section(text: str, title: str) -> str:
    """The Markdown section whose heading starts with `title`, up to the next heading of that level."""
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 3)
    return text[start:end if end >= 0 else None]


def row(text: str, first: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_setup_section_names_dataset_n_training_and_attack_settings(tmp_path, no_figures):
    setup = section(report.report_adversarial(adversarial_run(tmp_path)), "Setup")
    assert "**Dataset**: digits" in setup and "first n=60 test examples" in setup and "first 40 of them" in setup
    assert "**threads**: 1" in setup and "cpu (test)" in setup and "recorded by the run" in setup
    pgd = row(setup, "pgd")
    assert pgd[:7] == ["pgd", "L-inf", "40", "0.0625·eps", "yes", "1", "quick"]
    assert row(setup, "fgsm")[2] == "–"  # a one-step attack has no steps setting
    trained = row(setup, "lenet5-pgd")
    assert "PGD L-inf eps 0.1, 7 steps" in " ".join(trained) and "3" in trained and "adam, lr 0.003, constant" in trained


def test_setup_resolves_defaults_a_run_did_not_record(tmp_path, no_figures):
    """Runs written before the manifest recorded attack settings: the registry fills in PGD's documented 40 steps."""
    setup = section(report.report_adversarial(adversarial_run(tmp_path, record_settings=False)), "Setup")
    assert row(setup, "pgd")[:3] == ["pgd", "L-inf", "40"] and "attack registry at redraw" in setup


def test_clean_accuracy_and_eps0_say_they_use_different_n(tmp_path, no_figures):
    text = report.report_adversarial(adversarial_run(tmp_path, n=60, clean_n=500))
    for title in ("Clean accuracy", "Robust accuracy"):
        part = section(text, title)
        assert "whole test split (n=500)" in part and "first n=60" in part and "The two n differ" in part
    same = report.report_adversarial(adversarial_run(tmp_path / "same", n=500, clean_n=500))
    assert "the same examples" in section(same, "Robust accuracy") and "differ" not in section(same, "Clean accuracy")


def test_markdown_and_latex_write_fractions_as_percent_with_one_decimal():
    df = pd.DataFrame({"model": ["a"], "test_accuracy": [0.97814], "gap": [0.0432], "seconds": [12.3456], "n": [500]})
    assert markdown_table(df).splitlines()[0] == "| model | test_accuracy (%) | gap (%) | seconds | n |"
    assert row(markdown_table(df), "a") == ["a", "97.8", "4.3", "12.35", "500"]
    tex = latex_table(df)
    assert r"a & 97.8 & 4.3 & 12.35 & 500 \\" in tex and r"test\_accuracy (\%)" in tex


def test_the_lineage_robust_columns_at_an_epsilon_are_percent_and_eps_itself_is_not():
    df = pd.DataFrame({"model": ["a"], "pgd_eps0.3": [0.045], "worst_case_eps8e-05": [0.5], "eps": [0.3]})
    assert markdown_table(df).splitlines()[0] == "| model | pgd_eps0.3 (%) | worst_case_eps8e-05 (%) | eps |"
    assert row(markdown_table(df), "a") == ["a", "4.5", "50.0", "0.3"]


def test_robust_table_in_the_report_is_percent(tmp_path, no_figures):
    part = section(report.report_adversarial(adversarial_run(tmp_path)), "Robust accuracy")
    assert row(part, "lenet5")[:6] == ["lenet5", "fgsm", "90.0", "60.0", "30.0", "10.0"]
    assert not re.search(r"\| 0\.\d\d+ \|", part)  # no fraction such as 0.978 left unformatted


def sweep_run(tmp_path, seeds: list[int]):
    run = tmp_path / "sweep"
    points = pd.DataFrame([{"sweep": "variants", "variant": v, "x": x, "seed": s, "train_accuracy": 1.0,
                            "test_accuracy": base + 0.01 * s, "gap": 1.0 - base - 0.01 * s, "epochs_to_fit": 10 + s,
                            "train_eval_n": 300}
                           for v, x, base in (("labels 0% random", 0.0, 0.94), ("random pixels", "random pixels", 0.1))
                           for s in seeds])
    grouped = points.groupby(["sweep", "variant"], sort=False)
    metrics = ["train_accuracy", "test_accuracy", "gap", "epochs_to_fit"]
    summary = grouped[metrics].mean().add_suffix("_mean").join(grouped[metrics].std(ddof=0).add_suffix("_std"))
    summary = summary.reset_index().assign(x=["0.0", "random pixels"], seeds=" ".join(map(str, seeds)))
    write_table(run, "summary", summary, title="summary")
    write_table(run, "points", points, title="points")
    write_table(run, "point_cost", points[["sweep", "variant", "x", "seed"]].assign(train_seconds=1.0), title="cost")
    return run


def table_columns(markdown: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines() if line.startswith("|")]
    return [list(col) for col in zip(*rows[2:])]


@pytest.mark.parametrize("seeds", [[0, 1, 2], [0]])
def test_sweep_summary_is_mean_pm_std_columns_none_mixing_numbers_and_text(tmp_path, seeds, no_figures):
    text = report.report_sweep(sweep_run(tmp_path, seeds))
    part = section(text, "Summary")
    assert row(part, "variants")[:3] == ["variants", "labels 0% random", " ".join(map(str, seeds))]
    if len(seeds) == 3:
        sd = np.std([0.94, 0.95, 0.96])
        assert f"95.0 ± {100 * sd:.1f}" in part and "mean ± std over 3 seeds" in part
    else:
        assert "±" not in part and "1 seed" in part
    for col in table_columns(part):
        numeric = [bool(re.fullmatch(r"-?[\d.]+", c)) for c in col]
        assert all(numeric) or not any(numeric), col  # e.g. no x column: 0.0 beside 'random pixels'
    for col in table_columns(section(text, "Cost per point")):
        numeric = [bool(re.fullmatch(r"-?[\d.]+", c)) for c in col]
        assert all(numeric) or not any(numeric), col


def test_the_lint_n_is_capped_at_the_examples_attacked(tmp_path, no_figures):
    """The lint runs on the first lint_examples of the n attacked examples, so never on more than n."""
    import json

    run = adversarial_run(tmp_path, n=60)  # its config: lint_examples 40
    assert "the lint on the first 40 of them" in report.report_adversarial(run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["evaluation"]["lint_examples"] = 200
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert "the lint on the first 60 of them" in report.report_adversarial(run)
