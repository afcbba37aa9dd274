"""Inference: streaming video/image restoration, spatial tiling and the feature cache.

``Restorer`` and ``upscale_frames`` (engine: frames in, frames out) and ``upscale`` (files in, files
out) are imported lazily so that importing :mod:`srkit.infer` costs nothing until they are used.
"""

from __future__ import annotations

from srkit.utils.lazy import lazy_exports

_EXPORTS = {
    "upscale_frames": "srkit.infer.engine",
    "Restorer": "srkit.infer.engine",
    "upscale": "srkit.infer.run",
    "upscale_many": "srkit.infer.run",
    "UpscaleResult": "srkit.infer.run",
    "RestoreOptions": "srkit.infer.options",
    "OutputOptions": "srkit.infer.options",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
