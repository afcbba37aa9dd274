"""Typed inference options: every default of ``srkit upscale``, ``srkit sweep``, ``srkit eval`` and the
Python API written once.

:class:`RestoreOptions` says how a model restores frames (device, precision, tiles, temporal padding,
feature cache, batching); :class:`OutputOptions` how ``srkit upscale`` writes files. Both are plain
dataclasses importable without PyTorch, so the command line takes its defaults and choices from them
before any heavy import. ``validate()`` checks every value and returns the options, so a bad one is a
single error line before any work starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from srkit.data.windows import PADDING_MODES
from srkit.errors import ConfigError
from srkit.utils.device import PRECISIONS

__all__ = ["RestoreOptions", "OutputOptions", "OUTPUT_KINDS", "check_fps"]

# What srkit upscale can write: decided from the output path ("auto") or forced.
OUTPUT_KINDS = ("auto", "video", "frames", "image", "images")


@dataclass
class RestoreOptions:
    """How a model restores frames (the same for every stream it restores)."""

    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    precision: str = "fp32"  # autocast: fp32, bf16 or fp16 (srkit upscale picks bf16 on native-bf16 CPUs)
    tile: int | None = None  # restore in tiles of this many input pixels (None: whole frames)
    tile_overlap: int = 16  # context pixels on each side of a tile, blended across seams
    max_memory: str | int | None = None  # choose the tile size for this budget ("4GB") when tile is None
    channels_last: bool = True  # NHWC convolutions (about 2x faster on CPUs)
    padding: str = "reflection_circle"  # temporal padding of windows at clip borders (as EDVR's training)
    use_cache: bool = True  # encode each frame once and reuse it in every window (models with encode/decode)
    batch_size: int = 1  # windows restored together

    def validate(self) -> RestoreOptions:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r} (use {', '.join(PRECISIONS)})")
        if self.padding not in PADDING_MODES:
            raise ConfigError(f"--padding must be one of {', '.join(PADDING_MODES)}, got {self.padding!r}")
        if self.tile is not None and self.tile <= 0:
            raise ConfigError(f"tile size must be positive, got {self.tile}")
        if self.tile_overlap < 0:  # also without --tile: a bad value is never silently unused
            raise ConfigError(f"--tile-overlap must be >= 0, got {self.tile_overlap}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.max_memory is not None:
            from srkit.utils.sizes import parse_byte_size

            parse_byte_size(self.max_memory)
        return self


@dataclass
class OutputOptions:
    """How ``srkit upscale`` writes its outputs."""

    overwrite: bool = False  # replace existing outputs
    resume: bool = False  # continue a frame-folder output after its last complete frame
    quiet: bool = False  # no progress bar
    codec: str = "libx264"  # video encoder
    crf: float = 18  # encoder quality (x264/x265 0..51, VP9/AV1 0..63)
    pix_fmt: str | None = None  # output pixel format (default: the encoder's, 16-bit for deep sources)
    lossless: bool = False
    fps: float | Fraction = 25  # frame rate of a video written from a frame folder
    output_kind: str = "auto"  # one of OUTPUT_KINDS

    def validate(self) -> OutputOptions:
        if self.overwrite and self.resume:
            raise ConfigError("--overwrite and --resume exclude each other")
        if self.output_kind not in OUTPUT_KINDS:
            raise ConfigError(f"unknown output kind {self.output_kind!r} (use {', '.join(OUTPUT_KINDS)})")
        self.fps = check_fps(self.fps)
        from srkit.io.video import check_crf

        check_crf(self.codec, self.crf)  # before any restoration: the encoder opens on the first restored frame
        return self


def check_fps(fps: float | Fraction) -> Fraction:
    """``fps`` as a Fraction, refused in one line unless it is a finite number > 0."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ConfigError(f"--fps must be a number, got {fps!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"--fps must be a finite frame rate > 0, got {fps}")
    return Fraction(fps)
