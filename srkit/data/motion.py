"""Rank clips by motion: mean optical-flow magnitude (OpenCV Farnebäck) between consecutive frames.

MANA's claim is about large motion, so its evaluation uses the clips that move most. This module
scores every clip of a dataset layout (:func:`srkit.data.layouts.discover_clips`) by the mean
magnitude (pixels per frame, in the clip's own resolution) of the dense Farnebäck flow between
consecutive grayscale frames, averaged over all pixels and all frame pairs, and writes the top fraction
as a subset list (one :attr:`Clip.name` per line) that ``srkit eval --subset`` reads.

Named subsets (:data:`MOTION_PRESETS`) fix the settings of a published one, so that "the paper's
subset" is one word rather than three options to get right: ``vimeo-motion`` is MANA's
Vimeo-90K-Motion, the 6% of the Vimeo-90K test set (``sep_testlist.txt``) with the largest mean flow.
MANA ranks by an optical flow it does not name; srkit's Farnebäck flow ranks the same large motions
first, but a clip near the 6% boundary may fall on the other side of it than in the paper's list.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from srkit.data.layouts import Clip
from srkit.errors import ConfigError, InputError
from srkit.io.atomic import atomic_write_text, check_output_path

__all__ = ["ClipMotion", "FarnebackParams", "MotionPreset", "MOTION_PRESETS", "mean_flow_magnitude", "clip_motion",
           "rank_clips", "select_top", "write_subset", "frame_flow", "window_flow",
           "FlowCache"]


@dataclass(frozen=True)
class MotionPreset:
    """A named large-motion subset: the dataset layout, its split and the fraction kept."""

    layout: str
    split: str
    top: float
    description: str


MOTION_PRESETS: dict[str, MotionPreset] = {
    # MANA (Yu et al., CVPR 2022), Sec. 4: "we compute the optical flow of the videos in the Vimeo-90K test
    # set and sort them by the mean flow magnitude; the top 6% form Vimeo-90K-Motion".
    "vimeo-motion": MotionPreset("vimeo", "test", 0.06,
                                 "MANA's Vimeo-90K-Motion: the top 6% of the Vimeo-90K test set by mean optical flow"),
}


@dataclass(frozen=True)
class FarnebackParams:
    """``cv2.calcOpticalFlowFarneback`` settings (OpenCV's documented example values)."""

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2


@dataclass(frozen=True)
class ClipMotion:
    """A clip's motion score: ``mean_flow`` pixels/frame over ``pairs`` consecutive frame pairs."""

    name: str
    mean_flow: float
    pairs: int


def _gray(rgb: np.ndarray) -> np.ndarray:
    import cv2

    if rgb.dtype == np.uint16:  # Farnebäck wants 8-bit; the flow does not care about the last bits
        rgb = (rgb.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    elif rgb.dtype.kind == "f":  # [0, 1] floats
        rgb = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if rgb.ndim == 2:
        return rgb
    if rgb.shape[2] == 1:
        return rgb[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(rgb[:, :, :3]), cv2.COLOR_RGB2GRAY)


def _shrink(gray: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Downscale so the long side is at most ``max_side``; returns the image and the factor applied."""
    import cv2

    h, w = gray.shape
    if not max_side or max(h, w) <= max_side:
        return gray, 1.0
    f = max_side / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA), f


def mean_flow_magnitude(frames: Iterable[np.ndarray], *, params: FarnebackParams = FarnebackParams(),
                        max_side: int | None = None) -> tuple[float, int]:
    """Mean Farnebäck flow magnitude (pixels/frame at the frames' size) over consecutive pairs.

    ``frames`` are RGB (HxWx3) or grayscale (HxW) arrays, uint8 or uint16. With ``max_side`` the flow
    is computed on frames shrunk to that long side and scaled back (faster on large frames).
    Returns ``(mean magnitude, number of pairs)``; ``(0.0, 0)`` for fewer than two frames.
    """
    import cv2

    prev = None
    total = 0.0
    pairs = 0
    for rgb in frames:
        gray, f = _shrink(_gray(np.asarray(rgb)), max_side)
        if prev is not None:
            if prev.shape != gray.shape:
                raise InputError(f"frame size changes inside the clip ({prev.shape[1]}x{prev.shape[0]} -> "
                                 f"{gray.shape[1]}x{gray.shape[0]})")
            flow = cv2.calcOpticalFlowFarneback(prev, gray, None, params.pyr_scale, params.levels, params.winsize,
                                                params.iterations, params.poly_n, params.poly_sigma, 0)
            total += float(np.sqrt(np.square(flow, dtype=np.float64).sum(axis=2)).mean()) / f
            pairs += 1
        prev = gray
    return (total / pairs if pairs else 0.0), pairs


# Flow for EDVR's offset-fidelity loss: a level more than the ranking's, for the up to ~40 px a 5-frame
# window of fast GoPro footage moves between its centre and its ends at full resolution.
WINDOW_FLOW_PARAMS = FarnebackParams(levels=4)


def frame_flow(src: np.ndarray, dst: np.ndarray, scale: int, *,
               params: FarnebackParams = WINDOW_FLOW_PARAMS) -> np.ndarray:
    """Optical flow from ``src`` to ``dst``, whole frames, averaged over ``scale x scale`` blocks.

    ``src``/``dst``: same-size RGB/gray arrays (uint8, uint16 or [0, 1] floats) whose sides are multiples of
    ``scale``. Returns ``(2, H/scale, W/scale)`` float32 ``(dx, dy)`` in units of ``scale`` pixels (LR pixels
    for GT frames), such that ``src(p) ~ dst(p + flow(p))``.

    Give whole frames, not training crops: Farnebäck needs the context. On Set8 windows (+-2 frames,
    4-5 LR px median motion) the flow of a 128x128 crop, even with 64 px of context around it, came out
    at half the magnitude of the whole frame's and 2.4 LR px off it. For even scales the flow is computed
    at half resolution: its warp error was within 1% of the full-resolution flow's at a fifth of the time
    (22 vs 119 ms for a 960x540 pair).
    """
    import cv2

    a, b = _gray(np.asarray(src)), _gray(np.asarray(dst))
    h, w = a.shape
    if h % scale or w % scale:
        raise InputError(f"frame_flow: frame size {w}x{h} is not a multiple of the scale x{scale}")
    if b.shape != a.shape:
        raise InputError(f"frame_flow: frames of different sizes ({w}x{h} and {b.shape[1]}x{b.shape[0]})")
    work = 2 if scale % 2 == 0 else 1
    if work > 1:
        a = cv2.resize(a, (w // work, h // work), interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, (w // work, h // work), interpolation=cv2.INTER_AREA)
    flow = cv2.calcOpticalFlowFarneback(a, b, None, params.pyr_scale, params.levels, params.winsize,
                                        params.iterations, params.poly_n, params.poly_sigma, 0)
    block = scale // work
    blocks = flow.reshape(h // scale, block, w // scale, block, 2).mean(axis=(1, 3)) / block
    return np.ascontiguousarray(blocks.transpose(2, 0, 1), dtype=np.float32)


def window_flow(frames: Sequence[np.ndarray], center: int, scale: int, *,
                params: FarnebackParams = WINDOW_FLOW_PARAMS, frame_ids: Sequence[int] | None = None,
                cache: FlowCache | None = None, clip_key: object = None) -> np.ndarray:
    """:func:`frame_flow` from ``frames[center]`` to every frame of a window: ``(T, 2, H/scale, W/scale)``.
    Give whole frames (see :func:`frame_flow`).

    ``frame_ids`` (default: the positions) name the frames in their clip: a frame with the centre's id
    (the centre, or a copy of it padding a window at the clip's ends) gets exactly zero flow. With a
    ``cache`` (its scale must be ``scale``; it uses its own Farneback parameters), each pair is looked up
    as ``(clip_key, centre id, frame id)`` and computed once.
    """
    h, w = np.asarray(frames[center]).shape[:2]
    if h % scale or w % scale:
        raise InputError(f"window_flow: frame size {w}x{h} is not a multiple of the scale x{scale}")
    ids = list(range(len(frames))) if frame_ids is None else list(frame_ids)
    if len(ids) != len(frames):
        raise InputError(f"window_flow: {len(ids)} frame ids for {len(frames)} frames")
    if cache is not None and cache.scale != scale:
        raise InputError(f"window_flow: the cache holds x{cache.scale} flows, asked for x{scale}")
    zero = np.zeros((2, h // scale, w // scale), np.float32)

    def flow_to(t: int) -> np.ndarray:
        if ids[t] == ids[center]:
            return zero
        if cache is not None:
            return cache.get((clip_key, ids[center], ids[t]), frames[center], frames[t])
        return frame_flow(frames[center], frames[t], scale, params=params)

    return np.stack([flow_to(t) for t in range(len(frames))])


class FlowCache:
    """:func:`frame_flow` of frame pairs, each computed once per process and kept up to ``max_bytes``.

    A training window's flow is that of whole frames (a crop's is wrong, see :func:`frame_flow`), far too
    slow to recompute for every sample; the pairs of a clip recur every epoch. Keys are the caller's
    (e.g. ``(clip, src frame, dst frame)``); the least recently used pairs go first when full. Each
    DataLoader worker holds its own cache.
    """

    def __init__(self, scale: int, max_bytes: int = 1 << 30):
        from collections import OrderedDict

        self.scale, self.max_bytes = int(scale), int(max_bytes)
        self._flows: OrderedDict = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._flows)

    def get(self, key, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """The flow of ``key``: from the cache, or computed from ``src`` and ``dst``."""
        flow = self._flows.get(key)
        if flow is not None:
            self._flows.move_to_end(key)
            return flow
        flow = frame_flow(src, dst, self.scale)
        flow.setflags(write=False)  # shared by every later sample of this pair
        self._flows[key] = flow
        self._bytes += flow.nbytes
        while self._bytes > self.max_bytes and len(self._flows) > 1:
            self._bytes -= self._flows.popitem(last=False)[1].nbytes
        return flow


def _clip_frames(clip: Clip, max_frames: int | None) -> Iterator[np.ndarray]:
    from srkit.io.images import read_rgb

    paths = clip.gt if clip.gt is not None else clip.lr
    if paths is not None:
        for i, p in enumerate(paths):
            if max_frames is not None and i >= max_frames:
                return
            yield read_rgb(p)
        return
    if clip.video is not None:
        from srkit.io.video import VideoReader

        with VideoReader(clip.video, dtype=np.uint8) as reader:
            for i, frame in enumerate(reader):
                if max_frames is not None and i >= max_frames:
                    return
                yield frame.rgb
        return
    raise InputError(f"clip {clip.name} has no frames")


def clip_motion(clip: Clip, *, max_frames: int | None = None, max_side: int | None = None,
                params: FarnebackParams = FarnebackParams()) -> ClipMotion:
    """Score one clip (ground-truth frames when present, else LR frames, else its video file)."""
    try:
        mean, pairs = mean_flow_magnitude(_clip_frames(clip, max_frames), params=params, max_side=max_side)
    except InputError as exc:
        if exc.path is None:  # say which clip (frame readers already name their file)
            where = clip.video or (Path(clip.gt[0]).parent if clip.gt else Path(clip.lr[0]).parent if clip.lr else None)
            raise InputError(f"clip {clip.name}: {exc}", where) from None
        raise
    if pairs == 0:
        where = clip.video or (Path(clip.gt[0]).parent if clip.gt else Path(clip.lr[0]).parent if clip.lr else None)
        raise InputError(f"clip {clip.name} has fewer than 2 frames: no motion to measure", where)
    return ClipMotion(clip.name, mean, pairs)


def rank_clips(clips: Sequence[Clip], *, max_frames: int | None = None, max_side: int | None = None,
               params: FarnebackParams = FarnebackParams(),
               progress: Callable[[int, ClipMotion], None] | None = None) -> list[ClipMotion]:
    """Score every clip; returns them by decreasing motion (ties keep the dataset order)."""
    if max_frames is not None and max_frames < 2:
        raise ConfigError(f"max_frames must be at least 2 (a frame pair), got {max_frames}")
    scores = []
    for i, clip in enumerate(clips):
        scores.append(clip_motion(clip, max_frames=max_frames, max_side=max_side, params=params))
        if progress is not None:
            progress(i + 1, scores[-1])
    return sorted(scores, key=lambda s: -s.mean_flow)  # sorted() is stable


def select_top(ranked: Sequence[ClipMotion], top: float) -> list[ClipMotion]:
    """The ``top`` fraction (0 < top <= 1; at least one clip) or, for a whole number > 1, that many clips."""
    if not ranked:
        return []
    if not (isinstance(top, (int, float)) and math.isfinite(top) and top > 0):
        raise ConfigError(f"--top must be a fraction in (0, 1] or a clip count, got {top!r}")
    if top <= 1:
        n = max(1, math.ceil(top * len(ranked) - 1e-9))
    elif float(top).is_integer():
        n = int(top)
    else:
        raise ConfigError(f"--top must be a fraction in (0, 1] or a whole clip count, got {top!r}")
    return list(ranked[:min(n, len(ranked))])


def write_subset(path: str | os.PathLike, chosen: Sequence[ClipMotion], *, header: str = "",
                 overwrite: bool = False) -> Path:
    """Write one clip name per line (score as a trailing ``#`` comment), atomically.

    The file is what :func:`srkit.data.layouts.read_name_list` (``srkit eval --subset``) reads: the
    first token of each line, ``#`` starting a comment.
    """
    path = check_output_path(path, overwrite=overwrite)
    bad = [c.name for c in chosen if not c.name or any(ch.isspace() for ch in c.name) or "#" in c.name]
    if bad:
        raise InputError(f"clip name {bad[0]!r} cannot be written to a subset list (whitespace or '#')", path)
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    lines += [f"{c.name}  # mean flow {c.mean_flow:.3f} px/frame over {c.pairs} pairs" for c in chosen]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
