"""Modulated deformable convolution (DCNv1 / DCNv2) in PyTorch, with an optional compiled CPU inference kernel.

:func:`deform_conv2d` has exactly the signature, semantics and tensor layout of
``torchvision.ops.deform_conv2d``, so checkpoints and offset-predicting convolutions written for
torchvision, mmcv or BasicSR work unchanged, but it needs no compiled extension and runs on any device
PyTorch supports (CPU, CUDA, MPS), under autocast, through autograd and through ONNX export.

How it works (and why it is fast on CPU)
----------------------------------------
A deformable convolution is "sample the input at ``K = kh * kw`` shifted positions per output pixel,
then apply an ordinary convolution to the samples".  The sampling is bilinear with zero padding
outside the image, which is precisely ``F.grid_sample(mode="bilinear", padding_mode="zeros")``.
So the whole op is:

1. turn the offsets into a sampling grid for every (deformable group, tap, output pixel) -- one fused
   elementwise pass, in float32 even under autocast because coordinates need the precision;
2. one ``grid_sample`` call per batch that samples every channel of a deformable group at its group's
   grid: the result, shaped ``(N * dg, C / dg, K * Ho, Wo)``, *is* the im2col column matrix
   ``(N, Cin * K, Ho * Wo)`` in the weight's ``(Cin, kh, kw)`` order, with no copy;
3. multiply by the modulation mask (DCNv2, in place when the mask needs no gradient) and do ONE
   matmul ``(Cout, Cin*K) @ (Cin*K, Ho*Wo)`` per sample and convolution group (the bias folded into
   it when autograd is off).

``grid_sample`` is a multithreaded, vectorised kernel with an analytic backward on every backend, and
ONNX has ``GridSample`` since opset 16, so the same code exports.  The only custom backward is the
DCNv2 GEMM's (:class:`_ModulatedGEMM`), which keeps one copy of the columns instead of two.

On CPU without autograd, when srkit's compiled im2col builds here (:mod:`srkit.ops.native`), steps 1-3's
sampling, masking, cast and layout changes are one pass of that kernel writing the GEMM's columns
(:func:`_deform_conv2d_fused`); everything below describes the PyTorch path, which serves everywhere else.

Without autograd (:func:`_deform_conv2d_no_grad`) a batch is processed a few samples at a time, and
large frames in bands of output rows, so the column matrix stays under ``_INFERENCE_COLS_BYTES`` and
in cache; the GEMM runs transposed (``cols^T @ W^T``, ~1.7x faster on CPU BLAS) straight into the
output, which is channels_last when the input is.  Channels_last inputs, offsets and masks are read
through views and blocked transposes rather than strided gathers.

Precision: sampling coordinates are always computed in float32 (or float64), also under autocast.
The matmul follows autocast, except on CPUs without native bf16/fp16 (oneDNN would emulate it ~50x
slower): there it runs in float32 and the result is returned in autocast's dtype.  When the offset
gradient is needed the image is zero-padded to power-of-two sizes so that integer sample positions
survive the normalised-coordinate round trip exactly (see the comment in :func:`deform_conv2d`).

Border rule: torchvision's CPU kernel returns 0 for a sample with ``y <= -1 or y >= H`` (same for x)
and otherwise blends the four neighbours, each neighbour outside the image counting as 0.  That is
bilinear interpolation of the zero-padded image, which is what ``padding_mode="zeros"`` computes,
including the gradients with respect to the sampling position.  One deliberate difference:
a non-finite offset gives a non-finite output here (torchvision silently samples 0), so diverging
offsets surface instead of hiding; :class:`OffsetMonitor` reports them.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.modules.utils import _pair

from srkit.ops import native
from srkit.utils.device import is_channels_last

__all__ = ["deform_conv2d", "ModulatedDeformConv2d", "OffsetMonitor"]

logger = logging.getLogger("srkit.ops.deform_conv")

_LOW_PRECISION = (torch.float16, torch.bfloat16)
# Inference processes the batch in pieces, and large frames in bands of output rows, whose column
# matrix stays below this many bytes (a hard cap on the op's peak memory) ...
_INFERENCE_COLS_BYTES = 256 << 20
# ... and below this many bytes per intra-op thread, so that the columns grid_sample writes are
# still in cache when the mask multiply and the GEMM read them.  Measured on a 2-core AVX2 EPYC
# (EDVR-M level 1, 64 ch at 320x180, 133 MB of columns): one thread, 16 MB bands take half the CPU
# time of a single pass; with two threads 32 MB bands are ~10-25% faster (smaller bands lose to
# fork/join overhead when the cores are shared).
_CACHE_BAND_BYTES_PER_THREAD = 16 << 20
# The compiled im2col's bands (one pass writes the columns, the GEMM reads them) are best at half that:
# EDVR-M level 1 on a 2-core AMX Xeon, channels_last, 8 vs 16 MB per thread: fp32 48.2 vs 53.2 ms,
# bf16 33.5 vs 34.2 ms (4 MB: 49.9 / 35.2).
_FUSED_BAND_BYTES_PER_THREAD = 8 << 20


# Offsets moved as (dy, dx) pairs: an integer type of the pair's size (see _deform_conv2d_no_grad).
_PAIR_DTYPES = {torch.float32: torch.int64, torch.bfloat16: torch.int32, torch.float16: torch.int32}


def _inference_budget(per_thread: int | None = None) -> int:
    per_thread = _CACHE_BAND_BYTES_PER_THREAD if per_thread is None else per_thread
    return min(_INFERENCE_COLS_BYTES, per_thread * max(1, torch.get_num_threads()))


class _ModulatedGEMM(torch.autograd.Function):
    """``out = W @ (cols * mask)`` per convolution group, keeping one column matrix's worth of memory
    for backward (autograd would keep both the unmasked and the masked samples).

    cols: ``(N*dg, Cg, K*Ho, Wo)`` unmasked samples (float32 or wider); mask: ``(N*dg, 1, K*Ho, Wo)``;
    wmat: ``(G, Cout/G, Cin/G*K)`` already in ``gemm_dtype``.  Returns ``(N, G, Cout/G, Ho*Wo)`` in
    ``gemm_dtype``.  With ``gemm_dtype == cols.dtype`` only ``cols`` is saved and the masked samples are
    recomputed in backward; with a low-precision ``gemm_dtype`` (autocast on a CPU or GPU with native
    bf16/fp16) the samples and the masked samples are both kept in that dtype -- together the size of one
    float32 copy -- and the masking and its backward run in it.
    """

    @staticmethod
    def forward(ctx, cols: Tensor, mask: Tensor, wmat: Tensor, n: int, groups: int,
                gemm_dtype: torch.dtype) -> Tensor:
        ctx.n, ctx.groups = n, groups
        if gemm_dtype == cols.dtype:
            masked = cols * mask
            ctx.save_for_backward(cols, mask, wmat, None)
        else:
            # Every elementwise pass in one dtype: on CPU mixed-dtype kernels (fp32 * fp32 -> bf16 out,
            # bf16 * fp32) take slow non-vectorised loops, ~2x a cast followed by a bf16 multiply.
            cols, mask = cols.to(gemm_dtype), mask.to(gemm_dtype)
            masked = cols * mask
            ctx.save_for_backward(cols, mask, wmat, masked)
        return torch.matmul(wmat, masked.view(n, groups, wmat.shape[-1], -1))

    @staticmethod
    def backward(ctx, grad: Tensor):
        cols, mask, wmat, masked = ctx.saved_tensors
        n, groups = ctx.n, ctx.groups
        need_cols, need_mask, need_w = ctx.needs_input_grad[:3]
        grad_cols = grad_mask = grad_w = None
        # The result is cast after this Function (bf16 autocast on a CPU without native bf16 runs the
        # GEMM in float32 and returns bf16), so the gradient can arrive in another dtype.
        grad = grad.to(wmat.dtype)
        if need_w:
            if masked is None:
                masked = cols * mask
            grad_w = torch.matmul(grad, masked.view(n, groups, wmat.shape[-1], -1).transpose(-1, -2)).sum(0)
        del masked
        if need_cols or need_mask:
            g = torch.matmul(wmat.transpose(-1, -2), grad).view_as(cols)  # d loss / d (cols * mask)
            if need_mask:
                grad_mask = (g * cols).sum(1, keepdim=True)  # low precision: summed with float accumulation
            if need_cols:
                grad_cols = g.mul_(mask)  # autograd casts low-precision gradients back to the inputs' dtype
        return grad_cols, grad_mask, grad_w, None, None, None


def _autocast_low_precision(device_type: str) -> torch.dtype | None:
    """The dtype autocast would use for a matmul on this device type, or None when autocast is off."""
    if device_type not in ("cpu", "cuda", "xpu", "mps") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


@functools.lru_cache(maxsize=None)
def _native_low_precision(device_type: str, dtype: torch.dtype) -> bool:
    """Whether GEMMs in ``dtype`` are fast on this device (CPU: oneDNN reports hardware support)."""
    if device_type != "cpu":
        return True
    try:
        if dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if dtype == torch.float16:
            return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # builds without oneDNN
        return False
    return True


def _sample_dtype(input: Tensor, offset: Tensor) -> torch.dtype:
    """Sampling precision: at least float32 (coordinates need it), float64 if input or offsets are."""
    dtype = torch.promote_types(input.dtype, torch.float32)
    return dtype if offset.dtype in _LOW_PRECISION else torch.promote_types(dtype, offset.dtype)


def _low_precision_result(in_dtype: torch.dtype, low: torch.dtype | None) -> torch.dtype | None:
    """The low-precision dtype the result takes (autocast's ``low``, else a bf16/fp16 input's own),
    or None for a full-precision result.  Autocast leaves float64 alone; so do we."""
    if in_dtype == torch.float64:
        return None
    if low is not None:
        return low
    return in_dtype if in_dtype in _LOW_PRECISION else None


def _next_pow2(v: int) -> int:
    return 1 << max(int(v) - 1, 0).bit_length()


def _base_grid(
    kh: int,
    kw: int,
    out_h: int,
    out_w: int,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    in_h: int,
    in_w: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Normalised coordinates of the undeformed taps, ``(K, Ho, Wo, 2)`` in (y, x) order, and the
    per-coordinate scale ``(2,)`` that turns a pixel offset into a normalised one.

    With ``align_corners=False`` grid_sample maps a normalised coordinate ``g`` to the pixel coordinate
    ``((g + 1) * size - 1) / 2``; the inverse is ``g = (2 * p + 1) / size - 1``.  Writing the sample
    position as ``p = base + offset`` gives ``g = offset * (2 / size) + ((2 * base + 1) / size - 1)``:
    the constant part is computed here, so the per-call work is one fused multiply-add.
    """
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    # Integer-valued positions are exact in any float dtype; compute in float64 then cast once.
    ys = torch.arange(out_h, device=device, dtype=torch.float64) * sh - ph
    xs = torch.arange(out_w, device=device, dtype=torch.float64) * sw - pw
    ty = torch.arange(kh, device=device, dtype=torch.float64) * dh
    tx = torch.arange(kw, device=device, dtype=torch.float64) * dw
    gy = (2.0 * (ty[:, None] + ys[None, :]) + 1.0) / in_h - 1.0  # (kh, Ho)
    gx = (2.0 * (tx[:, None] + xs[None, :]) + 1.0) / in_w - 1.0  # (kw, Wo)
    gy = gy[:, None, :, None].expand(kh, kw, out_h, out_w)
    gx = gx[None, :, None, :].expand(kh, kw, out_h, out_w)
    base = torch.stack((gy, gx), dim=-1).reshape(kh * kw, out_h, out_w, 2).to(dtype)
    # as_tensor + stack rather than torch.tensor([...]): under tracing the sizes are traced values and
    # the scale must stay a function of them (ONNX graphs with dynamic height/width).
    scale = torch.stack([torch.as_tensor(2.0 / in_h, dtype=torch.float64, device=device),
                         torch.as_tensor(2.0 / in_w, dtype=torch.float64, device=device)]).to(dtype)
    return base, scale


@functools.lru_cache(maxsize=32)
def _cached_base_grid(*args) -> tuple[Tensor, Tensor]:
    """:func:`_base_grid`, computed once per geometry. Built outside inference mode: a grid first made
    by an inference pass (``srkit upscale``, validation) is reused by training at the same size, and
    autograd refuses to save inference tensors for backward."""
    with torch.inference_mode(False):
        return _base_grid(*args)


def _check_args(
    input: Tensor, offset: Tensor, weight: Tensor, mask: Tensor | None, out_h: int, out_w: int
) -> tuple[int, int]:
    """Validate shapes as torchvision does; returns (deformable groups, conv groups)."""
    if input.dim() != 4:
        raise ValueError(f"deform_conv2d: input must be (N, C, H, W), got shape {tuple(input.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"deform_conv2d: weight must be (Cout, Cin/groups, kh, kw), got {tuple(weight.shape)}")
    n, c = input.shape[:2]
    cout, cin_g, kh, kw = weight.shape
    k = kh * kw
    if out_h <= 0 or out_w <= 0:
        raise ValueError(
            f"deform_conv2d: output would be empty ({out_h}x{out_w}) for input {tuple(input.shape[2:])}"
        )
    if offset.dim() != 4 or offset.shape[0] != n or offset.shape[1] % (2 * k) != 0 or offset.shape[1] == 0:
        raise ValueError(
            f"deform_conv2d: offset must be (N, 2*dg*{kh}*{kw}, Ho, Wo) with N={n}, got {tuple(offset.shape)}"
        )
    if tuple(offset.shape[2:]) != (out_h, out_w):
        raise ValueError(
            f"deform_conv2d: offset spatial size {tuple(offset.shape[2:])} != output size {(out_h, out_w)}"
        )
    dg = offset.shape[1] // (2 * k)
    if c % dg != 0:
        raise ValueError(f"deform_conv2d: input channels {c} not divisible by {dg} deformable groups")
    if cin_g == 0 or c % cin_g != 0:
        raise ValueError(f"deform_conv2d: input channels {c} not divisible by weight's Cin/groups={cin_g}")
    groups = c // cin_g
    if cout % groups != 0:
        raise ValueError(f"deform_conv2d: out channels {cout} not divisible by {groups} groups")
    if mask is not None and (mask.dim() != 4 or tuple(mask.shape) != (n, dg * k, out_h, out_w)):
        raise ValueError(
            f"deform_conv2d: mask must be {(n, dg * k, out_h, out_w)} for {dg} deformable groups, "
            f"got {tuple(mask.shape)}"
        )
    return dg, groups


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = (1, 1),
    padding: int | tuple[int, int] = (0, 0),
    dilation: int | tuple[int, int] = (1, 1),
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable convolution v1 (``mask=None``) or v2 (modulated), torchvision-compatible.

    Args:
        input: ``(N, Cin, H, W)``.
        offset: ``(N, 2 * dg * kh * kw, Ho, Wo)``; for deformable group ``g`` and tap ``k = i * kw + j``
            channels ``2 * (g * K + k)`` and ``+ 1`` hold the (dy, dx) displacement in pixels.
            The number of deformable groups ``dg`` is inferred from the channel count.
        weight: ``(Cout, Cin / groups, kh, kw)``; convolution groups are inferred from ``Cin``.
        bias: ``(Cout,)`` or None.
        stride, padding, dilation: as in ``nn.Conv2d`` (int or pair).
        mask: ``(N, dg * kh * kw, Ho, Wo)`` modulation scalars, or None for DCNv1.

    Returns:
        ``(N, Cout, Ho, Wo)`` in the input's dtype (or autocast's dtype for the matmul under autocast).
    """
    stride = _pair(stride)
    padding = _pair(padding)
    dilation = _pair(dilation)
    n, c, h, w = input.shape if input.dim() == 4 else (0, 0, 0, 0)
    cout, cin_g, kh, kw = weight.shape if weight.dim() == 4 else (0, 0, 0, 0)
    out_h = (h + 2 * padding[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    out_w = (w + 2 * padding[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    if torch.jit.is_tracing():
        # Under tracing (ONNX export) shapes are traced tensors and Python-side checks only emit
        # TracerWarnings; the shapes were validated by the eager run that preceded the export.
        k_ = kh * kw
        dg = offset.shape[1] // (2 * k_)
        groups = c // cin_g
    else:
        dg, groups = _check_args(input, offset, weight, mask, out_h, out_w)
    k = kh * kw
    cg = c // dg
    tensors = (input, offset, weight, bias, mask)
    grad_needed = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)

    device_type = input.device.type
    low = _autocast_low_precision(device_type)  # looked up before autocast is switched off below
    if not grad_needed and not torch.jit.is_tracing():
        with torch.autocast(device_type=device_type, enabled=False):
            return _deform_conv2d_no_grad(input, offset, weight, bias, stride, padding, dilation, mask,
                                          dg, groups, out_h, out_w, low)

    # Sampling runs outside autocast and in at least float32: coordinates of a 1000-pixel-wide image
    # need ~1e-4 pixel resolution, which bfloat16 (8 bits of mantissa) cannot give.
    with torch.autocast(device_type=device_type, enabled=False):
        sample_dtype = _sample_dtype(input, offset)
        x = input.to(sample_dtype)
        # grid_sample works in normalised coordinates; the round trip pixel -> [-1, 1] -> pixel is
        # exact only when the image size is a power of two.  Otherwise a sample at an integer
        # position (every sample when offsets are zero, as at EDVR's initialisation) may land an ulp
        # below it, and the offset gradient takes bilinear's left derivative where torchvision's
        # kernel takes the right one.  When that gradient is needed, zero-pad the image to
        # power-of-two sizes (zeros are what "outside" means anyway) so integer positions stay exact.
        # Inference and ONNX tracing skip this: values differ only by rounding.
        hs, ws = h, w
        if offset.requires_grad and torch.is_grad_enabled() and not torch.jit.is_tracing():
            hs, ws = _next_pow2(h), _next_pow2(w)
            if (hs, ws) != (h, w):
                x = F.pad(x, (0, ws - w, 0, hs - h))
        # Tracing (ONNX export) must record the grid's construction from the input's shape, so it
        # is not taken from the cache there.
        make_base = _base_grid if torch.jit.is_tracing() else _cached_base_grid
        base, scale = make_base(kh, kw, out_h, out_w, stride, padding, dilation, hs, ws, input.device, sample_dtype)
        xt = x.reshape(n * dg, cg, hs, ws).transpose(2, 3)

        # Offsets are laid out (dy, dx); grid_sample wants (x, y) in the last dim.  Rather than
        # reorder, keep (y, x) and sample the image transposed (a free view with the same memory
        # access pattern): grid_sample's "x" then runs along H.  The grid is then a single fused
        # multiply-add over a strided view of the offsets.
        off = offset.to(sample_dtype).reshape(n, dg, k, 2, out_h, out_w).permute(0, 1, 2, 4, 5, 3)
        grid = torch.addcmul(base, off, scale).reshape(n * dg, k * out_h, out_w, 2)
        cols = F.grid_sample(xt, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        m = None if mask is None else mask.to(sample_dtype).reshape(n * dg, 1, k * out_h, out_w)
    return _finish(cols, m, weight, bias, input.dtype, low, n, groups, out_h, out_w, grad_needed,
                   mask_grad=mask is not None and mask.requires_grad).view(n, cout, out_h, out_w)


def _deform_conv2d_no_grad(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    mask: Tensor | None,
    dg: int,
    groups: int,
    out_h: int,
    out_w: int,
    low: torch.dtype | None,
) -> Tensor:
    """Inference: the same computation, a few samples or a band of output rows at a time.

    Nothing has to outlive a piece, so the column matrix (EDVR-M at 320x180: 133 MB per frame) is
    bounded by :func:`_inference_budget` and stays in cache between grid_sample, the mask multiply and
    the GEMM.  The GEMM is done transposed, ``cols^T @ W^T``: on CPU BLAS this orientation (tall
    ``P x Cin*K`` times a narrow weight) runs ~1.7x faster than ``W @ cols``, and its result is
    already in channels_last order, so each piece is written straight into the final output (no
    concatenation).  A channels_last input gives a channels_last output, as ``nn.Conv2d`` does.
    Runs with autocast off; ``low`` is autocast's dtype at the call site.
    """
    n, c, h, w = input.shape
    cout, cin_g, kh, kw = weight.shape
    k = kh * kw
    cg = c // dg
    co_g = cout // groups
    sample_dtype = _sample_dtype(input, offset)
    target = _low_precision_result(input.dtype, low)
    out_dtype = target or input.dtype
    # Without hardware bf16/fp16 the GEMM runs in float32 (see _finish) and the result is cast.
    gemm_dtype = target if target is not None and _native_low_precision(input.device.type, target) else sample_dtype
    nhwc = is_channels_last(input)
    if nhwc:
        out_nhwc = torch.empty((n, out_h, out_w, cout), dtype=out_dtype, device=input.device)
        out = out_nhwc.permute(0, 3, 1, 2)
    else:
        out_nhwc = None
        out = torch.empty((n, cout, out_h, out_w), dtype=out_dtype, device=input.device)
    if _fused_usable(input, offset, mask, groups, gemm_dtype):
        return _deform_conv2d_fused(input, offset, weight, bias, stride, padding, dilation, mask, dg, out, out_nhwc,
                                    gemm_dtype)

    x = input.to(sample_dtype)
    base, scale = _cached_base_grid(kh, kw, out_h, out_w, stride, padding, dilation, h, w, input.device, sample_dtype)
    # Weight as (Cin/G*K, Cout) per group: the right-hand side of the transposed GEMM (a view).
    wmat_t = weight.to(gemm_dtype).reshape(groups, co_g, cin_g * k).transpose(1, 2)
    b = None if bias is None else bias.to(gemm_dtype).view(groups, co_g)

    bytes_per_row = c * k * out_w * torch.finfo(sample_dtype).bits // 8  # columns of one sample's row
    budget = _inference_budget() if input.device.type == "cpu" else _INFERENCE_COLS_BYTES
    if bytes_per_row * out_h <= budget:
        samples, band = max(1, min(n, budget // (bytes_per_row * out_h))), out_h
    else:
        samples, band = 1, max(1, budget // bytes_per_row)

    # Buffers of the largest piece, reused by every piece: fresh multi-megabyte tensors per band fault
    # their pages in each time (measured on an AMX Xeon, EDVR-M bf16: the bf16 copy of a band's columns
    # took 6.4 ms into a fresh buffer against 1.8 ms into a reused one).
    pieces = min(samples, n) * dg * k * min(band, out_h) * out_w
    grid_buf = torch.empty(pieces * 2, dtype=sample_dtype, device=input.device)
    low_cols_buf = (torch.empty(pieces * cg, dtype=gemm_dtype, device=input.device)
                    if gemm_dtype != sample_dtype else None)
    # The normalised scale per (x, y) pair repeated along a row: the grid's fused multiply-add then
    # broadcasts over rows of 2*Wo contiguous values instead of over an innermost dimension of 2 (2.3x faster).
    scale_row = scale.repeat(out_w)
    for i0 in range(0, n, samples):
        ns = min(samples, n - i0)
        # (ns*dg, Cg, H, W) transposed to put W before H (see the grid comment in deform_conv2d).
        # For one channels_last sample this is a free view (grid_sample reads any strides).
        xt = x[i0:i0 + ns].reshape(ns * dg, cg, h, w).transpose(2, 3)
        for r0 in range(0, out_h, band):
            rows = min(band, out_h - r0)
            grid = grid_buf[: ns * dg * k * rows * out_w * 2].view(ns * dg, k * rows, out_w, 2)
            off = offset[i0:i0 + ns, :, r0:r0 + rows]
            off_hwc = off[0].permute(1, 2, 0)  # (rows, Wo, 2*dg*K)
            pair_dtype = _PAIR_DTYPES.get(off.dtype)
            if ns == 1 and off_hwc.is_contiguous() and pair_dtype is not None:
                # Dense channels_last offsets: move each (dy, dx) pair as one element (8 bytes in fp32,
                # 4 in bf16/fp16 as autocast's convolutions give them) with a blocked 2-D transpose,
                # instead of gathering single values with a stride of 2*dg*K.
                pairs = off_hwc.reshape(rows * out_w, dg * k * 2).view(pair_dtype).t()
                off = torch.empty((dg * k, rows * out_w), dtype=pair_dtype, device=off.device).copy_(pairs)
                off = off.view(offset.dtype).view(1, dg, k, rows, out_w, 2)
            else:
                off = off.unflatten(1, (dg, k, 2)).permute(0, 1, 2, 4, 5, 3)
            if off.is_contiguous():  # (ns, dg, K, rows, Wo, 2): flatten each row's (y, x) pairs
                torch.addcmul(base[:, r0:r0 + rows].reshape(k, rows, out_w * 2), off.view(ns, dg, k, rows, out_w * 2),
                              scale_row, out=grid.view(ns, dg, k, rows, out_w * 2))
            else:
                torch.addcmul(base[:, r0:r0 + rows], off, scale, out=grid.view(ns, dg, k, rows, out_w, 2))
            cols = F.grid_sample(xt, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            cols = cols.contiguous()  # (ns*dg, Cg, K*rows, Wo), which is also (ns, Cin*K, rows*Wo)
            if mask is not None:
                m = mask[i0:i0 + ns, :, r0:r0 + rows]
                if ns == 1 and m.stride(1) == 1:
                    # A channels_last mask: broadcasting it over Cg reads it with a stride of dg*K per
                    # pixel (5x slower than the multiply itself); one blocked 2-D transpose copy of the
                    # band first is far cheaper.
                    m = torch.empty((dg * k, rows * out_w), dtype=m.dtype, device=m.device).copy_(
                        m[0].reshape(dg * k, rows * out_w))
                m = m.reshape(ns * dg, 1, k, rows, out_w)
                cols.view(ns * dg, cg, k, rows, out_w).mul_(m)
            cols = cols.view(ns, groups, cin_g * k, rows * out_w)
            if low_cols_buf is not None:
                cols = low_cols_buf[: cols.numel()].view(cols.shape).copy_(cols)
            for j in range(ns):
                if nhwc:  # this band of this sample is one contiguous (rows*Wo, Cout) block of the output
                    dst = out_nhwc[i0 + j, r0:r0 + rows].view(rows * out_w, cout)
                    direct = gemm_dtype == out_dtype
                else:
                    direct = False
                target = dst if direct else torch.empty((rows * out_w, cout), dtype=gemm_dtype, device=input.device)
                for g in range(groups):
                    lhs, rhs, o = cols[j, g].t(), wmat_t[g], target[:, g * co_g:(g + 1) * co_g]
                    if b is None:
                        torch.mm(lhs, rhs, out=o)
                    else:
                        torch.addmm(b[g], lhs, rhs, out=o)
                if not direct:
                    out[i0 + j, :, r0:r0 + rows].copy_(target.t().view(cout, rows, out_w))
    return out


_FUSED_DTYPES = (torch.float32, torch.bfloat16)


def _fused_usable(input: Tensor, offset: Tensor, mask: Tensor | None, groups: int, gemm_dtype: torch.dtype) -> bool:
    """Whether the compiled im2col (:mod:`srkit.ops.native`) serves this call: CPU, one convolution group,
    float32/bf16 tensors and GEMM (float64 and fp16 take the PyTorch path; with float32/bf16 inputs the
    sampling precision is float32, which the kernel computes in), and the kernel builds here."""
    if input.device.type != "cpu" or groups != 1 or gemm_dtype not in _FUSED_DTYPES:
        return False
    if any(t is not None and t.dtype not in _FUSED_DTYPES for t in (input, offset, mask)):
        return False
    return native.deform_im2col() is not None


def _deform_conv2d_fused(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    mask: Tensor | None,
    dg: int,
    out: Tensor,
    out_nhwc: Tensor | None,
    gemm_dtype: torch.dtype,
) -> Tensor:
    """Inference through the compiled im2col: per band of output rows, one pass samples, modulates and
    writes the columns as ``(rows * Wo, K * Cin)`` in the GEMM's dtype (tap-major, so a pixel's channels
    of one deformable group are contiguous in a channels_last input and in the columns); one GEMM with the
    weight reordered to match writes the band into ``out`` (allocated by the caller; ``out_nhwc`` its
    channels_last storage when it has one). Nothing else touches the columns: no float32 copy of bf16
    features, no separate mask multiply, cast or transpose."""
    kernel = native.deform_im2col()
    n, c = input.shape[:2]
    out_h, out_w = out.shape[-2:]
    cout, _, kh, kw = weight.shape
    k = kh * kw
    # (Cout, Cin, kh, kw) -> (kh, kw, Cin, Cout) flattened: row t*Cin + ci is tap t of channel ci.
    wmat = weight.to(gemm_dtype).permute(2, 3, 1, 0).reshape(k * c, cout)
    b = None if bias is None else bias.to(gemm_dtype)
    if mask is not None and mask.dtype != offset.dtype:
        mask = mask.to(offset.dtype)  # the kernel reads both in one dtype (small tensors)
    bytes_per_row = c * k * out_w * torch.finfo(gemm_dtype).bits // 8
    band = max(1, min(out_h, _inference_budget(_FUSED_BAND_BYTES_PER_THREAD) // bytes_per_row))
    cols_buf = torch.empty(band * out_w * k * c, dtype=gemm_dtype, device=input.device)
    direct = out_nhwc is not None and gemm_dtype == out.dtype
    for i in range(n):
        for r0 in range(0, out_h, band):
            rows = min(band, out_h - r0)
            cols = cols_buf[: rows * out_w * k * c].view(rows * out_w, k * c)
            with torch.profiler.record_function("srkit::deform_im2col"):  # named in profiles (not an aten op)
                kernel(input[i], offset[i, :, r0:r0 + rows], None if mask is None else mask[i, :, r0:r0 + rows],
                       cols, kh, kw, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], r0, dg)
            dst = (out_nhwc[i, r0:r0 + rows].view(rows * out_w, cout) if direct
                   else torch.empty((rows * out_w, cout), dtype=gemm_dtype, device=input.device))
            if b is None:
                torch.mm(cols, wmat, out=dst)
            else:
                torch.addmm(b, cols, wmat, out=dst)
            if not direct:
                out[i, :, r0:r0 + rows].copy_(dst.t().view(cout, rows, out_w))
    return out


def _finish(
    cols: Tensor,
    m: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    in_dtype: torch.dtype,
    low: torch.dtype | None,
    n: int,
    groups: int,
    out_h: int,
    out_w: int,
    grad_needed: bool,
    mask_grad: bool = False,
) -> Tensor:
    """Mask the columns and contract them with the weight: ``(N, G, Cout/G, out_h * out_w)``.

    The autograd / tracing path (inference uses :func:`_deform_conv2d_no_grad`).  ``low`` is
    autocast's low-precision dtype at the call site (None when autocast is off).
    """
    cout, cin_g, kh, kw = weight.shape
    k = kh * kw
    wmat = weight.reshape(groups, cout // groups, cin_g * k)
    b = None if bias is None else bias.view(1, groups, cout // groups, 1)
    result_low = _low_precision_result(in_dtype, low)
    gemm_low = result_low is not None and _native_low_precision(cols.device.type, result_low)
    if m is not None and grad_needed and mask_grad and not torch.jit.is_tracing():
        # Training DCNv2: the mask gradient needs the unmasked samples and the weight gradient the
        # masked ones; autograd would keep both (2 x Cin*K*Ho*Wo).  _ModulatedGEMM keeps one copy's
        # worth, and under autocast runs the masking, the GEMMs and their backward in bf16/fp16.
        gemm_dtype = result_low if gemm_low else cols.dtype
        out = _ModulatedGEMM.apply(cols, m, wmat.to(gemm_dtype), n, groups, gemm_dtype)
        out = out.to(result_low or in_dtype)
        return out if b is None else out + b.to(out.dtype)
    if m is not None:
        # grid_sample's backward does not use its output, so scaling it in place is safe (and saves a
        # Cin*K*Ho*Wo temporary) when the mask itself needs no gradient.
        cols = cols * m if (grad_needed and mask_grad) else cols.mul_(m)
    # (N*dg, Cg, K*Ho, Wo) is contiguous as (N, dg*Cg, K, Ho*Wo) = (N, Cin*K, P): the im2col matrix in
    # the weight's (Cin, kh, kw) flattening order.  Split it by convolution group for one batched matmul.
    cols = cols.view(n, groups, cin_g * k, out_h * out_w)
    # Output dtype: autocast's low-precision dtype if autocast is on, else the input's.
    if result_low is not None and not gemm_low:
        # Without hardware bf16/fp16 (e.g. AVX2-only x86) oneDNN emulates low-precision GEMMs, ~50x
        # slower than float32: compute in float32 and return the low-precision dtype.
        out = torch.matmul(wmat.to(cols.dtype), cols)
        return (out if b is None else out + b.to(out.dtype)).to(result_low)
    if result_low is not None:
        wmat, cols = wmat.to(result_low), cols.to(result_low)
    out = torch.matmul(wmat, cols)
    return out if b is None else out + b.to(out.dtype)


def _abs_mean(t: Tensor) -> float:
    """mean(|t|) in one reduction pass without an |t| temporary (4x faster than abs().mean()).

    A single float32 vector norm over tens of millions of elements loses ~2% to rounding, so reduce
    per row (or per plane when planes are small) and add the partial sums in float64.
    """
    if t.numel() == 0:
        return float("nan")
    t = t.float() if t.dtype in _LOW_PRECISION else t
    dims = (-2, -1) if t.dim() >= 2 and t.shape[-1] * t.shape[-2] <= (1 << 20) else -1
    return float(torch.linalg.vector_norm(t, 1, dim=dims).sum(dtype=torch.float64)) / t.numel()


class _WarnGate:
    """Rate-limit state of one or several :class:`OffsetMonitor` s (shared: one warning per interval
    for all of them, e.g. the four DCNs of one EDVR diverging together)."""

    def __init__(self) -> None:
        self.updates = 0
        self.warnings_emitted = 0
        self.suppressed = 0
        self.last_warn_time: float | None = None
        self.last_warn_update: int | None = None


class OffsetMonitor:
    """Watch the magnitude of predicted offsets and warn, without flooding the log, when it explodes.

    Each :meth:`update` records ``last_abs_mean`` (mean absolute offset, a float) and ``calls``.  When
    the value exceeds ``threshold`` (50 pixels by default, BasicSR's warning level) one warning is
    logged on logger ``srkit.ops.deform_conv`` with the value, then further warnings are suppressed
    until ``interval`` seconds have passed (or, with ``every_n_calls``, that many calls); the next
    warning says how many were suppressed.  Training code reads ``last_abs_mean`` to detect divergence.
    :meth:`share_rate_limit` makes several monitors (one network's DCNs) warn once per interval together.
    """

    def __init__(
        self,
        threshold: float = 50.0,
        interval: float | None = 60.0,
        every_n_calls: int | None = None,
        name: str = "deformable conv",
        clock: Callable[[], float] = time.monotonic,
    ):
        if every_n_calls is not None and every_n_calls < 1:
            raise ValueError("OffsetMonitor: every_n_calls must be >= 1")
        self.threshold = float(threshold)
        self.interval = interval
        self.every_n_calls = every_n_calls
        self.name = name
        self.clock = clock
        self.last_abs_mean: float | None = None
        self.calls = 0
        self._gate = _WarnGate()

    @property
    def warnings_emitted(self) -> int:
        """Warnings logged (by this monitor and those sharing its rate limit)."""
        return self._gate.warnings_emitted

    @property
    def suppressed(self) -> int:
        """Over-threshold updates not logged since the last warning (shared rate limit included)."""
        return self._gate.suppressed

    def share_rate_limit(self, other: "OffsetMonitor") -> None:
        """Rate-limit this monitor together with ``other``: one warning per interval for both."""
        self._gate = other._gate

    def _may_warn(self) -> bool:
        gate = self._gate
        if gate.last_warn_update is None:
            return True
        if self.every_n_calls is not None:
            return gate.updates - gate.last_warn_update >= self.every_n_calls
        if self.interval is None:
            return True
        return self.clock() - gate.last_warn_time >= self.interval

    @torch.no_grad()
    def update(self, offset: Tensor) -> float:
        """Record ``mean(|offset|)`` and warn (rate-limited) when it exceeds the threshold.

        Does nothing (returns the previous value) while tracing, compiling or exporting: reading a
        value back to Python would bake a constant into the graph or break it.
        """
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
            return self.last_abs_mean if self.last_abs_mean is not None else float("nan")
        value = _abs_mean(offset.detach())
        self.last_abs_mean = value
        self.calls += 1
        gate = self._gate
        gate.updates += 1
        if not (value > self.threshold):  # NaN counts as exploded too
            if not math.isnan(value):
                return value
        if self._may_warn():
            extra = f" ({gate.suppressed} similar warnings suppressed)" if gate.suppressed else ""
            logger.warning(
                "%s: mean |offset| = %.2f px exceeds %.1f; offsets may be diverging%s",
                self.name, value, self.threshold, extra,
            )
            gate.warnings_emitted += 1
            gate.suppressed = 0
            gate.last_warn_time = self.clock()
            gate.last_warn_update = gate.updates
        else:
            gate.suppressed += 1
        return value


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 layer with mmcv/BasicSR parameter names (``weight``, ``bias``).

    ``forward(x, offset, mask)`` takes externally predicted offsets and mask (BasicSR's ``DCNv2Pack``
    predicts them from a separate feature); pass ``mask=None`` for DCNv1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels}, {out_channels}) not divisible by groups={groups}")
        if in_channels % deformable_groups:
            raise ValueError(f"in_channels={in_channels} not divisible by deformable_groups={deformable_groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmcv's init: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights, zero bias."""
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        stdv = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -stdv, stdv)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}"
        )
