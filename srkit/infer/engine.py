"""Streaming inference engine: frames in, restored frames out, in order, in bounded memory.

:func:`upscale_frames` pulls decoded frames from any iterable, keeps only the frames the next
windows need (a ring of at most ``2 * num_frames - 1`` frames: ``num_frames - 1`` of look-ahead
and, for the reflection paddings at the end of a clip, ``num_frames - 1`` of look-back), restores
each frame from its temporal window (clip borders padded with the same rule as training,
:func:`srkit.data.windows.window_indices`) and yields it before reading much further. Memory does not
grow with the video's length.

Models exposing the feature-cache API (EDVR: ``encode(frames) -> pyramid`` and
``decode(pyramids, center)``) get each frame's pyramid computed once and reused by all the windows
that contain it, instead of ``num_frames`` times; the result is the model's ``forward`` on the same
window. Any model works through ``forward`` otherwise (video models get ``(N, T, C, H, W)``, image
models ``(N, C, H, W)``, conditioned image models also their degradation maps).

Large frames are cut into overlapping tiles (:mod:`srkit.infer.tiling`) whose outputs are blended;
the tile size can be chosen from a memory budget.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from srkit.errors import ConfigError, InputError
from srkit.infer import tiling
from srkit.models.api import ModelSpec, as_sr_output
from srkit.models.blocks import crop_to, pad_to_multiple
from srkit.infer.options import RestoreOptions
from srkit.utils.device import autocast, select_device

log = logging.getLogger(__name__)

__all__ = ["upscale_frames", "load_model", "prepare_model", "Restorer", "FrameRestorer", "frame_to_tensor",
           "tensor_to_frame", "window_for"]

# Condition maps may be given per frame size: an array (C, H, W), a vector (C,) broadcast over the
# frame, or a function (height, width) -> (C, H, W) array.
Condition = np.ndarray | Callable[[int, int], np.ndarray]


def load_model(model: nn.Module | str | None, weights: str | os.PathLike | None = None, **overrides) -> nn.Module:
    """The model a command or API call asks for: srkit's one resolver of ``--model`` / ``--weights``.

    * a module: used as it is (``weights`` loaded into it);
    * ``weights`` alone: the network the checkpoint describes (srkit metadata, or the preset and
      configuration inferred from a foreign state dict's keys and shapes);
    * a preset name with an srkit file: the file's own network (its stored config, so non-default widths
      load too), which must be that preset; with a foreign file: the preset, the file loaded strictly;
    * a preset name alone: its shipped weights when srkit has them (``edvr-s``...), random otherwise.
    """
    from srkit.models import create_model, has_pretrained
    from srkit.models.checkpoint import load_model as load_checkpoint_model
    from srkit.models.checkpoint import load_weights, stored_preset

    if isinstance(model, nn.Module):
        if weights is not None:
            load_weights(model, weights)
        return model
    if weights is None:
        if model is None:
            raise ConfigError("give a model name or a checkpoint (--model / --weights)")
        return create_model(model, pretrained=has_pretrained(model), **overrides)
    if model is None:
        return load_checkpoint_model(weights)
    stored = None if overrides else stored_preset(weights)
    if stored is None:
        return create_model(model, weights=weights, **overrides)
    if stored != model:
        raise ConfigError(f"--weights holds a {stored} network but --model says {model} "
                          f"(leave out --model to use the checkpoint's)", weights)
    return load_checkpoint_model(weights)


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """``model`` in eval mode on ``device`` (NHWC weights when ``channels_last``)."""
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def model_spec(model: nn.Module) -> ModelSpec:
    spec = getattr(model, "spec", None)
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"{type(model).__name__} has no srkit ModelSpec (not an srkit model?)")
    return spec


def frame_to_tensor(frame: np.ndarray) -> torch.Tensor:
    """HxWx3 (or HxW / HxWx1 gray) uint8/uint16/float -> (1, 3, H, W) float32 in [0, 1], channels_last.

    The HWC array viewed as CHW already has channels_last strides, so no copy of the layout is made.
    """
    a = np.asarray(frame)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise InputError(f"frame must be HxWx3 (or gray HxW), got shape {a.shape}")
    if a.shape[2] == 4:
        a = a[:, :, :3]
    if a.dtype.kind == "f":
        _check_float_frame(a)
    elif a.dtype not in (np.uint8, np.uint16):
        raise InputError(f"frame must be uint8, uint16 or float in [0, 1], got {a.dtype}")
    if a.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(a)).float().div_(255.0)
    elif a.dtype == np.uint16:
        t = torch.from_numpy(a.astype(np.float32)).div_(65535.0)
    else:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if t.shape[2] == 1:
        t = t.expand(-1, -1, 3)
    return t.permute(2, 0, 1).unsqueeze(0).contiguous(memory_format=torch.channels_last)


# How far float frames may stray outside [0, 1]. Legitimate inputs do: resampling overshoot, and the
# unclipped Gaussian noise of SRMD's degradation model that UDVD is trained and tested on (sigma 75/255
# = 0.29: 2.0 is ~7 sigma, never reached). Frames on another scale (0..255, 0..65535) fall far outside
# and would otherwise be restored as saturated garbage without a word.
FLOAT_RANGE_SLACK = 2.0


def _check_float_frame(a: np.ndarray) -> None:
    if not np.isfinite(a).all():
        raise InputError("NaN or infinite values; float frames must be finite, in [0, 1]")
    lo, hi = float(a.min()), float(a.max())
    if lo < -FLOAT_RANGE_SLACK or hi > 1 + FLOAT_RANGE_SLACK:
        hint = " (0..255 data: divide by 255, or pass uint8)" if hi > 1 + FLOAT_RANGE_SLACK and hi <= 255 else ""
        raise InputError(f"float values span [{lo:g}, {hi:g}]; float frames must be in [0, 1]{hint}")


def tensor_to_frame(t: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) tensor -> HxWx3 float32 numpy array clipped to [0, 1]."""
    if t.dim() == 4:
        t = t[0]
    return t.detach().float().clamp_(0.0, 1.0).permute(1, 2, 0).cpu().numpy().copy()


def window_for(center: int, spec: ModelSpec, length: int, padding: str) -> list[int]:
    """Frame indices of the model's window around ``center`` (centre frame at ``spec.center_index``).

    A model whose centre is not the middle of its window (e.g. 5 frames restoring the 2nd) gets the
    matching slice of the symmetric window that is wide enough on both sides, so the border padding
    rule is the one used in training.
    """
    from srkit.data.windows import window_indices

    t, c = spec.num_frames, spec.center_index
    if t == 1:
        return [center]
    m = spec.half_window
    full = window_indices(center, 2 * m + 1, length, padding)
    return full[m - c: m - c + t]


@dataclass
class _Frame:
    """One decoded frame held by the ring buffer, with its cached features per tile."""

    tensor: torch.Tensor  # (1, 3, H, W) float32 on the device
    feats: dict[int, list[torch.Tensor]]


class Restorer:
    """A model made ready once and then used for any number of streams (clips, images).

    Built once per model and option set: the model is resolved (:func:`load_model`), moved to the
    device in the chosen layout, the window padding is checked and the slow-precision warning is
    given; the memory probe behind ``max_memory`` runs at most once per probe size. :meth:`stream`
    then restores one stream of frames (a clip, or one image) with its own tile plan and condition maps.
    """

    def __init__(self, model: nn.Module | str | None, options: RestoreOptions | None = None, *,
                 weights: str | os.PathLike | None = None):
        self.options = (options if options is not None else RestoreOptions()).validate()
        opts = self.options
        self.device = select_device(opts.device)
        _warn_slow_precision(self.device, opts.precision)
        self.channels_last = opts.channels_last  # dropped for good if the model cannot run NHWC
        self.model = prepare_model(load_model(model, weights), self.device, self.channels_last)
        self.spec = model_spec(self.model)
        self.max_memory = tiling.parse_memory(opts.max_memory)
        if self.spec.num_frames > 1:
            from srkit.data.windows import check_window

            check_window(2 * self.spec.half_window + 1, opts.padding)
        self.probes: dict[tuple[int, bool], tuple[float, float]] = {}  # (size, cache) -> bytes/px (peak, features)

    def stream(self, frames: Iterable[np.ndarray], *, condition: Condition | None = None,
               start_frame: int = 0) -> Iterator[np.ndarray]:
        """Restore a stream of frames (all one size); yields one HxWx3 float32 RGB frame per input frame.

        ``condition``: degradation maps of conditioned models (UDVD): (C, H, W), (C,) or ``f(h, w)``.
        ``start_frame`` skips the outputs before this index (resuming); its context frames are still read.
        """
        restorer = FrameRestorer(self, condition=condition)
        return _stream(iter(frames), restorer, self.options.padding, self.spec.window_reach,
                       self.options.batch_size, max(0, start_frame))

    def drop_channels_last(self, exc: BaseException) -> None:
        # channels_last is only a speed hint: a model (or op) that cannot run on NHWC tensors still
        # runs, in NCHW, instead of failing the whole job.
        log.warning("model failed with channels_last tensors (%s); falling back to NCHW", str(exc).splitlines()[0])
        self.channels_last = False
        self.model.to(memory_format=torch.contiguous_format)


class FrameRestorer:
    """Restores the frames of one stream from their windows: a :class:`Restorer`'s model, device and
    precision, this stream's condition maps and tile plan.

    The plan (tiles, cache use) is set up from the first frame's size by :meth:`setup`.
    """

    def __init__(self, restorer: Restorer, *, condition: Condition | None = None):
        self.restorer = restorer
        self.model = restorer.model
        self.spec = restorer.spec
        self.device = restorer.device
        opts = restorer.options
        self.precision = opts.precision
        self.tile = opts.tile
        self.overlap = int(opts.tile_overlap)
        self.max_memory = restorer.max_memory
        self.has_cache_api = callable(getattr(self.model, "encode", None)) and callable(getattr(self.model, "decode", None))
        self.use_cache = bool(opts.use_cache) and self.has_cache_api
        self.condition = condition
        name = getattr(self.model, "preset", None) or type(self.model).__name__
        if self.spec.condition is not None and condition is None:
            raise ConfigError(f"model {name} needs degradation maps (--blur/--noise or --kernel)")
        if self.spec.condition is None and condition is not None:
            # Silently ignoring --blur/--noise would let a user believe the model used them.
            raise ConfigError(f"model {name} takes no degradation maps: --blur/--blur2/--angle/--noise/--kernel "
                              f"apply to non-blind models (udvd-*)")
        self.plan: tiling.TilePlan | None = None
        self._maps: torch.Tensor | None = None
        self.out_scale = self.spec.output_ratio
        self._verified = not restorer.channels_last  # the first restoration checks that channels_last works

    @property
    def channels_last(self) -> bool:
        return self.restorer.channels_last

    # ------------------------------------------------------------------ set-up
    def setup(self, height: int, width: int) -> None:
        """Choose tiles (explicit, from the memory budget, or none) for frames of this size."""
        align = max(1, self.spec.pad_multiple)
        tile = self.tile
        if tile is None and self.max_memory is not None:
            tile = self._tile_from_budget(height, width, align)
        self.plan = tiling.plan_tiles(height, width, tile, self.overlap if tile else 0,
                                      scale=self.out_scale, align=align)
        if self.spec.condition is not None:
            self._maps = self._condition_maps(height, width)

    def _condition_maps(self, height: int, width: int) -> torch.Tensor:
        cond = self.condition
        maps = cond(height, width) if callable(cond) else np.asarray(cond, dtype=np.float32)
        maps = np.asarray(maps, dtype=np.float32)
        if maps.ndim == 1:
            maps = np.broadcast_to(maps[:, None, None], (maps.shape[0], height, width))
        if maps.ndim != 3 or maps.shape[1:] != (height, width):
            raise ConfigError(f"degradation maps have shape {maps.shape}; expected (C, {height}, {width})")
        _check_condition_maps(maps, self.spec)
        t = torch.from_numpy(np.ascontiguousarray(maps)).unsqueeze(0).to(self.device)
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last else t

    def _probe(self, size: int) -> tuple[float, float]:
        """Peak bytes of one restoration per input pixel and cached-feature bytes per pixel."""
        spec = self.spec
        frames = [torch.rand(1, 3, size, size, device=self.device) for _ in range(spec.num_frames)]
        if self.channels_last:
            frames = [f.contiguous(memory_format=torch.channels_last) for f in frames]
        maps = None
        if spec.condition is not None:
            maps = self._condition_maps(size, size)
        feat_bytes = 0.0
        with torch.inference_mode():
            if self.use_cache:
                with autocast(self.device, self.precision):
                    pyr = self.model.encode(frames[0])
                feat_bytes = sum(t.numel() * t.element_size() for t in pyr) / (size * size)
                feats = [pyr] * spec.num_frames
                peak = tiling.measure_peak_bytes(lambda: self._decode([feats], frames[spec.center_index]),
                                                 self.device)
            else:
                peak = tiling.measure_peak_bytes(lambda: self._forward([frames], maps), self.device)
        return peak / (size * size), feat_bytes

    def _cached_probe(self, size: int) -> tuple[float, float]:
        """:meth:`_probe`, measured once per restorer (the model, device and precision do not change)."""
        key = (size, self.use_cache)
        if key not in self.restorer.probes:
            self.restorer.probes[key] = self._probe(size)
        return self.restorer.probes[key]

    def _tile_from_budget(self, height: int, width: int, align: int) -> int | None:
        budget = int(self.max_memory)
        probe = max(64, align * math.ceil(64 / align))
        try:
            per_px, feat_px = self._cached_probe(probe)
        except RuntimeError as exc:
            if not self.channels_last:
                raise
            self.restorer.drop_channels_last(exc)
            per_px, feat_px = self._cached_probe(probe)
        s2 = self.out_scale ** 2
        ring = 2 * self.spec.num_frames - 1
        frame_px = height * width
        # Always resident: the ring of input frames, the output accumulator and one output frame.
        base = frame_px * (ring * 3 * 4 + 2 * 3 * 4 * s2)
        cache = frame_px * feat_px * ring * 1.2  # +20%: tile inputs overlap
        if self.use_cache and base + cache > budget / 2:
            # The cache would eat most of the budget: recomputing features per window is the better deal.
            self.use_cache = False
            per_px, _ = self._cached_probe(probe)
            cache = 0
        if base + cache + per_px * frame_px <= budget:
            return None  # the whole frame fits
        return tiling.tile_size_for_budget(budget, per_px, int(base + cache), self.overlap, align=align)

    # ------------------------------------------------------------------ model calls
    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        padded, size = pad_to_multiple(x, max(1, self.spec.pad_multiple))
        if self.channels_last and padded.dim() == 4:
            padded = padded.contiguous(memory_format=torch.channels_last)
        return padded, size

    def _encode(self, crop: torch.Tensor) -> list[torch.Tensor]:
        """Pyramid of one frame crop.

        Frames are encoded one at a time, never batched with whichever frames happen to be new
        together: a frame's features then do not depend on where the stream started, so a resumed
        run reproduces an uninterrupted one bit for bit.
        """
        x, _ = self._pad(crop)
        with autocast(self.device, self.precision):
            return list(self.model.encode(x))

    def _decode(self, windows: list[list[list[torch.Tensor]]], centers: torch.Tensor) -> torch.Tensor:
        """Decode B windows (each a list of T pyramids) with centre crops (B, 3, h, w) (unpadded)."""
        x, size = self._pad(centers)
        if len(windows) == 1:
            feats = windows[0]
        else:  # stack the windows' pyramids along the batch
            feats = [[torch.cat([w[t][lvl] for w in windows], 0) for lvl in range(len(windows[0][t]))]
                     for t in range(len(windows[0]))]
        with autocast(self.device, self.precision):
            out = self.model.decode(feats, x)
        return crop_to(as_sr_output(out).image, size, self.out_scale)

    def _forward(self, windows: list[list[torch.Tensor]], maps: torch.Tensor | None) -> torch.Tensor:
        """The model's own forward on B windows of crops (each a list of T (1, 3, h, w) tensors)."""
        if self.spec.input_kind == "image":
            x = torch.cat([w[0] for w in windows], 0) if len(windows) > 1 else windows[0][0]
        else:
            x = torch.stack([torch.cat(w, 0) for w in windows], 0)  # (B, T, 3, h, w)
        with autocast(self.device, self.precision):
            if maps is not None:
                out = self.model(x, maps.expand(x.shape[0], -1, -1, -1) if maps.shape[0] != x.shape[0] else maps)
            else:
                out = self.model(x)
        return as_sr_output(out).image

    # ------------------------------------------------------------------ restoration
    def encode_frame(self, frames: Sequence[_Frame]) -> None:
        """Compute and cache the tile pyramids of frames that have none yet (one batch per tile)."""
        if not self.use_cache:
            return
        todo = [f for f in frames if not f.feats]
        if not todo:
            return
        assert self.plan is not None
        for k, tl in enumerate(self.plan.tiles):
            for f in todo:
                f.feats[k] = self._encode(f.tensor[:, :, tl.y.start:tl.y.stop, tl.x.start:tl.x.stop])

    def restore(self, windows: list[list[_Frame]]) -> list[torch.Tensor]:
        """Restore the centre frames of B windows; returns B tensors (3, H*s, W*s) float32 on the CPU."""
        if self._verified or not self.channels_last:
            return self._restore(windows)
        try:
            out = self._restore(windows)
        except RuntimeError as exc:
            self.restorer.drop_channels_last(exc)
            for f in {id(f): f for w in windows for f in w}.values():
                f.tensor = f.tensor.contiguous()
                f.feats.clear()
            if self._maps is not None:
                self._maps = self._maps.contiguous()
            out = self._restore(windows)
        self._verified = True
        return out

    def _restore(self, windows: list[list[_Frame]]) -> list[torch.Tensor]:
        assert self.plan is not None, "setup() first"
        plan, s, c = self.plan, self.out_scale, self.spec.center_index
        with torch.inference_mode():
            if self.use_cache:
                uniq = list({id(f): f for w in windows for f in w}.values())
                self.encode_frame(uniq)
            results: list[torch.Tensor] | None = None
            single = len(plan.tiles) == 1
            for k, tl in enumerate(plan.tiles):
                ys, xs = slice(tl.y.start, tl.y.stop), slice(tl.x.start, tl.x.stop)
                if self.use_cache:
                    centers = torch.cat([w[c].tensor[:, :, ys, xs] for w in windows], 0)
                    out = self._decode([[f.feats[k] for f in w] for w in windows], centers)
                else:
                    crops = [[f.tensor[:, :, ys, xs] for f in w] for w in windows]
                    maps = self._maps[:, :, ys, xs] if self._maps is not None else None
                    out = self._forward(crops, maps)
                out = out.float()
                if single:
                    return [o.to("cpu") for o in out]
                if results is None:
                    results = [torch.zeros(3, plan.height * s, plan.width * s) for _ in windows]
                wy = torch.from_numpy(tl.y.weight).view(-1, 1)
                wx = torch.from_numpy(tl.x.weight).view(1, -1)
                weight = (wy * wx).to(out.device)
                for r, o in zip(results, out):
                    r[:, tl.y.start * s:tl.y.stop * s, tl.x.start * s:tl.x.stop * s].add_((o * weight).cpu())
            assert results is not None
            return results


def _check_condition_maps(maps: np.ndarray, spec: ModelSpec) -> None:
    """Refuse maps a model cannot use, whoever built them: the CLI (udvd_condition, checked there) and
    arrays or functions given to the Python API alike all pass here."""
    if not np.isfinite(maps).all():
        raise ConfigError("degradation maps have NaN or infinite values")
    from srkit.data.conditions import CONDITION_CHANNELS, check_noise

    if spec.condition == "degradation" and maps.shape[0] == CONDITION_CHANNELS:
        # SRMD's layout: 15 kernel codes, then the noise level / 255. Rounded so that a level of exactly
        # 255 (or 0) that went through float32 is not refused for its last bit.
        noise = np.round(maps[-1].astype(np.float64) * 255.0, 3)
        try:
            check_noise(float(noise.flat[0]) if np.ptp(noise) == 0 else noise, *noise.shape)
        except ConfigError as exc:
            raise ConfigError(f"degradation maps: {exc} (the last map is the noise level / 255)") from None


def _warn_slow_precision(device: torch.device, precision: str) -> None:
    """bf16/fp16 autocast on a CPU without native support is emulated and several times slower than fp32."""
    if device.type != "cpu" or precision == "fp32":
        return
    from srkit.utils.device import cpu_has_native_bf16

    if cpu_has_native_bf16() is False:  # None: older PyTorch cannot tell, say nothing
        log.warning("this CPU has no native %s arithmetic (AVX512-BF16/AMX); --precision %s runs emulated and is "
                    "usually slower than fp32 here", precision, precision)


def upscale_frames(frames: Iterable[np.ndarray], model: nn.Module | str | None, *,
                   options: RestoreOptions | None = None, condition: Condition | None = None,
                   start_frame: int = 0, weights: str | os.PathLike | None = None,
                   **fields: Any) -> Iterator[np.ndarray]:
    """Restore a stream of frames; yields one HxWx3 float32 RGB frame in [0, 1] per input frame, in order.

    Args:
        frames: HxWx3 (or gray HxW / HxWx1, replicated to RGB) uint8, uint16 or float [0, 1] arrays,
            all the same size. Consumed lazily: at most ``2 * num_frames - 1 + batch_size`` are held.
        model: an srkit model or a preset name (``weights`` then loads a checkpoint), see :func:`load_model`.
        options / fields: a :class:`~srkit.infer.options.RestoreOptions` and/or its fields as keywords
            (``device``, ``precision``, ``tile``, ``tile_overlap``, ``max_memory``, ``channels_last``,
            ``padding``, ``use_cache``, ``batch_size``); keywords override ``options``.
        condition: degradation maps for conditioned models (UDVD): (C, H, W), (C,) or ``f(h, w)``.
        start_frame: skip the outputs before this index (resuming); its context frames are still read.

    One call builds one :class:`Restorer`; to restore many streams with one model, build the
    :class:`Restorer` once and call its :meth:`~Restorer.stream`.
    """
    opts = dataclasses.replace(options if options is not None else RestoreOptions(), **fields)
    return Restorer(model, opts, weights=weights).stream(frames, condition=condition, start_frame=start_frame)


def _stream(it: Iterator[np.ndarray], restorer: FrameRestorer, padding: str, reach: int, batch_size: int,
            start: int) -> Iterator[np.ndarray]:
    spec, dev = restorer.spec, restorer.device
    buf: dict[int, _Frame] = {}
    n_read = 0
    exhausted = False
    size: tuple[int, int] | None = None
    next_out = start
    warned_alpha = False
    while True:
        # Read until the next batch of windows is fully known: `reach` frames past its last centre.
        while not exhausted and n_read < next_out + batch_size + reach:
            try:
                arr = next(it)
            except StopIteration:
                exhausted = True
                break
            idx = n_read
            n_read += 1
            if idx < start - reach:
                continue  # resuming: frames before the first window are only decoded, never used
            if not warned_alpha and np.ndim(arr) == 3 and np.shape(arr)[2] == 4:
                warned_alpha = True  # once per stream: the same holds for every frame
                log.warning("frames have an alpha channel (RGBA): it is dropped, the model restores RGB only")
            try:
                t = frame_to_tensor(arr)
            except InputError as exc:  # say which frame of the stream it is
                raise InputError(f"frame {idx}: {exc}") from None
            hw = (t.shape[2], t.shape[3])
            if size is None:
                size = hw
                restorer.setup(*hw)
            elif hw != size:
                raise InputError(f"frame {idx} is {hw[1]}x{hw[0]} but the first frame is {size[1]}x{size[0]}")
            t = t.to(dev, non_blocking=True)
            if not restorer.channels_last:
                t = t.contiguous()
            buf[idx] = _Frame(t, {})
        if n_read == 0:
            raise InputError("no frames to restore (zero frames)")
        if next_out >= n_read:
            if exhausted:
                return
            continue
        # Windows of these centres cannot change any more (their reach is read, or the clip ended).
        last = n_read if exhausted else n_read - reach
        centres = list(range(next_out, min(next_out + batch_size, last)))
        length = n_read  # when not exhausted, every window index is < n_read and independent of the length
        windows = []
        for ci in centres:
            idxs = window_for(ci, spec, length, padding)
            try:
                windows.append([buf[j] for j in idxs])
            except KeyError as exc:  # pragma: no cover - a bug, not a user error
                raise RuntimeError(f"frame {exc} left the buffer before window {ci} used it") from None
        for out in restorer.restore(windows):
            yield tensor_to_frame(out)
        next_out += len(centres)
        for j in [j for j in buf if j < next_out - reach]:
            del buf[j]
