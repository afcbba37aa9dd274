"""MANA: Memory-Augmented Non-Local Attention for Video Super-Resolution (Yu et al., CVPR 2022).

The network of the official release (``jiy173/MANA`` ``models.py``; training code only), with its
module and parameter names so that its checkpoints load:

* encoder: ``conv_first`` (3 -> ``num_feat``) + LeakyReLU(0.1), ``encoder`` = 5 residual blocks
  (conv-ReLU-conv), applied to every frame;
* cross-frame non-local attention ``nonloc_spatial``: ``norm`` = GroupNorm(32, eps 1e-6) on every
  frame's features; 1x1 convs to ``num_feat // 2`` channels: ``phi`` (query, centre frame only),
  ``theta`` (keys) and ``g`` (values) of every frame; per frame, ``softmax_j(q_p . k_j)`` over all
  positions j of that frame (no 1/sqrt(C) scaling), multiplied by ``exp(-d(p, j)^2 / (2 std^2))``
  with ``d`` the pixel distance and ``std`` learnable (init 4), not re-normalised afterwards; the
  T results concatenated frame by frame -> ``W_z`` (1x1, zero-initialised);
* memory-augmented attention: a learned bank ``mb`` (``num_feat // 2`` x ``memory_size``) read by the
  same query, ``softmax(q . mb / sqrt(C)) . mb^T`` -> ``W_z1`` (1x1, zero-initialised); the
  quantization loss is ``mean |q - read-out|``; ``memory_size: 0`` is the paper's **No-Mem** ablation
  (preset ``mana-nomem``): no ``mb``, no ``W_z1``, no quantization loss (``aux_losses`` is empty), the
  attention output is ``W_z(...) +`` the centre features alone;
* ``W_z(...) + W_z1(...) +`` the un-normalised centre features -> ``decoder`` (40 residual blocks) ->
  ``upconv1``/``upconv2`` pixel shuffles, ``conv_hr``, ``conv_last`` (LeakyReLU 0.1 between, as EDVR)
  -> plus the bilinearly x4-upsampled centre frame.

Checked against the official code (deviations are execution only unless listed):

* The official ``D`` parameter holds the SQUARED distances ``(x1-x2)^2 + (y1-y2)^2`` between all
  pairs of positions of a fixed ``height x width`` grid (``np.meshgrid(x1, y1, y2, x2)`` with 'xy'
  indexing, flattened row-major), and the weight is ``exp(-0.5 * D / std^2)`` applied AFTER the
  softmax. srkit computes the same weights from two separable 1-D tables for any frame size and never
  builds the (H*W)^2 matrix (:mod:`srkit.ops.attention`; exact, chunked over query positions). The
  official ``D`` in a checkpoint is recognised and dropped on load.
* The official names are confusing and kept: ``phi`` embeds the QUERY (centre frame), ``theta`` the
  keys and ``g`` the values. The centre frame is normalised once with the others (GroupNorm is per
  sample, so ``norm(q)`` equals the centre slice of ``norm(all frames)``).
* The official code hard-codes 7 frames (``x[:, 3]``, ``W_z`` with ``7 * C/2`` inputs); here the
  frame count is ``num_frame`` (any odd count) and the centre ``num_frame // 2``.
* The official ``is_training=False`` path (fp16 ``D``/``std`` and fp16 attention) cannot even be
  constructed (it assigns ``std.half()``, a plain tensor, to a Parameter slot: TypeError). srkit
  computes in the chosen precision (fp32, or bf16/fp16 under :func:`srkit.utils.device.autocast`).
* Residual blocks keep PyTorch's default initialisation, as the official ``ResidualBlockNoBN``
  (which never calls BasicSR's scaled init), unless ``init="kaiming"`` (srkit's ``mana-s``): with the
  default init a fresh network's output hardly depends on its input and training from scratch stalls
  near the bilinear baseline, as measured on EDVR (:func:`srkit.models.blocks.leaky_kaiming_init_`).
* ``norm_groups`` defaults to 32 (official); narrower development models (``num_feat`` not a
  multiple of 32) use ``gcd(32, num_feat)`` groups.
* Any H/W: every layer is size-agnostic once ``D`` is gone, so no padding is needed
  (``pad_multiple = 1``). NOTE: because the attention is not re-normalised after the Gaussian, the
  softmax mass spread over far positions grows with the frame size — at 180x320 a query's Gaussian
  neighbourhood holds a smaller share of the softmax than in the 64x64 training crops. The exact
  result is what the official formula gives at that size. ``attention_window = r`` is a faster
  approximation: numerator over keys within ``r * std`` (the rest weigh < ``exp(-r^2/2)``), softmax
  denominator over the whole frame with far keys sampled every ``attention_window_stride`` pixels;
  its error is reported by the tests and ``benchmarks/mana_memory.py``.

Training (stage names for configs): :data:`MEMORY_PARAMS` are the memory bank and its 1x1 conv (stage 2
trains only them on the ``quantization`` aux loss; stage 1 freezes them). A No-Mem model has none of
them, so the three-stage schedule does not apply: it is refused with a message that says so (see
:meth:`MANA.explain_missing_parameters`); train it with one stage on the pixel loss alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from srkit.errors import ConfigError, InputError
from srkit.models.api import ModelSpec, SRModel, SROutput, check_int_fields, config_field
from srkit.models.blocks import ResidualBlockNoBN, leaky_kaiming_init_, make_layer, scaled_kaiming_init_
from srkit.models.checkpoint import register_checkpoint_support
from srkit.models.registry import register_model
from srkit.ops.attention import gaussian_nonlocal_attention
from srkit.ops.fused_conv import conv_act

__all__ = ["MANA", "MANAConfig", "NonLocalMemoryAttention", "MEMORY_PARAMS", "correspondence_loss",
           "attention_fidelity_loss", "official_key_adapter"]

# Parameter-name patterns of the memory branch (fnmatch style, as training configs use them).
MEMORY_PARAMS: tuple[str, ...] = ("nonloc_spatial.mb", "nonloc_spatial.W_z1.*")

MANA_INITS = ("official", "kaiming")

# Width after the pixel shuffles: fixed at 64 in the official network (as in EDVR).
_HR_FEAT = 64


@dataclass
class MANAConfig:
    """Hyper-parameters of :class:`MANA` (official names where the official config has them)."""

    num_feat: int = config_field(128, "feature channels (official 'in_channels'); attention uses half")
    num_frame: int = config_field(7, "frames in the input window (odd; the official code fixes 7)")
    center_frame_idx: int | None = config_field(None, "index of the restored frame; None = middle")
    encoder_nblocks: int = config_field(5, "residual blocks of the per-frame encoder")
    decoder_nblocks: int = config_field(40, "residual blocks of the decoder")
    memory_size: int = config_field(
        256, "slots N of the memory bank: 256 official default, 512 the paper's best (mana-m512), "
             "0 = the paper's No-Mem ablation (no memory bank, no quantization loss)")
    norm_groups: int | None = config_field(None, "GroupNorm groups; None = 32 (official) or gcd(32, num_feat)")
    std_init: float = config_field(4.0, "initial standard deviation (pixels) of the attention's Gaussian")
    attention_window: float | None = config_field(
        None, "None = exact attention over whole frames; r = approximate: keys within r*std pixels only")
    attention_window_stride: int | None = config_field(
        4, "window mode: far keys counted in the softmax denominator on a grid of this stride (1 = all; "
           "None = softmax over the window only)")
    attention_chunk: int | None = config_field(
        None, "query positions per attention chunk (exact mode); None = from attention_memory_mb")
    attention_memory_mb: float = config_field(256.0, "memory budget of one attention chunk's scores (MB)")
    grad_checkpoint: bool = config_field(
        True, "recompute attention chunks in backward (training memory O(HW*chunk) instead of O((HW)^2))")
    init: str = config_field(
        "official", "weight init of the convolution trunk: official (PyTorch's default, as jiy173/MANA) or "
                    "kaiming (variance-preserving; what srkit's own models train from)")
    correspondence_loss: bool = config_field(
        False, "training: also return the 'correspondence' aux loss: each neighbour's LR pixels read out "
               "by the attention weights must reproduce the centre frame (a training aid; the network is "
               "unchanged)")
    attention_fidelity_queries: int = config_field(
        0, "training: centre positions per sample (drawn at random) whose cross-frame attention is compared "
           "with the window's optical flow, returned as the 'attention_fidelity' aux loss (needs "
           "data.train.flow; 0 = off; a training aid, the network is unchanged)")


class NonLocalMemoryAttention(nn.Module):
    """The official ``nonlocal_attention`` module (cross-frame Gaussian non-local + memory bank).

    ``forward(feats (B, T, C, H, W)) -> (z (B, C, H, W), quantization loss or None)``; with
    ``memory_size == 0`` (No-Mem) there is no memory branch and the loss is None.
    """

    def __init__(self, num_feat: int, num_frame: int, center: int, memory_size: int, norm_groups: int,
                 std_init: float):
        super().__init__()
        inter = num_feat // 2
        self.inter_channels = inter
        self.center = center
        # Registration order as the official module (state-dict order is cosmetic; names matter).
        self.g = nn.Conv2d(num_feat, inter, 1)
        self.W_z = nn.Conv2d(inter * num_frame, num_feat, 1)
        nn.init.zeros_(self.W_z.weight)
        nn.init.zeros_(self.W_z.bias)
        self.theta = nn.Conv2d(num_feat, inter, 1)
        self.phi = nn.Conv2d(num_feat, inter, 1)
        self.norm = nn.GroupNorm(norm_groups, num_feat, eps=1e-6, affine=True)
        self.std = nn.Parameter(torch.full((1,), float(std_init)))
        self.has_memory = memory_size > 0
        if self.has_memory:
            # Absent (not zero-sized) in the No-Mem ablation: its state dict then simply lacks them.
            self.W_z1 = nn.Conv2d(inter, num_feat, 1)
            nn.init.zeros_(self.W_z1.weight)
            nn.init.zeros_(self.W_z1.bias)
            self.mb = nn.Parameter(torch.randn(inter, memory_size))
        # Execution settings (not architecture): set from the model config.
        self.window: float | None = None
        self.window_stride: int | None = 4
        self.chunk: int | None = None
        self.memory_mb: float = 256.0
        self.grad_checkpoint = True

    def read_memory(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory read-out of queries ``q (B, L, C)``: ``softmax(q mb / sqrt(C)) mb^T`` and mean |q - it|."""
        mb = self.mb.to(q.dtype)
        att = torch.softmax(torch.matmul(q, mb) * (self.inter_channels ** -0.5), dim=-1)
        recon = torch.matmul(att, mb.t())
        return recon, (q - recon).abs().mean()

    def forward(self, x: torch.Tensor, pixels: torch.Tensor | None = None, flow: torch.Tensor | None = None,
                fidelity_queries: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x (B, T, C, H, W)`` -> ``(z, aux losses)``: ``quantization`` (with a memory bank), and the
        training aids ``correspondence`` when ``pixels (B, T, 3, H, W)`` are given (the input frames, see
        :func:`correspondence_loss`) and ``attention_fidelity`` when ``flow (B, T, 2, H, W)`` is (see
        :func:`attention_fidelity_loss`; ``fidelity_queries`` random centre positions per sample).
        """
        b, t, c, h, w = x.shape
        center = x[:, self.center]
        normed = self.norm(x.reshape(b * t, c, h, w))
        keys = self.theta(normed).reshape(b, t, self.inter_channels, h, w)
        values = self.g(normed).reshape(b, t, self.inter_channels, h, w)
        query = self.phi(normed.reshape(b, t, c, h, w)[:, self.center])  # (B, C/2, H, W)
        aux: dict[str, torch.Tensor] = {}
        if flow is not None and fidelity_queries > 0:
            positions = torch.randint(h * w, (b, fidelity_queries), device=x.device)
            radius = None
            if self.window is not None and self.window_stride is None:  # the softmax runs over the window
                radius = self.window * abs(float(self.std.detach()))
            aux["attention_fidelity"] = attention_fidelity_loss(query, keys, flow, self.center, positions, radius)
        if pixels is not None:
            # The same attention weights read the frames' pixels and a constant 1 (their sum, as the
            # Gaussian is applied after the softmax): one attention pass with 4 more value channels.
            extra = torch.cat([pixels, torch.ones_like(pixels[:, :, :1])], dim=2).to(values.dtype)
            values = torch.cat([values, extra], dim=2)

        y = gaussian_nonlocal_attention(query, keys, values, self.std, chunk_size=self.chunk,
                                        memory_budget_mb=self.memory_mb, window=self.window,
                                        window_stride=self.window_stride, checkpoint=self.grad_checkpoint)
        if pixels is not None:
            y, read = y[:, :, : self.inter_channels], y[:, :, self.inter_channels:]
            aux["correspondence"] = correspondence_loss(read, pixels, self.center)
        # (B, T, C/2, H, W) -> (B, T*C/2, H, W): frame 0's channels first, as torch.cat(corr_l, 1).
        w_y = self.W_z(y.reshape(b, t * self.inter_channels, h, w))
        if not self.has_memory:
            return w_y + center, aux

        recon, aux["quantization"] = self.read_memory(query.flatten(2).transpose(1, 2))
        w_y1 = self.W_z1(recon.transpose(1, 2).reshape(b, self.inter_channels, h, w))
        return w_y + center + w_y1, aux


def attention_fidelity_loss(query: torch.Tensor, keys: torch.Tensor, flow: torch.Tensor, center: int,
                            positions: torch.Tensor, radius: float | None = None) -> torch.Tensor:
    """Cross-entropy between the attention of centre positions and their optical-flow correspondences.

    MANA's cross-frame attention of a centre position ``p`` over frame ``t`` is ``softmax_j(q_p . k_t[j])``
    (the Gaussian distance weight follows it). Where the window's flow says ``centre(p) = frame_t(p +
    flow_t(p))``, the attention should sit on ``p + flow_t(p)``: the target is that point's bilinear
    weights on its four neighbouring keys, and the loss is ``-sum_j target_j log softmax_j``, averaged over
    the sampled positions and the frames other than the centre (fp32). Pairs whose target leaves the
    frame (or the softmax's window) are skipped. Only the query/key embeddings (and what feeds them) get
    its gradient: it teaches the matching, where the pixel loss alone leaves the attention nearly flat.

    Args:
        query: ``(B, C, H, W)`` the centre's query embedding; keys ``(B, T, C, H, W)``.
        flow: ``(B, T, 2, H, W)`` ``(dx, dy)`` in pixels of these maps, from the centre to each frame.
        positions: ``(B, N)`` flat indices ``y * W + x`` of the centre positions to score.
        radius: the softmax runs over keys within this distance of the query (MANA's local window with
            its softmax over the window); None = over the whole frame.
    """
    b, t, c, h, w = keys.shape
    if flow.shape != (b, t, 2, h, w):
        raise InputError(f"attention_fidelity_loss: flow is {tuple(flow.shape)}, expected {(b, t, 2, h, w)}")
    n = positions.shape[1]
    others = [i for i in range(t) if i != center]
    with torch.autocast(query.device.type, enabled=False):
        q = torch.gather(query.flatten(2).float(), 2, positions.unsqueeze(1).expand(b, c, n))  # (B, C, N)
        logits = torch.einsum("bcn,btcj->btnj", q, keys[:, others].flatten(3).float())  # (B, T', N, HW)
        py, px = (positions // w).float(), (positions % w).float()  # (B, N)
        if radius is not None:
            grid = torch.arange(h * w, device=keys.device)
            d2 = (py[..., None] - (grid // w).float()).square() + (px[..., None] - (grid % w).float()).square()
            logits = logits.masked_fill((d2 > radius * radius).unsqueeze(1), float("-inf"))  # outside the window
        logp = torch.log_softmax(logits, dim=-1)
        f = torch.gather(flow[:, others].flatten(3).float(), 3,
                         positions[:, None, None].expand(b, len(others), 2, n))  # (B, T', 2, N)
        tx, ty = px.unsqueeze(1) + f[:, :, 0], py.unsqueeze(1) + f[:, :, 1]
        x0, y0 = tx.floor(), ty.floor()
        ax, ay = tx - x0, ty - y0
        loss = torch.zeros_like(tx)
        valid = torch.ones_like(tx, dtype=torch.bool)
        for dx, dy, wgt in ((0, 0, (1 - ax) * (1 - ay)), (1, 0, ax * (1 - ay)), (0, 1, (1 - ax) * ay), (1, 1, ax * ay)):
            cx, cy = x0 + dx, y0 + dy
            in_frame = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
            idx = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).long()
            lp = torch.gather(logp, 3, idx.unsqueeze(-1)).squeeze(-1)  # (B, T', N)
            seen = in_frame & torch.isfinite(lp)
            needed = wgt > 0
            valid &= seen | ~needed  # a corner of zero weight may lie outside
            loss = loss - torch.where(seen & needed, wgt * lp, torch.zeros_like(lp))
        if not bool(valid.any()):
            return q.sum() * 0.0  # no scorable pair (all targets out of reach): zero, still in the graph
        return loss[valid].mean()


def correspondence_loss(read: torch.Tensor, pixels: torch.Tensor, center: int, eps: float = 1e-3) -> torch.Tensor:
    """How well the attention finds each centre position in the other frames (a self-supervised training aid).

    ``read (B, T, 4, H, W)``: the attention's read-out of every frame's pixels (3 channels) and of a
    constant 1 (the total weight, < 1 as the Gaussian follows the softmax); ``pixels (B, T, 3, H, W)``
    the frames. For every frame but the centre, ``read[:3] / read[3]`` is the frame's pixels averaged
    with the attention weights of a centre position; where the attention sits on the position's true
    correspondence it equals the centre pixel, where it is spread out it is a blur. The loss is the mean
    absolute difference to the centre pixels (fp32), so its gradient sharpens the queries' and keys'
    matching (and the Gaussian width) towards correspondences; the values and the decoder are untouched.
    """
    t = read.shape[1]
    others = [i for i in range(t) if i != center]
    read = read[:, others].float()
    estimate = read[:, :, :3] / read[:, :, 3:].clamp_min(eps)
    return (estimate - pixels[:, center: center + 1].float()).abs().mean()


class MANA(SRModel):
    """MANA x4 video SR. Input ``(N, T, 3, H, W)`` RGB in [0, 1], any H/W; output ``(N, 3, 4H, 4W)``.

    ``forward`` returns :class:`SROutput` with ``aux_losses={"quantization": ...}`` (empty for the
    No-Mem ablation, ``memory_size=0``: there is no quantization to measure).
    """

    family = "mana"

    def __init__(self, config: MANAConfig | None = None, **overrides: Any):
        config = config if config is not None else MANAConfig(**overrides)
        groups = _validate(config)
        super().__init__(config)
        nf = config.num_feat
        self.center_frame_idx = config.num_frame // 2 if config.center_frame_idx is None else config.center_frame_idx
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.encoder = make_layer(ResidualBlockNoBN, config.encoder_nblocks, num_feat=nf)
        self.decoder = make_layer(ResidualBlockNoBN, config.decoder_nblocks, num_feat=nf)
        self.nonloc_spatial = NonLocalMemoryAttention(nf, config.num_frame, self.center_frame_idx,
                                                      config.memory_size, groups, config.std_init)
        self.upconv1 = nn.Conv2d(nf, nf * 4, 3, 1, 1)
        self.upconv2 = nn.Conv2d(nf, _HR_FEAT * 4, 3, 1, 1)
        self.conv_hr = nn.Conv2d(_HR_FEAT, _HR_FEAT, 3, 1, 1)
        self.conv_last = nn.Conv2d(_HR_FEAT, 3, 3, 1, 1)
        if config.init == "kaiming" and not self.conv_first.weight.is_meta:
            self._kaiming_init()
        self.set_attention(window=config.attention_window, window_stride=config.attention_window_stride,
                           chunk=config.attention_chunk,
                           memory_mb=config.attention_memory_mb, grad_checkpoint=config.grad_checkpoint)

    def _kaiming_init(self) -> None:
        # The official default init (uniform weights and biases) lets the image signal fade below the
        # biases through the trunk, so a fresh network sits at the bilinear upsampling it is added to
        # (measured on EDVR, see srkit.models.blocks.leaky_kaiming_init_). As srkit's EDVR: residual
        # branches Kaiming x0.1, other trunk convs Kaiming with zero bias, conv_last x0.1. The
        # attention's 1x1 embeddings keep the official init: their scale sets the softmax temperature
        # (no 1/sqrt(C) in the official formula), and W_z / W_z1 stay zero.
        for m in (*self.encoder, *self.decoder):
            scaled_kaiming_init_(m, 0.1)
        for conv in (self.conv_first, self.upconv1, self.upconv2, self.conv_hr, self.conv_last):
            leaky_kaiming_init_(conv)
        with torch.no_grad():
            self.conv_last.weight.mul_(0.1)

    def set_attention(self, *, window: float | None = None, window_stride: int | None | str = "keep",
                      chunk: int | None = None,
                      memory_mb: float | None = None, grad_checkpoint: bool | None = None) -> None:
        """Change how the attention is executed (exact/window, chunking) without touching the weights.

        The config is updated too, so a saved checkpoint records the mode it was used with.
        """
        if window is not None and not (isinstance(window, (int, float)) and window > 0):
            raise ConfigError(f"MANA attention_window must be a positive number or None, got {window!r}")
        att = self.nonloc_spatial
        att.window = None if window is None else float(window)
        att.chunk = chunk
        if window_stride != "keep":
            if window_stride is not None and not (isinstance(window_stride, int) and window_stride >= 1):
                raise ConfigError(f"MANA attention_window_stride must be a positive integer or None, got {window_stride!r}")
            att.window_stride = window_stride
            self.config.attention_window_stride = window_stride
        self.config.attention_window = att.window
        self.config.attention_chunk = chunk
        if memory_mb is not None:
            att.memory_mb = float(memory_mb)
            self.config.attention_memory_mb = float(memory_mb)
        if grad_checkpoint is not None:
            att.grad_checkpoint = bool(grad_checkpoint)
            self.config.grad_checkpoint = bool(grad_checkpoint)

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(scale=4, num_frames=self.config.num_frame, center_index=self.center_frame_idx,
                         input_kind="video", pad_multiple=1, condition=None, hr_input=False,
                         takes_flow=self.config.attention_fidelity_queries > 0)

    # ------------------------------------------------------------------ feature cache API
    def encode(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """Per-frame encoder features ``[F]`` of ``frames (B, 3, H, W)`` (computed once per frame when streaming)."""
        return [self.encoder(conv_act(self.conv_first, frames, "leaky_relu", 0.1))]

    def decode(self, feats: Sequence[Sequence[torch.Tensor]], center: torch.Tensor) -> torch.Tensor:
        """Restore the centre frame from ``T`` cached encodings (each ``[F]``) and its pixels ``(B, 3, H, W)``."""
        if len(feats) != self.config.num_frame:
            raise InputError(f"MANA decode: expected {self.config.num_frame} frame encodings, got {len(feats)}")
        return self._decode(torch.stack([f[0] for f in feats], dim=1), center)[0]

    def _decode(self, feats: torch.Tensor, center: torch.Tensor, pixels: torch.Tensor | None = None,
                flow: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        res, aux = self.nonloc_spatial(feats, pixels, flow, self.config.attention_fidelity_queries)
        out = self.decoder(res)
        # conv_act: the lrelu fused into the convolution during CPU inference (it commutes with the shuffle).
        out = F.pixel_shuffle(conv_act(self.upconv1, out, "leaky_relu", 0.1), 2)
        out = F.pixel_shuffle(conv_act(self.upconv2, out, "leaky_relu", 0.1), 2)
        out = conv_act(self.conv_hr, out, "leaky_relu", 0.1)
        out = self.conv_last(out)
        return out + F.interpolate(center, scale_factor=4, mode="bilinear", align_corners=False), aux

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None = None) -> SROutput:
        """``x (N, T, 3, H, W)`` -> ``SROutput(image (N, 3, 4H, 4W), (image,), aux losses)``: ``quantization``
        (with a memory bank), and in training ``correspondence`` (``correspondence_loss``) and
        ``attention_fidelity`` (``attention_fidelity_queries`` and the window's ``flow (N, T, 2, H, W)``,
        centre -> each frame in LR pixels, as ``data.train.flow`` gives it)."""
        if x.dim() != 5:
            raise InputError(f"MANA expects (N, T, C, H, W) frames, got a tensor of shape {tuple(x.shape)}")
        n, t, c, h, w = x.shape
        if t != self.config.num_frame or c != 3:
            raise InputError(f"MANA ({self.preset or 'custom'}) expects {self.config.num_frame} RGB frames, "
                             f"got {t} frames of {c} channels")
        if flow is not None and not self.config.attention_fidelity_queries:
            raise InputError("MANA: a flow was given but attention_fidelity_queries is 0 (nothing uses it)")
        feats = self.encode(x.reshape(n * t, c, h, w))[0].reshape(n, t, -1, h, w)
        # The training aids are computed only when gradients are (training).
        grad = torch.is_grad_enabled()
        pixels = x if self.config.correspondence_loss and grad else None
        image, aux = self._decode(feats, x[:, self.center_frame_idx], pixels, flow if grad else None)
        return SROutput(image, (image,), aux)

    def explain_missing_parameters(self, pattern: str) -> str | None:
        """Why a training-config pattern that matches no parameter cannot match here, when the reason is
        this network's structure (the trainer adds it to its error): the No-Mem ablation has no memory
        bank, so the official schedule's memory stages (freeze it, then train only it) do not apply."""
        import fnmatch

        if self.nonloc_spatial.has_memory or not any(fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(pattern, n)
                                                      for n in MEMORY_PARAMS):
            return None
        return ("this MANA has memory_size 0 (the No-Mem ablation): it has no memory bank "
                f"({', '.join(MEMORY_PARAMS)}) and no quantization loss, so the three-stage schedule does "
                "not apply; train it in one stage (train.stages: [{trainable: ['*']}]) on the pixel loss alone")


def _validate(cfg: MANAConfig) -> int:
    """Check ``cfg``; returns the GroupNorm group count."""
    def bad(msg: str) -> None:
        raise ConfigError(f"MANA config: {msg}")

    check_int_fields(cfg, "MANA", positive=("num_feat", "num_frame"),
                     non_negative=("encoder_nblocks", "decoder_nblocks", "memory_size", "attention_fidelity_queries"))
    if cfg.num_feat % 2:
        bad(f"num_feat must be even (the attention uses num_feat // 2 channels), got {cfg.num_feat}")
    if cfg.num_frame % 2 == 0 and cfg.center_frame_idx is None:
        bad(f"num_frame must be odd (got {cfg.num_frame}) unless center_frame_idx is given")
    if cfg.center_frame_idx is not None and not 0 <= cfg.center_frame_idx < cfg.num_frame:
        bad(f"center_frame_idx {cfg.center_frame_idx} is outside 0..{cfg.num_frame - 1}")
    groups = cfg.norm_groups if cfg.norm_groups is not None else math.gcd(32, cfg.num_feat)
    if not isinstance(groups, int) or groups < 1 or cfg.num_feat % groups:
        bad(f"norm_groups ({cfg.norm_groups}) must be a positive divisor of num_feat ({cfg.num_feat})")
    if not (isinstance(cfg.std_init, (int, float)) and math.isfinite(cfg.std_init) and cfg.std_init > 0):
        bad(f"std_init must be a positive number, got {cfg.std_init!r}")
    if cfg.init not in MANA_INITS:
        bad(f"init must be one of {', '.join(MANA_INITS)}, got {cfg.init!r}")
    if cfg.attention_window is not None and not (
            isinstance(cfg.attention_window, (int, float)) and cfg.attention_window > 0):
        bad(f"attention_window must be a positive number or None, got {cfg.attention_window!r}")
    if cfg.attention_chunk is not None and not (isinstance(cfg.attention_chunk, int) and cfg.attention_chunk > 0):
        bad(f"attention_chunk must be a positive integer or None, got {cfg.attention_chunk!r}")
    if not (isinstance(cfg.attention_memory_mb, (int, float)) and cfg.attention_memory_mb > 0):
        bad(f"attention_memory_mb must be positive, got {cfg.attention_memory_mb!r}")
    return groups


# ---------------------------------------------------------------------- official checkpoints
def official_key_adapter(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Official ``jiy173/MANA`` state dict -> srkit names (the same names, minus the ``D`` matrix).

    Recognised by ``nonloc_spatial.D`` (the fixed-size squared-distance matrix, square 2-D). Also
    unwraps ``module.`` / ``model.`` prefixes left on some of the keys (partly wrapped saves).
    """
    def unwrap(key: str) -> str:
        for prefix in ("module.", "model.", "net."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        return key

    renamed = {unwrap(k): v for k, v in state.items()}
    d = renamed.get("nonloc_spatial.D")
    if d is None or d.dim() != 2 or d.shape[0] != d.shape[1]:
        return None
    renamed.pop("nonloc_spatial.D")
    return renamed


def _config_from_state(state: dict[str, torch.Tensor]) -> tuple[str, dict[str, Any]] | None:
    """Preset + overrides of a MANA state dict (srkit names) trained with non-preset sizes."""
    need = ("conv_first.weight", "nonloc_spatial.phi.weight", "nonloc_spatial.W_z.weight")
    if not all(k in state for k in need):
        return None
    nf = int(state["conv_first.weight"].shape[0])
    inter = int(state["nonloc_spatial.phi.weight"].shape[0])
    if inter * 2 != nf:
        return None
    mb = state.get("nonloc_spatial.mb")  # absent: the No-Mem ablation

    def count(prefix: str) -> int:
        idx = {int(k.split(".")[1]) for k in state if k.startswith(prefix + ".") and k.split(".")[1].isdigit()}
        return max(idx) + 1 if idx else 0

    frames = int(state["nonloc_spatial.W_z.weight"].shape[1]) // inter
    return "mana", dict(num_feat=nf, num_frame=frames, encoder_nblocks=count("encoder"),
                        decoder_nblocks=count("decoder"), memory_size=0 if mb is None else int(mb.shape[1]))


register_checkpoint_support("mana", key_adapters=[official_key_adapter], config_inferrer=_config_from_state)


# ---------------------------------------------------------------------- presets
@register_model("mana", family="mana",
                description="MANA x4 video SR (7 frames, 128 ch, cross-frame Gaussian non-local + 256-slot "
                            "memory attention, the official default; the paper's best is 512: mana-m512); "
                            "official checkpoints load; any frame size")
def mana(**overrides: Any) -> MANA:
    return MANA(MANAConfig(**overrides))


@register_model("mana-m512", family="mana",
                description="MANA x4 with a 512-slot memory bank: the paper's best memory size (its ablation: "
                            "N=512 beats 128 and 256, 1024 saturates); train with mana-vimeo-m512")
def mana_m512(**overrides: Any) -> MANA:
    return MANA(MANAConfig(**{"memory_size": 512, **overrides}))


@register_model("mana-nomem", family="mana",
                description="MANA x4 without the memory bank (cross-frame non-local attention only, no "
                            "quantization loss): the paper's No-Mem ablation")
def mana_nomem(**overrides: Any) -> MANA:
    return MANA(MANAConfig(**{"memory_size": 0, **overrides}))


# CPU-sized: 48 channels (GroupNorm groups of 4 channels, as the official 128/32), short encoder and
# decoder, and LOCAL attention: keys within 3 sigma of the query, softmax over that window
# (attention_window=3, attention_window_stride=None). The exact whole-frame attention costs O((HW)^2):
# about 100 s per 960x540 output frame on two CPU cores, against seconds for the window; and its
# softmax, taken over the whole frame, spreads differently over a 240x135 frame than over the 32x32
# crops it is trained on, while the window's normalisation is the same at every frame size. Trained
# with it, so the window is the model, not an approximation of one. The Gaussian starts narrow
# (sigma 1 LR px, not the official 4): a query starts on the 7x7 keys around it, so each neighbour's
# read-out begins close to its co-located features, which the decoder learns to fuse (sigma 4 spread
# a query over ~450 keys, and in a CPU-sized budget the decoder learned to ignore those blurred
# read-outs: temporal gain 0.005-0.015 dB against 0.08-0.11, docs/MODELS.md); the window is 3x
# smaller, so a training step is ~3x faster. Memory bank as official.
_S = dict(num_feat=48, norm_groups=12, encoder_nblocks=3, decoder_nblocks=12, init="kaiming",
          attention_window=3.0, attention_window_stride=None, std_init=1.0)


@register_model("mana-s", family="mana", pretrained="mana-s.safetensors",
                description="MANA-S x4 video SR (48 ch, 7 frames, Gaussian cross-frame attention in a 3-sigma "
                            "window + memory attention): srkit's CPU-sized model, trained by srkit, weights shipped "
                            "(pretrained=True)")
def mana_s(**overrides: Any) -> MANA:
    return MANA(MANAConfig(**{**_S, **overrides}))
