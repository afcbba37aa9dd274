"""Temporal windows: which frames a video model sees around a centre frame.

A video SR network restores frame ``center`` from the ``num_frames`` frames around it. Near the
start and end of a clip part of that window falls outside the clip; the padding ``mode`` decides
which real frames stand in for the missing ones. The four modes and their results inside ordinary
clips (``num_frames <= length``) are those of the EDVR / BasicSR evaluation code, so scores computed
with srkit match the published tables. For ``center=0, num_frames=5, length=10``::

    replicate          [0, 0, 0, 1, 2]   repeat the border frame
    reflection         [2, 1, 0, 1, 2]   mirror around the border frame (border not repeated)
    reflection_circle  [4, 3, 0, 1, 2]   take the frames just beyond the far side of the window,
                                         mirrored (new information instead of duplicates)
    circle             [3, 4, 0, 1, 2]   wrap around inside the window

Clips shorter than the window (``num_frames > length``, e.g. a 3-frame clip with a 7-frame model)
cannot be padded that way: the rules above would point outside the clip again. There the index
keeps being folded by the mode's own continuation until it lands inside the clip: clamping for
``replicate``, endless mirroring (period ``2 * (length - 1)``) for ``reflection`` and
``reflection_circle``, and wrap-around (period ``length``) for ``circle``.
"""

from __future__ import annotations

from srkit.errors import ConfigError

PADDING_MODES = ("replicate", "reflection", "reflection_circle", "circle")


def _mirror(i: int, length: int) -> int:
    """Reflect ``i`` into ``[0, length)`` without repeating the border (``-1 -> 1``)."""
    if length == 1:
        return 0
    period = 2 * (length - 1)
    i %= period
    return period - i if i >= length else i


def _fold(i: int, length: int, mode: str) -> int:
    """Bring an index that the BasicSR rule left outside the clip back inside it (short clips)."""
    if mode == "replicate":
        return min(max(i, 0), length - 1)
    if mode == "circle":
        return i % length
    return _mirror(i, length)


def check_window(num_frames: int, mode: str) -> None:
    """Raise :class:`ConfigError` (one line) for an even/non-positive window or an unknown mode."""
    if mode not in PADDING_MODES:
        raise ConfigError(f"unknown frame padding mode {mode!r} (choose from {', '.join(PADDING_MODES)})")
    if num_frames < 1 or num_frames % 2 == 0:
        raise ConfigError(f"num_frames must be a positive odd number (the centre frame plus equal neighbours), got {num_frames}")


def window_indices(center: int, num_frames: int, length: int, mode: str = "reflection_circle") -> list[int]:
    """Indices of the ``num_frames``-window centred on ``center`` in a clip of ``length`` frames.

    Args:
        center: index of the frame to restore, ``0 <= center < length``.
        num_frames: odd window size (the centre plus ``num_frames // 2`` neighbours on each side).
        length: number of frames in the clip (may be smaller than ``num_frames``).
        mode: border padding, one of :data:`PADDING_MODES` (see the module docstring).

    Returns:
        ``num_frames`` indices in ``[0, length)``, in temporal order; the middle one is ``center``.
    """
    check_window(num_frames, mode)
    if length < 1:
        raise ValueError(f"clip length must be positive, got {length}")
    if not 0 <= center < length:
        raise ValueError(f"centre frame {center} outside a clip of {length} frames")
    last = length - 1
    half = num_frames // 2
    out: list[int] = []
    for i in range(center - half, center + half + 1):
        if i < 0:
            if mode == "replicate":
                j = 0
            elif mode == "reflection":
                j = -i
            elif mode == "reflection_circle":
                j = center + half - i
            else:  # circle
                j = num_frames + i
        elif i > last:
            if mode == "replicate":
                j = last
            elif mode == "reflection":
                j = 2 * last - i
            elif mode == "reflection_circle":
                j = (center - half) - (i - last)
            else:  # circle
                j = i - num_frames
        else:
            j = i
        if not 0 <= j <= last:  # only possible when the window is longer than the clip
            j = _fold(j, length, mode)
        out.append(j)
    return out


def strided_window(center: int, num_frames: int, length: int, interval: int = 1,
                   mode: str = "reflection_circle") -> list[int]:
    """Window with ``interval`` frames between neighbours (temporal augmentation in training).

    ``interval == 1`` is :func:`window_indices`. For larger intervals the positions
    ``center + k * interval`` that fall outside the clip are padded by applying ``mode`` to the
    sub-sampled clip that contains ``center`` (frames ``center % interval``, ``+ interval``, ...), so
    the spacing between the frames the network sees stays ``interval`` wherever possible.
    """
    if interval < 1:
        raise ConfigError(f"frame interval must be >= 1, got {interval}")
    if interval == 1:
        return window_indices(center, num_frames, length, mode)
    phase = center % interval
    sub_length = (length - 1 - phase) // interval + 1
    sub = window_indices(center // interval, num_frames, sub_length, mode)
    return [phase + k * interval for k in sub]


def window_fits(center: int, num_frames: int, length: int, interval: int = 1) -> bool:
    """True when the strided window around ``center`` lies inside the clip (no padding needed)."""
    half = (num_frames // 2) * interval
    return center - half >= 0 and center + half <= length - 1
