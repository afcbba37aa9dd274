"""udvd-ref-x*: the design notes' reference UDVD code, state dict for state dict and output for output.

The reference is rebuilt here from the notes (001_...: ``UDVD``, ``ResBlock``, ``PixelConv``,
``CommonDynamicConv``, ``UpDynamicConv``), with the scale as a parameter: at x2 it is the notes' code;
at x4 the scale-tied widths follow the same rule (kernel head 25*s*s, residual 16*s*s before
PixelShuffle(s), lift PixelShuffle(s) + 1x1 conv 128/s^2 -> 128). Its dynamic convolution is the
notes' unfold + permute + matmul formulation, independent of srkit's shifted-view op.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from srkit.models import create_model
from srkit.models.checkpoint import load_model


# ---------------------------------------------------------------------------- the notes' reference code
class RefResBlock(nn.Module):
    def __init__(self, channels, kernel_size=3, res_scale=1.0):
        super().__init__()
        padding = (kernel_size - 1) // 2
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, 1, padding),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, kernel_size, 1, padding),
        )
        self.res_scale = res_scale

    def forward(self, inputs):
        return inputs + self.conv(inputs) * self.res_scale


class RefPixelConv(nn.Module):
    def __init__(self, scale=2, depthwise=False):
        super().__init__()
        self.scale = scale
        self.depthwise = depthwise

    def forward(self, feature, kernel):
        NF, CF, HF, WF = feature.size()
        NK, ksize, HK, WK = kernel.size()
        assert NF == NK and HF == HK and WF == WK
        if self.depthwise:
            ink, outk = CF, 1
            ksize = int(np.sqrt(int(ksize // (self.scale**2))))
        else:
            ink, outk = 1, CF
            ksize = int(np.sqrt(int(ksize // CF // (self.scale**2))))
        pad = (ksize - 1) // 2
        feat = F.pad(feature, [pad, pad, pad, pad])
        feat = feat.unfold(2, ksize, 1).unfold(3, ksize, 1)
        feat = feat.permute(0, 2, 3, 1, 5, 4).contiguous()
        feat = feat.reshape(NF, HF, WF, ink, -1)
        kernel = kernel.permute(0, 2, 3, 1).reshape(NK, HK, WK, ksize * ksize, self.scale**2 * outk)
        output = torch.matmul(feat, kernel)
        output = output.permute(0, 3, 4, 1, 2).reshape(NK, -1, HF, WF)
        if self.scale > 1:
            output = F.pixel_shuffle(output, self.scale)
        return output


def _image_conv():
    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(16, 16, 3, 1, 1),
                         nn.ReLU(inplace=True), nn.Conv2d(16, 32, 3, 1, 1))


class RefCommonDynamicConv(nn.Module):
    def __init__(self, scale=2):
        super().__init__()
        self.image_conv = _image_conv()
        self.feat_conv = nn.Sequential(nn.PixelShuffle(scale), nn.Conv2d(128 // scale**2, 128, 1))
        self.feat_residual = nn.Sequential(nn.Conv2d(160, 16, 3, 1, 1), nn.ReLU(inplace=True),
                                           nn.Conv2d(16, 3, 3, 1, 1))
        self.feat_kernel = nn.Conv2d(160, 25, 3, 1, 1)
        self.pixel_conv = RefPixelConv(scale=1, depthwise=True)

    def forward(self, image, features):
        image_conv = self.image_conv(image)
        features = self.feat_conv(features)
        cat_inputs = torch.cat([image_conv, features], 1)
        kernel = self.feat_kernel(cat_inputs)
        output = self.pixel_conv(image, kernel)
        residual = self.feat_residual(cat_inputs)
        return output + residual


class RefUpDynamicConv(nn.Module):
    def __init__(self, scale=2):
        super().__init__()
        self.image_conv = _image_conv()
        self.feat_residual = nn.Sequential(nn.Conv2d(160, 16 * scale**2, 3, 1, 1), nn.ReLU(inplace=True),
                                           nn.PixelShuffle(upscale_factor=scale), nn.Conv2d(16, 3, 3, 1, 1))
        self.feat_kernel = nn.Conv2d(160, 25 * scale**2, 3, 1, 1)
        self.pixel_conv = RefPixelConv(scale=scale, depthwise=True)

    def forward(self, image, features):
        image_conv = self.image_conv(image)
        cat_inputs = torch.cat([image_conv, features], 1)
        kernel = self.feat_kernel(cat_inputs)
        output = self.pixel_conv(image, kernel)
        residual = self.feat_residual(cat_inputs)
        return output + residual


class RefUDVD(nn.Module):
    def __init__(self, scale=2):
        super().__init__()
        self.head = nn.Conv2d(19, 128, 3, 1, 1)
        self.body = nn.Sequential(*[RefResBlock(128, 3, 0.1) for _ in range(15)])
        self.UpDyConv = RefUpDynamicConv(scale)
        self.ComDyConv1 = RefCommonDynamicConv(scale)
        self.ComDyConv2 = RefCommonDynamicConv(scale)

    def forward(self, image, kernel, noise):
        inputs = torch.cat([image, kernel, noise], 1)
        head = self.head(inputs)
        body = self.body(head) + head
        output1 = self.UpDyConv(image, body)
        output2 = self.ComDyConv1(output1, body)
        output3 = self.ComDyConv2(output2, body)
        return output1, output2, output3


def _randomise(module: nn.Module) -> None:
    # Default init leaves small outputs; larger random weights make the comparison meaningful.
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * (0.5 / max(1, p[0].numel()) ** 0.5))


def _inputs(h=10, w=12):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, h, w, generator=g)
    maps = torch.randn(2, 16, h, w, generator=g) * 0.3
    return x, maps


# ---------------------------------------------------------------------------- tests
@pytest.mark.parametrize("scale", [2, 4])
def test_state_dict_is_the_reference_codes(scale, one_thread):
    ref = RefUDVD(scale)
    with torch.device("meta"):
        ours = create_model(f"udvd-ref-x{scale}")
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert our_shapes == ref_shapes
    assert list(our_shapes) == list(ref_shapes)  # same order, too


@pytest.mark.parametrize("scale", [2, 4])
def test_outputs_equal_the_reference_code(scale, one_thread):
    torch.manual_seed(scale)
    ref = RefUDVD(scale).eval()
    _randomise(ref)
    ours = create_model(f"udvd-ref-x{scale}").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x, maps = _inputs()
    with torch.no_grad():
        expected = ref(x, maps[:, :15], maps[:, 15:])
        got = ours(x, maps)
    assert got.image.shape == (2, 3, 10 * scale, 12 * scale)
    assert len(got.stages) == 3
    for e, g in zip(expected, got.stages):
        assert e.abs().max() > 0.1  # a non-trivial comparison
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    assert got.image is got.stages[-1]


def test_reference_checkpoint_loads_by_keys_and_shapes(tmp_path, one_thread):
    torch.manual_seed(1)
    ref = RefUDVD(2).eval()
    _randomise(ref)
    path = tmp_path / "udvd_reference.pth"
    torch.save({k: v for k, v in ref.state_dict().items()}, path)  # a bare state dict, as the code saves it
    model = load_model(path).eval()
    assert type(model).__name__ == "UDVDRef" and model.config.scale == 2
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"params": {f"module.{k}": v for k, v in ref.state_dict().items()}}, wrapped)
    model2 = create_model("udvd-ref-x2", weights=wrapped).eval()
    x, maps = _inputs(8, 8)
    with torch.no_grad():
        expected = ref(x, maps[:, :15], maps[:, 15:])[2]
        torch.testing.assert_close(model(x, maps).image, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model2(x, maps).image, expected, rtol=1e-5, atol=1e-5)


def test_x4_checkpoint_does_not_load_into_x2(tmp_path, one_thread):
    from srkit.errors import CheckpointError

    path = tmp_path / "x4.pth"
    torch.save(RefUDVD(4).state_dict(), path)
    with pytest.raises(CheckpointError):
        create_model("udvd-ref-x2", weights=path)
    assert load_model(path).config.scale == 4


def test_x3_follows_the_rule(tiny_model, one_thread):
    with torch.device("meta"):
        m = create_model("udvd-ref-x3")
    sd = m.state_dict()
    assert sd["UpDyConv.feat_kernel.weight"].shape == (225, 160, 3, 3)
    assert sd["UpDyConv.feat_residual.0.weight"].shape == (144, 160, 3, 3)
    assert sd["ComDyConv1.feat_conv.1.weight"].shape == (128, 14, 1, 1)
    small = tiny_model("udvd-ref-x3")
    x, maps = _inputs(5, 6)
    out = small(x, maps)
    assert out.image.shape == (2, 3, 15, 18)


def test_spec_and_maps(tiny_model, one_thread):
    m = tiny_model("udvd-ref-x2")
    assert m.spec.condition == "degradation" and m.spec.input_kind == "image" and m.spec.scale == 2
    x = torch.rand(1, 3, 6, 6)
    with pytest.raises(ValueError, match="degradation maps"):
        m(x)
    uniform = torch.rand(1, 16)
    torch.testing.assert_close(m(x, uniform).image, m(x, uniform[:, :, None, None].expand(1, 16, 6, 6)).image)
