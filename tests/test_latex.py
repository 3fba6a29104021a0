"""LaTeX tables beside CSV and Markdown: well-formed booktabs, escaped names, accuracy as one-decimal percentages."""
from __future__ import annotations

import re

import pandas as pd

from robustcnn.latex import escape
from robustcnn.results import write_table


def unescaped(text: str, ch: str) -> int:
    return len(re.findall(r"(?<!\\)" + re.escape(ch), text))


def test_write_table_writes_well_formed_booktabs(tmp_path):
    df = pd.DataFrame({"model": ["lenet5_pgd 100%", "a&b#c$d{e}f~g^h\\i"], "epsilon": [0.1, 0.3],
                       "robust_accuracy": [0.875, 0.0625], "n": [100, 100]})
    write_table(tmp_path, "robust_accuracy", df, title="Robust accuracy (n=100, 50% FGSM)")
    tex = (tmp_path / "tables" / "robust_accuracy.tex").read_text()
    assert (tmp_path / "tables" / "robust_accuracy.csv").exists() and (tmp_path / "tables" / "robust_accuracy.md").exists()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) == 1, rule
    assert unescaped(tex, "{") == unescaped(tex, "}")
    assert r"\begin{tabular}{lrrr}" in tex
    body = tex[tex.index(r"\toprule") + len(r"\toprule"):tex.index(r"\bottomrule")].replace(r"\midrule", "")
    lines = [line for line in body.strip().splitlines() if line]
    assert len(lines) == 3 and all(unescaped(line, "&") == 3 and line.endswith(r"\\") for line in lines)
    assert r"lenet5\_pgd 100\%" in tex and r"50\% FGSM" in tex
    assert r"a\&b\#c\$d\{e\}f\textasciitilde{}g\textasciicircum{}h\textbackslash{}i" in tex
    assert "87.5" in lines[1] and "6.2" in lines[2] and r"robust\_accuracy (\%)" in lines[0]
    assert "0.875" not in tex


def test_per_sample_tables_get_no_tex(tmp_path):
    write_table(tmp_path, "robust_samples", pd.DataFrame({"index": [0]}), markdown=False)
    assert not (tmp_path / "tables" / "robust_samples.tex").exists()


def test_escape_leaves_plain_text_alone():
    assert escape("lenet5 pgd") == "lenet5 pgd" and escape("x_y") == r"x\_y"


def test_mean_pm_std_cells_and_percent_headers_are_written_once():
    from robustcnn.latex import latex_table

    tex = latex_table(pd.DataFrame({"variant": ["none"], "test_accuracy (%)": ["93.9 ± 0.7"], "accuracy": [0.5]}))
    assert r"93.9 $\pm$ 0.7" in tex and "±" not in tex
    assert r"test\_accuracy (\%) & accuracy (\%) \\" in tex and r"(\%) (\%)" not in tex
