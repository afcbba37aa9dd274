"""Convolutions with their activation or residual add fused in, for CPU inference.

``conv_act(conv, x)`` is ``act(conv(x))`` and ``conv_add(conv, x, other)`` is ``conv(x) + other``. During
CPU inference on channels_last tensors in float32 or bf16 (also bf16 autocast) they run as one oneDNN
convolution with the activation or the add as a post-op (PyTorch's ``mkldnn::_convolution_pointwise``,
the op Inductor emits for the same fusion), so the output is written once instead of being re-read and
re-written by a separate elementwise pass: the bf16 profile of EDVR-M spent about a tenth of a frame in
``leaky_relu_`` and ``add_``. Everywhere else (autograd, CUDA, NCHW, other dtypes, a PyTorch without the
op) they are exactly the unfused expressions.

float32 results equal the unfused ones; in bf16 the fused op rounds once where the unfused pair rounds
twice (differences of one bf16 ulp).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["conv_act", "conv_add"]

logger = logging.getLogger("srkit.ops.fused_conv")

_FUSABLE_DTYPES = (torch.float32, torch.bfloat16)
# Set when the op failed where the unfused expression worked: this PyTorch/oneDNN cannot fuse here.
_unavailable: str | None = None


def _pointwise_op():
    """``torch.ops.mkldnn._convolution_pointwise`` when this PyTorch has it and oneDNN is usable, else None."""
    if _unavailable is not None or not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return None
    try:
        return torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None


def _fusable(conv: nn.Conv2d, x: Tensor, *others: Tensor) -> torch.dtype | None:
    """The dtype the fused op runs in, or None when this call must take the unfused path."""
    if x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
        return None  # CPU channels_last only: the inference engine's layout, which the op keeps
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (x, conv.weight, conv.bias, *others)):
        return None  # the fused op has no backward (a frozen conv inside a trained network stays unfused too)
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
        return None  # exported and compiled graphs keep the standard ops (Inductor fuses on its own)
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        if x.dtype not in _FUSABLE_DTYPES or conv.weight.dtype not in _FUSABLE_DTYPES:
            return None
    else:
        dtype = x.dtype
        if conv.weight.dtype != dtype:
            return None  # let the unfused call report the mismatch
    if dtype not in _FUSABLE_DTYPES or _pointwise_op() is None:
        return None
    return dtype


def _conv_out_size(conv: nn.Conv2d, x: Tensor) -> tuple[int, int]:
    return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1 for size, p, d, k, s in
                 zip(x.shape[-2:], conv.padding, conv.dilation, conv.kernel_size, conv.stride))


def _fused_or_unfused(fused, unfused) -> Tensor:
    global _unavailable
    try:
        return fused()
    except RuntimeError as err:
        result = unfused()  # raises the user's error if the inputs are at fault
        _unavailable = str(err).splitlines()[0] if str(err) else type(err).__name__
        logger.warning("fused convolution unavailable here (%s); using the unfused path", _unavailable)
        return result


def _args(conv: nn.Conv2d, x: Tensor, dtype: torch.dtype) -> tuple:
    b = conv.bias
    return (x.to(dtype), conv.weight.to(dtype), None if b is None else b.to(dtype), list(conv.padding),
            list(conv.stride), list(conv.dilation), conv.groups)


def conv_act(conv: nn.Conv2d, x: Tensor, act: str = "leaky_relu", negative_slope: float = 0.1) -> Tensor:
    """``act(conv(x))`` with ``act`` "leaky_relu" (``negative_slope``) or "relu"; fused on CPU inference."""
    if act not in ("leaky_relu", "relu"):
        raise ValueError(f"conv_act: act must be 'leaky_relu' or 'relu', got {act!r}")

    def unfused() -> Tensor:
        y = conv(x)
        return F.leaky_relu(y, negative_slope, inplace=True) if act == "leaky_relu" else F.relu(y, inplace=True)

    dtype = _fusable(conv, x)
    if dtype is None:
        return unfused()
    scalars = [negative_slope] if act == "leaky_relu" else []
    return _fused_or_unfused(lambda: _pointwise_op()(*_args(conv, x, dtype), act, scalars, ""), unfused)


def conv_add(conv: nn.Conv2d, x: Tensor, other: Tensor) -> Tensor:
    """``conv(x) + other``; fused on CPU inference when ``other`` has exactly the convolution output's shape,
    dtype and (channels_last) layout, so that the result is what the unfused sum gives."""

    def unfused() -> Tensor:
        return conv(x) + other

    dtype = _fusable(conv, x, other)
    if (dtype is None or other.dtype != dtype or other.device != x.device
            or other.shape != (x.shape[0], conv.out_channels, *_conv_out_size(conv, x))
            or not other.is_contiguous(memory_format=torch.channels_last)):
        return unfused()

    def fused() -> Tensor:
        xd, w, b, *geometry = _args(conv, x, dtype)
        return _pointwise_op().binary(xd, other, w, b, *geometry, "add", None, None, [], None)

    return _fused_or_unfused(fused, unfused)
