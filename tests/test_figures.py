"""Paper-ready figures: formats and resolution, one colour per model across a run, distinct attack styles, the
worst case on top, intervals where numbers have them, honest labels. Figures are inspected as matplotlib objects."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from matplotlib.patches import Rectangle
from PIL import Image
from report_fixtures import adversarial_run, gallery_npz, history

from robustcnn import report
from robustcnn.figures import plot_adversarial_training, plot_gallery, plot_history, plot_robust_curves
from robustcnn.figures_sweep import plot_memorization, plot_variants
from robustcnn.plotstyle import save_figure, subplots, wilson


def captured(monkeypatch) -> dict:
    """Replace the report's save_figure: keep each Figure by name instead of writing it."""
    figs = {}

    def keep(fig, run_dir, name):
        figs[name] = fig
        return f"figures/{name}.png"

    monkeypatch.setattr(report, "save_figure", keep)
    return figs


def lines_by_label(fig) -> dict:
    return {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}


def test_every_figure_is_saved_as_300_dpi_png_svg_and_pdf(tmp_path):
    fig, ax = subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    assert save_figure(fig, tmp_path, "curve") == "figures/curve.png"
    with Image.open(tmp_path / "figures" / "curve.png") as png:
        assert png.info["dpi"] == pytest.approx((300, 300), abs=0.5)
        assert png.size[0] > 3 * 300 * 0.9  # a 4-inch-wide figure, tight bounding box
    assert b"<svg" in (tmp_path / "figures" / "curve.svg").read_bytes()[:2000]
    assert (tmp_path / "figures" / "curve.pdf").read_bytes().startswith(b"%PDF")
    first = {f: (tmp_path / "figures" / f"curve.{f}").read_bytes() for f in ("svg", "pdf")}
    save_figure(fig, tmp_path, "curve")
    assert all((tmp_path / "figures" / f"curve.{f}").read_bytes() == b for f, b in first.items())  # byte-stable


def test_a_model_keeps_its_colour_across_every_figure_of_a_run(tmp_path, monkeypatch):
    """The adversarial-training figure holds only lenet5-pgd and the history files list it first: it must still
    get the colour it has in the robust-accuracy figure."""
    run = adversarial_run(tmp_path, radii=True)
    figs = captured(monkeypatch)
    report.report_adversarial(run)
    colours = {}
    for name, fig in figs.items():
        for label, line in lines_by_label(fig).items():
            if label.startswith("lenet5-pgd"):
                colours.setdefault("lenet5-pgd", set()).add((name, to_hex(line.get_color())))
            elif label.startswith("lenet5"):
                colours.setdefault("lenet5", set()).add((name, to_hex(line.get_color())))
    for model, seen in colours.items():
        assert len({c for _, c in seen}) == 1, (model, seen)
        assert {"robust_accuracy", "training"} <= {n for n, _ in seen}
    assert {n for n, _ in colours["lenet5-pgd"]} >= {"adversarial_training"}
    assert colours["lenet5"] != colours["lenet5-pgd"]
    for patch in figs["perturbation_norms"].axes[0].patches:  # radius histograms: the same colours
        assert to_hex(patch.get_edgecolor()) in {c for s in colours.values() for _, c in s}


def robust_table(threat: str = "linf") -> pd.DataFrame:
    names = {"linf": ("fgsm", "pgd", "worst_case"), "l2": ("l2-fgm", "l2-pgd", "worst_case_l2")}[threat]
    return pd.DataFrame([{"model": "m", "attack": a, "threat_model": threat, "epsilon": e, "robust_accuracy": acc,
                          "n": 60} for a, accs in zip(names, ([0.9, 0.6, 0.3], [0.9, 0.4, 0.1], [0.9, 0.4, 0.1]))
                         for e, acc in zip((0.0, 0.1, 0.2), accs)])


def test_worst_case_is_drawn_thick_translucent_and_on_top_of_pgd():
    lines = lines_by_label(plot_robust_curves(robust_table()))
    worst, pgd, fgsm = lines["m / worst_case"], lines["m / pgd"], lines["m / fgsm"]
    assert worst.get_zorder() > pgd.get_zorder() and worst.get_linewidth() >= 2.5 * pgd.get_linewidth()
    assert worst.get_alpha() is not None and worst.get_alpha() < 1  # pgd, equal to it, shows through
    assert (fgsm.get_linestyle(), fgsm.get_marker()) != (pgd.get_linestyle(), pgd.get_marker())
    assert fgsm.get_linestyle() != pgd.get_linestyle() and fgsm.get_marker() != pgd.get_marker()


def test_legend_handles_are_long_enough_to_show_a_dash_pattern():
    legend = plot_robust_curves(robust_table()).axes[0].get_legend()
    assert legend.handlelength >= 3  # matplotlib's 2.0 shows one dash of FGSM's pattern


def test_robust_curves_carry_a_wilson_band_split_and_n():
    fig = plot_robust_curves(robust_table())
    ax = fig.axes[0]
    assert "test, first n=60" in ax.get_title() and "cumulative" in ax.get_title()
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # the worst case's
    low, high = wilson(np.array([54, 24, 6]), 60)
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(low.min()) and ys.max() == pytest.approx(high.max())


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), Table I: 0/10 -> 0-0.2775; 15/148 -> 0.0624-0.1605 (95 %)
    low, high = wilson(np.array([0, 15]), np.array([10, 148]))
    assert low == pytest.approx([0.0, 0.0624], abs=1e-4) and high == pytest.approx([0.2775, 0.1605], abs=1e-4)


def test_l2_panels_are_labelled_l2():
    ax = plot_robust_curves(robust_table("l2")).axes[0]
    assert "L2" in ax.get_xlabel() and "L2" in ax.get_title()
    assert "linf" not in (ax.get_xlabel() + ax.get_title()).lower() and "l-inf" not in ax.get_xlabel().lower()


def test_long_histories_get_a_log_epoch_axis():
    long, short = plot_history({"m": history(150, False)}, "t"), plot_history({"m": history(15, False)}, "t")
    assert long.axes[0].get_xscale() == "log" and short.axes[0].get_xscale() == "linear"


def test_clean_and_adversarial_train_accuracy_never_share_a_label():
    h = history(10, True)
    labels = {}
    for fig in (plot_history({"m": h}, "t"), plot_adversarial_training({"m": h})):
        for line in fig.axes[0].get_lines():  # the accuracy panels
            labels.setdefault(line.get_label(), set()).add(tuple(np.round(line.get_ydata(), 6)))
    assert all(len(data) == 1 for data in labels.values()), labels  # one label, one quantity
    clean = [lab for lab, d in labels.items() if tuple(np.round(h["train_accuracy"], 6)) in d]
    adv = [lab for lab, d in labels.items() if tuple(np.round(h["train_accuracy_running"], 6)) in d]
    assert clean and adv and not set(clean) & set(adv)
    assert all("clean, eval mode" in lab for lab in clean) and all("adversarial batches" in lab for lab in adv)
    # a run written before the eval-mode train pass: its train_accuracy was the running adversarial-batch average
    old = h.drop(columns=["train_accuracy_running", "train_loss_running", "train_eval_n"])
    old_labels = [line.get_label() for line in plot_history({"m": old}, "t").axes[0].get_lines()]
    assert any("adversarial batches" in lab for lab in old_labels) and not any("clean" in lab for lab in old_labels)


def test_gallery_skips_examples_misclassified_before_the_attack_and_scales_the_perturbation():
    fig = plot_gallery(gallery_npz(wrong=1))
    titles = [ax.get_title() for ax in fig.axes]
    assert not any("true 7" in t for t in titles)  # example 1 (label 7) was misclassified clean
    assert sum("true" in t for t in titles) == 3
    assert sum("attack failed" in t for t in titles) == 1  # label 1 survived: shown after the broken ones
    assert [t.split("true ")[1][0] for t in titles if "true" in t] == ["3", "5", "1"]
    bars = [im.colorbar for ax in fig.axes for im in ax.images if im.colorbar is not None]
    assert len(bars) == 1 and bars[0].mappable.get_clim()[0] == -bars[0].mappable.get_clim()[1] < 0
    npz = gallery_npz(wrong=1)  # the scale is the largest perturbation of the examples shown (0, 2, 3)
    largest = max(float(np.abs(npz["adv__lenet5"][i] - npz["x__lenet5"][i]).max()) for i in (0, 2, 3))
    assert bars[0].mappable.get_clim()[1] == pytest.approx(largest)
    npz["adv__lenet5"][1] = np.clip(npz["x__lenet5"][1] + 0.3, 0, 1)  # the example not shown: it sets no scale
    bar = next(im.colorbar for ax in plot_gallery(npz).axes for im in ax.images if im.colorbar is not None)
    assert bar.mappable.get_clim()[1] == pytest.approx(largest)


def summary_table(seeds: str, std: float, test: tuple = (0.94, 0.6, 0.1, 0.11)) -> pd.DataFrame:
    variants = ["labels 0% random", "labels 50% random", "labels 100% random", "random pixels"]
    return pd.DataFrame({"sweep": "variants", "variant": variants, "x": ["0.0", "0.5", "1.0", "random pixels"],
                         "train_accuracy_mean": [1.0, 1.0, 0.99, 1.0], "train_accuracy_std": std,
                         "test_accuracy_mean": list(test), "test_accuracy_std": std,
                         "gap_mean": [1 - t for t in test], "gap_std": std, "seeds": seeds})


@pytest.mark.parametrize("seeds,std", [("0", 0.0), ("0 1 2", 0.01)])
def test_small_differences_are_points_with_error_bars_only_over_several_seeds(seeds, std):
    fig = plot_variants(summary_table(seeds, std, test=(0.94, 0.93, 0.96, 0.92)), "generalization")
    assert not [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle)]  # no bars from zero
    assert fig.axes[0].get_ylim()[0] > 0.05  # the accuracy axis is not pinned to zero
    bars = [c for ax in fig.axes for c in ax.containers if c.has_yerr]
    if seeds == "0":
        assert not bars and "n_seeds=1" in fig._suptitle.get_text()
    else:
        assert len(bars) == 3 and "3 seeds" in fig._suptitle.get_text()


def test_memorization_is_a_line_against_the_noise_fraction_with_a_chance_line():
    fig = plot_memorization(summary_table("0", 0.0), classes=10)
    ax = fig.axes[0]
    test = [c.lines[0] for c in ax.containers if c.get_label() == "test"][0]  # errorbar: (data line, caps, bars)
    assert list(test.get_xdata()) == [0.0, 0.5, 1.0] and test.get_linestyle() != "None"
    assert list(test.get_ydata()) == [0.94, 0.6, 0.1]
    chance = [line for line in ax.get_lines() if line.get_label().startswith("chance")][0]
    assert set(chance.get_ydata()) == {0.1}
    assert "random pixels" in [t.get_text() for t in fig.axes[1].get_xticklabels()]


def test_norm_histograms_come_from_fmn_radii_when_the_run_has_them(tmp_path, monkeypatch):
    figs = captured(monkeypatch)
    report.report_adversarial(adversarial_run(tmp_path / "with", radii=True))
    ax = figs["perturbation_norms"].axes[0]
    assert "FMN radius" in ax.get_xlabel()
    # radii.csv per model: one 0 (misclassified clean), one inf (not broken), 58 finite radii
    labels = ax.get_legend_handles_labels()[1]
    assert labels == [f"{m} (n=60: 1 misclassified clean, 1 not broken)" for m in ("lenet5", "lenet5-pgd")]
    report.report_adversarial(adversarial_run(tmp_path / "without"))
    assert "FMN" not in figs["perturbation_norms"].axes[0].get_xlabel()  # no radii: the norms of what attacks found


def test_norm_legend_says_how_many_were_found_of_how_many_attacked():
    """n means examples evaluated everywhere: 7 of 10 broken is 'found: 7 of n=10', counted here row by row."""
    from robustcnn.figures import plot_norms

    rows = [{"model": "m", "attack": "pgd", "threat_model": "linf", "epsilon": e, "index": i, "correct": i >= 7,
             "perturbation_linf": 0.2 if i < 7 else np.nan, "perturbation_l2": 1.5 if i < 7 else np.nan}
            for e in (0.1, 0.2) for i in range(10)]
    samples = pd.DataFrame(rows)
    found = int(samples[(samples["epsilon"] == 0.2)]["perturbation_l2"].notna().sum())
    attacked = int((samples["epsilon"] == 0.2).sum())
    ax = plot_norms(samples).axes[0]
    assert ax.get_legend_handles_labels()[1] == [f"m (found: {found} of n={attacked})"]
    assert "cumulative" in ax.get_title() and "on the test split" in ax.figure.get_suptitle()
    assert "per-epsilon" in plot_norms(samples, curve="per-epsilon").axes[0].get_title()


def test_robust_test_curve_is_labelled_with_pgd_steps_eps_and_its_own_n():
    h = history(5, True).assign(robust_test_n=50, robust_eval_steps=20)
    labels = [line.get_label() for line in plot_adversarial_training({"m": h}).axes[0].get_lines()]
    assert "m: robust test (PGD-20 at eps 0.1, first n=50 test examples)" in labels, labels


def test_robust_accuracy_titles_name_threat_model_suite_and_n():
    from robustcnn.figures import plot_scorecard

    title = plot_robust_curves(robust_table(), suite="quick").axes[0].get_title()
    assert "L-inf" in title and "suite quick" in title and "n=60" in title
    robust = robust_table().assign(ci_low=0.0, ci_high=1.0)
    title = plot_scorecard(robust, pd.DataFrame(columns=["source", "model", "epsilon", "robust_accuracy"]), "m",
                           suite="standard").axes[0].get_title()
    assert "L-inf" in title and "suite standard" in title and "n=60" in title


def test_a_single_epsilon_scorecard_sets_the_attacks_side_by_side():
    """With one epsilon every attack's point would sit on the same x and hide the others."""
    from robustcnn.figures import plot_scorecard
    rows = [("autoattack", 0.85), ("pgd", 0.89), ("deepfool", 0.915), ("worst_case", 0.85)]
    robust = pd.DataFrame([{"attack": a, "epsilon": 0.3, "robust_accuracy": r, "ci_low": r - 0.05,
                            "ci_high": r + 0.04, "n": 200, "threat_model": "linf"} for a, r in rows])
    fig = plot_scorecard(robust, pd.DataFrame(columns=["source", "model", "epsilon", "robust_accuracy"]), "m",
                         suite="full")
    ax = fig.axes[0]
    xs = [float(c.lines[0].get_xdata()[0]) for c in ax.containers if c.get_label().startswith("m / ")]
    assert len(xs) == 4 and len(set(xs)) == 4
    assert "all at eps 0.3" in ax.get_xlabel()


@pytest.mark.parametrize("layout", [None, "constrained"])
def test_a_saved_figure_has_the_box_matplotlib_tight_save_gives_it(tmp_path, layout):
    """save_figure lays the tight box out once for its three formats: its PNG must be matplotlib's own
    bbox_inches="tight" PNG at 300 dpi, pixel for pixel (a box too small would clip the legend or the title),
    and the figure keeps the canvas it had."""
    import io

    from matplotlib.figure import Figure

    def figure() -> Figure:
        fig = Figure(figsize=(8, 4), layout=layout)
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], label="a long legend entry placed outside the axes")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.suptitle("a suptitle that sticks out on both sides of the axes, wider than them")
        return fig

    fig = figure()
    canvas = fig.canvas
    save_figure(fig, tmp_path, "box")
    assert fig.canvas is canvas
    reference = io.BytesIO()
    figure().savefig(reference, format="png", dpi=300, bbox_inches="tight")
    ours, theirs = Image.open(tmp_path / "figures" / "box.png"), Image.open(reference)
    assert ours.size == theirs.size
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))


def test_gallery_title_names_the_split_and_how_many_images_it_chose_from():
    npz = gallery_npz(wrong=1)  # four test images, one misclassified before the attack
    title = plot_gallery(npz).get_suptitle()
    assert "first 4 test-split images" in title and "classified correctly before the attack" in title


@pytest.mark.parametrize("method, name", [("pgd", "PGD-7"), ("fgsm", "FGSM-RS")])
def test_adversarial_training_names_the_attack_that_made_its_training_batches(tmp_path, monkeypatch, method, name):
    import json

    run = adversarial_run(tmp_path)  # its manifest: lenet5-pgd trained with PGD-7 at eps 0.1
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["models"][1]["train"]["adversarial"]["method"] = method
    (run / "manifest.json").write_text(json.dumps(manifest))
    figs = captured(monkeypatch)
    report.redraw(run)
    labels = lines_by_label(figs["adversarial_training"])
    assert f"lenet5-pgd: train, {name} batches at eps 0.1 (running average, train mode)" in labels, list(labels)


def test_a_per_epsilon_gallery_says_each_example_was_attacked_at_its_epsilon_alone(tmp_path, monkeypatch):
    import io

    run = adversarial_run(tmp_path)
    robust = pd.read_csv(run / "tables" / "robust_accuracy.csv").assign(curve="per-epsilon")
    robust.to_csv(run / "tables" / "robust_accuracy.csv", index=False)
    buf = io.BytesIO()
    np.savez(buf, **gallery_npz())
    (run / "data").mkdir(exist_ok=True)
    (run / "data" / "gallery.npz").write_bytes(buf.getvalue())
    figs = captured(monkeypatch)
    report.redraw(run)
    title = figs["gallery"].get_suptitle()
    assert "pgd at epsilon 0.3 alone (per-epsilon curve)" in title and "smallest grid epsilon" not in title
    assert "smallest grid epsilon that breaks it" in plot_gallery(gallery_npz()).get_suptitle()  # cumulative


@pytest.mark.parametrize("low, high, labelled", [(0.27, 0.65, True), (0.01, 12.0, False)])
def test_growth_labels_minor_ticks_only_where_they_fit(low, high, labelled):
    from robustcnn.report_lineage import plot_growth

    growth = pd.DataFrame({"model": "m", "layer": ["input", "c1", "p1", "c2"], "kind": ["input", "conv", "pool", "conv"],
                           "relative_change": np.geomspace(low, high, 4)})
    fig = plot_growth(growth)
    fig.canvas.draw()
    ax = fig.axes[0]
    shown = [t.get_text() for t in ax.yaxis.get_minorticklabels() if t.get_text()
             and low <= t.get_position()[1] <= high]
    assert bool(shown) == labelled, shown  # within a decade the minor ticks carry the numbers; over 3 they would pile up
    assert "log scale" in ax.get_ylabel()


def test_the_robust_training_curves_n_comes_from_the_config_when_the_history_lacks_it(tmp_path, monkeypatch):
    run = adversarial_run(tmp_path)  # its config: eval_examples 40 for lenet5-pgd
    path = run / "tables" / "history_lenet5-pgd.csv"
    pd.read_csv(path).drop(columns=["robust_test_n"], errors="ignore").to_csv(path, index=False)
    figs = captured(monkeypatch)
    report.redraw(run)
    assert any("first n=40 test examples" in label for label in lines_by_label(figs["adversarial_training"]))


def test_vector_figures_embed_images_at_their_own_resolution(tmp_path):
    """Pixels stay pixels in SVG/PDF (an 8x8 image is embedded as 8x8, drawn crisp), not resampled at 300 dpi."""
    save_figure(plot_gallery(gallery_npz()), tmp_path, "gallery")
    svg = (tmp_path / "figures" / "gallery.svg").read_text()
    assert svg.count("image-rendering:pixelated") >= 9  # 3 examples x (original, perturbation, adversarial)


@pytest.mark.parametrize("adversarial", [False, True])
def test_the_marked_epoch_is_the_one_the_trainer_selected(adversarial):
    """The 'o' of the accuracy panel sits on the epoch train() chose on validation (robust validation accuracy
    under adversarial training), with test never consulted."""
    from robustcnn.data import load_dataset
    from robustcnn.models import create_model
    from robustcnn.train import AdversarialTraining, TrainConfig, seed_everything, train

    data = load_dataset("digits", image_size=28, train_subset=300, seed=0)
    seed_everything(0)
    adv = AdversarialTraining(epsilon=0.1, steps=1, eval_examples=30, eval_steps=2) if adversarial else None
    # 8 epochs under adversarial training: robust validation accuracy peaks at epoch 8, clean at 6 (a marker on
    # the clean peak would be the wrong epoch)
    result = train(create_model("lenet5", dataset=data), data, TrainConfig(epochs=8 if adversarial else 5, batch_size=32,
                   lr=3e-3, val_fraction=0.2, adversarial=adv), seed=0, device="cpu", progress=False)
    ax = plot_history({"m": result.history}, "t").axes[0]
    marks = [line for line in ax.get_lines() if line.get_marker() == "o" and len(line.get_xdata()) == 1]
    assert len(marks) == 1 and int(marks[0].get_xdata()[0]) == result.best_epoch, (result.best_epoch, result.history)


def test_a_warm_up_longer_than_the_run_labels_each_curve_with_its_own_epsilon(tmp_path, monkeypatch):
    """Robust test accuracy is always measured at the config's target epsilon (0.1 here), while a warm-up that
    outlasts the epochs leaves the training epsilon short of it (0.05 at the end)."""
    run = adversarial_run(tmp_path)
    path = run / "tables" / "history_lenet5-pgd.csv"
    h = pd.read_csv(path)
    h.assign(train_epsilon=np.linspace(0.05 / len(h), 0.05, len(h))).to_csv(path, index=False)
    figs = captured(monkeypatch)
    report.redraw(run)
    labels = " | ".join(lines_by_label(figs["adversarial_training"]))
    assert "robust test (PGD at eps 0.1" in labels and "PGD-7 batches at eps ramped to 0.05" in labels, labels
