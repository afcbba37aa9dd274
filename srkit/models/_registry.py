"""The model registry: preset names -> builder functions.

Presets are plain functions decorated with :func:`register_model` in the model's own file (as timm
does). Model files are imported explicitly by :mod:`srkit.models`; nothing is discovered by scanning.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from torch import nn

from srkit.errors import ConfigError

F = TypeVar("F", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    family: str
    description: str


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, *, family: str, description: str) -> Callable[[F], F]:
    """Register ``fn(**overrides) -> model`` under ``name``."""

    def decorator(fn: F) -> F:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelEntry(name, fn, family, description)
        return fn

    return decorator


def list_models(family: str | None = None) -> list[str]:
    """Names of the registered presets, optionally of one family (``"edvr"``, ``"udvd"``, ``"mana"``)."""
    return sorted(n for n, e in _MODELS.items() if family is None or e.family == family)


def model_entry(name: str) -> ModelEntry:
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(_MODELS))}"
        raise ConfigError(f"unknown model {name!r}{hint}") from None


def create_model(name: str, *, weights: str | os.PathLike | None = None, **overrides: Any) -> nn.Module:
    """Build preset ``name`` (with config ``overrides``); load ``weights`` (any accepted format) if given."""
    entry = model_entry(name)
    try:
        model = entry.builder(**overrides)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None
    model.preset = name
    if weights is not None:
        from srkit.models.checkpoint import load_weights

        load_weights(model, weights)
    return model
