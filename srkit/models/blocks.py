"""Building blocks shared by several networks (flat and documented, as in BasicSR's arch files).

Parameter names (``conv1``, ``conv2``, ``upconv1`` ...) follow BasicSR's so that published checkpoints
map onto srkit modules with few renames.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from srkit.ops.fused_conv import conv_act, conv_add


class ResidualBlockNoBN(nn.Module):
    """conv-act-conv with identity skip and no batch norm: ``x + res_scale * conv2(act(conv1(x)))``.

    EDVR and MANA use ReLU with ``res_scale = 1``; EDSR (UDVD's body) uses ReLU with ``res_scale = 0.1``.
    """

    def __init__(self, num_feat: int = 64, res_scale: float = 1.0, act: nn.Module | None = None):
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=True)
        self.act = act if act is not None else nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # conv_act/conv_add fuse the activation and the skip into the convolutions during CPU inference.
        if type(self.act) is nn.ReLU:
            h = conv_act(self.conv1, x, "relu")
        elif type(self.act) is nn.LeakyReLU:
            h = conv_act(self.conv1, x, "leaky_relu", self.act.negative_slope)
        else:
            h = self.act(self.conv1(x))
        if self.res_scale != 1.0:
            return x + self.conv2(h) * self.res_scale
        return conv_add(self.conv2, h, x)


def make_layer(block: type[nn.Module] | callable, num_blocks: int, **kwargs) -> nn.Sequential:
    """``num_blocks`` fresh blocks in a Sequential (children named 0, 1, ... as BasicSR's make_layer)."""
    return nn.Sequential(*[block(**kwargs) for _ in range(num_blocks)])


def scaled_kaiming_init_(module: nn.Module, scale: float = 0.1) -> None:
    """Kaiming-normal init scaled down for residual branches (BasicSR's ``default_init_weights``)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            m.weight.data.mul_(scale)
            if m.bias is not None:
                m.bias.data.zero_()


def leaky_kaiming_init_(module: nn.Module, negative_slope: float = 0.1) -> None:
    """Kaiming-normal weights (fan-in, LeakyReLU gain) and zero biases for one convolution.

    PyTorch's default (uniform +-1/sqrt(fan_in) weights *and biases*) shrinks a feature map's
    variance about 3x per layer while every layer adds a bias of the same order; through the ~20
    plain convolutions between EDVR's input and its reconstruction trunk the image signal ends up
    far below the biases, the network's output no longer depends on its input, and training sits on
    the bilinear baseline it started from (measured in ``benchmarks/learning_check.py``'s history).
    This init keeps the signal's variance from layer to layer.
    """
    nn.init.kaiming_normal_(module.weight, a=negative_slope, mode="fan_in", nonlinearity="leaky_relu")
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the last two dims on the bottom/right up to a multiple; returns the padded tensor and (H, W).

    Reflection padding (replicate when the input is too small to reflect) keeps the content near the
    border natural, so the cropped-back result is as if the model had seen an unpadded frame.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    use = mode if (mode != "reflect" or (ph < h and pw < w)) else "replicate"
    flat = F.pad(flat, (0, pw, 0, ph), mode=use)
    return flat.reshape(*lead, *flat.shape[-3:]), (h, w)


def crop_to(x: torch.Tensor, size: tuple[int, int], scale: int = 1) -> torch.Tensor:
    """Crop the last two dims to ``size * scale`` (undoes :func:`pad_to_multiple` after upscaling)."""
    h, w = size
    return x[..., : h * scale, : w * scale]
