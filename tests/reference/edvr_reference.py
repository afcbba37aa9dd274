"""A plain EDVR written the way BasicSR's ``edvr_arch.py`` is: the ground truth for srkit's EDVR.

Deliberately naive and independent of :mod:`srkit.models.edvr`: NCHW fp32, a Python loop over frames
for the PCD alignment and over frames for the temporal attention, explicit ``torch.cat`` before every
offset convolution, ``torchvision.ops.deform_conv2d`` for the modulated deformable convolution, no
padding (sizes must be multiples of 4, or 16 with HR input, as in BasicSR) and no feature cache.
Parameter names are BasicSR's (plus the 2019 code's ``conv_first_1/2/3`` HR-input stem), so one state
dict loads into both. Used by the parity tests and by the inference speed benchmark::

    from tests.reference.edvr_reference import EDVRReference
    ref = EDVRReference(num_feat=64, num_frame=5)   # same keyword arguments as srkit's EDVRConfig
    ref.load_state_dict(srkit_model.state_dict())
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import deform_conv2d


class ResBlock(nn.Module):
    def __init__(self, nf: int):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x)))


def _layer(nf: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(nf) for _ in range(n)])


class DCNPack(nn.Module):
    def __init__(self, nf: int, dg: int):
        super().__init__()
        self.dg = dg
        self.weight = nn.Parameter(torch.zeros(nf, nf, 3, 3))
        self.bias = nn.Parameter(torch.zeros(nf))
        self.conv_offset = nn.Conv2d(nf, dg * 3 * 9, 3, 1, 1)

    def forward(self, x, feat):
        out = self.conv_offset(feat)
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        mask = torch.sigmoid(mask)
        return deform_conv2d(x, offset, self.weight, self.bias, stride=1, padding=1, dilation=1, mask=mask)


class PCD(nn.Module):
    def __init__(self, nf: int, dg: int):
        super().__init__()
        self.offset_conv1 = nn.ModuleDict()
        self.offset_conv2 = nn.ModuleDict()
        self.offset_conv3 = nn.ModuleDict()
        self.dcn_pack = nn.ModuleDict()
        self.feat_conv = nn.ModuleDict()
        for i in range(3, 0, -1):
            lv = f"l{i}"
            self.offset_conv1[lv] = nn.Conv2d(nf * 2, nf, 3, 1, 1)
            if i == 3:
                self.offset_conv2[lv] = nn.Conv2d(nf, nf, 3, 1, 1)
            else:
                self.offset_conv2[lv] = nn.Conv2d(nf * 2, nf, 3, 1, 1)
                self.offset_conv3[lv] = nn.Conv2d(nf, nf, 3, 1, 1)
            self.dcn_pack[lv] = DCNPack(nf, dg)
            if i < 3:
                self.feat_conv[lv] = nn.Conv2d(nf * 2, nf, 3, 1, 1)
        self.cas_offset_conv1 = nn.Conv2d(nf * 2, nf, 3, 1, 1)
        self.cas_offset_conv2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.cas_dcnpack = DCNPack(nf, dg)

    def forward(self, nbr, ref):
        lrelu = lambda t: F.leaky_relu(t, 0.1)  # noqa: E731
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        up_off = up_feat = None
        for i in range(3, 0, -1):
            lv = f"l{i}"
            off = lrelu(self.offset_conv1[lv](torch.cat([nbr[i - 1], ref[i - 1]], 1)))
            if i == 3:
                off = lrelu(self.offset_conv2[lv](off))
            else:
                off = lrelu(self.offset_conv2[lv](torch.cat([off, up_off], 1)))
                off = lrelu(self.offset_conv3[lv](off))
            feat = self.dcn_pack[lv](nbr[i - 1], off)
            if i < 3:
                feat = self.feat_conv[lv](torch.cat([feat, up_feat], 1))
            if i > 1:
                feat = lrelu(feat)
                up_off = up(off) * 2
                up_feat = up(feat)
        off = lrelu(self.cas_offset_conv1(torch.cat([feat, ref[0]], 1)))
        off = lrelu(self.cas_offset_conv2(off))
        return lrelu(self.cas_dcnpack(feat, off))


class TSA(nn.Module):
    def __init__(self, nf: int, nframe: int, center: int):
        super().__init__()
        self.center = center
        self.temporal_attn1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.temporal_attn2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.feat_fusion = nn.Conv2d(nframe * nf, nf, 1, 1)
        self.spatial_attn1 = nn.Conv2d(nframe * nf, nf, 1)
        self.spatial_attn2 = nn.Conv2d(nf * 2, nf, 1)
        self.spatial_attn3 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.spatial_attn4 = nn.Conv2d(nf, nf, 1)
        self.spatial_attn5 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.spatial_attn_l1 = nn.Conv2d(nf, nf, 1)
        self.spatial_attn_l2 = nn.Conv2d(nf * 2, nf, 3, 1, 1)
        self.spatial_attn_l3 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.spatial_attn_add1 = nn.Conv2d(nf, nf, 1)
        self.spatial_attn_add2 = nn.Conv2d(nf, nf, 1)
        self.max_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.avg_pool = nn.AvgPool2d(3, stride=2, padding=1)

    def forward(self, aligned):
        lrelu = lambda t: F.leaky_relu(t, 0.1)  # noqa: E731
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        b, t, c, h, w = aligned.size()
        emb_ref = self.temporal_attn1(aligned[:, self.center].clone())
        emb = self.temporal_attn2(aligned.view(-1, c, h, w)).view(b, t, -1, h, w)
        corr_l = [torch.sum(emb[:, i] * emb_ref, 1).unsqueeze(1) for i in range(t)]
        prob = torch.sigmoid(torch.cat(corr_l, 1)).unsqueeze(2).expand(b, t, c, h, w).contiguous().view(b, -1, h, w)
        aligned = aligned.view(b, -1, h, w) * prob
        feat = lrelu(self.feat_fusion(aligned))
        attn = lrelu(self.spatial_attn1(aligned))
        attn = lrelu(self.spatial_attn2(torch.cat([self.max_pool(attn), self.avg_pool(attn)], 1)))
        lvl = lrelu(self.spatial_attn_l1(attn))
        lvl = lrelu(self.spatial_attn_l2(torch.cat([self.max_pool(lvl), self.avg_pool(lvl)], 1)))
        lvl = up(lrelu(self.spatial_attn_l3(lvl)))
        attn = lrelu(self.spatial_attn3(attn)) + lvl
        attn = up(lrelu(self.spatial_attn4(attn)))
        attn = self.spatial_attn5(attn)
        attn_add = self.spatial_attn_add2(lrelu(self.spatial_attn_add1(attn)))
        return feat * torch.sigmoid(attn) * 2 + attn_add


class Predeblur(nn.Module):
    def __init__(self, cin: int, nf: int, hr_in: bool):
        super().__init__()
        self.hr_in = hr_in
        self.conv_first = nn.Conv2d(cin, nf, 3, 1, 1)
        if hr_in:
            self.stride_conv_hr1 = nn.Conv2d(nf, nf, 3, 2, 1)
            self.stride_conv_hr2 = nn.Conv2d(nf, nf, 3, 2, 1)
        self.stride_conv_l2 = nn.Conv2d(nf, nf, 3, 2, 1)
        self.stride_conv_l3 = nn.Conv2d(nf, nf, 3, 2, 1)
        self.resblock_l3 = ResBlock(nf)
        self.resblock_l2_1 = ResBlock(nf)
        self.resblock_l2_2 = ResBlock(nf)
        self.resblock_l1 = nn.ModuleList([ResBlock(nf) for _ in range(5)])

    def forward(self, x):
        lrelu = lambda t: F.leaky_relu(t, 0.1)  # noqa: E731
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        l1 = lrelu(self.conv_first(x))
        if self.hr_in:
            l1 = lrelu(self.stride_conv_hr1(l1))
            l1 = lrelu(self.stride_conv_hr2(l1))
        l2 = lrelu(self.stride_conv_l2(l1))
        l3 = lrelu(self.stride_conv_l3(l2))
        l3 = up(self.resblock_l3(l3))
        l2 = self.resblock_l2_1(l2) + l3
        l2 = up(self.resblock_l2_2(l2))
        for i in range(2):
            l1 = self.resblock_l1[i](l1)
        l1 = l1 + l2
        for i in range(2, 5):
            l1 = self.resblock_l1[i](l1)
        return l1


class EDVRReference(nn.Module):
    """BasicSR-structured EDVR; keyword arguments mirror :class:`srkit.models.edvr.EDVRConfig`."""

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_frame=5, deformable_groups=8,
                 num_extract_block=5, num_reconstruct_block=10, center_frame_idx=None, hr_in=False,
                 with_predeblur=False, with_tsa=True, scale=None, offset_warn_threshold=None, with_pcd=True,
                 offset_fidelity_threshold=None):  # the two thresholds: srkit monitoring / training only
        super().__init__()
        nf = num_feat
        self.center = num_frame // 2 if center_frame_idx is None else center_frame_idx
        self.hr_in, self.with_predeblur, self.with_tsa, self.with_pcd = hr_in, with_predeblur, with_tsa, with_pcd
        if with_predeblur:
            self.predeblur = Predeblur(num_in_ch, nf, hr_in)
            self.conv_1x1 = nn.Conv2d(nf, nf, 1, 1)
        elif hr_in:
            self.conv_first_1 = nn.Conv2d(num_in_ch, nf, 3, 1, 1)
            self.conv_first_2 = nn.Conv2d(nf, nf, 3, 2, 1)
            self.conv_first_3 = nn.Conv2d(nf, nf, 3, 2, 1)
        else:
            self.conv_first = nn.Conv2d(num_in_ch, nf, 3, 1, 1)
        self.feature_extraction = _layer(nf, num_extract_block)
        if with_pcd:  # the paper's PCD ablation (with_pcd=False) has no pyramid and no alignment
            self.conv_l2_1 = nn.Conv2d(nf, nf, 3, 2, 1)
            self.conv_l2_2 = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_l3_1 = nn.Conv2d(nf, nf, 3, 2, 1)
            self.conv_l3_2 = nn.Conv2d(nf, nf, 3, 1, 1)
            self.pcd_align = PCD(nf, deformable_groups)
        self.fusion = TSA(nf, num_frame, self.center) if with_tsa else nn.Conv2d(num_frame * nf, nf, 1, 1)
        self.reconstruction = _layer(nf, num_reconstruct_block)
        self.upconv1 = nn.Conv2d(nf, nf * 4, 3, 1, 1)
        self.upconv2 = nn.Conv2d(nf, 64 * 4, 3, 1, 1)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, num_out_ch, 3, 1, 1)

    def forward(self, x):
        lrelu = lambda t: F.leaky_relu(t, 0.1)  # noqa: E731
        b, t, c, h, w = x.size()
        m = 16 if self.hr_in else 4
        assert h % m == 0 and w % m == 0, f"height and width must be multiples of {m}"
        x_center = x[:, self.center].contiguous()
        frames = x.view(-1, c, h, w)
        if self.with_predeblur:
            l1 = self.conv_1x1(self.predeblur(frames))
        elif self.hr_in:
            l1 = lrelu(self.conv_first_1(frames))
            l1 = lrelu(self.conv_first_2(l1))
            l1 = lrelu(self.conv_first_3(l1))
        else:
            l1 = lrelu(self.conv_first(frames))
        if self.hr_in:
            h, w = h // 4, w // 4
        l1 = self.feature_extraction(l1)
        if not self.with_pcd:
            # Unaligned: every frame's level-1 features go to the fusion as they are.
            aligned = l1.view(b, t, -1, h, w)
            return self._tail(aligned, x_center, b, h, w)
        l2 = lrelu(self.conv_l2_2(lrelu(self.conv_l2_1(l1))))
        l3 = lrelu(self.conv_l3_2(lrelu(self.conv_l3_1(l2))))
        l1 = l1.view(b, t, -1, h, w)
        l2 = l2.view(b, t, -1, h // 2, w // 2)
        l3 = l3.view(b, t, -1, h // 4, w // 4)
        ref = [l1[:, self.center].clone(), l2[:, self.center].clone(), l3[:, self.center].clone()]
        aligned = []
        for i in range(t):
            nbr = [l1[:, i].clone(), l2[:, i].clone(), l3[:, i].clone()]
            aligned.append(self.pcd_align(nbr, ref))
        aligned = torch.stack(aligned, dim=1)
        return self._tail(aligned, x_center, b, h, w)

    def _tail(self, aligned, x_center, b, h, w):
        lrelu = lambda t: F.leaky_relu(t, 0.1)  # noqa: E731
        if not self.with_tsa:
            aligned = aligned.view(b, -1, h, w)
        feat = self.fusion(aligned)
        out = self.reconstruction(feat)
        out = lrelu(F.pixel_shuffle(self.upconv1(out), 2))
        out = lrelu(F.pixel_shuffle(self.upconv2(out), 2))
        out = lrelu(self.conv_hr(out))
        out = self.conv_last(out)
        base = x_center if self.hr_in else F.interpolate(x_center, scale_factor=4, mode="bilinear",
                                                         align_corners=False)
        return out + base
