"""Degradations: BD/BI definitions, kernels, PCA codes, maps, SRMD model and clip consistency."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srkit.data import degrade as D
from srkit.data.imresize import imresize
from srkit.errors import ConfigError


def _conv_replicate(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Straight convolution sum_ij k[i,j] x[y-i+r, x-j+r] with edge replication (loop reference)."""
    r = k.shape[0] // 2
    p = np.pad(img.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="edge")
    out = np.zeros(img.shape)
    H, W = img.shape[:2]
    for y in range(H):
        for x in range(W):
            for i in range(k.shape[0]):
                for j in range(k.shape[1]):
                    out[y, x] += k[i, j] * p[y - i + 2 * r, x - j + 2 * r]
    return out


def test_bd_kernel_is_the_hand_gaussian():
    k = D.bd_kernel(13, 1.6)
    assert k.shape == (13, 13)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    r = np.arange(13) - 6
    hand = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.6**2))
    np.testing.assert_allclose(k, hand / hand.sum(), atol=1e-15)


def test_bd_downsample_definition_and_torch():
    rng = np.random.default_rng(0)
    img = rng.random((21, 18, 3)).astype(np.float32)
    out = D.bd_downsample(img, 4)
    assert out.shape == (6, 5, 3) and out.dtype == np.float32
    # reference: reflect-101 padding (numpy "reflect"), full 2-D correlation, keep [0::4, 0::4]
    k = D.bd_kernel(13, 1.6)
    p = np.pad(img.astype(np.float64), ((6, 6), (6, 6), (0, 0)), mode="reflect")
    ref = np.zeros((6, 5, 3))
    for a in range(6):
        for b in range(5):
            ref[a, b] = np.einsum("ij,ijc->c", k, p[4 * a : 4 * a + 13, 4 * b : 4 * b + 13])
    np.testing.assert_allclose(out, ref, atol=2e-6)
    t = D.bd_downsample_torch(torch.from_numpy(img).permute(2, 0, 1)[None]).numpy()[0].transpose(1, 2, 0)
    np.testing.assert_allclose(t, ref, atol=2e-6)
    u8 = (img * 255).astype(np.uint8)
    out8 = D.bd_downsample(u8, 4)
    assert out8.dtype == np.uint8
    np.testing.assert_array_equal(out8, np.floor(np.clip(D.bd_downsample(u8.astype(np.float32), 4), 0, 255) + 0.5))


def test_bd_sigma_follows_duf_rule():
    rng = np.random.default_rng(11)
    img = rng.random((24, 24, 3)).astype(np.float32)
    np.testing.assert_array_equal(D.bd_downsample(img, 4), D.bd_downsample(img, 4, 1.6))
    np.testing.assert_allclose(D.bd_downsample(img, 2), D.bd_downsample(img, 2, 0.8), atol=0)
    np.testing.assert_allclose(D.bd_downsample(img, 3), D.bd_downsample(img, 3, 1.2), atol=0)
    assert not np.allclose(D.bd_downsample(img, 2), D.bd_downsample(img, 2, 1.6))
    lr = D.make_degradation("BD", 2)([img], rng).lr[0]
    np.testing.assert_array_equal(lr, D.bd_downsample(img, 2, 0.8))


def test_bicubic_downsample_is_imresize_quarter():
    rng = np.random.default_rng(1)
    img = rng.random((16, 20, 3)).astype(np.float32)
    np.testing.assert_array_equal(D.bicubic_downsample(img, 4), imresize(img, 0.25))
    t = D.bicubic_downsample_torch(torch.from_numpy(img).permute(2, 0, 1), 4).permute(1, 2, 0).numpy()
    assert np.abs(t - D.bicubic_downsample(img, 4)).max() < 1e-5


def test_gaussian_kernel_shapes_and_orientation():
    k = D.gaussian_kernel(15, 2.0)
    r = np.arange(15) - 7
    hand = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 8.0)
    np.testing.assert_allclose(k, hand / hand.sum(), atol=1e-7)
    a0 = D.gaussian_kernel(15, 3.0, 1.0, 0.0)
    hand = np.exp(-(r[None, :] ** 2) / (2 * 9.0) - (r[:, None] ** 2) / 2.0)  # wide along columns (x)
    np.testing.assert_allclose(a0, hand / hand.sum(), atol=1e-7)
    np.testing.assert_allclose(D.gaussian_kernel(15, 3.0, 1.0, math.pi / 2), a0.T, atol=1e-7)
    diag = D.gaussian_kernel(15, 3.0, 1.0, math.pi / 4)  # long axis towards the top-right
    assert diag[0, 14] > 100 * diag[0, 0]
    assert diag.sum() == pytest.approx(1.0, abs=1e-6)


def _moments(k: np.ndarray) -> np.ndarray:
    r = np.arange(k.shape[0]) - k.shape[0] // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    return np.array([[np.sum(k * xx * xx), np.sum(k * xx * yy)], [np.sum(k * xx * yy), np.sum(k * yy * yy)]])


def test_random_srmd_kernel_ranges():
    rng = np.random.default_rng(2)
    for scale, hi in ((2, 2.0), (3, 3.0), (4, 4.0)):
        widths = []
        for _ in range(60):
            k = D.random_srmd_kernel(rng, scale)
            assert k.shape == (15, 15) and abs(k.sum() - 1) < 1e-5
            m = _moments(k)
            assert m[0, 0] == pytest.approx(m[1, 1], rel=1e-4)  # isotropic
            widths.append(math.sqrt(m[0, 0]))
        # truncation to 15x15 only shrinks the measured width
        assert max(widths) <= hi + 1e-3 and max(widths) > 0.75 * hi
    for _ in range(40):
        k = D.random_srmd_kernel(rng, 4, anisotropic=True)
        ev = np.linalg.eigvalsh(_moments(k))
        assert 0.45 < ev[0] and ev[1] < 6.0 + 1e-3


def test_pca_basis_round_trip():
    p = D.load_pca_basis()
    assert p.shape == (15, 225)
    np.testing.assert_allclose(p @ p.T, np.eye(15), atol=1e-5)
    rng = np.random.default_rng(3)
    errs = []
    for i in range(200):
        k = D.random_srmd_kernel(rng, 2 + i % 3, anisotropic=bool(i % 2))
        code = D.kernel_to_code(k)
        assert code.shape == (15,)
        errs.append(np.abs(D.code_to_kernel(code) - k).max() / k.max())
    assert max(errs) < 0.05 and np.mean(errs) < 0.01
    # smaller odd kernels are zero-padded to 15x15 (same code as the padded kernel)
    k13 = D.bd_kernel(13, 1.6)
    np.testing.assert_allclose(D.kernel_to_code(k13), D.kernel_to_code(np.pad(k13, 1)), atol=1e-7)
    with pytest.raises(ValueError):
        D.kernel_to_code(np.ones((4, 4)) / 16)
    with pytest.raises(ValueError):  # large kernel with real mass outside 15x15
        D.kernel_to_code(np.ones((21, 21)) / 441)


def test_degradation_maps():
    code = np.arange(15, dtype=np.float32)
    m = D.degradation_maps(code, 15.0, 4, 6)
    assert m.shape == (16, 4, 6) and m.dtype == np.float32
    np.testing.assert_array_equal(m[:15, 2, 3], code)
    np.testing.assert_allclose(m[15], 15.0 / 255.0)
    per_pixel = np.random.default_rng(0).random((15, 4, 6)).astype(np.float32)
    noise = np.linspace(0, 50, 24).reshape(4, 6)
    m = D.degradation_maps(per_pixel, noise, 4, 6)
    np.testing.assert_array_equal(m[:15], per_pixel)
    np.testing.assert_allclose(m[15], noise / 255.0, rtol=1e-6)
    with pytest.raises(ValueError):
        D.degradation_maps(per_pixel, 0.0, 5, 6)
    with pytest.raises(ValueError):
        D.degradation_maps(code, np.zeros((3, 3)), 4, 6)


def test_blur_is_a_true_convolution_with_replicated_borders():
    rng = np.random.default_rng(4)
    img = rng.random((9, 8, 2)).astype(np.float32)
    k = rng.random((5, 5)).astype(np.float32)  # asymmetric: correlation would differ
    k /= k.sum()
    np.testing.assert_allclose(D.blur(img, k), _conv_replicate(img, k), atol=1e-5)


def test_srmd_degrade_definition_and_noise():
    rng = np.random.default_rng(5)
    hr = rng.random((24, 20, 3)).astype(np.float32)
    k = D.gaussian_kernel(15, 2.5, 1.0, 0.6)
    clean = D.srmd_degrade(hr, k, 0.0, 4, rng)
    ref = imresize(_conv_replicate(hr, k), 0.25)
    np.testing.assert_allclose(clean, ref, atol=1e-5)
    flat = np.full((400, 400, 3), 0.5, np.float32)
    noisy = D.srmd_degrade(flat, k, 25.0, 2, np.random.default_rng(0))
    assert noisy.shape == (200, 200, 3)
    assert np.std(noisy - 0.5) == pytest.approx(25 / 255, rel=0.02)
    u8 = (hr * 255).astype(np.uint8)
    np.testing.assert_allclose(D.srmd_degrade(u8, k, 0.0, 4, rng), D.srmd_degrade(u8 / 255.0, k, 0.0, 4, rng), atol=1e-6)
    jp = D.srmd_degrade(hr, k, 5.0, 2, rng, jpeg_quality=30)
    assert jp.shape == (12, 10, 3) and jp.min() >= 0 and jp.max() <= 1


def test_batched_torch_srmd_matches_numpy():
    rng = np.random.default_rng(6)
    hr = rng.random((2, 20, 24, 3)).astype(np.float32)
    ks = np.stack([D.gaussian_kernel(15, 2.0), D.gaussian_kernel(15, 3.0, 0.8, 1.0)])
    x = torch.from_numpy(hr).permute(0, 3, 1, 2)
    out = D.srmd_degrade_torch(x, ks, 0.0, 4).permute(0, 2, 3, 1).numpy()
    for i in range(2):
        np.testing.assert_allclose(out[i], D.srmd_degrade(hr[i], ks[i], 0.0, 4, rng), atol=1e-5)
    k = rng.random((5, 5)).astype(np.float32)  # asymmetric: checks the flip
    np.testing.assert_allclose(D.blur_torch(x, k / k.sum())[0].permute(1, 2, 0).numpy(), D.blur(hr[0], k / k.sum()), atol=1e-5)
    flat = torch.full((2, 3, 200, 200), 0.5)
    noisy = D.srmd_degrade_torch(flat, ks, torch.tensor([0.0, 30.0]), 2, generator=torch.Generator().manual_seed(0))
    assert float((noisy[0] - 0.5).abs().max()) < 1e-6  # sigma 0: no noise on sample 0
    assert float((noisy[1] - 0.5).std()) == pytest.approx(30 / 255, rel=0.03)
    with pytest.raises(ValueError):
        D.blur_torch(x, np.ones((3, 5, 5)))


def test_noise_and_jpeg():
    flat = np.full((300, 300, 3), 0.5, np.float32)
    a = D.add_gaussian_noise(flat, 10.0, np.random.default_rng(7))
    b = D.add_gaussian_noise(flat, 10.0, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert np.std(a - flat) == pytest.approx(10 / 255, rel=0.02)
    ramp = np.linspace(0, 60, 300, dtype=np.float32)[None, :].repeat(300, 0)
    c = D.add_gaussian_noise(flat, ramp, np.random.default_rng(7))
    assert np.std((c - flat)[:, :20]) < 0.3 * np.std((c - flat)[:, -20:])
    assert D.add_gaussian_noise(flat, 200.0, np.random.default_rng(0), clip=True).max() <= 1.0

    rng = np.random.default_rng(8)
    img = np.clip(rng.random((32, 32, 3)) * 0.2 + np.linspace(0, 0.8, 32)[None, :, None], 0, 1).astype(np.float32)
    hi, lo = D.jpeg_compress(img, 100), D.jpeg_compress(img, 10)
    assert hi.dtype == np.float32 and hi.shape == img.shape
    assert np.abs(hi - img).mean() < np.abs(lo - img).mean()
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 200
    out = D.jpeg_compress(red, 50)
    assert out.dtype == np.uint8 and out[..., 0].mean() > 180 and out[..., 2].mean() < 20
    out16 = D.jpeg_compress(red.astype(np.uint16) * 257, 50)
    assert out16.dtype == np.uint16
    np.testing.assert_array_equal(out16, out.astype(np.uint16) * 257)  # 16-bit goes through 8-bit JPEG
    with pytest.raises(ValueError):
        D.jpeg_compress(img, 0)


def test_spatially_variant_with_constant_field_equals_srmd():
    rng = np.random.default_rng(9)
    hr = rng.random((16, 12, 3)).astype(np.float32)
    k = D.gaussian_kernel(15, 1.3, 2.0, 0.3)
    field = np.broadcast_to(k, (4, 3, 15, 15))
    lr, maps = D.spatially_variant_degrade(hr, field, 0.0, 4, rng)
    np.testing.assert_allclose(lr, D.srmd_degrade(hr, k, 0.0, 4, rng), atol=1e-5)
    assert maps.shape == (16, 4, 3)
    np.testing.assert_allclose(maps[:15, 1, 2], D.kernel_to_code(k), atol=1e-6)
    # a varying field: left pixels sharp, right pixels blurry, codes follow
    lr2, maps2 = D.spatially_variant_degrade(hr, lambda v, u: D.gaussian_kernel(15, 0.3 + 2.5 * u), np.full((4, 3), 5.0), 4, rng)
    np.testing.assert_allclose(maps2[:15, 0, 0], D.kernel_to_code(D.gaussian_kernel(15, 0.3)), atol=1e-6)
    np.testing.assert_allclose(maps2[:15, 3, 2], D.kernel_to_code(D.gaussian_kernel(15, 2.8)), atol=1e-6)
    np.testing.assert_allclose(maps2[15], 5 / 255)
    with pytest.raises(ValueError):
        D.spatially_variant_degrade(hr, field[:3], 0.0, 4, rng)


def test_clip_degradations_share_one_draw():
    rng = np.random.default_rng(10)
    frame = rng.random((16, 16, 3)).astype(np.float32)
    srmd = D.make_degradation("srmd", 4, noise=0.0)
    s = srmd([frame, frame, frame], np.random.default_rng(0))
    assert len(s.lr) == 3 and s.maps.shape == (16, 4, 4)
    np.testing.assert_array_equal(s.lr[0], s.lr[2])  # same kernel for every frame
    np.testing.assert_allclose(s.maps[:15, 0, 0], D.kernel_to_code(s.params["kernel"]), atol=1e-6)
    noisy = D.make_degradation("SRMD", 4, blur=1.6, noise=20.0)([frame, frame], np.random.default_rng(0))
    assert not np.array_equal(noisy.lr[0], noisy.lr[1])  # fresh noise per frame...
    np.testing.assert_allclose(noisy.maps[15], 20 / 255)  # ...at one level
    np.testing.assert_allclose(noisy.params["kernel"], D.gaussian_kernel(15, 1.6))
    again = D.make_degradation("SRMD", 4, blur=1.6, noise=20.0)([frame, frame], np.random.default_rng(0))
    np.testing.assert_array_equal(noisy.lr[1], again.lr[1])  # reproducible from the seed

    bi = D.make_degradation("BI", 4)([frame, (frame * 255).astype(np.uint8)], rng)
    assert bi.maps is None
    np.testing.assert_array_equal(bi.lr[0], imresize(frame, 0.25))
    assert bi.lr[1].dtype == np.float32 and np.abs(bi.lr[1] - bi.lr[0]).max() < 0.01
    # uint8 frames: MATLAB's uint8 imresize (the benchmark LR PNGs), returned as float
    np.testing.assert_allclose(bi.lr[1] * 255, imresize((frame * 255).astype(np.uint8), 0.25), atol=1e-4)
    bd = D.make_degradation("BD", 4, jpeg_quality=(30, 40))([frame], rng)
    assert 30 <= bd.params["jpeg_quality"] <= 40 and bd.lr[0].shape == (4, 4, 3)

    with pytest.raises(ConfigError, match="unknown degradation"):
        D.make_degradation("XYZ", 4)
    with pytest.raises(ConfigError, match="unknown parameter"):
        D.make_degradation("BI", 4, sigma=2)


def _matlab_bd_reference(img: np.ndarray, scale: int, sigma: float) -> np.ndarray:
    """BasicSR's generate_LR_Vimeo90K_BD.m written out with MATLAB's 1-based definitions (loops)."""
    k = math.ceil(sigma * 3) * 2 + 2
    pos = np.arange(k) - (k - 1) / 2.0  # fspecial('gaussian', k, sigma): grid centred between pixels
    h2 = np.exp(-(pos[:, None] ** 2 + pos[None, :] ** 2) / (2 * sigma**2))
    h2 /= h2.sum()
    c = (k + 1) // 2  # imfilter's centre element of an even kernel, 1-based
    H, W = img.shape[:2]
    x = img.astype(np.float64)
    rows = list(range(scale // 2, H - scale // 2 + 1, scale))  # 1-based s/2 : s : end - s/2
    cols = list(range(scale // 2, W - scale // 2 + 1, scale))
    out = np.zeros((len(rows), len(cols)) + img.shape[2:])
    for a, y in enumerate(rows):
        for b, xx in enumerate(cols):
            acc = 0.0
            for i in range(1, k + 1):
                for j in range(1, k + 1):
                    yy = min(max(y + i - c, 1), H)  # 'replicate'
                    xj = min(max(xx + j - c, 1), W)
                    acc = acc + h2[i - 1, j - 1] * x[yy - 1, xj - 1]
            out[a, b] = acc
    return out


def test_bd_matlab_variant_is_basicsr_matlab_script():
    rng = np.random.default_rng(12)
    img = rng.random((18, 13, 3)).astype(np.float32)  # odd width: floor(13/4) = 3 samples
    ref = _matlab_bd_reference(img, 4, 1.6)
    out = D.bd_downsample(img, 4, variant="matlab")
    assert out.shape == (4, 3, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=2e-6)
    t = D.bd_downsample_torch(torch.from_numpy(img).permute(2, 0, 1), 4, variant="matlab")
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy(), ref, atol=2e-6)
    np.testing.assert_allclose(D.bd_downsample(img, 2, 0.8, variant="matlab"), _matlab_bd_reference(img, 2, 0.8),
                               atol=2e-6)
    # the two BD grids are different degradations (1.5 HR pixels apart at x4)
    assert np.abs(D.bd_downsample(img[:16, :12], 4) - out[:, :3]).max() > 0.05
    u8 = (img * 255).astype(np.uint8)
    lr = D.make_degradation("BD", 4, variant="matlab")([u8], rng).lr[0]
    np.testing.assert_array_equal(np.rint(lr * 255), np.floor(np.clip(_matlab_bd_reference(u8, 4, 1.6), 0, 255) + 0.5))
    with pytest.raises(ConfigError, match="even scale"):
        D.make_degradation("BD", 3, variant="matlab")
    with pytest.raises(ConfigError, match="variant"):
        D.make_degradation("BD", 4, variant="nope")
    with pytest.raises(ValueError, match="even kernel"):
        D.bd_downsample(img, 4, kernel_size=13, variant="matlab")


def test_pca_script_reproduces_the_shipped_basis_subspace():
    # scripts/compute_pca_basis.py made srkit/assets/srmd_pca_15.npy (20000 kernels, seed 0: bit-exact
    # when rerun). A 600-kernel run of the same code must span nearly the same leading subspace.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "compute_pca_basis.py"
    spec = importlib.util.spec_from_file_location("compute_pca_basis", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    kernels = mod.sample_kernels(np.random.default_rng(0), 600)
    basis, energy = mod.pca_basis(kernels)
    assert basis.shape == (15, 225) and energy > 0.999
    np.testing.assert_allclose(basis @ basis.T, np.eye(15), atol=1e-10)
    shipped = D.load_pca_basis().astype(np.float64)
    # leading components: |cos| of the principal angles between the two 3-D subspaces ~ 1 (later
    # components have close eigenvalues and rotate among themselves with few samples)
    cos = np.linalg.svd(basis[:3] @ shipped[:3].T, compute_uv=False)
    assert cos.min() > 0.999
    # the shipped basis reconstructs the script's kernels as well as their own basis does
    rec = lambda p: np.abs(kernels @ p.T @ p - kernels).max(axis=1) / kernels.max(axis=1)  # noqa: E731
    assert rec(shipped).mean() < 1.5 * rec(basis).mean() + 1e-3
    assert float(basis[0] @ shipped[0]) > 0.99  # same sign convention for the mean-shape component
