"""Benchmark evaluation: run a model (or MATLAB bicubic) over a dataset layout and score it.

:func:`evaluate` finds the clips (:func:`srkit.data.layouts.discover_clips`), reads the ground truth,
takes the LR frames from disk when the layout has them for the requested degradation or synthesises
them with :func:`srkit.data.degrade.make_degradation`, restores them with
:func:`srkit.infer.upscale_frames` (any registered model, video or single-image, conditioned or not),
rounds the outputs to the ground truth's integer type (MATLAB rounding, as published numbers are
computed on saved images) and scores every frame with :func:`srkit.metrics.psnr` / ``ssim`` (and,
with ``lpips=True``, LPIPS-alex through the optional ``lpips`` package, :mod:`srkit.metrics.perceptual`).
Dataset scores are means of clip means (:class:`srkit.metrics.VideoScores`).

Protocol details that move published numbers, and what is done here:

* synthesised LR: the ground truth is first cropped to a multiple of the scale (MATLAB ``modcrop``);
  BI/BD frames are degraded in their integer class and stay quantised, exactly like LR PNG files made
  with MATLAB; SRMD and DN frames (blur, noise) stay float, as SRMD/UDVD test;
* LR from disk larger ground truth: the ground truth is cropped to ``scale x`` the LR size;
* Vimeo-90K: only the centre frame of each septuplet is scored (all seven are the model's input);
* ``--model bicubic``: MATLAB ``imresize(lr, scale)`` on the LR in its own class;
* other degradation names (REDS ``blur_bicubic``, ``blur`` at scale 1 for deblurring) are read from
  disk only.

:func:`write_report` writes ``eval.json``, ``per_frame.csv``, ``per_clip.csv``, a per-frame PSNR plot
and, optionally, side-by-side crops (bicubic | model | ground truth); every file atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from srkit.data.degrade import BD_VARIANTS, DEGRADATIONS, check_blur_width, load_pca_basis, make_degradation
from srkit.errors import ConfigError, InputError, OutputError
from srkit.infer.options import RestoreOptions
from srkit.io.atomic import atomic_path, atomic_write_text, check_output_path
from srkit.io.images import from_float, read_rgb, write_image
from srkit.metrics import VideoScores, psnr, ssim

__all__ = ["EvalOptions", "EvalReport", "ClipResult", "evaluate", "write_report", "format_table", "REPORT_FILES"]

REPORT_FILES = ("eval.json", "per_frame.csv", "per_clip.csv", "psnr_per_frame.png")
# Degradations that can be synthesised from the ground truth (the registered ones); others (REDS
# "blur_bicubic", "blur") are evaluated from LR frames on disk only.
SYNTHESISABLE = tuple(DEGRADATIONS)


@dataclass
class EvalOptions:
    """What to evaluate and how (the fields are the ``srkit eval`` options)."""

    data: str
    # preset name, "bicubic", or None: the network the weights file describes (bicubic without weights)
    model: str | None = None
    weights: str | None = None
    layout: str = "auto"
    split: str = "test"
    degradation: str = "BI"
    scale: int = 4
    y_channel: bool = False
    crop_border: int = 0
    frames: int | None = None
    subset: str | None = None
    blur: float | None = None
    noise: float | None = None
    jpeg: int | None = None
    # BD sampling grid: "duf" (13x13, pixels 0, s, 2s...) or "matlab" (BasicSR's MATLAB BD script)
    bd_variant: str = "duf"
    # PCA basis of the blur codes a conditioned model is given: None/"srkit", "srmd" or a .mat/.npy file
    pca_basis: str | None = None
    seed: int = 0
    ssim: bool = True
    # LPIPS (AlexNet, RGB in [-1, 1]) per frame through the optional lpips package (srkit[lpips])
    lpips: bool = False
    out: str | None = None
    crops: bool = False
    crop_size: int = 128
    overwrite: bool = False
    # How the model runs: RestoreOptions' defaults (fp32: eval stays literature-exact; padding
    # reflection_circle, as EDVR's BasicSR test configs).
    device: str = RestoreOptions.device
    precision: str = RestoreOptions.precision
    padding: str = RestoreOptions.padding
    tile: int | None = RestoreOptions.tile
    max_memory: str | None = RestoreOptions.max_memory
    # temporal ablation: every window of a video model is its centre frame repeated
    repeat_centre: bool = False
    quiet: bool = False

    def validate(self) -> None:
        if self.scale < 1:
            raise ConfigError(f"scale must be >= 1, got {self.scale}")
        if self.crop_border < 0:
            raise ConfigError(f"crop border must be >= 0, got {self.crop_border}")
        if self.frames is not None and self.frames < 1:
            raise ConfigError(f"--frames must be >= 1, got {self.frames}")
        if not self.degradation or not self.degradation.replace("_", "").isalnum():
            raise ConfigError(f"invalid degradation name {self.degradation!r}")
        if self.degradation.upper() in SYNTHESISABLE:
            self.degradation = self.degradation.upper()
        if self.noise is not None and not 0 <= self.noise <= 255:
            raise ConfigError(f"--noise must be in 0..255, got {self.noise}")
        if self.blur is not None and not (math.isfinite(self.blur) and self.blur > 0):
            raise ConfigError(f"--blur must be positive, got {self.blur}")
        entry = DEGRADATIONS.get(self.degradation)
        if self.blur is not None and entry is not None and entry.condition is not None:
            check_blur_width(self.blur)  # the maps its samples carry cannot describe wider blurs
        if self.bd_variant not in BD_VARIANTS:
            raise ConfigError(f"--bd-variant must be one of {', '.join(BD_VARIANTS)}, got {self.bd_variant!r}")
        if self.pca_basis is not None:
            load_pca_basis(self.pca_basis)  # a bad name or file: one line before any work
        if self.jpeg is not None and not 1 <= self.jpeg <= 100:
            raise ConfigError(f"--jpeg quality must be in 1..100, got {self.jpeg}")
        if self.model == "bicubic" and self.weights:
            raise ConfigError("--weights makes no sense with --model bicubic")
        if self.model is None and not self.weights:
            self.model = "bicubic"
        self.restore_options()  # precision, padding, tile and memory checked as for srkit upscale
        if self.crop_size < 8:
            raise ConfigError(f"crop size must be >= 8, got {self.crop_size}")
        if self.lpips:
            from srkit.metrics.perceptual import check_available

            check_available()  # the package missing: one line before any work


    def restore_options(self) -> RestoreOptions:
        """How the model runs (validated)."""
        return RestoreOptions(device=self.device, precision=self.precision, tile=self.tile,
                              max_memory=self.max_memory, padding=self.padding).validate()


@dataclass
class ClipResult:
    """Per-clip bookkeeping beyond the scores: where the LR came from and the crop panel."""

    name: str
    lr_source: str  # "disk" or "synthesised"
    panel: np.ndarray | None = None
    panel_frame: str | None = None


@dataclass
class EvalReport:
    options: EvalOptions
    model_name: str
    scores: VideoScores
    clips: list[ClipResult]
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    # a registered preset built without --weights: random outputs, flagged in the table and JSON
    untrained: bool = False

    def summary(self) -> dict[str, Any]:
        """JSON-ready report (non-finite numbers, e.g. PSNR of identical images, become null)."""
        opts = dataclasses.asdict(self.options)
        for k in ("out", "overwrite", "quiet"):
            opts.pop(k, None)
        return _finite(
            {
                "srkit_version": _version(),
                "model": self.model_name,
                "untrained": self.untrained,
                "options": opts,
                "lr_source": {c.name: c.lr_source for c in self.clips},
                "seconds": round(self.seconds, 3),
                **self.scores.to_dict(),
            }
        )


def _version() -> str:
    from srkit import __version__

    return __version__


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------- loading
def _read_gt(clip, limit: int | None) -> list[np.ndarray]:
    if clip.gt is not None:
        paths = clip.gt[:limit] if limit else clip.gt
        return [read_rgb(p) for p in paths]
    if clip.video is not None:
        from srkit.io.video import VideoReader

        out = []
        with VideoReader(clip.video) as reader:
            for frame in reader:
                out.append(frame.rgb)
                if limit and len(out) >= limit:
                    break
        return out
    raise InputError(f"clip {clip.name} has no ground truth (LR-only data cannot be scored)")


def _modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def _degradation(opts: EvalOptions):
    deg = opts.degradation.upper()
    params: dict[str, Any] = {}
    if opts.jpeg is not None:
        params["jpeg_quality"] = opts.jpeg
    if DEGRADATIONS[deg].condition is not None and opts.pca_basis is not None:
        params["pca_basis"] = opts.pca_basis  # the codes of the samples' own maps
    if deg == "SRMD":
        params["noise"] = float(opts.noise or 0.0)
        if opts.blur is not None:
            params["blur"] = opts.blur
    else:
        if deg in ("BI", "DN") and opts.blur is not None:
            # BI and DN have no blur to set: silently ignoring --blur would score one degradation while
            # telling a conditioned model (UDVD) another.
            raise ConfigError(f"--blur {opts.blur:g} does not apply to {deg} (bicubic, no blur); use --degradation SRMD "
                              f"(Gaussian blur + bicubic, as UDVD/SRMD) or BD (Gaussian blur + subsampling)")
        if opts.noise:
            params["noise"] = float(opts.noise)
        if deg == "BD" and opts.blur is not None:
            params["sigma"] = opts.blur
        if deg == "BD":
            params["variant"] = opts.bd_variant
    return make_degradation(deg, opts.scale, **params)


def _lr_frames(clip, gt: list[np.ndarray], opts: EvalOptions) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None, str]:
    """``(gt, lr, maps, source)``: GT possibly cropped to match, LR frames (integer or float32)."""
    scale = opts.scale
    if clip.lr is not None:
        paths = clip.lr[: len(gt)]
        if len(paths) < len(gt):
            raise InputError(f"clip {clip.name}: {len(clip.lr)} LR frames for {len(gt)} ground-truth frames", paths[0].parent if paths else None)
        lr = [read_rgb(p) for p in paths]
        out_gt = []
        for g, l, p in zip(gt, lr, paths):
            th, tw = l.shape[0] * scale, l.shape[1] * scale
            if g.shape[0] < th or g.shape[1] < tw or g.shape[0] - th >= scale or g.shape[1] - tw >= scale:
                raise InputError(f"LR frame {l.shape[1]}x{l.shape[0]} does not match ground truth {g.shape[1]}x{g.shape[0]} at x{scale}", p)
            out_gt.append(g[:th, :tw])
        return out_gt, lr, None, "disk"
    if opts.degradation not in SYNTHESISABLE:
        raise InputError(f"clip {clip.name}: no LR frames on disk for degradation {opts.degradation!r} "
                         f"(only {', '.join(SYNTHESISABLE)} can be synthesised from the ground truth)", opts.data)
    gt = [_modcrop(g, scale) for g in gt]
    if min(gt[0].shape[:2]) < scale:
        raise InputError(f"clip {clip.name}: frames smaller than the scale factor")
    # Per-clip stream, independent of which other clips are evaluated (subsets stay comparable).
    rng = np.random.default_rng([opts.seed, zlib.crc32(clip.name.encode())])
    sample = _degradation(opts)(gt, rng)
    lr: list[np.ndarray] = sample.lr
    deg = opts.degradation.upper()
    if deg in ("BI", "BD") and not opts.noise and opts.jpeg is None:
        # Already quantised values k/255: store them as the integer images a benchmark ships.
        lr = [from_float(f, gt[0].dtype) for f in lr]
    return gt, lr, sample.maps, "synthesised"


# ------------------------------------------------------------------------------------------ running
def _bicubic_up(lr: np.ndarray, scale: int, dtype: np.dtype) -> np.ndarray:
    from srkit.data.imresize import imresize

    up = imresize(lr, float(scale))
    return up if up.dtype == dtype else from_float(up, dtype)


def _quantise(frame: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return from_float(frame, dtype)


def _scored_indices(clip, n: int) -> list[int]:
    centers = clip.centers if clip.centers is not None else range(n)
    return [i for i in centers if i < n]


def _frame_names(clip, n: int) -> list[str]:
    if clip.gt is not None:
        return [Path(p).stem for p in clip.gt[:n]]
    return [f"{i:05d}" for i in range(n)]


def detail_window(gt: np.ndarray, size: int) -> tuple[int, int, int]:
    """Top-left corner and side of the ``size`` window with the most ground-truth detail."""
    h, w = gt.shape[:2]
    size = min(size, h, w)
    g = gt.astype(np.float32).mean(axis=2)
    energy = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
    # Integral image: window sums for every top-left corner on a stride of size/4.
    ii = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, size // 4)
    best, by, bx = -1.0, 0, 0
    eh, ew = energy.shape
    for y in range(0, max(1, eh - size + 1), step):
        for x in range(0, max(1, ew - size + 1), step):
            y2, x2 = min(y + size, eh), min(x + size, ew)
            s = ii[y2, x2] - ii[y, x2] - ii[y2, x] + ii[y, x]
            if s > best:
                best, by, bx = s, y, x
    return by, bx, size


def labelled_row(parts: list[tuple[str, np.ndarray]], *, bar: int = 22, font_scale: float = 0.45,
                 gap: int = 4) -> np.ndarray:
    """uint8 images of one height side by side, each under a white bar with its label."""
    import cv2

    cells = []
    for label, img in parts:
        top = np.full((bar, img.shape[1], 3), 255, np.uint8)
        text = label[: max(4, int(img.shape[1] / (20 * font_scale)))]
        cv2.putText(top, text, (4, bar - 6), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
        cells.append(np.concatenate([top, img], axis=0))
    space = np.full((cells[0].shape[0], gap, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for c in cells:
        row += [c, space]
    return np.concatenate(row[:-1], axis=1)


def crop_panel(parts: list[tuple[str, np.ndarray]], top: int, left: int, size: int) -> np.ndarray:
    """Side-by-side crops with a label bar; uint8 RGB."""
    crops = []
    for label, img in parts:
        c = img[top : top + size, left : left + size]
        if c.dtype != np.uint8:
            c = (c.astype(np.float32) / 257.0 + 0.5).astype(np.uint8) if c.dtype == np.uint16 else from_float(c)
        if size < 128:  # magnify small crops (nearest) so that details and labels stay visible
            f = math.ceil(128 / size)
            c = np.repeat(np.repeat(c, f, axis=0), f, axis=1)
        crops.append((label, c))
    return labelled_row(crops)


def _check_scorable(name: str, shape: tuple[int, ...], opts: EvalOptions) -> None:
    """One-line :class:`ConfigError` before any model run when the metrics cannot score ``shape``."""
    from srkit.metrics.quality import SSIM_WINDOW

    h, w = shape[:2]
    left = min(h, w) - 2 * opts.crop_border
    if left < 1:
        raise ConfigError(f"--crop-border {opts.crop_border} leaves nothing of clip {name}'s {w}x{h} frames")
    if opts.ssim and left < SSIM_WINDOW:
        raise ConfigError(f"clip {name}: {w}x{h} frames minus --crop-border {opts.crop_border} are smaller than "
                          f"SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window (use --no-ssim or a smaller crop border)")


def evaluate(options: EvalOptions, *, model=None) -> EvalReport:
    """Score ``options.model`` (or the ``model`` module given) on ``options.data``; see the module doc.

    Raises :class:`~srkit.errors.SrkitError` subclasses for bad data, options or checkpoints.
    """
    from srkit.models import has_pretrained

    from srkit.data.layouts import discover_clips

    opts = options
    if model is not None:  # a module given directly: record what it is, never "bicubic"
        opts.model = getattr(model, "preset", None) or type(model).__name__
    opts.validate()
    start = time.perf_counter()
    clips = discover_clips(opts.data, opts.layout, degradation=opts.degradation, scale=opts.scale,
                           subset=opts.subset, split=opts.split)
    if not clips:
        raise InputError("no clips found", opts.data)
    bicubic = model is None and opts.model == "bicubic"
    restorer = spec = None
    if not bicubic:
        from srkit.infer.engine import Restorer

        # Made ready once (device, precision, layout) and used for every clip.
        restorer = Restorer(model if model is not None else opts.model, opts.restore_options(), weights=opts.weights)
        net, spec = restorer.model, restorer.spec
        if spec.scale != opts.scale:
            raise ConfigError(f"model {getattr(net, 'preset', None) or type(net).__name__} upscales x{spec.scale}, "
                              f"but --scale is {opts.scale}")
    model_name = "bicubic" if bicubic else (getattr(net, "preset", None) or opts.model or type(net).__name__)
    lpips_fn = None
    if opts.lpips:
        from srkit.metrics.perceptual import LPIPS

        # Built before any clip runs: a missing backbone checkpoint is reported up front.
        lpips_fn = LPIPS("alex", device=restorer.device if restorer is not None else "cpu")
    # frames a video model may read beyond the last scored one: its half-window m, or up to 2m when a
    # window at the clip start is padded with frames from past its far side (reflection_circle, circle)
    context = 0 if spec is None or spec.input_kind != "video" else spec.window_reach
    from tqdm import tqdm

    total = sum(len(_scored_indices(c, min(c.num_frames or 0, opts.frames or 10**9))) for c in clips)
    scores = VideoScores()
    results: list[ClipResult] = []
    with tqdm(total=total or None, desc=f"eval {model_name}", unit="frame", file=sys.stderr,
              disable=opts.quiet, dynamic_ncols=True) as bar:
        for clip in clips:
            # --frames N scores the first N frames, but a video model still sees the real neighbours
            # of frame N-1 (not border padding), so each score equals the full-clip run's.
            gt = _read_gt(clip, opts.frames + context if opts.frames else None)
            if not gt:
                raise InputError(f"clip {clip.name}: no frames")
            gt, lr, maps, source = _lr_frames(clip, gt, opts)
            _check_scorable(clip.name, gt[0].shape, opts)
            dtype = gt[0].dtype
            n_scored = min(len(gt), opts.frames) if opts.frames else len(gt)
            scored = set(_scored_indices(clip, n_scored))
            names = _frame_names(clip, len(gt))
            panel_at = sorted(scored)[len(scored) // 2] if scored else None
            result = ClipResult(clip.name, source)
            if not scored:
                results.append(result)
                continue
            first, last = min(scored), max(scored)
            if bicubic:
                outputs: Iterable[np.ndarray] = (_bicubic_up(f, opts.scale, dtype) if i in scored else None for i, f in enumerate(lr))
            else:
                from srkit.data.conditions import assumed_condition

                condition = None
                if spec.condition == "degradation":
                    # The synthesised samples' own maps, else what --blur/--noise or the degradation imply.
                    condition = maps if maps is not None else assumed_condition(
                        opts.degradation, opts.scale, blur=opts.blur, noise=float(opts.noise or 0.0),
                        pca_basis=opts.pca_basis)
                if opts.repeat_centre and spec.num_frames > 1:
                    # Each scored frame alone, as a clip of num_frames copies: the centre output of
                    # that clip saw no other frame.
                    outputs = (_quantise(next(restorer.stream([lr[i]] * spec.num_frames, condition=condition,
                                                              start_frame=spec.center_index)), dtype)
                               if i in scored else None for i in range(first, len(lr)))
                else:
                    # start_frame skips outputs before the first scored frame (Vimeo: only the centre of
                    # 7 is scored) while still feeding its temporal context; we stop after the last.
                    outputs = (_quantise(o, dtype)
                               for o in restorer.stream(lr, condition=condition, start_frame=first))
            offset = 0 if bicubic else first
            for i, out in enumerate(outputs, start=offset):
                if i > last:
                    break
                if i not in scored:
                    continue
                if out.shape != gt[i].shape:
                    raise InputError(f"clip {clip.name}: model output {out.shape[1]}x{out.shape[0]} differs from ground truth {gt[i].shape[1]}x{gt[i].shape[0]}")
                values = {"psnr": psnr(out, gt[i], crop_border=opts.crop_border, y_channel=opts.y_channel)}
                if opts.ssim:
                    values["ssim"] = ssim(out, gt[i], crop_border=opts.crop_border, y_channel=opts.y_channel)
                if lpips_fn is not None:
                    values["lpips"] = lpips_fn(out, gt[i], crop_border=opts.crop_border)  # RGB always
                scores.add(clip.name, names[i], **values)
                if opts.crops and i == panel_at:
                    top, left, size = detail_window(gt[i], opts.crop_size)
                    parts = [("bicubic", _bicubic_up(lr[i], opts.scale, dtype))]
                    if not bicubic:
                        parts.append((str(model_name), out))
                    parts.append(("GT", gt[i]))
                    result.panel, result.panel_frame = crop_panel(parts, top, left, size), names[i]
                bar.update(1)
            results.append(result)
    if not scores.clips:
        raise ConfigError("nothing was scored: --frames leaves no scored frame in any clip "
                          "(Vimeo-90K scores only the centre frame, im4)")
    return EvalReport(opts, str(model_name), scores, results, time.perf_counter() - start,
                      untrained=model is None and not bicubic and not opts.weights
                      and not has_pretrained(opts.model))


# ------------------------------------------------------------------------------------------ reporting
def format_table(report: EvalReport) -> str:
    """Per-clip table and the mean of clip means, as printed by ``srkit eval``."""
    s = report.scores
    metrics = s.metric_names
    width = max([4] + [len(n) for n in s.clips]) + 2
    head = f"{'clip':<{width}}{'frames':>7}" + "".join(f"{m.upper():>10}" for m in metrics)
    lines = [head, "-" * len(head)]
    for name, c in s.clips.items():
        lines.append(f"{name:<{width}}{len(c.frames):>7}" + "".join(_fmt(m, c.mean(m)) for m in metrics))
    lines.append("-" * len(head))
    n_frames = sum(len(c.frames) for c in s.clips.values())
    lines.append(f"{'mean':<{width}}{n_frames:>7}" + "".join(_fmt(m, s.mean(m)) for m in metrics))
    o = report.options
    sources = sorted({c.lr_source for c in report.clips})
    untrained = " (UNTRAINED: no weights)" if report.untrained else ""
    grid = f" ({o.bd_variant} grid)" if o.degradation == "BD" and "synthesised" in sources else ""
    if o.repeat_centre:
        untrained += " (every window = centre frame repeated)"
    lines.append(
        f"{report.model_name}{untrained} x{o.scale} {o.degradation}{grid}, {'Y' if o.y_channel else 'RGB'}, crop {o.crop_border}; "
        f"LR {'/'.join(sources)}; {'LPIPS alex (RGB); ' if 'lpips' in metrics else ''}"
        f"mean of {len(s.clips)} clip means; {report.seconds:.1f} s"
    )
    return "\n".join(lines)


def _fmt(metric: str, value: float) -> str:
    return f"{value:>10.4f}" if metric in ("ssim", "lpips") else f"{value:>10.3f}"


def check_report_folder(out: str | Path, *, overwrite: bool) -> Path:
    """Create ``out`` if needed and refuse to replace earlier reports unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError("output path exists and is not a folder", out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder ({exc.strerror or exc})", out) from None
    for name in REPORT_FILES:
        check_output_path(out / name, overwrite=overwrite)
    return out


def _csv_text(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _plot(report: EvalReport, path: Path) -> None:
    # Figure + Agg canvas directly: no global matplotlib backend switch (no import side effects).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    clips = report.scores.clips
    one_frame = all(len(c.frames) <= 1 for c in clips.values())
    if one_frame:
        # One scored frame per clip (Vimeo-90K centre frames, image sets): one point per clip, not
        # thousands of one-point lines.
        vals = np.array([c.mean("psnr") for c in clips.values()], dtype=np.float64)
        vals[~np.isfinite(vals)] = np.nan
        ax.plot(np.arange(len(vals)), vals, ".", markersize=4 if len(vals) > 200 else 8)
    else:
        for name, c in clips.items():
            vals = np.array(c.metrics.get("psnr", []), dtype=np.float64)
            vals[~np.isfinite(vals)] = np.nan
            ax.plot(np.arange(len(vals)), vals, marker="." if len(vals) < 40 else None, label=f"{name} ({c.mean('psnr'):.2f} dB)")
    o = report.options
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("clip" if one_frame else "frame")
    ax.set_ylabel(f"PSNR (dB, {'Y' if o.y_channel else 'RGB'})")
    ax.set_title(f"{report.model_name} x{o.scale} {o.degradation} — mean {report.scores.mean('psnr'):.3f} dB")
    ax.grid(True, alpha=0.3)
    if not one_frame and len(clips) <= 20:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def write_report(report: EvalReport, out: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
    """Write JSON, CSVs, the PSNR plot and the crops (if computed) into folder ``out``."""
    out = check_report_folder(out, overwrite=overwrite)
    files: dict[str, Path] = {}
    summary = report.summary()
    files["json"] = out / "eval.json"
    atomic_write_text(files["json"], json.dumps(summary, indent=2, allow_nan=False) + "\n")
    metrics = report.scores.metric_names
    rows: list[list[Any]] = [["clip", "frame", *metrics]]
    for name, c in report.scores.clips.items():
        for i, frame in enumerate(c.frames):
            rows.append([name, frame, *(_num(c.metrics[m][i]) for m in metrics)])
    files["per_frame_csv"] = out / "per_frame.csv"
    atomic_write_text(files["per_frame_csv"], _csv_text(rows))
    rows = [["clip", "frames", *metrics]]
    for name, c in report.scores.clips.items():
        rows.append([name, len(c.frames), *(_num(c.mean(m)) for m in metrics)])
    rows.append(["MEAN", sum(len(c.frames) for c in report.scores.clips.values()), *(_num(report.scores.mean(m)) for m in metrics)])
    files["per_clip_csv"] = out / "per_clip.csv"
    atomic_write_text(files["per_clip_csv"], _csv_text(rows))
    files["plot"] = out / "psnr_per_frame.png"
    _plot(report, files["plot"])
    panels = [c for c in report.clips if c.panel is not None]
    if panels:
        crop_dir = out / "crops"
        crop_dir.mkdir(exist_ok=True)
        for c in panels:
            path = crop_dir / f"{c.name.replace('/', '_')}_{c.panel_frame}.png"
            check_output_path(path, overwrite=overwrite)
            write_image(path, c.panel)
            files[f"crop:{c.name}"] = path
    report.files = files
    return files


def _num(v: float) -> str:
    return f"{v:.6f}" if math.isfinite(v) else "inf"
