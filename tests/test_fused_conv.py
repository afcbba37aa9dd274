"""srkit.ops.fused_conv: the fused oneDNN path equals the unfused expression, and serves only where it may."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from srkit.ops import fused_conv
from srkit.ops.fused_conv import conv_act, conv_add

pytestmark = pytest.mark.skipif(fused_conv._pointwise_op() is None, reason="this PyTorch has no oneDNN pointwise conv")

CL = torch.channels_last


def _conv(cin=8, cout=8, k=3, stride=1, padding=1, dilation=1, groups=1, bias=True, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=bias)


@pytest.fixture
def spy(monkeypatch):
    """Counts calls of the fused op."""
    calls = []
    op = fused_conv._pointwise_op()

    class Spy:
        def __call__(self, *args):
            calls.append("act")
            return op(*args)

        def binary(self, *args):
            calls.append("add")
            return op.binary(*args)

    monkeypatch.setattr(fused_conv, "_pointwise_op", lambda: Spy())
    return calls


GEOMETRIES = [dict(), dict(stride=2), dict(dilation=2, padding=2), dict(groups=2), dict(bias=False),
              dict(k=1, padding=0, cin=3, cout=5)]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: ",".join(f"{k}={v}" for k, v in g.items()) or "plain")
@pytest.mark.parametrize("act", ["leaky_relu", "relu"])
def test_conv_act_fp32_equals_unfused(spy, geometry, act):
    conv = _conv(**geometry)
    x = torch.randn(2, conv.in_channels, 11, 13).to(memory_format=CL)
    with torch.no_grad():
        y = conv_act(conv, x, act, 0.2)
        ref = F.leaky_relu(conv(x), 0.2) if act == "leaky_relu" else F.relu(conv(x))
    assert spy == ["act"]
    assert y.shape == ref.shape and y.dtype == torch.float32 and y.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("geometry", GEOMETRIES[:4], ids=["plain", "stride", "dilation", "groups"])
def test_conv_add_fp32_equals_unfused(spy, geometry):
    conv = _conv(**geometry)
    x = torch.randn(1, conv.in_channels, 12, 10).to(memory_format=CL)
    with torch.no_grad():
        ref = conv(x)
        other = torch.randn_like(ref).contiguous(memory_format=CL)
        y = conv_add(conv, x, other)
    assert spy == ["add"]
    torch.testing.assert_close(y, ref + other, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_matches_unfused_within_rounding(spy):
    conv = _conv(16, 16)
    x = torch.randn(1, 16, 20, 24).to(memory_format=CL)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv_act(conv, x)
        ref = F.leaky_relu(conv(x), 0.1)
        other = torch.randn(1, 16, 20, 24, dtype=torch.bfloat16).contiguous(memory_format=CL)
        s = conv_add(conv, x.bfloat16(), other)
        s_ref = conv(x.bfloat16()) + other
    assert spy == ["act", "add"]
    assert y.dtype == ref.dtype == torch.bfloat16 and s.dtype == torch.bfloat16
    # The fused op rounds once, the unfused pair twice: at most a bf16 ulp or two apart.
    torch.testing.assert_close(y.float(), ref.float(), rtol=2 ** -7, atol=2 ** -7)
    torch.testing.assert_close(s.float(), s_ref.float(), rtol=2 ** -7, atol=2 ** -6)


def test_unfused_where_the_fused_op_may_not_serve(spy):
    conv = _conv()
    x = torch.randn(1, 8, 9, 9)
    # NCHW input.
    with torch.no_grad():
        torch.testing.assert_close(conv_act(conv, x), F.leaky_relu(conv(x), 0.1))
    # Autograd: gradients flow as through the unfused expression.
    xg = x.to(memory_format=CL).requires_grad_()
    conv_act(conv, xg).sum().backward()
    g_fused = (xg.grad.clone(), conv.weight.grad.clone())
    xg.grad = None
    conv.weight.grad = None
    F.leaky_relu(conv(xg), 0.1).sum().backward()
    torch.testing.assert_close(g_fused[0], xg.grad)
    torch.testing.assert_close(g_fused[1], conv.weight.grad)
    # An addend that broadcasts, or has another dtype, is added unfused (same result as `conv(x) + other`).
    with torch.no_grad():
        xc = x.to(memory_format=CL)
        bias_like = torch.randn(1, 8, 1, 1)
        torch.testing.assert_close(conv_add(conv, xc, bias_like), conv(xc) + bias_like)
        other64 = torch.randn(1, 8, 9, 9, dtype=torch.float64).to(memory_format=CL)
        out = conv_add(conv, xc, other64)
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, conv(xc) + other64)
        # A reflect-padded convolution.
        reflect = torch.nn.Conv2d(8, 8, 3, 1, 1, padding_mode="reflect")
        torch.testing.assert_close(conv_act(reflect, xc, "relu"), F.relu(reflect(xc)))
    assert spy == []


def test_bad_activation_is_an_error():
    with pytest.raises(ValueError, match="act must be"):
        conv_act(_conv(), torch.randn(1, 8, 4, 4), "gelu")


def test_a_failing_fused_op_falls_back_once_with_a_warning(monkeypatch, caplog):
    class Broken:
        def __call__(self, *args):
            raise RuntimeError("no such primitive")

    monkeypatch.setattr(fused_conv, "_unavailable", None)
    real = fused_conv._pointwise_op
    monkeypatch.setattr(fused_conv, "_pointwise_op", lambda: None if fused_conv._unavailable else Broken())
    conv = _conv()
    x = torch.randn(1, 8, 9, 9).to(memory_format=CL)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="srkit.ops.fused_conv"):
        y1 = conv_act(conv, x)
        y2 = conv_act(conv, x)
    torch.testing.assert_close(y1, F.leaky_relu(conv(x), 0.1))
    torch.testing.assert_close(y2, y1)
    assert [r.getMessage() for r in caplog.records] == [
        "fused convolution unavailable here (no such primitive); using the unfused path"]
    assert real is not None


def test_an_input_error_is_the_convolutions_own(monkeypatch):
    monkeypatch.setattr(fused_conv, "_unavailable", None)
    conv = _conv()
    x = torch.randn(1, 5, 9, 9).to(memory_format=CL)  # 5 channels into an 8-channel conv
    with torch.no_grad(), pytest.raises(RuntimeError, match="channels"):
        conv_act(conv, x)
    assert fused_conv._unavailable is None  # the fused path is not disabled by the user's mistake


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_traced_graphs_keep_the_standard_ops(spy):
    class ConvAct(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = _conv()

        def forward(self, t):
            return conv_act(self.conv, t)

    module = ConvAct()
    x = torch.randn(1, 8, 9, 9).to(memory_format=CL)
    with torch.no_grad():
        traced = torch.jit.trace(module, x, check_trace=False)
    assert spy == []
    assert "mkldnn" not in str(traced.graph)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), F.leaky_relu(module.conv(x), 0.1))


@pytest.mark.parametrize("trainable", ["bias", "addend"])
def test_a_frozen_conv_in_training_keeps_every_gradient(spy, trainable):
    """Only the bias, or only the skip input, needs a gradient: the unfused path must serve."""
    conv = _conv()
    conv.weight.requires_grad_(False)
    conv.bias.requires_grad_(trainable == "bias")
    x = torch.randn(1, 8, 9, 9).to(memory_format=CL)
    other = torch.randn(1, 8, 9, 9).to(memory_format=CL).requires_grad_(trainable == "addend")
    conv_add(conv, x, other).square().sum().backward()
    if trainable == "bias":
        grad_from_add = conv.bias.grad.clone()
        conv.bias.grad = None
        conv_act(conv, x).sum().backward()
        assert grad_from_add.abs().sum() > 0 and conv.bias.grad.abs().sum() > 0
    else:
        torch.testing.assert_close(other.grad, 2 * (conv(x) + other).detach())
    assert spy == []
