"""PSNR and SSIM exactly as the super-resolution literature computes them.

Conventions (BasicSR's ``calculate_psnr``/``calculate_ssim``, which reproduce the MATLAB scripts of
EDVR, BasicVSR and most SR papers):

* images are compared on the 0-255 scale in float64, whatever their dtype (uint8 -> as is, uint16 ->
  ``/257``, float -> ``* 255`` assuming [0, 1]; ``max_value`` overrides the assumed peak of the input);
* ``crop_border`` pixels are removed on every side first (usually the scale factor);
* ``y_channel``: luma of ITU-R BT.601 with MATLAB ``rgb2ycbcr`` scaling,
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B)`` for R, G, B in [0, 1] (studio range 16-235), kept in
  float (not rounded), inputs RGB;
* PSNR ``= 10 log10(255^2 / MSE)`` (``inf`` for identical images);
* SSIM (Wang et al. 2004): 11x11 Gaussian window sigma 1.5, ``C1 = (0.01*255)^2``,
  ``C2 = (0.03*255)^2``, 'valid' filtering (no padding), mean of the SSIM map, computed per channel
  and averaged over channels.

The torch versions take ``(N, C, H, W)`` batches and return one value per image; they compute in
float64 and agree with the numpy versions within 1e-6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
import cv2
import numpy as np
import torch

__all__ = [
    "rgb_to_y",
    "rgb_to_y_torch",
    "psnr",
    "ssim",
    "psnr_torch",
    "ssim_torch",
    "ClipScores",
    "VideoScores",
    "SSIM_WINDOW",
    "SSIM_SIGMA",
]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
# MATLAB rgb2ycbcr, Y row, for RGB in [0, 1]; output in 0-255 units.
_Y_COEFFS = (65.481, 128.553, 24.966)


def _to_255(img: np.ndarray, max_value: float | None) -> np.ndarray:
    img = np.asarray(img)
    if max_value is None:
        if img.dtype == np.uint8:
            max_value = 255.0
        elif img.dtype == np.uint16:
            max_value = 65535.0
        elif np.issubdtype(img.dtype, np.integer):
            raise ValueError(f"unsupported integer dtype {img.dtype}; pass max_value")
        else:
            max_value = 1.0
    out = img.astype(np.float64)
    if max_value != 255.0:
        out *= 255.0 / float(max_value)
    return out


def rgb_to_y(img255: np.ndarray) -> np.ndarray:
    """HxWx3 RGB on the 0-255 scale -> HxW luma (BT.601, MATLAB ``rgb2ycbcr``), float64, 16..235."""
    r, g, b = img255[..., 0], img255[..., 1], img255[..., 2]
    return 16.0 + (_Y_COEFFS[0] * r + _Y_COEFFS[1] * g + _Y_COEFFS[2] * b) / 255.0


def _prepare_pair(img1, img2, crop_border: int, y_channel: bool, max_value: float | None) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(img1), np.asarray(img2)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"expected HxW or HxWxC images, got shape {a.shape}")
    a, b = _to_255(a, max_value), _to_255(b, max_value)
    if crop_border:
        if 2 * crop_border >= min(a.shape[:2]):
            raise ValueError(f"crop_border {crop_border} leaves nothing of a {a.shape[0]}x{a.shape[1]} image")
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if y_channel and a.shape[2] == 3:
        a, b = rgb_to_y(a)[:, :, None], rgb_to_y(b)[:, :, None]
    return a, b


def psnr(img1: np.ndarray, img2: np.ndarray, *, crop_border: int = 0, y_channel: bool = False,
         max_value: float | None = None) -> float:
    """PSNR in dB of two HxWxC (or HxW) images: uint8, uint16, or float in [0, ``max_value``=1]."""
    a, b = _prepare_pair(img1, img2, crop_border, y_channel, max_value)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two float64 2-D planes on the 0-255 scale."""
    g = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA)
    r = SSIM_WINDOW // 2

    def filt(x: np.ndarray) -> np.ndarray:
        # The window is the outer product of g: two 1-D passes (SIMD, threaded) equal the 2-D filter
        # to 1e-15. Border pixels are computed then cropped away: the result is the 'valid' part.
        return cv2.sepFilter2D(x, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT_101)[r:-r, r:-r]

    mu1, mu2 = filt(a), filt(b)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = filt(a * a) - mu1_sq
    s2 = filt(b * b) - mu2_sq
    s12 = filt(a * b) - mu12
    ssim_map = ((2 * mu12 + _C1) * (2 * s12 + _C2)) / ((mu1_sq + mu2_sq + _C1) * (s1 + s2 + _C2))
    return float(ssim_map.mean())


def ssim(img1: np.ndarray, img2: np.ndarray, *, crop_border: int = 0, y_channel: bool = False,
         max_value: float | None = None) -> float:
    """SSIM (Gaussian 11x11, sigma 1.5, valid) per channel, averaged; inputs as :func:`psnr`."""
    a, b = _prepare_pair(img1, img2, crop_border, y_channel, max_value)
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} after cropping, got {a.shape[:2]}")
    return float(np.mean([_ssim_channel(a[:, :, c], b[:, :, c]) for c in range(a.shape[2])]))


# ---------------------------------------------------------------------------------------------- torch
def _torch_to_255(x: torch.Tensor, max_value: float | None) -> torch.Tensor:
    if max_value is None:
        if x.dtype == torch.uint8:
            max_value = 255.0
        elif x.dtype == getattr(torch, "uint16", None):  # 16-bit PNG frames, as the numpy version
            max_value = 65535.0
        elif torch.is_floating_point(x):
            max_value = 1.0
        else:
            raise ValueError(f"unsupported tensor dtype {x.dtype}; pass max_value")
    y = x.to(torch.float64)
    return y * (255.0 / float(max_value)) if max_value != 255.0 else y


def rgb_to_y_torch(x255: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB on the 0-255 scale -> (N, 1, H, W) BT.601 luma (MATLAB scaling)."""
    c = torch.tensor(_Y_COEFFS, dtype=x255.dtype, device=x255.device).view(1, 3, 1, 1)
    return 16.0 + (x255 * c).sum(dim=1, keepdim=True) / 255.0


def _prepare_pair_torch(x, y, crop_border, y_channel, max_value) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape:
        raise ValueError(f"tensor shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.ndim == 3:
        x, y = x[None], y[None]
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) tensors, got shape {tuple(x.shape)}")
    a, b = _torch_to_255(x, max_value), _torch_to_255(y, max_value)
    if crop_border:
        if 2 * crop_border >= min(a.shape[-2:]):
            raise ValueError(f"crop_border {crop_border} leaves nothing of a {a.shape[-2]}x{a.shape[-1]} image")
        a = a[..., crop_border:-crop_border, crop_border:-crop_border]
        b = b[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel and a.shape[1] == 3:
        a, b = rgb_to_y_torch(a), rgb_to_y_torch(b)
    return a, b


def psnr_torch(x: torch.Tensor, y: torch.Tensor, *, crop_border: int = 0, y_channel: bool = False,
               max_value: float | None = None) -> torch.Tensor:
    """Per-image PSNR (dB) of ``(N, C, H, W)`` batches (float in [0, ``max_value``=1], uint8 or uint16): ``(N,)``."""
    # Y is affine in RGB, so Y(a) - Y(b) = coeffs . (a - b) / 255: convert the difference once
    # instead of both images (half the float64 work; identical to 1e-12).
    a, b = _prepare_pair_torch(x, y, crop_border, False, max_value)
    d = a - b
    if y_channel and d.shape[1] == 3:
        c = torch.tensor(_Y_COEFFS, dtype=d.dtype, device=d.device) / 255.0
        d = torch.einsum("nchw,c->nhw", d, c).unsqueeze(1)
    mse = d.square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse)  # mse 0 -> inf, as numpy


def _gaussian_valid(t: torch.Tensor) -> torch.Tensor:
    """'Valid' 11x11 Gaussian filtering of the last two dims, as two 1-D passes of shifted adds.

    float64 convolutions on CPU have no fast kernel in PyTorch (im2col of an 11x11 window needs 121x
    the image in memory); 22 shifted multiply-adds are exact to 1e-15 and stay memory-light.
    """
    g = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA)[:, 0].tolist()
    h = t.shape[-2] - SSIM_WINDOW + 1
    y = t[..., 0:h, :] * g[0]
    for i in range(1, SSIM_WINDOW):
        y.add_(t[..., i : i + h, :], alpha=g[i])
    w = t.shape[-1] - SSIM_WINDOW + 1
    z = y[..., 0:w] * g[0]
    for i in range(1, SSIM_WINDOW):
        z.add_(y[..., i : i + w], alpha=g[i])
    return z


def ssim_torch(x: torch.Tensor, y: torch.Tensor, *, crop_border: int = 0, y_channel: bool = False,
               max_value: float | None = None) -> torch.Tensor:
    """Per-image SSIM of ``(N, C, H, W)`` batches: ``(N,)`` float64, same definition as :func:`ssim`."""
    a, b = _prepare_pair_torch(x, y, crop_border, y_channel, max_value)
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} after cropping, got {tuple(a.shape[-2:])}")
    if a.device.type == "cpu":
        # PyTorch has no fast float64 CPU convolution; OpenCV's separable filter is 3-10x faster than
        # the shifted adds below and gives the numpy function's numbers exactly.
        an, bn = a.numpy(), b.numpy()
        vals = [[_ssim_channel(an[i, ch], bn[i, ch]) for ch in range(an.shape[1])] for i in range(an.shape[0])]
        return torch.tensor(vals, dtype=torch.float64).mean(dim=1)
    return _ssim_torch_any_device(a, b)


def _ssim_torch_any_device(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of float64 0-255 batches with torch ops only (GPU path)."""
    # All five local statistics filtered in one go: (5, N, C, H, W).
    stats = _gaussian_valid(torch.stack([a, b, a * a, b * b, a * b]))
    mu1, mu2 = stats[0], stats[1]
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = stats[2] - mu1_sq
    s2 = stats[3] - mu2_sq
    s12 = stats[4] - mu12
    ssim_map = ((2 * mu12 + _C1) * (2 * s12 + _C2)) / ((mu1_sq + mu2_sq + _C1) * (s1 + s2 + _C2))
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)  # per channel, then over channels


# ----------------------------------------------------------------------------------- video aggregation
@dataclass
class ClipScores:
    """Per-frame scores of one clip (``metrics[name][i]`` belongs to ``frames[i]``)."""

    name: str
    frames: list[str] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def add(self, frame: str, **values: float) -> None:
        if self.frames and set(values) != set(self.metrics):
            raise ValueError(f"clip {self.name}: frame {frame} has metrics {sorted(values)}, expected {sorted(self.metrics)}")
        self.frames.append(frame)
        for key, v in values.items():
            self.metrics.setdefault(key, []).append(float(v))

    def mean(self, metric: str) -> float:
        """Mean over the clip's frames."""
        vals = self.metrics.get(metric, [])
        return float(np.mean(vals)) if vals else math.nan


@dataclass
class VideoScores:
    """Scores of a dataset of clips: per frame, mean per clip, and the mean of the clip means.

    The dataset score is the mean of clip means (each clip counts once, whatever its length), which
    is how Vid4 / REDS4 / Vimeo-90K results are reported.
    """

    clips: dict[str, ClipScores] = field(default_factory=dict)

    def clip(self, name: str) -> ClipScores:
        if name not in self.clips:
            self.clips[name] = ClipScores(name)
        return self.clips[name]

    def add(self, clip: str, frame: str, **values: float) -> None:
        self.clip(clip).add(frame, **values)

    @property
    def metric_names(self) -> list[str]:
        names: list[str] = []
        for c in self.clips.values():
            names += [k for k in c.metrics if k not in names]
        return names

    def mean(self, metric: str) -> float:
        means = [c.mean(metric) for c in self.clips.values() if c.metrics.get(metric)]
        return float(np.mean(means)) if means else math.nan

    def frame_mean(self, metric: str) -> float:
        """Mean over all frames of all clips (long clips weigh more); reported for reference."""
        vals = [v for c in self.clips.values() for v in c.metrics.get(metric, [])]
        return float(np.mean(vals)) if vals else math.nan

    def to_dict(self) -> dict:
        """JSON-ready summary: per-clip means, per-frame values, dataset means."""
        names = self.metric_names
        return {
            "mean": {m: self.mean(m) for m in names},
            "frame_mean": {m: self.frame_mean(m) for m in names},
            "clips": {
                c.name: {
                    "mean": {m: c.mean(m) for m in names},
                    "frames": c.frames,
                    "per_frame": {m: c.metrics.get(m, []) for m in names},
                }
                for c in self.clips.values()
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> "VideoScores":
        scores = cls()
        for name, c in data.get("clips", {}).items():
            clip = scores.clip(name)
            clip.frames = list(c["frames"])
            clip.metrics = {m: [float(v) for v in vals] for m, vals in c["per_frame"].items()}
        return scores

