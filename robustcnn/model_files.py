"""Model files read without running their author's code (unless the user says they trust it).

Three forms reach us: a state_dict from torch.save, a TorchScript archive and a torch.export program (.pt2).
Each can carry code: torch.save files are pickles (read here with weights_only=True, whose unpickler knows
only tensors and containers); TorchScript archives are read by torch's C++ unpickler, which resolves no
Python globals, after we check their pickles name none; and torch.export.load, despite its format, unpickles
entries marked `use_pickle`, falls back to weights_only=False for its example inputs, hands symbolic-shape
strings to sympy.sympify (an eval) and execs its `guards_code`. So a .pt2 is read into memory once,
inspected entry by entry, and only those exact bytes are loaded: anything that could run code is refused with
the reason. `trust=True` (--trust-pickle) skips the checks.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import pickletools
import re
import tokenize
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from robustcnn.errors import UsageError, first_line

TRUST_HINT = "pass --trust-pickle (trust_pickle=True in Python) only if you trust the file's author"

# ---------------------------------------------------------------- what a file is
PT2_ENTRY = re.compile(r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                       r"|models/\w+\.json|data/weights/\w+_weights_config\.json|data/weights/weight_\d+"
                       r"|data/constants/\w+_constants_config\.json|data/constants/tensor_\d+"
                       r"|data/sample_inputs/\w+\.pt|extra/[^/]+")


def read_bytes(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise UsageError(f"{what} {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {what} {path} ({err.strerror or first_line(err)})") from err
    if not data:
        raise UsageError(f"{what} {path} is empty (0 bytes); save it again with torch.save")
    return data


def archive_entries(data: bytes) -> dict[str, str] | None:
    """{entry without its top folder: full name} for a zip archive (torch's zip formats nest one folder), or
    None when the bytes are not a zip archive."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return None
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
    return {n.split("/", 1)[1] if "/" in n else n: n for n in names}


def file_kind(data: bytes) -> str:
    """'pt2', 'torchscript', 'torch' (a torch.save zip), 'legacy' (an old torch.save pickle) or 'unknown'."""
    entries = archive_entries(data)
    if entries is None:
        return "legacy" if data[:1] == b"\x80" else "unknown"  # pickle protocol 2+ starts with PROTO
    if "archive_format" in entries or any(e.startswith("models/") for e in entries):
        return "pt2"
    if "constants.pkl" in entries or any(e.startswith("code/") for e in entries):
        return "torchscript"
    return "torch" if "data.pkl" in entries else "unknown"


def not_torch(path: Path, what: str) -> UsageError:
    return UsageError(f"{what} {path} is not a PyTorch file (neither a torch.save archive, TorchScript nor a "
                      "torch.export .pt2); check the path")


# ---------------------------------------------------------------- pickles
def pickle_globals(data: bytes) -> set[str]:
    """The importable names a pickle refers to (what unpickling it would import and may call)."""
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("GLOBAL", "INST"):
            found.add(str(arg).replace(" ", "."))
        elif op.name == "STACK_GLOBAL":  # module and name were pushed just before
            found.add(".".join(strings[-2:]) if len(strings) >= 2 else "<unknown>")
        elif isinstance(arg, str):
            strings.append(arg)
    return found


def _script_global_ok(name: str) -> bool:
    # TorchScript pickles name their own classes (__torch__.*), tensors and OrderedDicts, nothing else
    return name.startswith(("__torch__.", "torch._utils._rebuild", "torch.jit._pickle.")) or name in (
        "collections.OrderedDict",) or bool(re.fullmatch(r"torch\.\w+Storage", name))


def check_torchscript(data: bytes, path: Path) -> None:
    entries = archive_entries(data) or {}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for short, full in entries.items():
            if not (short.endswith(".pkl") or short.endswith(".debug_pkl")):
                continue
            try:
                bad = sorted(g for g in pickle_globals(z.read(full)) if not _script_global_ok(g))
            except Exception as err:  # pickletools on a malformed pickle: ValueError, struct errors...
                raise UsageError(f"TorchScript {path} is corrupt ({short}: {first_line(err)})") from err
            if bad:
                raise UsageError(f"TorchScript {path} holds pickled Python objects ({', '.join(bad[:3])} in {short}), "
                                 f"and unpickling them can run code; refusing it: {TRUST_HINT}")


# ---------------------------------------------------------------- torch.export programs
_SAFE_TARGET = re.compile(
    r"torch\.ops\.(aten|prims|higher_order|quantized_decomposed)\.\w+(\.\w+)?"
    r"|_operator\.(getitem|add|sub|mul|truediv|floordiv|mod|pow|neg|pos|abs|eq|ne|lt|le|gt|ge|and_|or_|xor"
    r"|not_|invert|lshift|rshift)"
    r"|math\.(ceil|floor|trunc|sqrt|exp|log|fabs|isfinite|isinf|isnan)"
    r"|torch\.(sym_\w+|_sym_sqrt|_assert|_assert_async|_assert_scalar|_check|_check_is_size)")
# sympy.sympify evals its string: only names of sympy's and torch's symbolic-shape classes, assumption
# keywords and symbol names (s0, u12, ...) may appear, never attributes, subscripts or other builtins
_EXPR_NAMES = set("""Symbol Integer Rational Float Add Mul Pow Max Min Mod Abs Eq Ne Lt Le Gt Ge StrictLessThan
StrictGreaterThan LessThan GreaterThan Equality Unequality And Or Not Piecewise ExprCondPair true false True False oo
zoo nan Infinity NegativeInfinity IntInfinity NegativeIntInfinity int_oo FloorDiv CeilDiv ModularIndexing Where
PythonMod CleanDiv CeilToInt FloorToInt TruncToInt TruncToFloat RoundToInt RoundDecimal ToFloat FloatPow PowByNatural
IntTrueDiv FloatTrueDiv LShift RShift IsNonOverlappingAndDenseIndicator Identity floor ceiling sqrt positive negative
integer real nonnegative nonpositive finite zero nonzero even odd commutative""".split())
_EXPR_OPS = {"(", ")", ",", "=", "+", "-", "*", "/", "//", "%", "**", "<", ">", "<=", ">=", "==", "!=", "&", "|", "~"}
_GUARD = re.compile(r"L(\['\w+'\]|\[\d+\])+\.size\(\)\[\d+\] (==|!=|<=|>=|<|>) -?\d+")


def safe_sym_expr(text: str) -> bool:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return False
    for tok in tokens:
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        ok = ((tok.type == tokenize.NAME and (tok.string in _EXPR_NAMES or re.fullmatch(r"[a-z]{1,8}\d+", tok.string)
                                              or re.fullmatch(r"OpaqueUnaryFn_[a-z]+", tok.string)))
              or (tok.type == tokenize.NUMBER)
              or (tok.type == tokenize.STRING and re.fullmatch(r"'[A-Za-z_]\w*'", tok.string))
              or (tok.type == tokenize.OP and tok.string in _EXPR_OPS))
        if not ok:
            return False
    return True


def _walk(node: Any, key: str | None = None) -> Iterator[tuple[str | None, Any]]:
    yield key, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)


def _program_problem(program: Any) -> str | None:
    """Why loading this models/*.json would run code from the file, or None."""
    for key, value in _walk(program):
        if key == "target" and isinstance(value, str):
            if "__" in value or not _SAFE_TARGET.fullmatch(value):
                return f"its graph calls '{value[:80]}', which is not a torch operator"
        elif key == "expr_str" and isinstance(value, str) and not safe_sym_expr(value):
            return f"its symbolic shape '{value[:80]}' is not a plain expression (sympy would eval it)"
        elif key == "guards_code" and isinstance(value, list):
            for guard in value:
                if not (isinstance(guard, str) and _GUARD.fullmatch(guard)):
                    return f"its guard code '{str(guard)[:80]}' would be executed"
    return None


def pt2_problem(data: bytes) -> str | None:
    """Why torch.export.load would run code from this archive, or None when it only holds a graph of torch
    operators, raw tensors and example inputs that load with weights_only=True."""
    entries = archive_entries(data) or {}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        tops = {full.split("/", 1)[0] for full in entries.values()}
        if len(tops) != 1:
            return "its entries are not under one folder"
        for short in entries:
            if not PT2_ENTRY.fullmatch(short):
                return f"it holds an entry torch would unpickle or execute ({short})"
        for short, full in entries.items():
            if short.endswith("_config.json"):
                config = json.loads(z.read(full)).get("config", {})
                pickled = [k for k, meta in config.items() if meta.get("use_pickle")]
                if pickled:
                    return f"{', '.join(pickled[:3])} in {short} are pickled objects"
                bad = [m.get("path_name") for m in config.values()
                       if not re.fullmatch(r"(weight|tensor)_\d+", str(m.get("path_name")))]
                if bad:
                    return f"{short} points at {bad[0]}, which is not a raw tensor"
            elif short.startswith("data/sample_inputs/"):
                try:  # torch itself retries these with weights_only=False when this fails
                    torch.load(io.BytesIO(z.read(full)), map_location="cpu", weights_only=True)
                except Exception as err:
                    return f"its example inputs ({short}) are pickled objects, not plain tensors ({type(err).__name__})"
            elif short.startswith("models/"):
                problem = _program_problem(json.loads(z.read(full)))
                if problem:
                    return problem
    return None


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """torch.export logs a full traceback (and jit warns) before raising; the caller reports one line."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export", "torch.jit")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def load_export_program(data: bytes, path: Path, trust: bool) -> nn.Module:
    if archive_entries(data) is None:
        raise UsageError(f"torch.export program {path} is not a zip archive (truncated, or not a .pt2 file)")
    if not trust:
        try:
            problem = pt2_problem(data)
        except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError) as err:
            raise UsageError(f"torch.export program {path} is corrupt ({first_line(err)})") from err
        if problem:
            raise UsageError(f"torch.export program {path} can run code when loaded: {problem}; refusing it: "
                             f"{TRUST_HINT}")
    try:
        with quiet_torch():
            return torch.export.load(io.BytesIO(data)).module()  # the very bytes inspected above
    except Exception as err:
        raise UsageError(f"cannot load torch.export program {path} ({first_line(err)[:200]})") from err


# ---------------------------------------------------------------- entry points
def torch_load(path: Path, trust: bool, what: str = "weights file") -> Any:
    """torch.load with weights_only=True unless trusted; every failure is a UsageError naming its cause."""
    data = read_bytes(path, what)
    kind = file_kind(data)
    if kind == "unknown":
        raise not_torch(path, what)
    if kind in ("pt2", "torchscript"):
        name = "a torch.export program" if kind == "pt2" else "TorchScript"
        raise UsageError(f"{what} {path} is {name}, not a state_dict; pass it as the MODEL argument instead")
    try:
        with quiet_torch():
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=not trust)
    except Exception as err:
        # torch's wording varies ("Unsupported global: GLOBAL os.system", "unsupported GLOBAL posix.system whose
        # module posix is blocked"): match the word, and name the global from the pickle itself
        if not trust and type(err).__name__ == "UnpicklingError" and re.search(r"\bglobal\b", str(err), re.I):
            try:
                found = sorted(_pickled_names(data))
            except Exception:  # the names only make the message clearer
                found = []
            said = re.search(r"GLOBAL:?\s+([\w.]+)", str(err), re.I)
            found = found or ([said.group(1)] if said else [])
            names = f" ({', '.join(found[:3])})" if found else ""
            raise UsageError(f"{what} {path} needs pickled code to load{names}, and unpickling can run arbitrary "
                             f"code; save a state_dict instead, or {TRUST_HINT}") from err
        raise UsageError(f"{what} {path} is not a readable PyTorch file ({first_line(err)[:160]})") from err


def _pickled_names(data: bytes) -> set[str]:
    """Globals outside the plain tensor/container set, for the refusal message (not a security check)."""
    entries = archive_entries(data)
    if entries is None:
        names = pickle_globals(data)
    else:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = pickle_globals(z.read(entries["data.pkl"]))
    return {n for n in names if not (n.startswith("torch._utils.") or n == "collections.OrderedDict"
                                     or re.fullmatch(r"torch\.\w+Storage", n))}


def read_model_file(path: Path, trust: bool) -> nn.Module:
    """A TorchScript archive, a torch.export program, or (trusted only) a whole pickled model."""
    data = read_bytes(path, "model file")
    kind = file_kind(data)
    if kind == "pt2" or (path.suffix == ".pt2" and kind == "unknown"):
        return load_export_program(data, path, trust)
    if kind == "torchscript":
        if not trust:
            check_torchscript(data, path)
        try:
            with quiet_torch():
                return torch.jit.load(io.BytesIO(data), map_location="cpu")
        except Exception as err:
            raise UsageError(f"cannot load TorchScript {path} ({first_line(err)[:200]})") from err
    obj = torch_load(path, trust, what="model file")
    if isinstance(obj, nn.Module):
        return obj
    held = "a state_dict" if isinstance(obj, dict) else f"a {type(obj).__name__}"
    raise UsageError(f"{path} holds {held}, not a model; pass the architecture as MODEL and this file as --weights")


def read_weights(path: Path, trust: bool) -> dict[str, torch.Tensor]:
    """A state_dict (also inside {'state_dict': ...}, or from a trusted whole model)."""
    obj = torch_load(Path(path), trust)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"{path} is not a state_dict (a mapping of names to tensors)")
    return obj


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """load_state_dict, with a one-line message naming the keys and shapes that do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} in the file, {list(own[k].shape)} in the model"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = ([f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"] if missing else []) + \
               ([f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}"] if unexpected else []) + \
               ([f"shape of {'; '.join(shapes[:3])}"] if shapes else [])
    if problems:
        raise UsageError(f"weights {path} do not fit the model: {'; '.join(problems)}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, AttributeError, TypeError) as err:
        raise UsageError(f"weights {path} do not fit the model ({first_line(err)[:200]})") from err
