"""EDVR: every preset runs at any size, equals the independent BasicSR-structured reference, and the
feature-cache (encode/decode) path equals forward."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import tiny_overrides

from srkit.errors import ConfigError, InputError
from srkit.models import create_model, list_models
from srkit.models.blocks import pad_to_multiple
from srkit.models.edvr import EDVR, EDVRConfig

TINY = tiny_overrides("edvr")  # conftest.TINY_OVERRIDES: the one tiny EDVR of the test suite
PRESETS = list_models(family="edvr")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def _randomise_offsets(model: torch.nn.Module, std: float = 0.3, bias_std: float = 0.0) -> None:
    """Fresh EDVRs predict zero offsets; give the offset predictors weights so sampling is really
    deformable (with ``bias_std`` of a few pixels, some samples land far outside the image)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "conv_offset" in name:
                p.normal_(0.0, bias_std if name.endswith("bias") else std)


def test_every_documented_preset_is_registered():
    assert PRESETS == sorted([
        "edvr-s", "edvr-m", "edvr-m-wotsa", "edvr-m-wopcd", "edvr-m-wopcd-wotsa", "edvr-l", "edvr-l-wotsa",
        "edvr-l-7f", "edvr-l-srblur", "edvr-l-deblur", "edvr-l-deblurcomp",
    ])


@pytest.mark.parametrize("name", PRESETS)
def test_preset_forward_backward_odd_size(name):
    model = create_model(name, **TINY)
    spec = model.spec
    _randomise_offsets(model, 0.05)
    x = torch.rand(1, spec.num_frames, 3, 13, 19, requires_grad=True)
    out = model(x)
    assert out.shape == (1, 3, 13 * spec.scale, 19 * spec.scale)
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["edvr-m", "edvr-l-deblur"])
def test_odd_size_comes_back_at_exact_scale(name):
    model = create_model(name, **TINY).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 5, 3, 37, 53))
    assert out.shape == (1, 3, 37 * model.spec.scale, 53 * model.spec.scale)


def test_preset_hyper_parameters_match_basicsr_options():
    def cfg(name):
        return create_model(name, **TINY).config  # structure flags only

    assert (cfg("edvr-m").with_tsa, cfg("edvr-m-wotsa").with_tsa) == (True, False)
    assert cfg("edvr-l-7f").num_frame == 7
    assert cfg("edvr-l-srblur").with_predeblur and not cfg("edvr-l-srblur").hr_in
    for name in ("edvr-l-deblur", "edvr-l-deblurcomp"):
        c = cfg(name)
        assert (c.with_predeblur, c.hr_in, c.scale, c.with_tsa) == (True, True, 1, True)
    with torch.device("meta"):
        m = create_model("edvr-m")
        big = create_model("edvr-l")
    sd = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    # Shapes of the official EDVR_M_x4_SR_REDS checkpoint (64 ch, 8 deformable groups, 5 frames).
    assert sd["pcd_align.dcn_pack.l1.conv_offset.weight"] == (8 * 3 * 9, 64, 3, 3)
    assert sd["pcd_align.cas_dcnpack.weight"] == (64, 64, 3, 3)
    assert sd["fusion.feat_fusion.weight"] == (64, 5 * 64, 1, 1)
    assert sd["fusion.spatial_attn_l2.weight"] == (64, 128, 3, 3)
    assert sd["upconv1.weight"] == (256, 64, 3, 3) and sd["upconv2.weight"] == (256, 64, 3, 3)
    assert sd["conv_last.weight"] == (3, 64, 3, 3)
    assert "reconstruction.9.conv2.bias" in sd and "reconstruction.10.conv1.weight" not in sd
    bsd = {k: tuple(v.shape) for k, v in big.state_dict().items()}
    assert bsd["upconv1.weight"] == (512, 128, 3, 3) and bsd["upconv2.weight"] == (256, 128, 3, 3)
    assert bsd["conv_hr.weight"] == (64, 64, 3, 3) and "reconstruction.39.conv1.weight" in bsd
    n_m = sum(p.numel() for p in m.parameters())
    assert 3.0e6 < n_m < 3.6e6  # EDVR-M is ~3.3M parameters


def test_spec():
    m = create_model("edvr-m", **TINY)
    assert (m.spec.scale, m.spec.num_frames, m.spec.center_index, m.spec.pad_multiple) == (4, 5, 2, 4)
    assert m.spec.input_kind == "video" and not m.spec.hr_input
    d = create_model("edvr-l-deblur", **TINY)
    assert (d.spec.scale, d.spec.pad_multiple, d.spec.hr_input) == (1, 16, True)
    s = create_model("edvr-l-7f", **TINY)
    assert (s.spec.num_frames, s.spec.center_index) == (7, 3)


PARITY = {
    "tsa": dict(),
    "wotsa": dict(with_tsa=False),
    "predeblur": dict(with_predeblur=True),
    "hr_in_predeblur": dict(with_predeblur=True, hr_in=True, scale=1),
    "hr_in_plain": dict(hr_in=True, scale=1),
    "3f_center0": dict(num_frame=3, center_frame_idx=0),
    "7f_center5": dict(num_frame=7, center_frame_idx=5),
}


@pytest.mark.parametrize("variant", PARITY, ids=list(PARITY))
def test_matches_basicsr_structured_reference(variant):
    pytest.importorskip("torchvision")
    from tests.reference.edvr_reference import EDVRReference

    cfg = {**TINY, "num_feat": 16, **PARITY[variant]}
    model = EDVR(EDVRConfig(**cfg)).eval()
    _randomise_offsets(model, 0.3, 3.0)
    ref = EDVRReference(**cfg).eval()
    ref.load_state_dict(model.state_dict(), strict=True)  # same keys and shapes
    hr = cfg.get("hr_in", False)
    t = cfg.get("num_frame", 5)
    h, w = (32, 48) if hr else (12, 16)
    x = torch.rand(2, t, 3, h, w)
    with torch.no_grad():
        ours, theirs = model(x), ref(x)
        # Offsets are really deformable here (several pixels), not the zero of a fresh model.
        assert model.max_offset_abs_mean() > 1.5
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max() < 1e-4
        # Any size: srkit pads internally; the reference needs the padded input.
        xo = torch.rand(1, t, 3, h - 3, w - 1)
        xp, _ = pad_to_multiple(xo, model.spec.pad_multiple)
        s = model.spec.scale
        expect = ref(xp)[..., : (h - 3) * s, : (w - 1) * s]
        assert (model(xo) - expect).abs().max() < 1e-4
        # Inference on channels_last tensors (how srkit upscale runs) takes other code paths: the
        # DCN's transposed GEMM, split offset/mask convs, per-frame alignment with the TSA product
        # written in place.  Same result.
        model.to(memory_format=torch.channels_last)
        cl = model.decode([model.encode(x[:, i].contiguous(memory_format=torch.channels_last)) for i in range(t)],
                          x[:, model.spec.center_index].contiguous(memory_format=torch.channels_last))
        assert (cl - theirs).abs().max() < 1e-4


@pytest.mark.parametrize("variant", ["tsa", "hr_in_predeblur", "wotsa"])
def test_gradients_match_reference(variant):
    """Training goes through the same maths: in-place activations and the split concat-convolutions
    must not change any gradient."""
    pytest.importorskip("torchvision")
    from tests.reference.edvr_reference import EDVRReference

    cfg = {**TINY, **PARITY[variant]}
    model = EDVR(EDVRConfig(**cfg))
    _randomise_offsets(model, 0.3, 2.0)
    ref = EDVRReference(**cfg)
    ref.load_state_dict(model.state_dict())
    h, w = (16, 32) if cfg.get("hr_in") else (8, 12)
    x = torch.rand(1, 5, 3, h, w)
    target = torch.rand(1, 3, h * model.spec.scale, w * model.spec.scale)
    (model(x) - target).abs().mean().backward()
    (ref(x) - target).abs().mean().backward()
    theirs = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        g, g_ref = p.grad, theirs[name].grad
        assert (g - g_ref).abs().max() <= 1e-4 * (1 + g_ref.abs().max()), name


@pytest.mark.parametrize("variant", ["tsa", "hr_in_predeblur", "7f_center5"])
def test_feature_cache_equals_forward(variant):
    cfg = {**TINY, **PARITY[variant]}
    model = EDVR(EDVRConfig(**cfg)).eval()
    _randomise_offsets(model)
    t = model.spec.num_frames
    x = torch.rand(2, t, 3, 21 if model.hr_in else 7, 19 if model.hr_in else 13)
    with torch.no_grad():
        full = model(x)
        xp, size = pad_to_multiple(x, model.spec.pad_multiple)
        # Streaming: each frame encoded on its own (as a cache fills), then one decode per window.
        cache = [model.encode(xp[:, i]) for i in range(t)]
        out = model.decode(cache, xp[:, model.spec.center_index])
        out = out[..., : size[0] * model.spec.scale, : size[1] * model.spec.scale]
    assert torch.equal(out, full)


@pytest.mark.parametrize("variant", ["tsa", "wotsa", "7f_center5"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_per_frame_inference_equals_batched_alignment(variant, channels_last):
    """Inference aligns and weights one neighbour at a time; training aligns all T in one batch."""
    cfg = {**TINY, "num_feat": 16, **PARITY[variant]}
    model = EDVR(EDVRConfig(**cfg)).eval()
    _randomise_offsets(model, 0.3, 3.0)
    t = cfg.get("num_frame", 5)
    x = torch.rand(2, t, 3, 12, 16)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        frames = [model.encode(x[:, i].contiguous(memory_format=torch.channels_last) if channels_last else x[:, i])
                  for i in range(t)]
        levels = [torch.stack([f[k] for f in frames], 1) for k in range(3)]
        batched = model._align_fuse(levels)
        per_frame = model._align_fuse_per_frame(frames)
    assert per_frame.shape == batched.shape == (2, 16, 12, 16)
    torch.testing.assert_close(per_frame, batched, atol=1e-5, rtol=1e-5)


def test_channels_last_and_bf16_autocast():
    model = create_model("edvr-m", **TINY).eval()
    _randomise_offsets(model, 0.1)
    x = torch.rand(1, 5, 3, 16, 20)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x)
        assert (cl - ref).abs().max() < 1e-5
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = model(x)
    assert bf.shape == ref.shape and torch.isfinite(bf).all()
    assert (bf.float() - ref).abs().mean() < 0.02


def test_bad_inputs_and_configs_are_one_line_errors():
    model = create_model("edvr-m", **TINY)
    with pytest.raises(InputError, match="expects 5 frames of 3 channels, got 3 frames"):
        model(torch.rand(1, 3, 3, 8, 8))
    with pytest.raises(InputError, match=r"\(N, T, C, H, W\)"):
        model(torch.rand(5, 3, 8, 8))
    with pytest.raises(InputError, match="expected 5 frame pyramids, got 2"):
        model.decode([model.encode(torch.rand(1, 3, 8, 8))] * 2, torch.rand(1, 3, 8, 8))
    with pytest.raises(ConfigError, match="scale 4 is not possible with hr_in=True"):
        create_model("edvr-m", hr_in=True)
    with pytest.raises(ConfigError, match="must divide num_feat"):
        create_model("edvr-m", num_feat=12, deformable_groups=8)
    with pytest.raises(ConfigError, match="center_frame_idx 5 is outside 0..4"):
        create_model("edvr-m", center_frame_idx=5)
    with pytest.raises(ConfigError, match="unexpected keyword"):
        create_model("edvr-m", num_feats=8)
    with pytest.raises(ConfigError, match=r"^EDVR config: num_reconstruct_block must be a non-negative integer, got -1$"):
        create_model("edvr-m", num_reconstruct_block=-1)
    with pytest.raises(ConfigError, match=r"^EDVR config: num_frame must be a positive integer, got True$"):
        create_model("edvr-m", num_frame=True)  # a bool is not a frame count (as MANA and UDVD already said)


def test_offset_monitor_warns_once_and_reports_max(caplog):
    model = create_model("edvr-m", **TINY).eval()
    assert model.max_offset_abs_mean() is None
    with torch.no_grad():
        model.pcd_align.cas_dcnpack.conv_offset.bias.fill_(120.0)  # offsets of 120 px: diverged
    x = torch.rand(1, 5, 3, 8, 8)
    with caplog.at_level(logging.WARNING), torch.no_grad():
        for _ in range(5):
            model(x)
    warnings = [r for r in caplog.records if "offset" in r.getMessage()]
    assert len(warnings) == 1 and "cas_dcnpack" in warnings[0].getMessage()
    assert model.max_offset_abs_mean() == pytest.approx(120.0, rel=1e-3)
    # All four DCNs diverging together: still one warning per interval for the whole network.
    model2 = create_model("edvr-m", **TINY).eval()
    with torch.no_grad():
        for m in model2.modules():
            if hasattr(m, "conv_offset"):
                m.conv_offset.bias.fill_(80.0)
    caplog.clear()
    with caplog.at_level(logging.WARNING), torch.no_grad():
        for _ in range(3):
            model2(x)
    warnings = [r for r in caplog.records if "offset" in r.getMessage()]
    assert len(warnings) == 1 and "80.00" in warnings[0].getMessage()
    # Inference aligns one neighbour at a time: each of the 4 DCNs reports once per frame (5 per forward).
    assert model2.pcd_align.cas_dcnpack.monitor.suppressed == 3 * 4 * 5 - 1
    assert model2.max_offset_abs_mean() == pytest.approx(80.0, rel=1e-3)
    # Training mode reads the exact mean of every offset map (the trainer's divergence guard).
    model.train()
    model.pcd_align.cas_dcnpack.conv_offset.bias.data[:4] = 0.0  # 4 of the 36 offset channels -> 0
    with torch.no_grad():
        model(x)
    assert model.pcd_align.cas_dcnpack.monitor.last_abs_mean == pytest.approx(120.0 * 32 / 36, rel=1e-4)
    # Monitoring off: no monitors, no value.
    quiet = create_model("edvr-m", offset_warn_threshold=None, **TINY)
    quiet(x)
    assert quiet.max_offset_abs_mean() is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fresh_edvr_carries_the_input_through_alignment(seed):
    """A fresh EDVR's aligned features keep a good share of the input features' spread.

    With PyTorch's default init (uniform weights and biases) the PCD output is ~3% of conv_first's
    spread and the fusion is bias-driven: the network's output does not depend on its input and
    training stays at the bilinear baseline. srkit's Kaiming init keeps 10-40%.
    """
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = create_model("edvr-m", num_feat=16, deformable_groups=2, num_extract_block=2, num_reconstruct_block=3)
    spread = {}
    for name in ("conv_first", "pcd_align"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: spread.__setitem__(name, float(o.detach().std())))
    frames = F.interpolate(torch.rand(10, 3, 8, 8), size=(32, 32), mode="bicubic").clamp(0, 1).view(2, 5, 3, 32, 32)
    model(frames)  # autograd on: the batched training path
    assert spread["pcd_align"] > 0.1 * spread["conv_first"], spread
    # The DCN offset predictors still start at zero (a plain convolution), residual blocks small.
    assert all(float(m.conv_offset.weight.detach().abs().max()) == 0 for m in model.modules() if hasattr(m, "conv_offset"))


# ------------------------------------------------------------------------ the paper's PCD ablation
@pytest.mark.parametrize("name", ["edvr-m-wopcd", "edvr-m-wopcd-wotsa"])
def test_wopcd_presets_have_no_alignment_and_fuse_the_unaligned_features(name):
    """woPCD: no pcd_align (and no pyramid that only PCD reads); the fused features are the fusion
    (TSA, or the 1x1 conv) of the frames' level-1 features as extracted, computed here by hand."""
    model = create_model(name, **TINY).eval()
    full = create_model("edvr-m" if model.with_tsa else "edvr-m-wotsa", **TINY)
    assert not hasattr(model, "pcd_align") and model.config.with_pcd is False
    assert not any(isinstance(m, torch.nn.Module) and type(m).__name__ in ("PCDAlignment", "DCNv2Pack")
                   for m in model.modules())
    # A checkpoint of the ablation is the full network's state dict minus PCD and its pyramid.
    dropped = {k for k in full.state_dict() if k.startswith(("pcd_align.", "conv_l2_", "conv_l3_"))}
    assert dropped and set(model.state_dict()) == set(full.state_dict()) - dropped
    assert model.max_offset_abs_mean() is None  # nothing to monitor: the trainer's guard reads None

    x = torch.rand(2, 5, 3, 12, 16)
    with torch.no_grad():
        ours = model._align_and_fuse([model.encode(x[:, i]) for i in range(5)])
        # Reference: per-frame features (conv_first, LeakyReLU 0.1, residual blocks), then the fusion.
        feats = [model.feature_extraction(torch.nn.functional.leaky_relu(model.conv_first(x[:, i]), 0.1))
                 for i in range(5)]
        if model.with_tsa:
            from tests.reference.edvr_reference import TSA

            tsa = TSA(TINY["num_feat"], 5, 2)
            tsa.load_state_dict(model.fusion.state_dict())
            expect = tsa(torch.stack(feats, 1))
        else:
            expect = torch.nn.functional.conv2d(torch.cat(feats, 1), model.fusion.weight, model.fusion.bias)
    torch.testing.assert_close(ours, expect, atol=1e-5, rtol=1e-5)
    # The training path (all frames in one batch, autograd on) gives the same features.
    batched = model._align_fuse([torch.stack(feats, 1)])
    torch.testing.assert_close(batched, expect, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("with_tsa", [True, False], ids=["tsa", "wotsa"])
def test_wopcd_matches_the_reference_and_its_cache_path(with_tsa):
    pytest.importorskip("torchvision")
    from tests.reference.edvr_reference import EDVRReference

    cfg = {**TINY, "num_feat": 16, "with_pcd": False, "with_tsa": with_tsa}
    model = EDVR(EDVRConfig(**cfg)).eval()
    ref = EDVRReference(**cfg).eval()
    ref.load_state_dict(model.state_dict(), strict=True)  # same keys: no PCD, no pyramid
    x = torch.rand(2, 5, 3, 12, 16)
    with torch.no_grad():
        ours, theirs = model(x), ref(x)
        assert (ours - theirs).abs().max() < 1e-4
        cached = model.decode([model.encode(x[:, i]) for i in range(5)], x[:, 2])
        assert torch.equal(cached, ours)
        # Any size: padded to 4 with TSA (its pooling pyramid), not at all without.
        assert model.spec.pad_multiple == (4 if with_tsa else 1)
        assert model(torch.rand(1, 5, 3, 9, 11)).shape == (1, 3, 36, 44)


def test_wopcd_checkpoint_loads_as_its_preset(tmp_path):
    from srkit.models.checkpoint import _best_preset, load_model

    for name in ("edvr-m-wopcd", "edvr-m-wopcd-wotsa"):
        with torch.device("meta"):
            sd = create_model(name).state_dict()
        assert _best_preset(sd, None, None)[:2] == (name, {})
    # A non-preset size is inferred from the tensors (no pcd_align: with_pcd=False).
    src = create_model("edvr-m-wopcd", **{**TINY, "num_frame": 3})
    path = tmp_path / "wopcd.pth"
    torch.save({"params": src.state_dict()}, path)
    model = load_model(path)
    assert model.config.with_pcd is False and model.config.with_tsa and model.config.num_frame == 3
    x = torch.rand(1, 3, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), src.eval()(x))
