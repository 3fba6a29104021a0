"""Configs: TOML -> frozen dataclasses. Unknown keys are errors; `a.b=value` overrides any value.

    cfg = load_config(AdversarialStudyConfig, "studies/mnist-cpu.toml", ["train.epochs=3"])
"""
from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from robustcnn.errors import UsageError, close_match_hint

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")
# keys that were renamed: old -> new. data.corruption (Zhang et al.'s randomization tests) became
# data.randomization, so that "corruptions" means only the common corruptions of robustcnn.corruptions.
RENAMED = {"corruption": "randomization"}


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a mapping, converting nested dataclasses, enums and lists by type hint."""
    if not isinstance(data, Mapping):
        raise UsageError(f"config '{where.rstrip('.') or 'root'}' must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if RENAMED.get(key) in names:
            raise UsageError(f"config key '{where}{key}' is now '{where}{RENAMED[key]}' (the same values); rename it")
        if key not in names:
            raise UsageError(f"unknown config key '{where}{key}'{close_match_hint(key, names)}; "
                             f"known keys here: {', '.join(names)}")
    values = {k: _convert(hints[k], v, f"{where}{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        if isinstance(err, UsageError):
            raise
        raise UsageError(f"config '{where.rstrip('.') or cls.__name__}': {err}") from err


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, where)
            except UsageError as err:
                errors.append(str(err))
        raise UsageError(errors[0])
    if dataclasses.is_dataclass(hint):
        if isinstance(value, str) and "name" in {f.name for f in dataclasses.fields(hint)}:
            value = {"name": value}  # shorthand: attacks = ["fgsm", "pgd"]
        return value if isinstance(value, hint) else from_dict(hint, value, f"{where}.")
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            choices = [e.value for e in hint]
            raise UsageError(f"config '{where}': '{value}' is not one of {', '.join(choices)}"
                             f"{close_match_hint(str(value), choices)}") from None
    if origin in (list, tuple, Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            value = [value]  # a single value where a list is expected: a list of one
        item = args[0] if args else Any
        out = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise UsageError(f"config '{where}' must be a table, got {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN != NaN
            raise UsageError(f"config '{where}' must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise UsageError(f"config '{where}' must be an integer, got {value!r}")
        return _int_in_range(int(value), where)
    if hint is bool:
        if not isinstance(value, bool):
            raise UsageError(f"config '{where}' must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise UsageError(f"config '{where}' must be a string, got {value!r}")
        return value
    return value


INT64 = 2**63
SEED_KEY = re.compile(r"(.*\.)?seeds?(\[\d+\])?")


def _int_in_range(value: int, where: str) -> int:
    """Integers are 64-bit (as TOML's are, and torch's); seeds are also non-negative (torch.manual_seed)."""
    low = 0 if SEED_KEY.fullmatch(where) else -INT64
    if not low <= value < INT64:
        raise UsageError(f"config '{where}' = {value} is out of range; use an integer in [{low}, 2**63)")
    return value


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist; see the studies/ folder for examples")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise UsageError(f"config file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from err
    except OSError as err:
        raise UsageError(f"cannot read config file {path} ({err.strerror})") from err
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"config file {path} is not valid TOML ({err})") from err


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.epochs=3' -> (['train', 'epochs'], 3); the value is read as TOML, else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"override '{text}' must look like key=value, e.g. train.epochs=3")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); a list of tables is indexed by number, e.g. models.1.name=x."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for depth, part in enumerate(path[:-1]):
            if isinstance(node, list):
                node = node[_index(part, node, text)]
            elif isinstance(node, dict):
                if node.get(part) is None:  # e.g. an unset optional table such as train.adversarial
                    node[part] = {}
                node = node[part]
            else:
                raise UsageError(f"override '{text}': '{'.'.join(path[:depth])}' is a value ({node!r}), not a table, "
                                 "so it has no keys to set")
        if isinstance(node, list):
            node[_index(path[-1], node, text)] = value
        elif isinstance(node, dict):
            node[path[-1]] = value
        else:
            raise UsageError(f"override '{text}': '{'.'.join(path[:-1])}' is a value ({node!r}), not a table, so it "
                             "has no keys to set")
    return data


def _index(part: str, node: list, text: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise UsageError(f"override '{text}': '{part}' must be an index below {len(node)}")
    return int(part)


def merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; any other value (lists included) replaces the base's."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (), *,
                base: T | None = None) -> T:
    """The resolved config: the defaults (`base`, else the dataclass's), then the TOML file, then the overrides."""
    from robustcnn.results import to_jsonable

    data = to_jsonable(base if base is not None else cls())
    if path is not None:
        data = merge(data, read_toml(path))
    return from_dict(cls, apply_overrides(data, overrides))
