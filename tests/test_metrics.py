"""PSNR / SSIM: hand values, an independent float64 SSIM, numpy == torch, video aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d

from srkit.metrics import VideoScores, psnr, psnr_torch, rgb_to_y, ssim, ssim_torch


def _ref_ssim_gray(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 written out in float64 with scipy (independent of cv2 and torch)."""
    r = np.arange(11) - 5
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    f = lambda x: correlate2d(x, w, mode="valid")  # noqa: E731
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = f(a), f(b)
    va = f(a * a) - mu_a**2
    vb = f(b * b) - mu_b**2
    cov = f(a * b) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return float(m.mean())


def _pair(seed=0, shape=(40, 36, 3)):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 256, shape, dtype=np.uint8)
    noisy = np.clip(gt.astype(int) + rng.integers(-20, 21, shape), 0, 255).astype(np.uint8)
    return gt, noisy


def test_identical_images():
    gt, _ = _pair()
    assert psnr(gt, gt) == math.inf
    assert ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)
    t = torch.from_numpy(gt).permute(2, 0, 1)[None].float() / 255
    assert torch.isinf(psnr_torch(t, t)).all()
    assert ssim_torch(t, t).item() == pytest.approx(1.0, abs=1e-12)


def test_psnr_from_known_mse():
    img = np.full((16, 16, 3), 100, np.uint8)
    other = img.copy()
    other[::2] += 3  # half the pixels off by 3 -> MSE 4.5
    assert psnr(img, other) == pytest.approx(10 * math.log10(255**2 / 4.5), abs=1e-12)
    # float [0, 1] inputs give the same number as uint8
    assert psnr(img / 255.0, other / 255.0) == pytest.approx(psnr(img, other), abs=1e-9)
    # uint16 and an explicit max_value
    assert psnr(img.astype(np.uint16) * 257, other.astype(np.uint16) * 257) == pytest.approx(psnr(img, other), abs=1e-9)
    assert psnr(img.astype(np.float32), other.astype(np.float32), max_value=255) == pytest.approx(psnr(img, other), abs=1e-9)
    # crop_border removes the only differing rows
    c = img.copy()
    c[0] = 0
    assert psnr(img, c, crop_border=1) == math.inf


def test_y_channel_definition():
    white, black = np.full((1, 1, 3), 255, np.uint8), np.zeros((1, 1, 3), np.uint8)
    assert rgb_to_y(white.astype(float))[0, 0] == pytest.approx(235.0, abs=1e-9)
    assert rgb_to_y(black.astype(float))[0, 0] == pytest.approx(16.0, abs=1e-12)
    gt, noisy = _pair(1)
    yg = 16 + (65.481 * gt[..., 0] + 128.553 * gt[..., 1] + 24.966 * gt[..., 2]) / 255
    yn = 16 + (65.481 * noisy[..., 0] + 128.553 * noisy[..., 1] + 24.966 * noisy[..., 2]) / 255
    mse = np.mean((yg[4:-4, 4:-4] - yn[4:-4, 4:-4]) ** 2)
    assert psnr(gt, noisy, y_channel=True, crop_border=4) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)
    assert ssim(gt, noisy, y_channel=True, crop_border=4) == pytest.approx(_ref_ssim_gray(yg[4:-4, 4:-4], yn[4:-4, 4:-4]), abs=1e-9)


def test_ssim_constant_images_closed_form():
    # constant images: variances vanish, SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1)
    a, b = np.full((20, 20), 100, np.uint8), np.full((20, 20), 110, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), abs=1e-12)


def test_ssim_matches_independent_reference_per_channel():
    gt, noisy = _pair(2)
    ref = np.mean([_ref_ssim_gray(gt[..., c].astype(float), noisy[..., c].astype(float)) for c in range(3)])
    assert ssim(gt, noisy) == pytest.approx(ref, abs=1e-10)
    assert 0.3 < ssim(gt, noisy) < 0.99
    ref = np.mean([_ref_ssim_gray(gt[3:-3, 3:-3, c].astype(float), noisy[3:-3, 3:-3, c].astype(float)) for c in range(3)])
    assert ssim(gt, noisy, crop_border=3) == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("y_channel", [False, True])
@pytest.mark.parametrize("crop", [0, 4])
def test_torch_matches_numpy(y_channel, crop):
    pairs = [_pair(s, (30, 27, 3)) for s in range(3)]
    x = torch.stack([torch.from_numpy(p[1]).permute(2, 0, 1) for p in pairs]).float() / 255
    y = torch.stack([torch.from_numpy(p[0]).permute(2, 0, 1) for p in pairs]).float() / 255
    p_t = psnr_torch(x, y, crop_border=crop, y_channel=y_channel)
    s_t = ssim_torch(x, y, crop_border=crop, y_channel=y_channel)
    assert p_t.shape == (3,) and s_t.shape == (3,)
    for i, (gt, noisy) in enumerate(pairs):
        assert p_t[i].item() == pytest.approx(psnr(noisy, gt, crop_border=crop, y_channel=y_channel), abs=1e-6)
        assert s_t[i].item() == pytest.approx(ssim(noisy, gt, crop_border=crop, y_channel=y_channel), abs=1e-6)
    # uint8 tensors too
    xu = torch.stack([torch.from_numpy(p[1]).permute(2, 0, 1) for p in pairs])
    yu = torch.stack([torch.from_numpy(p[0]).permute(2, 0, 1) for p in pairs])
    assert torch.allclose(psnr_torch(xu, yu), psnr_torch(x, y), atol=1e-6)
    # uint16 tensors (16-bit PNG frames) on the same 0-255 scale as numpy's uint16
    x16 = torch.from_numpy(np.stack([p[1].astype(np.uint16) * 257 for p in pairs]).transpose(0, 3, 1, 2).copy())
    y16 = torch.from_numpy(np.stack([p[0].astype(np.uint16) * 257 for p in pairs]).transpose(0, 3, 1, 2).copy())
    assert torch.allclose(psnr_torch(x16, y16, y_channel=y_channel), psnr_torch(x, y, y_channel=y_channel), atol=1e-6)
    assert torch.allclose(ssim_torch(x16, y16, crop_border=crop), ssim_torch(x, y, crop_border=crop), atol=1e-6)
    with pytest.raises(ValueError, match="pass max_value"):
        psnr_torch(xu.int(), yu.int())


def test_torch_only_ssim_path_matches_numpy():
    # The GPU code path (shifted adds in torch), exercised on CPU tensors.
    from srkit.metrics.quality import _ssim_torch_any_device

    pairs = [_pair(s, (26, 31, 3)) for s in range(2)]
    a = torch.stack([torch.from_numpy(p[1]).permute(2, 0, 1) for p in pairs]).double()
    b = torch.stack([torch.from_numpy(p[0]).permute(2, 0, 1) for p in pairs]).double()
    got = _ssim_torch_any_device(a, b)
    for i, (gt, noisy) in enumerate(pairs):
        assert got[i].item() == pytest.approx(ssim(noisy, gt), abs=1e-9)


def test_bad_inputs():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="crop_border"):
        psnr(np.zeros((4, 4)), np.zeros((4, 4)), crop_border=2)


def test_video_scores_mean_of_clip_means():
    s = VideoScores()
    for v in (30.0, 32.0):
        s.add("a", f"{v}", psnr=v, ssim=0.9)
    for v in (20.0, 22.0, 24.0, 26.0):
        s.add("b", f"{v}", psnr=v, ssim=0.5)
    assert s.clips["a"].mean("psnr") == 31.0 and s.clips["b"].mean("psnr") == 23.0
    assert s.mean("psnr") == 27.0  # each clip counts once
    assert s.frame_mean("psnr") == pytest.approx(154 / 6)
    d = s.to_dict()
    assert d["mean"]["ssim"] == pytest.approx(0.7) and d["clips"]["b"]["per_frame"]["psnr"] == [20.0, 22.0, 24.0, 26.0]
    assert VideoScores.from_dict(d).to_dict() == d
    with pytest.raises(ValueError):
        s.add("a", "x", psnr=1.0)


def test_psnr_of_known_gaussian_noise():
    # AWGN of sigma 5 grey levels on mid-grey (no clipping): MSE -> 25, PSNR -> 20 log10(255 / 5) = 34.151 dB.
    rng = np.random.default_rng(7)
    gt = np.full((256, 256, 3), 128.0)
    noisy = gt + rng.normal(0.0, 5.0, gt.shape)
    got = psnr(noisy, gt, max_value=255)
    assert got == pytest.approx(20 * math.log10(255 / 5), abs=0.02)
    # exact against the realised MSE, and torch agrees
    assert got == pytest.approx(10 * math.log10(255**2 / np.mean((noisy - gt) ** 2)), abs=1e-12)
    t = lambda a: torch.from_numpy(a.transpose(2, 0, 1))[None]  # noqa: E731
    assert psnr_torch(t(noisy), t(gt), max_value=255).item() == pytest.approx(got, abs=1e-9)
    # Y of equal-noise RGB: Y noise sigma = 5 * |coeffs| / 255 -> PSNR_Y = 34.151 - 20 log10(|c| / 255)
    c = np.array([65.481, 128.553, 24.966])
    assert psnr(noisy, gt, max_value=255, y_channel=True) == pytest.approx(
        20 * math.log10(255 / 5) - 20 * math.log10(np.linalg.norm(c) / 255), abs=0.03)
