"""MATLAB-compatible ``imresize`` (bicubic), in numpy and batched torch.

Super-resolution benchmarks (Set5/14, Vid4, REDS4, Vimeo-90K BI) build their low-resolution inputs
with MATLAB's ``imresize(img, 1/4, 'bicubic')``; PSNR differences of 0.01-0.05 dB between papers often
come from resizers that differ from it (OpenCV and PIL use other kernels, centres and borders). This
module reproduces MATLAB's algorithm (``imresize.m`` / ``imresizemex``):

* cubic kernel with ``a = -0.5`` (Keys), support 4;
* when shrinking (scale < 1) and ``antialias`` is on, the kernel is widened by ``1/scale`` and scaled
  by ``scale`` (so it low-passes before subsampling);
* output pixel ``x`` (1-based) maps to input ``u = x/scale + 0.5*(1 - 1/scale)``; the taps are
  ``floor(u - width/2) + 0 .. ceil(width)+1``, weights normalised to sum 1 per output pixel;
* out-of-range taps are mirrored symmetrically (``1..n, n..1`` repeated), and tap columns that are
  zero for every output pixel are dropped (it matters only for which border samples are read);
* output size ``ceil(in * scale)``; when only ``output_shape`` is given, each dimension uses its own
  ``out/in`` scale;
* the dimension with the smaller scale (larger reduction) is resized first; ties: rows first;
* ``uint8`` input: MATLAB's mex works in the image class, so the result of EACH one-dimensional pass is
  rounded (half away from zero) and saturated to 0..255 before the next pass. Python ports that round
  only at the end (BasicSR, MMagic) differ from MATLAB by one grey level on a few pixels; this one does
  not. Float input stays float (no clipping: bicubic overshoots, as in MATLAB).

Each one-dimensional pass applies MATLAB's per-pixel weights. For integer factors (x1/s, xs: the
super-resolution cases) the weights repeat with the output position, so numpy applies them as a
polyphase filter on strided views (``taps`` multiply-adds per output sample); other factors, and the
torch version (batched, any device), multiply by a dense ``(out, in)`` weight matrix (GEMM).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

__all__ = ["cubic", "imresize", "imresize_torch", "resize_weights", "resize_matrix", "output_size"]


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``), support [-2, 2]."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


def _raw_weights(in_length: int, out_length: int, scale: float, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Normalised weights and 0-based tap indices BEFORE mirroring (may be < 0 or >= in_length)."""
    kernel_width = 4.0
    shrink = scale < 1 and antialias
    if shrink:
        kernel_width = kernel_width / scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based, may be out of range
    dist = u[:, None] - indices
    weights = scale * cubic(scale * dist) if shrink else cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    return weights, indices.astype(np.int64) - 1


def _mirror(idx: np.ndarray, in_length: int) -> np.ndarray:
    # Symmetric mirroring: the sequence 1..n, n..1 repeats (MATLAB: aux(mod(k-1, 2n) + 1)).
    aux = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    return aux[np.mod(idx, 2 * in_length)]


def resize_weights(in_length: int, out_length: int, scale: float, antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's ``contributions``: ``(weights, indices)``, both ``(out_length, P)``, 0-based indices.

    Row ``i`` says which input samples (after symmetric mirroring) output sample ``i`` mixes, and how.
    """
    weights, raw = _raw_weights(in_length, out_length, scale, antialias)
    idx = _mirror(raw, in_length)
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], idx[:, keep]


@lru_cache(maxsize=64)
def _periodic_plan(in_length: int, out_length: int, scale: float, antialias: bool):
    """For integer factors (x1/s down, xs up) MATLAB's weights repeat: a polyphase filter.

    Returns ``(period, step, weights (period, P), offsets (period, P))`` meaning
    ``out[period*k + r] = sum_t weights[r, t] * x[mirror(step*k + offsets[r, t])]``, or None when the
    weights are not periodic (non-integer factors; the dense matrix is used then). Periodicity is
    VERIFIED on MATLAB's own per-pixel weights, never assumed, so both paths give the same numbers.
    """
    if scale < 1:
        factor = round(1.0 / scale)
        period, step = 1, factor
    else:
        factor = round(scale)
        period, step = factor, 1
    if factor < 2 or abs(factor * (scale if scale < 1 else 1.0 / scale) - 1.0) > 1e-12 or out_length < period:
        return None
    weights, raw = _raw_weights(in_length, out_length, scale, antialias)
    k = np.arange(out_length) // period
    r = np.arange(out_length) % period
    base_w, base_i = weights[:period].copy(), raw[:period].copy()
    if np.abs(weights - base_w[r]).max() > 1e-12 or np.any(raw - step * k[:, None] != base_i[r]):
        return None
    base_w[np.abs(base_w) < 1e-300] = 0.0
    return period, step, base_w, base_i


def _resize_axis0_periodic(x: np.ndarray, out_length: int, plan, dtype: type) -> np.ndarray:
    """Apply a polyphase plan along axis 0 with strided views of ``x`` (no padded copy).

    Interior outputs read only in-range samples: one multiply-add per tap over a strided view.
    The few outputs near the ends, whose taps fall outside, gather their mirrored samples.
    """
    period, step, w, offsets = plan
    n = x.shape[0]
    out = np.empty((out_length,) + x.shape[1:], dtype=dtype)
    tmp = None
    for r in range(period):
        count = len(range(r, out_length, period))
        taps = [t for t in range(w.shape[1]) if w[r, t] != 0.0]
        offs = offsets[r, taps]
        # k such that every tap index step*k + off lies in [0, n-1]
        k_lo = max(0, max(-(int(off) // step) for off in offs))  # ceil(-off / step)
        k_hi = min(count, min((n - 1 - off) // step + 1 for off in offs))
        if k_hi > k_lo:
            dst = out[r + period * k_lo : r + period * (k_hi - 1) + 1 : period]
            for j, t in enumerate(taps):
                start = step * k_lo + int(offsets[r, t])
                view = x[start : start + step * (k_hi - k_lo - 1) + 1 : step]
                if j == 0:
                    np.multiply(view, w[r, t], out=dst)
                else:
                    if tmp is None or tmp.shape != dst.shape:
                        tmp = np.empty_like(dst)
                    np.multiply(view, w[r, t], out=tmp)
                    dst += tmp
        else:
            k_lo = k_hi = 0
        for k in list(range(0, min(k_lo, count))) + list(range(max(k_hi, k_lo), count)):
            idx = _mirror(step * k + offs, n)
            out[r + period * k] = np.tensordot(w[r, taps], x[idx], axes=(0, 0))
    return out


@lru_cache(maxsize=64)
def _matrix_cached(in_length: int, out_length: int, scale: float, antialias: bool) -> np.ndarray:
    weights, idx = resize_weights(in_length, out_length, scale, antialias)
    mat = np.zeros((out_length, in_length), dtype=np.float64)
    rows = np.repeat(np.arange(out_length), idx.shape[1])
    # Mirrored taps can hit the same input sample twice: accumulate, never overwrite.
    np.add.at(mat, (rows, idx.ravel()), weights.ravel())
    mat.setflags(write=False)
    return mat


def resize_matrix(in_length: int, out_length: int, scale: float, antialias: bool = True) -> np.ndarray:
    """Dense ``(out_length, in_length)`` float64 matrix applying one MATLAB bicubic pass."""
    return _matrix_cached(int(in_length), int(out_length), float(scale), bool(antialias))


def output_size(
    in_shape: tuple[int, int], scale: float | tuple[float, float] | None, output_shape: tuple[int, int] | None
) -> tuple[tuple[float, float], tuple[int, int]]:
    """Per-dimension ``(scales, out_shape)`` as MATLAB derives them."""
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize: give exactly one of scale and output_shape")
    if output_shape is not None:
        out = (int(output_shape[0]), int(output_shape[1]))
        if min(out) < 1:
            raise ValueError(f"imresize: output_shape must be positive, got {output_shape}")
        return (out[0] / in_shape[0], out[1] / in_shape[1]), out
    scales = (float(scale), float(scale)) if np.isscalar(scale) else (float(scale[0]), float(scale[1]))  # type: ignore[index]
    if min(scales) <= 0:
        raise ValueError(f"imresize: scale must be positive, got {scale}")
    # MATLAB: ceil(scale * size), in the same IEEE double arithmetic.
    out = tuple(max(1, int(math.ceil(s * n))) for s, n in zip(scales, in_shape))
    return scales, out  # type: ignore[return-value]


@lru_cache(maxsize=64)
def _torch_matrix(
    in_length: int, out_length: int, scale: float, antialias: bool, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    # Cached per device/dtype: rebuilding and uploading the matrix would dominate small-frame resizes.
    mat = resize_matrix(in_length, out_length, scale, antialias)
    return torch.tensor(mat, dtype=dtype, device=device)


def _order(scales: tuple[float, float]) -> list[int]:
    # MATLAB: [~, order] = sort(scale) — stable, so equal scales keep rows (dim 0) first.
    return [0, 1] if scales[0] <= scales[1] else [1, 0]


def imresize(
    img: np.ndarray,
    scale: float | tuple[float, float] | None = None,
    *,
    output_shape: tuple[int, int] | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """Resize ``img`` (HxW or HxWxC) exactly like MATLAB's ``imresize(img, scale, 'bicubic')``.

    ``uint8``/``uint16`` in -> same dtype out (each pass rounded half away from zero and saturated, as
    MATLAB). Float in -> same float dtype out (float32/float16 computed in float32, others in float64).
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize: expected HxW or HxWxC, got shape {img.shape}")
    scales, out_shape = output_size(img.shape[:2], scale, output_shape)
    dtype = img.dtype
    integer = np.issubdtype(dtype, np.integer)
    peak = float(np.iinfo(dtype).max) if integer else None
    # float32 images are resized in float32 (2x faster GEMMs; ~1e-7 relative difference, far below
    # image precision). Integer images need float64 so that MATLAB's rounding of each pass is exact.
    work = np.float32 if dtype in (np.float32, np.float16) else np.float64
    x = img
    for dim in _order(scales):
        if x.shape[dim] == out_shape[dim] and scales[dim] == 1.0:
            continue  # MATLAB skips a dimension whose scale is exactly 1
        plan = _periodic_plan(x.shape[dim], out_shape[dim], scales[dim], antialias)
        if plan is not None:
            # Integer factor: polyphase filter on strided views, ~10x fewer operations than the GEMM
            # (reads integer images directly: no float copy of the input).
            moved = np.moveaxis(x, dim, 0)
            x = np.moveaxis(_resize_axis0_periodic(moved, out_shape[dim], plan, work), 0, dim)
        else:
            x = x.astype(work, copy=False)
            mat = resize_matrix(x.shape[dim], out_shape[dim], scales[dim], antialias).astype(work, copy=False)
            x = np.tensordot(mat, x, axes=([1], [dim]))  # resized axis comes first
            x = np.moveaxis(x, 0, dim)
        if integer:
            x = np.floor(np.clip(x, 0.0, peak) + 0.5)
    if integer:
        return x.astype(dtype)
    return x.astype(dtype if np.issubdtype(dtype, np.floating) else np.float64)


def imresize_torch(
    x: torch.Tensor,
    scale: float | tuple[float, float] | None = None,
    *,
    output_shape: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Batched MATLAB bicubic resize of the last two dimensions of ``x`` (``(..., H, W)``), any device.

    Float tensors are resized in their dtype (float32 agrees with :func:`imresize` within 1e-5 on
    [0, 1] data); ``uint8`` tensors are resized in float32 with MATLAB's per-pass rounding.
    """
    if x.ndim < 2:
        raise ValueError(f"imresize_torch: expected (..., H, W), got shape {tuple(x.shape)}")
    scales, out_shape = output_size(tuple(x.shape[-2:]), scale, output_shape)
    integer = not torch.is_floating_point(x)
    work_dtype = torch.float32 if integer else x.dtype
    if work_dtype in (torch.float16, torch.bfloat16):
        work_dtype = torch.float32  # half-precision accumulation would lose MATLAB agreement
    peak = float(torch.iinfo(x.dtype).max) if integer else None
    y = x.to(work_dtype)
    for dim in _order(scales):
        if y.shape[-2 + dim] == out_shape[dim] and scales[dim] == 1.0:
            continue
        mat = _torch_matrix(y.shape[-2 + dim], out_shape[dim], scales[dim], antialias, y.device, work_dtype)
        if dim == 0:
            y = torch.matmul(mat, y)  # (out, H) @ (..., H, W)
        else:
            y = torch.matmul(y, mat.t())  # (..., H, W) @ (W, out)
        if integer:
            y = torch.floor(y.clamp(0.0, peak) + 0.5)
    return y.to(x.dtype)
