"""LaTeX tables for papers: booktabs (\\toprule, \\midrule, \\bottomrule), text escaped, accuracy columns as
percentages with one decimal (robustcnn.formatting decides which columns are fractions, for Markdown too). Imports
only robustcnn.formatting (results.write_table writes one beside each CSV)."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from robustcnn.formatting import is_percent

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--"}


def escape(text: Any) -> str:
    """Text safe in a LaTeX table cell: each of \\ & % $ # _ { } ~ ^ escaped, newlines as spaces."""
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text).replace("\n", " "))


def _cell(value: Any, percent: bool) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return escape(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "--" if math.isnan(value) else (r"$\infty$" if value > 0 else r"$-\infty$")
    if percent:
        return f"{100 * float(value):.1f}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def latex_table(df: pd.DataFrame, caption: str | None = None) -> str:
    """A booktabs tabular (in a table float when a caption is given); numbers right-aligned, text left."""
    cols = [str(c) for c in df.columns]
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) else "l"
                    for c in df.columns)
    head = " & ".join(escape(c) + (r" (\%)" if is_percent(c) and "%" not in c else "") for c in cols) + r" \\"
    rows = [" & ".join(_cell(v, is_percent(c)) for c, v in zip(cols, row)) + r" \\"
            for row in df.itertuples(index=False)]
    body = [rf"\begin{{tabular}}{{{align}}}", r"\toprule", head, r"\midrule", *rows, r"\bottomrule", r"\end{tabular}"]
    if caption is None:
        return "\n".join(body) + "\n"
    return "\n".join([r"\begin{table}", r"\centering", rf"\caption{{{escape(caption)}}}", *body, r"\end{table}"]) + "\n"
