"""Model files never run code without trust_pickle: a crafted payload for every model form (torch.export .pt2,
TorchScript, torch.save weights) would create a marker file; refused, the marker must not exist. Each payload is
shown to be live (loading it with trust_pickle=True does create the marker), so these tests can fail."""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import shlex
import zipfile
from contextlib import suppress
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from robustcnn.cli import app
from robustcnn.errors import UsageError
from robustcnn.model_files import read_model_file, read_weights

FAST = ["--dataset", "digits", "--image-size", "28", "--n-examples", "20", "--eps", "0,0.1", "--attacks", "fgsm",
        "--device", "cpu"]


class Touch:
    """Unpickling this calls open(marker, 'w'): the stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 5), nn.Tanh(), nn.AvgPool2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)).eval()


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> dict[str, Path]:
    """The three forms, written by torch itself (the .pt2 with a dynamic batch, so it carries a symbolic shape)."""
    folder = tmp_path_factory.mktemp("genuine")
    net, x = small_net(), torch.rand(8, 1, 28, 28)
    paths = {"pt2": folder / "net.pt2", "ts": folder / "net.pt", "weights": folder / "weights.pt"}
    batch = torch.export.Dim("batch", min=2, max=1024)
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: batch},)), str(paths["pt2"]))
    with pytest.warns(FutureWarning):  # torch.jit.trace is deprecated, but TorchScript files still circulate
        torch.jit.trace(net, x).save(str(paths["ts"]))
    torch.save(net.state_dict(), paths["weights"])
    return paths


def rewrite(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in edit(entries).items():
            z.writestr(name, data)
    return dst


def evil_torch_save(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"x": Touch(marker)}, buf)
    return buf.getvalue()


def entry(entries: dict[str, bytes], suffix: str) -> str:
    return next(n for n in entries if n.endswith(suffix))


def pickled_weight(entries, marker):
    name = entry(entries, "_weights_config.json")
    config = json.loads(entries[name])
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    entries[name] = json.dumps(config).encode()
    entries[name.rsplit("/", 1)[0] + "/" + first["path_name"]] = evil_torch_save(marker)
    return entries


def pickled_sample_inputs(entries, marker):  # torch retries these with weights_only=False
    entries[entry(entries, "sample_inputs/model.pt")] = evil_torch_save(marker)
    return entries


def sympy_expression(entries, marker):  # sympy.sympify evals symbolic-shape strings
    name = entry(entries, "models/model.json")
    text = entries[name].decode()
    symbol = json.loads(text)["range_constraints"].popitem()[0]
    old = f"Symbol('{symbol}', positive=True, integer=True)"
    assert old in text
    entries[name] = text.replace(old, f"{old} + 0*len(open('{marker}', 'w').name)").encode()
    return entries


def guard_code(entries, marker):  # exec'd when the module is built, run on every call
    name = entry(entries, "models/model.json")
    program = json.loads(entries[name])
    program["guards_code"] = [f"open('{marker}', 'w') is not None"]
    entries[name] = json.dumps(program).encode()
    return entries


def torch_call(entries, marker):  # a graph node whose target is not a torch operator
    name = entry(entries, "models/model.json")
    entries[name] = entries[name].replace(b'"torch.ops.aten.tanh.default"', b'"torch.os.system"')
    return entries


def native_library(entries, marker):  # AOTInductor packages load shared libraries
    root = next(iter(entries)).split("/", 1)[0]
    entries[f"{root}/data/aotinductor/model/model.so"] = b"\x7fELF"
    return entries


LIVE = [pickled_weight, pickled_sample_inputs, sympy_expression, guard_code]


@pytest.mark.parametrize("craft", [*LIVE, torch_call, native_library], ids=lambda f: f.__name__)
def test_a_crafted_export_program_is_refused_before_any_code_runs(genuine, tmp_path, craft):
    marker = tmp_path / "marker"
    path = rewrite(genuine["pt2"], tmp_path / "crafted.pt2", lambda e: craft(e, marker))
    with pytest.raises(UsageError, match="can run code when loaded.*--trust-pickle"):
        read_model_file(path, trust=False)
    assert not marker.exists()
    if craft in LIVE:  # the payload is real: trusting the file runs it
        with suppress(Exception):
            read_model_file(path, trust=True)(torch.rand(3, 1, 28, 28))
        assert marker.exists()


def test_a_crafted_export_program_through_the_cli_is_one_line(genuine, tmp_path):
    marker = tmp_path / "marker"
    path = rewrite(genuine["pt2"], tmp_path / "crafted.pt2", lambda e: pickled_sample_inputs(e, marker))
    result = CliRunner().invoke(app, ["benchmark", str(path), *FAST, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "can run code" in result.output and "Traceback" not in result.output
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("pickled", ["/data.pkl", "/constants.pkl", "/traced_inputs.pkl", "container.py.debug_pkl"])
def test_a_crafted_torchscript_file_is_refused(genuine, tmp_path, pickled):
    """Every pickle in the archive (data, constants, traced inputs, debug info) is inspected, not only data.pkl."""
    marker = tmp_path / "marker"

    def evil(entries):
        # torch writes debug info only in some process states (it was absent after other tests had run), so the
        # debug pickle is added beside the code when the genuine archive has none: the inspection must refuse it.
        top = next(iter(entries)).split("/", 1)[0]
        name = next((n for n in entries if n.endswith(pickled)), f"{top}/code/__torch__/{pickled}")
        entries[name] = pickle.dumps(Touch(marker), protocol=2)
        return entries

    path = rewrite(genuine["ts"], tmp_path / "crafted.pt", evil)
    with pytest.raises(UsageError, match=rf"holds pickled Python objects .*open.* in \S*{re.escape(pickled.lstrip('/'))}.*"
                                         "--trust-pickle") as err:
        read_model_file(path, trust=False)
    assert not marker.exists() and "\n" not in str(err.value)


class System:
    """Unpickling this calls os.system (pickled as posix.system on POSIX): a real shell payload."""

    def __init__(self, marker: Path) -> None:
        self.command = f"touch {shlex.quote(str(marker))}"

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("as_model", [False, True], ids=["weights", "model"])
def test_an_os_system_payload_is_refused_in_one_clean_line(tmp_path, as_model):
    """torch 2.14 words it "unsupported GLOBAL posix.system whose module posix is blocked"; the refusal names the
    file and the blocked global, and suggests --trust-pickle only for a trusted file."""
    marker, path = tmp_path / "marker", tmp_path / "weights.pt"
    buf = io.BytesIO()
    torch.save({"x": System(marker)}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(UsageError) as err:
        read_model_file(path, trust=False) if as_model else read_weights(path, trust=False)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "needs pickled code to load" in message, message
    assert f"{os.system.__module__}.system" in message and "--trust-pickle" in message, message
    assert "only if you trust" in message and "Weights only load failed" not in message, message
    assert not marker.exists()
    with suppress(Exception):
        read_weights(path, trust=True)  # the payload is live: trusted, it runs
    assert marker.exists()


@pytest.mark.parametrize("as_model", [False, True], ids=["weights", "model"])
def test_a_crafted_weights_file_is_refused(tmp_path, as_model):
    marker = tmp_path / "marker"
    path = tmp_path / "weights.pt"
    path.write_bytes(evil_torch_save(marker))
    with pytest.raises(UsageError, match="needs pickled code to load .*open.*--trust-pickle"):
        read_model_file(path, trust=False) if as_model else read_weights(path, trust=False)
    assert not marker.exists()
    with suppress(Exception):
        read_weights(path, trust=True)
    assert marker.exists()


def test_genuine_files_load_and_compute_what_the_original_computes(genuine):
    net, x = small_net(), torch.rand(5, 1, 28, 28)
    expected = net(x)
    for form in ("pt2", "ts"):
        assert torch.allclose(read_model_file(genuine[form], trust=False)(x), expected, atol=1e-6), form
    fresh = nn.Sequential(nn.Conv2d(1, 4, 5), nn.Tanh(), nn.AvgPool2d(4), nn.Flatten(), nn.Linear(144, 10))
    fresh.load_state_dict(read_weights(genuine["weights"], trust=False))
    assert torch.allclose(fresh(x), expected)


@pytest.mark.parametrize("content,message", [
    (b"", "is empty (0 bytes)"),
    (bytes(range(256)) * 4, "is not a PyTorch file"),
    (b"PK\x03\x04 truncated zip", "is not a PyTorch file"),
])
def test_non_torch_files_are_named_as_such_not_as_pickles(tmp_path, content, message):
    path = tmp_path / "w.pt"
    path.write_bytes(content)
    for option in (["lenet5", "--weights", str(path)], [str(path)]):
        result = CliRunner().invoke(app, ["benchmark", *option, *FAST, "--out", str(tmp_path / "out")])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "trust-pickle" not in result.output and len(result.output.strip().splitlines()) == 1


def test_files_of_another_form_are_named(genuine):
    with pytest.raises(UsageError, match="is a torch.export program, not a state_dict"):
        read_weights(genuine["pt2"], trust=False)
    with pytest.raises(UsageError, match="is TorchScript, not a state_dict"):
        read_weights(genuine["ts"], trust=False)
    with pytest.raises(UsageError, match="holds a state_dict, not a model"):
        read_model_file(genuine["weights"], trust=False)


@pytest.mark.parametrize("damage", ["truncated", "bad-json", "bad-schema"])
def test_a_damaged_export_program_is_one_line(genuine, tmp_path, damage):
    """torch.export logs a full traceback before raising; the user sees one line."""
    path = tmp_path / "damaged.pt2"
    if damage == "truncated":
        path.write_bytes(genuine["pt2"].read_bytes()[:2000])
    else:
        def edit(entries):
            name = entry(entries, "models/model.json")
            entries[name] = b"{" if damage == "bad-json" else json.dumps({"graph_module": 1}).encode()
            return entries
        rewrite(genuine["pt2"], path, edit)
    result = CliRunner().invoke(app, ["benchmark", str(path), *FAST, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "torch.export program" in result.output and "Traceback" not in result.output
