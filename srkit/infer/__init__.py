"""Inference: streaming video/image restoration, spatial tiling and the feature cache.

``upscale_frames`` (engine: frames in, frames out) and ``upscale`` (files in, files out) are
imported lazily so that importing :mod:`srkit.infer` costs nothing until they are used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["upscale_frames", "upscale", "upscale_many", "UpscaleResult"]


def __getattr__(name: str) -> Any:
    if name == "upscale_frames":
        from srkit.infer.engine import upscale_frames

        return upscale_frames
    if name in ("upscale", "upscale_many", "UpscaleResult"):
        from srkit.infer import run

        return getattr(run, name)
    raise AttributeError(f"module 'srkit.infer' has no attribute {name!r}")
