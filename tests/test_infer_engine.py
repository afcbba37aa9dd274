"""The streaming engine (srkit.infer.engine.upscale_frames) against direct model calls."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import make_tiny_model
from torch import nn
from torch.nn import functional as F

import srkit.models.edvr  # noqa: F401  (registers the EDVR presets)
from srkit.data.windows import window_indices
from srkit.errors import ConfigError, InputError
from srkit.infer.engine import FrameRestorer, Restorer, upscale_frames, window_for
from srkit.infer.options import RestoreOptions
from srkit.models import ModelSpec, SRModel, SROutput


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def tiny_edvr(**kw):
    torch.manual_seed(0)
    return make_tiny_model("edvr-m", **kw)


def clip(n=10, h=24, w=32, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    peak = 65535 if dtype == np.uint16 else 255
    return [rng.integers(0, peak + 1, (h, w, 3)).astype(dtype) for _ in range(n)]


def reference(model, frames, padding="reflection_circle"):
    """Each frame restored by the model's own forward on its window, built independently of the engine."""
    x = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames])
    out = []
    with torch.no_grad():
        for i in range(len(frames)):
            idx = window_indices(i, model.spec.num_frames, len(frames), padding)
            out.append(model(x[idx][None])[0].clamp(0, 1).permute(1, 2, 0).numpy())
    return out


def maxdiff(a, b):
    assert len(a) == len(b)
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


@pytest.mark.parametrize("padding", ["reflection_circle", "replicate"])
def test_uncached_stream_equals_forward_on_training_windows(padding):
    model = tiny_edvr().eval()
    frames = clip(8)
    ref = reference(model, frames, padding)
    out = list(upscale_frames(frames, model, device="cpu", padding=padding, use_cache=False, channels_last=False))
    assert out[0].shape == (96, 128, 3) and out[0].dtype == np.float32
    assert maxdiff(out, ref) < 1e-6


def test_feature_cache_encodes_each_frame_once_and_matches_uncached():
    model = tiny_edvr().eval()
    frames = clip(10)
    calls = []
    encode = model.encode
    model.encode = lambda x: (calls.append(x.shape[0]), encode(x))[1]
    cached = list(upscale_frames(frames, model, device="cpu"))
    assert sum(calls) == len(frames)  # every frame's pyramid computed exactly once
    del model.encode
    uncached = list(upscale_frames(frames, model, device="cpu", use_cache=False))
    assert maxdiff(cached, uncached) < 1e-6  # same network, batched differently: float rounding only


def test_stream_is_lazy_and_bounded():
    model = tiny_edvr()
    pulled = 0
    live = []

    def source():
        nonlocal pulled
        for f in clip(30, 16, 16):
            pulled += 1
            yield f

    for k, _ in enumerate(upscale_frames(source(), model, device="cpu")):
        live.append(pulled - k)
    # 5-frame model: the first output needs frames 0..4; later each output needs one more frame read
    # (look-ahead of num_frames - 1 = 4 for the reflection_circle padding).
    assert live[0] == 5
    assert max(live) <= 5
    assert pulled == 30


def test_batched_windows_and_resume_start_match():
    model = tiny_edvr()
    frames = clip(9)
    one = list(upscale_frames(frames, model, device="cpu"))
    three = list(upscale_frames(frames, model, device="cpu", batch_size=3))
    assert maxdiff(one, three) < 1e-6
    tail = list(upscale_frames(frames, model, device="cpu", start_frame=6))
    assert len(tail) == 3
    assert maxdiff(one[6:], tail) == 0.0  # same windows, same batch shapes: bit-identical


def close_to_untiled(full: list[np.ndarray], tiled: list[np.ndarray]) -> None:
    """A tile sees only ``overlap`` pixels of context while EDVR's receptive field (PCD at 1/4
    resolution) is wider, so tiled outputs differ a little near seams; a misplaced or badly blended
    tile differs by the content itself (~0.3 on these noise frames)."""
    diff = [np.abs(a - b) for a, b in zip(full, tiled, strict=True)]
    assert max(float(d.max()) for d in diff) < 0.02
    assert np.mean([d.mean() for d in diff]) < 1e-3


def test_tiled_output_matches_untiled():
    model = tiny_edvr()
    frames = clip(5, 40, 56)
    full = list(upscale_frames(frames, model, device="cpu"))
    close_to_untiled(full, list(upscale_frames(frames, model, device="cpu", tile=24, tile_overlap=12)))
    tiled_nocache = list(upscale_frames(frames[:3], model, device="cpu", tile=20, tile_overlap=12, use_cache=False))
    close_to_untiled(list(upscale_frames(frames[:3], model, device="cpu")), tiled_nocache)


def test_max_memory_picks_tiles_that_fit_and_match():
    model = tiny_edvr().eval()
    restorer = FrameRestorer(Restorer(model, RestoreOptions(device="cpu", max_memory=45 * 2**20, tile_overlap=8)))
    restorer.setup(64, 96)
    assert len(restorer.plan) > 1  # the whole frame needs ~60MB with this model: tiled
    big = FrameRestorer(Restorer(model, RestoreOptions(device="cpu", max_memory=2**30)))
    big.setup(64, 96)
    assert len(big.plan) == 1
    frames = clip(4, 64, 96)
    full = list(upscale_frames(frames, model, device="cpu"))
    small = list(upscale_frames(frames, model, device="cpu", max_memory="45MB", tile_overlap=8))
    close_to_untiled(full, small)
    with pytest.raises(ConfigError, match="too small"):
        list(upscale_frames(frames, model, device="cpu", max_memory="1MB"))


def test_bf16_close_to_fp32_and_dtypes():
    model = tiny_edvr()
    frames = clip(4, 16, 24)
    fp32 = list(upscale_frames(frames, model, device="cpu"))
    bf16 = list(upscale_frames(frames, model, device="cpu", precision="bf16"))
    assert bf16[0].dtype == np.float32
    assert maxdiff(fp32, bf16) < 0.05
    # uint16 and float inputs are the same picture in other units
    f16 = [f.astype(np.uint16) * 257 for f in frames]
    ff = [f.astype(np.float32) / 255 for f in frames]
    assert maxdiff(fp32, list(upscale_frames(f16, model, device="cpu"))) < 1e-5
    assert maxdiff(fp32, list(upscale_frames(ff, model, device="cpu"))) < 1e-5
    # gray frames are replicated to RGB
    gray = [f[:, :, 0] for f in frames]
    rgb = [np.repeat(g[:, :, None], 3, axis=2) for g in gray]
    assert maxdiff(list(upscale_frames(gray, model, device="cpu")), list(upscale_frames(rgb, model, device="cpu"))) == 0


def test_bad_streams():
    model = tiny_edvr()
    with pytest.raises(InputError, match="zero frames"):
        list(upscale_frames([], model, device="cpu"))
    frames = clip(4) + clip(1, 20, 32)
    with pytest.raises(InputError, match="frame 4 is 32x20"):
        list(upscale_frames(frames, model, device="cpu"))
    with pytest.raises(ConfigError, match="padding"):
        upscale_frames(clip(3), model, device="cpu", padding="mirror")


def test_short_clip_and_non_middle_centre():
    model = tiny_edvr()
    out = list(upscale_frames(clip(2), model, device="cpu"))  # shorter than the 5-frame window
    assert len(out) == 2
    spec = ModelSpec(scale=4, num_frames=5, center_index=1)
    for i in range(2, 7):  # inside the clip: the plain window i-1 .. i+3
        assert window_for(i, spec, 10, "reflection") == list(range(i - 1, i + 4))
    for i in range(10):
        w = window_for(i, spec, 10, "reflection_circle")
        assert w[1] == i and all(0 <= j < 10 for j in w)
    off = tiny_edvr(center_frame_idx=1)
    assert len(list(upscale_frames(clip(7), off, device="cpu"))) == 7


@dataclass
class _CondConfig:
    scale: int = 2


class CondNet(SRModel):
    """A small conditioned image model: the output depends on the maps pixel by pixel and on context."""

    def __init__(self):
        super().__init__(_CondConfig())
        self.conv = nn.Conv2d(3 + 2, 3, 3, padding=1)

    @property
    def spec(self):
        return ModelSpec(scale=2, num_frames=1, input_kind="image", condition="degradation")

    def forward(self, x, maps):
        y = self.conv(torch.cat([x, maps], 1))
        up = F.interpolate(x + 0.1 * y, scale_factor=2, mode="nearest")
        return SROutput(up, (up, up))


def test_conditioned_image_model_maps_follow_tiles():
    torch.manual_seed(0)
    net = CondNet().eval()
    img = clip(1, 40, 48)[0]
    maps = np.random.default_rng(1).random((2, 40, 48)).astype(np.float32)
    with torch.no_grad():
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        ref = net(x, torch.from_numpy(maps)[None]).image[0].clamp(0, 1).permute(1, 2, 0).numpy()
    full = next(upscale_frames([img], net, device="cpu", condition=maps))
    np.testing.assert_allclose(full, ref, atol=1e-6)
    tiled = next(upscale_frames([img], net, device="cpu", condition=maps, tile=16, tile_overlap=8))
    np.testing.assert_allclose(tiled, ref, atol=1e-6)  # receptive field 1 px < overlap: exact up to rounding
    vec = next(upscale_frames([img], net, device="cpu", condition=np.array([0.3, 0.7], np.float32)))
    const = next(upscale_frames([img], net, device="cpu", condition=lambda h, w: np.stack(
        [np.full((h, w), 0.3, np.float32), np.full((h, w), 0.7, np.float32)])))
    np.testing.assert_array_equal(vec, const)
    with pytest.raises(ConfigError, match="degradation maps"):
        upscale_frames([img], net, device="cpu")
    with pytest.raises(ConfigError, match="maps have shape"):
        next(upscale_frames([img], net, device="cpu", condition=np.zeros((2, 5, 5), np.float32)))
