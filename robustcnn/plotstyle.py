"""The look every robustcnn figure shares, and how figures are saved.

- One colour per model across every figure of a run (`model_colors`, keyed by name in the run's model order),
  from the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies).
- One line style and marker per attack (`attack_style`); the per-sample worst case is a thick translucent line
  drawn on top, so the attack it equals (often PGD) still shows through it.
- Legend handles long enough to show dashes (`legend`).
- Intervals where the numbers have them: Wilson intervals for accuracies over n examples (`wilson`), std over
  seeds for sweeps; a single seed gets no error bar (its std says nothing), the figure says n_seeds=1.
- figures/<name>.png at 300 dpi, plus .svg and .pdf, written atomically and byte-stable across redraws.

Figures are matplotlib Figure objects, never pyplot's: no backend switch, no global rcParams change, no figure
shown in (or leaked into) a notebook that imports robustcnn.
"""
from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from robustcnn.results import atomic_write_bytes

DPI = 300
FORMATS = ("png", "svg", "pdf")
# Okabe & Ito (2008), without the yellow that vanishes on white; black is kept for a scorecard's worst case
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C564B", "#7F7F7F", "#BCBD22",
           "#17BECF")
HANDLE_LENGTH = 3.5  # legend handles in font sizes: long enough for a full dash pattern and a marker

_ATTACK_STYLES = {"pgd": ("-", "o"), "l2-pgd": ("-", "o"), "fgsm": ("--", "^"), "l2-fgm": ("--", "^"),
                  "autoattack": ("-.", "s"), "autoattack-l2": ("-.", "s"), "deepfool": (":", "v"),
                  "cw-l2": (":", "D"), "square": ((0, (5, 1.5, 1, 1.5, 1, 1.5)), "P")}
_FALLBACK_STYLES = [((0, (1, 1)), "x"), ((0, (6, 2)), "*"), ((0, (3, 1, 1, 1)), "h"), ((0, (8, 2, 2, 2)), "<")]
WORST = {"lw": 5.5, "alpha": 0.4, "zorder": 6, "solid_capstyle": "round"}


def subplots(*args: Any, figsize: tuple[float, float] | None = None, **kwargs: Any) -> tuple[Figure, Any]:
    """pyplot.subplots without pyplot."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def model_colors(models: Iterable[str]) -> dict[str, str]:
    """One colour per model, in the order given (the run's model order): the same model gets the same colour
    in every figure of a run that is drawn with this map."""
    names = list(dict.fromkeys(str(m) for m in models))
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def color_of(colors: dict[str, str], model: str) -> str:
    """A model's colour; a model missing from the map (a table the run order did not list) gets the next free."""
    if model not in colors:
        colors[model] = PALETTE[len(colors) % len(PALETTE)]
    return colors[model]


def is_worst(attack: str) -> bool:
    return str(attack).startswith("worst_case")


def attack_style(attack: str) -> dict[str, Any]:
    """Plot keywords for an attack's curve: its own dash pattern and marker; the worst case thick and on top."""
    if is_worst(attack):
        return {"ls": "-", "marker": None, **WORST}
    ls, marker = _ATTACK_STYLES.get(attack) or _FALLBACK_STYLES[sum(map(ord, attack)) % len(_FALLBACK_STYLES)]
    return {"ls": ls, "marker": marker, "ms": 4, "lw": 1.4, "zorder": 3}


def legend(ax: Axes, **kwargs: Any) -> None:
    """A legend whose handles show the dash pattern and marker (matplotlib's default 2.0 cuts dashes)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**{"fontsize": 7, "handlelength": HANDLE_LENGTH, "framealpha": 0.9, **kwargs})


def threat_label(threat: str) -> str:
    """'linf' -> 'L-inf', 'l2' -> 'L2' (how a paper writes the norms)."""
    return {"linf": "L-inf", "l2": "L2"}.get(str(threat).lower(), str(threat))


def wilson(k: np.ndarray | float, n: np.ndarray | float, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """95 % Wilson score interval for k successes in n trials (Wilson 1927), elementwise."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    p = np.divide(k, n, out=np.zeros_like(k), where=n > 0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return np.minimum(p, np.clip(centre - half, 0, 1)), np.maximum(p, np.clip(centre + half, 0, 1))  # p inside


def accuracy_band(ax: Axes, x: Any, accuracy: Any, n: Any, color: str, **kwargs: Any) -> None:
    """Shade the 95 % Wilson interval of accuracies measured on n examples each."""
    acc, n = np.asarray(accuracy, dtype=float), np.asarray(n, dtype=float)
    low, high = wilson(np.round(acc * n), n)
    ax.fill_between(np.asarray(x, dtype=float), low, high, color=color, alpha=0.1, lw=0, **kwargs)


def std_band(ax: Axes, x: Any, mean: Any, std: Any, color: str) -> None:
    """Shade mean ± std (over seeds)."""
    mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    ax.fill_between(np.asarray(x, dtype=float), mean - std, mean + std, color=color, alpha=0.18, lw=0)


def save_figure(fig: Figure, run_dir: Path, name: str) -> str:
    """figures/<name>.png (300 dpi), .svg and .pdf, written atomically and without timestamps (a redraw is
    byte-identical); returns the PNG's path relative to the run."""
    # the tight box is laid out once (a full text layout, the costliest part of a save), not once per format,
    # at the PNG's dpi as savefig would; the vector formats get the same box. A figure with a layout engine
    # (constrained layout) is placed at draw time: it is left to savefig's own "tight".
    box: Any = "tight"
    if fig.get_layout_engine() is None:
        shown_dpi, canvas = fig.dpi, fig.canvas
        fig.dpi = DPI
        try:
            box = fig.get_tightbbox(FigureCanvasAgg(fig).get_renderer()).padded(matplotlib.rcParams["savefig.pad_inches"])
        finally:
            fig.dpi = shown_dpi
            fig.set_canvas(canvas)
    for fmt in FORMATS:
        buf = io.BytesIO()
        metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None}}.get(fmt)
        with matplotlib.rc_context({"svg.hashsalt": "robustcnn"}):  # stable SVG ids
            fig.savefig(buf, format=fmt, dpi=DPI, bbox_inches=box, metadata=metadata)
        atomic_write_bytes(run_dir / "figures" / f"{name}.{fmt}", buf.getvalue())
    return f"figures/{name}.png"
