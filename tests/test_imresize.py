"""MATLAB imresize compatibility: hand-derived weights and an independent loop formulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srkit.data.imresize import cubic, imresize, imresize_torch, resize_weights


# ---------------------------------------------------------------------------------------------------
# An independent, deliberately naive formulation of MATLAB's imresize.m (scalar loops, recursive
# mirroring) to compare the vectorised implementation against.
# ---------------------------------------------------------------------------------------------------
def _mirror(i: int, n: int) -> int:
    """1-based MATLAB index -> 0-based index with symmetric padding (0 -> 1, -1 -> 2, n+1 -> n)."""
    while i < 1 or i > n:
        i = 1 - i if i < 1 else 2 * n + 1 - i
    return i - 1


def _cubic_scalar(x: float) -> float:
    a = abs(x)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def _ref_1d(vec: np.ndarray, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    n = len(vec)
    width = 4.0 / scale if (scale < 1 and antialias) else 4.0
    out = np.zeros(out_len)
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = [left + t for t in range(math.ceil(width) + 2)]
        if scale < 1 and antialias:
            w = [scale * _cubic_scalar(scale * (u - j)) for j in taps]
        else:
            w = [_cubic_scalar(u - j) for j in taps]
        total = sum(w)
        out[x - 1] = sum(wi / total * vec[_mirror(j, n)] for wi, j in zip(w, taps))
    return out


def _ref_imresize(img: np.ndarray, scale, out_shape=None, antialias=True) -> np.ndarray:
    x = img.astype(np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    if out_shape is None:
        scales = (scale, scale) if np.isscalar(scale) else tuple(scale)
        out_shape = tuple(math.ceil(s * n) for s, n in zip(scales, x.shape[:2]))
    else:
        scales = (out_shape[0] / x.shape[0], out_shape[1] / x.shape[1])
    order = [0, 1] if scales[0] <= scales[1] else [1, 0]
    for dim in order:
        if scales[dim] == 1:
            continue
        moved = np.moveaxis(x, dim, 0)
        res = np.zeros((out_shape[dim],) + moved.shape[1:])
        for idx in np.ndindex(*moved.shape[1:]):
            res[(slice(None),) + idx] = _ref_1d(moved[(slice(None),) + idx], out_shape[dim], scales[dim], antialias)
        x = np.moveaxis(res, 0, dim)
        if img.dtype == np.uint8:  # MATLAB's mex returns uint8 after every pass
            x = np.floor(np.clip(x, 0, 255) + 0.5)
    x = x.reshape(x.shape[:2] + img.shape[2:])
    return x.astype(img.dtype) if img.dtype == np.uint8 else x


# ---------------------------------------------------------------------------------------------------
def test_cubic_kernel_values():
    # Keys a=-0.5 at quarter steps, exact dyadic values.
    np.testing.assert_array_equal(
        cubic(np.array([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.5])),
        [1.0, 0.8671875, 0.2265625, 0.0, -0.0703125, -0.0234375, 0.0, 0.0],
    )


def test_4x4_to_2x2_hand_weights():
    # scale 1/2, antialiased kernel 0.5*cubic(0.5 d) at d = +-0.5, +-1.5, +-2.5, +-3.5 around u = 1.5;
    # mirrored taps fold onto the border samples: out0 = (70a + 51b + 13c - 6d) / 128.
    a = np.array([[35 / 64, 51 / 128, 13 / 128, -3 / 64], [-3 / 64, 13 / 128, 51 / 128, 35 / 64]])
    img = np.array([[3.0, 7, 1, 9], [4, 0, 8, 2], [6, 5, 11, 13], [1, 2, 3, 4]])
    np.testing.assert_allclose(imresize(img, 0.5), a @ img @ a.T, atol=1e-12)
    w, idx = resize_weights(4, 2, 0.5)
    np.testing.assert_allclose(w[0], [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875])
    np.testing.assert_array_equal(idx[0], [2, 1, 0, 0, 1, 2, 3, 3])


def test_octave_reference_without_antialias():
    # GNU Octave image package (MATLAB-compatible imresize), published output:
    # imresize(reshape(0:15, 4, 4)', 0.5, 'bicubic', 'AntiAliasing', false) = [2.1875 4.3125; 10.6875 12.8125]
    img = np.arange(16, dtype=np.float64).reshape(4, 4)
    np.testing.assert_allclose(imresize(img, 0.5, antialias=False), [[2.1875, 4.3125], [10.6875, 12.8125]], atol=1e-12)
    # with antialiasing (MATLAB's default) the same ramp gives 59/128 per step: 5 * 59/128 = 2.3046875
    np.testing.assert_allclose(imresize(img, 0.5), [[2.3046875, 4.3828125], [10.6171875, 12.6953125]], atol=1e-12)


def test_2x_upscale_hand_weights():
    # scale 2: u = x/2 + 1/4; output 1 reads 1-based taps -1, 0, 1, 2 (mirrored to 2, 1, 1, 2).
    vec = np.array([2.0, 10.0, 4.0, 8.0, 6.0])
    out = imresize(vec[None, :], output_shape=(1, 10))[0]
    a, b, c = vec[:3]
    assert out[0] == pytest.approx(35 / 32 * a - 3 / 32 * b, abs=1e-12)
    assert out[1] == pytest.approx(0.796875 * a + 0.2265625 * b - 0.0234375 * c, abs=1e-12)
    # and the mirror image at the far end
    assert out[-1] == pytest.approx(35 / 32 * vec[-1] - 3 / 32 * vec[-2], abs=1e-12)


@pytest.mark.parametrize("scale", [0.25, 0.5, 1 / 3, 0.37, 0.8, 1.7, 2.0, 3.0])
@pytest.mark.parametrize("shape", [(7, 9), (12, 5), (16, 16)])
def test_matches_reference_float(scale, shape):
    rng = np.random.default_rng(0)
    img = rng.random(shape + (2,))
    out = imresize(img, scale)
    ref = _ref_imresize(img, scale)
    assert out.shape == (math.ceil(scale * shape[0]), math.ceil(scale * shape[1]), 2)
    np.testing.assert_allclose(out, ref, atol=1e-12)


@pytest.mark.parametrize("scale", [0.25, 0.5, 1 / 3, 2.0, 3.0, 4.0])
def test_polyphase_path_equals_dense_matrices_on_tiny_and_odd_sizes(scale):
    # Integer factors take the polyphase path; it must equal MATLAB's per-pixel weight matrices even
    # when the kernel is longer than the signal (mirroring several times) and for odd lengths.
    from srkit.data.imresize import _periodic_plan, resize_matrix

    rng = np.random.default_rng(4)
    for n in (1, 2, 3, 5, 8, 13):
        out = math.ceil(n * scale)
        assert _periodic_plan(n, out, scale, True) is not None
        x = rng.random((n, 3))
        got = imresize(x[:, None, :], (scale, 1.0))[:, 0]  # n x 1 x 3 image, only rows resized
        np.testing.assert_allclose(got, resize_matrix(n, out, scale) @ x, atol=1e-12)
    assert _periodic_plan(10, 4, 0.37, True) is None  # non-integer factor: dense matrices


def test_output_shape_and_anisotropic_scale_and_no_antialias():
    rng = np.random.default_rng(1)
    img = rng.random((11, 13))
    np.testing.assert_allclose(imresize(img, output_shape=(5, 20)), _ref_imresize(img, None, (5, 20)), atol=1e-12)
    np.testing.assert_allclose(imresize(img, (0.5, 1.5)), _ref_imresize(img, (0.5, 1.5)), atol=1e-12)
    np.testing.assert_allclose(imresize(img, 0.5, antialias=False), _ref_imresize(img, 0.5, antialias=False), atol=1e-12)
    assert imresize(img, output_shape=(5, 20)).shape == (5, 20)


def test_uint8_rounds_after_each_pass_half_away_from_zero():
    # Rows [0, 0, 10, 11]: the column pass gives (13*10 - 6*11)/128 = 0.5 exactly -> MATLAB rounds to 1
    # (numpy's round-half-to-even would give 0).
    img = np.tile(np.array([0, 0, 10, 11], np.uint8), (4, 1))
    np.testing.assert_array_equal(imresize(img, 0.5), [[1, 10], [1, 10]])

    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (23, 17, 3), dtype=np.uint8)
    for scale in (0.25, 0.37, 1.7, (0.5, 2.0)):
        out = imresize(img, scale)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, _ref_imresize(img, scale))
    # Per-pass rounding is observable: it differs from rounding the float result once.
    once = np.floor(np.clip(imresize(img.astype(np.float64), 0.37), 0, 255) + 0.5).astype(np.uint8)
    assert not np.array_equal(once, imresize(img, 0.37))
    assert np.abs(once.astype(int) - imresize(img, 0.37)).max() == 1


def test_constant_image_preserved_and_float32_kept():
    img = np.full((9, 10, 3), 0.3, np.float32)
    out = imresize(img, 0.25)
    assert out.dtype == np.float32 and out.shape == (3, 3, 3)
    np.testing.assert_allclose(out, 0.3, atol=1e-7)


def test_torch_matches_numpy_batched():
    rng = np.random.default_rng(3)
    x = rng.random((2, 3, 19, 26)).astype(np.float32)
    for scale in (0.25, 0.37, 1.7):
        got = imresize_torch(torch.from_numpy(x), scale).numpy()
        ref = np.stack([imresize(f.transpose(1, 2, 0), scale).transpose(2, 0, 1) for f in x])
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-5
    u8 = rng.integers(0, 256, (3, 14, 15), dtype=np.uint8)
    got = imresize_torch(torch.from_numpy(u8), 0.5)
    assert got.dtype == torch.uint8
    np.testing.assert_array_equal(got.numpy(), imresize(u8.transpose(1, 2, 0), 0.5).transpose(2, 0, 1))
    got = imresize_torch(torch.from_numpy(x), output_shape=(7, 30)).numpy()
    assert got.shape == (2, 3, 7, 30)


def test_bad_arguments():
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)), 0.5, output_shape=(2, 2))
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)), -1.0)
