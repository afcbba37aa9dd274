"""Per-pixel ("dynamic") convolution: every output pixel has its own k x k kernel.

Two forms, as UDVD and DUF use them:

* :func:`dynamic_conv2d` -- same resolution. ``out[n, c, h, w] = sum_{i,j} K[n, i*k+j, h, w] *
  x[n, c, h+i-r, w+j-r]`` with ``r = k // 2``. The kernel is shared by the ``C`` channels
  ("depthwise": one kernel per pixel, not one per channel).
* :func:`dynamic_upsample_conv2d` -- upsampling by ``s``: each input pixel has ``s*s`` kernels, one
  per sub-pixel position ``p = dy*s + dx`` of the ``s x s`` output block it becomes.
  ``out[n, c, h*s+dy, w*s+dx] = sum_{i,j} K[n, p*k*k + i*k+j, h, w] * x[n, c, h+i-r, w+j-r]``,
  i.e. the kernel channels are grouped by sub-pixel position first (``(s*s, k*k)`` layout), and the
  sub-pixel order is :func:`torch.nn.functional.pixel_shuffle`'s.

Padding outside the image is ``"zeros"`` (the textbook definition; what an ``unfold`` formulation
does), ``"replicate"`` or ``"reflect"``.

Why not ``F.unfold``: the unfold formulation copies the input ``k*k`` times (25x for k = 5) before
the per-pixel dot product, which at UDVD's output size (e.g. 2048 x 2048 for a 512 x 512 x4 input)
is gigabytes. Here the input is padded once and the ``k*k`` taps are accumulated from *shifted views*
of it (in-place ``addcmul_``), so forward memory is the padded input plus the output. The backward is
written by hand the same way (autograd through the view-slicing would allocate a full-size zero
gradient per tap); it reads the same views and scatters into one padded gradient buffer.
Everything is plain tensor arithmetic, so CPU, CUDA and MPS all work, in any floating dtype. While
exporting to ONNX, tracing or compiling, the same taps are summed out-of-place with ordinary ops
(no custom autograd Function), so models using the op export and compile.
"""

from __future__ import annotations

import sys
from typing import Literal

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

__all__ = ["dynamic_conv2d", "dynamic_upsample_conv2d", "identity_kernels", "PaddingMode"]

PaddingMode = Literal["zeros", "replicate", "reflect"]
_PADDING_MODES = ("zeros", "replicate", "reflect")


def _check(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int, groups: int, what: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{what}: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if kernels.dim() != 4:
        raise ValueError(f"{what}: kernels must be (N, K, H, W), got shape {tuple(kernels.shape)}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{what}: kernel_size must be odd and positive, got {kernel_size}")
    n, _, h, w = x.shape
    need = groups * kernel_size * kernel_size
    if kernels.shape[0] != n or kernels.shape[2:] != x.shape[2:] or kernels.shape[1] != need:
        raise ValueError(
            f"{what}: kernels must have shape {(n, need, h, w)} for x of shape {tuple(x.shape)} "
            f"(kernel_size {kernel_size}), got {tuple(kernels.shape)}"
        )


def _kernel_size_from(kernels: torch.Tensor, groups: int, what: str) -> int:
    taps = int(kernels.shape[1]) // groups if kernels.dim() == 4 else 0
    k = int(round(taps**0.5))
    if kernels.dim() != 4 or k * k * groups != kernels.shape[1]:
        raise ValueError(
            f"{what}: the kernel channel count must be {'s*s*' if groups > 1 else ''}k*k, "
            f"got shape {tuple(kernels.shape)}"
        )
    return k


def _pad(x: torch.Tensor, r: int, padding: str) -> torch.Tensor:
    if padding not in _PADDING_MODES:
        raise ValueError(f"padding must be one of {', '.join(_PADDING_MODES)}, got {padding!r}")
    if r == 0:
        return x
    if padding == "zeros":
        return F.pad(x, (r, r, r, r))
    if padding == "reflect" and (x.shape[-1] <= r or x.shape[-2] <= r):
        padding = "replicate"  # reflection needs more pixels than the radius; degrade gracefully
    return F.pad(x, (r, r, r, r), mode=padding)


def _common_dtype(x: torch.Tensor, kernels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Under autocast the kernels may come out of a conv in bf16/fp16 while the image stays fp32:
    # compute in the wider type (in-place accumulation needs one dtype).
    dtype = torch.promote_types(x.dtype, kernels.dtype)
    return x.to(dtype), kernels.to(dtype)


class _DynamicConv(torch.autograd.Function):
    """Shifted-view accumulation over an already padded input (padding stays outside, in autograd)."""

    @staticmethod
    def forward(ctx, xpad: torch.Tensor, kernels: torch.Tensor, k: int) -> torch.Tensor:
        n, c, hp, wp = xpad.shape
        h, w = hp - k + 1, wp - k + 1
        out = xpad.new_zeros((n, c, h, w))
        for t in range(k * k):
            i, j = divmod(t, k)
            # (N, C, H, W) view * (N, 1, H, W) kernel tap, accumulated without temporaries.
            out.addcmul_(xpad[:, :, i : i + h, j : j + w], kernels[:, t : t + 1])
        ctx.save_for_backward(xpad, kernels)
        ctx.k = k
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        xpad, kernels = ctx.saved_tensors
        k = ctx.k
        h, w = grad_out.shape[-2:]
        grad_out = grad_out.contiguous()
        grad_x = torch.zeros_like(xpad) if ctx.needs_input_grad[0] else None
        grad_k = torch.empty_like(kernels) if ctx.needs_input_grad[1] else None
        c = xpad.shape[1]
        for t in range(k * k):
            i, j = divmod(t, k)
            view = xpad[:, :, i : i + h, j : j + w]
            if grad_x is not None:
                grad_x[:, :, i : i + h, j : j + w].addcmul_(grad_out, kernels[:, t : t + 1])
            if grad_k is not None:
                # dL/dK_t = sum_c grad * view, accumulated channel by channel straight into grad_k
                # (1.7x faster than mul-then-sum and without its (N, C, H, W) temporary).
                out = grad_k[:, t]
                torch.mul(grad_out[:, 0], view[:, 0], out=out)
                for ch in range(1, c):
                    out.addcmul_(grad_out[:, ch], view[:, ch])
        return grad_x, grad_k, None


class _DynamicUpsampleConv(torch.autograd.Function):
    """Upsampling form: ``s*s`` kernels per input pixel; output in pixel-shuffle-ready layout."""

    @staticmethod
    def forward(ctx, xpad: torch.Tensor, kernels: torch.Tensor, k: int, scale: int) -> torch.Tensor:
        n, c, hp, wp = xpad.shape
        h, w = hp - k + 1, wp - k + 1
        ss = scale * scale
        kview = kernels.view(n, ss, k * k, h, w)
        # Sub-pixel outputs live in (N, C, s*s, H, W); one broadcast addcmul per tap serves all s*s
        # sub-pixel positions at once.
        out = xpad.new_zeros((n, c, ss, h, w))
        for t in range(k * k):
            i, j = divmod(t, k)
            out.addcmul_(xpad[:, :, None, i : i + h, j : j + w], kview[:, None, :, t])
        ctx.save_for_backward(xpad, kernels)
        ctx.k, ctx.scale = k, scale
        return out.view(n, c * ss, h, w)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        xpad, kernels = ctx.saved_tensors
        k, scale = ctx.k, ctx.scale
        n, c, _, _ = xpad.shape
        ss = scale * scale
        h, w = grad_out.shape[-2:]
        g = grad_out.contiguous().view(n, c, ss, h, w)
        kview = kernels.view(n, ss, k * k, h, w)
        grad_x = torch.zeros_like(xpad) if ctx.needs_input_grad[0] else None
        grad_k = torch.empty_like(kernels).view(n, ss, k * k, h, w) if ctx.needs_input_grad[1] else None
        # Sums over sub-pixel positions / channels are accumulated term by term with in-place addcmul:
        # no (N, C, s*s, H, W) temporary per tap, and ~1.7x faster than mul-then-sum.
        for t in range(k * k):
            i, j = divmod(t, k)
            if grad_x is not None:
                target = grad_x[:, :, i : i + h, j : j + w]
                for p in range(ss):
                    target.addcmul_(g[:, :, p], kview[:, None, p, t])
            if grad_k is not None:
                view = xpad[:, :, None, i : i + h, j : j + w]
                out = grad_k[:, :, t]
                torch.mul(g[:, 0], view[:, 0], out=out)
                for ch in range(1, c):
                    out.addcmul_(g[:, ch], view[:, ch])
        if grad_k is not None:
            grad_k = grad_k.view_as(kernels)
        return grad_x, grad_k, None, None


def _graph_capture() -> bool:
    """True while exporting (ONNX), tracing, scripting or compiling: the custom autograd Function
    and in-place accumulation are opaque to those, so the same arithmetic is written out-of-place."""
    # torch.onnx is imported lazily by torch (and is slow to import): no module, no export under way.
    onnx = sys.modules.get("torch.onnx")
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or (onnx is not None and onnx.is_in_onnx_export())
        or (hasattr(torch, "compiler") and torch.compiler.is_compiling())
    )


def _shifted_sum(xpad: torch.Tensor, kernels: torch.Tensor, k: int, scale: int) -> torch.Tensor:
    """Out-of-place version of the forward (export path): same taps, same order, plain ops."""
    n, c, hp, wp = xpad.shape
    h, w = hp - k + 1, wp - k + 1
    kview = kernels.reshape(n, scale * scale, k * k, h, w)
    out = None
    for t in range(k * k):
        i, j = divmod(t, k)
        term = xpad[:, :, None, i : i + h, j : j + w] * kview[:, None, :, t]
        out = term if out is None else out + term
    return out.reshape(n, c * scale * scale, h, w)


def dynamic_conv2d(x: torch.Tensor, kernels: torch.Tensor, *, padding: PaddingMode = "zeros") -> torch.Tensor:
    """Per-pixel convolution at the same resolution.

    Args:
        x: ``(N, C, H, W)`` input (an image, or any feature map).
        kernels: ``(N, k*k, H, W)``; channel ``i*k + j`` is tap ``(i, j)`` (row-major) of the kernel
            centred on that pixel, shared by all ``C`` channels.
        padding: what lies outside the image: ``"zeros"``, ``"replicate"`` or ``"reflect"``.

    Returns:
        ``(N, C, H, W)``. Differentiable in ``x`` and ``kernels``.
    """
    k = _kernel_size_from(kernels, 1, "dynamic_conv2d")
    _check(x, kernels, k, 1, "dynamic_conv2d")
    x, kernels = _common_dtype(x, kernels)
    xpad = _pad(x, k // 2, padding)
    if _graph_capture():
        return _shifted_sum(xpad, kernels, k, 1)
    return _DynamicConv.apply(xpad, kernels.contiguous(), k)


def dynamic_upsample_conv2d(
    x: torch.Tensor, kernels: torch.Tensor, scale: int, *, padding: PaddingMode = "zeros"
) -> torch.Tensor:
    """Per-pixel upsampling convolution: ``s*s`` kernels per input pixel, output ``s`` times larger.

    Args:
        x: ``(N, C, H, W)``.
        kernels: ``(N, s*s*k*k, H, W)``; channel ``p*k*k + i*k + j`` is tap ``(i, j)`` of the kernel that
            produces sub-pixel ``p = dy*s + dx`` (output pixel ``(h*s + dy, w*s + dx)``).
        scale: the upsampling factor ``s`` (``scale == 1`` is :func:`dynamic_conv2d`).
        padding: ``"zeros"``, ``"replicate"`` or ``"reflect"``.

    Returns:
        ``(N, C, s*H, s*W)``. Differentiable in ``x`` and ``kernels``.
    """
    if int(scale) != scale or scale < 1:
        raise ValueError(f"dynamic_upsample_conv2d: scale must be a positive integer, got {scale}")
    scale = int(scale)
    k = _kernel_size_from(kernels, scale * scale, "dynamic_upsample_conv2d")
    _check(x, kernels, k, scale * scale, "dynamic_upsample_conv2d")
    x, kernels = _common_dtype(x, kernels)
    xpad = _pad(x, k // 2, padding)
    if _graph_capture():
        out = _shifted_sum(xpad, kernels, k, scale)
    else:
        out = _DynamicUpsampleConv.apply(xpad, kernels.contiguous(), k, scale)
    return F.pixel_shuffle(out, scale) if scale > 1 else out


def identity_kernels(
    n: int, height: int, width: int, kernel_size: int, scale: int = 1, *, dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Kernels that make the dynamic convolution copy its input (nearest-neighbour when ``scale > 1``).

    ``(n, scale*scale*k*k, height, width)`` with a 1 on every kernel's centre tap.
    """
    k2 = kernel_size * kernel_size
    kernels = torch.zeros(n, scale * scale, k2, height, width, dtype=dtype, device=device)
    kernels[:, :, k2 // 2] = 1.0
    return kernels.view(n, scale * scale * k2, height, width)
