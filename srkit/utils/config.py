"""The typed configuration engine: dataclasses filled from plain (YAML) data, strictly.

One engine for every typed option set in srkit (training configs in :mod:`srkit.train.config`, the
``srkit eval`` options and their ``--config`` file): unknown keys are refused with the closest known
one, values are checked against the field's annotation and its ``check`` (``train.optim.lr: expected
a positive float, got 'abc'``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import field
from typing import Any, Literal, Union

from srkit.errors import ConfigError

__all__ = ["typed_field", "from_dict", "check_values", "to_dict", "describe_type", "CHECKS"]


def typed_field(default: Any = dataclasses.MISSING, *, check: str | None = None, help: str = "",  # noqa: A002
                factory: Any = None) -> Any:
    """A dataclass field with a value check (a :data:`CHECKS` key) and a help text."""
    meta = {"check": check, "help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# check name -> (article of the "expected ..." wording, predicate)
CHECKS: dict[str, tuple[str, Any]] = {
    "positive": ("a positive", lambda v: v > 0),
    "non_negative": ("a non-negative", lambda v: v >= 0),
    "unit": ("a", lambda v: 0.0 <= v <= 1.0),  # "a float in [0, 1]"
    "unit_open": ("a", lambda v: 0.0 <= v < 1.0),
    "ge1": ("a", lambda v: v >= 1),
}
_CHECK_SUFFIX = {"unit": " in [0, 1]", "unit_open": " in [0, 1)", "ge1": " >= 1"}


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def describe_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "a boolean"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a float"
    if tp is str:
        return "a string"
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(tp))
    return str(tp)


def convert(value: Any, tp: Any, path: str, check: str | None = None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, path, check)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{path}: expected {describe_type(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: expected {describe_type(tp)}, got {value!r}{hint}")
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [convert(v, args[0], f"{path}[{i}]", check) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): convert(v, args[1], f"{path}.{k}", check) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected a boolean (true/false), got {value!r}")
        return value
    if tp in (int, float):
        out = _number(value, tp, path, check)
        return out
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{path}: unsupported type {tp}")  # pragma: no cover - schema bug


def _number(value: Any, tp: type, path: str, check: str | None) -> int | float:
    words = CHECKS[check][0] if check else ("an" if tp is int else "a")
    want = f"{words} {'integer' if tp is int else 'float'}{_CHECK_SUFFIX.get(check or '', '')}"
    if isinstance(value, bool):
        raise ConfigError(f"{path}: expected {want}, got {value!r}")
    num: Any = value
    # PyYAML reads 4e-4 (no dot) as a string; accept numeric strings so BasicSR-style values work.
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        num = float(value)
    if not isinstance(num, (int, float)) or (isinstance(num, float) and not math.isfinite(num)):
        raise ConfigError(f"{path}: expected {want}, got {value!r}")
    if tp is int:
        if isinstance(num, float):
            if not num.is_integer():
                raise ConfigError(f"{path}: expected {want}, got {value!r}")
            num = int(num)
    else:
        num = float(num)
    if check and not CHECKS[check][1](num):
        raise ConfigError(f"{path}: expected {want}, got {value!r}")
    return num


def check_values(cls: type, data: Any, path: str = "") -> dict[str, Any]:
    """The fields of dataclass ``cls`` given in plain ``data``, converted and checked (missing ones left out).

    Unknown keys are refused with the closest known one; ``path`` prefixes every key in messages.
    """
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"{_join(path, key)}: unknown key{hint}")
    return {name: convert(data[name], hints[name], _join(path, name), f.metadata.get("check"))
            for name, f in fields.items() if name in data}


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from plain ``data``, rejecting unknown keys and bad values."""
    return cls(**check_values(cls, data, path))


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain data (for YAML dumps and checkpoint metadata)."""
    return dataclasses.asdict(cfg)
