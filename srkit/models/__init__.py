"""Networks and their registry.

Each network lives in one file (blocks -> model -> presets registered with ``@register_model``).
Model files are imported here explicitly; nothing is discovered by scanning.
"""

from srkit.models._api import ModelSpec, SRModel, SROutput, as_sr_output
from srkit.models._registry import (create_model, has_pretrained, list_models, model_entry, pretrained_path,
                                    register_model)

# Model files (explicit imports; each registers its presets).
from srkit.models import edvr  # noqa: F401
from srkit.models import udvd  # noqa: F401
from srkit.models import mana  # noqa: F401

__all__ = [
    "ModelSpec",
    "SRModel",
    "SROutput",
    "as_sr_output",
    "create_model",
    "has_pretrained",
    "list_models",
    "model_entry",
    "pretrained_path",
    "register_model",
]
