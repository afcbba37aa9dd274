"""MANA: the chunked attention and the whole network against dense re-formulations of the official code.

The references below follow ``jiy173/MANA`` ``models.py`` literally: the (H*W)^2 squared-distance
matrix ``D`` built with ``np.meshgrid(x1, y1, y2, x2)`` and flattened row-major, the weight
``exp(-0.5 * D / std^2)`` multiplied AFTER a softmax over each frame's positions, the per-frame results
concatenated along channels, the memory read-out and the decoder.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from torch.nn import functional as F

from srkit.errors import CheckpointError, ConfigError, InputError
from srkit.models import create_model, list_models
from srkit.models.checkpoint import load_model, load_weights
from srkit.models.mana import MANA, MEMORY_PARAMS, official_key_adapter
from srkit.ops import attention as attention_ops
from srkit.ops.attention import gaussian_nonlocal_attention

TINY = tiny_overrides("mana")  # conftest.TINY_OVERRIDES: the one tiny MANA of the test suite


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


# ------------------------------------------------------------------------------ dense references
def official_D(height: int, width: int) -> torch.Tensor:
    """The official distance matrix, built exactly as ``nonlocal_attention.__init__`` builds it."""
    x1 = np.linspace(0, width - 1, width)
    y1 = np.linspace(0, height - 1, height)
    x2 = np.linspace(0, width - 1, width)
    y2 = np.linspace(0, height - 1, height)
    X1, Y1, Y2, X2 = np.meshgrid(x1, y1, y2, x2)
    D = (X1 - X2) ** 2 + (Y1 - Y2) ** 2
    # einops 'a b c d -> (a b) (c d)' is a row-major reshape.
    return torch.from_numpy(D.reshape(height * width, height * width)).float()


def dense_attention(q, k, v, std):
    """Official per-frame loop: ``softmax(phi @ theta) * weight @ g`` for each frame, stacked."""
    b, c, h, w = q.shape
    t = k.shape[1]
    weight = torch.exp(-0.5 * (official_D(h, w) / (std * std)))
    phi = q.reshape(b, c, -1).permute(0, 2, 1)
    outs = []
    for i in range(t):
        theta = k[:, i].reshape(b, c, -1)
        g = v[:, i].reshape(b, v.shape[2], -1).permute(0, 2, 1)
        f = F.softmax(torch.matmul(phi, theta), dim=-1) * weight
        outs.append(torch.matmul(f, g).permute(0, 2, 1).reshape(b, -1, h, w))
    return torch.stack(outs, 1)


def dense_window_attention(q, k, v, std, r, stride=None):
    """Window mode written densely: numerator over keys within r*|std|; denominator over those keys
    plus (with ``stride``) the keys outside the disk sampled on a grid, each standing for H*W/Ls keys."""
    b, c, h, w = q.shape
    D = official_D(h, w)
    sd = abs(float(std.detach()))
    inside = D <= (r * sd) ** 2
    weight = torch.exp(-0.5 * (D / (std * std))) * inside
    if stride is not None:
        ys = torch.arange((stride - 1) // 2, h, stride)
        xs = torch.arange((stride - 1) // 2, w, stride)
        grid = torch.zeros(h, w, dtype=torch.bool)
        grid[ys[:, None], xs[None, :]] = True
        far = grid.reshape(1, -1) & ~inside
        factor = h * w / (len(ys) * len(xs))
    phi = q.reshape(b, c, -1).permute(0, 2, 1)
    outs = []
    for i in range(k.shape[1]):
        f = torch.matmul(phi, k[:, i].reshape(b, c, -1))
        m = f.detach().amax(-1, keepdim=True)
        e = torch.exp(f - m)
        z = (e * inside).sum(-1, keepdim=True)
        if stride is not None:
            z = z + factor * (e * far).sum(-1, keepdim=True)
        g = v[:, i].reshape(b, v.shape[2], -1).permute(0, 2, 1)
        outs.append((torch.matmul(e * weight, g) / z).permute(0, 2, 1).reshape(b, -1, h, w))
    return torch.stack(outs, 1)


def official_forward(model: MANA, x: torch.Tensor):
    """The official ``mana.forward`` written with the model's parameters and the dense D."""
    p = dict(model.named_parameters())
    b, t, c, h, w = x.shape
    ci = t // 2
    lx = F.interpolate(x[:, ci], scale_factor=4, mode="bilinear", align_corners=False)

    def resblocks(prefix, n, feat):
        for i in range(n):
            out = F.conv2d(feat, p[f"{prefix}.{i}.conv1.weight"], p[f"{prefix}.{i}.conv1.bias"], padding=1)
            out = F.conv2d(F.relu(out), p[f"{prefix}.{i}.conv2.weight"], p[f"{prefix}.{i}.conv2.bias"], padding=1)
            feat = feat + out
        return feat

    enc = F.leaky_relu(F.conv2d(x.reshape(-1, c, h, w), p["conv_first.weight"], p["conv_first.bias"], padding=1), 0.1)
    enc = resblocks("encoder", model.config.encoder_nblocks, enc)
    nf = enc.shape[1]
    inter = nf // 2
    mem = enc.reshape(b, t, nf, h, w)
    q = mem[:, ci]
    ns = model.nonloc_spatial
    h_ = F.group_norm(mem.reshape(b * t, nf, h, w), ns.norm.num_groups, p["nonloc_spatial.norm.weight"],
                      p["nonloc_spatial.norm.bias"], 1e-6)
    q_ = F.group_norm(q, ns.norm.num_groups, p["nonloc_spatial.norm.weight"], p["nonloc_spatial.norm.bias"], 1e-6)
    conv1 = lambda name, z: F.conv2d(z, p[f"nonloc_spatial.{name}.weight"], p[f"nonloc_spatial.{name}.bias"])  # noqa: E731
    g_x = conv1("g", h_).reshape(b, t, inter, h, w)
    theta_x = conv1("theta", h_).reshape(b, t, inter, h, w)
    phi = conv1("phi", q_)
    y = dense_attention(phi, theta_x, g_x, p["nonloc_spatial.std"])
    W_y = conv1("W_z", y.reshape(b, -1, h, w))
    phi_x = phi.reshape(b, inter, -1).permute(0, 2, 1)
    mbg = p["nonloc_spatial.mb"].unsqueeze(0).repeat(b, 1, 1)
    f1 = F.softmax(torch.matmul(phi_x, mbg) * (int(inter) ** (-0.5)), dim=-1)
    y1 = torch.matmul(f1, mbg.permute(0, 2, 1))
    qloss = torch.mean(torch.abs(phi_x - y1))
    W_y1 = conv1("W_z1", y1.permute(0, 2, 1).reshape(b, inter, h, w))
    out = resblocks("decoder", model.config.decoder_nblocks, W_y + q + W_y1)
    out = F.leaky_relu(F.pixel_shuffle(F.conv2d(out, p["upconv1.weight"], p["upconv1.bias"], padding=1), 2), 0.1)
    out = F.leaky_relu(F.pixel_shuffle(F.conv2d(out, p["upconv2.weight"], p["upconv2.bias"], padding=1), 2), 0.1)
    out = F.leaky_relu(F.conv2d(out, p["conv_hr.weight"], p["conv_hr.bias"], padding=1), 0.1)
    out = F.conv2d(out, p["conv_last.weight"], p["conv_last.bias"], padding=1)
    return lx + out, qloss


def _randomise(model: MANA) -> MANA:
    """Give the zero-initialised attention outputs (W_z, W_z1) weights, so every branch matters."""
    with torch.no_grad():
        for name in ("W_z", "W_z1") if model.nonloc_spatial.has_memory else ("W_z",):
            conv = getattr(model.nonloc_spatial, name)
            conv.weight.normal_(0, 0.2)
            conv.bias.normal_(0, 0.1)
        model.nonloc_spatial.std.fill_(1.7)
    return model


def _qkv(b=2, t=3, c=4, h=5, w=7, scale=2.0):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(b, c, h, w, generator=g) * scale
    k = torch.randn(b, t, c, h, w, generator=g) * scale
    v = torch.randn(b, t, c + 1, h, w, generator=g)
    return q, k, v


# ------------------------------------------------------------------------------ the attention op
def test_official_D_holds_squared_distances():
    D = official_D(3, 4)
    # position (y, x) is row-major index y * 4 + x: (0, 0) vs (2, 3) are 2^2 + 3^2 apart.
    assert D[0, 2 * 4 + 3] == 13 and D[1 * 4 + 2, 1 * 4 + 0] == 4 and D.shape == (12, 12)


@pytest.mark.parametrize("chunk", [1, 7, 16, 35, 1000, None])
def test_chunked_attention_equals_dense(chunk, monkeypatch):
    monkeypatch.setattr(attention_ops, "_FLASH_CPU", None)  # the chunked path, as where the fused kernel is missing
    q, k, v = _qkv()
    std = torch.tensor([1.3])
    ref = dense_attention(q, k, v, std)
    with torch.no_grad():
        out = gaussian_nonlocal_attention(q, k, v, std, chunk_size=chunk)
    assert out.shape == ref.shape == (2, 3, 5, 5, 7)
    assert (out - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("size", [(17, 6), (23, 31)])
@pytest.mark.parametrize("std", [0.25, 1.7, 4.0, 9.0])
def test_fused_exact_attention_equals_dense(size, std, monkeypatch):
    """CPU inference runs the exact attention as two fused-kernel passes (whole-frame denominator, then the
    Gaussian numerator per tile through augmented coordinates): equal to the dense formula at every sigma
    (tiles of 2..64 px, key boxes clipped at the frame's edges), in bf16 no worse than the chunked path."""
    if attention_ops._FLASH_CPU is None:
        pytest.skip("this PyTorch has no fused CPU attention kernel")
    q, k, v = _qkv(h=size[0], w=size[1])
    v = torch.cat([v, v.flip(2) * 0.5, v[:, :, :3]], dim=2)  # values wider than the augmented queries (13 > 4 + 4)
    sigma = torch.tensor([std])
    ref = dense_attention(q, k, v, sigma)
    with torch.no_grad():
        out = gaussian_nonlocal_attention(q, k, v, sigma)
        low = [gaussian_nonlocal_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), sigma)]
        monkeypatch.setattr(attention_ops, "_FLASH_CPU", None)
        low.append(gaussian_nonlocal_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), sigma))
    assert out.shape == ref.shape and out.dtype == torch.float32 and low[0].dtype == torch.bfloat16
    assert (out - ref).abs().max().item() < 2e-5
    fused_err, chunked_err = [(x.float() - ref).abs().max().item() for x in low]
    assert fused_err < max(1.5 * chunked_err, 2e-2)


@pytest.mark.parametrize("chunk", [7, 40, None])
def test_chunked_attention_skips_rows_of_zero_weight_exactly(chunk, monkeypatch):
    monkeypatch.setattr(attention_ops, "_FLASH_CPU", None)
    # std 0.25: the fp32 Gaussian underflows to exactly 0 beyond 3 rows, so the numerator skips rows.
    q, k, v = _qkv(h=17, w=6)
    std = torch.tensor([0.25])
    with torch.no_grad():
        out = gaussian_nonlocal_attention(q, k, v, std, chunk_size=chunk)
    assert (out - dense_attention(q, k, v, std)).abs().max().item() < 1e-5
    inputs = [x.clone().requires_grad_(True) for x in (q, k, v, std)]
    dense = [x.clone().detach().requires_grad_(True) for x in inputs]
    gy = torch.randn(out.shape)
    (gaussian_nonlocal_attention(*inputs, chunk_size=chunk) * gy).sum().backward()
    (dense_attention(*dense) * gy).sum().backward()
    for a, b in zip(inputs, dense):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("checkpoint", [True, False])
def test_chunked_attention_gradients_equal_dense(checkpoint):
    q, k, v = _qkv(h=4, w=6)
    inputs = [x.clone().requires_grad_(True) for x in (q, k, v, torch.tensor([1.6]))]
    dense = [x.clone().detach().requires_grad_(True) for x in inputs]
    gy = torch.randn(2, 3, 5, 4, 6)
    out = gaussian_nonlocal_attention(*inputs, chunk_size=5, checkpoint=checkpoint)
    (out * gy).sum().backward()
    (dense_attention(*dense) * gy).sum().backward()
    for a, b in zip(inputs, dense):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), (a.grad - b.grad).abs().max()
    assert inputs[3].grad.abs().item() > 0  # the learnable std does get a gradient


def test_window_covering_the_frame_is_exact():
    q, k, v = _qkv(h=6, w=9)
    std = torch.tensor([2.0])
    radius_needed = math.hypot(5, 8) / 2.0  # in units of std
    with torch.no_grad():
        exact = gaussian_nonlocal_attention(q, k, v, std)
        for tile in (1, 4, 8):
            for stride in (None, 1, 3):
                win = gaussian_nonlocal_attention(q, k, v, std, window=radius_needed + 0.01, window_tile=tile,
                                                  window_stride=stride)
                assert (win - exact).abs().max().item() < 1e-5


@pytest.mark.parametrize("r,stride", [(1.5, None), (3.0, None), (1.5, 1), (2.0, 3), (3.0, 4)])
def test_window_mode_equals_its_dense_definition(r, stride):
    q, k, v = _qkv(h=11, w=13)
    std = torch.tensor([1.5])
    ref = dense_window_attention(q, k, v, std, r, stride)
    with torch.no_grad():
        for tile in (3, 8):
            win = gaussian_nonlocal_attention(q, k, v, std, window=r, window_tile=tile, window_stride=stride,
                                              memory_budget_mb=0.01)  # several tile groups per band
            assert (win - ref).abs().max().item() < 1e-5


def test_window_error_against_exact_is_reported_and_bounded(capsys):
    # Smooth features (as real encoder features are) on a 24x24 frame, std 2 (pixels).
    g = torch.Generator().manual_seed(3)
    base = F.avg_pool2d(torch.randn(1, 4, 28, 28, generator=g), 5, 1)
    q = base * 3
    k = torch.stack([base + 0.1 * torch.randn(base.shape, generator=g) for _ in range(3)], 1) * 3
    v = torch.randn(1, 3, 4, 24, 24, generator=g)
    std = torch.tensor([2.0])
    errors = {}
    with torch.no_grad():
        exact = gaussian_nonlocal_attention(q, k, v, std)
        for stride in (1, 2, 4, None):
            for r in (2.0, 3.0, 4.0):
                out = gaussian_nonlocal_attention(q, k, v, std, window=r, window_stride=stride)
                errors[stride, r] = (out - exact).abs().max().item()
    with capsys.disabled():
        print(f"\nMANA window-mode max |error| vs exact (24x24, std 2, max |out| {exact.abs().max().item():.3f}):")
        for stride in (1, 2, 4, None):
            print(f"  stride {stride}: " + ", ".join(f"r={r:g}: {errors[stride, r]:.2e}" for r in (2.0, 3.0, 4.0)))
    vmax = v.abs().max().item()
    for r in (2.0, 3.0, 4.0):
        # Exact denominator: the only error is the dropped numerator terms (Gaussian < exp(-r^2/2)).
        assert errors[1, r] <= math.exp(-r * r / 2) * vmax + 1e-6
        # A sparse far-field grid is far closer to exact than a window-only softmax.
        assert errors[4, r] < errors[None, r] / 5
    assert errors[None, 4.0] > 0.1  # window-only normalisation IS a different operator


def test_window_mode_gradients_match_dense_window():
    q, k, v = _qkv(h=7, w=9)
    for stride in (None, 2):
        inputs = [x.clone().requires_grad_(True) for x in (q, k, v, torch.tensor([1.5]))]
        dense = [x.clone().detach().requires_grad_(True) for x in inputs]
        gy = torch.randn(2, 3, 5, 7, 9)
        (gaussian_nonlocal_attention(*inputs, window=2.0, window_tile=4, window_stride=stride) * gy).sum().backward()
        (dense_window_attention(*dense, 2.0, stride) * gy).sum().backward()
        for a, b in zip(inputs, dense):
            assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4)


def test_attention_argument_errors():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="keys"):
        gaussian_nonlocal_attention(q, k[..., :4], v, torch.ones(1))
    with pytest.raises(ValueError, match="window"):
        gaussian_nonlocal_attention(q, k, v, torch.ones(1), window=0)


# ------------------------------------------------------------------------------ the network
def test_network_equals_official_formulation_at_odd_size():
    model = _randomise(create_model("mana", **{**TINY, "decoder_nblocks": 2})).eval()
    x = torch.rand(2, 7, 3, 13, 19)
    with torch.no_grad():
        out = model(x)
        ref, ref_q = official_forward(model, x)
    assert out.image.shape == (2, 3, 52, 76)
    assert out.stages == (out.image,)
    assert (out.image - ref).abs().max().item() < 1e-5
    assert abs(out.aux_losses["quantization"].item() - ref_q.item()) < 1e-6


def test_network_five_frames_and_explicit_center():
    model = _randomise(create_model("mana", **TINY, num_frame=5)).eval()
    assert model.spec.num_frames == 5 and model.spec.center_index == 2 and model.spec.scale == 4
    assert model.nonloc_spatial.W_z.in_channels == 5 * 8
    with torch.no_grad():
        x = torch.rand(1, 5, 3, 6, 5)
        assert (model(x).image - official_forward(model, x)[0]).abs().max().item() < 1e-5


def test_forward_backward_tiny_with_chunked_checkpointed_attention():
    model = _randomise(create_model("mana", **TINY, attention_chunk=37))
    ref_model = create_model("mana", **TINY)
    ref_model.load_state_dict(model.state_dict())
    x = torch.rand(2, 7, 3, 13, 19)
    target = torch.rand(2, 3, 52, 76)
    out = model(x)
    (F.l1_loss(out.image, target) + out.aux_losses["quantization"]).backward()
    ref, ref_q = official_forward(ref_model, x)
    (F.l1_loss(ref, target) + ref_q).backward()
    grads = dict(model.named_parameters())
    for name in ("nonloc_spatial.std", "nonloc_spatial.mb", "nonloc_spatial.W_z1.weight", "conv_first.weight"):
        assert grads[name].grad.abs().sum() > 0, name
    for (n, a), b in zip(model.named_parameters(), ref_model.parameters()):
        assert torch.isfinite(a.grad).all(), n
        assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-3), (n, (a.grad - b.grad).abs().max())


def test_encode_decode_equals_forward():
    model = _randomise(create_model("mana", **TINY)).eval()
    x = torch.rand(1, 7, 3, 8, 10)
    with torch.no_grad():
        feats = [model.encode(x[:, i]) for i in range(7)]
        # Equal up to the rounding of batched vs per-frame convolutions.
        assert (model.decode(feats, x[:, 3]) - model(x).image).abs().max().item() < 1e-6
        with pytest.raises(InputError, match="7 frame encodings"):
            model.decode(feats[:5], x[:, 3])


def test_window_config_runs_and_is_recorded():
    model = create_model("mana", **TINY, attention_window=3.0)
    assert model.nonloc_spatial.window == 3.0
    with torch.no_grad():
        assert model(torch.rand(1, 7, 3, 9, 9)).image.shape == (1, 3, 36, 36)
    model.set_attention(window=None)
    assert model.config.attention_window is None and model.nonloc_spatial.window is None


def test_bad_inputs_and_configs():
    model = create_model("mana", **TINY)
    with pytest.raises(InputError, match="expects 7 RGB frames, got 5"):
        model(torch.rand(1, 5, 3, 8, 8))
    with pytest.raises(InputError, match="N, T, C, H, W"):
        model(torch.rand(1, 3, 8, 8))
    with pytest.raises(ConfigError, match="num_frame must be odd"):
        create_model("mana", **TINY, num_frame=6)
    with pytest.raises(ConfigError, match="norm_groups"):
        create_model("mana", **{**TINY, "norm_groups": 5})
    with pytest.raises(ConfigError, match="attention_window"):
        create_model("mana", **TINY, attention_window=-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kaiming_init_makes_the_fresh_output_depend_on_the_input(seed):
    """mana-s's init="kaiming": a fresh network's correction to the bilinear upsampling depends on its
    input (measured 0.69-0.85 of its size), far more than with the official init (0.27-0.37, bias-driven)."""
    import torch.nn.functional as F

    def dependence(init: str) -> float:
        torch.manual_seed(seed)
        model = create_model("mana-s", init=init)
        frames = F.interpolate(torch.rand(14, 3, 8, 8), size=(24, 24), mode="bicubic").clamp(0, 1).view(2, 7, 3, 24, 24)
        with torch.no_grad():
            res = model(frames).image - F.interpolate(frames[:, 3], scale_factor=4, mode="bilinear", align_corners=False)
        return float((res[0] - res[1]).std() / res.abs().mean())

    official, kaiming = dependence("official"), dependence("kaiming")
    assert kaiming > 0.6 and kaiming > 1.5 * official, (official, kaiming)
    # The attention's output projections still start at zero (the official init), whatever the trunk's.
    model = create_model("mana-s")
    assert model.config.init == "kaiming" and create_model("mana", **TINY).config.init == "official"
    assert float(model.nonloc_spatial.W_z.weight.detach().abs().max()) == 0 == float(model.nonloc_spatial.W_z1.weight.detach().abs().max())
    with pytest.raises(ConfigError, match="init must be one of official, kaiming"):
        create_model("mana", **TINY, init="xavier")


def test_presets_and_official_sizes():
    assert {"mana", "mana-m512", "mana-s"} <= set(list_models("mana"))
    with torch.device("meta"):
        model = create_model("mana")
        big = create_model("mana-m512")
    sd = model.state_dict()
    assert model.nonloc_spatial.norm.num_groups == 32
    assert sd["conv_first.weight"].shape == (128, 3, 3, 3)
    assert sd["nonloc_spatial.W_z.weight"].shape == (128, 7 * 64, 1, 1)
    assert sd["nonloc_spatial.mb"].shape == (64, 256) and big.state_dict()["nonloc_spatial.mb"].shape == (64, 512)
    assert sd["nonloc_spatial.std"].shape == (1,)
    assert "decoder.39.conv2.weight" in sd and "encoder.4.conv1.weight" in sd and "decoder.40.conv1.weight" not in sd
    # Nothing of size (H*W)^2 anywhere: no D.
    assert not any(k.endswith(".D") for k in sd)
    # The official Gaussian starts at sigma 4; mana-s's at 1 (a 3-sigma window of 7x7 keys, see its preset).
    assert create_model("mana", **TINY).nonloc_spatial.std.item() == 4.0
    small = create_model("mana-s")
    assert small.nonloc_spatial.std.item() == 1.0 and small.nonloc_spatial.window == 3.0


def test_memory_param_patterns_name_the_memory_branch():
    import fnmatch

    model = create_model("mana", **TINY)
    names = [n for n, _ in model.named_parameters()]
    hit = [n for n in names if any(fnmatch.fnmatch(n, p) for p in MEMORY_PARAMS)]
    assert sorted(hit) == ["nonloc_spatial.W_z1.bias", "nonloc_spatial.W_z1.weight", "nonloc_spatial.mb"]


# ------------------------------------------------------------------------------ official checkpoints
def _official_state(model: MANA, h: int = 8, w: int = 8, half_std: bool = False) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["nonloc_spatial.D"] = official_D(h, w)
    if half_std:
        state["nonloc_spatial.std"] = state["nonloc_spatial.std"].half()
        state["nonloc_spatial.D"] = state["nonloc_spatial.D"].half()
    return state


@pytest.mark.parametrize("wrap", ["bare", "dataparallel", "params"])
def test_official_checkpoint_loads_and_D_is_dropped(tmp_path, wrap):
    src = _randomise(create_model("mana", **TINY))
    state = _official_state(src)
    if wrap == "dataparallel":
        state = {f"module.{k}": v for k, v in state.items()}
    obj = {"params": state} if wrap == "params" else state
    path = tmp_path / "checkpt.pt"
    torch.save(obj, path)
    dst = create_model("mana", **TINY, weights=path)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    # The preset and sizes are inferred from the file alone (tiny sizes via the config inferrer).
    loaded = load_model(path)
    assert isinstance(loaded, MANA) and loaded.config.num_feat == 16 and loaded.config.decoder_nblocks == 1
    x = torch.rand(1, 7, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x).image, src.eval()(x).image)


def test_official_fp16_std_loads_as_float(tmp_path):
    src = create_model("mana", **TINY)
    path = tmp_path / "half.pt"
    torch.save(_official_state(src, half_std=True), path)
    dst = load_weights(create_model("mana", **TINY), path)
    assert dst.nonloc_spatial.std.dtype == torch.float32 and dst.nonloc_spatial.std.item() == 4.0


def test_adapter_ignores_other_checkpoints_and_misfits_are_one_line(tmp_path):
    assert official_key_adapter({"conv_first.weight": torch.zeros(1)}) is None
    src = create_model("mana", **TINY)
    state = _official_state(src)
    del state["nonloc_spatial.mb"]
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_weights(create_model("mana", **TINY), path)
    msg = str(info.value)
    assert "\n" not in msg and "nonloc_spatial.mb" in msg and "broken.pt" in msg


def test_bf16_autocast_runs_close_to_fp32():
    from srkit.utils.device import autocast

    model = _randomise(create_model("mana", **TINY)).eval()
    x = torch.rand(1, 7, 3, 9, 11)
    with torch.no_grad():
        ref = model(x).image
        with autocast(torch.device("cpu"), "bf16"):
            low = model(x)
    assert low.image.shape == ref.shape and torch.isfinite(low.image.float()).all()
    assert (low.image.float() - ref).abs().max().item() < 0.05
    assert torch.isfinite(low.aux_losses["quantization"].float())


# ------------------------------------------------------------------------------ No-Mem ablation
def test_nomem_equals_the_network_with_its_memory_read_out_removed():
    """memory_size 0 (the paper's No-Mem): no memory bank, no W_z1, no quantization loss; its output is
    the full network's with the memory branch's contribution zeroed (same other weights)."""
    full = _randomise(create_model("mana", **{**TINY, "decoder_nblocks": 2}))
    nomem = create_model("mana-nomem", **{**TINY, "decoder_nblocks": 2})
    assert nomem.config.memory_size == 0 and not nomem.nonloc_spatial.has_memory
    assert not hasattr(nomem.nonloc_spatial, "mb") and not hasattr(nomem.nonloc_spatial, "W_z1")
    memory = {"nonloc_spatial.mb", "nonloc_spatial.W_z1.weight", "nonloc_spatial.W_z1.bias"}
    assert set(nomem.state_dict()) == set(full.state_dict()) - memory
    nomem.load_state_dict({k: v for k, v in full.state_dict().items() if k not in memory}, strict=True)
    with torch.no_grad():  # remove the memory read-out's contribution from the full network
        full.nonloc_spatial.W_z1.weight.zero_()
        full.nonloc_spatial.W_z1.bias.zero_()
    x = torch.rand(2, 7, 3, 9, 11)
    full.eval()
    nomem.eval()
    with torch.no_grad():
        ours, ref = nomem(x), full(x)
        official, _ = official_forward(full, x)
    assert ours.aux_losses == {}  # no quantization loss: nothing is quantised
    torch.testing.assert_close(ours.image, ref.image, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.image, official, atol=1e-5, rtol=0)
    # The memory branch matters in the full network (so the comparison above is not vacuous).
    with torch.no_grad():
        full.nonloc_spatial.W_z1.weight.normal_(0, 0.2)
        assert (full(x).image - ours.image).abs().max() > 1e-3
    # Streaming path and gradients: every parameter of the No-Mem network is used.
    with torch.no_grad():
        assert torch.equal(nomem.decode([[f] for f in nomem.encode(x.flatten(0, 1))[0].unflatten(0, (2, 7)).unbind(1)],
                                        x[:, 3]), ours.image)
    nomem.train()
    nomem(x).image.square().mean().backward()
    assert all(p.grad is not None for p in nomem.parameters())


def test_nomem_config_checkpoints_and_presets(tmp_path):
    assert "mana-nomem" in list_models("mana")
    with pytest.raises(ConfigError, match="memory_size must be a non-negative integer"):
        create_model("mana", **TINY, memory_size=-1)
    from srkit.models.checkpoint import _best_preset

    with torch.device("meta"):
        sd = create_model("mana-nomem").state_dict()
    assert _best_preset(sd, None, None)[:2] == ("mana-nomem", {})
    src = create_model("mana", **TINY, memory_size=0)
    path = tmp_path / "nomem.pth"
    torch.save(src.state_dict(), path)
    loaded = load_model(path)  # a non-preset size: memory_size 0 read off the missing bank
    assert loaded.config.memory_size == 0 and loaded.config.num_feat == 16
    x = torch.rand(1, 7, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x).image, src.eval()(x).image)


def test_memory_stages_are_refused_for_nomem_with_the_reason():
    from srkit.train.config import load_config
    from srkit.train.schedule import resolve_stages

    model = create_model("mana-nomem", **TINY)
    stages = load_config("mana-vimeo").train.stages
    with pytest.raises(ConfigError) as info:
        resolve_stages(stages, model)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("train.stages[0].frozen: pattern 'nonloc_spatial.mb'")
    assert "memory_size 0 (the No-Mem ablation)" in msg and "one stage" in msg
    with pytest.raises(ConfigError, match=r"train.stages\[0\] \(stage2_memory_bank\): its patterns match no parameter.*No-Mem ablation"):
        resolve_stages(stages[1:], model)
    # The shipped No-Mem config: one stage that trains everything, on the pixel loss alone.
    cfg = load_config("mana-vimeo-nomem")
    assert cfg.model.name == "mana-nomem" and [t.type for t in cfg.train.losses] == ["l1"]
    (stage,) = resolve_stages(cfg.train.stages, model)
    assert stage.trainable == {n for n, _ in model.named_parameters()}
    # A full MANA with a typo'd pattern gets no such explanation.
    assert create_model("mana", **TINY).explain_missing_parameters("nonloc_spatial.mb") is None


@pytest.mark.parametrize("window", [None, 3.0])
def test_correspondence_loss_is_the_attention_read_out_of_the_neighbours_pixels(window):
    torch.manual_seed(0)
    model = _randomise(create_model("mana", **TINY, num_frame=3, correspondence_loss=True,
                                    attention_window=window, attention_window_stride=None)).train()
    x = torch.rand(2, 3, 3, 6, 7)
    out = model(x)
    # Reference: the attention weights written densely read the frames' pixels and a constant 1.
    ns = model.nonloc_spatial
    b, t, _, h, w = x.shape
    feats = model.encode(x.flatten(0, 1))[0]
    normed = ns.norm(feats)
    keys = ns.theta(normed).reshape(b, t, -1, h, w)
    query = ns.phi(normed.reshape(b, t, -1, h, w)[:, 1])
    values = torch.cat([x, torch.ones_like(x[:, :, :1])], dim=2)
    read = (dense_attention(query, keys, values, ns.std) if window is None
            else dense_window_attention(query, keys, values, ns.std, window))
    estimate = read[:, [0, 2], :3] / read[:, [0, 2], 3:]
    expected = (estimate - x[:, 1:2]).abs().mean()
    torch.testing.assert_close(out.aux_losses["correspondence"], expected, rtol=1e-4, atol=1e-6)
    # The network's output is unchanged, and evaluation (no gradients) does not compute the loss.
    model.config.correspondence_loss = False
    torch.testing.assert_close(model(x).image, out.image)
    model.config.correspondence_loss = True
    with torch.no_grad():
        assert "correspondence" not in model(x).aux_losses
    # Its gradient trains the matching (queries, keys, Gaussian width), not the values or the decoder.
    model.zero_grad()
    out.aux_losses["correspondence"].backward()
    for name in ("phi", "theta"):
        assert getattr(ns, name).weight.grad.abs().sum() > 0
    assert ns.std.grad is not None and ns.std.grad.abs().sum() > 0
    assert ns.g.weight.grad is None or not ns.g.weight.grad.any()
    assert all(p.grad is None or not p.grad.any() for p in model.decoder.parameters())


def test_correspondence_loss_is_zero_where_the_read_out_is_the_centre():
    from srkit.models.mana import correspondence_loss

    pixels = torch.rand(1, 3, 3, 4, 5)
    weight = torch.rand(1, 3, 1, 4, 5) * 0.5 + 0.1
    exact = torch.cat([pixels[:, 1:2].expand(-1, 3, -1, -1, -1) * weight, weight], dim=2)
    assert float(correspondence_loss(exact, pixels, 1)) == pytest.approx(0.0, abs=1e-6)
    # A read-out off by 0.1 everywhere (in the neighbours; the centre is not counted) costs 0.1.
    off = exact.clone()
    off[:, :, :3] += 0.1 * weight
    off[:, 1] = 7.0
    assert float(correspondence_loss(off, pixels, 1)) == pytest.approx(0.1, rel=1e-4)


# ------------------------------------------------------------------------------ attention fidelity
def _fidelity_reference(query, keys, flow, center, positions, radius):
    """attention_fidelity_loss written out query by query and frame by frame."""
    b, t, c, h, w = keys.shape
    total, count = 0.0, 0
    for i in range(b):
        for f in range(t):
            if f == center:
                continue
            for p in positions[i].tolist():
                py, px = divmod(p, w)
                logits = torch.einsum("c,chw->hw", query[i, :, py, px], keys[i, f]).double()
                yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
                seen = torch.ones(h, w, dtype=torch.bool)
                if radius is not None:
                    seen = (yy - py) ** 2 + (xx - px) ** 2 <= radius ** 2
                logp = torch.log_softmax(logits.masked_fill(~seen, float("-inf")).flatten(), 0).reshape(h, w)
                tx, ty = px + float(flow[i, f, 0, py, px]), py + float(flow[i, f, 1, py, px])
                x0, y0 = math.floor(tx), math.floor(ty)
                ax, ay = tx - x0, ty - y0
                ce, ok = 0.0, True
                for cx, cy, wgt in ((x0, y0, (1 - ax) * (1 - ay)), (x0 + 1, y0, ax * (1 - ay)),
                                    (x0, y0 + 1, (1 - ax) * ay), (x0 + 1, y0 + 1, ax * ay)):
                    if wgt == 0:
                        continue
                    if not (0 <= cx < w and 0 <= cy < h) or not seen[cy, cx]:
                        ok = False
                        break
                    ce -= wgt * float(logp[cy, cx])
                if ok:
                    total, count = total + ce, count + 1
    return total / count


@pytest.mark.parametrize("radius", [None, 2.5])
def test_attention_fidelity_loss_matches_a_per_query_reference(radius):
    from srkit.models.mana import attention_fidelity_loss

    torch.manual_seed(0)
    b, t, c, h, w = 2, 3, 4, 6, 7
    query, keys = torch.randn(b, c, h, w), torch.randn(b, t, c, h, w)
    flow = torch.rand(b, t, 2, h, w) * 4 - 2
    flow[:, :, :, 0, 0] = torch.tensor([1.0, 2.0])  # an integer target: its zero-weight corners may be anywhere
    positions = torch.stack([torch.randperm(h * w)[:9] for _ in range(b)])
    positions[:, 0] = 0
    loss = attention_fidelity_loss(query, keys, flow, 1, positions, radius)
    assert float(loss) == pytest.approx(_fidelity_reference(query, keys, flow, 1, positions, radius), rel=1e-5)
    # targets out of reach everywhere: zero, and still part of the graph
    query.requires_grad_(True)
    far = attention_fidelity_loss(query, keys, torch.full_like(flow, 50.0), 1, positions, radius)
    assert far.item() == 0.0 and far.requires_grad
    with pytest.raises(InputError, match="flow is"):
        attention_fidelity_loss(query, keys, flow[:, :2], 1, positions, radius)


def test_attention_fidelity_is_near_zero_on_the_correspondence_and_large_off_it():
    from srkit.models.mana import attention_fidelity_loss

    # One-hot position codes: q_p . k_t[j] is large exactly where frame t's content of p sits, p + d_t.
    h, w = 5, 6
    codes = torch.eye(h * w).reshape(h * w, h, w) * 30.0
    shifts = [(1, 0), (0, 0), (-1, 2)]  # (dx, dy) per frame, centre 1
    keys = torch.stack([torch.roll(codes, (dy, dx), dims=(1, 2)) for dx, dy in shifts])[None]
    flow = torch.zeros(1, 3, 2, h, w)
    for f, (dx, dy) in enumerate(shifts):
        flow[0, f, 0], flow[0, f, 1] = dx, dy
    positions = torch.tensor([[8, 9, 14, 15]])  # (1,2), (1,3), (2,2), (2,3): targets stay inside the frame
    good = attention_fidelity_loss(codes[None], keys, flow, 1, positions)
    bad = attention_fidelity_loss(codes[None], keys, -flow, 1, positions)
    assert float(good) < 1e-6 and float(bad) > 25.0


def test_mana_attention_fidelity_trains_the_matching_only_and_leaves_the_output_alone():
    torch.manual_seed(0)
    model = _randomise(create_model("mana", **TINY, num_frame=3, attention_fidelity_queries=5)).train()
    assert model.spec.takes_flow and not create_model("mana", **TINY, num_frame=3).spec.takes_flow
    x, flow = torch.rand(2, 3, 3, 6, 7), torch.rand(2, 3, 2, 6, 7) - 0.5
    out = model(x, flow=flow)
    assert out.aux_losses["attention_fidelity"] > 0
    torch.testing.assert_close(out.image, model(x).image)  # a training signal; the network is unchanged
    assert "attention_fidelity" not in model(x).aux_losses
    with torch.no_grad():
        assert "attention_fidelity" not in model(x, flow=flow).aux_losses
    model.zero_grad()
    out.aux_losses["attention_fidelity"].backward()
    ns = model.nonloc_spatial
    for name in ("phi", "theta"):
        assert getattr(ns, name).weight.grad.abs().sum() > 0
    assert model.conv_first.weight.grad.abs().sum() > 0  # the encoder learns features that match
    for unused in (ns.g.weight, ns.W_z.weight, model.decoder[0].conv1.weight, model.conv_last.weight):
        assert unused.grad is None or not unused.grad.any()
    with pytest.raises(InputError, match="attention_fidelity_queries is 0"):
        create_model("mana", **TINY, num_frame=3)(x, flow=flow)
    with pytest.raises(ConfigError, match="attention_fidelity_queries"):
        create_model("mana", **TINY, attention_fidelity_queries=-1)
