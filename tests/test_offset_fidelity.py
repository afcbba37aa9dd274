"""EDVR's offset-fidelity training (Chan et al., AAAI 2021): the window flow the dataset gives, the loss
against a hand-written formula, the model's aux loss, and a training run that uses them."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from srkit.data import motion
from srkit.data.motion import FlowCache, frame_flow, window_flow
from srkit.data.transforms import Augment, draw_augment, synthetic_motion_window
from srkit.errors import ConfigError, InputError
from srkit.models import create_model
from srkit.models.api import ModelSpec
from srkit.models.edvr import offset_fidelity_loss
from srkit.train.config import DatasetConfig, config_from_data
from srkit.train.data import build_dataset
from srkit.models import as_sr_output
from srkit.train.trainer import Trainer, model_forward

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_EDVR = tiny_overrides("edvr", num_frame=3, deformable_groups=1)


def _textured(size: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur((rng.random((size, size, 3)) * 255).astype(np.uint8), (0, 0), 2)


@pytest.mark.parametrize("dy, dx", [(1, 3), (-2, 1)])
def test_window_flow_measures_a_known_shift_in_lr_pixels(dy, dx) -> None:
    base = _textured()
    # frame t is the base moved by (t - 2) * (dy, dx): centre(p) = frame_t(p + (t - 2) * d)
    frames = [np.roll(base, ((t - 2) * dy, (t - 2) * dx), axis=(0, 1))[36:164, 36:164] for t in range(5)]
    flow = window_flow(frames, 2, 4)
    assert flow.shape == (5, 2, 32, 32) and flow.dtype == np.float32
    assert not flow[2].any()
    inner = flow[:, :, 4:-4, 4:-4]  # away from the borders, where content leaves the crop
    for t in range(5):
        assert np.median(inner[t, 0]) == pytest.approx((t - 2) * dx / 4, abs=0.06)
        assert np.median(inner[t, 1]) == pytest.approx((t - 2) * dy / 4, abs=0.06)
    # float frames in [0, 1] give the same flow
    np.testing.assert_allclose(window_flow([f / 255.0 for f in frames], 2, 4), flow, atol=0.05)
    with pytest.raises(InputError, match="not a multiple of the scale x4"):
        window_flow([f[:30] for f in frames], 2, 4)


@pytest.mark.parametrize("aug", [Augment(h, v, t) for h in (False, True) for v in (False, True) for t in (False, True)])
def test_an_augmented_flow_is_the_flow_of_the_augmented_frames(aug) -> None:
    base = _textured(160, seed=1)
    src, dst = base[16:144, 8:136], np.roll(base, (2, -5), axis=(0, 1))[16:144, 8:136]
    turned = aug.apply_flow(frame_flow(src, dst, 4))
    direct = frame_flow(np.ascontiguousarray(aug.apply(src)), np.ascontiguousarray(aug.apply(dst)), 4)
    assert turned.shape == direct.shape == (2, 32, 32)
    inner = (slice(None), slice(4, -4), slice(4, -4))
    np.testing.assert_allclose(np.median(turned[inner], axis=(1, 2)), np.median(direct[inner], axis=(1, 2)), atol=0.05)
    # dst(p) = src(p - (dx, dy)) with (dx, dy) = (-5, 2) GT px, so src(p) = dst(p + (-5, 2)): (-1.25, 0.5) at LR
    dx, dy = np.median(frame_flow(src, dst, 4)[inner], axis=(1, 2))
    assert (dx, dy) == (pytest.approx(-1.25, abs=0.06), pytest.approx(0.5, abs=0.06))


def test_whole_frame_flow_measures_motion_a_small_crop_cannot() -> None:
    # 28 GT px per frame (7 LR px): a fast Set8 pan. Texture at several scales, as in real footage, so the
    # coarse Farneback levels see structure.
    rng = np.random.default_rng(2)
    base = sum(cv2.GaussianBlur(rng.random((320, 320, 3)).astype(np.float32), (0, 0), s) * s for s in (2, 6, 16))
    base = ((base - base.min()) / (base.max() - base.min()) * 255).astype(np.uint8)
    src, dst = base, np.roll(base, (0, -28), axis=(0, 1))  # src(p) = dst(p + (-28, 0))
    whole = frame_flow(src, dst, 4)[:, 8:-8, 8:-8]
    assert np.median(whole[0]) == pytest.approx(-7.0, abs=0.1) and np.median(whole[1]) == pytest.approx(0.0, abs=0.1)
    crop = frame_flow(src[96:224, 96:224], dst[96:224, 96:224], 4)  # what a 32x32 LR training crop alone gives
    assert abs(np.median(crop[0])) < 1.0


def test_flow_cache_computes_each_pair_once_and_drops_the_least_recent(monkeypatch) -> None:
    calls = []

    def counting(src, dst, scale, **kw):
        calls.append(scale)
        return np.full((2, src.shape[0] // scale, src.shape[1] // scale), len(calls), np.float32)

    monkeypatch.setattr(motion, "frame_flow", counting)
    frame = np.zeros((16, 16, 3), np.uint8)
    cache = FlowCache(4, max_bytes=2 * 2 * 4 * 4 * 4)  # room for two 2x4x4 float32 flows
    first = cache.get("a", frame, frame)
    assert cache.get("a", frame, frame) is first and calls == [4]
    with pytest.raises(ValueError):
        first[0, 0, 0] = 1.0  # shared by every later sample of the pair: read-only
    cache.get("b", frame, frame)
    cache.get("a", frame, frame)  # "a" is now the most recent
    cache.get("c", frame, frame)  # over budget: "b" goes
    assert len(cache) == 2 and len(calls) == 3
    cache.get("a", frame, frame)
    assert len(calls) == 3
    cache.get("b", frame, frame)
    assert len(calls) == 4


def test_window_flow_through_a_cache_zeroes_copies_of_the_centre_and_reuses_pairs(monkeypatch) -> None:
    real, calls = motion.frame_flow, []

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(motion, "frame_flow", counting)
    base = _textured()
    moved = np.roll(base, (0, 4), axis=(0, 1))[36:164, 36:164]
    centre = base[36:164, 36:164]
    # a window at a clip's start: frame 0 padded by copies of itself (reflect/replicate padding)
    frames, ids = [centre, centre, centre, moved, moved], [0, 0, 0, 1, 1]
    cache = FlowCache(4)
    flow = window_flow(frames, 2, 4, frame_ids=ids, cache=cache, clip_key="clip")
    assert not flow[:3].any()  # the centre's copies: exact zeros, never an estimate of them
    assert np.median(flow[3, 0, 4:-4, 4:-4]) == pytest.approx(1.0, abs=0.06)  # content moved 4 GT px right
    assert len(cache) == 1 and len(calls) == 1  # (clip, 0, 1) once, though the window holds frame 1 twice
    np.testing.assert_array_equal(window_flow(frames, 2, 4, frame_ids=ids, cache=cache, clip_key="clip"), flow)
    assert len(calls) == 1  # the second window is served from the cache
    np.testing.assert_array_equal(window_flow(frames, 2, 4, frame_ids=ids), flow)  # same as uncached
    assert len(calls) == 3
    with pytest.raises(InputError, match="2 frame ids for 5 frames"):
        window_flow(frames, 2, 4, frame_ids=[0, 1])
    with pytest.raises(InputError, match="the cache holds x4 flows, asked for x2"):
        window_flow(frames, 2, 2, frame_ids=ids, cache=cache)


def _reference_loss(offsets, flow, t):
    """The loss written out tap by tap, level by level."""
    terms = []
    for name, factor in (("l1", 1), ("l2", 2), ("l3", 4), ("cascade", 1)):
        o = offsets[name]
        b, c, h, w = o.shape
        if name == "cascade":
            fx = fy = torch.zeros(b, h, w)
        else:
            fx = torch.nn.functional.avg_pool2d(flow[:, 0:1], factor)[:, 0] / factor
            fy = torch.nn.functional.avg_pool2d(flow[:, 1:2], factor)[:, 0] / factor
        total = 0.0
        for k in range(c // 2):
            for d in ((o[:, 2 * k] - fy).abs(), (o[:, 2 * k + 1] - fx).abs()):
                total = total + (d * (d > t)).sum()
        terms.append(total / o.numel())
    return sum(terms) / 4


def test_offset_fidelity_loss_matches_the_formula_and_is_zero_on_the_flow() -> None:
    g = torch.Generator().manual_seed(0)
    flow = torch.randn(3, 2, 8, 12, generator=g) * 3
    taps = 2 * 2 * 9  # 2 groups of 3x3 taps, (dy, dx) each
    offsets = {"l1": torch.randn(3, taps, 8, 12, generator=g) * 3, "l2": torch.randn(3, taps, 4, 6, generator=g),
               "l3": torch.randn(3, taps, 2, 3, generator=g), "cascade": torch.randn(3, taps, 8, 12, generator=g)}
    for t in (0.0, 0.5, 2.0):
        assert float(offset_fidelity_loss(offsets, flow, t)) == pytest.approx(float(_reference_loss(offsets, flow, t)),
                                                                              rel=1e-5)
    # Offsets equal to each level's flow (cascade: zero) cost nothing; within the threshold neither.
    yx = flow.flip(1)
    exact = {"l1": yx.repeat(1, taps // 2, 1, 1),
             "l2": (torch.nn.functional.avg_pool2d(yx, 2) / 2).repeat(1, taps // 2, 1, 1),
             "l3": (torch.nn.functional.avg_pool2d(yx, 4) / 4).repeat(1, taps // 2, 1, 1),
             "cascade": torch.zeros(3, taps, 8, 12)}
    assert float(offset_fidelity_loss(exact, flow, 0.0)) == pytest.approx(0.0, abs=1e-6)
    near = {k: v + 0.4 for k, v in exact.items()}
    assert float(offset_fidelity_loss(near, flow, 0.5)) == 0.0
    assert float(offset_fidelity_loss(near, flow, 0.3)) == pytest.approx(0.4, rel=1e-5)
    with pytest.raises(InputError, match="l2 offsets are"):
        offset_fidelity_loss({**exact, "l2": exact["l2"][..., :2, :]}, flow, 0.5)


def test_edvr_with_flow_returns_its_image_and_the_loss_of_its_offsets() -> None:
    torch.manual_seed(0)
    model = create_model("edvr-m", **TINY_EDVR, offset_fidelity_threshold=0.25).train()
    x = torch.rand(2, 3, 3, 12, 16)
    flow = torch.randn(2, 3, 2, 12, 16)
    out = model(x, flow=flow)
    torch.testing.assert_close(out.image, model(x))
    # A fresh EDVR predicts zero offsets: the loss is that of zero offsets against the flow.
    zero = {k: torch.zeros(6, 2 * 9, h, w) for k, h, w in (("l1", 12, 16), ("l2", 6, 8), ("l3", 3, 4), ("cascade", 12, 16))}
    expected = _reference_loss(zero, flow.flatten(0, 1), 0.25)
    assert out.aux_losses["offset_fidelity"].item() == pytest.approx(float(expected), rel=1e-5)
    out.aux_losses["offset_fidelity"].backward()
    assert model.pcd_align.dcn_pack["l1"].conv_offset.weight.grad.abs().sum() > 0
    assert all(not m.keep_offset and m.last_offset is None for m in model.modules() if hasattr(m, "keep_offset"))
    # The offsets are those of the DCNs: a bias equal to the flow's mean shift lowers the loss.
    with torch.no_grad():
        const = torch.zeros(2, 3, 2, 12, 16)
        const[:, :, 0] = 1.5  # dx
        for level, f in (("l1", 1.5), ("l2", 0.75), ("l3", 0.375)):
            model.pcd_align.dcn_pack[level].conv_offset.bias[1:18:2] = f
        fitted = model(x, flow=const).aux_losses["offset_fidelity"]
    assert float(fitted) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InputError, match=r"EDVR flow: expected shape \(2, 3, 2, 12, 16\)"):
        model(x, flow=flow[..., :8])
    wopcd = create_model("edvr-m-wopcd", **{k: v for k, v in TINY_EDVR.items() if k != "deformable_groups"})
    assert not wopcd.spec.takes_flow and model.spec.takes_flow
    with pytest.raises(ConfigError, match="no alignment offsets"):
        wopcd(x, flow=flow)
    with pytest.raises(ConfigError, match="offset_fidelity_threshold"):
        create_model("edvr-m", **TINY_EDVR, offset_fidelity_threshold=-1.0)


@pytest.fixture
def clips(tmp_path):
    """Two short clips of a textured scene panning by (1, 3) GT pixels per frame."""
    base = _textured(160)
    for name, d in (("a", (1, 3)), ("b", (-2, 1))):
        folder = tmp_path / "clips" / name
        folder.mkdir(parents=True)
        for i in range(6):
            cv2.imwrite(str(folder / f"{i:03d}.png"), np.roll(base, (i * d[0], i * d[1]), axis=(0, 1))[40:104, 40:120])
    return tmp_path / "clips"


def test_training_samples_carry_the_window_flow(clips) -> None:
    spec = ModelSpec(scale=4, num_frames=3, center_index=1, input_kind="video", pad_multiple=4, takes_flow=True)
    cfg = DatasetConfig(kind="video", root=str(clips), layout="folders", gt_size=32, subset=["a"],
                        use_flip=False, use_rot=False, flow=True)
    ds = build_dataset(cfg, spec, seed=0, train=True, where="data.train")
    sample = ds[2]  # centre frame 2 of clip a: neighbours 1 and 3, away from the clip ends
    assert sample["flow"].shape == (3, 2, 8, 8) and sample["lq"].shape == (3, 3, 8, 8)
    # scene content moves by +(1, 3) per frame: centre(p) = next(p + (3, 1)) in (dx, dy), /4 at LR
    inner = sample["flow"][:, :, 2:-2, 2:-2]
    assert float(inner[2, 0].median()) == pytest.approx(0.75, abs=0.1)
    assert float(inner[2, 1].median()) == pytest.approx(0.25, abs=0.1)
    assert float(inner[0, 0].median()) == pytest.approx(-0.75, abs=0.1)
    assert not sample["flow"][1].any()
    # Validation samples and flow-less configs have no flow; wrong kinds and models are refused.
    assert "flow" not in build_dataset(cfg, spec, seed=0, train=False, where="data.val")[0]
    with pytest.raises(ConfigError, match="data.train.flow: the optical flow is computed for video windows only"):
        build_dataset(DatasetConfig(kind="image", root=str(clips), flow=True), spec, seed=0, train=True,
                      where="data.train")
    plain = ModelSpec(scale=4, num_frames=3, center_index=1, input_kind="video", pad_multiple=4)
    with pytest.raises(ConfigError, match="data.train.flow: this model has nothing to compare with a flow"):
        build_dataset(cfg, plain, seed=0, train=True, where="data.train")


def test_augmented_reversed_samples_carry_the_flow_of_their_own_frames(clips) -> None:
    spec = ModelSpec(scale=4, num_frames=3, center_index=1, input_kind="video", pad_multiple=4, takes_flow=True)
    cfg = DatasetConfig(kind="video", root=str(clips), layout="folders", gt_size=32, subset=["a"],
                        use_flip=True, use_rot=True, random_reverse=True, flow=True)
    ds = build_dataset(cfg, spec, seed=3, train=True, where="data.train")
    seen = set()
    for index in range(1, 5):  # centres 1-4: no padded frames in the window
        rng = ds.rng_for(index)
        _, centre, indices = ds.window(index, rng)  # the draws __getitem__ makes, in its order
        aug = draw_augment(rng)
        seen.add((aug.hflip, aug.vflip, aug.transpose, indices[0] > indices[-1]))
        flow = ds[index]["flow"].numpy()
        for t, j in enumerate(indices):
            # clip a moves by (dx, dy) = (3, 1) GT px per frame: centre(p) = frame_j(p + (j - centre) * (3, 1))
            still = np.full((2, 16, 20), 1.0, np.float32) * np.array([3.0, 1.0], np.float32)[:, None, None]
            expected = aug.apply_flow(still * (j - centre) / 4)
            np.testing.assert_allclose(np.median(flow[t, :, 2:-2, 2:-2], axis=(1, 2)), expected[:, 0, 0], atol=0.1)
    assert len(seen) > 2  # the draws did cover several augmentations


def test_synthetic_motion_windows_move_by_exactly_their_flow() -> None:
    frame = _textured(120, seed=4)
    rng = np.random.default_rng(0)
    for _ in range(5):
        views, shifts = synthetic_motion_window(frame, 5, rng, max_speed=6.0, jitter=2, scale=4)
        assert len(views) == 5 and all(v.shape == views[0].shape for v in views)
        assert views[0].shape[0] % 4 == 0 and views[0].shape[1] % 4 == 0
        assert shifts.shape == (5, 2) and not shifts[2].any()
        h, w = views[0].shape[:2]
        for view, (dx, dy) in zip(views, shifts.astype(int)):
            # centre(p) = view(p + (dx, dy)) wherever both are inside the views
            ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
            moved = view[max(0, dy): min(h, h + dy), max(0, dx): min(w, w + dx)]
            np.testing.assert_array_equal(views[2][ys, xs], moved)
        assert np.abs(shifts).max() <= 2 * 6 + 2
    with pytest.raises(InputError, match="too small for 14 px of motion"):
        synthetic_motion_window(frame[:20], 5, rng, max_speed=6.0, scale=4)


def test_synthetic_motion_samples_carry_their_exact_flow(clips) -> None:
    spec = ModelSpec(scale=4, num_frames=3, center_index=1, input_kind="video", pad_multiple=4, takes_flow=True)
    cfg = DatasetConfig(kind="video", root=str(clips), layout="folders", gt_size=32, subset=["b"], use_flip=True,
                        use_rot=True, flow=True, synthetic_motion=1.0, synthetic_speed=5.0)
    ds = build_dataset(cfg, spec, seed=0, train=True, where="data.train")
    checked = 0
    for index in range(len(ds)):
        sample = ds[index]
        flow = sample["flow"].numpy()
        assert flow.shape == (3, 2, 8, 8) and not flow[1].any()
        # one global translation per view: the same vector at every pixel, in quarter LR pixels
        assert np.ptp(flow, axis=(2, 3)).max() == 0.0
        assert np.allclose(flow * 4, np.round(flow * 4)) and np.abs(flow).max() <= (5 + 2) / 4
        # and it is the motion of the LR views: a neighbour sampled at p + flow gives the centre
        lq = sample["lq"].numpy().mean(1)
        gy, gx = np.mgrid[0:8, 0:8].astype(np.float32)
        for t in (0, 2):
            dx, dy = flow[t, :, 0, 0]
            if max(abs(dx), abs(dy)) < 0.5:
                continue
            warped = cv2.remap(lq[t], gx + dx, gy + dy, cv2.INTER_LINEAR)
            inside = (gx + dx >= 0) & (gx + dx <= 7) & (gy + dy >= 0) & (gy + dy <= 7)
            checked += 1
            assert np.abs(warped - lq[1])[inside].mean() < 0.6 * np.abs(lq[t] - lq[1])[inside].mean()
    assert checked >= 4
    # Windows from real frames are unchanged by the option at probability 0 (same random stream).
    plain = dict(kind="video", root=str(clips), layout="folders", gt_size=32, subset=["b"], flow=True)
    a = build_dataset(DatasetConfig(**plain), spec, seed=0, train=True, where="d")[2]
    b = build_dataset(DatasetConfig(**plain, synthetic_motion=0.0), spec, seed=0, train=True, where="d")[2]
    torch.testing.assert_close(a["lq"], b["lq"])
    with pytest.raises(ConfigError, match="synthetic_motion: synthetic motion makes video windows"):
        build_dataset(DatasetConfig(kind="image", root=str(clips), synthetic_motion=0.5), spec, seed=0, train=True,
                      where="data.train")
    with pytest.raises(ConfigError, match="synthetic_motion.*in \\[0, 1\\]"):
        config_from_data({"name": "x", "model": {"name": "edvr-s"}, "data": {"train": {"synthetic_motion": 2}}})


@pytest.mark.parametrize("model, key", [
    ({"name": "edvr-m", "overrides": {**TINY_EDVR, "offset_fidelity_threshold": 0.1}}, "offset_fidelity"),
    ({"name": "mana", "overrides": tiny_overrides("mana", num_frame=3, attention_fidelity_queries=6)}, "attention_fidelity"),
])
def test_the_trainer_feeds_the_flow_and_adds_the_weighted_fidelity_loss(clips, tmp_path, model, key) -> None:
    cfg = config_from_data({
        "name": "of", "output_dir": str(tmp_path / "runs"), "seed": 0, "threads": 1,
        "model": model,
        "data": {"train": {"kind": "video", "root": str(clips), "layout": "folders", "gt_size": 32, "flow": True},
                 "batch_size": 2, "num_workers": 0},
        "train": {"total_iters": 3, "optim": {"lr": 1e-3}, "schedule": {"type": "constant"}, "ema": {"enabled": False},
                  "losses": [{"name": "pixel", "type": "l1"},
                             {"name": key, "type": "aux", "key": key, "weight": 0.5}]},
        "checkpoint": {"every": 100}, "log": {"every": 1, "tensorboard": False, "progress": "off"},
    })
    tr = Trainer(cfg)
    batch = next(iter(tr._batches()))
    assert batch["flow"].shape == (2, 3, 2, 8, 8)
    out = as_sr_output(model_forward(tr.model, batch, tr.spec))
    total, parts = tr.losses(out, batch["gt"])
    fid = float(parts[key])
    assert fid > 0 and fid == pytest.approx(0.5 * out.aux_losses[key].item(), rel=1e-6)
    assert set(parts) == {"pixel", key}  # MANA's quantization is not a configured term here
    assert total.item() == pytest.approx((out.image - batch["gt"]).abs().mean().item() + fid, rel=1e-5)
    tr.fit()
    with open(tmp_path / "runs" / "of" / "scalars.csv", newline="") as fh:
        tags = [r[1] for r in csv.reader(fh)]
    assert tags.count(f"loss/{key}") == 3
    # A loss that needs the flow without data.train.flow names the missing key.
    cfg.data.train.flow = False
    cfg.name = "of2"
    if key == "attention_fidelity":  # MANA refuses a flow it would not use, so switch the loss off too
        cfg.model.overrides["attention_fidelity_queries"] = 0
    with pytest.raises(ConfigError, match=rf"no '{key}' loss .*data.train.flow: true"):
        Trainer(cfg).fit()
