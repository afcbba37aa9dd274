"""Per-pixel dynamic convolution: equal to the unfold + matmul formulation, gradients, identity."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from srkit.ops import dynamic_conv2d, dynamic_upsample_conv2d, identity_kernels


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def unfold_reference(x: torch.Tensor, kernels: torch.Tensor, scale: int, padding: str = "zeros") -> torch.Tensor:
    """The straightforward formulation: copy every k x k neighbourhood (unfold), then one matmul per pixel.

    Written independently of the op: zero padding is unfold's own; other modes pad first.
    """
    n, c, h, w = x.shape
    k2 = kernels.shape[1] // (scale * scale)
    k = int(round(k2**0.5))
    r = k // 2
    if padding == "zeros":
        cols = F.unfold(x, k, padding=r)
    else:
        cols = F.unfold(F.pad(x, (r, r, r, r), mode=padding), k)
    cols = cols.view(n, c, k2, h * w).permute(0, 3, 1, 2)  # (N, HW, C, k*k)
    kmat = kernels.view(n, scale * scale, k2, h * w).permute(0, 3, 2, 1)  # (N, HW, k*k, s*s)
    out = torch.matmul(cols, kmat)  # (N, HW, C, s*s)
    out = out.permute(0, 2, 3, 1).reshape(n, c * scale * scale, h, w)
    return F.pixel_shuffle(out, scale) if scale > 1 else out


@pytest.mark.parametrize("padding", ["zeros", "replicate", "reflect"])
@pytest.mark.parametrize("k", [3, 5])
def test_same_resolution_equals_unfold_reference(k, padding):
    gen = torch.Generator().manual_seed(k)
    x = torch.randn(2, 3, 13, 17, generator=gen)
    kernels = torch.randn(2, k * k, 13, 17, generator=gen)
    out = dynamic_conv2d(x, kernels, padding=padding)
    assert out.shape == x.shape
    torch.testing.assert_close(out, unfold_reference(x, kernels, 1, padding), atol=1e-5, rtol=0)


@pytest.mark.parametrize("padding", ["zeros", "replicate"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_upsampling_equals_unfold_reference(scale, padding):
    gen = torch.Generator().manual_seed(scale)
    x = torch.randn(2, 3, 9, 11, generator=gen)
    kernels = torch.randn(2, scale * scale * 25, 9, 11, generator=gen)
    out = dynamic_upsample_conv2d(x, kernels, scale, padding=padding)
    assert out.shape == (2, 3, 9 * scale, 11 * scale)
    torch.testing.assert_close(out, unfold_reference(x, kernels, scale, padding), atol=1e-5, rtol=0)


def test_upsampling_sub_pixel_layout_by_hand():
    # Kernel of sub-pixel p=(dy, dx) picks the neighbour (dy-1, dx-1) of a 3x3 window: the output block
    # of each input pixel must then hold its up-left, up, left and own neighbours in pixel_shuffle order.
    x = torch.arange(20.0).view(1, 1, 4, 5)
    kernels = torch.zeros(1, 4, 9, 4, 5)
    for dy in range(2):
        for dx in range(2):
            kernels[0, dy * 2 + dx, dy * 3 + dx] = 1.0  # tap (i, j) = (dy, dx) -> offset (dy-1, dx-1)
    out = dynamic_upsample_conv2d(x, kernels.view(1, 36, 4, 5), 2)
    xp = F.pad(x, (1, 1, 1, 1))
    for h in range(4):
        for w in range(5):
            for dy in range(2):
                for dx in range(2):
                    assert out[0, 0, 2 * h + dy, 2 * w + dx] == xp[0, 0, h + dy, w + dx]


def test_gradcheck_same_resolution():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    kernels = torch.randn(2, 9, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    for padding in ("zeros", "replicate"):
        assert torch.autograd.gradcheck(lambda a, b: dynamic_conv2d(a, b, padding=padding), (x, kernels))


def test_gradcheck_upsampling():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    kernels = torch.randn(1, 4 * 9, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: dynamic_upsample_conv2d(a, b, 2), (x, kernels))
    # Other padding / scale: the fast (random-projection) mode keeps the run short.
    assert torch.autograd.gradcheck(
        lambda a, b: dynamic_upsample_conv2d(a, b, 2, padding="reflect"), (x, kernels), fast_mode=True
    )
    k3 = torch.randn(1, 9 * 9, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: dynamic_upsample_conv2d(a, b, 3), (x, k3), fast_mode=True)


def test_gradients_equal_reference_gradients_float32():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 8, 7, generator=gen)
    kernels = torch.randn(2, 4 * 25, 8, 7, generator=gen)
    grad = torch.randn(2, 3, 16, 14, generator=gen)
    xa, ka = x.clone().requires_grad_(), kernels.clone().requires_grad_()
    xb, kb = x.clone().requires_grad_(), kernels.clone().requires_grad_()
    dynamic_upsample_conv2d(xa, ka, 2).backward(grad)
    unfold_reference(xb, kb, 2).backward(grad)
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(ka.grad, kb.grad, atol=1e-5, rtol=0)


def test_only_kernel_gradient_requested():
    x = torch.randn(1, 3, 6, 6)
    kernels = torch.randn(1, 9, 6, 6, requires_grad=True)
    dynamic_conv2d(x, kernels).sum().backward()
    # d(sum out)/dK[t] = sum over channels of the shifted input: check the centre tap exactly.
    torch.testing.assert_close(kernels.grad[:, 4], x.sum(1), atol=1e-6, rtol=0)


def test_identity_kernels_copy_and_nearest_upsample():
    x = torch.rand(2, 3, 7, 9)
    assert torch.equal(dynamic_conv2d(x, identity_kernels(2, 7, 9, 5)), x)
    up = dynamic_upsample_conv2d(x, identity_kernels(2, 7, 9, 5, scale=3), 3)
    assert torch.equal(up, F.interpolate(x, scale_factor=3, mode="nearest"))


def test_mixed_dtypes_compute_in_the_wider_type():
    x = torch.rand(1, 3, 5, 5)
    kernels = identity_kernels(1, 5, 5, 3).to(torch.bfloat16)
    out = dynamic_conv2d(x, kernels)
    assert out.dtype == torch.float32 and torch.equal(out, x)


@pytest.mark.parametrize(
    "x_shape, k_shape, match",
    [
        ((1, 3, 5, 5), (1, 10, 5, 5), "k\\*k"),
        ((1, 3, 5, 5), (1, 9, 5, 4), "kernels must have shape"),
        ((1, 3, 5, 5), (2, 9, 5, 5), "kernels must have shape"),
        ((3, 5, 5), (1, 9, 5, 5), "x must be"),
        ((1, 3, 5, 5), (1, 4, 5, 5), "odd"),
    ],
)
def test_bad_shapes_are_clear_errors(x_shape, k_shape, match):
    with pytest.raises(ValueError, match=match):
        dynamic_conv2d(torch.zeros(x_shape), torch.zeros(k_shape))


def test_bad_scale_and_padding():
    with pytest.raises(ValueError, match="scale"):
        dynamic_upsample_conv2d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 9, 3, 3), 0)
    with pytest.raises(ValueError, match="s\\*s\\*k\\*k"):
        dynamic_upsample_conv2d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 9, 3, 3), 2)
    with pytest.raises(ValueError, match="padding"):
        dynamic_conv2d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 9, 3, 3), padding="circular")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.randn(1, 3, 9, 10)
    kernels = torch.randn(1, 4 * 25, 9, 10)
    cpu = dynamic_upsample_conv2d(x, kernels, 2)
    gpu = dynamic_upsample_conv2d(x.cuda(), kernels.cuda(), 2).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-5, rtol=1e-5)


def test_export_path_equals_function_path(monkeypatch):
    # While exporting / tracing / compiling the op sums out-of-place with plain ops; same result.
    import srkit.ops.dynamic_conv as dc

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 7, 8, generator=gen)
    k_same = torch.randn(2, 25, 7, 8, generator=gen)
    k_up = torch.randn(2, 9 * 25, 7, 8, generator=gen)
    fast = dynamic_conv2d(x, k_same, padding="replicate"), dynamic_upsample_conv2d(x, k_up, 3)
    monkeypatch.setattr(dc, "_graph_capture", lambda: True)
    plain = dynamic_conv2d(x, k_same, padding="replicate"), dynamic_upsample_conv2d(x, k_up, 3)
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_torch_export_captures_the_op():
    class Up(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return dynamic_upsample_conv2d(a, b, 3, padding="replicate")

    gen = torch.Generator().manual_seed(5)
    x, kernels = torch.randn(1, 3, 6, 7, generator=gen), torch.randn(1, 9 * 25, 6, 7, generator=gen)
    program = torch.export.export(Up(), (x, kernels))
    torch.testing.assert_close(program.module()(x, kernels), Up()(x, kernels), atol=1e-5, rtol=0)
