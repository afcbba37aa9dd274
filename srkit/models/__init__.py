"""Networks and their registry.

Each network lives in one file (blocks -> model -> its checkpoint support registered with
``register_checkpoint_support`` -> presets registered with ``@register_model``).
Model files are imported here explicitly; nothing is discovered by scanning.
"""

from srkit.models.api import ModelSpec, SRModel, SROutput, as_sr_output
from srkit.models.checkpoint import create_model
from srkit.models.registry import (has_pretrained, list_models, model_entry, preset_spec, pretrained_path,
                                   register_model)

# Model files (explicit imports; each registers its presets).
from srkit.models import edvr  # noqa: F401
from srkit.models import edvr_cascade  # noqa: F401
from srkit.models import udvd  # noqa: F401
from srkit.models import udvd_ref  # noqa: F401  (the design notes' reference UDVD code)
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
    "preset_spec",
    "pretrained_path",
    "register_model",
]
