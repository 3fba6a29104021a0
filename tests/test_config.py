"""Configs: unknown keys are errors, overrides reach any value, shipped study configs resolve."""
from __future__ import annotations

from pathlib import Path

import pytest

from robustcnn.config import apply_overrides, load_config, parse_override
from robustcnn.errors import UsageError
from robustcnn.experiments.adversarial import AdversarialStudyConfig

STUDIES = Path(__file__).resolve().parent.parent / "studies"


def test_defaults_are_the_digits_cpu_profile():
    cfg = load_config(AdversarialStudyConfig)
    assert cfg.data.dataset == "digits" and [m.name for m in cfg.models] == ["lenet5", "lenet5-pgd"]


def test_unknown_keys_are_errors_with_hints(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[evaluation]\nepsilon = [0.1]\n')
    with pytest.raises(UsageError, match="unknown config key 'evaluation.epsilon' \\(did you mean 'epsilons'"):
        load_config(AdversarialStudyConfig, path)
    with pytest.raises(UsageError, match="unknown config key 'seeed'"):
        load_config(AdversarialStudyConfig, None, ["seeed=1"])


def test_the_renamed_randomization_key_says_its_new_name():
    from robustcnn.data import Randomization
    with pytest.raises(UsageError, match="config key 'data.corruption' is now 'data.randomization'"):
        load_config(AdversarialStudyConfig, None, ["data.corruption=random_pixels"])
    cfg = load_config(AdversarialStudyConfig, None, ["data.randomization=random_pixels"])
    assert cfg.data.randomization == Randomization.RANDOM_PIXELS


def test_overrides_reach_nested_values_and_list_items():
    cfg = load_config(AdversarialStudyConfig, None, [
        "evaluation.epsilons=[0, 0.1]", 'evaluation.attacks=["fgsm"]', 'evaluation.gallery_attack="fgsm"', "seed=7",
        'models=[{name="a", arch="lenet5"}, {name="b", arch="mlp"}]', "models.1.train.epochs=2"])
    assert cfg.evaluation.epsilons == [0.0, 0.1] and [a.name for a in cfg.evaluation.attacks] == ["fgsm"]
    assert cfg.seed == 7 and cfg.models[1].train.epochs == 2 and cfg.models[1].architecture == "mlp"


@pytest.mark.parametrize("override,match", [
    ("evaluation.epsilons=[-0.1]", "epsilon -0.1 must be a finite number >= 0"),
    ("evaluation.epsilons=[0, 1.5]", "outside \\[0, 1\\] for the L-inf attack"),
    ('evaluation.attacks=["pgdd"]', "unknown attack 'pgdd'"),
    ("seed=abc", "must be an integer"),
    ("models.0.train.optimizer=adamw", "not one of sgd, adam, adadelta"),
    ("nonsense", "must look like key=value"),
])
def test_bad_values(override, match):
    with pytest.raises(UsageError, match=match):
        load_config(AdversarialStudyConfig, None, [override])


def test_parse_override_reads_toml_values():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=hello") == (["a"], "hello")
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


@pytest.mark.parametrize("path", sorted(STUDIES.glob("adversarial-*.toml")), ids=lambda p: p.name)
def test_every_shipped_adversarial_config_resolves(path):
    cfg = load_config(AdversarialStudyConfig, path)
    assert cfg.models and cfg.evaluation.attacks


OWN_CONFIG_CLASS = ("adversarial-", "invariance-", "lineage-")  # studies with a config class of their own


@pytest.mark.parametrize("path", sorted(p for p in STUDIES.glob("*.toml") if not p.name.startswith(OWN_CONFIG_CLASS)),
                         ids=lambda p: p.name)
def test_every_shipped_sweep_config_resolves(path):
    from robustcnn.config import read_toml
    from robustcnn.experiments.generalization import SweepStudy, SweepStudyConfig, default_config

    study = SweepStudy(read_toml(path)["study"])
    cfg = load_config(SweepStudyConfig, path, base=SweepStudyConfig(study=study))
    assert cfg.study == study and (cfg.variants or cfg.widths or cfg.train_sizes)
    assert cfg.data.train_subset == read_toml(path)["data"].get("train_subset")  # nothing leaks from a profile
    assert default_config(study).study == study


@pytest.mark.parametrize("path", sorted(p for p in STUDIES.glob("*.toml") if p.name.startswith(("invariance-", "lineage-"))),
                         ids=lambda p: p.name)
def test_every_shipped_invariance_and_lineage_config_resolves(path):
    from robustcnn.experiments.invariance import InvarianceStudyConfig
    from robustcnn.experiments.lineage import LineageStudyConfig

    cls = InvarianceStudyConfig if path.name.startswith("invariance-") else LineageStudyConfig
    cfg = load_config(cls, path)
    assert cfg.models


@pytest.mark.parametrize("override,match", [
    ("seed.x=1", "'seed' is a value \\(0\\), not a table"),
    ("models.0.name.first=1", "'models.0.name' is a value"),
    (f"seed={2**70}", "out of range"),
    ("seed=-1", "out of range"),
    ("evaluation.batch_size=-9223372036854775809", "out of range"),
    ("evaluation.epsilons=[0.1, nan]", "must be a number, got nan"),
])
def test_overrides_that_cannot_apply_are_usage_errors(override, match):
    with pytest.raises(UsageError, match=match):
        load_config(AdversarialStudyConfig, None, [override])


def test_sweep_seeds_are_checked_like_the_seed():
    from robustcnn.experiments.generalization import SweepStudyConfig

    with pytest.raises(UsageError, match="'seeds\\[1\\]' = -3 is out of range"):
        load_config(SweepStudyConfig, None, ["seeds=[0, -3]"])


def test_a_config_file_that_is_not_utf8_is_a_usage_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[data]\ndataset = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(UsageError, match="is not UTF-8 text"):
        load_config(AdversarialStudyConfig, path)
