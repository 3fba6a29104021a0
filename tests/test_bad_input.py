"""Every bad input is one line on stderr, exit code 2, no traceback, and nothing new under --out.

Each case builds its command from a scratch folder (files it needs live outside --out); the API side of the
same checks is tested beside each feature (test_config, test_results, test_security)."""
from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from robustcnn.cli import app
from robustcnn.errors import UsageError

runner = CliRunner()
BENCH = ["--dataset", "digits", "--image-size", "28", "--n-examples", "20", "--eps", "0,0.1", "--attacks", "fgsm",
         "--device", "cpu"]
FACTORIES = '''
import torch, torch.nn as nn

class IntegerScores(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)

    def forward(self, x):
        return (self.fc(x.flatten(1)) * 100).long()

def integer_scores():
    return IntegerScores()

def boom():
    raise RuntimeError()  # an empty message: the error line must still be one line
'''
MANIFEST = {"kind": "train", "run_id": "r", "config": {}, "versions": {}, "device": "cpu"}


def factories(tmp: Path) -> str:
    path = tmp / "factories.py"
    path.write_text(FACTORIES)
    return str(path)


def file_with(tmp: Path, name: str, content: bytes) -> str:
    path = tmp / name
    path.write_bytes(content)
    return str(path)


def state_dict(tmp: Path, shapes: dict[str, tuple[int, ...]] | None) -> str:
    """A state_dict file: the given shapes, or lenet5's with one more filter in its first layer."""
    from robustcnn.models import create_model

    if shapes is None:
        shapes = {k: tuple(v.shape) for k, v in create_model("lenet5", dataset="mnist").state_dict().items()}
        first = next(k for k, v in shapes.items() if len(v) == 4 and k.endswith("weight"))
        shapes[first] = (shapes[first][0] + 1, *shapes[first][1:])
    path = tmp / "state.pt"
    torch.save({k: torch.zeros(v) for k, v in shapes.items()}, path)
    return str(path)


def run_folder(tmp: Path, manifest: bytes | None = None, history: bytes | None = None) -> str:
    """A train run folder whose history and summary tables both hold `history`."""
    folder = tmp / "run"
    (folder / "tables").mkdir(parents=True)
    (folder / "manifest.json").write_bytes(manifest if manifest is not None else json.dumps(MANIFEST).encode())
    if history is not None:
        for table in ("history", "summary"):
            (folder / "tables" / f"{table}.csv").write_bytes(history)
    return str(folder)


def damaged_npz(tmp: Path, name: str, data: bytes | None = None) -> str:
    """An adversarial run folder whose data/<name> holds `data` (None: an npz with a pickled object array)."""
    import io

    import numpy as np
    from report_fixtures import adversarial_run

    run = adversarial_run(tmp)
    if data is None:
        buf = io.BytesIO()
        np.savez(buf, models=np.array([{"lenet5": 1}], dtype=object))
        data = buf.getvalue()
    (run / "data").mkdir(exist_ok=True)
    (run / "data" / name).write_bytes(data)
    return str(run)


def odd_manifest(tmp: Path, change: Callable[[dict], None]) -> str:
    """An adversarial run folder whose manifest's config was edited by `change` (a hand-edited manifest)."""
    from report_fixtures import adversarial_run

    run = adversarial_run(tmp)
    manifest = json.loads((run / "manifest.json").read_text())
    change(manifest)
    (run / "manifest.json").write_text(json.dumps(manifest))
    return str(run)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def image_folder(tmp: Path, classes: tuple[str, ...] = ("a", "b"), bomb: int = 0) -> str:
    """A PNG folder; with bomb=n, one file declares n x n pixels in a few dozen bytes."""
    from PIL import Image

    base = tmp / "images"
    for split in ("train", "test"):
        for c in classes:
            (base / split / c).mkdir(parents=True)
            Image.new("L", (8, 8), 128).save(base / split / c / "0.png")
    if bomb:
        header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", bomb, bomb, 8, 0, 0, 0, 0))
        data = png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b"")
        (base / "train" / classes[0] / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + data)
    return f"imagefolder:{base}"


def lenet_file(t: Path) -> str:
    """A lenet5 state_dict (its random initialisation) for the cases that need a loadable model."""
    import torch

    from robustcnn.models import create_model

    path = t / "lenet5.pt"
    torch.save(create_model("lenet5", in_channels=1, num_classes=10).state_dict(), path)
    return str(path)


Case = Callable[[Path], list[str]]
CASES: list[tuple[str, Case, str]] = [
    # configs and overrides
    ("override-into-a-scalar", lambda t: ["train", "-s", "seed.x=1"], "'seed' is a value"),
    ("override-through-a-scalar", lambda t: ["train", "-s", "model.name.x.y=1"], "'model.name' is a value"),
    ("override-without-equals", lambda t: ["train", "-s", "nonsense"], "must look like key=value"),
    ("unknown-key", lambda t: ["study", "adversarial", "-s", "evaluation.typo=1"], "unknown config key"),
    ("seed-2**70-flag", lambda t: ["train", "--seed", str(2**70)], "Invalid value for '--seed'"),
    ("seed-2**70-override", lambda t: ["train", "-s", f"seed={2**70}"], "out of range"),
    ("negative-seeds", lambda t: ["study", "memorization", "-s", "seeds=[-1]"], "out of range"),
    ("nan-learning-rate", lambda t: ["train", "-s", "model.train.lr=nan"], "must be a number"),
    ("nan-learning-rate-flag", lambda t: ["train", "--lr", "nan"], "'--lr': nan must be a finite number > 0"),
    ("negative-width", lambda t: ["study", "double-descent", "-s", "widths=[-1]"], "widths must be whole numbers"),
    ("zero-train-size", lambda t: ["study", "double-descent", "-s", "train_sizes=[0]"], "train_sizes must be whole"),
    ("fit-threshold-above-1", lambda t: ["study", "memorization", "-s", "fit_threshold=2"], "fit_threshold is a"),
    ("negative-label-noise", lambda t: ["study", "memorization", "-s", "data.label_noise=-0.5"],
     "label_noise is a fraction of labels in [0, 1]"),
    ("non-utf8-toml", lambda t: ["train", "--config", file_with(t, "c.toml", b"seed = 1\n\xff\xfe")], "not UTF-8"),
    ("invalid-toml", lambda t: ["train", "--config", file_with(t, "c.toml", b"seed = [")], "not valid TOML"),
    ("missing-config", lambda t: ["study", "adversarial", "--config", "nowhere.toml"], "does not exist"),
    # names, devices, attacks
    ("unknown-model", lambda t: ["train", "--model", "lenet"], "unknown model 'lenet' (did you mean 'lenet5'?)"),
    ("unknown-dataset", lambda t: ["train", "--dataset", "mnsit"], "unknown dataset 'mnsit' (did you mean 'mnist'?)"),
    ("unknown-study", lambda t: ["study", "generalisation"], "'generalisation' is not one of 'adversarial'"),
    ("epochs-zero", lambda t: ["train", "--epochs", "0"], "Invalid value for '--epochs'"),
    ("model-name-escaping", lambda t: ["study", "adversarial", "-s", 'models.0.name="../escape"'], "file name"),
    ("model-name-absolute", lambda t: ["study", "adversarial", "-s", 'models.0.name="/tmp/x"'], "file name"),
    ("model-name-nul", lambda t: ["study", "adversarial", "-s", 'models.0.name="a\\u0000b"'], "file name"),
    ("device-meta", lambda t: ["train", "--device", "meta"], "not a device"),
    ("device-mps", lambda t: ["study", "adversarial", "--device", "mps"], "not a device"),
    ("device-meta-override", lambda t: ["train", "-s", 'device="meta"'], "not supported"),
    ("device-cuda-x", lambda t: ["train", "--device", "cuda:x"], "not a device"),
    ("unknown-attack", lambda t: ["study", "adversarial", "-s", 'evaluation.attacks=["fsgm"]'], "did you mean 'fgsm'"),
    ("bogus-attack-setting", lambda t: ["study", "adversarial", "-s", 'evaluation.attacks=[{name="pgd", bogus=1}]'],
     "unknown config key"),
    ("bogus-attack-option", lambda t: ["study", "adversarial", "-s",
                                       'evaluation.attacks=[{name="fgsm", options={overshoot=1}}]'], "has no option"),
    ("negative-epsilon", lambda t: ["study", "adversarial", "-s", "evaluation.epsilons=[-0.1]"], "-0.1"),
    ("negative-abs-stepsize", lambda t: ["study", "adversarial", "-s",
                                         'evaluation.attacks=[{name="pgd", options={abs_stepsize=-1}}]'],
     "option abs_stepsize must be a finite number > 0"),
    ("anatomy-eps-above-1", lambda t: ["anatomy", "lenet5", "--weights", file_with(t, "w.pt", b""), "--eps", "5"],
     "epsilon 5 is outside [0, 1]"),
    ("anatomy-eps-0", lambda t: ["anatomy", "lenet5", "--weights", file_with(t, "w.pt", b""), "--eps", "0"],
     "epsilon (--eps) must be above 0"),
    ("empty-eps-item", lambda t: ["benchmark", "lenet5", *BENCH[:6], "--eps", "0.1,,0.2", *BENCH[8:]],
     "has an empty item"),
    ("nan-mean", lambda t: ["benchmark", "lenet5", *BENCH, "--mean", "nan", "--std", "1"],
     "--mean must be finite numbers"),
    ("missing-data-root", lambda t: ["train", "--data-root", str(t / "nowhere")], "nowhere (--data-root) does not"),
    ("no-attacks", lambda t: ["benchmark", "lenet5", *BENCH[:-4], "--attacks", ""], "names no attack"),
    ("lineage-workers-0", lambda t: ["study", "lineage", "-s", "workers=0"], "workers must be a whole number >= 1, got 0"),
    ("lineage-workers-bool", lambda t: ["study", "lineage", "-s", "workers=true"], "'workers' must be an integer, got True"),
    *[(f"{kind}-address-without-ray", lambda t, kind=kind: ["study", kind, "-s", "address=\"127.0.0.1:1\""],
       "names a Ray cluster: pass it with --executor ray") for kind in ("adversarial", "lineage", "invariance",
                                                                         "memorization")],
    ("empty-ray-address", lambda t: ["study", "adversarial", "--executor", "ray", "--address", ""],
     "the Ray address is empty"),
    ("adversarial-address-flag-without-ray", lambda t: ["study", "adversarial", "--address", "127.0.0.1:1"],
     "names a Ray cluster: pass it with --executor ray"),
    ("empty-suite", lambda t: ["benchmark", "lenet5", *BENCH[:6], "--device", "cpu", "--weights", lenet_file(t),
                               "--suite", ""], "unknown attack suite ''"),
    ("ray-address-port-0", lambda t: ["study", "memorization", "--executor", "ray", "--address", "127.0.0.1:0"],
     "is not a Ray cluster address"),
    ("ray-address-port-65536", lambda t: ["study", "memorization", "--executor", "ray", "--address", "h:65536"],
     "is not a Ray cluster address"),
    ("invariance-workers-0", lambda t: ["study", "invariance", "--workers", "0"], "Invalid value for '--workers'"),
    ("invariance-executor", lambda t: ["study", "invariance", "--executor", "spark"], "'spark'"),
    ("suite-without-lp-threat", lambda t: ["benchmark", "lenet5", *BENCH[:6], "--device", "cpu", "--weights",
                                           lenet_file(t), "--threat", "corruptions", "--suite", "full"],
     "--suite full picks L-p attacks"),
    ("benchmark-executor", lambda t: ["benchmark", "lenet5", *BENCH, "--executor", "spark"], "unknown executor 'spark'"),
    ("ray-address-nobody-there", lambda t: ["benchmark", "lenet5", *BENCH, "--weights", lenet_file(t), "--executor", "ray",
                                            "--address", "127.0.0.1:1"], "no Ray cluster answers at 127.0.0.1:1"),
    ("duplicate-attack-with-workers", lambda t: ["benchmark", "lenet5", *BENCH[:-4], "--attacks", "fgsm,fgsm",
                                                 "--device", "cpu", "--weights", lenet_file(t), "--workers", "2"],
     "each attack may appear once in a grid"),
    ("ray-address-malformed", lambda t: ["study", "memorization", "--executor", "ray", "--address", "nonsense"],
     "is not a Ray cluster address"),
    # model files and factories
    ("factory-raises", lambda t: ["benchmark", f"{factories(t)}:boom", *BENCH], "raised RuntimeError"),
    ("integer-outputs", lambda t: ["benchmark", f"{factories(t)}:integer_scores", *BENCH], "output_dtype"),
    ("zero-byte-weights", lambda t: ["benchmark", "lenet5", "--weights", file_with(t, "w.pt", b""), *BENCH],
     "is empty (0 bytes)"),
    ("random-weights", lambda t: ["benchmark", "lenet5", "--weights", file_with(t, "w.pt", b"\x13" * 99), *BENCH],
     "is not a PyTorch file"),
    ("weights-wrong-keys", lambda t: ["benchmark", "lenet5", "--weights", state_dict(t, {"fc.weight": (10, 84)}),
                                      *BENCH], "unexpected fc.weight"),
    ("weights-wrong-shape", lambda t: ["benchmark", "lenet5", "--weights", state_dict(t, None), *BENCH],
     "[7, 1, 5, 5] in the file, [6, 1, 5, 5] in the model"),
    # data
    ("decompression-bomb", lambda t: ["train", "--dataset", image_folder(t, bomb=100_000)], "bomb.png"),
    ("huge-image", lambda t: ["train", "--dataset", image_folder(t, bomb=5000)], "pixels, more than"),
    ("one-class-folder", lambda t: ["train", "--dataset", image_folder(t, classes=("only",))], "single class"),
    # report on damaged run folders
    ("report-config-a-list", lambda t: ["report", odd_manifest(t, lambda m: m.update(config=[1, 2]))],
     "config must be a table"),
    ("report-evaluation-a-string", lambda t: ["report", odd_manifest(t, lambda m: m["config"].update(evaluation="x"))],
     "config.evaluation must be a table"),
    ("report-model-a-number", lambda t: ["report", odd_manifest(t, lambda m: m["config"]["models"].append(3))],
     "config.models[2] must be a table"),
    ("report-train-a-string", lambda t: ["report", odd_manifest(t, lambda m: m["config"]["models"][1].update(train="x"))],
     "config.models[1].train must be a table"),
    ("report-adversarial-a-string", lambda t: ["report", odd_manifest(
        t, lambda m: m["config"]["models"][1]["train"].update(adversarial="pgd"))],
     "config.models[1].train.adversarial must be a table"),
    ("report-truncated-gallery", lambda t: ["report", damaged_npz(t, "gallery.npz", b"PK\x03\x04 cut here")],
     "gallery.npz is missing or corrupt"),
    ("report-pickled-gallery", lambda t: ["report", damaged_npz(t, "gallery.npz")], "gallery.npz is missing or corrupt"),
    ("report-truncated-anatomy", lambda t: ["report", damaged_npz(t, "anatomy__lenet5.npz", b"PK\x03\x04")],
     "anatomy__lenet5.npz is missing or corrupt"),
    ("report-not-a-folder", lambda t: ["report", file_with(t, "file", b"x")], "is not a folder"),
    ("report-no-manifest", lambda t: ["report", str(t)], "is not a run folder"),
    ("report-corrupt-manifest", lambda t: ["report", run_folder(t, manifest=b"{")], "is corrupt"),
    ("report-keyless-manifest", lambda t: ["report", run_folder(t, manifest=b'{"kind": "train"}')], "lacks"),
    ("report-empty-csv", lambda t: ["report", run_folder(t, history=b"")], "is not a readable table"),
    ("report-malformed-csv", lambda t: ["report", run_folder(t, history=b'a,b\n1,"2\n')], "is not a readable table"),
    ("report-wrong-columns", lambda t: ["report", run_folder(t, history=b"x\n1\n")], "do not have the layout"),
    # --out
    ("out-is-a-file", lambda t: ["train", "--out", file_with(t, "f", b"")], "cannot write to the output folder"),
    # checked before any work: the missing dataset would be reported first otherwise
    ("benchmark-out-first", lambda t: ["benchmark", "lenet5", "--dataset", "mnist", "--data-root", str(t),
                                       "--out", str(Path(file_with(t, "f", b"")) / "sub")],
     "cannot write to the output folder"),
]


@pytest.mark.timeout(120)  # a check that waits instead of refusing (an unanswered Ray address) fails, not hangs
@pytest.mark.parametrize("make_args,message", [pytest.param(a, m, id=i) for i, a, m in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, make_args, message):
    scratch, out = tmp_path / "scratch", tmp_path / "out"
    scratch.mkdir()
    out.mkdir()
    args = make_args(scratch)
    if args[0] in ("train", "study", "benchmark", "anatomy") and "--out" not in args:
        args += ["--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("robustcnn: error: ")
    assert "Traceback" not in result.output and "pickle" not in result.output.lower()
    assert list(out.rglob("*")) == []


def test_a_read_only_run_folder_is_one_line(tmp_path, monkeypatch):
    """chmod cannot stop root, so the refusal of the file system is simulated where it would happen."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    result = runner.invoke(app, ["report", run_folder(tmp_path, history=b"epoch\n1\n")])
    assert result.exit_code == 2 and "cannot write to run folder" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


# ---------------------------------------------------------------- damaged stores and caches are rebuilt, not trusted
def square(point: dict) -> dict:
    return {"value": point["x"] ** 2}


def test_a_damaged_store_record_is_recomputed_with_a_warning(tmp_path):
    from robustcnn.errors import RobustcnnWarning
    from robustcnn.sweep import SweepStore, point_id, run_sweep

    points, store = [{"x": i} for i in range(4)], SweepStore(tmp_path)
    run_sweep(points, square, store=store)
    store.path(point_id(points[1])).write_bytes(b"")  # a 0-byte record (a full disk, a kill at the wrong time)
    store.path(point_id(points[2])).write_text('{"value": 4, "poi')  # truncated
    store.path(point_id(points[3])).write_text("[9]")  # not a record
    with pytest.warns(RobustcnnWarning, match="unreadable.*recomputing") as caught:
        again = run_sweep(points, square, store=store)
    assert len(caught) == 3
    assert [r["value"] for r in again] == [0, 1, 4, 9] and [r["resumed"] for r in again] == [True, False, False, False]
    assert all(r["resumed"] for r in run_sweep(points, square, store=store))  # the records were rewritten whole


def test_the_point_id_changes_with_the_schema_version(monkeypatch):
    from robustcnn import sweep

    before = sweep.point_id({"x": 1})
    monkeypatch.setattr(sweep, "SCHEMA_VERSION", sweep.SCHEMA_VERSION + 1)
    assert sweep.point_id({"x": 1}) != before


def test_a_bad_raw_file_does_not_poison_the_cache(fake_mnist, tmp_path):
    """A bad uncompressed file is refused before it is copied; a pristine folder then loads."""
    import gzip
    import shutil

    from robustcnn.data import load_dataset
    from robustcnn.errors import UsageError

    root, arrays = fake_mnist
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    labels = bad / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    (labels.parent / labels.stem).write_bytes(gzip.decompress(labels.read_bytes())[:-7])  # truncated, uncompressed
    labels.unlink()
    with pytest.raises(UsageError, match="train-labels-idx1-ubyte is not a valid IDX file"):
        load_dataset("mnist", root=bad)
    data = load_dataset("mnist", root=root)
    assert data.y_train.tolist() == arrays["train_y"].tolist()


def test_a_damaged_cache_entry_is_rebuilt(fake_mnist, isolated_cache):
    from robustcnn.data import load_dataset
    from robustcnn.errors import RobustcnnWarning

    root, arrays = fake_mnist
    load_dataset("mnist", root=root)
    entry = isolated_cache / "torchvision" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    entry.write_bytes(entry.read_bytes()[:8] + bytes([9]) * 20)  # same size, wrong labels
    with pytest.warns(RobustcnnWarning, match="was damaged; rebuilt"):
        data = load_dataset("mnist", root=root)
    assert data.y_test.tolist() == arrays["test_y"].tolist()


def test_a_damaged_decoded_image_cache_is_decoded_again(png_folder, isolated_cache):
    from robustcnn.data import load_dataset
    from robustcnn.errors import RobustcnnWarning

    base, _ = png_folder
    first = load_dataset(f"imagefolder:{base}")
    (cached,) = (isolated_cache / "decoded").glob("*.pt")
    cached.write_bytes(cached.read_bytes()[:100])
    with pytest.warns(RobustcnnWarning, match="damaged.*decoding again"):
        again = load_dataset(f"imagefolder:{base}")
    assert torch.equal(again.x_train, first.x_train) and torch.equal(again.x_test, first.x_test)


def test_image_channels_are_decided_once_for_the_whole_dataset(tmp_path):
    """Grey training images and one colour test image: both splits are RGB, the grey ones replicated."""
    import numpy as np
    from PIL import Image

    from robustcnn.data import load_dataset

    base = tmp_path / "mixed"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (base / split / c).mkdir(parents=True)
            Image.new("L", (8, 8), 40 if c == "a" else 200).save(base / split / c / "0.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(base / "test" / "a" / "1.png")
    data = load_dataset(f"imagefolder:{base}")
    assert data.x_train.shape[1] == data.x_test.shape[1] == 3
    assert torch.allclose(data.x_train[0], torch.full((3, 8, 8), 40 / 255))
    red = data.x_test[1].permute(1, 2, 0).numpy()
    assert np.allclose(red, np.array([1.0, 0.0, 0.0]))


def test_symlinks_out_of_the_data_root_are_not_followed(png_folder, tmp_path):
    from robustcnn.data import load_dataset
    from robustcnn.errors import RobustcnnWarning

    base, _ = png_folder
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes((base / "train" / "cat" / "00000.png").read_bytes())
    (base / "train" / "cat" / "link.png").symlink_to(outside / "secret.png")
    (base / "train" / "elsewhere").symlink_to(outside, target_is_directory=True)
    (base / "test" / "elsewhere").mkdir()
    (base / "test" / "elsewhere" / "x.png").write_bytes((outside / "secret.png").read_bytes())
    with pytest.warns(RobustcnnWarning), pytest.raises(UsageError, match="class folder 'elsewhere' .* has no images"):
        load_dataset(f"imagefolder:{base}")
    (base / "train" / "elsewhere").unlink()
    import shutil
    shutil.rmtree(base / "test" / "elsewhere")
    with pytest.warns(RobustcnnWarning, match="skipped 1 file"):
        data = load_dataset(f"imagefolder:{base}")
    assert len(data.y_train) == 12  # the 4 images per class of the fixture, not the linked one


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


@pytest.mark.parametrize("err,line,code", [
    (UsageError(""), "robustcnn: error: invalid input", 2),
    (UsageError("first\nsecond"), "robustcnn: error: first", 2),
    (RuntimeError(), "robustcnn: error: internal error (RuntimeError)", 1),
    (Unprintable(), "robustcnn: error: internal error (Unprintable)", 1),
    (PermissionError(13, "Permission denied", "/x"), "robustcnn: error: Permission denied: /x", 2),
    (OSError(), "robustcnn: error: OSError", 2),
    (KeyboardInterrupt(), "robustcnn: interrupted; the unfinished run folder was removed", 130),
])
def test_the_error_boundary_never_fails_itself(err, line, code):
    from robustcnn.cli import error_line

    text, exit_code = error_line(err)
    assert text.startswith(line) and "\n" not in text and exit_code == code
