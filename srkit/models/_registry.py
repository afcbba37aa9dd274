"""The model registry: preset names -> builder functions.

Presets are plain functions decorated with :func:`register_model` in the model's own file (as timm
does). Model files are imported explicitly by :mod:`srkit.models`; nothing is discovered by scanning.

A preset may name weights shipped inside the package (``srkit/weights/<file>.safetensors``, srkit's own
format: preset and config in the metadata). ``create_model(name, pretrained=True)`` loads them through
the same path as any checkpoint file.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from torch import nn

from srkit.errors import CheckpointError, ConfigError

F = TypeVar("F", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    family: str
    description: str
    # file name of the weights shipped in srkit/weights/ (None: no pretrained weights)
    pretrained: str | None = None


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, *, family: str, description: str, pretrained: str | None = None) -> Callable[[F], F]:
    """Register ``fn(**overrides) -> model`` under ``name`` (``pretrained``: shipped weights file name)."""

    def decorator(fn: F) -> F:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelEntry(name, fn, family, description, pretrained)
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


WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def has_pretrained(name: str) -> bool:
    """Whether preset ``name`` is registered and ships weights (False for unknown names)."""
    entry = _MODELS.get(name)
    return entry is not None and entry.pretrained is not None


def pretrained_path(name: str) -> Path:
    """The shipped weights file of preset ``name`` (errors: no such preset, none shipped, file missing)."""
    entry = model_entry(name)
    if entry.pretrained is None:
        shipped = ", ".join(n for n in sorted(_MODELS) if _MODELS[n].pretrained) or "none"
        raise ConfigError(f"model {name!r} has no shipped weights (presets with weights: {shipped}); "
                          "give a checkpoint instead")
    path = WEIGHTS_DIR / entry.pretrained
    if not path.is_file():
        raise CheckpointError("shipped weights are missing from this installation (reinstall srkit)", path)
    return path


def create_model(name: str, *, weights: str | os.PathLike | None = None, pretrained: bool = False,
                 **overrides: Any) -> nn.Module:
    """Build preset ``name`` (with config ``overrides``).

    ``weights`` loads a checkpoint (any accepted format); ``pretrained=True`` loads the weights shipped
    with srkit for this preset (see :func:`pretrained_path`). Without either the weights are random.
    """
    entry = model_entry(name)
    if pretrained:
        if weights is not None:
            raise ConfigError("give either weights or pretrained=True, not both")
        weights = pretrained_path(name)
    try:
        model = entry.builder(**overrides)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None
    model.preset = name
    if weights is not None:
        from srkit.models.checkpoint import load_weights

        load_weights(model, weights)
    return model
