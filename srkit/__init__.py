"""srkit: video and image super-resolution and restoration (EDVR, UDVD, MANA) on one framework.

The top-level names are imported lazily so that ``import srkit`` is cheap and one broken optional
dependency (say, PyAV for video) never breaks the rest of the package.
"""

from __future__ import annotations

from srkit.utils.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "list_models": "srkit.models",
    "create_model": "srkit.models",
    "register_model": "srkit.models",
    "load_model": "srkit.models.checkpoint",
    "save_model": "srkit.models.checkpoint",
    "upscale": "srkit.infer",
    "upscale_frames": "srkit.infer",
}

__all__ = ["__version__", *_EXPORTS]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
