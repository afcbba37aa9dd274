"""UDVD as the design notes' reference code builds it (``udvd-ref-x2``, ``udvd-ref-x3``, ``udvd-ref-x4``).

The UDVD notes (``001_...`` in the project's design notes) end with a PyTorch reference implementation,
written for x2 with every width fixed. :class:`UDVDRef` rebuilds it so that its ``state_dict`` is
*exactly* that code's (same module names, same shapes): a checkpoint trained with it loads with strict
key and shape checks (bare state dict, ``module.``-prefixed, BasicSR ``params`` ... as any srkit
checkpoint; the preset is recognised from the keys and shapes) and gives the same outputs.

Network (names are the reference code's)::

    head                    conv 3x3, 19 -> 128 on concat(LR, 15 kernel codes, noise level)
    body.N.conv.{0,2}       15 EDSR blocks (conv-ReLU-conv, residual scale 0.1); global skip
                            body = body(head) + head            (no conv after the body)
    UpDyConv                upsampling dynamic block on (LR, body):
      image_conv.{0,2,4}      3 -> 16 -> 16 -> 32 (ReLU between, none after the last conv)
      feat_kernel             160 -> 25*s*s   (on cat[image_conv, body], 32 + 128 = 160 channels)
      feat_residual.{0,3}     160 -> 16*s*s, ReLU, PixelShuffle(s), 16 -> 3
      out_1 = PixelConv_s(LR, kernels) + residual
    ComDyConv1, ComDyConv2  common dynamic blocks at output size on (out_{i-1}, body):
      image_conv.{0,2,4}      3 -> 16 -> 16 -> 32
      feat_conv.1             body features lifted to output size: PixelShuffle(s), 1x1 conv 128/s^2 -> 128
                              (each block has its own lift)
      feat_kernel             160 -> 25;  feat_residual.{0,2}: 160 -> 16, ReLU, 16 -> 3
      out_i = PixelConv_1(out_{i-1}, kernels) + residual

``forward(x, maps)`` returns ``SROutput(out_3, stages=(out_1, out_2, out_3))``, as the reference returns
its three outputs (the multi-stage loss: ``config.stage_loss_weights``). ``maps`` are srkit's 16
condition maps (15 PCA codes, then ``sigma / 255``): ``concat(x, maps)`` is the reference's
``concat(image, kernel, noise)``.

**PixelConv layout.** The reference's dynamic convolution (``PixelConv``, depthwise) unfolds the
zero-padded image with ``unfold(2, k, 1).unfold(3, k, 1)`` and ``permute(0, 2, 3, 1, 5, 4)``: tap
``t = j*k + i`` for row offset ``i`` and column offset ``j`` (taps in *column-major* order); the kernel
map is read as ``(k*k, s*s)``, so kernel channel ``t*s*s + p`` is tap ``t`` of sub-pixel ``p = dy*s + dx``
(tap-major, sub-pixel index last), and the ``s*s`` results are pixel-shuffled. srkit's
:func:`~srkit.ops.dynamic_upsample_conv2d` takes channel ``p*k*k + i*k + j``; :func:`ref_to_srkit_kernels`
reorders the predicted kernels (a copy at kernel-map size) and the op runs with zero padding. The
numbers are the reference's; only the memory use differs (no ``k*k``-fold unfold copy).

**x3 and x4 by the same rule.** Everything that the reference ties to the scale follows ``s``: the
upsampling block's kernel head has ``25*s*s`` outputs and its residual ``16*s*s`` channels before
``PixelShuffle(s)``; each common block lifts the body with ``PixelShuffle(s)`` and a 1x1 conv from
``128 / s^2`` channels (x2: 32, x4: 8) to 128. At x3, 128 is not a multiple of 9: the lift shuffles
the first ``9 * floor(128 / 9) = 126`` body channels (14 per output pixel, conv 14 -> 128); the last
two body channels feed only the upsampling block. That x3 rule is srkit's (the notes give code for x2
only), as are the configurable widths (the defaults are the reference's; the tiny test sizes use them).

**Differences from srkit's own UDVD** (:mod:`srkit.models.udvd`, ``udvd-x*``), all the reference's:
no ``conv_after_body``; the image path ends without a ReLU and is concatenated directly with the
features (no 64-wide fusion conv): the kernel and residual heads read the 160-channel concatenation;
the upsampling residual is pixel-shuffled *inside* its head (64 channels -> 16 at output size -> 3)
rather than predicted as ``3*s*s`` channels; every common block lifts the body features itself
(PixelShuffle + 1x1 conv to 128 channels) instead of one shared 3x3 sub-pixel conv to 32 channels;
zero padding in the dynamic convolutions (srkit: replicate); PyTorch's default initialisation (srkit:
heads start at bilinear upsampling / identity); tap order and kernel layout as above. Use ``udvd-x*``
to train with srkit's design, ``udvd-ref-x*`` to reproduce or load models of the notes' code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from srkit.errors import ConfigError
from srkit.models.api import ModelSpec, SRModel, SROutput, check_int_fields, config_field
from srkit.models.registry import register_model
from srkit.models.udvd import expand_maps
from srkit.ops.dynamic_conv import dynamic_conv2d, dynamic_upsample_conv2d

__all__ = ["UDVDRef", "UDVDRefConfig", "ref_to_srkit_kernels"]


@dataclass
class UDVDRefConfig:
    """Hyper-parameters of the notes' reference UDVD (defaults: the reference's fixed values)."""

    scale: int = config_field(2, "upscaling factor (the reference code is x2; x3/x4 follow its rule)")
    num_in_ch: int = config_field(3, "image channels (3 for RGB)")
    condition_channels: int = config_field(16, "degradation-map channels (15 PCA + noise)")
    num_feat: int = config_field(128, "feature channels of the body (and of each lifted feature map)")
    num_blocks: int = config_field(15, "residual blocks of the body")
    res_scale: float = config_field(0.1, "residual scaling inside the body's blocks (EDSR)")
    kernel_size: int = config_field(5, "size k of the per-pixel k x k dynamic kernels (odd)")
    image_feat: int = config_field(16, "width of the first two convs of each block's image path")
    image_out: int = config_field(32, "output width of each block's image path (last conv, no ReLU)")
    residual_feat: int = config_field(16, "width of the residual heads (per output pixel)")
    stage_loss_weights: tuple[float, ...] = config_field(
        (1.0, 1.0, 1.0), "multi-stage L1 weights of the three outputs (the last is the result)"
    )

    def __post_init__(self) -> None:
        if isinstance(self.stage_loss_weights, (list, np.ndarray)):
            self.stage_loss_weights = tuple(float(w) for w in self.stage_loss_weights)
        check_int_fields(self, "UDVD-ref", positive=("scale", "num_in_ch", "condition_channels", "num_feat",
                                                     "image_feat", "image_out", "residual_feat"),
                         non_negative=("num_blocks",))
        if not isinstance(self.kernel_size, int) or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"UDVD-ref config: kernel_size must be an odd positive integer, got {self.kernel_size!r}")
        if not isinstance(self.res_scale, (int, float)) or not math.isfinite(self.res_scale):
            raise ConfigError(f"UDVD-ref config: res_scale must be a finite number, got {self.res_scale!r}")
        if self.num_feat < self.scale * self.scale:
            raise ConfigError(f"UDVD-ref config: num_feat ({self.num_feat}) must be at least scale^2 "
                              f"({self.scale * self.scale}) for the PixelShuffle lift of the common blocks")
        w = self.stage_loss_weights
        if (not isinstance(w, tuple) or len(w) != 3
                or any(not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 for v in w)):
            raise ConfigError(f"UDVD-ref config: stage_loss_weights needs 3 finite non-negative numbers, got {w!r}")


def ref_to_srkit_kernels(kernels: torch.Tensor, kernel_size: int, scale: int) -> torch.Tensor:
    """Reorder the reference's kernel channels ``(j*k + i)*s*s + p`` (taps column-major, tap-major,
    sub-pixel last) into srkit's ``p*k*k + i*k + j`` (:func:`srkit.ops.dynamic_upsample_conv2d`)."""
    n, _, h, w = kernels.shape
    k, ss = kernel_size, scale * scale
    return kernels.reshape(n, k, k, ss, h, w).permute(0, 3, 2, 1, 4, 5).reshape(n, ss * k * k, h, w)


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


class _ResBlock(nn.Module):
    """The reference's ``ResBlock``: ``x + conv(x) * res_scale`` with ``conv = [conv, ReLU, conv]``."""

    def __init__(self, channels: int, res_scale: float):
        super().__init__()
        self.conv = nn.Sequential(_conv(channels, channels), nn.ReLU(inplace=True), _conv(channels, channels))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) * self.res_scale


def _image_conv(cfg: UDVDRefConfig) -> nn.Sequential:
    c, f = cfg.num_in_ch, cfg.image_feat
    return nn.Sequential(_conv(c, f), nn.ReLU(inplace=True), _conv(f, f), nn.ReLU(inplace=True),
                         _conv(f, cfg.image_out))


class UpDynamicConv(nn.Module):
    """The reference's upsampling dynamic block (``UpDyConv``)."""

    def __init__(self, cfg: UDVDRefConfig):
        super().__init__()
        s, k, cat = cfg.scale, cfg.kernel_size, cfg.image_out + cfg.num_feat
        self.scale, self.kernel_size = s, k
        self.image_conv = _image_conv(cfg)
        self.feat_residual = nn.Sequential(_conv(cat, cfg.residual_feat * s * s), nn.ReLU(inplace=True),
                                           nn.PixelShuffle(s), _conv(cfg.residual_feat, cfg.num_in_ch))
        self.feat_kernel = _conv(cat, k * k * s * s)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        cat = torch.cat([self.image_conv(image), features], 1)
        kernels = ref_to_srkit_kernels(self.feat_kernel(cat), self.kernel_size, self.scale)
        if self.scale > 1:
            out = dynamic_upsample_conv2d(image, kernels, self.scale, padding="zeros")
        else:
            out = dynamic_conv2d(image, kernels, padding="zeros")
        return out + self.feat_residual(cat)


class CommonDynamicConv(nn.Module):
    """The reference's common dynamic block (``ComDyConv1`` / ``ComDyConv2``), with its own feature lift."""

    def __init__(self, cfg: UDVDRefConfig):
        super().__init__()
        s, k, cat = cfg.scale, cfg.kernel_size, cfg.image_out + cfg.num_feat
        self.kernel_size = k
        lift = cfg.num_feat // (s * s)
        self.lift_in = lift * s * s  # all body channels when s*s divides num_feat (x2, x4); 126 of 128 at x3
        self.image_conv = _image_conv(cfg)
        self.feat_conv = nn.Sequential(nn.PixelShuffle(s), nn.Conv2d(lift, cfg.num_feat, 1))
        self.feat_residual = nn.Sequential(_conv(cat, cfg.residual_feat), nn.ReLU(inplace=True),
                                           _conv(cfg.residual_feat, cfg.num_in_ch))
        self.feat_kernel = _conv(cat, k * k)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        if self.lift_in != features.shape[1]:
            features = features[:, : self.lift_in]
        cat = torch.cat([self.image_conv(image), self.feat_conv(features)], 1)
        kernels = ref_to_srkit_kernels(self.feat_kernel(cat), self.kernel_size, 1)
        return dynamic_conv2d(image, kernels, padding="zeros") + self.feat_residual(cat)


class UDVDRef(SRModel):
    """The notes' reference UDVD; ``forward(x (N, 3, H, W), maps (N, 16, H, W)) -> SROutput``."""

    family = "udvd-ref"

    def __init__(self, config: UDVDRefConfig):
        super().__init__(config)
        cfg = config
        self.head = _conv(cfg.num_in_ch + cfg.condition_channels, cfg.num_feat)
        self.body = nn.Sequential(*[_ResBlock(cfg.num_feat, cfg.res_scale) for _ in range(cfg.num_blocks)])
        self.UpDyConv = UpDynamicConv(cfg)
        self.ComDyConv1 = CommonDynamicConv(cfg)
        self.ComDyConv2 = CommonDynamicConv(cfg)

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(scale=self.config.scale, num_frames=1, center_index=0, input_kind="image",
                         pad_multiple=1, condition="degradation")

    def forward(self, x: torch.Tensor, maps: torch.Tensor | np.ndarray | None = None) -> SROutput:
        if x.dim() != 4 or x.shape[1] != self.config.num_in_ch:
            raise ValueError(f"UDVD-ref expects images (N, {self.config.num_in_ch}, H, W), got {tuple(x.shape)}")
        maps = expand_maps(x, maps, self.config.condition_channels, "UDVD-ref")
        head = self.head(torch.cat([x, maps], 1))
        body = self.body(head) + head
        out1 = self.UpDyConv(x, body)
        out2 = self.ComDyConv1(out1, body)
        out3 = self.ComDyConv2(out2, body)
        return SROutput(out3, (out1, out2, out3), {})


# ---------------------------------------------------------------------- presets
# No key adapter or config inferrer is needed: the parameter names are the reference's, and a bare
# reference checkpoint matches one preset by keys and shapes (srkit.models.checkpoint).
def _build(scale: int, overrides: dict[str, Any]) -> UDVDRef:
    # Overrides win, scale included (a stored config rebuilds through any preset of the family).
    return UDVDRef(UDVDRefConfig(**{"scale": scale, **overrides}))


_DESC = ("UDVD x{s} exactly as the design notes' reference code (module names and layout; {note}); "
         "loads checkpoints of that code")


@register_model("udvd-ref-x2", family="udvd-ref", description=_DESC.format(s=2, note="the code's own scale"))
def udvd_ref_x2(**overrides: Any) -> UDVDRef:
    return _build(2, overrides)


@register_model("udvd-ref-x3", family="udvd-ref",
                description=_DESC.format(s=3, note="x2 code's rule at x3; the lift uses 126 of 128 body channels"))
def udvd_ref_x3(**overrides: Any) -> UDVDRef:
    return _build(3, overrides)


@register_model("udvd-ref-x4", family="udvd-ref", description=_DESC.format(s=4, note="x2 code's rule at x4"))
def udvd_ref_x4(**overrides: Any) -> UDVDRef:
    return _build(4, overrides)
