"""EDVR: Video Restoration with Enhanced Deformable Convolutional Networks (Wang et al., CVPRW 2019).

All of the paper's network, with BasicSR's module and parameter names (``basicsr/archs/edvr_arch.py``)
so that the official checkpoints load with a strict key-and-shape check (the 2019 ``EDVR_arch`` and
MMagic ``EDVRNet`` names are renamed on load by the key adapters registered at the end of this file):

* feature extraction: ``conv_first`` + LeakyReLU(0.1), ``num_extract_block`` residual blocks without
  BN, and a 3-level pyramid (``conv_l2_*``, ``conv_l3_*``; stride-2 convolutions);
* optional **predeblur** module (``with_predeblur``, the SR-blur and deblurring tracks) and optional
  **HR input** (``hr_in``: frames at output size are reduced x4 by strided convolutions; deblurring
  at scale 1). Without predeblur the HR-input stem is the 2019 code's ``conv_first_1/2/3`` (BasicSR
  only supports HR input together with predeblur);
* **PCD alignment**: per pyramid level, offsets from concat(neighbour, reference), coarser offsets
  upsampled bilinearly and doubled, a modulated deformable convolution (DCNv2: offsets + sigmoid mask,
  deformable groups), fused with the upsampled coarser aligned features; a cascading DCN at level 1;
* **TSA fusion**: temporal attention (sigmoid of the per-position dot product of embeddings with the
  reference), 1x1 fusion, spatial attention pyramid (max + avg pooling, two levels, multiplicative
  ``x2`` and additive terms); or a plain 1x1 fusion (``with_tsa=False``);
* the paper's **PCD ablation** (``with_pcd=False``, presets ``edvr-m-wopcd`` and ``edvr-m-wopcd-wotsa``):
  the level-1 features of all T frames go to the fusion (TSA or 1x1) as they are, unaligned. The
  feature pyramid (``conv_l2_*``, ``conv_l3_*``) exists only to feed PCD's coarse-to-fine offsets, so
  it is absent too: such a network's state dict is the full one minus ``pcd_align.*`` and the pyramid
  convolutions (a pyramid nobody reads would get no gradient and ship untrained weights);
* reconstruction residual blocks, two pixel-shuffle x2 steps, ``conv_hr``, ``conv_last``, and the
  residual is added to the bilinearly upsampled centre frame (the centre frame itself with HR input).

Differences from BasicSR are in execution only (outputs agree to float rounding; see
``tests/test_edvr.py`` and the independent reference ``tests/reference/edvr_reference.py``):

* any H/W: inputs are padded (reflection) to :attr:`ModelSpec.pad_multiple` and cropped back;
* the reference half of every ``concat(neighbour, reference)`` convolution is computed once per clip
  instead of once per frame (a convolution of a concatenation is the sum of the convolutions of the
  parts);
* training aligns the T neighbours in ONE batched PCD pass and computes the temporal attention as one
  batched product; inference (no autograd) aligns them one at a time, as BasicSR does, but writes
  each weighted frame straight into the fusion input (smaller, cache-resident intermediates);
* training may take the window's optical flow (``forward(x, flow=...)``) and return the
  **offset-fidelity loss** of Chan et al. ("Understanding Deformable Alignment in Video
  Super-Resolution", AAAI 2021) as the aux loss ``offset_fidelity`` (:func:`offset_fidelity_loss`): each
  DCN offset is pulled towards the flow only where it is more than a threshold away, which teaches PCD
  to align from the first iterations instead of after many thousands (the network is unchanged);
* a **feature cache** for streaming: :meth:`EDVR.encode` computes a frame's pyramid once and
  :meth:`EDVR.decode` restores the centre frame from T cached pyramids; ``forward`` is exactly
  ``decode(encode(frames))``.

The deformable convolution is :mod:`srkit.ops` (pure PyTorch, torchvision semantics).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from srkit.errors import ConfigError, InputError
from srkit.models.api import ModelSpec, SRModel, SROutput, check_int_fields, config_field
from srkit.models.blocks import (ResidualBlockNoBN, crop_to, leaky_kaiming_init_, make_layer, pad_to_multiple,
                                  scaled_kaiming_init_)
from srkit.models.checkpoint import StateDict, register_checkpoint_support
from srkit.models.registry import register_model
from srkit.ops import ModulatedDeformConv2d, OffsetMonitor
from srkit.ops.fused_conv import conv_act
from srkit.utils.device import is_channels_last

__all__ = ["EDVR", "EDVRConfig", "DCNv2Pack", "PCDAlignment", "TSAFusion", "PredeblurModule"]

# Width of the layers after the pixel shuffles; fixed in every published EDVR (and in its checkpoints).
_HR_FEAT = 64


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    # In-place is safe everywhere it is used (the argument is always a fresh conv output).
    return F.leaky_relu(x, 0.1, inplace=True)


def _conv_lrelu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``_lrelu(conv(x))``, one fused oneDNN op during CPU inference (see srkit.ops.fused_conv)."""
    return conv_act(conv, x, "leaky_relu", 0.1)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _weight_part(conv: nn.Conv2d, channels: slice) -> torch.Tensor:
    """The input channels ``channels`` of ``conv``'s weight: one part of a ``conv(cat([nbr, ref], 1))``."""
    # Made contiguous (a few hundred KB): a strided weight sends conv2d to its slow path.
    w = conv.weight
    return w[:, channels].contiguous(memory_format=torch.channels_last if is_channels_last(w) else torch.contiguous_format)


def _ref_term(conv: nn.Conv2d, ref: torch.Tensor) -> torch.Tensor:
    """The second input's share of ``conv(cat([nbr, ref], 1))`` (see _cat_conv): for the reference frame
    computed once per clip; for a same-batch second input (the upsampled coarser offsets and features)
    it replaces the concatenation (a copy of both inputs) by a second convolution and an add."""
    part = _weight_part(conv, slice(conv.in_channels - ref.shape[1], None))
    return F.conv2d(ref, part, None, conv.stride, conv.padding, conv.dilation)


def _cat_conv(conv: nn.Conv2d, nbr: torch.Tensor, ref_term: torch.Tensor) -> torch.Tensor:
    """``conv(cat([nbr_i, ref], 1))`` for all T neighbours ``nbr (B*T, C, h, w)`` of a reference whose
    share ``ref_term = _ref_term(conv, ref)`` is ``(B, Cout, h, w)``.

    A convolution of a concatenation is the sum of the convolutions of the parts (weights split along
    input channels), so the reference's share is computed once per clip and broadcast over the T
    neighbours instead of being recomputed (and its input copied into a concat) T times.
    """
    out = F.conv2d(nbr, _weight_part(conv, slice(0, nbr.shape[1])), conv.bias, conv.stride, conv.padding, conv.dilation)
    t = out.shape[0] // ref_term.shape[0]
    # (B*T, C, h, w) viewed as (B, T, C, h, w) + (B, 1, C, h, w): the reference result is not copied.
    return out.unflatten(0, (ref_term.shape[0], t)).add_(ref_term.unsqueeze(1)).flatten(0, 1)


class DCNv2Pack(ModulatedDeformConv2d):
    """Modulated deformable convolution whose offsets and mask come from a separate feature map.

    ``conv_offset`` predicts ``3 * deformable_groups * k * k`` channels: the first two thirds are the
    offsets (laid out as torchvision/mmcv expect), the last third the mask logits. It is zero-initialised
    so a fresh network starts as a plain convolution with mask 0.5 (as BasicSR and mmcv do).
    The mean |offset| is watched by an :class:`~srkit.ops.OffsetMonitor`: diverging offsets (the classic
    EDVR training failure) give one warning per interval instead of one per call.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1,
                 deformable_groups: int = 8, offset_warn_threshold: float | None = 50.0):
        super().__init__(in_channels, out_channels, kernel_size, stride=1, padding=padding, dilation=1,
                         groups=1, deformable_groups=deformable_groups, bias=True)
        self.conv_offset = nn.Conv2d(in_channels, deformable_groups * 3 * kernel_size * kernel_size,
                                     kernel_size, 1, padding, bias=True)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)
        self.monitor = OffsetMonitor(threshold=offset_warn_threshold) if offset_warn_threshold else None
        # Set by EDVR.forward(flow=...) for the offset-fidelity loss: the training path keeps its
        # offsets (in the autograd graph) in ``last_offset``.
        self.keep_offset = False
        self.last_offset: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        conv = self.conv_offset
        if torch.is_grad_enabled() and (feat.requires_grad or conv.weight.requires_grad):
            out = conv(feat)
            # chunk(3) then cat(o1, o2) is exactly the first two thirds of the channels: slice, no copy.
            n = out.shape[1] // 3
            offset = out[:, : 2 * n]
            mask = torch.sigmoid(out[:, 2 * n :])
            if self.keep_offset:
                self.last_offset = offset
        else:
            # Inference: the offsets and the mask logits as two convolutions (the weight split along
            # output channels: same result, same cost).  With channels_last features each output is
            # then a dense tensor, which the deformable conv reorders with fast blocked transposes
            # and the sigmoid runs over contiguous memory; slices of one 216-channel output are
            # strided and several times slower to read.
            n = 2 * conv.out_channels // 3
            offset = F.conv2d(feat, conv.weight[:n], conv.bias[:n], conv.stride, conv.padding)
            mask = torch.sigmoid_(F.conv2d(feat, conv.weight[n:], conv.bias[n:], conv.stride, conv.padding))
        if self.monitor is not None:
            # Training: the exact mean (BasicSR's check; the trainer's divergence guard reads it).
            # Inference: a 1/16 spatial sample estimates it at a third of the cost of a full pass
            # over the largest tensor of the network.
            self.monitor.update(offset.detach() if self.training else offset.detach()[..., ::4, ::4])
        return super().forward(x, offset, mask)


class PCDAlignment(nn.Module):
    """Pyramid, Cascading and Deformable alignment of neighbour features to the reference.

    ``forward(nbr, ref)`` takes pyramids ``[L1, L2, L3]``: ``nbr`` levels are ``(B*T, C, h, w)`` (all
    neighbours of a clip, batch-major), ``ref`` levels ``(B, C, h, w)``; the reference's share of each
    ``concat(neighbour, reference)`` convolution is computed once per clip and broadcast over T.
    """

    def __init__(self, num_feat: int = 64, deformable_groups: int = 8, offset_warn_threshold: float | None = 50.0):
        super().__init__()
        self.offset_conv1 = nn.ModuleDict()
        self.offset_conv2 = nn.ModuleDict()
        self.offset_conv3 = nn.ModuleDict()
        self.dcn_pack = nn.ModuleDict()
        self.feat_conv = nn.ModuleDict()
        # Registration order l3, l2, l1 as BasicSR (state-dict order only; keys are what matters).
        for i in (3, 2, 1):
            level = f"l{i}"
            self.offset_conv1[level] = nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1)
            if i == 3:
                self.offset_conv2[level] = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            else:
                self.offset_conv2[level] = nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1)
                self.offset_conv3[level] = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.dcn_pack[level] = DCNv2Pack(num_feat, num_feat, 3, padding=1, deformable_groups=deformable_groups,
                                             offset_warn_threshold=offset_warn_threshold)
            if i < 3:
                self.feat_conv[level] = nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1)
        self.cas_offset_conv1 = nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1)
        self.cas_offset_conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.cas_dcnpack = DCNv2Pack(num_feat, num_feat, 3, padding=1, deformable_groups=deformable_groups,
                                     offset_warn_threshold=offset_warn_threshold)

    def forward(self, nbr: Sequence[torch.Tensor], ref: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.align(nbr, self.reference_terms(ref))

    def reference_terms(self, ref: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The reference's shares of the ``concat(neighbour, reference)`` convolutions: ``offset_conv1``
        at levels 1, 2, 3, then ``cas_offset_conv1``.  They depend on the reference only, so a clip
        computes them once whether its neighbours are aligned together or one at a time."""
        terms = [_ref_term(self.offset_conv1[f"l{i}"], ref[i - 1]) for i in (1, 2, 3)]
        return terms + [_ref_term(self.cas_offset_conv1, ref[0])]

    def align(self, nbr: Sequence[torch.Tensor], ref_terms: Sequence[torch.Tensor]) -> torch.Tensor:
        """Aligned level-1 features of the neighbours ``nbr`` (levels ``(B*T', C, h, w)``, any T')."""
        up_offset = up_feat = None
        feat = nbr[0]
        for i in (3, 2, 1):
            level = f"l{i}"
            offset = _lrelu(_cat_conv(self.offset_conv1[level], nbr[i - 1], ref_terms[i - 1]))
            if i == 3:
                offset = _conv_lrelu(self.offset_conv2[level], offset)
            else:
                offset = _lrelu(_cat_conv(self.offset_conv2[level], offset, _ref_term(self.offset_conv2[level], up_offset)))
                offset = _conv_lrelu(self.offset_conv3[level], offset)
            feat = self.dcn_pack[level](nbr[i - 1], offset)
            if i < 3:
                feat = _cat_conv(self.feat_conv[level], feat, _ref_term(self.feat_conv[level], up_feat))
            if i > 1:
                feat = _lrelu(feat)
                # Offsets are in pixels of their level: twice the resolution means twice the displacement.
                up_offset = _up2(offset).mul_(2)
                up_feat = _up2(feat)
        offset = _lrelu(_cat_conv(self.cas_offset_conv1, feat, ref_terms[3]))
        offset = _conv_lrelu(self.cas_offset_conv2, offset)
        return _lrelu(self.cas_dcnpack(feat, offset))


class TSAFusion(nn.Module):
    """Temporal and Spatial Attention fusion of the T aligned feature maps into one.

    Temporal: ``sigmoid(<temporal_attn2(F_t), temporal_attn1(F_ref)>)`` per position weights each frame.
    Spatial: a two-level pyramid (max + avg pooling) gives a multiplicative mask (``x2`` so that it
    starts near 1) and an additive term, as SFT does.
    """

    def __init__(self, num_feat: int = 64, num_frame: int = 5, center_frame_idx: int = 2):
        super().__init__()
        self.center_frame_idx = center_frame_idx
        self.temporal_attn1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.temporal_attn2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.feat_fusion = nn.Conv2d(num_frame * num_feat, num_feat, 1, 1)
        self.spatial_attn1 = nn.Conv2d(num_frame * num_feat, num_feat, 1)
        self.spatial_attn2 = nn.Conv2d(num_feat * 2, num_feat, 1)
        self.spatial_attn3 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.spatial_attn4 = nn.Conv2d(num_feat, num_feat, 1)
        self.spatial_attn5 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.spatial_attn_l1 = nn.Conv2d(num_feat, num_feat, 1)
        self.spatial_attn_l2 = nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1)
        self.spatial_attn_l3 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.spatial_attn_add1 = nn.Conv2d(num_feat, num_feat, 1)
        self.spatial_attn_add2 = nn.Conv2d(num_feat, num_feat, 1)

    @staticmethod
    def _pool(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.max_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1)], dim=1)

    def forward(self, aligned: torch.Tensor) -> torch.Tensor:
        """``aligned``: ``(B, T, C, h, w)`` -> fused ``(B, C, h, w)``."""
        b, t, c, h, w = aligned.shape
        emb_ref = self.temporal_attn1(aligned[:, self.center_frame_idx])
        return self.fuse(self.weight_frames(aligned, emb_ref).reshape(b, t * c, h, w))

    def weight_frames(self, aligned: torch.Tensor, emb_ref: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Temporal attention: ``aligned (B, T', C, h, w)`` (any T' frames) times
        ``sigmoid(<temporal_attn2(F_t), emb_ref>)`` per position; ``emb_ref = temporal_attn1(F_centre)``.
        Written into ``out`` (same shape, any strides) when given."""
        b, t = aligned.shape[:2]
        emb = self.temporal_attn2(aligned.flatten(0, 1)).unflatten(0, (b, t))
        # One batched dot product over channels for all frames (BasicSR loops over t).
        corr = torch.sigmoid((emb * emb_ref.unsqueeze(1)).sum(2, keepdim=True))  # (B, T', 1, h, w)
        return aligned * corr if out is None else torch.mul(aligned, corr, out=out)

    def fuse(self, weighted: torch.Tensor) -> torch.Tensor:
        """Fusion and spatial attention of the weighted frames ``(B, T*C, h, w)``."""
        feat = _conv_lrelu(self.feat_fusion, weighted)
        attn = _conv_lrelu(self.spatial_attn1, weighted)
        attn = _conv_lrelu(self.spatial_attn2, self._pool(attn))
        attn_level = _conv_lrelu(self.spatial_attn_l1, attn)
        attn_level = _conv_lrelu(self.spatial_attn_l2, self._pool(attn_level))
        attn_level = _up2(_conv_lrelu(self.spatial_attn_l3, attn_level))
        attn = _conv_lrelu(self.spatial_attn3, attn) + attn_level
        attn = _up2(_conv_lrelu(self.spatial_attn4, attn))
        attn = self.spatial_attn5(attn)
        attn_add = self.spatial_attn_add2(_conv_lrelu(self.spatial_attn_add1, attn))
        return feat * torch.sigmoid(attn) * 2 + attn_add


class PredeblurModule(nn.Module):
    """The pre-deblurring pyramid of residual blocks applied to every frame before feature extraction.

    With ``hr_in`` the frames are first reduced x4 by two stride-2 convolutions.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, hr_in: bool = False):
        super().__init__()
        self.hr_in = hr_in
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        if hr_in:
            self.stride_conv_hr1 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
            self.stride_conv_hr2 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.stride_conv_l2 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.stride_conv_l3 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.resblock_l3 = ResidualBlockNoBN(num_feat)
        self.resblock_l2_1 = ResidualBlockNoBN(num_feat)
        self.resblock_l2_2 = ResidualBlockNoBN(num_feat)
        self.resblock_l1 = nn.ModuleList([ResidualBlockNoBN(num_feat) for _ in range(5)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        l1 = _conv_lrelu(self.conv_first, x)
        if self.hr_in:
            l1 = _conv_lrelu(self.stride_conv_hr2, _conv_lrelu(self.stride_conv_hr1, l1))
        l2 = _conv_lrelu(self.stride_conv_l2, l1)
        l3 = _conv_lrelu(self.stride_conv_l3, l2)
        l3 = _up2(self.resblock_l3(l3))
        l2 = _up2(self.resblock_l2_2(self.resblock_l2_1(l2) + l3))
        l1 = self.resblock_l1[1](self.resblock_l1[0](l1)) + l2
        for block in self.resblock_l1[2:]:
            l1 = block(l1)
        return l1


@dataclass
class EDVRConfig:
    """Hyper-parameters of :class:`EDVR` (BasicSR's argument names; presets override some)."""

    num_in_ch: int = config_field(3, "input channels (3 for RGB)")
    num_out_ch: int = config_field(3, "output channels (must equal num_in_ch: the output is a residual)")
    num_feat: int = config_field(64, "feature channels (64 for EDVR-M, 128 for EDVR-L)")
    num_frame: int = config_field(5, "frames in the input window (5 for REDS, 7 for Vimeo-90K)")
    deformable_groups: int = config_field(8, "deformable groups of every DCN (must divide num_feat)")
    num_extract_block: int = config_field(5, "residual blocks of the per-frame feature extractor")
    num_reconstruct_block: int = config_field(10, "residual blocks of the reconstruction trunk (40 in EDVR-L)")
    center_frame_idx: int | None = config_field(None, "index of the restored (reference) frame; None = middle")
    hr_in: bool = config_field(False, "input at output size, reduced x4 inside (deblurring, scale 1)")
    with_predeblur: bool = config_field(False, "pre-deblurring pyramid before feature extraction (blurry input)")
    with_tsa: bool = config_field(True, "TSA fusion (temporal + spatial attention); False = 1x1 conv fusion")
    with_pcd: bool = config_field(
        True, "PCD alignment; False = the paper's ablation: features fused unaligned (no PCD, no pyramid)")
    scale: int = config_field(4, "output / input size: 4 for super-resolution, 1 with hr_in")
    offset_warn_threshold: float | None = config_field(
        50.0, "warn (once per interval) when a DCN's mean |offset| exceeds this; None disables monitoring")
    offset_fidelity_threshold: float = config_field(
        1.0, "training with flow: offsets within this many pixels (of their level) of the flow are not "
             "penalised by the offset-fidelity loss")


class EDVR(SRModel):
    """EDVR network. Input ``(N, T, C, H, W)`` RGB in [0, 1], any H/W; output ``(N, C, H*s, W*s)``."""

    family = "edvr"

    def __init__(self, config: EDVRConfig | None = None, **overrides: Any):
        config = config if config is not None else EDVRConfig(**overrides)
        _validate(config)
        super().__init__(config)
        cfg = config
        nf = cfg.num_feat
        self.center_frame_idx = cfg.num_frame // 2 if cfg.center_frame_idx is None else cfg.center_frame_idx
        self.hr_in = cfg.hr_in
        self.with_predeblur = cfg.with_predeblur
        self.with_tsa = cfg.with_tsa
        self.with_pcd = cfg.with_pcd

        if cfg.with_predeblur:
            self.predeblur = PredeblurModule(cfg.num_in_ch, nf, hr_in=cfg.hr_in)
            self.conv_1x1 = nn.Conv2d(nf, nf, 1, 1)
        elif cfg.hr_in:
            # The 2019 code's HR-input stem (BasicSR has HR input only together with predeblur).
            self.conv_first_1 = nn.Conv2d(cfg.num_in_ch, nf, 3, 1, 1)
            self.conv_first_2 = nn.Conv2d(nf, nf, 3, 2, 1)
            self.conv_first_3 = nn.Conv2d(nf, nf, 3, 2, 1)
        else:
            self.conv_first = nn.Conv2d(cfg.num_in_ch, nf, 3, 1, 1)
        self.feature_extraction = make_layer(ResidualBlockNoBN, cfg.num_extract_block, num_feat=nf)
        if cfg.with_pcd:
            # The pyramid serves PCD only (coarse-to-fine offsets): the woPCD ablation has neither.
            self.conv_l2_1 = nn.Conv2d(nf, nf, 3, 2, 1)
            self.conv_l2_2 = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_l3_1 = nn.Conv2d(nf, nf, 3, 2, 1)
            self.conv_l3_2 = nn.Conv2d(nf, nf, 3, 1, 1)
            self.pcd_align = PCDAlignment(nf, cfg.deformable_groups, cfg.offset_warn_threshold)
        if cfg.with_tsa:
            self.fusion: nn.Module = TSAFusion(nf, cfg.num_frame, self.center_frame_idx)
        else:
            self.fusion = nn.Conv2d(cfg.num_frame * nf, nf, 1, 1)

        self.reconstruction = make_layer(ResidualBlockNoBN, cfg.num_reconstruct_block, num_feat=nf)
        self.upconv1 = nn.Conv2d(nf, nf * 4, 3, 1, 1)
        self.upconv2 = nn.Conv2d(nf, _HR_FEAT * 4, 3, 1, 1)
        self.conv_hr = nn.Conv2d(_HR_FEAT, _HR_FEAT, 3, 1, 1)
        self.conv_last = nn.Conv2d(_HR_FEAT, cfg.num_out_ch, 3, 1, 1)

        # Residual branches start small (BasicSR's default_init_weights(scale=0.1)) and the DCN offset
        # predictors at zero, as in BasicSR. Every other convolution gets a variance-preserving
        # Kaiming init with zero bias instead of PyTorch's default: with the default, the input signal
        # fades below the biases on its way through PCD and TSA and a fresh network does not learn
        # (see leaky_kaiming_init_). conv_last starts small so the output starts near the bilinear
        # upsampling it is added to. Published checkpoints are unaffected (they overwrite all of it).
        on_meta = self.conv_last.weight.is_meta  # parameter counting: nothing to initialise
        if not on_meta:
            in_residual = {id(c) for m in self.modules() if isinstance(m, ResidualBlockNoBN) for c in m.modules()}
            offset_convs = {id(m.conv_offset) for m in self.modules() if isinstance(m, DCNv2Pack)}
            for m in self.modules():
                if isinstance(m, ResidualBlockNoBN):
                    scaled_kaiming_init_(m, 0.1)
                elif (isinstance(m, (nn.Conv2d, ModulatedDeformConv2d)) and id(m) not in in_residual
                      and id(m) not in offset_convs):
                    leaky_kaiming_init_(m)
            with torch.no_grad():
                self.conv_last.weight.mul_(0.1)
        first_monitor = None
        for name, m in self.named_modules():
            if isinstance(m, DCNv2Pack) and m.monitor is not None:
                m.monitor.name = f"EDVR {name}"  # the warning says which DCN diverges
                # Diverging offsets usually hit all four DCNs at once: one warning per interval
                # for the network, not one per DCN.
                if first_monitor is None:
                    first_monitor = m.monitor
                else:
                    m.monitor.share_rate_limit(first_monitor)

    # ------------------------------------------------------------------ spec and monitoring
    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(
            scale=self.config.scale,
            num_frames=self.config.num_frame,
            center_index=self.center_frame_idx,
            input_kind="video",
            # Three pyramid levels (x1/2, x1/4) and the TSA pooling need H, W divisible by 4 at
            # feature level (the woPCD-woTSA ablation has neither); HR input is reduced x4 first.
            pad_multiple=(4 if self.hr_in else 1) * (4 if self.with_pcd or self.with_tsa else 1),
            condition=None,
            hr_input=self.hr_in,
            takes_flow=self.with_pcd,
        )

    def max_offset_abs_mean(self) -> float | None:
        """Largest mean |offset| seen by any DCN at its last forward (None before any / if unmonitored).

        The trainer reads this to detect diverging offsets (EDVR's known training instability).
        """
        values = [m.monitor.last_abs_mean for m in self.modules()
                  if isinstance(m, DCNv2Pack) and m.monitor is not None and m.monitor.last_abs_mean is not None]
        return max(values) if values else None

    # ------------------------------------------------------------------ feature cache API
    def encode(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """Per-frame feature pyramid ``[L1, L2, L3]`` of ``frames (B, C, H, W)`` (already padded);
        ``[L1]`` alone without PCD (``with_pcd=False``: no pyramid).

        Everything that depends on one frame only (predeblur / HR-input reduction, feature extraction,
        pyramid) happens here, so a streaming caller computes it once per frame and reuses it in every
        window that contains the frame.
        """
        if self.with_predeblur:
            l1 = self.conv_1x1(self.predeblur(frames))
        elif self.hr_in:
            l1 = _conv_lrelu(self.conv_first_1, frames)
            l1 = _conv_lrelu(self.conv_first_2, l1)
            l1 = _conv_lrelu(self.conv_first_3, l1)
        else:
            l1 = _conv_lrelu(self.conv_first, frames)
        l1 = self.feature_extraction(l1)
        if not self.with_pcd:
            return [l1]
        l2 = _conv_lrelu(self.conv_l2_2, _conv_lrelu(self.conv_l2_1, l1))
        l3 = _conv_lrelu(self.conv_l3_2, _conv_lrelu(self.conv_l3_1, l2))
        return [l1, l2, l3]

    def decode(self, feats: Sequence[Sequence[torch.Tensor]], center: torch.Tensor) -> torch.Tensor:
        """Restore the reference frame from ``T`` cached pyramids (each as :meth:`encode` returns it, batch ``B``).

        ``center`` is the reference frame's pixels ``(B, C, H, W)`` (padded like the input to
        :meth:`encode`); the result is ``(B, C, H*s, W*s)``.
        """
        if len(feats) != self.config.num_frame:
            raise InputError(f"EDVR decode: expected {self.config.num_frame} frame pyramids, got {len(feats)}")
        return self._reconstruct(self._align_and_fuse(feats), center)

    def _align_and_fuse(self, frames: Sequence[Sequence[torch.Tensor]],
                        levels: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Fused features of T pyramids ``frames`` (each ``[L1, L2, L3]``, batch ``B``): one neighbour
        at a time without autograd, all T in one batch with it (``levels``, the frames stacked as
        ``(B, T, C, h, w)``, is used when the caller has it, else built)."""
        if not torch.is_grad_enabled():
            return self._align_fuse_per_frame(frames)
        if levels is None:
            levels = [torch.stack([f[k] for f in frames], dim=1) for k in range(len(frames[0]))]
        return self._align_fuse(levels)

    def _align_fuse(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """PCD alignment of all T frames in one batch, then fusion: ``levels`` ``(B, T, C, h, w)`` ->
        ``(B, C, h, w)``.  The training path (one autograd graph over the batch)."""
        b, t = levels[0].shape[:2]
        if self.with_pcd:
            ci = self.center_frame_idx
            ref = [lv[:, ci] for lv in levels]
            nbr = [lv.flatten(0, 1) for lv in levels]  # (B*T, C, h, w), batch-major: free view
            aligned = self.pcd_align(nbr, ref)  # (B*T, C, h, w)
        else:
            # The PCD ablation: the fusion sees every frame's features where they are (unaligned).
            aligned = levels[0].flatten(0, 1)
        if self.with_tsa:
            return self.fusion(aligned.unflatten(0, (b, t)))
        # BasicSR's woTSA fusion is a bare 1x1 convolution (no activation).
        return self.fusion(aligned.reshape(b, -1, *aligned.shape[-2:]))

    def _align_fuse_per_frame(self, frames: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        """The same computation without autograd, one neighbour at a time (as BasicSR loops).

        Each level-1 intermediate is then one frame's map (EDVR-M at 320x180: 15 MB instead of 74 MB
        for five), which stays in cache and in the allocator's reused heap instead of fresh pages;
        no (B, T, ...) stack of the cached pyramids is built; and each aligned frame goes straight
        through the temporal attention into its slot of the fusion input, so the T aligned maps are
        never held together.  The reference's shares of the concat convolutions are computed once.
        """
        ci = self.center_frame_idx
        ref = frames[ci]
        terms = self.pcd_align.reference_terms(ref) if self.with_pcd else None
        b, c, h, w = ref[0].shape
        t = len(frames)
        nhwc = is_channels_last(ref[0])
        weighted = torch.empty((b, t * c, h, w), dtype=ref[0].dtype, device=ref[0].device,
                               memory_format=torch.channels_last if nhwc else torch.contiguous_format)
        slots = weighted.unflatten(1, (t, c))  # (B, T, C, h, w) view: slot i holds frame i's channels
        emb_ref = None
        for i in [ci] + [i for i in range(t) if i != ci]:  # the reference first: TSA needs its embedding
            # (B, C, h, w); the woPCD ablation fuses the frame's features unaligned.
            aligned = self.pcd_align.align(frames[i], terms) if terms is not None else frames[i][0]
            if self.with_tsa:
                if emb_ref is None:
                    emb_ref = self.fusion.temporal_attn1(aligned)
                self.fusion.weight_frames(aligned.unsqueeze(1), emb_ref, out=slots[:, i:i + 1])
            else:
                slots[:, i].copy_(aligned)
        return self.fusion.fuse(weighted) if self.with_tsa else self.fusion(weighted)

    def _reconstruct(self, feat: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """Reconstruction trunk, x4 pixel-shuffle upsampling, residual on the (upsampled) centre frame."""
        out = self.reconstruction(feat)
        # lrelu commutes with the shuffle (a permutation), so it is fused into the convolution before it.
        out = F.pixel_shuffle(_conv_lrelu(self.upconv1, out), 2)
        out = F.pixel_shuffle(_conv_lrelu(self.upconv2, out), 2)
        out = _conv_lrelu(self.conv_hr, out)
        out = self.conv_last(out)
        base = center if self.hr_in else F.interpolate(center, scale_factor=4, mode="bilinear", align_corners=False)
        return out + base

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, flow: torch.Tensor | None = None) -> torch.Tensor | SROutput:
        """``x (N, T, C, H, W)`` -> restored centre frame ``(N, C, H*s, W*s)``.

        With ``flow (N, T, 2, H', W')`` (training; ``(dx, dy)`` from the centre frame to each frame, in
        pixels of the level-1 features: H' = H, or H/4 with HR input) the result is an :class:`SROutput`
        whose aux loss ``offset_fidelity`` compares every DCN's offsets with it.
        """
        if flow is not None:
            return self._forward_with_offset_fidelity(x, flow)
        if x.dim() != 5:
            raise InputError(f"EDVR expects (N, T, C, H, W) frames, got a tensor of shape {tuple(x.shape)}")
        n, t, c = x.shape[:3]
        if t != self.config.num_frame or c != self.config.num_in_ch:
            raise InputError(
                f"EDVR ({self.preset or 'custom'}) expects {self.config.num_frame} frames of "
                f"{self.config.num_in_ch} channels, got {t} frames of {c}"
            )
        x, size = pad_to_multiple(x, self.spec.pad_multiple)
        feats = self.encode(x.flatten(0, 1))
        levels = [f.unflatten(0, (n, t)) for f in feats]
        feat = self._align_and_fuse([[lv[:, i] for lv in levels] for i in range(t)], levels)
        out = self._reconstruct(feat, x[:, self.center_frame_idx])
        return crop_to(out, size, self.config.scale)

    def _forward_with_offset_fidelity(self, x: torch.Tensor, flow: torch.Tensor) -> SROutput:
        if not self.with_pcd:
            raise ConfigError("EDVR without PCD has no alignment offsets: the offset-fidelity loss does not apply")
        n, t = x.shape[:2]
        feat_h, feat_w = (s // 4 for s in x.shape[-2:]) if self.hr_in else x.shape[-2:]
        if flow.dim() != 5 or tuple(flow.shape) != (n, t, 2, feat_h, feat_w):
            raise InputError(f"EDVR flow: expected shape {(n, t, 2, feat_h, feat_w)}, got {tuple(flow.shape)}")
        dcns = {"l1": self.pcd_align.dcn_pack["l1"], "l2": self.pcd_align.dcn_pack["l2"],
                "l3": self.pcd_align.dcn_pack["l3"], "cascade": self.pcd_align.cas_dcnpack}
        for m in dcns.values():
            m.keep_offset, m.last_offset = True, None
        try:
            with torch.enable_grad():  # the batched training path, which is the one that keeps offsets
                image = self.forward(x)
            offsets = {k: m.last_offset for k, m in dcns.items()}
        finally:
            for m in dcns.values():
                m.keep_offset, m.last_offset = False, None
        if any(o is None for o in offsets.values()):  # pragma: no cover - the grad path always sets them
            raise RuntimeError("EDVR: the DCN offsets were not recorded")
        flow, _ = pad_to_multiple(flow.flatten(0, 1), self.spec.pad_multiple // (4 if self.hr_in else 1), "replicate")
        loss = offset_fidelity_loss(offsets, flow, self.config.offset_fidelity_threshold)
        return SROutput(image, (image,), {"offset_fidelity": loss})


def offset_fidelity_loss(offsets: dict[str, torch.Tensor], flow: torch.Tensor, threshold: float) -> torch.Tensor:
    """Chan et al.'s offset-fidelity loss over PCD's four DCNs: ``mean(H(|o - f| - t) * |o - f|)``.

    ``offsets``: ``l1``, ``l2``, ``l3`` (the pyramid levels' DCNs) and ``cascade``, each
    ``(B, 2 * G * k * k, h, w)`` in torchvision's ``(dy, dx)`` per-tap layout. ``flow`` ``(B, 2, H, W)``
    ``(dx, dy)`` at level 1. A level-``l`` DCN aligns level-``l`` features, so its target is the flow
    averaged over ``2^(l-1)`` blocks and divided by ``2^(l-1)``; the cascading DCN works on features
    already aligned, so its target is zero. Every tap of every group is compared (a DCN offset is the
    displacement of its tap's sampling point), and only the part beyond ``threshold`` pixels is
    penalised, which leaves the offsets their diversity around the flow. The mean of the four terms.
    """
    target = flow.float().flip(1)  # (dx, dy) -> (dy, dx), the offsets' order
    terms = []
    for name, factor in (("l1", 1), ("l2", 2), ("l3", 4), ("cascade", 1)):
        o = offsets[name].float()
        if name == "cascade":
            f = torch.zeros_like(target)
        elif factor > 1:
            f = F.avg_pool2d(target, factor, ceil_mode=True) / factor
        else:
            f = target
        if f.shape[-2:] != o.shape[-2:] or f.shape[0] != o.shape[0]:
            raise InputError(f"offset_fidelity_loss: {name} offsets are {tuple(o.shape)} but the flow gives "
                             f"{tuple(f.shape)}")
        diff = (o.unflatten(1, (-1, 2)) - f.unsqueeze(1)).abs()
        terms.append(torch.where(diff > threshold, diff, torch.zeros_like(diff)).mean())
    return torch.stack(terms).mean()


def _validate(cfg: EDVRConfig) -> None:
    def bad(msg: str) -> None:
        raise ConfigError(f"EDVR config: {msg}")

    check_int_fields(cfg, "EDVR", positive=("num_in_ch", "num_out_ch", "num_feat", "num_frame", "deformable_groups"),
                     non_negative=("num_extract_block", "num_reconstruct_block"))
    if cfg.num_feat % cfg.deformable_groups:
        bad(f"deformable_groups ({cfg.deformable_groups}) must divide num_feat ({cfg.num_feat})")
    if cfg.num_out_ch != cfg.num_in_ch:
        bad(f"num_out_ch ({cfg.num_out_ch}) must equal num_in_ch ({cfg.num_in_ch}): EDVR predicts a residual")
    if cfg.center_frame_idx is not None and not 0 <= cfg.center_frame_idx < cfg.num_frame:
        bad(f"center_frame_idx {cfg.center_frame_idx} is outside 0..{cfg.num_frame - 1}")
    expected = 1 if cfg.hr_in else 4
    if cfg.scale != expected:
        bad(f"scale {cfg.scale} is not possible with hr_in={cfg.hr_in} (EDVR upsamples x4 from its "
            f"feature level: scale 4 for LR input, 1 for HR input)")
    t = cfg.offset_fidelity_threshold
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        bad(f"offset_fidelity_threshold must be a finite number >= 0, got {t!r}")
    if cfg.offset_warn_threshold is not None and not (
        isinstance(cfg.offset_warn_threshold, (int, float)) and math.isfinite(cfg.offset_warn_threshold)
        and cfg.offset_warn_threshold > 0
    ):
        bad(f"offset_warn_threshold must be a positive number or None, got {cfg.offset_warn_threshold!r}")


# ---------------------------------------------------------------------- checkpoints of other toolkits
def _rename(state: StateDict, rules: list[tuple[str, str]]) -> StateDict:
    """``state`` with each key renamed by the first rule (regex, replacement) that matches it."""
    out: StateDict = {}
    for key, value in state.items():
        new = key
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, new)
            if n:
                break
        out[new] = value
    return out


# The 2019 xinntao/EDVR names (codes/models/archs/EDVR_arch.py), mapped as BasicSR's own
# scripts/model_conversion/convert_models.py does. Note tAtt_1 embeds the neighbours and tAtt_2 the
# reference there, the other way round from BasicSR's temporal_attn1/2.
_RULES_2019: list[tuple[str, str]] = [
    (r"^pre_deblur\.conv_first_1\.", "predeblur.conv_first."),
    (r"^pre_deblur\.conv_first_2\.", "predeblur.stride_conv_hr1."),
    (r"^pre_deblur\.conv_first_3\.", "predeblur.stride_conv_hr2."),
    (r"^pre_deblur\.conv_first\.", "predeblur.conv_first."),
    (r"^pre_deblur\.deblur_L([23])_conv\.", r"predeblur.stride_conv_l\1."),
    (r"^pre_deblur\.RB_L3_1\.", "predeblur.resblock_l3."),
    (r"^pre_deblur\.RB_L2_([12])\.", r"predeblur.resblock_l2_\1."),
    (r"^pre_deblur\.RB_L1_([1-5])\.", lambda m: f"predeblur.resblock_l1.{int(m.group(1)) - 1}."),  # type: ignore[list-item]
    (r"^fea_L([23])_conv([12])\.", r"conv_l\1_\2."),
    (r"^pcd_align\.L([123])_offset_conv([123])\.", r"pcd_align.offset_conv\2.l\1."),
    (r"^pcd_align\.L([123])_dcnpack\.conv_offset_mask\.", r"pcd_align.dcn_pack.l\1.conv_offset."),
    (r"^pcd_align\.L([123])_dcnpack\.", r"pcd_align.dcn_pack.l\1."),
    (r"^pcd_align\.L([123])_fea_conv\.", r"pcd_align.feat_conv.l\1."),
    (r"^pcd_align\.cas_dcnpack\.conv_offset_mask\.", "pcd_align.cas_dcnpack.conv_offset."),
    (r"^tsa_fusion\.tAtt_1\.", "fusion.temporal_attn2."),
    (r"^tsa_fusion\.tAtt_2\.", "fusion.temporal_attn1."),
    (r"^tsa_fusion\.fea_fusion\.", "fusion.feat_fusion."),
    (r"^tsa_fusion\.sAtt_add_([12])\.", r"fusion.spatial_attn_add\1."),
    (r"^tsa_fusion\.sAtt_L([123])\.", r"fusion.spatial_attn_l\1."),
    (r"^tsa_fusion\.sAtt_([1-5])\.", r"fusion.spatial_attn\1."),
    (r"^tsa_fusion\.(weight|bias)$", r"fusion.\1"),  # woTSA: a bare 1x1 fusion conv
    (r"^recon_trunk\.", "reconstruction."),
    (r"^HRconv\.", "conv_hr."),
]

# MMagic / MMEditing EDVRNet names (mmagic/models/editors/edvr/edvr_net.py): ConvModule wraps its
# conv as `.conv`, PixelShufflePack as `.upsample_conv`.
_RULES_MMAGIC: list[tuple[str, str]] = [
    (r"^feat_l([23])_conv([12])\.conv\.", r"conv_l\1_\2."),
    (r"^pcd_alignment\.(offset_conv[123]|feat_conv)\.(l[123])\.conv\.", r"pcd_align.\1.\2."),
    (r"^pcd_alignment\.(cas_offset_conv[12])\.conv\.", r"pcd_align.\1."),
    (r"^pcd_alignment\.", "pcd_align."),
    (r"^fusion\.(feat_fusion|spatial_attn[1-4]|spatial_attn_l[123]|spatial_attn_add1)\.conv\.", r"fusion.\1."),
    (r"^upsample([12])\.upsample_conv\.", r"upconv\1."),
]


def _from_2019(state: StateDict) -> StateDict | None:
    markers = ("tsa_fusion.", "recon_trunk.", "fea_L2_conv1.", "pre_deblur.", "pcd_align.L1_")
    if not any(k.startswith(markers) for k in state):
        return None
    return _rename(state, _RULES_2019)


def _from_mmagic(state: StateDict) -> StateDict | None:
    if not any(k.startswith(("pcd_alignment.", "upsample1.upsample_conv.", "feat_l2_conv1.")) for k in state):
        return None
    return _rename(state, _RULES_MMAGIC)


def _config_from_state(state: StateDict) -> tuple[str, dict[str, Any]] | None:
    """EDVR hyper-parameters read off the tensors (for checkpoints trained with non-preset sizes).

    ``center_frame_idx`` leaves no trace in the weights: the middle frame (every published model's
    choice) is assumed. Without ``pcd_align.*`` (the woPCD ablation) ``deformable_groups`` leaves no
    trace either and is set to one that divides ``num_feat``.
    """
    try:
        nf = state["upconv1.weight"].shape[1]
        with_pcd = "pcd_align.cas_dcnpack.conv_offset.weight" in state
        dg = state["pcd_align.cas_dcnpack.conv_offset.weight"].shape[0] // 27 if with_pcd else None
        with_tsa = "fusion.temporal_attn1.weight" in state
        fusion_in = state["fusion.feat_fusion.weight" if with_tsa else "fusion.weight"].shape[1]
        with_predeblur = "predeblur.conv_first.weight" in state
        hr_in = "predeblur.stride_conv_hr1.weight" in state or "conv_first_1.weight" in state
        first = state["predeblur.conv_first.weight" if with_predeblur else
                      "conv_first_1.weight" if hr_in else "conv_first.weight"]
    except KeyError:
        return None

    def count(prefix: str) -> int:
        idx = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
        return max(idx) + 1 if idx else 0

    overrides = dict(
        num_feat=nf, num_frame=fusion_in // nf, deformable_groups=dg if dg is not None else math.gcd(8, nf), num_in_ch=first.shape[1],
        num_out_ch=state["conv_last.weight"].shape[0], num_extract_block=count("feature_extraction."),
        num_reconstruct_block=count("reconstruction."), with_tsa=with_tsa, with_predeblur=with_predeblur,
        hr_in=hr_in, scale=1 if hr_in else 4, with_pcd=with_pcd,
    )
    if hr_in:
        name = "edvr-l-deblur"
    elif with_predeblur:
        name = "edvr-l-srblur"
    elif nf >= 128:
        name = "edvr-l" if with_tsa else "edvr-l-wotsa"  # without PCD: with_pcd=False among the overrides
    elif not with_pcd:
        name = "edvr-m-wopcd" if with_tsa else "edvr-m-wopcd-wotsa"
    else:
        name = "edvr-m" if with_tsa else "edvr-m-wotsa"
    return name, overrides


register_checkpoint_support("edvr", key_adapters=[_from_mmagic, _from_2019], config_inferrer=_config_from_state)


# ---------------------------------------------------------------------- presets
def _build(defaults: dict[str, Any], overrides: dict[str, Any]) -> EDVR:
    return EDVR(EDVRConfig(**{**defaults, **overrides}))


_S = dict(num_feat=32, num_frame=5, deformable_groups=4, num_extract_block=3, num_reconstruct_block=6)
_M = dict(num_feat=64, num_frame=5, deformable_groups=8, num_extract_block=5, num_reconstruct_block=10)
_L = dict(num_feat=128, num_frame=5, deformable_groups=8, num_extract_block=5, num_reconstruct_block=40)


@register_model("edvr-s", family="edvr", pretrained="edvr-s.safetensors",
                description="EDVR-S x4 video SR (32 ch, 5 frames, TSA): srkit's CPU-sized model, trained by srkit, "
                            "weights shipped (pretrained=True)")
def edvr_s(**overrides: Any) -> EDVR:
    return _build(_S, overrides)


@register_model("edvr-m", family="edvr",
                description="EDVR-M x4 video SR (64 ch, 5 frames, TSA): the fast model (REDS); published checkpoints load")
def edvr_m(**overrides: Any) -> EDVR:
    return _build(_M, overrides)


@register_model("edvr-m-wotsa", family="edvr",
                description="EDVR-M x4 without TSA (1x1 conv fusion): the paper's ablation (REDS)")
def edvr_m_wotsa(**overrides: Any) -> EDVR:
    return _build({**_M, "with_tsa": False}, overrides)


@register_model("edvr-m-wopcd", family="edvr",
                description="EDVR-M x4 without PCD alignment (frames' features fused unaligned by TSA): "
                            "the paper's PCD ablation")
def edvr_m_wopcd(**overrides: Any) -> EDVR:
    return _build({**_M, "with_pcd": False}, overrides)


@register_model("edvr-m-wopcd-wotsa", family="edvr",
                description="EDVR-M x4 without PCD and TSA (unaligned features, 1x1 conv fusion): the "
                            "baseline of the paper's PCD/TSA ablation table")
def edvr_m_wopcd_wotsa(**overrides: Any) -> EDVR:
    return _build({**_M, "with_pcd": False, "with_tsa": False}, overrides)


@register_model("edvr-l", family="edvr",
                description="EDVR-L x4 video SR (128 ch, 40 reconstruction blocks, TSA): NTIRE19 REDS winner")
def edvr_l(**overrides: Any) -> EDVR:
    return _build(_L, overrides)


@register_model("edvr-l-wotsa", family="edvr",
                description="EDVR-L x4 without TSA (1x1 conv fusion)")
def edvr_l_wotsa(**overrides: Any) -> EDVR:
    return _build({**_L, "with_tsa": False}, overrides)


@register_model("edvr-l-7f", family="edvr",
                description="EDVR-L x4 on 7-frame windows: the Vimeo-90K (and Vid4) model")
def edvr_l_7f(**overrides: Any) -> EDVR:
    return _build({**_L, "num_frame": 7}, overrides)


@register_model("edvr-l-srblur", family="edvr",
                description="EDVR-L x4 SR of blurry LR video (predeblur module): REDS SR+blur track")
def edvr_l_srblur(**overrides: Any) -> EDVR:
    return _build({**_L, "with_predeblur": True}, overrides)


@register_model("edvr-l-deblur", family="edvr",
                description="EDVR-L video deblurring at scale 1 (predeblur + HR input): REDS deblur track")
def edvr_l_deblur(**overrides: Any) -> EDVR:
    return _build({**_L, "with_predeblur": True, "hr_in": True, "scale": 1}, overrides)


@register_model("edvr-l-deblurcomp", family="edvr",
                description="EDVR-L deblurring of blurry + compressed video, scale 1: REDS deblur+compression track")
def edvr_l_deblurcomp(**overrides: Any) -> EDVR:
    # Same network as edvr-l-deblur (BasicSR's test_EDVR_L_deblurcomp_REDS.yml); different weights.
    return _build({**_L, "with_predeblur": True, "hr_in": True, "scale": 1}, overrides)
