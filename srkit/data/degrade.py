"""Degradation models: how low-resolution inputs are made from high-resolution frames.

Three families, as the literature names them:

* **BI** — MATLAB bicubic downsampling (:func:`bicubic_downsample`), the default of EDVR/BasicVSR on
  REDS and Vimeo-90K.
* **BD** — Gaussian blur (13x13, sigma ``0.4 * scale``: 1.6 at x4) followed by taking every
  ``scale``-th pixel (:func:`bd_downsample`), the DUF protocol used for Vid4-BD / Vimeo-90K-BD.
  Borders are reflected (``dcb|abcd|cba``, OpenCV's BORDER_REFLECT_101) and the samples kept are
  rows/columns ``0, s, 2s, ...``: the sampling grid of DUF's downsampler (as BasicSR's
  ``duf_downsample``, whose reflect pad + strided conv + 2-pixel crop reduce to exactly this).
  ``variant="matlab"`` is the other BD found in the literature, BasicSR's MATLAB script
  ``generate_LR_Vimeo90K_BD.m`` (the Vimeo-90K / Vid4 BD sets of BasicVSR, IconVSR, BasicVSR++):
  ``fspecial('gaussian', 2*ceil(3*sigma)+2, sigma)`` (12x12 at sigma 1.6, centred between pixels),
  ``imfilter(..., 'replicate')``, then rows/columns ``s/2, s/2 + s, ...`` (1-based), i.e. every LR
  pixel sits at the centre of its ``s x s`` block. The two grids differ by 1.5 HR pixels at x4: a
  model trained on one and tested on the other loses PSNR, so pick the one the benchmark used.
* **DN** — BI followed by additive white Gaussian noise of a given level (:class:`DNDegradation`), the
  second degradation the UDVD paper reports (after RDN's BI / BD / DN protocols). Its samples carry the
  condition maps of a non-blind model: no blur beyond the bicubic downscaling
  (:data:`srkit.data.conditions.DEFAULT_BLUR`, as for BI) and the sample's noise level.
* **SRMD** — the general model of SRMD (Zhang et al., CVPR 2018) used by UDVD (Xu et al., CVPR 2020):
  ``y = bicubic_down(x (*) k) + n`` with a random isotropic or anisotropic Gaussian ``k`` and AWGN ``n``
  (optionally JPEG after). Non-blind models are told the degradation through 16 maps: the 15-D PCA code
  of ``k`` and the noise level, stretched over the LR image (:func:`degradation_maps`).

Frames are float32 HxWxC in [0, 1] unless a function says otherwise. A :class:`Degradation` applies the
SAME random degradation (kernel, noise level, JPEG quality) to every frame of a clip — a video has one
camera — while the noise realisation differs per frame, as sensor noise does.

PCA codes: ``code = P @ vec(k)`` with ``P`` the shipped ``(15, 225)`` basis (rows orthonormal), computed
by ``scripts/compute_pca_basis.py`` without mean-centring, as SRMD's ``get_pca_matrix``: the first
component then carries the kernel's mean shape and ``P.T @ code`` reconstructs ``k`` directly.
Noise map value: ``sigma / 255`` (so sigma 75 -> 0.294), SRMD's normalisation.
Other bases are selectable wherever codes are made (``pca_basis`` / ``basis`` arguments, the
``pca_basis`` parameter of the DN and SRMD degradations): ``"srmd"``, SRMD's own procedure
(:func:`srmd_pca_basis`: 500 anisotropic kernels, kernels flattened column-major, principal component
last), or a MATLAB ``.mat`` file of SRMD / KAIR (:func:`load_pca_mat`), so that the maps are those a
model trained with SRMD's or KAIR's tools was given.
"""

from __future__ import annotations

import dataclasses
import math
import os
from functools import lru_cache
from importlib import resources
from typing import Callable, NamedTuple, Protocol, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from srkit.data.imresize import imresize, imresize_torch
from srkit.errors import ConfigError

__all__ = [
    "PCA_DIM",
    "KERNEL_SIZE",
    "SRMD_BLUR_RANGES",
    "bicubic_downsample",
    "bicubic_downsample_torch",
    "bd_downsample",
    "bd_downsample_torch",
    "BD_VARIANTS",
    "gaussian_kernel",
    "random_srmd_kernel",
    "blur",
    "blur_torch",
    "srmd_degrade_torch",
    "add_gaussian_noise",
    "jpeg_compress",
    "load_pca_basis",
    "load_pca_mat",
    "srmd_pca_basis",
    "srmd_layout_to_srkit",
    "srkit_layout_to_srmd",
    "PCA_BASES",
    "DEFAULT_PCA_BASIS",
    "kernel_to_code",
    "code_to_kernel",
    "degradation_maps",
    "srmd_degrade",
    "spatially_variant_degrade",
    "DegradedSample",
    "Degradation",
    "BIDegradation",
    "BDDegradation",
    "DNDegradation",
    "SRMDDegradation",
    "make_degradation",
    "DegradationEntry",
    "DEGRADATIONS",
]

PCA_DIM = 15
KERNEL_SIZE = 15
# SRMD's isotropic kernel width (sigma) ranges per scale factor.
SRMD_BLUR_RANGES: dict[int, tuple[float, float]] = {2: (0.2, 2.0), 3: (0.2, 3.0), 4: (0.2, 4.0)}
# SRMD: anisotropic covariance eigenvalues lambda1, lambda2 ~ U(0.5, 6), rotation ~ U(0, pi).
SRMD_ANISO_EIGEN_RANGE = (0.5, 6.0)
SRMD_NOISE_RANGE = (0.0, 75.0)
# The widest Gaussian the degradation maps describe: their 15 codes project the 15x15 kernel on a PCA
# basis of SRMD's kernels, whose widths end here (x4); wider blurs are not represented (1e6 encodes
# as a box filter), so a model would be told something else than the option says.
MAX_BLUR_WIDTH = max(hi for _, hi in SRMD_BLUR_RANGES.values())
# "No blur beyond the bicubic downscaling" as the condition maps describe it: SRMD's smallest x4 kernel
# width (BI, DN). Re-exported as srkit.data.conditions.DEFAULT_BLUR (defined here so DN's samples can
# carry their maps without this module importing that one).
DEFAULT_BLUR = 0.2


def check_blur_width(value: float, option: str = "--blur") -> None:
    """Refuse a Gaussian width (HR pixels) the degradation maps cannot describe."""
    if not (math.isfinite(value) and 0 < value <= MAX_BLUR_WIDTH):
        raise ConfigError(f"{option} must be a Gaussian width in (0, {MAX_BLUR_WIDTH:g}] HR pixels (the degradation "
                          f"maps cannot describe wider blurs), got {value:g}")


# ----------------------------------------------------------------------------------------------------
# BI / BD
# ----------------------------------------------------------------------------------------------------
def bicubic_downsample(img: np.ndarray, scale: int) -> np.ndarray:
    """BI: MATLAB ``imresize(img, 1/scale, 'bicubic')`` (antialiased). dtype is preserved."""
    return imresize(img, 1.0 / scale)


def bicubic_downsample_torch(x: torch.Tensor, scale: int) -> torch.Tensor:
    """BI for a batch ``(..., H, W)`` on any device (equal to :func:`bicubic_downsample` within 1e-5)."""
    return imresize_torch(x, 1.0 / scale)


@lru_cache(maxsize=16)
def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(r * r) / (2.0 * sigma * sigma))
    g = g / g.sum()
    g.setflags(write=False)
    return g


def bd_kernel(kernel_size: int = 13, sigma: float = 1.6) -> np.ndarray:
    """The BD blur: a sampled 2-D Gaussian, normalised to sum 1 (``kernel_size`` x ``kernel_size``)."""
    g = _gaussian_1d(int(kernel_size), float(sigma))
    return np.outer(g, g)


BD_VARIANTS = ("duf", "matlab")


def _matlab_bd_size(sigma: float) -> int:
    # generate_LR_Vimeo90K_BD.m: kernelsize = ceil(sigma * 3) * 2 + 2 (even: centred between pixels).
    return int(math.ceil(sigma * 3)) * 2 + 2


def _bd_plan(scale: int, sigma: float | None, kernel_size: int | None, variant: str) -> tuple[np.ndarray, int, int]:
    """``(1-D kernel g, centre c, first sample)``: ``out(y) = sum_i g[i] x(y + i - c)``, kept at
    ``first, first + scale, ...``. Validates every argument (ValueError, one line)."""
    if variant not in BD_VARIANTS:
        raise ValueError(f"BD variant must be one of {', '.join(BD_VARIANTS)}, got {variant!r}")
    sigma = _bd_sigma(scale, sigma)
    if variant == "duf":
        size = 13 if kernel_size is None else int(kernel_size)
        _check_bd(scale, sigma, size)
        return _gaussian_1d(size, float(sigma)), size // 2, 0
    size = _matlab_bd_size(sigma) if kernel_size is None else int(kernel_size)
    if scale < 2 or int(scale) != scale or scale % 2:
        raise ValueError(f"BD variant 'matlab' samples at s/2 : s and needs an even scale, got {scale}")
    if size < 2 or size % 2:
        raise ValueError(f"BD variant 'matlab' uses an even kernel (centred between pixels), got {size}")
    if sigma <= 0:
        raise ValueError(f"BD sigma must be positive, got {sigma}")
    # MATLAB's imfilter centre of an even kernel is floor((k+1)/2) (1-based): k/2 - 1 here.
    return _gaussian_1d(size, float(sigma)), size // 2 - 1, scale // 2 - 1


def _bd_sigma(scale: int, sigma: float | None) -> float:
    # DUF ties the blur to the scale: sigma = 0.4 * scale (1.6 at x4, the published BD setting).
    return 0.4 * scale if sigma is None else float(sigma)


def _check_bd(scale: int, sigma: float, kernel_size: int) -> None:
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"BD scale must be a positive integer, got {scale}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"BD kernel_size must be odd, got {kernel_size}")
    if sigma <= 0:
        raise ValueError(f"BD sigma must be positive, got {sigma}")


def bd_downsample(img: np.ndarray, scale: int = 4, sigma: float | None = None, kernel_size: int | None = None,
                  variant: str = "duf") -> np.ndarray:
    """BD: Gaussian blur then subsampling (see the module docstring for the two ``variant`` grids).

    ``"duf"`` (default): ``kernel_size`` (default 13) reflect-101 borders, keep ``[0::scale, 0::scale]``,
    output ``ceil(H/scale) x ceil(W/scale)``. ``"matlab"``: BasicSR's MATLAB BD script, even kernel
    (default ``2*ceil(3*sigma)+2``), replicated borders, keep ``[s/2-1::s]`` (0-based), output
    ``floor(H/scale) x floor(W/scale)``. ``sigma`` defaults to ``0.4 * scale`` (1.6 at x4).
    uint8 in -> uint8 out (rounded half up), float in -> float32 out.
    """
    g64, c, first = _bd_plan(scale, sigma, kernel_size, variant)
    img = np.asarray(img)
    g = g64.astype(np.float32)
    x = img.astype(np.float32)
    if variant == "duf":
        # Separable filter: two 1-D passes (the 2-D Gaussian is their outer product).
        blurred = cv2.sepFilter2D(x, -1, g, g, borderType=cv2.BORDER_REFLECT_101)
        if blurred.ndim == 2 and img.ndim == 3:
            blurred = blurred[:, :, None]
        out = blurred[::scale, ::scale]
    else:
        h, w = img.shape[:2]
        if h < scale or w < scale:
            raise ValueError(f"BD: image {w}x{h} smaller than the scale {scale}")
        k = g.size
        pad = ((c, k - 1 - c), (c, k - 1 - c)) + ((0, 0),) * (x.ndim - 2)
        xp = np.pad(x, pad, mode="edge")  # imfilter 'replicate'
        # anchor (0, 0): out(y) = sum_i g[i] xp(y + i) = sum_i g[i] x(y + i - c); only rows/columns
        # whose taps lie inside the padded image are kept, so OpenCV's own border never enters.
        blurred = cv2.sepFilter2D(xp, -1, g, g, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
        if blurred.ndim == 2 and img.ndim == 3:
            blurred = blurred[:, :, None]
        out = blurred[first : first + scale * (h // scale) : scale, first : first + scale * (w // scale) : scale]
    if np.issubdtype(img.dtype, np.integer):
        peak = float(np.iinfo(img.dtype).max)
        return np.floor(np.clip(out, 0, peak) + 0.5).astype(img.dtype)
    return np.ascontiguousarray(out, dtype=np.float32)


def bd_downsample_torch(x: torch.Tensor, scale: int = 4, sigma: float | None = None, kernel_size: int | None = None,
                        variant: str = "duf") -> torch.Tensor:
    """BD for a float batch ``(..., H, W)`` on any device; equals :func:`bd_downsample` (float32)."""
    g64, c, first = _bd_plan(scale, sigma, kernel_size, variant)
    k = g64.size
    shape = x.shape
    h, w = shape[-2:]
    g = torch.tensor(g64, dtype=x.dtype, device=x.device)
    y = x.reshape(-1, 1, h, w)
    if variant == "matlab":
        if h < scale or w < scale:
            raise ValueError(f"BD: image {w}x{h} smaller than the scale {scale}")
        # Replicate pad, drop the rows/columns before the first sample, strided 'valid' correlation.
        y = F.pad(y, (c, k - 1 - c, c, k - 1 - c), mode="replicate")[..., first:, first:]
        y = F.conv2d(y, g.view(1, 1, -1, 1), stride=(scale, 1))[..., : h // scale, :]
        y = F.conv2d(y, g.view(1, 1, 1, -1), stride=(1, scale))[..., : w // scale]
        return y.reshape(*shape[:-2], y.shape[-2], y.shape[-1])
    pad = c
    if pad >= h or pad >= w:
        raise ValueError(f"BD: image {h}x{w} too small for kernel {k} (reflect padding)")
    y = F.pad(y, (pad, pad, pad, pad), mode="reflect")  # torch "reflect" == OpenCV BORDER_REFLECT_101
    # Subsample inside the convolutions (stride): only the kept pixels are computed.
    y = F.conv2d(y, g.view(1, 1, -1, 1), stride=(scale, 1))
    y = F.conv2d(y, g.view(1, 1, 1, -1), stride=(1, scale))
    return y.reshape(*shape[:-2], y.shape[-2], y.shape[-1])


# ----------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------
def gaussian_kernel(size: int = 15, sigma_x: float = 2.0, sigma_y: float | None = None, theta: float = 0.0) -> np.ndarray:
    """A (possibly anisotropic, rotated) Gaussian blur kernel, ``size x size`` float32 summing to 1.

    ``sigma_x``/``sigma_y`` are the standard deviations (pixels) along the kernel's own axes;
    ``theta`` (radians) rotates the ``x`` axis counter-clockwise (image rows grow downwards, so the
    rotation is in (column, -row) coordinates). ``sigma_y=None`` gives an isotropic kernel. The centre is
    the middle pixel (``size`` should be odd).
    """
    if size < 1:
        raise ValueError(f"kernel size must be positive, got {size}")
    sigma_y = sigma_x if sigma_y is None else sigma_y
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"kernel widths must be positive, got {sigma_x}, {sigma_y}")
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    inv = np.linalg.inv(cov)
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    xx, yy = np.meshgrid(r, -r)  # x to the right, y up
    pts = np.stack([xx, yy], axis=-1)
    expo = -0.5 * np.einsum("...i,ij,...j->...", pts, inv, pts)
    k = np.exp(expo)
    return (k / k.sum()).astype(np.float32)


def random_srmd_kernel(rng: np.random.Generator, scale: int, *, anisotropic: bool = False, size: int = KERNEL_SIZE) -> np.ndarray:
    """Draw a blur kernel from SRMD's training distribution for ``scale``.

    Isotropic: sigma ~ U(SRMD_BLUR_RANGES[scale]) (x2: [0.2, 2], x3: [0.2, 3], x4: [0.2, 4]).
    Anisotropic: covariance eigenvalues ~ U(0.5, 6) each (widths sqrt(.) in [0.71, 2.45]) and rotation
    theta ~ U(0, pi), as SRMD's paper describes.
    """
    if anisotropic:
        lo, hi = SRMD_ANISO_EIGEN_RANGE
        l1, l2 = rng.uniform(lo, hi, size=2)
        theta = rng.uniform(0.0, math.pi)
        return gaussian_kernel(size, math.sqrt(l1), math.sqrt(l2), theta)
    lo, hi = _blur_range(scale)
    return gaussian_kernel(size, float(rng.uniform(lo, hi)))


def _blur_range(scale: int) -> tuple[float, float]:
    if scale in SRMD_BLUR_RANGES:
        return SRMD_BLUR_RANGES[scale]
    # Other scales: SRMD's rule is [0.2, scale] (it lists x2..x4); keep it, capped so 15x15 still holds it.
    return (0.2, float(min(max(scale, 1), 4)))


def blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every channel of float ``img`` with ``kernel`` (replicated borders, as SRMD's imfilter)."""
    k = np.asarray(kernel, dtype=np.float32)
    # cv2.filter2D correlates; flipping makes it a true convolution (same for symmetric Gaussians).
    out = cv2.filter2D(np.asarray(img, dtype=np.float32), -1, k[::-1, ::-1].copy(), borderType=cv2.BORDER_REPLICATE)
    if out.ndim == 2 and np.ndim(img) == 3:
        out = out[:, :, None]
    return out


# ----------------------------------------------------------------------------------------------------
# Noise and compression
# ----------------------------------------------------------------------------------------------------
def add_gaussian_noise(img: np.ndarray, sigma_255: float | np.ndarray, rng: np.random.Generator, *, clip: bool = False) -> np.ndarray:
    """Additive white Gaussian noise of standard deviation ``sigma_255 / 255`` on a float [0, 1] image.

    ``sigma_255`` may be an ``HxW`` map (spatially variant noise). Values are not clipped by default:
    SRMD/UDVD train on unclipped AWGN, which is what the noise-level map describes.
    """
    img = np.asarray(img, dtype=np.float32)
    sigma = np.asarray(sigma_255, dtype=np.float32) / 255.0
    if sigma.ndim == 2 and img.ndim == 3:
        sigma = sigma[:, :, None]
    out = img + rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.clip(out, 0.0, 1.0) if clip else out


def jpeg_compress(img: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through a baseline JPEG at ``quality`` (1-100). dtype is preserved (float -> [0, 1]).

    The image is clipped and quantised to 8 bits first, as a real encoder sees it.
    """
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    img = np.asarray(img)
    is_float = np.issubdtype(img.dtype, np.floating)
    if is_float:
        u8 = np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif img.dtype == np.uint8:
        u8 = img
    elif img.dtype == np.uint16:  # baseline JPEG is 8-bit: quantise, and scale back after decoding
        u8 = np.floor(img / 257.0 + 0.5).astype(np.uint8)
    else:
        raise ValueError(f"jpeg_compress: unsupported dtype {img.dtype}")
    squeeze = u8.ndim == 3 and u8.shape[2] == 1
    src = u8[:, :, 0] if squeeze else u8
    if src.ndim == 3:
        src = cv2.cvtColor(src, cv2.COLOR_RGB2BGR)  # JPEG's YCbCr transform is not channel-symmetric
    ok, buf = cv2.imencode(".jpg", src, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 images
        raise RuntimeError("JPEG encoding failed")
    dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if dec.ndim == 3:
        dec = cv2.cvtColor(dec, cv2.COLOR_BGR2RGB)
    elif squeeze or img.ndim == 3:
        dec = dec[:, :, None]
    if is_float:
        return dec.astype(np.float32) / 255.0
    return dec.astype(np.uint16) * 257 if img.dtype == np.uint16 else dec


# ----------------------------------------------------------------------------------------------------
# PCA codes and degradation maps
# ----------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _basis() -> np.ndarray:
    ref = resources.files("srkit") / "assets" / "srmd_pca_15.npy"
    with resources.as_file(ref) as path:
        basis = np.load(path, allow_pickle=False).astype(np.float32)
    if basis.shape != (PCA_DIM, KERNEL_SIZE * KERNEL_SIZE):
        raise RuntimeError(f"srkit/assets/srmd_pca_15.npy has shape {basis.shape}, expected (15, 225)")
    basis.setflags(write=False)
    return basis


# Named PCA bases (``pca_basis`` options). "srkit": the shipped basis (scripts/compute_pca_basis.py,
# srkit's kernel distribution, principal component first). "srmd": the SRMD/KAIR procedure
# (:func:`srmd_pca_basis`: 500 anisotropic kernels, fixed seed). A path to a MATLAB ``.mat`` file
# (SRMD's ``PCA_P.mat``, KAIR's ``srmd_pca_*.mat``, or one written by KAIR's ``cal_pca_matrix``) or to a
# ``.npy`` file in srkit's layout names a basis too (:func:`load_pca_basis`).
PCA_BASES = ("srkit", "srmd")
DEFAULT_PCA_BASIS = "srkit"
# The SRMD/KAIR procedure's parameters (KAIR utils_sisr.cal_pca_matrix).
SRMD_PCA_SAMPLES = 500
SRMD_PCA_L_MAX = 12.0
SRMD_PCA_SEED = 0
# Variable names under which SRMD / KAIR store the matrix in .mat files (SRMD: P; KAIR: p).
_MAT_KEYS = ("P", "p", "PCA_matrix", "pca_matrix", "PCA_P")

def srmd_layout_to_srkit(basis: np.ndarray) -> np.ndarray:
    """A ``(d, k*k)`` basis for kernels flattened *column-major* (SRMD/KAIR: MATLAB's ``k(:)``, numpy
    ``reshape(-1, order="F")``) as the equal basis for srkit's row-major ``k.reshape(-1)``."""
    b = np.asarray(basis)
    d, n = b.shape
    k = math.isqrt(n)
    return np.ascontiguousarray(b.reshape(d, k, k).transpose(0, 2, 1).reshape(d, n))


def srkit_layout_to_srmd(basis: np.ndarray) -> np.ndarray:
    """Inverse of :func:`srmd_layout_to_srkit` (the transposition is its own inverse)."""
    return srmd_layout_to_srkit(basis)


def kair_anisotropic_gaussian(ksize: int, theta: float, l1: float, l2: float) -> np.ndarray:
    """KAIR's ``anisotropic_Gaussian`` (float64, sums to 1): covariance ``V diag(l1, l2) V^-1`` with
    ``v = R(theta) [1, 0]``, ``V = [[v0, v1], [v1, -v0]]``, evaluated at ``(x - c, y - c)`` for pixel
    ``k[y, x]``, ``c = ksize / 2 - 0.5``. ``l1``, ``l2`` are covariance eigenvalues (variances)."""
    v = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]) @ np.array([1.0, 0.0])
    V = np.array([[v[0], v[1]], [v[1], -v[0]]])
    sigma = V @ np.diag([l1, l2]) @ np.linalg.inv(V)
    inv = np.linalg.inv(sigma)
    r = np.arange(ksize, dtype=np.float64) - (ksize / 2.0 - 0.5)
    cx, cy = np.meshgrid(r, r)  # cx varies along columns (x), cy along rows (y)
    d = np.stack([cx, cy], axis=-1)
    k = np.exp(-0.5 * np.einsum("...i,ij,...j->...", d, inv, d))
    return k / k.sum()


def srmd_pca_basis(num_samples: int = SRMD_PCA_SAMPLES, seed: int | None = SRMD_PCA_SEED, *,
                   ksize: int = KERNEL_SIZE, l_max: float = SRMD_PCA_L_MAX, dim: int = PCA_DIM,
                   layout: str = "srkit") -> np.ndarray:
    """The PCA basis by SRMD's procedure (KAIR ``utils_sisr.cal_pca_matrix``, the UDVD notes' code).

    ``num_samples`` anisotropic Gaussians ``ksize x ksize`` with ``theta = pi U``, ``l1 = 0.1 + l_max U``,
    ``l2 = 0.1 + (l1 - 0.1) U`` (U ~ U(0, 1), drawn in that order per kernel from
    ``np.random.RandomState(seed)``: the draws of ``np.random.seed(seed); np.random.rand(1)`` as the
    code makes them), flattened column-major into the columns of ``X``; the basis rows are the
    eigenvectors of ``X X^T`` for the ``dim`` largest eigenvalues, in the code's order (``v[:, -dim:].T``:
    ascending eigenvalue, the principal component LAST). Computed in float64, returned float32.

    Eigenvector signs are not defined by the procedure (LAPACK's choice); here each row is made
    deterministic: its first entry of magnitude >= 0.1 x the row's largest is positive. A model trained
    on a basis file made elsewhere needs that very file (:func:`load_pca_mat`), not a recomputation.

    ``layout="srkit"`` (default) returns it for srkit's row-major kernels (``code = P @ k.reshape(-1)``,
    what :func:`kernel_to_code` uses); ``"srmd"`` in SRMD's own layout (``code = P @ k.reshape(-1, order="F")``).
    """
    if layout not in ("srkit", "srmd"):
        raise ValueError(f"layout must be 'srkit' or 'srmd', got {layout!r}")
    rs = np.random.RandomState(seed)
    x = np.empty((ksize * ksize, int(num_samples)), dtype=np.float64)
    for i in range(int(num_samples)):
        theta = math.pi * rs.rand()
        l1 = 0.1 + l_max * rs.rand()
        l2 = 0.1 + (l1 - 0.1) * rs.rand()
        x[:, i] = kair_anisotropic_gaussian(ksize, theta, l1, l2).reshape(-1, order="F")
    _, vecs = np.linalg.eigh(x @ x.T)  # ascending eigenvalues
    basis = vecs[:, -dim:].T.copy()
    for row in basis:
        big = np.abs(row) >= 0.1 * np.abs(row).max()
        if row[np.argmax(big)] < 0:
            row *= -1
    if layout == "srkit":
        basis = srmd_layout_to_srkit(basis)
    return basis.astype(np.float32)


@lru_cache(maxsize=1)
def _srmd_basis() -> np.ndarray:
    basis = srmd_pca_basis()
    basis.setflags(write=False)
    return basis


def load_pca_mat(path: "str | os.PathLike", key: str | None = None, *, layout: str = "srmd") -> np.ndarray:
    """A ``(15, 225)`` PCA basis from a MATLAB ``.mat`` file, returned in srkit's layout.

    The file's matrix is read in SRMD's layout (kernels flattened column-major, as SRMD's MATLAB
    ``PCA_P.mat`` variable ``P``, KAIR's ``srmd_pca_*.mat`` variable ``p`` and ``cal_pca_matrix``'s output)
    unless ``layout="srkit"``; a ``(225, 15)`` matrix is transposed. ``key`` names the variable; by
    default the first of P, p, PCA_matrix, pca_matrix, PCA_P present, else the file's only 2-D array.
    Needs scipy (``pip install scipy``); MATLAB v7.3 (HDF5) files are not read (re-save with ``-v7``).
    """
    from pathlib import Path

    path = Path(os.fspath(path))
    try:
        from scipy import io as sio
    except ImportError:
        raise ConfigError(f"reading the PCA basis {path}: .mat files need scipy (pip install scipy)") from None
    if not path.is_file():
        raise ConfigError(f"PCA basis file not found: {path}")
    try:
        data = sio.loadmat(str(path))
    except NotImplementedError:
        raise ConfigError(f"PCA basis {path}: MATLAB v7.3 (HDF5) .mat files are not supported; "
                          "re-save it with save(..., '-v7')") from None
    except Exception as exc:  # noqa: BLE001 - scipy raises several types for unreadable files
        raise ConfigError(f"PCA basis {path}: not a readable .mat file ({exc})") from None
    arrays = {k: v for k, v in data.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
    if key is not None:
        if key not in arrays:
            raise ConfigError(f"PCA basis {path}: no variable {key!r} (has: {', '.join(arrays) or 'none'})")
        name = key
    else:
        known = [k for k in _MAT_KEYS if k in arrays]
        matrices = [k for k, v in arrays.items() if v.ndim == 2 and np.issubdtype(v.dtype, np.number)]
        if known:
            name = known[0]
        elif len(matrices) == 1:
            name = matrices[0]
        else:
            raise ConfigError(f"PCA basis {path}: cannot tell which variable is the basis "
                              f"(has: {', '.join(arrays) or 'none'}); name it (key=...)")
    basis = np.asarray(arrays[name], dtype=np.float64)
    if basis.shape == (KERNEL_SIZE * KERNEL_SIZE, PCA_DIM):
        basis = basis.T
    _check_basis(basis, f"PCA basis {path} ({name})")
    if layout == "srmd":
        basis = srmd_layout_to_srkit(basis)
    elif layout != "srkit":
        raise ValueError(f"layout must be 'srkit' or 'srmd', got {layout!r}")
    return basis.astype(np.float32)


def _check_basis(basis: np.ndarray, what: str) -> None:
    if basis.shape != (PCA_DIM, KERNEL_SIZE * KERNEL_SIZE):
        raise ConfigError(f"{what}: expected a ({PCA_DIM}, {KERNEL_SIZE * KERNEL_SIZE}) matrix "
                          f"(15 codes of 15x15 kernels), got {basis.shape}")
    if not np.all(np.isfinite(basis)):
        raise ConfigError(f"{what}: contains non-finite values")


@lru_cache(maxsize=8)
def _file_basis(path: str, mtime_ns: int) -> np.ndarray:
    if path.lower().endswith(".mat"):
        basis = load_pca_mat(path)
    else:
        try:
            basis = np.load(path, allow_pickle=False).astype(np.float32)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"PCA basis {path}: not a readable .npy file ({exc})") from None
        _check_basis(basis, f"PCA basis {path}")
    basis.setflags(write=False)
    return basis


def load_pca_basis(basis: "str | os.PathLike | np.ndarray | None" = None) -> np.ndarray:
    """The ``(15, 225)`` PCA projection for 15x15 kernels, in srkit's layout (``code = P @ k.reshape(-1)``).

    ``basis``: None or ``"srkit"`` -- the shipped basis (orthonormal rows); ``"srmd"`` -- SRMD's procedure
    (:func:`srmd_pca_basis`); a path to a MATLAB ``.mat`` file in SRMD's layout (:func:`load_pca_mat`) or
    to a ``.npy`` file in srkit's layout; or a ``(15, 225)`` array in srkit's layout (returned as is).
    The bases of names and files are computed or read once (files again when they change).
    """
    if basis is None or (isinstance(basis, str) and basis.lower() == "srkit"):
        return _basis()
    if isinstance(basis, str) and basis.lower() == "srmd":
        return _srmd_basis()
    if isinstance(basis, np.ndarray):
        _check_basis(basis, "PCA basis")
        return basis.astype(np.float32, copy=False)
    if isinstance(basis, (str, os.PathLike)):
        path = os.fspath(basis)
        if not path.lower().endswith((".mat", ".npy")):
            raise ConfigError(f"pca_basis must be one of {', '.join(PCA_BASES)} or a .mat / .npy file, got {path!r}")
        if not os.path.isfile(path):
            raise ConfigError(f"PCA basis file not found: {path}")
        return _file_basis(os.path.abspath(path), os.stat(path).st_mtime_ns)
    raise ConfigError(f"pca_basis must be one of {', '.join(PCA_BASES)}, a .mat / .npy file or an array, "
                      f"got {type(basis).__name__}")


def basis_key(basis: "str | os.PathLike | np.ndarray | None") -> "str | None":
    """A hashable name of a basis option (for caches); None for arrays (not cached)."""
    if basis is None:
        return DEFAULT_PCA_BASIS
    if isinstance(basis, str) and basis.lower() in PCA_BASES:
        return basis.lower()
    if isinstance(basis, (str, os.PathLike)):
        return os.path.abspath(os.fspath(basis))
    return None


def _as_15x15(kernel: np.ndarray) -> np.ndarray:
    k = np.asarray(kernel, dtype=np.float32)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
        raise ValueError(f"kernel must be square with odd size, got shape {k.shape}")
    n = k.shape[0]
    if n > KERNEL_SIZE:
        # Larger support: the outer ring must be negligible to be representable.
        m = (n - KERNEL_SIZE) // 2
        inner = k[m : m + KERNEL_SIZE, m : m + KERNEL_SIZE]
        if float(np.abs(k).sum() - np.abs(inner).sum()) > 1e-3 * float(np.abs(k).sum()):
            raise ValueError(f"kernel of size {n} has significant mass outside the central 15x15")
        return inner / inner.sum()
    if n < KERNEL_SIZE:
        m = (KERNEL_SIZE - n) // 2
        k = np.pad(k, m)
    return k


def kernel_to_code(kernel: np.ndarray, basis: "str | os.PathLike | np.ndarray | None" = None) -> np.ndarray:
    """The 15-D PCA code of a blur kernel (odd size <= 15, or larger with negligible outer mass).

    ``basis``: which PCA basis (:func:`load_pca_basis`; default srkit's shipped one).
    """
    return (load_pca_basis(basis) @ _as_15x15(kernel).reshape(-1)).astype(np.float32)


def code_to_kernel(code: np.ndarray, basis: "str | os.PathLike | np.ndarray | None" = None) -> np.ndarray:
    """Approximate 15x15 kernel from its code (``P.T @ code``); not renormalised, not clipped."""
    code = np.asarray(code, dtype=np.float32).reshape(PCA_DIM)
    return (load_pca_basis(basis).T @ code).reshape(KERNEL_SIZE, KERNEL_SIZE)


def degradation_maps(code: np.ndarray, noise_sigma_255: float | np.ndarray, height: int, width: int) -> np.ndarray:
    """``(16, height, width)`` float32 condition maps: 15 PCA codes, then ``sigma / 255``.

    ``code`` is ``(15,)`` (one kernel for the image) or ``(15, height, width)`` (per pixel);
    ``noise_sigma_255`` a scalar or an ``(height, width)`` map, in 0-255 units.
    """
    code = np.asarray(code, dtype=np.float32)
    noise = np.asarray(noise_sigma_255, dtype=np.float32) / 255.0
    maps = np.empty((PCA_DIM + 1, height, width), dtype=np.float32)
    if code.shape == (PCA_DIM,):
        maps[:PCA_DIM] = code[:, None, None]
    elif code.shape == (PCA_DIM, height, width):
        maps[:PCA_DIM] = code
    else:
        raise ValueError(f"code must be (15,) or (15, {height}, {width}), got {code.shape}")
    if noise.ndim == 0 or noise.shape == (height, width):
        maps[PCA_DIM] = noise
    else:
        raise ValueError(f"noise must be a scalar or ({height}, {width}), got {noise.shape}")
    return maps


# ----------------------------------------------------------------------------------------------------
# SRMD general degradation
# ----------------------------------------------------------------------------------------------------
def srmd_degrade(
    hr: np.ndarray,
    kernel: np.ndarray,
    noise_sigma_255: float,
    scale: int,
    rng: np.random.Generator,
    *,
    jpeg_quality: int | None = None,
) -> np.ndarray:
    """SRMD's ``y = bicubic_down(x (*) k) + n`` on an HxWxC image (float [0, 1], or integer, which is
    scaled to [0, 1]), then optional JPEG. Returns float32.

    Blur with replicated borders then MATLAB bicubic ``1/scale``, as SRMD's MATLAB data generation.
    With ``jpeg_quality`` the noisy image is clipped, quantised and JPEG round-tripped.
    """
    x = _as_float_frames([hr])[0]  # integer images -> [0, 1] (noise is in 0-255 units of that range)
    lr = bicubic_downsample(blur(x, kernel), scale).astype(np.float32)
    if noise_sigma_255 > 0:
        lr = add_gaussian_noise(lr, noise_sigma_255, rng)
    if jpeg_quality is not None:
        lr = jpeg_compress(lr, jpeg_quality)
    return lr


def blur_torch(x: torch.Tensor, kernels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Per-sample convolution of ``x`` ``(N, C, H, W)`` with ``kernels`` ``(N, k, k)`` (or one ``(k, k)``).

    Replicated borders, true convolution: equal to :func:`blur` frame by frame. One grouped conv for
    the whole batch, so every sample of a GPU batch can have its own kernel.
    """
    n, c, h, w = x.shape
    k = torch.as_tensor(kernels, dtype=x.dtype, device=x.device)
    if k.ndim == 2:
        k = k.expand(n, *k.shape)
    if k.ndim != 3 or k.shape[0] != n or k.shape[1] != k.shape[2] or k.shape[1] % 2 == 0:
        raise ValueError(f"kernels must be (k, k) or ({n}, k, k) with odd k, got {tuple(k.shape)}")
    r = k.shape[-1] // 2
    weight = torch.flip(k, dims=(-2, -1)).repeat_interleave(c, dim=0).unsqueeze(1)  # (N*C, 1, k, k)
    y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="replicate")
    return F.conv2d(y, weight, groups=n * c).reshape(n, c, h, w)


def srmd_degrade_torch(
    x: torch.Tensor,
    kernels: torch.Tensor | np.ndarray,
    noise_sigma_255: float | torch.Tensor,
    scale: int,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Batched :func:`srmd_degrade` (without JPEG) for ``(N, C, H, W)`` float batches on any device.

    ``kernels``: one ``(k, k)`` or per sample ``(N, k, k)``; ``noise_sigma_255``: a number or ``(N,)``.
    """
    lr = imresize_torch(blur_torch(x, kernels), 1.0 / scale)
    sigma = torch.as_tensor(noise_sigma_255, dtype=lr.dtype, device=lr.device).reshape(-1, 1, 1, 1) / 255.0
    if torch.any(sigma > 0):
        noise = torch.randn(lr.shape, generator=generator, dtype=lr.dtype, device=lr.device)
        lr = lr + noise * sigma
    return lr


KernelField = Callable[[float, float], np.ndarray]


def spatially_variant_degrade(
    hr: np.ndarray,
    kernels: np.ndarray | KernelField,
    noise_sigma_255: float | np.ndarray,
    scale: int,
    rng: np.random.Generator,
    *,
    pca_basis: str | os.PathLike | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Spatially variant SRMD degradation; returns ``(lr, maps)`` with ``maps`` ``(16, h, w)``.

    ``pca_basis`` chooses the basis of the maps' kernel codes (:func:`load_pca_basis`).

    ``kernels`` is given on the LR grid, ``h = ceil(H/scale)``, ``w = ceil(W/scale)``: either an array
    ``(h, w, k, k)`` or a function ``field(v, u) -> (k, k)`` of the LR pixel centre's relative position
    ``v, u`` in [0, 1] (top-left 0, bottom-right 1). HR pixel ``(Y, X)`` is blurred by the kernel of
    LR pixel ``(Y // scale, X // scale)`` — ``out(Y,X) = sum_ij k[i,j] x(Y - i + r, X - j + r)``
    with replicated borders — then the image is bicubic-downsampled and noise of per-LR-pixel level
    ``noise_sigma_255`` (scalar or ``(h, w)``) is added. ``maps`` holds each LR pixel's kernel code and
    noise level, exactly what a non-blind model (UDVD) needs to undo it.
    """
    x = _as_float_frames([hr])[0]
    if x.ndim == 2:
        x = x[:, :, None]
    H, W = x.shape[:2]
    h, w = math.ceil(H / scale), math.ceil(W / scale)
    if callable(kernels):
        vs = np.linspace(0.0, 1.0, h) if h > 1 else np.zeros(1)
        us = np.linspace(0.0, 1.0, w) if w > 1 else np.zeros(1)
        field = np.stack([np.stack([np.asarray(kernels(float(v), float(u)), dtype=np.float32) for u in us]) for v in vs])
    else:
        field = np.asarray(kernels, dtype=np.float32)
    if field.ndim != 4 or field.shape[:2] != (h, w) or field.shape[2] != field.shape[3] or field.shape[2] % 2 == 0:
        raise ValueError(f"kernel field must be ({h}, {w}, k, k) with odd k for a {H}x{W} image at x{scale}, got {field.shape}")
    k = field.shape[2]
    r = k // 2
    # Each HR pixel takes the kernel of its LR cell (nearest): index maps instead of a repeated copy.
    ry = np.minimum(np.arange(H) // scale, h - 1)
    rx = np.minimum(np.arange(W) // scale, w - 1)
    padded = np.pad(x, ((r, r), (r, r), (0, 0)), mode="edge")
    out = np.zeros_like(x)
    for i in range(k):
        for j in range(k):
            weight = field[:, :, i, j][ry][:, rx]  # (H, W)
            # Convolution: tap (i, j) reads x at offset (r - i, r - j).
            shifted = padded[2 * r - i : 2 * r - i + H, 2 * r - j : 2 * r - j + W]
            out += weight[:, :, None] * shifted
    lr = bicubic_downsample(out, scale).astype(np.float32)
    noise = np.asarray(noise_sigma_255, dtype=np.float32)
    if np.any(noise > 0):
        lr = add_gaussian_noise(lr, noise, rng)
    basis = load_pca_basis(pca_basis)
    codes = np.stack([kernel_to_code(field[a, b], basis) for a in range(h) for b in range(w)]).reshape(h, w, PCA_DIM)
    maps = degradation_maps(np.ascontiguousarray(codes.transpose(2, 0, 1)), noise, h, w)
    return (lr[:, :, 0:1] if np.ndim(hr) == 2 else lr), maps


# ----------------------------------------------------------------------------------------------------
# Clip-level degradations
# ----------------------------------------------------------------------------------------------------
class DegradedSample(NamedTuple):
    """LR frames (float32 HxWxC) and, for non-blind degradations, their ``(16, h, w)`` maps."""

    lr: list[np.ndarray]
    maps: np.ndarray | None
    params: dict = {}


class Degradation(Protocol):
    """``deg(frames, rng) -> DegradedSample``; one random draw per call, shared by all frames."""

    scale: int

    def __call__(self, frames: Sequence[np.ndarray], rng: np.random.Generator) -> DegradedSample: ...


def _as_float_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for f in frames:
        f = np.asarray(f)
        if np.issubdtype(f.dtype, np.integer):
            f = f.astype(np.float32) / float(np.iinfo(f.dtype).max)
        out.append(f.astype(np.float32, copy=False))
    return out


def _draw(value: float | tuple[float, float] | None, rng: np.random.Generator) -> float | None:
    if value is None or np.isscalar(value):
        return value  # type: ignore[return-value]
    lo, hi = value  # type: ignore[misc]
    return float(rng.uniform(lo, hi))


def _draw_quality(q: int | tuple[int, int] | None, rng: np.random.Generator) -> int | None:
    if q is None or np.isscalar(q):
        return None if q is None else int(q)  # type: ignore[arg-type]
    lo, hi = q  # type: ignore[misc]
    return int(rng.integers(int(lo), int(hi) + 1))


@dataclasses.dataclass
class BIDegradation:
    """MATLAB bicubic ``1/scale`` (+ optional AWGN ``noise`` and JPEG ``jpeg_quality``, fixed or ranges).

    Float frames are resized in float; uint8/uint16 frames in their own class (rounded after each
    pass, as MATLAB), so the LR is exactly the quantised benchmark LR. Output frames are float32.
    """

    scale: int = 4
    noise: float | tuple[float, float] | None = None
    jpeg_quality: int | tuple[int, int] | None = None

    def _down(self, f: np.ndarray) -> np.ndarray:
        return bicubic_downsample(f, self.scale)

    def __call__(self, frames: Sequence[np.ndarray], rng: np.random.Generator) -> DegradedSample:
        sigma = _draw(self.noise, rng)
        q = _draw_quality(self.jpeg_quality, rng)
        lr = []
        for f in frames:
            f = np.asarray(f)
            if np.issubdtype(f.dtype, np.integer):
                # Resize in the image's own class, as MATLAB does on uint8 images: the LR then equals
                # the benchmark LR files (made by imresize on uint8 and stored as PNG) bit for bit.
                y = self._down(f).astype(np.float32) / float(np.iinfo(f.dtype).max)
            else:
                y = self._down(f.astype(np.float32, copy=False)).astype(np.float32)
            if sigma:
                y = add_gaussian_noise(y, sigma, rng, clip=True)
            if q is not None:
                y = jpeg_compress(y, q)
            lr.append(y)
        return DegradedSample(lr, None, {"noise": sigma, "jpeg_quality": q})


@dataclasses.dataclass
class BDDegradation(BIDegradation):
    """Gaussian blur (``sigma``, default ``0.4 * scale``; ``kernel_size``) then subsampling on the
    ``variant`` grid: ``"duf"`` (13x13, ``[0::scale]``) or ``"matlab"`` (BasicSR's MATLAB BD script,
    block centres) (+ optional noise/JPEG)."""

    sigma: float | None = None
    kernel_size: int | None = None
    variant: str = "duf"

    def __post_init__(self) -> None:
        try:  # a bad variant/size/scale fails when the degradation is built, not in a DataLoader worker
            _bd_plan(self.scale, self.sigma, self.kernel_size, self.variant)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _down(self, f: np.ndarray) -> np.ndarray:
        return bd_downsample(f, self.scale, self.sigma, self.kernel_size, self.variant)


@lru_cache(maxsize=8)
def _no_blur_code_cached(key: str) -> np.ndarray:
    code = kernel_to_code(gaussian_kernel(KERNEL_SIZE, DEFAULT_BLUR), key)
    code.setflags(write=False)
    return code


def _no_blur_code(basis: "str | os.PathLike | np.ndarray | None" = None) -> np.ndarray:
    """PCA code of "no blur beyond the bicubic downscaling": the Gaussian of width DEFAULT_BLUR, the
    blur the condition maps describe for BI inputs (:func:`srkit.data.conditions.assumed_blur`)."""
    key = basis_key(basis)
    if key is None:
        return kernel_to_code(gaussian_kernel(KERNEL_SIZE, DEFAULT_BLUR), basis)
    return _no_blur_code_cached(key)


def _check_pca_basis_option(basis: object, what: str) -> None:
    """Resolve a degradation's ``pca_basis`` when it is built (a bad name or file fails there, once)."""
    if basis is None:
        return
    if not isinstance(basis, (str, os.PathLike)):
        raise ConfigError(f"{what}: pca_basis must be {' or '.join(PCA_BASES)} or a .mat / .npy file, got {basis!r}")
    try:
        load_pca_basis(basis)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None


@dataclasses.dataclass
class DNDegradation:
    """DN: BI (MATLAB bicubic ``1/scale``, in the frames' own integer class as :class:`BIDegradation`)
    then additive white Gaussian noise of level ``noise`` (0-255 units; a number, or a ``(lo, hi)`` range
    drawn once per clip), optionally JPEG after.

    The noise is :func:`add_gaussian_noise` on the float BI frame with the clip's generator, one
    realisation per frame, NOT clipped by default (``clip=True`` clips to [0, 1]): unclipped AWGN is
    what the noise-level map describes and what SRMD/UDVD train on. The samples carry the 16 condition
    maps (non-blind models, UDVD): the PCA code of no blur beyond the bicubic (``DEFAULT_BLUR``) and
    the drawn level. ``noise`` has no default: a DN without a level would silently be BI.
    ``pca_basis``: the basis of the maps' kernel codes (:func:`load_pca_basis`; None: srkit's).
    """

    scale: int = 4
    noise: float | tuple[float, float] | None = None
    clip: bool = False
    jpeg_quality: int | tuple[int, int] | None = None
    pca_basis: str | None = None

    def __post_init__(self) -> None:
        _check_pca_basis_option(self.pca_basis, "degradation DN")
        # Checked when built (a training config, `srkit eval`), not inside a DataLoader worker.
        n = self.noise
        if n is None:
            raise ConfigError("degradation DN needs a noise level (0-255 units): noise: 15, or a range such as "
                              "[0, 50] (srkit eval: --noise 15; a level of 0 is BI)")
        values = [n] if np.isscalar(n) else list(n)  # type: ignore[arg-type]
        ok = len(values) in (1, 2) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                           and math.isfinite(v) and 0 <= v <= 255 for v in values)
        if not ok or (len(values) == 2 and values[0] > values[1]):
            raise ConfigError(f"degradation DN: noise must be a level in 0..255 (0-255 units) or a range "
                              f"[lo, hi] within it, got {n!r}")
        if not np.isscalar(n):
            self.noise = (float(values[0]), float(values[1]))

    def __call__(self, frames: Sequence[np.ndarray], rng: np.random.Generator) -> DegradedSample:
        sigma = float(_draw(self.noise, rng))  # type: ignore[arg-type]
        q = _draw_quality(self.jpeg_quality, rng)
        lr = BIDegradation(self.scale)(frames, rng).lr  # plain BI: draws nothing from rng
        if sigma > 0:
            lr = [add_gaussian_noise(f, sigma, rng, clip=self.clip) for f in lr]
        if q is not None:
            lr = [jpeg_compress(f, q) for f in lr]
        h, w = lr[0].shape[:2]
        maps = degradation_maps(_no_blur_code(self.pca_basis), sigma, h, w)
        return DegradedSample(lr, maps, {"noise": sigma, "jpeg_quality": q})


@dataclasses.dataclass
class SRMDDegradation:
    """SRMD/UDVD general degradation with its 16 condition maps.

    ``blur``: fixed isotropic sigma, a ``(lo, hi)`` range, or None for SRMD's range for ``scale``.
    ``anisotropic_prob``: probability of an anisotropic kernel instead (ignored when ``blur`` is fixed).
    ``noise``: fixed sigma (0-255) or range (SRMD: [0, 75]). ``jpeg_quality``: None, fixed, or range.
    ``pca_basis``: the basis of the maps' kernel codes: None (srkit's), ``"srmd"`` (SRMD's procedure) or
    a ``.mat`` / ``.npy`` file (:func:`load_pca_basis`).
    """

    scale: int = 4
    blur: float | tuple[float, float] | None = None
    anisotropic_prob: float = 0.0
    noise: float | tuple[float, float] = SRMD_NOISE_RANGE
    jpeg_quality: int | tuple[int, int] | None = None
    kernel_size: int = KERNEL_SIZE
    pca_basis: str | None = None

    def __post_init__(self) -> None:
        _check_pca_basis_option(self.pca_basis, "degradation SRMD")

    def draw_kernel(self, rng: np.random.Generator) -> np.ndarray:
        if self.blur is not None and np.isscalar(self.blur):
            return gaussian_kernel(self.kernel_size, float(self.blur))  # type: ignore[arg-type]
        if self.anisotropic_prob > 0 and rng.random() < self.anisotropic_prob:
            return random_srmd_kernel(rng, self.scale, anisotropic=True, size=self.kernel_size)
        lo, hi = self.blur if self.blur is not None else _blur_range(self.scale)  # type: ignore[misc]
        return gaussian_kernel(self.kernel_size, float(rng.uniform(lo, hi)))

    def __call__(self, frames: Sequence[np.ndarray], rng: np.random.Generator) -> DegradedSample:
        kernel = self.draw_kernel(rng)
        sigma = float(_draw(self.noise, rng) or 0.0)
        q = _draw_quality(self.jpeg_quality, rng)
        lr = [srmd_degrade(f, kernel, sigma, self.scale, rng, jpeg_quality=q) for f in _as_float_frames(frames)]
        h, w = lr[0].shape[:2]
        maps = degradation_maps(kernel_to_code(kernel, self.pca_basis), sigma, h, w)
        return DegradedSample(lr, maps, {"kernel": kernel, "noise": sigma, "jpeg_quality": q})


@dataclasses.dataclass(frozen=True)
class DegradationEntry:
    """A registered degradation: the class that applies it and what a conditioned model is told of it."""

    cls: type
    # Kind of condition maps its samples carry (``DegradedSample.maps``), named as the
    # ``ModelSpec.condition`` of the models that take them; None: no maps. "degradation" is SRMD's 16
    # maps (:mod:`srkit.data.conditions`).
    condition: str | None = None
    # Its blur as a Gaussian width (HR pixels) at a scale, when its default parameters fix one: what maps
    # built without a sample (LR frames from disk) assume. None: no blur, or a random one.
    blur_width: Callable[[int], float] | None = None


DEGRADATIONS: dict[str, DegradationEntry] = {
    "BI": DegradationEntry(BIDegradation),
    "BD": DegradationEntry(BDDegradation, blur_width=lambda scale: _bd_sigma(scale, None)),
    # Its maps: no blur beyond the bicubic (blur_width None -> conditions.DEFAULT_BLUR) + its noise level.
    "DN": DegradationEntry(DNDegradation, condition="degradation"),
    "SRMD": DegradationEntry(SRMDDegradation, condition="degradation"),
}


def make_degradation(name: str, scale: int, **params) -> Degradation:
    """Build a clip degradation by name: ``"BI"``, ``"BD"``, ``"DN"`` or ``"SRMD"`` (case-insensitive).

    ``params`` are the fields of :class:`BIDegradation`, :class:`BDDegradation`, :class:`DNDegradation`
    or :class:`SRMDDegradation` (e.g. ``make_degradation("SRMD", 4, blur=1.6, noise=15)``,
    ``make_degradation("DN", 4, noise=30)``).
    Unknown names or parameters raise :class:`~srkit.errors.ConfigError`.
    """
    key = str(name).upper()
    if key not in DEGRADATIONS:
        raise ConfigError(f"unknown degradation {name!r} (use {', '.join(DEGRADATIONS)})")
    cls = DEGRADATIONS[key].cls
    known = {f.name for f in dataclasses.fields(cls)} - {"scale"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"degradation {key}: unknown parameter(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if int(scale) != scale or scale < 1:
        raise ConfigError(f"degradation scale must be a positive integer, got {scale}")
    return cls(scale=int(scale), **params)
