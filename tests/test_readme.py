"""Every Python block of the README runs verbatim (on the embedded digits; MNIST appears only in a config path)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_python_blocks():
    assert python_blocks(), "the README's Python API section lost its code block"


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index, monkeypatch, tmp_path):
    monkeypatch.chdir(README.parent)  # the snippets name studies/*.toml relative to the repository
    code = python_blocks()[index]
    namespace: dict = {}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    if "ev" in namespace:  # the evaluation block: the tables it promises are there and hold numbers
        ev = namespace["ev"]
        assert {"robust_accuracy", "curve"} <= set(ev.robust.columns) and len(ev.lint)
        x_adv = namespace["x_adv"]
        assert x_adv.shape == (8, 1, 28, 28) and float((x_adv - namespace["data"].x_test[:8]).abs().max()) <= 0.1 + 1e-6


def test_the_readmes_reference_run_is_the_default_profile_it_describes():
    """The quickstart's numbers in the README come from its reference run; that run must be what `robustcnn study
    adversarial` runs today (a profile changed without regenerating it, or the README's words, fails here)."""
    import json

    from robustcnn.experiments.adversarial import AdversarialStudyConfig
    from robustcnn.results import to_jsonable

    text = README.read_text(encoding="utf-8")
    run = re.search(r"committed reference run \(`(results/adversarial/[^`]+)`\)", text)
    assert run, "the README no longer names the quickstart's reference run"
    manifest = json.loads((README.parent / run.group(1) / "manifest.json").read_text())
    default = to_jsonable(AdversarialStudyConfig())
    placement = {"executor", "workers", "address"}  # where it ran, not what: the numbers do not depend on it
    assert set(manifest["config"]) == set(default)
    for key in set(default) - placement:
        assert manifest["config"][key] == default[key], key
    robust = next(m for m in AdversarialStudyConfig().models if m.train.adversarial is not None)
    assert f"PGD-{robust.train.adversarial.steps} for {robust.train.epochs} epochs" in text
