"""Training-sample transforms: augmentation, aligned LR/GT crops, LR synthesis on crops.

All functions work on ``numpy`` HWC frames (``uint8``/``uint16`` or float32 in [0, 1]) and leave
tensor conversion to :func:`to_tensor` at the very end, so DataLoader workers stay in numpy.

Alignment convention (the one of BasicSR/MMagic and of every degradation in
:mod:`srkit.data.degrade`): LR pixel ``(i, j)`` covers GT pixels ``[i*s, (i+1)*s) x [j*s, (j+1)*s)``.
A crop at LR position ``(top, left)`` therefore pairs with the GT crop at ``(top*s, left*s)``, and
GT frames are first cut to a multiple of ``s`` (``mod_crop``).

Synthesising LR on crops
    Degrading whole 1080p frames to train on 64x64 LR patches wastes most of the work, so
    :func:`synth_pair` degrades only the GT region of the crop plus a ``margin`` of GT pixels on each
    side (clipped at the frame border) and keeps the LR pixels of the crop itself. Every degradation
    in :mod:`srkit.data.degrade` is local (bicubic: 8 GT pixels either side at x4; BD: 6; SRMD: blur
    radius + bicubic support, at most 16), so with the default margin of 24 the LR patch is exactly
    the patch of the fully degraded frame; at frame borders the region ends at the same border as
    the frame, so border handling is identical too. Region starts are multiples of ``s``, keeping the
    sampling phase of the full frame.

Augmentation is drawn once per sample and applied identically to every frame (and the GT) as
numpy views, before cropping and before LR synthesis, so the degradation (and its condition maps)
describes the augmented image exactly; an anisotropic blur kernel is not silently rotated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from srkit.errors import ConfigError, InputError
from srkit.io.images import to_float


@dataclass(frozen=True)
class Augment:
    """Flips and the transpose (with the flips, all 8 symmetries of the square), as BasicSR's ``augment``."""

    hflip: bool = False
    vflip: bool = False
    transpose: bool = False

    def apply(self, img: np.ndarray) -> np.ndarray:
        """Apply to an HWC (or HW) array; returns a view."""
        if self.hflip:
            img = img[:, ::-1]
        if self.vflip:
            img = img[::-1]
        if self.transpose:
            img = img.swapaxes(0, 1)
        return img

    def apply_chw(self, arr: np.ndarray) -> np.ndarray:
        """Apply to a CHW array (condition maps); returns a view."""
        return np.moveaxis(self.apply(np.moveaxis(arr, 0, -1)), -1, 0)

    def apply_flow(self, flow: np.ndarray) -> np.ndarray:
        """Apply to ``(..., 2, H, W)`` ``(dx, dy)`` flow fields: they move like an image and their vectors turn."""
        dx, dy = flow[..., 0, :, :], flow[..., 1, :, :]
        if self.hflip:
            dx, dy = -dx[..., ::-1], dy[..., ::-1]
        if self.vflip:
            dx, dy = dx[..., ::-1, :], -dy[..., ::-1, :]
        if self.transpose:
            dx, dy = dy.swapaxes(-1, -2), dx.swapaxes(-1, -2)
        return np.stack([dx, dy], axis=-3)


def draw_augment(rng: np.random.Generator, *, use_flip: bool = True, use_rot: bool = True) -> Augment:
    """Random augmentation: horizontal flip (``use_flip``), vertical flip and transpose (``use_rot``), each p=0.5.

    Three draws are always made so the rest of the sample's random stream does not depend on the flags.
    """
    h, v, t = rng.random(3) < 0.5
    return Augment(bool(h and use_flip), bool(v and use_rot), bool(t and use_rot))


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Cut the bottom/right so height and width are multiples of ``scale`` (a view)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def to_tensor(frames: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """HWC -> CHW float32 tensor; a sequence of frames -> (T, C, H, W)."""
    if isinstance(frames, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(to_float(frames).transpose(2, 0, 1)))
    stack = np.stack([to_float(f) for f in frames])
    return torch.from_numpy(np.ascontiguousarray(stack.transpose(0, 3, 1, 2)))


def check_patch(lq_patch: int, h: int, w: int, what: str) -> None:
    if lq_patch > h or lq_patch > w:
        raise InputError(f"{what}: LR frames are {w}x{h}, smaller than the {lq_patch}x{lq_patch} LR training patch "
                         "(lower gt_patch or drop the clip)")


def check_pair_sizes(lr_frames: Sequence[np.ndarray], gt: np.ndarray, scale: int, what: str = "sample") -> None:
    """One-line :class:`InputError` unless all LR frames share a size and GT is ``scale`` times it (mod-crop)."""
    h, w = lr_frames[0].shape[:2]
    for f in lr_frames[1:]:
        if f.shape[:2] != (h, w):
            raise InputError(f"{what}: LR frames of different sizes ({w}x{h} and {f.shape[1]}x{f.shape[0]})")
    H, W = gt.shape[:2]
    if H // scale != h or W // scale != w:
        raise InputError(f"{what}: GT is {W}x{H} but LR is {w}x{h}; at x{scale} GT should be "
                         f"{w * scale}x{h * scale}")


def crop_pair(lr_frames: Sequence[np.ndarray], gt: np.ndarray, scale: int, lq_patch: int | None,
              rng: np.random.Generator | None, *, what: str = "sample", flows: np.ndarray | None = None,
              ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
    """Aligned random crop of LR frames read from disk and their GT (``lq_patch=None``: whole frames).

    GT must be ``scale`` times the LR size, up to the ``scale - 1`` rows/columns that mod-crop removes.
    ``flows`` ``(T, 2, h, w)`` at the LR frames' size are cropped like them (third item; None without).
    """
    check_pair_sizes(lr_frames, gt, scale, what)
    h, w = lr_frames[0].shape[:2]
    gt = gt[: h * scale, : w * scale]
    if lq_patch is None:
        return list(lr_frames), gt, flows
    check_patch(lq_patch, h, w, what)
    assert rng is not None
    top = int(rng.integers(0, h - lq_patch + 1))
    left = int(rng.integers(0, w - lq_patch + 1))
    lrs = [f[top: top + lq_patch, left: left + lq_patch] for f in lr_frames]
    g = gt[top * scale: (top + lq_patch) * scale, left * scale: (left + lq_patch) * scale]
    if flows is not None:
        flows = np.ascontiguousarray(flows[:, :, top: top + lq_patch, left: left + lq_patch])
    return lrs, g, flows


def translated_crops(frame: np.ndarray, displacements, *, top: int, left: int, height: int,
                     width: int) -> list[np.ndarray]:
    """Crops of ``frame``, one per ``(dx, dy)`` integer displacement of the ``height x width`` crop at
    ``(top, left)``: views of a scene under an exact global translation. Raises InputError when a crop
    leaves the frame."""
    views = []
    for dx, dy in np.asarray(displacements, np.int64).reshape(-1, 2):
        y0, x0 = top + int(dy), left + int(dx)
        if y0 < 0 or x0 < 0 or y0 + height > frame.shape[0] or x0 + width > frame.shape[1]:
            raise InputError(f"a {width}x{height} crop at ({y0}, {x0}) leaves the "
                             f"{frame.shape[1]}x{frame.shape[0]} frame")
        views.append(frame[y0:y0 + height, x0:x0 + width])
    return views


def blur_centre(lr_frames: Sequence[np.ndarray], rng: np.random.Generator, *, probability: float,
                sigma: tuple[float, float]) -> list[np.ndarray]:
    """With ``probability``, the window's middle LR frame Gaussian-blurred (sigma drawn in ``sigma``, LR px).

    A training aid for multi-frame networks: when the centre frame alone cannot give the detail back, the
    network has to take it from the neighbours, which single-frame restoration otherwise makes optional
    on short budgets. The draw is taken only when ``probability > 0`` (runs without it keep their stream).
    """
    frames = list(lr_frames)
    if probability <= 0 or rng.random() >= probability:
        return frames
    import cv2

    lo, hi = sigma
    s = float(rng.uniform(lo, hi))
    mid = len(frames) // 2
    frames[mid] = cv2.GaussianBlur(np.ascontiguousarray(frames[mid]), (0, 0), sigmaX=s, sigmaY=s,
                                   borderType=cv2.BORDER_REFLECT_101).reshape(frames[mid].shape)
    return frames


def synthetic_motion_window(frame: np.ndarray, num_frames: int, rng: np.random.Generator, *, max_speed: float,
                            jitter: int = 2, scale: int = 1) -> tuple[list[np.ndarray], np.ndarray]:
    """A window of ``num_frames`` views of one frame under a random global translation, and its exact motion.

    A velocity ``v`` is drawn uniformly in ``[-max_speed, max_speed]`` pixels per frame on each axis; view
    ``t`` is the frame displaced by ``round((t - c) v)`` plus up to ``jitter`` pixels (``c`` the middle
    view, never jittered). The views are crops of the frame shrunk by the largest possible displacement
    on every side (and mod-cropped to ``scale``), so no view leaves the frame.

    Returns ``(views, shifts)``: ``shifts (T, 2)`` float32 ``(dx, dy)`` in pixels such that
    ``centre(p) = view_t(p + shifts[t])`` exactly: the optical flow from the centre to each view, the same
    at every pixel. Alignment networks learn to measure motion from such windows with an exact target
    (FlyingChairs-style), where real footage offers few clips and a noisy estimated flow.
    """
    if num_frames < 1 or max_speed < 0 or jitter < 0:
        raise ConfigError(f"synthetic motion: need num_frames >= 1, max_speed >= 0, jitter >= 0 "
                          f"(got {num_frames}, {max_speed}, {jitter})")
    c = num_frames // 2
    reach = int(math.ceil(max(c, num_frames - 1 - c) * max_speed)) + jitter
    h, w = frame.shape[:2]
    hh, ww = (h - 2 * reach) // scale * scale, (w - 2 * reach) // scale * scale
    if hh <= 0 or ww <= 0:
        raise InputError(f"synthetic motion: a {w}x{h} frame is too small for {reach} px of motion either side")
    v = rng.uniform(-max_speed, max_speed, 2)
    disp = np.zeros((num_frames, 2), np.int64)
    for t in range(num_frames):
        if t != c:
            disp[t] = np.round((t - c) * v).astype(np.int64) + rng.integers(-jitter, jitter + 1, 2)
    disp = np.clip(disp, -reach, reach)
    views = translated_crops(frame, disp, top=reach, left=reach, height=hh, width=ww)
    # view_t(q) = frame(q + r + d_t), so centre(p) = frame(p + r + d_c) = view_t(p + d_c - d_t)
    return views, (disp[c] - disp).astype(np.float32)


def synth_pair(gt_frames: Sequence[np.ndarray], degradation, scale: int, lq_patch: int | None,
               rng: np.random.Generator, *, margin: int = 24, what: str = "sample", flows: np.ndarray | None = None,
               ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Crop GT frames and synthesise their LR with ``degradation`` (see the module docstring).

    Args:
        gt_frames: the window's GT frames (HWC, any dtype); the middle one is the target.
        degradation: ``deg(frames, rng) -> DegradedSample`` (:func:`srkit.data.degrade.make_degradation`);
            one call per sample, so all frames share one random kernel / noise level.
        lq_patch: LR patch size, or None for whole (mod-cropped) frames.
        margin: GT pixels degraded around the crop (rounded up to a multiple of ``scale``).
        flows: ``(T, 2, H/scale, W/scale)`` flows of the whole (mod-cropped) frames in LR pixels
            (:func:`srkit.data.motion.frame_flow`), cropped like the LR.

    Returns:
        ``(lr_frames float32, gt_crop, maps (16, p, p) or None, flow (T, 2, p, p) or None)``.
    """
    frames = [mod_crop(f, scale) for f in gt_frames]
    H, W = frames[0].shape[:2]
    if H == 0 or W == 0:
        raise InputError(f"{what}: frame smaller than the scale x{scale}")
    h, w = H // scale, W // scale
    if lq_patch is None:
        top = left = 0
        r0, r1, c0, c1 = 0, h, 0, w
        ph, pw = h, w
    else:
        check_patch(lq_patch, h, w, what)
        top = int(rng.integers(0, h - lq_patch + 1))
        left = int(rng.integers(0, w - lq_patch + 1))
        m = math.ceil(margin / scale)
        r0, r1 = max(0, top - m), min(h, top + lq_patch + m)
        c0, c1 = max(0, left - m), min(w, left + lq_patch + m)
        ph = pw = lq_patch
    region = [to_float(f[r0 * scale: r1 * scale, c0 * scale: c1 * scale]) for f in frames]
    sample = degradation(region, rng)
    y, x = top - r0, left - c0
    lrs = [np.ascontiguousarray(lr[y: y + ph, x: x + pw], dtype=np.float32) for lr in sample.lr]
    maps = None
    if sample.maps is not None:
        maps = np.ascontiguousarray(sample.maps[:, y: y + ph, x: x + pw], dtype=np.float32)
    if flows is not None:
        if flows.shape[-2:] != (h, w):
            raise InputError(f"{what}: flows are {flows.shape[-1]}x{flows.shape[-2]} but the LR frames {w}x{h}")
        flows = np.ascontiguousarray(flows[:, :, top: top + ph, left: left + pw])
    target = frames[len(frames) // 2]
    gt = target[top * scale: (top + ph) * scale, left * scale: (left + pw) * scale]
    return lrs, gt, maps, flows
