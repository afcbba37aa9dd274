"""``srkit demo``: the whole job on a photograph that ships with the install, no download, no arguments.

1. A short clip is made from a real photograph (matplotlib's sample photograph of Grace Hopper, which
   every matplotlib install carries, or ``image=`` any photo): a smooth pan by a fraction of an LR
   pixel per frame (Lanczos resampling), so every frame samples the scene at another sub-pixel phase
   -- what a multi-frame model can exploit.
2. It is degraded as the literature's BI x4 (MATLAB-compatible bicubic, uint8 LR).
3. The LR clip is restored by a shipped model (``edvr-s``) through the same engine as ``srkit
   upscale`` (:func:`srkit.infer.upscale_frames`), and by MATLAB bicubic for reference.
4. Written to the output folder: ``lr.mp4``, ``lr.png`` (its middle frame), ``bicubic.mp4``, ``<model>.mp4``, ``original.mp4``,
   ``comparison.png`` (whole middle frame side by side, and a zoomed crop of its most detailed
   region) and ``demo.json`` (per-frame and mean PSNR/SSIM on Y, the literature's way).
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srkit.errors import ConfigError, InputError, OutputError

# Pan per frame in original (HR) pixels: 0.375 x 0.19 LR pixels at x4, never a whole-pixel step.
PAN_PER_FRAME = (1.5, 0.75)
MARKER = "demo.json"  # a folder holding it is an earlier demo's output and is refreshed in place


def sample_photo() -> Path:
    """The photograph the demo uses by default (shipped in matplotlib's sample data)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        raise InputError("matplotlib's sample photograph is missing (reinstall matplotlib, or give --image)", path)
    return path


def pan_clip(photo: np.ndarray, frames: int, scale: int = 4,
             step: tuple[float, float] = PAN_PER_FRAME) -> list[np.ndarray]:
    """``frames`` uint8 views of ``photo`` panned by ``step`` (x, y) original pixels per frame.

    Frame size: the photo less the pan's extent, cut to a multiple of ``scale``. Sub-pixel shifts are
    Lanczos-resampled; frame 0 is an exact crop.
    """
    import cv2

    h, w = photo.shape[:2]
    span_x, span_y = (math.ceil(abs(s) * (frames - 1)) for s in step)
    # a multiple of 2 * scale: the LR clip has even sides (yuv420p video without padding)
    out_w, out_h = (w - span_x) // (2 * scale) * 2 * scale, (h - span_y) // (2 * scale) * 2 * scale
    if out_w < 8 * scale or out_h < 8 * scale:
        raise InputError(f"photo is {w}x{h}: too small for a {frames}-frame pan at x{scale} "
                         f"(needs about {8 * scale + span_x}x{8 * scale + span_y})")
    clip = []
    for i in range(frames):
        m = np.float32([[1, 0, i * step[0]], [0, 1, i * step[1]]])
        # warpAffine maps output (x, y) from input M^-1 (x, y): WARP_INVERSE_MAP reads photo at (x + dx, y + dy).
        clip.append(cv2.warpAffine(photo, m, (out_w, out_h), flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_REFLECT_101))
    return clip


@dataclass
class DemoResult:
    model: str
    folder: Path
    frames: int
    lr_size: tuple[int, int]  # (width, height)
    psnr: dict[str, list[float]] = field(default_factory=dict)  # method -> per-frame PSNR-Y
    ssim: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    files: list[Path] = field(default_factory=list)

    def mean(self, metric: str, method: str) -> float:
        return float(np.mean(getattr(self, metric)[method]))

    def table(self) -> str:
        """Model vs bicubic, as printed at the end of the demo."""
        rows = [f"{'':<12}{'PSNR-Y':>9}{'SSIM-Y':>9}"]
        base = self.mean("psnr", "bicubic")
        for method in ("bicubic", self.model):
            gain = "" if method == "bicubic" else f"   {self.mean('psnr', method) - base:+.2f} dB over bicubic"
            rows.append(f"{method:<12}{self.mean('psnr', method):>9.2f}{self.mean('ssim', method):>9.4f}{gain}")
        w, h = self.lr_size
        rows.append(f"x4 BI (MATLAB bicubic) of a {self.frames}-frame pan, LR {w}x{h}; Y channel, crop 0; "
                    f"mean of {self.frames} frames")
        return "\n".join(rows)


def _prepare_folder(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise OutputError("exists and is not a folder", folder)
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MARKER).is_file() and not overwrite:
        raise OutputError("folder exists and is not an earlier demo's output (use --overwrite to write into it)",
                          folder)
    parent = folder.parent if str(folder.parent) else Path(".")
    if not folder.exists():
        if not parent.is_dir():
            raise OutputError("output folder's parent does not exist", parent)
        folder.mkdir()
    if not os.access(folder, os.W_OK):
        raise OutputError("output folder is not writable", folder)


def _comparison(lr: np.ndarray, bicubic: np.ndarray, restored: np.ndarray, original: np.ndarray, model: str,
                scale: int) -> np.ndarray:
    """The whole frames (LR magnified by pixel repetition) over a zoomed crop of the most detailed region."""
    from srkit.eval import crop_panel, detail_window, labelled_row

    lr_big = np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)
    parts = [("LR (input, x4 pixels)", lr_big), ("bicubic", bicubic), (model, restored), ("original", original)]
    top_row = labelled_row(parts, bar=26, font_scale=0.6, gap=6)
    size = max(32, min(original.shape[:2]) // 6)
    top, left, size = detail_window(original, size)
    crops = crop_panel([(label.split(" ")[0], img) for label, img in parts], top, left, size)
    # Magnify the crops to the width of the row above (nearest: pixels stay visible).
    f = max(1, top_row.shape[1] // crops.shape[1])
    crops = np.repeat(np.repeat(crops, f, axis=0), f, axis=1)
    pad = top_row.shape[1] - crops.shape[1]
    crops = np.pad(crops, ((0, 0), (0, pad), (0, 0)), constant_values=255)
    sep = np.full((10, top_row.shape[1], 3), 255, np.uint8)
    return np.concatenate([top_row, sep, crops], axis=0)


def run_demo(folder: str | os.PathLike = "srkit-demo", *, frames: int = 12, model: str = "edvr-s",
             image: str | os.PathLike | None = None, overwrite: bool = False, device: str = "auto",
             quiet: bool = False) -> DemoResult:
    """Make, degrade, restore and score the demo clip; see the module docstring."""
    import time

    from tqdm import tqdm

    from srkit.data.imresize import imresize
    from srkit.infer.engine import load_model, model_spec, upscale_frames
    from srkit.io.images import from_float, read_rgb, write_image
    from srkit.io.video import VideoWriter
    from srkit.metrics import psnr, ssim

    if frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {frames}")
    folder = Path(folder)
    _prepare_folder(folder, overwrite)
    start = time.perf_counter()
    net = load_model(model)
    spec = model_spec(net)
    if spec.hr_input or spec.condition is not None:
        raise ConfigError(f"the demo restores BI x4 LR clips; {model} is not such a model (try edvr-s)")
    scale = spec.scale
    photo = read_rgb(image if image is not None else sample_photo())
    if photo.dtype != np.uint8:
        photo = from_float(photo.astype(np.float32) / np.iinfo(photo.dtype).max)
    original = pan_clip(photo, frames, scale)
    lr = [imresize(f, 1 / scale) for f in original]  # uint8 in, uint8 out: rounded per pass as MATLAB
    bicubic = [imresize(f, scale) for f in lr]
    restored: list[np.ndarray] = []
    with tqdm(total=frames, desc=f"demo: {model} restores {frames} frames", unit="frame", file=sys.stderr,
              disable=quiet, dynamic_ncols=True) as bar:
        for out in upscale_frames(lr, net, device=device):
            restored.append(from_float(out))
            bar.update(1)
    result = DemoResult(model, folder, frames, (lr[0].shape[1], lr[0].shape[0]))
    for method, outs in (("bicubic", bicubic), (model, restored)):
        result.psnr[method] = [psnr(o, g, y_channel=True) for o, g in zip(outs, original)]
        result.ssim[method] = [ssim(o, g, y_channel=True) for o, g in zip(outs, original)]
    for name, clip in (("lr", lr), ("bicubic", bicubic), (model, restored), ("original", original)):
        path = folder / f"{name}.mp4"
        with VideoWriter(path, width=clip[0].shape[1], height=clip[0].shape[0], fps=8, overwrite=True) as writer:
            for f in clip:
                writer.write(f)
        result.files.append(path)
    mid = frames // 2
    # One LR frame as a lossless image: something small to give the image model (`srkit upscale lr.png`).
    lr_png = folder / "lr.png"
    write_image(lr_png, lr[mid])
    result.files.append(lr_png)
    png = folder / "comparison.png"
    write_image(png, _comparison(lr[mid], bicubic[mid], restored[mid], original[mid], model, scale))
    result.files.append(png)
    result.seconds = time.perf_counter() - start
    summary = {
        "model": model, "frames": frames, "scale": scale, "degradation": "BI (MATLAB bicubic)",
        "photo": str(image) if image is not None else "matplotlib sample_data/grace_hopper.jpg",
        "pan_per_frame_px": list(PAN_PER_FRAME), "metric": "Y channel (BT.601), crop 0",
        "mean": {m: {"psnr": result.mean("psnr", m), "ssim": result.mean("ssim", m)} for m in result.psnr},
        "per_frame": {m: {"psnr": result.psnr[m], "ssim": result.ssim[m]} for m in result.psnr},
        "seconds": round(result.seconds, 2),
    }
    from srkit.io.atomic import atomic_write_text

    atomic_write_text(folder / MARKER, json.dumps(summary, indent=2) + "\n")
    result.files.append(folder / MARKER)
    return result
