"""EDVR two-stage restoration (srkit.models.edvr_cascade): the cascade equals running its two EDVRs by
hand, streams through the engine like any model, and loads and saves both stages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES, make_tiny_model
from torch.nn import functional as F

from srkit.data.windows import window_indices
from srkit.errors import ConfigError, InputError
from srkit.infer.engine import upscale_frames
from srkit.models import create_model
from srkit.models.checkpoint import load_model, save_model
from srkit.models.edvr import EDVR, EDVRConfig
from srkit.models.edvr_cascade import EDVRCascade, cascade_from

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread

TINY = TINY_OVERRIDES["edvr"]


def _by_hand_pair(preset: str, seed: int = 0) -> tuple[EDVR, EDVR, EDVRCascade]:
    """Two independently built tiny EDVRs (stage 1 as the preset's; stage 2 HR input at scale 1, shallower)
    and a cascade holding copies of their weights."""
    torch.manual_seed(seed)
    cascade = make_tiny_model(preset).eval()
    cfg1, cfg2 = cascade.config.stage1, cascade.config.stage2
    assert cfg2["hr_in"] and cfg2["scale"] == 1
    stage1 = EDVR(EDVRConfig(**cfg1)).eval()
    stage2 = EDVR(EDVRConfig(**cfg2)).eval()
    torch.manual_seed(seed + 1)
    for net in (stage1, stage2):  # weights of their own (not the cascade's initialisation)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    cascade.stage1.load_state_dict(stage1.state_dict())
    cascade.stage2.load_state_dict(stage2.state_dict())
    return stage1, stage2, cascade


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference relative to the outputs' scale (float rounding grows with it)."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def _two_stages(stage1: EDVR, stage2: EDVR, x: torch.Tensor, multiple: int) -> torch.Tensor:
    """The NTIRE19 procedure written out: stage 1 on each 5-frame sub-window of the 9 (padded once, by
    hand), the 5 outputs stacked, stage 2 on them, cropped back."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    xp = F.pad(x.flatten(0, 1), (0, pw, 0, ph), mode="reflect").unflatten(0, x.shape[:2])
    outs = [stage1(xp[:, j:j + 5]) for j in range(5)]
    y = stage2(torch.stack(outs, 1))
    s = stage1.spec.output_ratio
    return y[..., : h * s, : w * s]


@pytest.mark.parametrize(("preset", "size"), [("edvr-m-cascade", (16, 20)), ("edvr-m-cascade", (18, 23)),
                                             ("edvr-l-deblur-cascade", (32, 48))])
def test_forward_equals_the_two_stages_run_by_hand(preset, size):
    stage1, stage2, cascade = _by_hand_pair(preset)
    x = torch.rand(2, 9, 3, *size)
    with torch.no_grad():
        ref = _two_stages(stage1, stage2, x, cascade.spec.pad_multiple)
        out = cascade(x)
    s = cascade.spec.output_ratio
    assert out.shape == ref.shape == (2, 3, size[0] * s, size[1] * s)
    assert _diff(out, ref) < 1e-5
    # Training path (autograd: batched alignment) too, to float rounding.
    assert _diff(cascade(x), ref) < 1e-4
    # forward is decode(encode(...)) on the padded frames: the engine's cached path.
    xp = torch.nn.functional.pad(x.flatten(0, 1), (0, (-size[1]) % cascade.spec.pad_multiple,
                                                   0, (-size[0]) % cascade.spec.pad_multiple), mode="reflect")
    xp = xp.unflatten(0, x.shape[:2])
    with torch.no_grad():
        feats = [cascade.encode(xp[:, i]) for i in range(9)]
        dec = cascade.decode(feats, xp[:, 4])[..., : size[0] * s, : size[1] * s]
    assert _diff(dec, out) < 1e-5


def test_spec_presets_and_config_errors():
    with torch.device("meta"):
        m = create_model("edvr-m-cascade")
        l = create_model("edvr-l-cascade")
        d = create_model("edvr-l-deblur-cascade")
    assert (m.spec.num_frames, m.spec.center_index, m.spec.scale, m.spec.hr_input) == (9, 4, 4, False)
    assert (d.spec.scale, d.spec.hr_input, d.spec.pad_multiple) == (1, True, 16)
    # Stage 2: stage 1's width, HR input at scale 1, half the reconstruction blocks (the 2019 Stage2 models).
    assert {k: m.config.stage2[k] for k in ("num_feat", "num_reconstruct_block", "hr_in", "scale")} == {
        "num_feat": 64, "num_reconstruct_block": 5, "hr_in": True, "scale": 1}
    assert (l.config.stage1["num_reconstruct_block"], l.config.stage2["num_reconstruct_block"]) == (40, 20)
    assert l.config.stage2["num_feat"] == 128 and not l.config.stage2["with_predeblur"]
    assert d.config.stage2["with_predeblur"] and d.config.stage1["hr_in"]
    # Overrides merge into the preset's stage configs field by field.
    with torch.device("meta"):
        o = create_model("edvr-m-cascade", stage2={"num_reconstruct_block": 2})
    assert o.config.stage2["hr_in"] and o.config.stage2["num_reconstruct_block"] == 2
    with pytest.raises(ConfigError, match="stage2 must be an HR-input EDVR at scale 1"):
        create_model("edvr-m-cascade", stage2={"hr_in": False, "scale": 4})
    with pytest.raises(ConfigError, match="stage1: .*'channels'"):
        create_model("edvr-m-cascade", stage1={"channels": 8})
    with pytest.raises(ConfigError, match="unexpected keyword argument 'num_feat'"):
        create_model("edvr-m-cascade", num_feat=8)
    tiny = make_tiny_model("edvr-m-cascade")
    with pytest.raises(InputError, match="expects 9 frames of 3 channels, got 5"):
        tiny(torch.rand(1, 5, 3, 8, 8))
    # Other stage window sizes: T1 + T2 - 1 frames, centre c1 + c2.
    odd = make_tiny_model("edvr-m-cascade", stage1={**TINY, "num_frame": 3}, stage2={**TINY, "num_frame": 5})
    assert (odd.spec.num_frames, odd.spec.center_index) == (7, 3)
    assert odd(torch.rand(1, 7, 3, 12, 12)).shape == (1, 3, 48, 48)


def _clip(n=11, h=16, w=20, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3)).astype(np.uint8) for _ in range(n)]


@pytest.mark.parametrize("use_cache", [True, False])
def test_engine_equals_forward_on_the_padded_windows(use_cache):
    _, _, model = _by_hand_pair("edvr-m-cascade")
    frames = _clip()
    x = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames])
    with torch.no_grad():
        ref = [model(x[window_indices(i, 9, len(frames), "reflection_circle")][None])[0].clamp(0, 1)
               .permute(1, 2, 0).numpy() for i in range(len(frames))]
    calls = []
    decode = model.stage1.decode
    model.stage1.decode = lambda feats, center: (calls.append(1), decode(feats, center))[1]
    out = list(upscale_frames(frames, model, device="cpu", use_cache=use_cache, channels_last=False))
    del model.stage1.decode
    assert len(out) == len(frames) and out[0].shape == (64, 80, 3)
    assert max(float(np.abs(a - b).max()) for a, b in zip(out, ref)) < 1e-5
    if use_cache:  # every distinct stage-1 sub-window of the stream restored once, not 5 times per frame
        subs = {tuple(window_indices(i, 9, len(frames), "reflection_circle")[j:j + 5])
                for i in range(len(frames)) for j in range(5)}
        assert len(calls) == len(subs) < 5 * len(frames)
    else:
        assert len(calls) == 5 * len(frames)


def test_checkpoint_round_trip_and_foreign_names(tmp_path):
    torch.manual_seed(0)
    model = make_tiny_model("edvr-m-cascade").eval()
    x = torch.rand(1, 9, 3, 12, 16)
    with torch.no_grad():
        ref = model(x)
    path = save_model(model, tmp_path / "cascade.safetensors")
    again = load_model(path).eval()
    assert isinstance(again, EDVRCascade) and again.preset == "edvr-m-cascade" and again.config == model.config
    state = model.state_dict()
    assert {k.split(".")[0] for k in state} == {"stage1", "stage2"}
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(again(x), ref)
    # A bare state dict (no metadata): the preset and both stages' sizes are read off the tensors; halves
    # in the 2019 release's names (recon_trunk, HRconv...) are renamed as EDVR's are.
    bare = tmp_path / "bare.pth"
    torch.save({k.replace(".reconstruction.", ".recon_trunk.").replace(".conv_hr.", ".HRconv."): v
                for k, v in state.items()}, bare)
    inferred = load_model(bare).eval()
    assert isinstance(inferred, EDVRCascade) and inferred.preset == "edvr-m-cascade"
    with torch.no_grad():
        assert torch.equal(inferred(x), ref)
    # A cascade checkpoint loads into a cascade built by preset name (strict keys and shapes).
    loaded = create_model("edvr-m-cascade", **TINY_OVERRIDES["edvr-cascade"], weights=path)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())


def test_cascade_from_two_edvr_checkpoints(tmp_path):
    stage1, stage2, _ = _by_hand_pair("edvr-m-cascade")
    p1 = save_model(stage1, tmp_path / "stage1.safetensors")
    p2 = tmp_path / "stage2_basicsr.pth"
    torch.save({"params": stage2.state_dict()}, p2)  # BasicSR's format
    model = cascade_from(p1, p2).eval()
    assert isinstance(model, EDVRCascade) and model.preset is None  # tiny sizes: no preset has them
    x = torch.rand(1, 9, 3, 12, 12)
    with torch.no_grad():
        assert _diff(model(x), _two_stages(stage1, stage2, x, 4)) < 1e-5
    # Full-size EDVR-M + the preset's stage 2: the cascade is edvr-m-cascade, and saving records it.
    with torch.device("meta"):
        cfg2 = create_model("edvr-m-cascade").config.stage2
    save_model(create_model("edvr-m"), tmp_path / "m.safetensors")
    save_model(EDVR(EDVRConfig(**cfg2)), tmp_path / "m2.safetensors")
    full = cascade_from(tmp_path / "m.safetensors", tmp_path / "m2.safetensors")
    assert full.preset == "edvr-m-cascade"
    with pytest.raises(ConfigError, match="stage2 must be an HR-input EDVR"):
        cascade_from(tmp_path / "m.safetensors", tmp_path / "m.safetensors")


def test_training_stage2_on_a_frozen_stage1_from_its_own_checkpoint(tmp_path):
    """model.init_from_parts loads an EDVR run's weights into stage1; train.stages trains stage2 only."""
    from srkit.train.config import config_from_data
    from srkit.train.trainer import Trainer, train

    small = {**TINY, "num_frame": 3, "deformable_groups": 1}
    torch.manual_seed(0)
    src = EDVR(EDVRConfig(**small))
    src_path = save_model(src, tmp_path / "stage1.safetensors")
    cfg = {
        "name": "cascade", "output_dir": str(tmp_path), "seed": 3, "threads": 1,
        "model": {"name": "edvr-m-cascade", "overrides": {"stage1": small, "stage2": small},
                  "init_from_parts": {"stage1": str(src_path)}},
        "data": {"train": {"kind": "synthetic", "gt_size": 32, "length": 4}, "batch_size": 2, "num_workers": 0},
        "train": {"total_iters": 2, "optim": {"lr": 1e-3}, "schedule": {"periods": [2], "restart_weights": [1]},
                  "stages": [{"name": "stage2_only", "trainable": ["stage2.*"]}]},
        "checkpoint": {"every": 2, "keep_last": 1},
        "log": {"every": 1, "tensorboard": False, "progress": "off"},
    }
    trainer = Trainer(config_from_data(cfg))
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.close()
    assert all(torch.equal(start[f"stage1.{k}"], v) for k, v in src.state_dict().items())
    train(config_from_data(cfg))
    final = torch.load(sorted((tmp_path / "cascade" / "checkpoints").glob("iter_*.pt"))[-1], weights_only=True)["params"]
    assert all(torch.equal(final[k], start[k]) for k in start if k.startswith("stage1."))
    assert any(not torch.equal(final[k], start[k]) for k in start if k.startswith("stage2."))
    with pytest.raises(ConfigError, match="model.init_from_parts.stage3: the model has no part 'stage3'"):
        Trainer(config_from_data({**cfg, "name": "bad", "model": {**cfg["model"], "init_from_parts": {"stage3": str(src_path)}}}))
