"""``VideoSRDataset``: windows of LR frames and the GT centre frame, for training and validation.

Each item is ``{"lq": (T, C, h, w) float32, "gt": (C, H, W) float32, "key": "<clip>/<frame>"}`` plus
``"maps": (16, h, w)`` when the degradation is non-blind (SRMD, for UDVD). The dataset is a list of
(clip, centre frame) pairs; a clip's centres are all of its frames, or only the middle one for
Vimeo-90K septuplets (as EDVR trains and tests on them).

Where frames come from: any layout of :mod:`srkit.data.layouts` (REDS train partition, Vimeo-90K
lists, Vid4-style benchmarks, generic folders, video files) or an LMDB pack (``lr_source`` names the
matching LR pack, if any; BasicSR's Vimeo-90K GT pack holding only ``im4`` works with its 7-frame LR
pack, centred on the middle frame). LR frames are read from disk when the layout has them for the requested
degradation; otherwise they are synthesised from GT on the fly with
:func:`srkit.data.degrade.make_degradation` (BI, BD, SRMD), one random draw per sample shared by all
frames of the window.

Training samples (``train=True``): random frame interval from ``interval_list``, window at clip
borders padded with ``padding`` (or, with ``border="redraw"``, the centre re-drawn among those whose
window fits, BasicSR's REDS sampling), random temporal reversal, flips / transposition applied
identically to every frame and the GT, and an aligned random crop (``gt_patch`` GT pixels, LR patch
``gt_patch // scale``).

Determinism: every random choice of item ``i`` comes from ``np.random.default_rng([seed, epoch, i])``,
independent of worker count, worker assignment and previous items, so a run resumed at epoch ``e``
sees exactly the samples it would have seen. Call :meth:`VideoSRDataset.set_epoch` at the start of
each epoch; the epoch lives in shared memory, so this reaches DataLoader workers already running
(``persistent_workers=True``) too. Validation items (``train=False``) depend on ``seed`` and the clip
only: whole frames, no augmentation, every centre frame, the same LR every time. (With a noisy
synthetic degradation the kernel and noise level are fixed per clip, but a frame's noise
realisation differs between the windows it appears in: each window is degraded as one sample.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from srkit.data.layouts import Clip, discover_clips, read_name_list
from srkit.data.lmdb_store import PACK_INFO_NAME
from srkit.data.motion import FlowCache, window_flow
from srkit.data.sources import (DEFAULT_FRAME_CACHE_BYTES, DEFAULT_VIDEO_CACHE_BYTES, CentreOnly, FrameCache,
                                FrameSource, cached, clip_source, is_lmdb, lmdb_sources)
from srkit.data.transforms import (blur_centre, check_pair_sizes, check_patch, crop_pair, draw_augment, mod_crop, synth_pair,
                                   synthetic_motion_window, to_tensor)
from srkit.data.windows import check_window, strided_window, window_fits, window_indices
from srkit.errors import ConfigError, InputError


@dataclass
class ClipFrames:
    """A clip as the datasets use it: GT and optional LR sources plus the window centres."""

    name: str
    gt: FrameSource
    lr: FrameSource | None
    centers: list[int]

    def __len__(self) -> int:
        return len(self.gt)


def read_window(source: FrameSource, indices: Sequence[int]) -> list[np.ndarray]:
    """Frames at ``indices``, each decoded once even when padding repeats it."""
    cache: dict[int, np.ndarray] = {}
    for i in indices:
        if i not in cache:
            cache[i] = source.read(i)
    return [cache[i] for i in indices]


def resolve_degradation(degradation, scale: int, params: dict | None = None):
    """A degradation object from a name (``"BI"``, ``"BD"``, ``"SRMD"``) or pass an object through."""
    if degradation is None or callable(degradation):
        if params:
            raise ConfigError("degradation_params given but degradation is not a name")
        return degradation
    from srkit.data.degrade import make_degradation

    return make_degradation(str(degradation), scale, **(params or {}))


def _subset_names(subset) -> list[str] | None:
    if subset is None:
        return None
    return list(subset) if isinstance(subset, (list, tuple)) else read_name_list(subset)


def _stem(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _lmdb_layout(path: Path) -> str | None:
    try:
        return json.loads((path / PACK_INFO_NAME).read_text(encoding="utf-8")).get("layout")
    except (OSError, ValueError):
        return None


def build_clips(source, *, layout: str = "auto", split: str = "train", subset=None, lr_source=None,
                degradation_name: str = "BI", scale: int = 4, lr_from_disk: bool = True, centers: str = "auto",
                max_video_bytes: int = DEFAULT_VIDEO_CACHE_BYTES) -> list[ClipFrames]:
    """Resolve any supported ``source`` (folder, video, LMDB, clip list) to :class:`ClipFrames`."""
    if centers not in ("auto", "all", "middle"):
        raise ConfigError(f"centers must be auto, all or middle, not {centers!r}")
    clips: list[ClipFrames] = []
    if isinstance(source, (str, os.PathLike)) and is_lmdb(source):
        names = _subset_names(subset)
        gts: list[FrameSource] = list(lmdb_sources(source, names))
        lrs: list[FrameSource | None] = [None] * len(gts)
        only_middle = [False] * len(gts)
        if lr_source is not None and lr_from_disk:
            lr_all = {s.name: s for s in lmdb_sources(lr_source, [g.name for g in gts])}
            lrs = [lr_all[g.name] for g in gts]
            for k, (g, lr) in enumerate(zip(gts, lrs)):
                if len(lr) == len(g):
                    continue
                if len(g) == 1 and _stem(g.frame_key(0)) == _stem(lr.frame_key(len(lr) // 2)):
                    # BasicSR's Vimeo-90K GT pack keeps only im4: the GT of the middle LR frame.
                    gts[k], only_middle[k] = CentreOnly(g, len(lr)), True
                else:
                    raise InputError(f"clip {g.name}: {len(lr)} LR records but {len(g)} GT records", lr_source)
        middle = centers == "middle" or (centers == "auto" and _lmdb_layout(Path(source)) == "vimeo")
        for g, lr, only in zip(gts, lrs, only_middle):
            clips.append(ClipFrames(g.name, g, lr, [len(g) // 2] if middle or only else list(range(len(g)))))
        return clips
    if lr_source is not None:
        raise ConfigError("lr_source (an LR LMDB pack) goes with an LMDB GT source")
    if isinstance(source, (list, tuple)):
        clip_list: list[Clip] = list(source)
    else:
        clip_list = discover_clips(source, layout, degradation=degradation_name, scale=scale, subset=subset, split=split)
    for c in clip_list:
        gt = clip_source(c, "gt", max_video_bytes=max_video_bytes)
        if gt is None:
            raise InputError(f"clip {c.name} has no ground-truth frames (training and validation need them)")
        lr = clip_source(c, "lr") if lr_from_disk else None
        n = len(gt)
        if centers == "middle":
            cs = [n // 2]
        elif centers == "all" or c.centers is None:
            cs = list(range(n))
        else:
            cs = list(c.centers)
        clips.append(ClipFrames(c.name, gt, lr, cs))
    return clips


class VideoSRDataset(Dataset):
    """Video SR samples (see the module docstring).

    Args:
        source: dataset folder, video file / folder of videos, GT LMDB pack, or a list of
            :class:`~srkit.data.layouts.Clip`.
        layout, split, subset: how to read a folder (:func:`~srkit.data.layouts.discover_clips`);
            ``subset`` also filters LMDB clips.
        lr_source: LR LMDB pack matching a GT LMDB ``source`` (same clip names and frame counts).
        scale: upscaling factor.
        num_frames: odd number of LR frames per sample (the model's ``spec.num_frames``).
        padding: window padding at clip borders (:data:`srkit.data.windows.PADDING_MODES`).
        degradation: ``"BI"``, ``"BD"``, ``"SRMD"``, a degradation object, or None (LR must be on disk).
            Also selects which LR folder to look for (``BIx4``, ``BDx4``...).
        degradation_params: keyword arguments for :func:`srkit.data.degrade.make_degradation`.
        lr_from_disk: use LR frames found on disk (False: always synthesise from GT).
        train: random crops and augmentation (True) or whole frames for validation (False).
        gt_patch: GT crop size in training (LR patch ``gt_patch // scale``).
        interval_list: frame intervals to draw from in training (EDVR on REDS: ``[1]``).
        random_reverse: reverse the window in time with probability 0.5.
        use_flip / use_rot: horizontal flip / vertical flip + transpose, each with probability 0.5.
        border: ``"pad"`` (windows at clip borders are padded) or ``"redraw"`` (training centres are
            re-drawn among those whose window fits, as BasicSR's REDS dataset does).
        centers: ``"auto"`` (every frame; Vimeo-90K: the middle one), ``"all"`` or ``"middle"``.
        seed: base of every random draw (see Determinism in the module docstring).
        degrade_margin: GT pixels degraded around a crop when synthesising LR (exactness, see transforms).
        flow: also return ``"flow"`` ``(T, 2, h, w)``: the optical flow from the centre frame to every frame
            of the window in LR pixels, for EDVR's offset-fidelity loss. Computed on the whole frames (GT when
            the LR is synthesised, else LR; :func:`srkit.data.motion.frame_flow`), once per frame pair and
            worker (:class:`srkit.data.motion.FlowCache`), then flipped/transposed and cropped like the sample.
        synthetic_motion: training, LR synthesised: probability that a window is replaced by views of its
            centre frame under a random global translation (:func:`srkit.data.transforms.synthetic_motion_window`),
            whose flow is exact; up to ``synthetic_speed`` GT pixels per frame on each axis.
        centre_blur: training: probability that the window's centre LR frame is Gaussian-blurred with a sigma
            drawn in ``centre_blur_sigma`` (LR pixels; :func:`srkit.data.transforms.blur_centre`), so that the
            network learns to take detail from the neighbours. The GT is unchanged.
        frame_cache_bytes: decoded frames of folders and LMDB packs kept per process (each DataLoader worker
            has its own :class:`~srkit.data.sources.FrameCache`); 0 decodes every read.
    """

    def __init__(self, source, *, layout: str = "auto", split: str = "train", subset=None, lr_source=None,
                 scale: int = 4, num_frames: int = 7, padding: str = "reflection_circle", degradation="BI",
                 degradation_params: dict | None = None, lr_from_disk: bool = True, train: bool = True,
                 gt_patch: int = 256, interval_list: Sequence[int] = (1,), random_reverse: bool = False,
                 use_flip: bool = True, use_rot: bool = True, border: str = "pad", centers: str = "auto",
                 seed: int = 0, degrade_margin: int = 24, max_video_bytes: int = DEFAULT_VIDEO_CACHE_BYTES,
                 flow: bool = False, synthetic_motion: float = 0.0, synthetic_speed: float = 16.0,
                 centre_blur: float = 0.0, centre_blur_sigma: Sequence[float] = (0.5, 1.5),
                 frame_cache_bytes: int = DEFAULT_FRAME_CACHE_BYTES):
        check_window(num_frames, padding)
        if scale < 1:
            raise ConfigError(f"scale must be >= 1, got {scale}")
        if train and (gt_patch < scale or gt_patch % scale):
            raise ConfigError(f"gt_patch must be a positive multiple of the scale {scale}, got {gt_patch}")
        if not interval_list or any(int(i) < 1 for i in interval_list):
            raise ConfigError(f"interval_list must hold positive integers, got {list(interval_list)}")
        if border not in ("pad", "redraw"):
            raise ConfigError(f"border must be 'pad' or 'redraw', not {border!r}")
        self.scale, self.num_frames, self.padding = scale, num_frames, padding
        self.train, self.gt_patch, self.lq_patch = train, gt_patch, gt_patch // scale
        self.interval_list = [int(i) for i in interval_list]
        self.random_reverse, self.use_flip, self.use_rot = random_reverse, use_flip, use_rot
        self.border, self.seed, self.degrade_margin = border, int(seed), degrade_margin
        self.flow = bool(flow)
        if not 0.0 <= synthetic_motion <= 1.0 or synthetic_speed < 0:
            raise ConfigError(f"synthetic_motion must be a probability and synthetic_speed >= 0 "
                              f"(got {synthetic_motion}, {synthetic_speed})")
        self.synthetic_motion, self.synthetic_speed = float(synthetic_motion) if train else 0.0, float(synthetic_speed)
        sig = tuple(float(v) for v in centre_blur_sigma)
        if not 0.0 <= centre_blur <= 1.0 or len(sig) != 2 or not 0 < sig[0] <= sig[1]:
            raise ConfigError(f"centre_blur must be a probability and centre_blur_sigma [lo, hi] with 0 < lo <= hi "
                              f"(got {centre_blur}, {list(centre_blur_sigma)})")
        self.centre_blur, self.centre_blur_sigma = (float(centre_blur) if train else 0.0), sig
        self._flows: dict[int, FlowCache] = {}  # per scale of the frames the flow is computed on
        deg_name = degradation if isinstance(degradation, str) else "BI"
        self.clips = build_clips(source, layout=layout, split=split, subset=subset, lr_source=lr_source,
                                 degradation_name=deg_name, scale=scale, lr_from_disk=lr_from_disk, centers=centers,
                                 max_video_bytes=max_video_bytes)
        if not self.clips:
            raise InputError("dataset has no clips", source if isinstance(source, (str, os.PathLike)) else None)
        self.frame_cache = FrameCache(frame_cache_bytes)
        for clip in self.clips:
            clip.gt, clip.lr = cached(clip.gt, self.frame_cache), cached(clip.lr, self.frame_cache)
        needs_synthesis = any(c.lr is None for c in self.clips)
        self.degradation = resolve_degradation(degradation, scale, degradation_params) if needs_synthesis else None
        if self.synthetic_motion and not needs_synthesis:
            raise ConfigError("synthetic_motion builds windows from GT frames and synthesises their LR, but every clip "
                              "here has LR frames on disk (lr_from_disk: false to synthesise)")
        if needs_synthesis and self.degradation is None:
            missing = next(c.name for c in self.clips if c.lr is None)
            raise InputError(f"clip {missing} has no LR frames on disk and degradation is None")
        self.items = [(ci, c) for ci, clip in enumerate(self.clips) for c in clip.centers]
        # Shared memory: set_epoch in the main process is seen by (persistent) forked or spawned workers.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    # ----------------------------------------------------------------------------------------- API
    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch`` (call before iterating each epoch)."""
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def unshare_epoch(self) -> None:
        """Give this copy a private epoch, no longer shared with other processes.

        By default the epoch lives in shared memory so that :meth:`set_epoch` in the main process reaches
        persistent DataLoader workers. A loader that instead passes the epoch with every item (srkit's
        trainer: its sample stream crosses epoch boundaries, so two workers may hold items of different
        epochs at once) calls this once in each worker, so one worker's ``set_epoch`` cannot change the
        crop another worker is drawing. The current epoch value is kept.
        """
        if self._epoch.is_shared():
            self._epoch = self._epoch.clone()

    def rng_for(self, index: int) -> np.random.Generator:
        """The generator behind item ``index`` (validation: behind its clip, so a clip's LR never changes)."""
        if self.train:
            return np.random.default_rng([self.seed, self.epoch, index])
        return np.random.default_rng([self.seed, 1 << 20, self.items[index][0]])

    def window(self, index: int, rng: np.random.Generator | None = None) -> tuple[int, int, list[int]]:
        """``(clip index, centre, frame indices)`` of item ``index`` (draws the interval/centre in training)."""
        ci, center = self.items[index]
        clip = self.clips[ci]
        n = len(clip)
        if not self.train:
            return ci, center, window_indices(center, self.num_frames, n, self.padding)
        rng = rng if rng is not None else self.rng_for(index)
        interval = self.interval_list[int(rng.integers(len(self.interval_list)))]
        fits = window_fits(center, self.num_frames, n, interval)
        if not fits and (interval > 1 or self.border == "redraw"):
            valid = [c for c in clip.centers if window_fits(c, self.num_frames, n, interval)]
            if valid:
                center = valid[int(rng.integers(len(valid)))]
            elif interval > 1:  # clip too short for this interval: fall back to consecutive frames
                interval = 1
        indices = strided_window(center, self.num_frames, n, interval, self.padding)
        if self.random_reverse and rng.random() < 0.5:
            indices = indices[::-1]
        return ci, center, indices

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.items):
            raise IndexError(index)
        rng = self.rng_for(index)
        ci, center, indices = self.window(index, rng)
        clip = self.clips[ci]
        aug = draw_augment(rng, use_flip=self.use_flip, use_rot=self.use_rot) if self.train else None
        key = clip.gt.frame_key(center)
        lq_patch = self.lq_patch if self.train else None
        maps = None
        if clip.lr is None:
            # Drawn only when enabled, so runs without synthetic motion keep their random stream.
            if self.synthetic_motion and rng.random() < self.synthetic_motion:
                frames, shifts = synthetic_motion_window(clip.gt.read(center), len(indices), rng,
                                                         max_speed=self.synthetic_speed, scale=self.scale)
                h, w = frames[0].shape[0] // self.scale, frames[0].shape[1] // self.scale
                flows = np.ascontiguousarray(np.broadcast_to((shifts / self.scale)[:, :, None, None],
                                                             (len(frames), 2, h, w))) if self.flow else None
            else:
                frames = read_window(clip.gt, indices)
                flows = None
                if self.flow:  # mod-cropped before augmentation so the flow's blocks stay the augmented LR's pixels
                    frames = [mod_crop(f, self.scale) for f in frames]
                    flows = self._window_flow(ci, indices, frames, self.scale)
            if aug is not None:
                # Checked before augmentation so the message gives the frame size as stored (W x H).
                check_patch(self.lq_patch, frames[0].shape[0] // self.scale, frames[0].shape[1] // self.scale, key)
                frames = [aug.apply(f) for f in frames]
                flows = None if flows is None else aug.apply_flow(flows)
            lrs, gt, maps, flows = synth_pair(frames, self.degradation, self.scale, lq_patch, rng,
                                              margin=self.degrade_margin, what=key, flows=flows)
        else:
            lr_frames = read_window(clip.lr, indices)
            gt = clip.gt.read(center)
            flows = self._window_flow(ci, indices, lr_frames, 1)
            if aug is not None:
                check_pair_sizes(lr_frames, gt, self.scale, key)  # sizes as stored in messages
                check_patch(self.lq_patch, lr_frames[0].shape[0], lr_frames[0].shape[1], key)
                lr_frames = [aug.apply(f) for f in lr_frames]
                gt = aug.apply(gt)
                flows = None if flows is None else aug.apply_flow(flows)
            lrs, gt, flows = crop_pair(lr_frames, gt, self.scale, lq_patch, rng, what=key, flows=flows)
        if self.centre_blur:
            lrs = blur_centre(lrs, rng, probability=self.centre_blur, sigma=self.centre_blur_sigma)
        out = {"lq": to_tensor(lrs), "gt": to_tensor(gt), "key": key}
        if maps is not None:
            out["maps"] = torch.from_numpy(maps)
        if flows is not None:
            out["flow"] = torch.from_numpy(flows)
        return out

    def _window_flow(self, ci: int, indices: Sequence[int], frames: Sequence[np.ndarray],
                     scale: int) -> np.ndarray | None:
        """Flow centre -> each frame of the window (whole frames, cached per pair), or None without ``flow``."""
        if not self.flow:
            return None
        mid = len(indices) // 2
        return window_flow(frames, mid, scale, frame_ids=indices, clip_key=ci,
                           cache=self._flows.setdefault(scale, FlowCache(scale)))

    def __repr__(self) -> str:
        mode = "train" if self.train else "test"
        lr = "disk" if all(c.lr is not None for c in self.clips) else f"synthesised ({type(self.degradation).__name__})"
        return (f"VideoSRDataset({len(self.clips)} clips, {len(self)} samples, {mode}, x{self.scale}, "
                f"{self.num_frames} frames, LR {lr})")
