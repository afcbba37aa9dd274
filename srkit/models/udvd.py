"""UDVD: Unified Dynamic Convolutional Network for Super-Resolution with Variational Degradations
(Xu, Tseng, Tseng, Kuo, Tsai, CVPR 2020).

A non-blind single-image SR network: it is told how the LR image was degraded (blur kernel and noise
level, SRMD's general model ``y = (x (*) k) downarrow_s + n``) through 16 *degradation maps* -- the 15-D
PCA code of the kernel and the noise level ``sigma / 255``, stretched over the image
(:func:`srkit.data.degrade.degradation_maps`). The maps may vary from pixel to pixel (spatially variant
blur / noise): every layer is convolutional, so each output pixel sees the degradation of its own
neighbourhood. :func:`srkit.data.conditions.udvd_condition` builds the maps from a blur width / kernel
and a noise level (the model takes any maps of the right shape and knows nothing of how they are made).

Network (the paper's two parts):

* **Feature extraction** (EDSR-like): ``concat(LR, maps)`` (19 channels) -> ``conv_first`` (3x3, 128)
  -> 15 residual blocks (conv-ReLU-conv, residual scale 0.1) -> ``conv_after_body`` (3x3) + global
  skip: body features ``F`` at LR size.
* **Refinement**: three *dynamic blocks*, each refining the current image ``I`` with per-pixel kernels
  and a residual image predicted from ``[image-path features of I, F]``:

  1. ``upsample_block`` (upsampling dynamic convolution): for every LR pixel and every one of the
     ``s*s`` sub-pixel positions a ``k x k`` kernel (k = 5, shared by the colour channels), applied to
     the LR image and pixel-shuffled to the output size (:func:`srkit.ops.dynamic_upsample_conv2d`),
     plus a residual image predicted at LR size with ``3*s*s`` channels and pixel-shuffled;
     ``I_1 = DyUpConv(LR, K_1) + R_1``;
  2. and 3. ``common_blocks`` (common dynamic convolution at the output size):
     ``I_i = DyConv(I_{i-1}, K_i) + R_i`` (:func:`srkit.ops.dynamic_conv2d`).

  ``forward`` returns ``SROutput(image=I_3, stages=(I_1, I_2, I_3))``; the paper trains with the
  multi-stage loss ``sum_i w_i * L1(I_i, HR)`` (``config.stage_loss_weights``, all 1 by default; the
  trainer computes the sum from ``stages``).

Choices where the paper leaves details open (all configurable in :class:`UDVDConfig`):

* **Image path**: three 3x3 convolutions of width ``image_feat`` (16) with ReLU on the current image;
  concatenated with the features and fused by one 3x3 convolution of width ``block_feat`` (64) + ReLU;
  the kernels and the residual come from two separate 3x3 heads on that fused map.
* **Features at the output size** (blocks 2 and 3): the body features go through one *sub-pixel
  convolution* (3x3 conv to ``hr_feat * s*s`` channels, pixel shuffle), computed once and shared by
  both blocks. ``hr_feat`` = 32 keeps the output-size layers (which run on ``s*s`` times more pixels)
  cheaper than the body.
* **Kernel normalisation**: none by default (``kernel_norm="none"``): the kernels are the raw outputs.
  Deblurring needs *sharpening* kernels with negative taps, which DUF's softmax normalisation forbids;
  ``"softmax"`` (DUF-style, positive taps summing to 1) is available.
* **Initialisation**: the kernel heads start at a sane filter rather than at noise: their bias holds
  the identity kernel (common blocks) or the bilinear-interpolation kernels of each sub-pixel position
  (upsampling block: ``I_1`` starts as bilinear upsampling, ``align_corners=False``), and their weights
  and the residual heads are Kaiming-normal scaled by 0.1 (BasicSR's residual-branch init). Training
  therefore starts from "bilinear upsampling, then identity" and learns corrections.
* **Border handling** of the dynamic convolutions: ``padding="replicate"`` (pixels outside the image
  repeat the border; zero padding would darken the border unless the network learned to compensate).
* No mean shift (inputs are RGB in [0, 1]).

There is no official code; parameter names are srkit's own (``conv_first``, ``body.N.conv1``,
``conv_after_body``, ``upsample_block.*``, ``feat_upsample.0``, ``common_blocks.N.*``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from srkit.errors import ConfigError
from srkit.models.api import ModelSpec, SRModel, SROutput, check_int_fields, config_field
from srkit.models.blocks import ResidualBlockNoBN, make_layer, scaled_kaiming_init_
from srkit.models.checkpoint import register_checkpoint_support
from srkit.models.registry import register_model
from srkit.ops.dynamic_conv import dynamic_conv2d, dynamic_upsample_conv2d

__all__ = [
    "UDVD",
    "UDVDConfig",
    "DynamicBlock",
    "bilinear_upsample_kernels",
    "expand_maps",
    "infer_config",
]

KERNEL_NORMS = ("none", "softmax")
PADDINGS = ("replicate", "zeros", "reflect")


@dataclass
class UDVDConfig:
    """UDVD hyper-parameters; the fields are exactly the keyword overrides the presets accept."""

    scale: int = config_field(4, "upscaling factor (2, 3 or 4 in the paper; any integer >= 1 works)")
    num_in_ch: int = config_field(3, "image channels (3 for RGB)")
    # 16: the layout of srkit.data.conditions.CONDITION_CHANNELS (models do not import the data side).
    condition_channels: int = config_field(16, "degradation-map channels (15 PCA + noise)")
    num_feat: int = config_field(128, "feature channels of the EDSR-like body")
    num_blocks: int = config_field(15, "residual blocks of the body")
    res_scale: float = config_field(0.1, "residual scaling inside the body's blocks (EDSR)")
    kernel_size: int = config_field(5, "size k of the per-pixel k x k dynamic kernels (odd)")
    num_common_blocks: int = config_field(2, "common (output-size) dynamic blocks after the upsampling one")
    image_feat: int = config_field(16, "width of each dynamic block's image path (3 convs on the image)")
    block_feat: int = config_field(64, "width of the fusion conv from which kernels and residual are predicted")
    hr_feat: int = config_field(32, "channels of the body features brought to output size (sub-pixel conv)")
    kernel_norm: str = config_field("none", "dynamic kernel normalisation: none (raw) or softmax (DUF-style)")
    padding: str = config_field("replicate", "border of the dynamic convolutions: replicate, zeros or reflect")
    stage_loss_weights: tuple[float, ...] = config_field(
        (1.0, 1.0, 1.0), "multi-stage L1 weights, one per dynamic block output (the last is the result)"
    )

    def __post_init__(self) -> None:
        # A checkpoint's JSON metadata turns the tuple into a list; keep the config hashable/typed.
        if isinstance(self.stage_loss_weights, (list, np.ndarray)):
            self.stage_loss_weights = tuple(float(w) for w in self.stage_loss_weights)
        _validate(self)


def _validate(cfg: UDVDConfig) -> None:
    def bad(msg: str) -> None:
        raise ConfigError(f"UDVD config: {msg}")

    check_int_fields(cfg, "UDVD", positive=("scale", "num_in_ch", "condition_channels", "num_feat", "image_feat",
                                            "block_feat", "hr_feat"),
                     non_negative=("num_blocks", "num_common_blocks"))
    if not isinstance(cfg.kernel_size, int) or cfg.kernel_size < 1 or cfg.kernel_size % 2 == 0:
        bad(f"kernel_size must be an odd positive integer, got {cfg.kernel_size!r}")
    if cfg.kernel_norm not in KERNEL_NORMS:
        bad(f"kernel_norm must be one of {', '.join(KERNEL_NORMS)}, got {cfg.kernel_norm!r}")
    if cfg.padding not in PADDINGS:
        bad(f"padding must be one of {', '.join(PADDINGS)}, got {cfg.padding!r}")
    if not isinstance(cfg.res_scale, (int, float)) or not math.isfinite(cfg.res_scale):
        bad(f"res_scale must be a finite number, got {cfg.res_scale!r}")
    weights = cfg.stage_loss_weights
    if not isinstance(weights, tuple) or len(weights) != cfg.num_common_blocks + 1:
        bad(f"stage_loss_weights needs {cfg.num_common_blocks + 1} values (one per dynamic block), got {weights!r}")
    if any(not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0 for w in weights):
        bad(f"stage_loss_weights must be finite non-negative numbers, got {weights!r}")


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=True)


def bilinear_upsample_kernels(scale: int, kernel_size: int) -> torch.Tensor:
    """``(scale*scale, k*k)`` kernels that make the upsampling dynamic convolution bilinear.

    Sub-pixel ``(dy, dx)`` of an LR pixel sits at offset ``(dy + 0.5) / s - 0.5`` (LR pixels) from its
    centre (``align_corners=False``); its bilinear weights fall on the 2x2 nearest LR pixels, inside
    any ``k >= 3`` window. With replicated borders this equals ``F.interpolate(mode="bilinear")``.
    """
    r = kernel_size // 2
    if r < 1 and scale > 1:
        raise ValueError("bilinear kernels need kernel_size >= 3")
    kernels = torch.zeros(scale, scale, kernel_size, kernel_size, dtype=torch.float64)
    for dy in range(scale):
        for dx in range(scale):
            oy, ox = (dy + 0.5) / scale - 0.5, (dx + 0.5) / scale - 0.5
            for off_y, wy in _linear_taps(oy):
                for off_x, wx in _linear_taps(ox):
                    kernels[dy, dx, r + off_y, r + off_x] += wy * wx
    return kernels.view(scale * scale, kernel_size * kernel_size).float()


def _linear_taps(offset: float) -> list[tuple[int, float]]:
    base = math.floor(offset)
    frac = offset - base
    return [(base, 1.0 - frac), (base + 1, frac)]


class DynamicBlock(nn.Module):
    """One refinement step: ``out = DyConv_s(image, K) + R`` with ``K`` and ``R`` predicted per pixel.

    ``scale > 1`` is the upsampling dynamic block (``s*s`` kernels per input pixel, residual predicted
    with ``C*s*s`` channels and pixel-shuffled); ``scale == 1`` the common dynamic block.
    ``feat`` must be at the size of ``image``.
    """

    def __init__(self, image_ch: int, feat_ch: int, image_feat: int, block_feat: int, kernel_size: int,
                 scale: int = 1, kernel_norm: str = "none", padding: str = "replicate"):
        super().__init__()
        self.scale, self.kernel_size = scale, kernel_size
        self.kernel_norm, self.padding = kernel_norm, padding
        self.image_path = nn.Sequential(
            _conv(image_ch, image_feat), nn.ReLU(inplace=True),
            _conv(image_feat, image_feat), nn.ReLU(inplace=True),
            _conv(image_feat, image_feat), nn.ReLU(inplace=True),
        )
        self.fuse = _conv(image_feat + feat_ch, block_feat)
        self.kernel_head = _conv(block_feat, scale * scale * kernel_size * kernel_size)
        self.residual_head = _conv(block_feat, image_ch * scale * scale)
        if not self.kernel_head.weight.is_meta:
            # On the meta device (``srkit models`` counting parameters, checkpoint preset matching)
            # there is nothing to initialise, and torch's meta normal_ costs ~2-5 s on first use.
            self.reset_heads()

    def reset_heads(self, weight_scale: float = 0.1) -> None:
        """Heads start near a plain interpolation (see the module docstring); ``weight_scale=0`` makes
        the block exactly bilinear upsampling (``scale > 1``) or the identity (``scale == 1``)."""
        scaled_kaiming_init_(self.kernel_head, weight_scale)
        scaled_kaiming_init_(self.residual_head, weight_scale)
        k2 = self.kernel_size * self.kernel_size
        with torch.no_grad():
            if self.scale > 1 and self.kernel_size >= 3:
                start = bilinear_upsample_kernels(self.scale, self.kernel_size)
            else:  # identity (nearest-neighbour upsampling when scale > 1 and k = 1)
                start = torch.zeros(self.scale * self.scale, k2)
                start[:, k2 // 2] = 1.0
            if self.kernel_norm == "softmax":
                # Logits whose softmax is the start kernel (zeros get a large negative logit).
                start = torch.log(start.clamp_min(1e-4))
            self.kernel_head.bias.copy_(start.reshape(-1))

    def predict(self, image: torch.Tensor, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-pixel kernels ``(N, s*s*k*k, H, W)`` (normalised) and the residual ``(N, C, sH, sW)``."""
        h = self.image_path(image)
        h = F.relu(self.fuse(torch.cat([h, feat], 1)), inplace=True)
        kernels = self.kernel_head(h)
        if self.kernel_norm == "softmax":
            n, _, hh, ww = kernels.shape
            k2 = self.kernel_size * self.kernel_size
            kernels = torch.softmax(kernels.view(n, -1, k2, hh, ww), dim=2).view(n, -1, hh, ww)
        residual = self.residual_head(h)
        if self.scale > 1:
            residual = F.pixel_shuffle(residual, self.scale)
        return kernels, residual

    def apply_kernels(self, image: torch.Tensor, kernels: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Apply given kernels and residual: ``DyConv_s(image, kernels) + residual``."""
        if self.scale > 1:
            out = dynamic_upsample_conv2d(image, kernels, self.scale, padding=self.padding)
        else:
            out = dynamic_conv2d(image, kernels, padding=self.padding)
        return out + residual

    def forward(self, image: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        kernels, residual = self.predict(image, feat)
        return self.apply_kernels(image, kernels, residual)


def expand_maps(x: torch.Tensor, maps: torch.Tensor | np.ndarray | None, channels: int, model: str) -> torch.Tensor:
    """Degradation maps checked against the image ``x`` (N, C, H, W) and expanded to ``(N, channels, H, W)``.

    Accepted: ``(N, channels, H, W)``, ``(1, channels, H, W)``, ``(channels, H, W)`` (one for the batch),
    ``(N, channels)`` / ``(N, channels, 1, 1)`` (spatially uniform). ``model`` names the caller in errors.
    """
    cc = channels
    if maps is None:
        raise ValueError(f"{model} needs degradation maps (N, {cc}, H, W); build them with udvd_condition()")
    maps = torch.as_tensor(maps, dtype=x.dtype, device=x.device)
    n, _, h, w = x.shape
    if maps.dim() == 3:  # one (16, H, W) for the whole batch
        maps = maps.unsqueeze(0)
    if maps.dim() == 2:  # (N, 16): one degradation per image, spatially uniform
        maps = maps[:, :, None, None]
    fits = maps.dim() == 4 and maps.shape[1] == cc and maps.shape[0] in (1, n)
    if not fits or maps.shape[2:] not in ((1, 1), (h, w)):
        raise ValueError(
            f"degradation maps must be (N, {cc}, H, W) matching the image {tuple(x.shape)} "
            f"(or (N, {cc}) / ({cc}, H, W) to broadcast), got {tuple(maps.shape)}"
        )
    return maps.expand(n, cc, h, w)


class UDVD(SRModel):
    """UDVD; ``forward(x (N, 3, H, W), maps (N, 16, H, W)) -> SROutput(I_3, stages=(I_1, I_2, I_3))``."""

    family = "udvd"

    def __init__(self, config: UDVDConfig):
        super().__init__(config)
        cfg = config
        s, c = cfg.scale, cfg.num_in_ch
        self.conv_first = _conv(c + cfg.condition_channels, cfg.num_feat)
        self.body = make_layer(ResidualBlockNoBN, cfg.num_blocks, num_feat=cfg.num_feat, res_scale=cfg.res_scale)
        self.conv_after_body = _conv(cfg.num_feat, cfg.num_feat)
        self.upsample_block = DynamicBlock(c, cfg.num_feat, cfg.image_feat, cfg.block_feat, cfg.kernel_size,
                                           scale=s, kernel_norm=cfg.kernel_norm, padding=cfg.padding)
        if cfg.num_common_blocks > 0:
            # Sub-pixel convolution: body features to output size, once for all common blocks.
            self.feat_upsample = nn.Sequential(_conv(cfg.num_feat, cfg.hr_feat * s * s), nn.PixelShuffle(s))
        else:
            self.feat_upsample = None
        self.common_blocks = nn.ModuleList(
            DynamicBlock(c, cfg.hr_feat, cfg.image_feat, cfg.block_feat, cfg.kernel_size,
                         scale=1, kernel_norm=cfg.kernel_norm, padding=cfg.padding)
            for _ in range(cfg.num_common_blocks)
        )

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(scale=self.config.scale, num_frames=1, center_index=0, input_kind="image",
                         pad_multiple=1, condition="degradation")

    def _check_maps(self, x: torch.Tensor, maps: torch.Tensor | np.ndarray | None) -> torch.Tensor:
        return expand_maps(x, maps, self.config.condition_channels, "UDVD")

    def features(self, x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """Body features ``F`` (N, num_feat, H, W) of the LR image and its (checked) maps."""
        feat = self.conv_first(torch.cat([x, maps], 1))
        return feat + self.conv_after_body(self.body(feat))

    def forward(self, x: torch.Tensor, maps: torch.Tensor | np.ndarray | None = None) -> SROutput:
        if x.dim() != 4 or x.shape[1] != self.config.num_in_ch:
            raise ValueError(f"UDVD expects images (N, {self.config.num_in_ch}, H, W), got {tuple(x.shape)}")
        maps = self._check_maps(x, maps)
        feat = self.features(x, maps)
        image = self.upsample_block(x, feat)
        stages = [image]
        if self.common_blocks:
            hr_feat = self.feat_upsample(feat)
            for block in self.common_blocks:
                image = block(image, hr_feat)
                stages.append(image)
        return SROutput(image, tuple(stages), {})


# ---------------------------------------------------------------------- checkpoints
def infer_config(state: dict[str, torch.Tensor]) -> tuple[str, dict[str, Any]] | None:
    """``(preset, overrides)`` of the UDVD whose parameters have these names and shapes, or None.

    For checkpoints without srkit metadata (bare state dicts, BasicSR-style ``params``/``params_ema``
    files) trained with non-preset widths or depths. Every size is read from a weight shape;
    ``kernel_norm``, ``padding`` and ``res_scale`` have no parameters and take their defaults (srkit
    safetensors files store the full config and do not need this).
    """
    try:
        first = state["conv_first.weight"].shape
        image0 = state["upsample_block.image_path.0.weight"].shape
        fuse = state["upsample_block.fuse.weight"].shape
        kernel_out = state["upsample_block.kernel_head.weight"].shape[0]
        residual_out = state["upsample_block.residual_head.weight"].shape[0]
    except (KeyError, AttributeError):
        return None
    channels, image_feat, block_feat, num_feat = image0[1], image0[0], fuse[0], first[0]
    if residual_out % channels:
        return None
    ss = residual_out // channels
    scale = math.isqrt(ss)
    k = math.isqrt(kernel_out // ss) if kernel_out % ss == 0 else 0
    if scale * scale != ss or k * k * ss != kernel_out:
        return None
    num_blocks = len({key.split(".")[1] for key in state if key.startswith("body.")})
    num_common = len({key.split(".")[1] for key in state if key.startswith("common_blocks.")})
    hr_feat = state["feat_upsample.0.weight"].shape[0] // ss if "feat_upsample.0.weight" in state else 32
    overrides: dict[str, Any] = dict(
        scale=scale, num_in_ch=channels, condition_channels=first[1] - channels, num_feat=num_feat,
        num_blocks=num_blocks, kernel_size=k, num_common_blocks=num_common, image_feat=image_feat,
        block_feat=block_feat, hr_feat=hr_feat, stage_loss_weights=(1.0,) * (num_common + 1),
    )
    return (f"udvd-x{scale}" if scale in (2, 3, 4) else "udvd-x4"), overrides


register_checkpoint_support("udvd", config_inferrer=infer_config)


# ---------------------------------------------------------------------- presets
def _build(scale: int, overrides: dict[str, Any]) -> UDVD:
    # Overrides win, ``scale`` included: a checkpoint's config is complete and may be rebuilt
    # through any preset of the family (srkit.models.checkpoint relies on that).
    return UDVD(UDVDConfig(**{"scale": scale, **overrides}))


@register_model("udvd-x2", family="udvd",
                description="UDVD x2 non-blind SR for variational blur + noise (per-pixel dynamic convolutions)")
def udvd_x2(**overrides: Any) -> UDVD:
    return _build(2, overrides)


@register_model("udvd-x3", family="udvd",
                description="UDVD x3 non-blind SR for variational blur + noise (per-pixel dynamic convolutions)")
def udvd_x3(**overrides: Any) -> UDVD:
    return _build(3, overrides)


@register_model("udvd-x4", family="udvd",
                description="UDVD x4 non-blind SR for variational blur + noise (per-pixel dynamic convolutions)")
def udvd_x4(**overrides: Any) -> UDVD:
    return _build(4, overrides)


# CPU-sized: the body is narrower and shorter, and the output-size layers (which run on 16x the LR
# pixels and cost most of the time at x4) are thinner than the paper's.
_S = dict(num_feat=64, num_blocks=8, image_feat=16, block_feat=32, hr_feat=16)


@register_model("udvd-s-x4", family="udvd", pretrained="udvd-s-x4.safetensors",
                description="UDVD-S x4 non-blind SR for blur + noise (64 ch, 8 blocks): srkit's CPU-sized model, "
                            "trained by srkit, weights shipped (pretrained=True)")
def udvd_s_x4(**overrides: Any) -> UDVD:
    return _build(4, {**_S, **overrides})
