"""Video and image SR datasets: aligned crops, shared augmentation, windows, determinism, sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from srkit.data.degrade import DegradedSample, bd_downsample, bicubic_downsample
from srkit.data.image_dataset import ImageSRDataset
from srkit.data.layouts import Clip
from srkit.data.lmdb_pack import pack
from srkit.data.video_dataset import VideoSRDataset
from srkit.data.windows import window_indices
from srkit.errors import ConfigError, InputError
from srkit.io.images import from_float, to_float
from srkit.io.images import write_image as _write_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
S = 4
H, W, T = 48, 64, 6


def write_image(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_image(path, img)


def _frame(t: int) -> np.ndarray:
    """GT frame t: R encodes the row, G the column, B the frame index (exactly recoverable)."""
    y, x = np.mgrid[0:H, 0:W]
    return np.dstack([4 * y, 3 * x, np.full_like(y, 20 * t + 10)]).astype(np.uint8)


def _block_mean(img: np.ndarray, s: int = S) -> np.ndarray:
    h, w = img.shape[0] // s, img.shape[1] // s
    return img[: h * s, : w * s].reshape(h, s, w, s, -1).mean(axis=(1, 3))


class BoxDown:
    """A local, flip-symmetric degradation with an exactly predictable output: s x s block means."""

    scale = S

    def __call__(self, frames, rng):
        return DegradedSample([_block_mean(np.asarray(f, np.float64)).astype(np.float32) for f in frames], None)


def _vid4_tree(root: Path, clips=("c1", "c2"), lr: bool = True) -> Path:
    for c in clips:
        for t in range(T):
            gt = _frame(t)
            write_image(root / "GT" / c / f"{t:03d}.png", gt)
            if lr:
                write_image(root / "BIx4" / c / f"{t:03d}.png", from_float(_block_mean(to_float(gt))))
    return root


def _check_aligned(item: dict, expected_indices: list[int], atol: float) -> None:
    lq, gt = item["lq"].numpy(), item["gt"].numpy()  # (T,C,h,w), (C,H,W)
    gt_hwc = gt.transpose(1, 2, 0)
    expect = _block_mean(gt_hwc)
    for k, frame in enumerate(lq):
        hwc = frame.transpose(1, 2, 0)
        # Same spatial content in every LR frame and in the GT: augmentation and crop shared by all.
        np.testing.assert_allclose(hwc[..., :2], expect[..., :2], atol=atol)
        # Temporal order: the B channel names the source frame.
        t = round((float(hwc[..., 2].mean()) * 255 - 10) / 20)
        assert t == expected_indices[k], (k, t, expected_indices)


def test_synthesised_crops_aligned_and_augmented_identically(tmp_path):
    root = _vid4_tree(tmp_path, lr=False)
    ds = VideoSRDataset(root, layout="vid4", scale=S, num_frames=5, degradation=BoxDown(), gt_patch=32,
                        interval_list=[1, 2], random_reverse=True, seed=3)
    assert len(ds) == 2 * T and ds.clips[0].lr is None
    flips = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["lq"].shape == (5, 3, 8, 8) and item["gt"].shape == (3, 32, 32)
        _, center, idx = ds.window(i)
        assert idx[2] == center and item["key"].endswith(f"/{center:03d}")
        _check_aligned(item, idx, atol=1e-6)
        g = item["gt"].numpy()
        flips.add((bool(g[0, -1, 0] < g[0, 0, 0]), bool(g[1, 0, -1] < g[1, 0, 0])))  # row / column reversed
    assert len(flips) > 1  # augmentation actually happens


def test_disk_lr_crops_aligned(tmp_path):
    root = _vid4_tree(tmp_path)
    ds = VideoSRDataset(root, layout="vid4", scale=S, num_frames=3, gt_patch=16, seed=1, degradation=None)
    assert ds.clips[0].lr is not None and ds.degradation is None
    for i in range(len(ds)):
        _check_aligned(ds[i], ds.window(i)[2], atol=0.5 / 255 + 1e-6)  # LR on disk is rounded to uint8


def test_validation_items_whole_frames_with_border_padding(tmp_path):
    root = _vid4_tree(tmp_path)
    ds = VideoSRDataset(root, layout="vid4", train=False, num_frames=5, padding="reflection")
    assert len(ds) == 2 * T
    item = ds[0]
    assert item["lq"].shape == (5, 3, H // S, W // S) and item["gt"].shape == (3, H, W)
    assert item["key"] == "c1/000"
    _check_aligned(item, window_indices(0, 5, T, "reflection"), atol=0.5 / 255 + 1e-6)
    assert torch.equal(ds[0]["lq"], item["lq"])  # validation items never change


def test_bi_synthesis_on_crops_equals_degrading_whole_frames(tmp_path):
    rng = np.random.default_rng(0)
    hh, ww = 96, 80
    y, x = np.mgrid[0:hh, 0:ww]
    for t in range(3):
        texture = rng.integers(0, 256, (hh, ww), dtype=np.uint8)
        write_image(tmp_path / "clip" / f"{t}.png", np.dstack([y * 2, x * 3, texture]).astype(np.uint8))
    from srkit.io.images import read_rgb

    bd_matlab = lambda f, s: bd_downsample(f, s, variant="matlab")  # noqa: E731
    for name, params, down in (("BI", None, bicubic_downsample), ("BD", None, bd_downsample),
                               ("BD", {"variant": "matlab"}, bd_matlab)):
        ds = VideoSRDataset(tmp_path, layout="folders", num_frames=3, degradation=name, degradation_params=params,
                            gt_patch=32, use_flip=False, use_rot=False, seed=5)
        for i in range(len(ds)):
            item = ds[i]
            gt = item["gt"].numpy()
            top, left = round(gt[0, 0, 0] * 255 / 2), round(gt[1, 0, 0] * 255 / 3)  # from the R/G ramps
            assert top % S == 0 and left % S == 0
            _, _, idx = ds.window(i)
            for k, t in enumerate(idx):
                whole = down(to_float(read_rgb(tmp_path / "clip" / f"{t}.png")), S)
                want = whole[top // S: top // S + 8, left // S: left // S + 8].transpose(2, 0, 1)
                np.testing.assert_allclose(item["lq"][k].numpy(), want, atol=2e-6, err_msg=f"{name} item {i}")


def test_srmd_maps_and_shapes(tmp_path):
    root = _vid4_tree(tmp_path, lr=False)
    ds = VideoSRDataset(root, layout="vid4", num_frames=3, degradation="SRMD", degradation_params={"noise": 10.0},
                        gt_patch=32)
    item = ds[4]
    assert item["maps"].shape == (16, 8, 8) and item["maps"].dtype == torch.float32
    # One degradation per sample: the maps are spatially constant; the noise level is the last map.
    assert torch.allclose(item["maps"], item["maps"][:, :1, :1].expand(16, 8, 8))
    assert abs(float(item["maps"][15, 0, 0]) - 10 / 255) < 1e-6


def test_deterministic_per_seed_epoch_index(tmp_path):
    root = _vid4_tree(tmp_path, lr=False)
    kw = dict(layout="vid4", num_frames=3, degradation="SRMD", gt_patch=16, interval_list=[1, 2],
              random_reverse=True)
    a, b = VideoSRDataset(root, seed=7, **kw), VideoSRDataset(root, seed=7, **kw)
    for i in (0, 5, 11):
        x, y = a[i], b[i]
        assert torch.equal(x["lq"], y["lq"]) and torch.equal(x["gt"], y["gt"]) and torch.equal(x["maps"], y["maps"])
    assert torch.equal(a[5]["lq"], a[5]["lq"])  # independent of what was read before
    before = a[5]["lq"]
    a.set_epoch(1)
    assert not torch.equal(a[5]["lq"], before)
    b.set_epoch(1)
    assert torch.equal(a[5]["lq"], b[5]["lq"])
    assert not torch.equal(VideoSRDataset(root, seed=8, **kw)[5]["lq"], before)


def test_set_epoch_reaches_persistent_workers(tmp_path):
    root = _vid4_tree(tmp_path, clips=("c1",), lr=False)
    ds = VideoSRDataset(root, layout="vid4", num_frames=3, degradation=BoxDown(), gt_patch=16, seed=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, persistent_workers=True,
                                         multiprocessing_context="fork")
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        got = torch.cat([b["gt"] for b in loader])
        want = torch.stack([ds[i]["gt"] for i in range(len(ds))])
        assert torch.equal(got, want), epoch
    del loader


def test_border_redraw_and_interval_fallback(tmp_path):
    root = _vid4_tree(tmp_path, clips=("c1",), lr=False)
    ds = VideoSRDataset(root, layout="vid4", num_frames=5, degradation=BoxDown(), gt_patch=16, border="redraw")
    for i in range(len(ds)):
        _, center, idx = ds.window(i)
        assert 2 <= center <= T - 3 and idx == list(range(center - 2, center + 3))
    # An interval too large for the clip falls back to consecutive frames.
    ds = VideoSRDataset(root, layout="vid4", num_frames=5, degradation=BoxDown(), gt_patch=16, interval_list=[4])
    assert ds.window(0)[2] == window_indices(0, 5, T)


def test_vimeo_centre_only_and_lmdb_equivalence(tmp_path):
    root = tmp_path / "vimeo"
    for seq in ("00001/0001", "00001/0002"):
        for t in range(7):
            write_image(root / "sequences" / seq / f"im{t + 1}.png", _frame(t))
    ds = VideoSRDataset(root, layout="vimeo", split="all", num_frames=7, degradation=BoxDown(), gt_patch=16, seed=4)
    assert len(ds) == 2 and ds.window(0)[1] == 3 and ds[0]["key"] == "00001/0001/im4"
    pack(root, tmp_path / "v.lmdb", layout="vimeo", split="all")
    lm = VideoSRDataset(tmp_path / "v.lmdb", num_frames=7, degradation=BoxDown(), gt_patch=16, seed=4)
    assert len(lm) == 2  # the pack remembers the Vimeo layout: centre frames only
    for i in range(2):
        x, y = ds[i], lm[i]
        assert x["key"] == y["key"] and torch.equal(x["lq"], y["lq"]) and torch.equal(x["gt"], y["gt"])


def test_basicsr_vimeo_packs_with_only_the_4th_gt_frame(tmp_path):
    seq = tmp_path / "sequences" / "00001" / "0001"
    lr_dir = tmp_path / "lr" / "00001" / "0001"
    for t in range(7):
        write_image(seq / f"im{t + 1}.png", _frame(t))
        write_image(lr_dir / f"im{t + 1}.png", from_float(_block_mean(to_float(_frame(t)))))
    pack([Clip("00001/0001", [seq / "im4.png"], None)], tmp_path / "gt4.lmdb")
    pack([Clip("00001/0001", sorted(lr_dir.iterdir()), None)], tmp_path / "lr.lmdb")
    ds = VideoSRDataset(tmp_path / "gt4.lmdb", lr_source=tmp_path / "lr.lmdb", num_frames=7, gt_patch=16, seed=0)
    assert len(ds) == 1 and ds[0]["key"] == "00001/0001/im4"
    _check_aligned(ds[0], list(range(7)), atol=0.5 / 255 + 1e-6)
    five = VideoSRDataset(tmp_path / "gt4.lmdb", lr_source=tmp_path / "lr.lmdb", num_frames=5, train=False)
    _check_aligned(five[0], [1, 2, 3, 4, 5], atol=0.5 / 255 + 1e-6)


def test_lmdb_gt_and_lr_packs_match_folders(tmp_path):
    root = _vid4_tree(tmp_path / "vid")
    pack(root, tmp_path / "gt.lmdb", layout="vid4")
    pack(root, tmp_path / "lr.lmdb", layout="vid4", which="lr")
    kw = dict(num_frames=3, gt_patch=16, seed=9, random_reverse=True)
    folders = VideoSRDataset(root, layout="vid4", **kw)
    lm = VideoSRDataset(tmp_path / "gt.lmdb", lr_source=tmp_path / "lr.lmdb", **kw)
    assert len(folders) == len(lm)
    for i in (0, 7):
        assert torch.equal(folders[i]["lq"], lm[i]["lq"]) and torch.equal(folders[i]["gt"], lm[i]["gt"])
    # The parent has the packs open now; forked workers must open their own handles and read the same.
    loader = torch.utils.data.DataLoader(lm, batch_size=4, num_workers=2, multiprocessing_context="fork")
    got = torch.cat([b["lq"] for b in loader])
    assert torch.equal(got, torch.stack([lm[i]["lq"] for i in range(len(lm))]))
    # Spawned workers receive a pickled copy: no LMDB handle inside, same items out.
    import pickle

    copy = pickle.loads(pickle.dumps(lm))
    assert copy.clips[0].gt.inner.reader._env is None and torch.equal(copy[3]["gt"], lm[3]["gt"])


def test_image_dataset_pairs_and_synthesis(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("0001", "0002"):
        hr = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        write_image(tmp_path / "DIV2K_train_HR" / f"{name}.png", hr)
        write_image(tmp_path / "DIV2K_train_LR_bicubic" / "X4" / f"{name}x4.png", from_float(_block_mean(to_float(hr))))
    ds = ImageSRDataset(tmp_path, scale=4, gt_patch=16, degradation=None)
    assert len(ds) == 2
    item = ds[1]
    assert item["lq"].shape == (3, 4, 4) and item["gt"].shape == (3, 16, 16) and item["key"] == "0002/0002"
    np.testing.assert_allclose(item["lq"].numpy().transpose(1, 2, 0),
                               _block_mean(item["gt"].numpy().transpose(1, 2, 0)), atol=0.5 / 255 + 1e-6)
    val = ImageSRDataset(tmp_path, split="train", train=False, degradation=None)
    assert val[0]["gt"].shape == (3, 40, 48) and val[0]["lq"].shape == (3, 10, 12)
    srmd = ImageSRDataset(tmp_path / "DIV2K_train_HR", gt_patch=16, degradation="SRMD")
    assert srmd[0]["maps"].shape == (16, 4, 4) and srmd.degradation is not None


def test_errors_are_one_line(tmp_path):
    root = _vid4_tree(tmp_path, clips=("c1",), lr=False)
    with pytest.raises(InputError, match=r"c1/\d+: LR frames are 16x12, smaller than the 32x32"):
        VideoSRDataset(root, layout="vid4", num_frames=3, gt_patch=128)[0]
    with pytest.raises(InputError, match="no LR frames on disk and degradation is None"):
        VideoSRDataset(root, layout="vid4", degradation=None)
    with pytest.raises(ConfigError, match="odd"):
        VideoSRDataset(root, layout="vid4", num_frames=4)
    with pytest.raises(ConfigError, match="multiple of the scale"):
        VideoSRDataset(root, layout="vid4", gt_patch=30)
    write_image(root / "BIx4" / "c1" / "000.png", np.zeros((5, 5, 3), np.uint8))
    for t in range(1, T):
        write_image(root / "BIx4" / "c1" / f"{t:03d}.png", np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(InputError, match="GT is 64x48 but LR is 5x5"):
        VideoSRDataset(root, layout="vid4", train=False, num_frames=3)[0]
    for i in range(4):  # whatever the augmentation, the message gives the sizes as stored
        with pytest.raises(InputError, match="GT is 64x48 but LR is 5x5"):
            VideoSRDataset(root, layout="vid4", num_frames=3, gt_patch=8, seed=i)[0]


def test_clip_list_source(tmp_path):
    _vid4_tree(tmp_path, clips=("c1",), lr=False)
    paths = sorted((tmp_path / "GT" / "c1").iterdir())
    ds = VideoSRDataset([Clip("mine", paths, None, centers=[2])], num_frames=3, degradation=BoxDown(), gt_patch=16)
    assert len(ds) == 1 and ds[0]["key"] == "mine/002"


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
def test_shared_vimeo_and_set8():
    vimeo = VideoSRDataset(SHARED / "video_hr" / "vimeo_septuplet", layout="vimeo", split="all", num_frames=7,
                           degradation="BI", gt_patch=64, seed=0)
    assert len(vimeo) == 16
    item = vimeo[3]
    assert item["lq"].shape == (7, 3, 16, 16) and item["gt"].shape == (3, 64, 64) and item["key"].endswith("/im4")
    set8 = VideoSRDataset(SHARED / "video_hr" / "set8", layout="folders", subset=["snowboard"], train=False,
                          num_frames=5, degradation="BD")
    assert len(set8) == 59
    item = set8[0]
    assert item["lq"].shape == (5, 3, 135, 240) and item["gt"].shape == (3, 540, 960)
    assert item["key"] == "snowboard/00001"


def test_video_file_source_dataset_and_pack(tmp_path):
    from srkit.data.lmdb_store import LmdbReader
    from srkit.io.video import open_video
    from tests.media import make_video

    (tmp_path / "vids").mkdir()
    made = make_video(tmp_path / "vids" / "clip.mp4", n_frames=6, size=(64, 48), audio=False)
    with open_video(made.path) as reader:
        decoded = [f.rgb for f in reader]
    ds = VideoSRDataset(tmp_path / "vids", layout="videos", num_frames=3, degradation="BI", gt_patch=32, seed=1)
    assert len(ds) == 6 and ds[5]["key"] == "clip/00000005"
    val = VideoSRDataset(made.path, layout="videos", train=False, num_frames=3, degradation="BI")
    np.testing.assert_array_equal(val[2]["gt"].numpy(), to_float(decoded[2]).transpose(2, 0, 1))
    # Packing streams the decoded frames; the records are those frames, pixel for pixel.
    pack(made.path, tmp_path / "clip.lmdb")
    reader = LmdbReader(tmp_path / "clip.lmdb")
    assert reader.keys == [f"clip/{i:08d}" for i in range(6)]
    for i, frame in enumerate(decoded):
        np.testing.assert_array_equal(reader.read(f"clip/{i:08d}"), frame)
    tiny = VideoSRDataset(made.path, layout="videos", train=False, num_frames=3, max_video_bytes=10_000)
    with pytest.raises(InputError, match="pack it first"):
        tiny[0]


def test_frame_cache_decodes_each_frame_once_and_changes_nothing(tmp_path, monkeypatch):
    """Folder and LMDB frames go through one per-dataset LRU cache: identical samples, one decode per frame."""
    from srkit.data import sources

    root = _vid4_tree(tmp_path, lr=False)
    pack(root, tmp_path / "gt.lmdb", layout="vid4")
    decoded: list[str] = []
    real = sources.read_rgb
    monkeypatch.setattr(sources, "read_rgb", lambda p: decoded.append(str(p)) or real(p))
    for src, kw in ((root, {"layout": "vid4"}), (tmp_path / "gt.lmdb", {})):
        cached, plain = (VideoSRDataset(src, scale=S, num_frames=5, degradation=BoxDown(), gt_patch=16, seed=2,
                                        frame_cache_bytes=size, **kw) for size in (1 << 20, 0))
        samples = []
        for epoch in (0, 1):
            cached.set_epoch(epoch)
            samples += [cached[i] for i in range(len(cached))]
        cache = cached.frame_cache
        assert len(cache) == 2 * T and cache.misses == 2 * T and cache.hits == 2 * (2 * T) * 5 - 2 * T
        if kw:
            assert len(decoded) == 2 * T  # each frame file decoded once
        for epoch in (0, 1):
            plain.set_epoch(epoch)
            for i in range(len(plain)):
                x = samples[epoch * len(plain) + i]
                assert torch.equal(x["lq"], plain[i]["lq"]) and torch.equal(x["gt"], plain[i]["gt"])


def test_frame_cache_evicts_least_recent_and_protects_frames():
    from srkit.data.sources import FrameCache

    cache = FrameCache(max_bytes=3 * 100)
    def frame(v: int) -> np.ndarray:
        return np.full(100, v, np.uint8)

    for k in range(4):
        cache.get(("c", k), lambda k=k: frame(k))
    assert len(cache) == 3 and cache.nbytes == 300
    assert cache.get(("c", 0), lambda: frame(9))[0] == 9  # 0 was evicted first, so it is decoded again
    got = cache.get(("c", 3), lambda: frame(7))
    assert got[0] == 3 and cache.hits == 1
    with pytest.raises(ValueError):
        got[0] = 1  # read-only: a caller changing a frame in place would corrupt every later read
    big = cache.get(("c", 5), lambda: np.zeros(301, np.uint8))  # larger than the budget: returned, not cached
    assert big.flags.writeable and len(cache) == 3
    import pickle

    clone = pickle.loads(pickle.dumps(cache))  # a spawned worker starts empty with the same budget
    assert len(clone) == 0 and clone.max_bytes == 300
