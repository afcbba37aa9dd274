"""srkit.ops.deform_conv: parity with torchvision's kernel (values and gradients), gradcheck,
autocast, argument checking, the nn.Module wrapper and the rate-limited offset monitor."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from srkit.ops import ModulatedDeformConv2d, OffsetMonitor, deform_conv2d
from srkit.ops import deform_conv as dc_module
from srkit.ops import native


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


@pytest.fixture(params=["pytorch", "compiled"])
def inference_path(request, monkeypatch) -> str:
    """Runs a no-grad test through both inference paths: the PyTorch one (grid_sample) and the compiled
    im2col of srkit.ops.native (skipped only where it cannot be built: see test_compiled_kernel_builds...)."""
    if request.param == "pytorch":
        monkeypatch.setattr(dc_module, "_fused_usable", lambda *a: False)
    elif native.deform_im2col() is None:
        pytest.skip("the compiled kernel is not available here")
    return request.param


def _out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def _case(
    n=2, c=8, h=9, w=11, cout=6, k=(3, 3), stride=(1, 1), pad=(1, 1), dil=(1, 1), dg=2, groups=1,
    offset_scale=3.0, dtype=torch.float32, seed=0,
):
    """Random inputs; offsets have random fractional parts so no sample lies on a grid line."""
    g = torch.Generator().manual_seed(seed)
    kh, kw = k
    ho = _out_size(h, kh, stride[0], pad[0], dil[0])
    wo = _out_size(w, kw, stride[1], pad[1], dil[1])
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    weight = torch.randn(cout, c // groups, kh, kw, generator=g, dtype=dtype) * 0.3
    bias = torch.randn(cout, generator=g, dtype=dtype)
    offset = torch.randn(n, 2 * dg * kh * kw, ho, wo, generator=g, dtype=dtype) * offset_scale
    mask = torch.rand(n, dg * kh * kw, ho, wo, generator=g, dtype=dtype)
    return x, offset, weight, bias, mask, dict(stride=stride, padding=pad, dilation=dil)


CASES = {
    "basic": dict(),
    "batch3-dg1": dict(n=3, dg=1),
    "dg4-groups2": dict(c=8, cout=4, dg=4, groups=2),
    "groups4": dict(c=8, cout=8, dg=1, groups=4),
    "stride2": dict(h=12, w=13, stride=(2, 2)),
    "stride-dilation-mixed": dict(h=12, w=10, stride=(2, 1), pad=(2, 0), dil=(2, 1)),
    "nonsquare-kernel": dict(k=(3, 2), pad=(1, 0)),
    "kernel1x1": dict(k=(1, 1), pad=(0, 0), dg=8),
    "kernel5x3-dil": dict(k=(5, 3), pad=(4, 1), dil=(2, 1), h=10, w=8),
    "large-offsets": dict(offset_scale=40.0),
    "offsets-far-outside": dict(offset_scale=1e4),
    "tiny-image": dict(h=1, w=2, pad=(1, 1)),
}


@pytest.mark.parametrize("with_mask", [True, False], ids=["dcnv2", "dcnv1"])
@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_torchvision(name, with_mask):
    tv = pytest.importorskip("torchvision")
    x, offset, weight, bias, mask, kw = _case(**CASES[name])
    m = mask if with_mask else None
    ours = deform_conv2d(x, offset, weight, bias, mask=m, **kw)
    ref = tv.ops.deform_conv2d(x, offset, weight, bias, mask=m, **kw)
    assert ours.shape == ref.shape
    assert ours.dtype == ref.dtype
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_half_out_of_image_case_is_really_exercised():
    """The far-outside case must produce samples that are all zero (else it tests nothing)."""
    x, offset, weight, bias, mask, kw = _case(**CASES["offsets-far-outside"])
    out = deform_conv2d(x, offset, weight, None, mask=mask, **kw)
    # With |offset| ~ 1e4 almost every tap lands outside a 9x11 image, so the output is ~0.
    frac_zero = (out == 0).float().mean().item()
    assert frac_zero > 0.9


GRAD_CASES = ["basic", "dg4-groups2", "stride-dilation-mixed", "nonsquare-kernel", "large-offsets"]


@pytest.mark.parametrize("with_mask", [True, False], ids=["dcnv2", "dcnv1"])
@pytest.mark.parametrize("name", GRAD_CASES)
def test_gradients_match_torchvision(name, with_mask):
    tv = pytest.importorskip("torchvision")
    base = _case(**CASES[name], dtype=torch.float64, seed=1)

    def grads(fn):
        x, offset, weight, bias, mask, kw = (t.clone().requires_grad_() if torch.is_tensor(t) else t for t in base)
        out = fn(x, offset, weight, bias, mask=mask if with_mask else None, **kw)
        # A non-uniform upstream gradient so that every output element matters differently.
        g = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        (out * g).sum().backward()
        return [x.grad, offset.grad, weight.grad, bias.grad] + ([mask.grad] if with_mask else [])

    for ours, ref, what in zip(grads(deform_conv2d), grads(tv.ops.deform_conv2d), "input offset weight bias mask".split()):
        torch.testing.assert_close(ours, ref, atol=1e-8, rtol=1e-7, msg=lambda m: f"grad {what}: {m}")


def test_gradients_match_torchvision_float32():
    tv = pytest.importorskip("torchvision")
    base = _case(c=16, cout=16, h=12, w=12, dg=4)

    def grads(fn):
        x, offset, weight, bias, mask, kw = (t.clone().requires_grad_() if torch.is_tensor(t) else t for t in base)
        fn(x, offset, weight, bias, mask=mask, **kw).square().mean().backward()
        return x.grad, offset.grad, weight.grad, bias.grad, mask.grad

    for ours, ref in zip(grads(deform_conv2d), grads(tv.ops.deform_conv2d)):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size", [(37, 53), (9, 11), (16, 32)])
@pytest.mark.parametrize("kind", ["zero", "integer"])
def test_offset_gradient_at_integer_positions_matches_torchvision(size, kind):
    """Zero offsets (EDVR's initialisation) put every sample on the pixel grid, where bilinear has a
    kink; torchvision takes the right derivative.  In float32 at a size that is not a power of two,
    normalised grid coordinates would land an ulp below the pixel for a good fraction of samples and
    flip the derivative there -- the op must keep integer positions exact."""
    tv = pytest.importorskip("torchvision")
    h, w = size
    x, offset, weight, bias, mask, kw = _case(n=1, c=8, cout=4, h=h, w=w, dg=2, seed=7)
    offset = torch.zeros_like(offset) if kind == "zero" else (offset * 2).round()

    def offset_grad(fn):
        o = offset.clone().requires_grad_()
        out = fn(x, o, weight, bias, mask=mask, **kw)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
        return o.grad

    torch.testing.assert_close(offset_grad(deform_conv2d), offset_grad(tv.ops.deform_conv2d), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("with_mask", [True, False], ids=["dcnv2", "dcnv1"])
def test_gradcheck_float64(with_mask):
    x, offset, weight, bias, mask, kw = _case(
        n=2, c=4, h=4, w=5, cout=2, dg=2, k=(3, 2), pad=(1, 1), stride=(1, 2), dtype=torch.float64, seed=3
    )
    # Keep samples away from integer grid lines, where bilinear interpolation has a kink.
    offset = offset.round() + torch.rand_like(offset) * 0.8 + 0.1
    inputs = [t.requires_grad_() for t in (x, offset, weight, bias, mask)]
    if not with_mask:
        inputs = inputs[:4]

    def fn(*args):
        return deform_conv2d(*args[:4], mask=args[4] if with_mask else None, **kw)

    # fast_mode checks random projections of the Jacobian (seconds instead of a minute on 2 cores);
    # the full per-element comparison against torchvision's backward is done above.
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, fast_mode=True)


def test_zero_offset_full_mask_is_a_plain_convolution():
    """Reference independent of torchvision: with no deformation DCN is nn.Conv2d."""
    torch.manual_seed(0)
    for kw, groups in [(dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1)), 1),
                       (dict(stride=(2, 1), padding=(2, 0), dilation=(2, 1)), 2)]:
        x = torch.randn(2, 6, 9, 8)
        weight = torch.randn(4, 6 // groups, 3, 3)
        bias = torch.randn(4)
        ref = F.conv2d(x, weight, bias, groups=groups, **kw)
        ho, wo = ref.shape[-2:]
        offset = torch.zeros(2, 2 * 3 * 9, ho, wo)
        mask = torch.ones(2, 3 * 9, ho, wo)
        torch.testing.assert_close(deform_conv2d(x, offset, weight, bias, mask=mask, **kw), ref, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(deform_conv2d(x, offset, weight, bias, **kw), ref, atol=1e-4, rtol=1e-5)


def test_integer_offset_is_a_shift_and_mask_scales():
    """An offset of exactly (+1, -2) samples the neighbouring pixel; zero outside the image."""
    x = torch.arange(30, dtype=torch.float32).view(1, 1, 5, 6)
    weight = torch.ones(1, 1, 1, 1)
    offset = torch.zeros(1, 2, 5, 6)
    offset[:, 0] = 1.0  # dy
    offset[:, 1] = -2.0  # dx
    mask = torch.full((1, 1, 5, 6), 0.5)
    out = deform_conv2d(x, offset, weight, mask=mask)
    expected = torch.zeros(1, 1, 5, 6)
    expected[:, :, :4, 2:] = x[:, :, 1:, :4] * 0.5
    torch.testing.assert_close(out, expected)


def test_channels_last_and_noncontiguous_inputs():
    x, offset, weight, bias, mask, kw = _case(c=16, cout=8, dg=4)
    ref = deform_conv2d(x, offset, weight, bias, mask=mask, **kw)
    out = deform_conv2d(
        x.to(memory_format=torch.channels_last), offset.to(memory_format=torch.channels_last), weight, bias,
        mask=mask.to(memory_format=torch.channels_last), **kw,
    )
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("budget", ["whole", "per-sample", "row-bands"])
@pytest.mark.parametrize("with_mask", [True, False], ids=["dcnv2", "dcnv1"])
@pytest.mark.parametrize("name", ["basic", "dg4-groups2", "groups4", "stride-dilation-mixed", "kernel1x1",
                                  "large-offsets", "offsets-far-outside"])
def test_no_grad_channels_last_paths_match_torchvision(monkeypatch, name, with_mask, budget, inference_path):
    """Inference on channels_last tensors takes its own paths: the image sampled through a strided view,
    dense offsets reordered as 8-byte (dy, dx) pairs, the mask by a 2-D transpose, the GEMM written
    straight into a channels_last output (per group).  Each must equal torchvision's kernel."""
    tv = pytest.importorskip("torchvision")
    x, offset, weight, bias, mask, kw = _case(**CASES[name])
    m = mask if with_mask else None
    ref = tv.ops.deform_conv2d(x, offset, weight, bias, mask=m, **kw)
    if budget != "whole":
        per_row = x.shape[1] * weight.shape[2] * weight.shape[3] * ref.shape[-1] * 4
        monkeypatch.setattr(dc_module, "_INFERENCE_COLS_BYTES", per_row * (ref.shape[-2] if budget == "per-sample" else 2))
    cl = torch.channels_last
    with torch.no_grad():
        out = deform_conv2d(x.to(memory_format=cl), offset.to(memory_format=cl), weight, bias,
                            mask=None if m is None else m.to(memory_format=cl), **kw)
    assert out.is_contiguous(memory_format=cl) or ref.shape[-1] * ref.shape[-2] == 1
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def test_no_grad_offsets_and_mask_from_one_conv_output(monkeypatch, inference_path):
    """Offsets and mask as slices of one channels_last tensor (strided, not dense): the general path."""
    tv = pytest.importorskip("torchvision")
    x, offset, weight, bias, mask, kw = _case(n=1, c=16, cout=8, dg=4)
    both = torch.cat([offset, mask], 1).to(memory_format=torch.channels_last)
    off_v, mask_v = both[:, :offset.shape[1]], both[:, offset.shape[1]:]
    monkeypatch.setattr(dc_module, "_INFERENCE_COLS_BYTES", 1)  # one output row per band
    with torch.no_grad():
        out = deform_conv2d(x.to(memory_format=torch.channels_last), off_v, weight, bias, mask=mask_v, **kw)
    torch.testing.assert_close(out, tv.ops.deform_conv2d(x, offset, weight, bias, mask=mask, **kw), atol=1e-4, rtol=0)


def test_no_grad_inference_matches_autograd_path(inference_path):
    """The no-grad path multiplies the mask in place and folds the bias into the GEMM."""
    x, offset, weight, bias, mask, kw = _case()
    mask.requires_grad_()
    with_grad = deform_conv2d(x, offset, weight, bias, mask=mask, **kw)
    with torch.no_grad():
        without = deform_conv2d(x, offset, weight, bias, mask=mask, **kw)
    # Same samples (the compiled kernel computes positions in pixels, not grid_sample's normalised
    # coordinates); the GEMM differs (bias folded into addmm): agreement is to float32 rounding.
    torch.testing.assert_close(with_grad.detach(), without, atol=2e-5 if inference_path == "compiled" else 2e-6,
                               rtol=1e-6)


def test_bf16_autocast_keeps_coordinates_fp32():
    x, offset, weight, bias, mask, kw = _case(c=16, cout=8, h=24, w=40, dg=2, offset_scale=8.0)
    ref = deform_conv2d(x, offset, weight, bias, mask=mask, **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = deform_conv2d(x, offset, weight, bias, mask=mask, **kw)
    assert out.dtype == torch.bfloat16
    # bf16 has 8 mantissa bits: compare relative to the output's scale.
    err = (out.float() - ref).abs().max() / ref.abs().max()
    assert err < 2e-2
    # bf16 input tensors (a model cast to bf16) also work and return bf16.
    out16 = deform_conv2d(x.bfloat16(), offset.bfloat16(), weight.bfloat16(), bias.bfloat16(), mask=mask.bfloat16(), **kw)
    assert out16.dtype == torch.bfloat16
    assert ((out16.float() - ref).abs().max() / ref.abs().max()) < 5e-2


def _grads(inputs, kw, probe, autocast):
    ts = [t.clone().requires_grad_() for t in inputs]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = deform_conv2d(*ts[:4], mask=ts[4], **kw)
    (out.float() * probe).sum().backward()
    return out, [t.grad for t in ts]


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "emulated-bf16"])
def test_bf16_autocast_backward_matches_fp32(monkeypatch, native):
    """Training under autocast: the DCNv2 GEMMs run in bf16 where the CPU has it (float32 where oneDNN
    would emulate it), and every gradient stays within bf16 rounding of the float32 one."""
    monkeypatch.setattr(dc_module, "_native_low_precision", lambda device_type, dtype: native)
    x, offset, weight, bias, mask, kw = _case(c=16, cout=8, h=12, w=14, offset_scale=2.0)
    inputs = (x, offset, weight, bias, mask)
    probe = torch.randn(2, 8, 12, 14, generator=torch.Generator().manual_seed(1))  # (N, Cout, Ho, Wo)
    ref_out, ref_grads = _grads(inputs, kw, probe, autocast=False)
    out, grads = _grads(inputs, kw, probe, autocast=True)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref_out).abs().max() / ref_out.abs().max() < 2e-2
    for name, g, ref in zip(("input", "offset", "weight", "bias", "mask"), grads, ref_grads):
        assert g.dtype == torch.float32, name
        assert ((g - ref).abs().max() / ref.abs().max()) < 3e-2, name


def test_bf16_autocast_training_keeps_one_column_copy(monkeypatch):
    """Under autocast the modulated GEMM keeps its samples and masked samples in bf16: together the size
    of one float32 column matrix (the generic path kept the float32 samples and the bf16 product)."""
    monkeypatch.setattr(dc_module, "_native_low_precision", lambda device_type, dtype: True)
    x, offset, weight, bias, mask, kw = _case(c=16, cout=8, h=12, w=14)
    ts = [t.requires_grad_() for t in (x, offset, weight, bias, mask)]
    col_numel = x.shape[0] * x.shape[1] * 9 * 12 * 14
    saved: list[Tensor] = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = deform_conv2d(*ts[:4], mask=ts[4], **kw)
    col_bytes = sum(t.numel() * t.element_size() for t in saved if t.numel() == col_numel)
    assert 0 < col_bytes <= col_numel * 4
    assert {t.dtype for t in saved if t.numel() == col_numel} == {torch.bfloat16}
    out.float().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in ts)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: a.update(input=a["input"][0]), "input must be"),
        (lambda a: a.update(offset=a["offset"][:, :-1]), "offset must be"),
        (lambda a: a.update(offset=a["offset"][..., :-1]), "offset spatial size"),
        (lambda a: a.update(mask=a["mask"][:, :-1]), "mask must be"),
        (lambda a: a.update(weight=a["weight"][:, :3]), "not divisible by weight's"),
        (lambda a: a.update(input=a["input"][:, :, :1, :1], padding=0), "output would be empty"),
    ],
    ids=["input-3d", "offset-channels", "offset-size", "mask-channels", "weight-cin", "empty-output"],
)
def test_bad_shapes_raise_clear_errors(mutate, match):
    x, offset, weight, bias, mask, kw = _case()
    args = dict(input=x, offset=offset, weight=weight, bias=bias, mask=mask, **kw)
    mutate(args)
    with pytest.raises(ValueError, match=match):
        deform_conv2d(**args)


def test_module_parameters_and_forward():
    mod = ModulatedDeformConv2d(8, 6, 3, padding=1, deformable_groups=2)
    assert set(dict(mod.named_parameters())) == {"weight", "bias"}
    assert mod.weight.shape == (6, 8, 3, 3)
    assert not torch.any(mod.bias)
    x, offset, _, _, mask, _ = _case(c=8, dg=2)
    out = mod(x, offset, mask)
    torch.testing.assert_close(out, deform_conv2d(x, offset, mod.weight, mod.bias, padding=1, mask=mask))
    nobias = ModulatedDeformConv2d(8, 6, (3, 3), padding=1, deformable_groups=2, bias=False)
    assert nobias.bias is None and "bias" not in nobias.state_dict()
    assert "deformable_groups=2" in repr(mod)
    with pytest.raises(ValueError, match="deformable_groups"):
        ModulatedDeformConv2d(6, 6, 3, deformable_groups=4)


# ----------------------------------------------------------------------------------------- monitor


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "srkit.ops.deform_conv" and r.levelno == logging.WARNING]


def test_monitor_one_warning_per_interval(caplog):
    caplog.set_level(logging.WARNING, logger="srkit.ops.deform_conv")
    clock = FakeClock()
    mon = OffsetMonitor(threshold=50, interval=60, clock=clock)
    big = torch.full((1, 18, 4, 4), 75.5)
    for _ in range(100):
        assert mon.update(big) == pytest.approx(75.5)
        clock.t += 0.5  # 100 calls over 50 s: one interval
    msgs = _warnings(caplog)
    assert len(msgs) == 1
    assert "75.50" in msgs[0] and "suppressed" not in msgs[0]
    assert mon.suppressed == 99 and mon.last_abs_mean == pytest.approx(75.5)
    clock.t += 10.0  # now > 60 s since the first warning
    mon.update(-big)
    msgs = _warnings(caplog)
    assert len(msgs) == 2 and "99 similar warnings suppressed" in msgs[1]
    assert mon.suppressed == 0 and mon.warnings_emitted == 2


def test_monitor_every_n_calls(caplog):
    caplog.set_level(logging.WARNING, logger="srkit.ops.deform_conv")
    mon = OffsetMonitor(threshold=1.0, every_n_calls=10, clock=FakeClock())
    for _ in range(25):
        mon.update(torch.full((2, 3), 2.0))
    assert len(_warnings(caplog)) == 3  # calls 1, 11, 21


def test_monitor_quiet_below_threshold_and_loud_on_nan(caplog):
    caplog.set_level(logging.WARNING, logger="srkit.ops.deform_conv")
    mon = OffsetMonitor(clock=FakeClock())
    for _ in range(50):
        mon.update(torch.randn(1, 18, 8, 8))
    assert _warnings(caplog) == []
    assert mon.calls == 50 and 0.5 < mon.last_abs_mean < 1.2
    mon.update(torch.tensor([float("nan")]))
    assert len(_warnings(caplog)) == 1 and "nan" in _warnings(caplog)[0]


def test_monitor_rejects_bad_rate():
    with pytest.raises(ValueError):
        OffsetMonitor(every_n_calls=0)


def test_native_low_precision_probe_is_cached_bool():
    assert isinstance(dc_module._native_low_precision("cpu", torch.bfloat16), bool)
    assert dc_module._native_low_precision("cuda", torch.bfloat16) is True


def test_gradcheck_float64_full_jacobian_tiny():
    """Element-by-element gradcheck on a tiny problem (kept small: it costs one forward per input)."""
    x, offset, weight, bias, mask, kw = _case(
        n=1, c=2, h=3, w=4, cout=2, dg=2, k=(2, 2), pad=(1, 0), dtype=torch.float64, seed=5
    )
    offset = offset.round() + torch.rand_like(offset) * 0.8 + 0.1
    inputs = [t.requires_grad_() for t in (x, offset, weight, bias, mask)]
    assert torch.autograd.gradcheck(
        lambda a, o, w_, b, m: deform_conv2d(a, o, w_, b, mask=m, **kw), inputs, eps=1e-6, atol=1e-6
    )


def test_inference_batch_chunking_gives_identical_results(monkeypatch):
    """Without autograd the batch is processed in pieces to bound the column matrix's memory (PyTorch path;
    the compiled one goes a sample at a time)."""
    monkeypatch.setattr(dc_module, "_fused_usable", lambda *a: False)
    x, offset, weight, bias, mask, kw = _case(n=5, c=8, dg=2)
    with torch.no_grad():
        whole = deform_conv2d(x, offset, weight, bias, mask=mask, **kw)
        calls = []
        real = dc_module.F.grid_sample
        monkeypatch.setattr(dc_module.F, "grid_sample", lambda *a, **k: calls.append(a[0].shape[0]) or real(*a, **k))
        # Room for two samples' columns per piece: 5 samples -> pieces of 2, 2, 1.
        per_sample = 8 * 9 * whole.shape[-2] * whole.shape[-1] * 4
        monkeypatch.setattr(dc_module, "_INFERENCE_COLS_BYTES", 2 * per_sample)
        pieces = deform_conv2d(x, offset, weight, bias, mask=mask, **kw)
    assert calls == [2 * 2, 2 * 2, 1 * 2]  # grid_sample batch is N * deformable groups
    torch.testing.assert_close(pieces, whole, atol=1e-5, rtol=1e-6)  # GEMM blocking may differ


def test_monitor_abs_mean_is_accurate_on_large_tensors():
    """The fast reduction must not drift (a plain float32 vector norm of 40M elements is ~2% off)."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 36, 180, 320, generator=g) * 7.0
    ref = t.double().abs().mean().item()
    assert dc_module._abs_mean(t) == pytest.approx(ref, rel=1e-6)
    assert dc_module._abs_mean(t[:, :18]) == pytest.approx(t[:, :18].double().abs().mean().item(), rel=1e-6)
    assert dc_module._abs_mean(t.bfloat16()) == pytest.approx(ref, rel=1e-2)


@pytest.mark.parametrize("which", ["mask", "weight", "input", "offset", "offset+mask"])
def test_partial_requires_grad_matches_torchvision(which):
    """Each backward branch on its own (the custom DCNv2 GEMM backward skips what is not needed)."""
    tv = pytest.importorskip("torchvision")
    base = _case(c=8, cout=4, dg=2, groups=2, dtype=torch.float64, seed=11)
    names = ["input", "offset", "weight", "bias", "mask"]

    def grads(fn):
        tensors = [t.clone() for t in base[:5]]
        for name, t in zip(names, tensors):
            t.requires_grad_(name in which.split("+"))
        x, offset, weight, bias, mask = tensors
        fn(x, offset, weight, bias, mask=mask, **base[5]).sin().sum().backward()
        return [t.grad for t in tensors if t.requires_grad]

    for ours, ref in zip(grads(deform_conv2d), grads(tv.ops.deform_conv2d), strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_inference_row_bands_for_large_frames(monkeypatch, autocast):
    """A single sample whose columns exceed the budget is done in bands of output rows (PyTorch path)."""
    monkeypatch.setattr(dc_module, "_fused_usable", lambda *a: False)
    x, offset, weight, bias, mask, kw = _case(n=1, c=8, h=13, w=11, dg=2, stride=(2, 1), pad=(1, 1))
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), ctx:
        whole = deform_conv2d(x, offset, weight, bias, mask=mask, **kw)
        ho, wo = whole.shape[-2:]
        calls = []
        real = dc_module.F.grid_sample
        monkeypatch.setattr(dc_module.F, "grid_sample", lambda *a, **k: calls.append(a[1].shape[1]) or real(*a, **k))
        monkeypatch.setattr(dc_module, "_INFERENCE_COLS_BYTES", 3 * 8 * 9 * wo * 4)  # 3 output rows
        bands = deform_conv2d(x, offset, weight, bias, mask=mask, **kw)
    assert calls == [9 * 3, 9 * 3, 9 * 1]  # grid rows = taps * band rows; Ho = 7
    assert bands.dtype == whole.dtype == (torch.bfloat16 if autocast else torch.float32)
    torch.testing.assert_close(bands, whole, atol=1e-5 if not autocast else 1e-2, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_no_grad_low_precision_channels_last_offsets_match_fp32(monkeypatch, dtype, inference_path):
    """Offsets and mask as autocast's convolutions give them (bf16/fp16, channels_last) take the pair-transpose
    path and sample exactly where the same values in fp32 NCHW do, in whole frames and in row bands."""
    x, offset, weight, bias, mask, kw = _case(n=1, c=8, h=13, w=11, dg=2, stride=(1, 1), pad=(1, 1))
    off_low, mask_low = offset.to(dtype), mask.to(dtype)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = deform_conv2d(x, off_low.float(), weight, bias, mask=mask_low.float(), **kw)
        for budget in (None, 3 * 8 * 9 * ref.shape[-1] * 4):  # whole frame, then bands of 3 rows
            if budget is not None:
                monkeypatch.setattr(dc_module, "_INFERENCE_COLS_BYTES", budget)
            out = deform_conv2d(x_cl, off_low.contiguous(memory_format=torch.channels_last), weight, bias,
                                mask=mask_low.contiguous(memory_format=torch.channels_last), **kw)
            assert out.dtype == torch.float32 and dc_module.is_channels_last(out)
            # fp16 offsets are not the compiled kernel's: that case compares the two paths (float32 rounding)
            tol = 1e-5 if inference_path == "compiled" and dtype == torch.float16 else 1e-6
            torch.testing.assert_close(out, ref, atol=tol, rtol=tol)


def test_batch_pieces_do_not_reenter_the_public_function(monkeypatch):
    """Profilers/benchmarks wrap ``deform_conv2d``; internal batch pieces must not be counted again."""
    x, offset, weight, bias, mask, kw = _case(n=4, c=8, dg=2)
    calls = []
    public = dc_module.deform_conv2d
    monkeypatch.setattr(dc_module, "deform_conv2d", lambda *a, **k: calls.append(1) or public(*a, **k))
    monkeypatch.setattr(dc_module, "_INFERENCE_COLS_BYTES", 1)  # one sample per piece
    mod = ModulatedDeformConv2d(8, 6, 3, padding=1, deformable_groups=2)
    with torch.no_grad():
        out = mod(x, offset, mask)
    assert calls == [1] and out.shape == (4, 6, 9, 11)


def test_training_after_inference_at_the_same_size():
    """The sampling grid is cached per geometry; one first built by an inference pass (srkit upscale,
    validation) must still serve a training step at that size (autograd cannot save inference tensors)."""
    from srkit.ops import ModulatedDeformConv2d

    m = ModulatedDeformConv2d(4, 4, 3, padding=1)
    x, mask = torch.rand(1, 4, 11, 13), torch.ones(1, 9, 11, 13)
    with torch.inference_mode():
        m(x, torch.zeros(1, 18, 11, 13), mask)
    offset = torch.zeros(1, 18, 11, 13, requires_grad=True)
    m(x, offset, mask).sum().backward()
    assert offset.grad is not None and torch.isfinite(offset.grad).all()


# ------------------------------------------------------------------ the compiled inference kernel
def test_compiled_kernel_builds_where_a_compiler_is_present():
    """The compiled im2col is optional, but where the toolchain is there it must build: otherwise the
    'compiled' variants above would skip silently and the fast path would be lost unnoticed."""
    if native.native_disabled() or not (shutil.which("c++") and shutil.which("ninja")):
        pytest.skip("no C++ compiler / ninja here, or SRKIT_NATIVE=0")
    assert native.deform_im2col() is not None


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("name", ["basic", "batch3-dg1", "stride-dilation-mixed", "nonsquare-kernel",
                                  "kernel5x3-dil", "large-offsets", "offsets-far-outside", "tiny-image"])
def test_compiled_bf16_autocast_matches_the_pytorch_path(monkeypatch, name, layout):
    """Under bf16 autocast the kernel reads bf16 features and writes bf16 columns in one pass; the PyTorch
    path samples in float32 and casts. Same positions, one bf16 rounding of each column value either way."""
    if native.deform_im2col() is None:
        pytest.skip("the compiled kernel is not available here")
    x, offset, weight, bias, mask, kw = _case(**CASES[name])
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    args = [t.to(torch.bfloat16).contiguous(memory_format=fmt) for t in (x, offset, mask)]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        compiled = deform_conv2d(args[0], args[1], weight, bias, mask=args[2], **kw)
        monkeypatch.setattr(dc_module, "_fused_usable", lambda *a: False)
        reference = deform_conv2d(args[0], args[1], weight, bias, mask=args[2], **kw)
    assert compiled.dtype == reference.dtype == torch.bfloat16 and compiled.shape == reference.shape
    assert dc_module.is_channels_last(compiled) == dc_module.is_channels_last(reference)
    scale = reference.float().abs().max().item()
    # columns differ by at most one bf16 rounding (2^-8 relative); summed over Cin*K terms in the GEMM
    torch.testing.assert_close(compiled.float(), reference.float(), atol=0.02 * scale, rtol=0)
    assert (compiled.float() - reference.float()).abs().mean() < 2e-3 * scale


def test_compiled_kernel_bands_and_nan_offsets(monkeypatch):
    """Row bands call the kernel once per band (3 + 3 + 1 rows here) with the same result; a NaN offset
    gives NaN outputs at its pixel, as the PyTorch path does (diverging offsets surface)."""
    kernel = native.deform_im2col()
    if kernel is None:
        pytest.skip("the compiled kernel is not available here")
    x, offset, weight, bias, mask, kw = _case(n=1, c=8, h=13, w=11, dg=2, stride=(2, 1), pad=(1, 1))
    with torch.no_grad():
        whole = deform_conv2d(x, offset, weight, bias, mask=mask, **kw)
        ho, wo = whole.shape[-2:]
        bands = []
        monkeypatch.setattr(native, "deform_im2col", lambda: lambda *a: bands.append(a[1].shape[1]) or kernel(*a))
        monkeypatch.setattr(dc_module, "_INFERENCE_COLS_BYTES", 3 * 8 * 9 * wo * 4)  # 3 output rows
        banded = deform_conv2d(x, offset, weight, bias, mask=mask, **kw)
        assert bands == [3, 3, 1] and ho == 7
        torch.testing.assert_close(banded, whole, atol=1e-6, rtol=1e-6)
        offset[0, 4, 2, 3] = float("nan")
        out = deform_conv2d(x, offset, weight, bias, mask=mask, **kw)
    assert out[0, :, 2, 3].isnan().all() and out.isnan().sum() == out.shape[1]


def test_without_the_compiled_kernel_the_pytorch_path_serves(monkeypatch, caplog):
    """SRKIT_NATIVE=0 or a failed build: no kernel, one warning naming the cause, same results."""
    native.deform_im2col.cache_clear()
    try:
        monkeypatch.setenv("SRKIT_NATIVE", "0")
        assert native.deform_im2col() is None
        native.deform_im2col.cache_clear()
        monkeypatch.delenv("SRKIT_NATIVE")
        from torch.utils import cpp_extension

        def broken(**kwargs):
            raise RuntimeError("Error building extension 'x': c++: not found")

        monkeypatch.setattr(cpp_extension, "load", broken)
        with caplog.at_level(logging.WARNING, logger="srkit.ops.native"):
            assert native.deform_im2col() is None
            assert native.deform_im2col() is None  # cached: tried and reported once
        warnings = [r.getMessage() for r in caplog.records if r.name == "srkit.ops.native"]
        assert len(warnings) == 1 and "c++: not found" in warnings[0] and "PyTorch path" in warnings[0]
        tv = pytest.importorskip("torchvision")
        x, offset, weight, bias, mask, kw = _case()
        with torch.no_grad():
            out = deform_conv2d(x, offset, weight, bias, mask=mask, **kw)
        torch.testing.assert_close(out, tv.ops.deform_conv2d(x, offset, weight, bias, mask=mask, **kw), atol=1e-4, rtol=0)
    finally:
        native.deform_im2col.cache_clear()
