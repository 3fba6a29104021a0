"""Figures of training runs, adversarial studies and benchmark scorecards, drawn from saved tables only (no torch).

Every function returns a matplotlib Figure (robustcnn.plotstyle: colours per model, styles per attack, intervals,
saving). `colors` maps model names to colours; pass one map (plotstyle.model_colors of the run's models) to every
figure of a run so a model keeps its colour throughout.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from robustcnn.plotstyle import (
    PALETTE,
    accuracy_band,
    attack_style,
    color_of,
    is_worst,
    legend,
    model_colors,
    std_band,
    subplots,
    threat_label,
)

LOG_EPOCHS_FROM = 40  # histories this long get a log epoch axis: what matters happens in the first few epochs


def train_label(h: pd.DataFrame) -> str:
    """What a history's train_accuracy column measured. Runs written before the eval-mode train pass (no
    train_eval_n or train_accuracy_running column) stored the running average over the epoch's training
    batches there: adversarial batches under adversarial training."""
    if "train_eval_n" in h or "train_accuracy_running" in h:
        n = f", n={int(h['train_eval_n'].iloc[-1])}" if "train_eval_n" in h and h["train_eval_n"].notna().any() else ""
        return f"train (clean, eval mode{n})"
    adversarial = "robust_test_accuracy" in h or "train_epsilon" in h
    return f"train ({'adversarial' if adversarial else 'training'} batches, running average, train mode)"


def epoch_axis(ax: Axes, last_epoch: float) -> None:
    """Log scale for long runs, where the action is in the first epochs."""
    if last_epoch >= LOG_EPOCHS_FROM:
        ax.set_xscale("log")
        ax.set_xlabel("epoch (log scale)")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")


def plot_history(histories: dict[str, pd.DataFrame], title: str, colors: dict[str, str] | None = None, *,
                 test_n: dict[str, int] | None = None) -> Figure:
    """Train vs validation and test accuracy and loss per epoch (the seed's Chart 4). Bands: mean ± std over
    seeds where the histories carry *_std columns, else the 95 % Wilson interval of test accuracy when its n is
    known. The best validation epoch is marked (selection never looks at test)."""
    colors = model_colors(histories) if colors is None else colors
    fig, (ax_acc, ax_loss) = subplots(1, 2, figsize=(11, 4.3))
    for label, h in histories.items():
        c, prefix = color_of(colors, label), f"{label}: " if len(histories) > 1 else ""
        n = (test_n or {}).get(label)
        for ax, metric in ((ax_acc, "accuracy"), (ax_loss, "loss")):
            ax.plot(h["epoch"], h[f"train_{metric}"], color=c, ls="--", lw=1.4, label=f"{prefix}{train_label(h)}")
            ax.plot(h["epoch"], h[f"test_{metric}"], color=c, lw=1.6,
                    label=f"{prefix}test" + (f" (n={n})" if n else ""))
            for split in ("train", "test"):
                if f"{split}_{metric}_std" in h:
                    std_band(ax, h["epoch"], h[f"{split}_{metric}"], h[f"{split}_{metric}_std"], c)
            if n and metric == "accuracy" and "test_accuracy_std" not in h:
                accuracy_band(ax, h["epoch"], h["test_accuracy"], n, c)
            if "val_accuracy" in h and h["val_accuracy"].notna().any():
                ax.plot(h["epoch"], h[f"val_{metric}"], color=c, ls=":", lw=1.4, label=f"{prefix}validation")
        if "val_accuracy" in h and h["val_accuracy"].notna().any():
            monitor = "robust_val_accuracy" if "robust_val_accuracy" in h else "val_accuracy"  # as train() selects
            best = h.loc[h[monitor].idxmax()]
            ax_acc.plot(best["epoch"], best["val_accuracy"], "o", color=c, mfc="none", ms=9)
    bands = ("bands: ± std over seeds" if any(c.endswith("_std") for h in histories.values() for c in h)
             else "bands: 95 % Wilson interval of test accuracy" if test_n else "")
    ax_acc.set(ylabel="accuracy", title="accuracy" + (" (o = selected epoch, on validation)" if any(
        "val_accuracy" in h and h["val_accuracy"].notna().any() for h in histories.values()) else ""))
    ax_loss.set(ylabel="loss", title="loss")
    last = max(float(h["epoch"].max()) for h in histories.values())
    for ax in (ax_acc, ax_loss):
        epoch_axis(ax, last)
        ax.grid(alpha=0.3)
        legend(ax)
    fig.suptitle(f"{title}" + (f"; {bands}" if bands else ""))
    return fig


def _suite_words(suite: str | None) -> str:
    return f", suite {suite}" if suite else ""


def _title_n(ns: pd.Series) -> str:
    values = sorted({int(v) for v in ns.dropna()})
    return "n=" + "/".join(str(v) for v in values) if values else "n unknown"


def plot_robust_curves(robust: pd.DataFrame, colors: dict[str, str] | None = None, curve: str = "cumulative",
                       split: str = "test", suite: str | None = None) -> Figure:
    """Robust accuracy vs epsilon, a panel per threat model: colour = model, line style and marker = attack,
    the per-sample worst case thick and on top with its 95 % Wilson band (over the n examples)."""
    threats = list(dict.fromkeys(robust["threat_model"]))
    colors = model_colors(robust["model"]) if colors is None else colors
    fig, axes = subplots(1, len(threats), figsize=(6.4 * len(threats), 4.6), squeeze=False)
    for ax, threat in zip(axes[0], threats):
        part = robust[robust["threat_model"] == threat]
        for model, g_model in part.groupby("model", sort=False):
            c = color_of(colors, model)
            attacks = list(dict.fromkeys(g_model["attack"]))
            banded = next((a for a in attacks if is_worst(a)), attacks[0] if len(attacks) == 1 else None)
            for attack in attacks:
                g = g_model[g_model["attack"] == attack]
                ax.plot(g["epsilon"], g["robust_accuracy"], color=c, label=f"{model} / {attack}",
                        **attack_style(attack))
                if attack == banded and "n" in g:
                    accuracy_band(ax, g["epsilon"], g["robust_accuracy"], g["n"], c, zorder=1)
        unit = "L-inf, fraction of pixel range" if threat == "linf" else f"{threat_label(threat)} norm, [0,1] pixel units"
        ax.set(xlabel=f"epsilon ({unit})", ylabel="robust accuracy", ylim=(-0.02, 1.02),
               title=f"robust accuracy vs epsilon ({threat_label(threat)}, {curve} curve)\n"
                     f"{split}, first {_title_n(part['n']) if 'n' in part else 'n unknown'}{_suite_words(suite)}; "
                     "band: 95 % Wilson interval of the worst case")
        ax.grid(alpha=0.3)
        legend(ax)
    fig.tight_layout()
    return fig


def _gallery_rows(npz: dict[str, np.ndarray], model: str) -> list[int]:
    """Examples the model classified correctly before any attack: the ones the attack broke first, then the
    ones it did not (a misclassified example says nothing about the attack)."""
    label, clean, adv = (npz[f"{k}__{model}"] for k in ("labels", "clean_pred", "adv_pred"))
    right = [i for i in range(len(label)) if clean[i] == label[i]]
    return [i for i in right if adv[i] != label[i]] + [i for i in right if adv[i] == label[i]]


def _image(img: np.ndarray) -> np.ndarray:
    img = np.transpose(img, (1, 2, 0))
    return img[..., 0] if img.shape[-1] == 1 else np.clip(img, 0, 1)


def plot_gallery(npz: dict[str, np.ndarray], curve: str | None = "cumulative") -> Figure:
    """Per model: original, perturbation (on a signed colour scale with its colour bar) and adversarial, with
    predictions and confidences (the spirit of Goodfellow et al.'s panda -> gibbon figure); only examples the
    model got right before the attack. curve: the evaluation's (robustcnn.evaluation.Curve): under "cumulative"
    each example is shown at the smallest grid epsilon that broke it, under "per-epsilon" at the gallery's own."""
    models, names = [str(m) for m in npz["models"]], [str(c) for c in npz["class_names"]]
    rows = {m: _gallery_rows(npz, m) for m in models}
    k = max(1, max(len(r) for r in rows.values()))
    height = 1.65 * k + 1.2
    fig, axes = subplots(k, 3 * len(models), figsize=(1.75 * 3 * len(models), height), squeeze=False)
    fig.subplots_adjust(top=1 - 0.85 / height, bottom=0.75 / height, hspace=0.45, wspace=0.12)
    for ax in axes.flat:
        ax.axis("off")
    for m, model in enumerate(models):
        x, adv, label = npz[f"x__{model}"], npz[f"adv__{model}"], npz[f"labels__{model}"]
        deltas = [(adv[i] - x[i]).mean(0) for i in rows[model]]  # (H, W), mean over channels
        scale = max((float(np.abs(d).max()) for d in deltas), default=0.0) or 1e-3
        image = None
        for row, (i, delta) in enumerate(zip(rows[model], deltas)):
            cols = axes[row, 3 * m:3 * m + 3]
            broken = npz[f"adv_pred__{model}"][i] != label[i]
            cols[0].imshow(_image(x[i]), cmap="gray", vmin=0, vmax=1, interpolation="none")
            cols[0].set_title(f"{model}: true {names[label[i]]}\npredicted {names[npz[f'clean_pred__{model}'][i]]} "
                              f"({npz[f'clean_conf__{model}'][i]:.0%})", fontsize=7)
            image = cols[1].imshow(delta, cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="none")
            d = adv[i] - x[i]
            norms = f"|d|inf={float(np.abs(d).max()):.3g}, |d|2={float(np.sqrt((d ** 2).sum())):.3g}"
            cols[1].set_title(f"perturbation\n{norms}" if broken else "attack failed\n(no adversarial found)",
                              fontsize=7)
            cols[2].imshow(_image(adv[i]), cmap="gray", vmin=0, vmax=1, interpolation="none")
            cols[2].set_title(f"adversarial\n{names[npz[f'adv_pred__{model}'][i]]} "
                              f"({npz[f'adv_conf__{model}'][i]:.0%})", fontsize=7)
        if image is not None:  # under the model's last perturbation panel, on the scale all its panels share
            cax = axes[len(rows[model]) - 1, 3 * m + 1].inset_axes([0.0, -0.2, 1.0, 0.07])
            bar = fig.colorbar(image, cax=cax, orientation="horizontal")
            bar.set_label(f"{model}: perturbation (pixel value" + (", mean over channels)" if x.shape[1] > 1 else ")"),
                          fontsize=7)
            bar.ax.tick_params(labelsize=6)
        else:
            axes[0, 3 * m].set_title(f"{model}: no example of the first {len(label)}\nwas classified correctly",
                                     fontsize=7)
    shown = len(npz[f"labels__{models[0]}"]) if models else 0
    eps = float(npz["epsilon"])
    how = (f"{npz['attack']} at epsilon {eps:g} alone (per-epsilon curve)" if curve == "per-epsilon" else
           f"{npz['attack']} up to epsilon {eps:g}")
    order = ("broken ones first" if curve == "per-epsilon" else
             "broken ones first, each at the smallest grid epsilon that breaks it")
    fig.suptitle(f"{how} on the first {shown} test-split images: those classified correctly before the attack\n"
                 f"({order}): original | perturbation | adversarial", fontsize=9)
    return fig


def plot_radii(radii: pd.DataFrame, colors: dict[str, str] | None = None) -> Figure:
    """Histogram of each example's minimal adversarial perturbation (FMN radius), a panel per threat model."""
    threats = list(dict.fromkeys(radii["threat_model"]))
    colors = model_colors(radii["model"]) if colors is None else colors
    fig, axes = subplots(1, len(threats), figsize=(6.2 * len(threats), 4.2), squeeze=False)
    for ax, threat in zip(axes[0], threats):
        part = radii[radii["threat_model"] == threat]
        finite = part["radius"][np.isfinite(part["radius"]) & (part["radius"] > 0)]
        bins = np.linspace(0, float(finite.max()) if len(finite) else 1.0, 31)
        for model, g in part.groupby("model", sort=False):
            r = g["radius"].to_numpy(dtype=float)
            ok = r[np.isfinite(r) & (r > 0)]
            ax.hist(ok, bins=bins, histtype="step", lw=1.8, color=color_of(colors, model),
                    label=f"{model} (n={len(r)}: {int((r == 0).sum())} misclassified clean, "
                          f"{int(np.isinf(r).sum())} not broken)")
        ax.set(xlabel=f"minimal adversarial perturbation ({threat_label(threat)} norm, FMN radius)",
               ylabel="test examples", title=f"robustness radii ({threat_label(threat)}), test, first "
                                             f"{_title_n(part.groupby('model').size())}")
        ax.grid(alpha=0.3)
        legend(ax)
    fig.tight_layout()
    return fig


def plot_norms(samples: pd.DataFrame, colors: dict[str, str] | None = None, curve: str = "cumulative"
               ) -> Figure | None:
    """Without FMN radii: the L-inf and L2 norms of the adversarial examples each attack found (at its largest
    epsilon). These are not minimal perturbations: on a cumulative curve the L-inf norm is about the smallest grid
    epsilon that broke the example, so the L-inf row only shows the grid."""
    attacked = samples[~samples["attack"].map(is_worst)]
    attacked = attacked[attacked["epsilon"] == attacked.groupby("attack")["epsilon"].transform("max")]
    found = attacked[attacked["perturbation_l2"].notna()]
    if found.empty:
        return None
    colors = model_colors(found["model"]) if colors is None else colors
    evaluated = attacked.groupby(["attack", "model"]).size()  # n: examples attacked, found or not
    attacks = list(dict.fromkeys(found["attack"]))
    fig, axes = subplots(2, len(attacks), figsize=(5 * len(attacks), 6.8), squeeze=False)
    for col, attack in enumerate(attacks):
        part = found[found["attack"] == attack]
        threat = threat_label(part["threat_model"].iloc[0])
        budget = f"{attack}, {threat} attack at eps {part['epsilon'].iloc[0]:g} ({curve} curve)"
        for row, (norm, name) in enumerate((("perturbation_linf", "L-inf"), ("perturbation_l2", "L2"))):
            ax = axes[row, col]
            for model, g in part.groupby("model", sort=False):
                ax.hist(g[norm], bins=30, alpha=0.45, color=color_of(colors, model),
                        label=f"{model} (found: {len(g)} of n={evaluated[(attack, model)]})")
            note = " (grid epsilons, not minimal)" if name == threat else " (not minimal)"
            ax.set(xlabel=f"{name} norm of the perturbation found", ylabel="adversarial examples",
                   title=f"{budget}\n{name} norm{note}")
            legend(ax)
    # one line for what every panel shares, so the panels' titles stay short enough not to run into each other
    fig.suptitle("adversarial examples found on the test split, at each attack's largest epsilon" + (
        " (cumulative: broken at any grid eps up to it)" if curve == "cumulative" else ""))
    fig.tight_layout()
    return fig


def _last_int(h: pd.DataFrame, column: str) -> int | None:
    """The column's last recorded value as an int; None for runs written before it existed."""
    if column not in h or not h[column].notna().any():
        return None
    return int(h[column].dropna().iloc[-1])


def plot_adversarial_training(histories: dict[str, pd.DataFrame], colors: dict[str, str] | None = None, *,
                              robust_n: dict[str, int] | None = None, attacks: dict[str, str] | None = None,
                              robust_eps: dict[str, float] | None = None) -> Figure:
    """Clean and robust test accuracy per epoch (robust overfitting, Rice et al. 2020), and the running accuracy
    on the adversarial training batches, each under its own label. attacks: per model, the attack that made its
    training batches ('PGD-3'), named in the label. robust_eps: per model, the epsilon of its per-epoch robust test
    accuracy (the config's target epsilon; without it, the last training epsilon, which is the same unless a
    warm-up ramp outlasted the epochs)."""
    colors = model_colors(histories) if colors is None else colors
    fig, ax = subplots(figsize=(7, 4.4))
    banded = False
    for label, h in histories.items():
        c = color_of(colors, label)
        trained = h["train_epsilon"] if "train_epsilon" in h else pd.Series(dtype=float)
        tested = (robust_eps or {}).get(label, trained.iloc[-1] if len(trained) else None)
        eps = f" at eps {tested:g}" if tested is not None else ""
        ramp = trained.nunique() > 1  # a warm-up: the training epsilon grew over the epochs
        train_eps = f" at eps {'ramped to ' if ramp else ''}{trained.iloc[-1]:g}" if len(trained) else ""
        n = _last_int(h, "robust_test_n") or (robust_n or {}).get(label)  # the column: runs since it was added
        steps = _last_int(h, "robust_eval_steps")
        ax.plot(h["epoch"], h["test_accuracy"], color=c, lw=1.6, label=f"{label}: clean test")
        ax.plot(h["epoch"], h["robust_test_accuracy"], color=c, ls="--", lw=1.6,
                label=f"{label}: robust test (PGD{f'-{steps}' if steps else ''}{eps}"
                      + (f", first n={n} test examples)" if n else ")"))
        if n:
            accuracy_band(ax, h["epoch"], h["robust_test_accuracy"], n, c)
            banded = True
        running = "train_accuracy_running" if "train_accuracy_running" in h else "train_accuracy"
        ax.plot(h["epoch"], h[running], color=c, ls=":", lw=1.6,
                label=f"{label}: train, {(attacks or {}).get(label, 'adversarial')} batches{train_eps} (running "
                      "average, train mode)")
    ax.set(ylabel="accuracy", ylim=(-0.02, 1.02), title="adversarial training" +
           ("; band: 95 % Wilson interval of robust test accuracy" if banded else ""))
    epoch_axis(ax, max(float(h["epoch"].max()) for h in histories.values()))
    ax.grid(alpha=0.3)
    legend(ax)
    return fig


def plot_scorecard(robust: pd.DataFrame, references: pd.DataFrame, model: str, curve: str = "cumulative",
                   suite: str | None = None) -> Figure:
    """The model's robust accuracy vs epsilon with 95 % intervals (the worst case black, thick, on top), a panel
    per threat model, beside the shipped reference models' worst case (dotted, a colour per reference; L-inf)."""
    threats = list(dict.fromkeys(robust["threat_model"])) if "threat_model" in robust and len(robust) else ["linf"]
    fig, axes = subplots(1, len(threats), figsize=(7.5 * len(threats), 4.8), squeeze=False)
    for ax, threat in zip(axes[0], threats):
        part = robust[robust["threat_model"] == threat] if "threat_model" in robust else robust
        _scorecard_panel(ax, part, references if threat == "linf" else references.iloc[:0], model, curve, suite,
                         threat)
    if len(threats) > 1:
        fig.tight_layout()
    return fig


def _scorecard_panel(ax: Axes, robust: pd.DataFrame, references: pd.DataFrame, model: str, curve: str,
                     suite: str | None, threat: str) -> None:
    attack_colors = model_colors([a for a in robust["attack"] if not is_worst(a)])
    epsilons = sorted(set(robust["epsilon"]))
    # One epsilon: lines have no length and the points sit on top of each other, so set the attacks side by side.
    dodge = 0.0 if len(epsilons) > 1 else max(epsilons[0], 0.01) * 0.04
    for i, (attack, g) in enumerate(robust.groupby("attack", sort=False)):
        style = attack_style(attack)
        if dodge and is_worst(attack):
            style = {**style, "marker": "D", "markersize": 8, "alpha": 1.0}
        color = "k" if is_worst(attack) else attack_colors[attack]
        # clipped at 0: tables written before the interval was made to contain its point can miss it by 1e-16
        err = np.clip([g["robust_accuracy"] - g["ci_low"], g["ci_high"] - g["robust_accuracy"]], 0, None)
        ax.errorbar(g["epsilon"] + i * dodge, g["robust_accuracy"], yerr=err, color=color, capsize=2,
                    elinewidth=0.8, label=f"{model} / {attack}", **style)
    if dodge:
        n_attacks = robust["attack"].nunique()
        ax.set_xticks(epsilons)
        ax.set_xlim(epsilons[0] - 2 * dodge, epsilons[0] + (n_attacks + 1) * dodge)
        ax.set_xticks([epsilons[0] + i * dodge for i in range(n_attacks)], minor=True)
    refs = list(dict.fromkeys(references["model"])) if len(references) else []
    ref_colors = {r: PALETTE[(len(attack_colors) + i) % len(PALETTE)] for i, r in enumerate(refs)}  # not an attack's
    for (source, ref), g in references.groupby(["source", "model"], sort=False):
        ax.plot(g["epsilon"], g["robust_accuracy"], ls=":", lw=1.4, marker=".", color=ref_colors[ref],
                label=f"reference {ref} ({source})")
    label = threat_label(threat)
    spread = f"; attacks side by side, all at eps {epsilons[0]:g}" if dodge else ""
    unit = "fraction of pixel range" if threat == "linf" else "norm, [0,1] pixel units"
    ax.set(xlabel=f"epsilon ({label}, {unit}{spread})", ylabel="robust accuracy",
           ylim=(-0.02, 1.02), title=f"robust accuracy vs epsilon ({label}, {curve} curve)\ntest, first "
                 f"{_title_n(robust['n']) if 'n' in robust else 'n unknown'}{_suite_words(suite)}; "
                 "bars: 95 % Wilson interval")
    ax.grid(alpha=0.3)
    legend(ax)
