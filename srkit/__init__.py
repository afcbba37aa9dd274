"""srkit: video and image super-resolution and restoration (EDVR, UDVD, MANA) on one framework.

The top-level names are imported lazily so that ``import srkit`` is cheap and one broken optional
dependency (say, PyAV for video) never breaks the rest of the package.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "list_models": "srkit.models",
    "create_model": "srkit.models",
    "register_model": "srkit.models",
    "load_model": "srkit.models.checkpoint",
    "save_model": "srkit.models.checkpoint",
    "upscale": "srkit.infer",
    "upscale_frames": "srkit.infer",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'srkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
