"""The model registry: preset names -> builder functions.

Presets are plain functions decorated with :func:`register_model` in the model's own file (as timm
does). Model files are imported explicitly by :mod:`srkit.models`; nothing is discovered by scanning.

A preset may name weights shipped inside the package (``srkit/weights/<file>.safetensors``, srkit's own
format: preset and config in the metadata). :func:`srkit.models.checkpoint.create_model` builds presets
and loads those (or any checkpoint file): this module knows nothing of checkpoints, so that the
checkpoint loader can look presets up here without the two importing each other.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from torch import nn

from srkit.errors import CheckpointError, ConfigError
from srkit.models.api import ModelSpec

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


def list_families() -> list[str]:
    """Names of the model families that have registered presets, sorted."""
    return sorted({e.family for e in _MODELS.values()})


def model_entry(name: str) -> ModelEntry:
    """The entry of preset ``name`` (:class:`ConfigError` with close names when it is unknown)."""
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


def preset_spec(name: str) -> ModelSpec:
    """What preset ``name`` consumes and produces, without building its weights (meta device)."""
    import torch

    with torch.device("meta"):
        return model_entry(name).builder().spec
