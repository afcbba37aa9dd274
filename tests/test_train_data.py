"""Training data plumbing: real datasets through the resumable loader, workers and epochs."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch

from srkit.data.transforms import blur_centre
from srkit.errors import ConfigError
from srkit.models.api import ModelSpec
from srkit.train.config import DataConfig, DatasetConfig
from srkit.train.data import build_dataset, make_train_loader
from srkit.train.distributed import DistInfo

SPEC = ModelSpec(scale=4, num_frames=3, center_index=1, input_kind="video", pad_multiple=4)


@pytest.fixture
def clips(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(6):
            cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    return tmp_path


def _batches(ds, workers: int, start: int, n: int) -> list[dict]:
    cfg = DataConfig(batch_size=5, num_workers=workers, persistent_workers=True)
    loader = make_train_loader(ds, cfg, seed=7, dist_info=DistInfo(), device=torch.device("cpu"), start_iteration=start)
    return list(itertools.islice(iter(loader), n))


def test_video_dataset_stream_is_exact_across_workers_and_resume(clips) -> None:
    ds_cfg = DatasetConfig(kind="video", root=str(clips), layout="folders", gt_size=16, random_reverse=True)
    ds = build_dataset(ds_cfg, SPEC, seed=7, train=True, where="data.train")
    assert len(ds) == 12
    ref = _batches(ds, 0, 0, 6)  # 30 samples: crosses two epoch boundaries inside batches
    assert ref[0]["lq"].shape == (5, 3, 3, 4, 4) and ref[0]["gt"].shape == (5, 3, 16, 16)
    with_workers = _batches(build_dataset(ds_cfg, SPEC, seed=7, train=True, where="data.train"), 2, 0, 6)
    resumed = _batches(build_dataset(ds_cfg, SPEC, seed=7, train=True, where="data.train"), 2, 3, 3)
    for got in (with_workers, [None] * 3 + resumed):
        for a, b in zip(ref, got, strict=True):
            if b is not None:
                assert a["key"] == b["key"]
                assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])
    # Every epoch visits every sample once; the same sample gets another crop in the next epoch.
    keys = [k for b in ref for k in b["key"]]
    assert len(set(keys[:12])) == 12 and len(set(keys[12:24])) == 12
    flat_gt = [g for b in ref for g in b["gt"]]
    j = keys[12:24].index(keys[0]) + 12
    assert not torch.equal(flat_gt[0], flat_gt[j])


def test_enlarge_ratio_repeats_with_different_crops(clips) -> None:
    ds_cfg = DatasetConfig(kind="video", root=str(clips), layout="folders", gt_size=16, enlarge_ratio=3)
    ds = build_dataset(ds_cfg, SPEC, seed=1, train=True, where="data.train")
    assert len(ds) == 36
    ds.set_epoch(0)
    a, b = ds[0], ds[12]  # the same clip frame, repeats 0 and 1 of epoch 0
    assert a["key"] == b["key"] and not torch.equal(a["gt"], b["gt"])


def test_validation_first_frames_only(clips) -> None:
    ds_cfg = DatasetConfig(kind="video", root=str(clips), layout="folders", max_frames=2)
    ds = build_dataset(ds_cfg, SPEC, seed=1, train=False, where="data.val")
    assert len(ds) == 4 and ds[0]["gt"].shape == (3, 32, 40) and ds[0]["lq"].shape == (3, 3, 8, 10)
    assert [ds[i]["key"] for i in range(4)] == ["a/000", "a/001", "b/000", "b/001"]


def test_crop_size_must_fit_the_scale(clips) -> None:
    with pytest.raises(ConfigError, match=r"data.train.gt_size: expected a multiple of the model scale 4, got 30"):
        build_dataset(DatasetConfig(kind="video", root=str(clips), gt_size=30), SPEC, seed=0, train=True, where="data.train")
    with pytest.raises(ConfigError, match=r"data.train.root: a video dataset needs a root folder"):
        build_dataset(DatasetConfig(kind="video"), SPEC, seed=0, train=True, where="data.train")
    with pytest.raises(ConfigError, match=r"data.train.kind: 'image' data but the model takes 3-frame windows"):
        build_dataset(DatasetConfig(kind="image", root=str(clips)), SPEC, seed=0, train=True, where="data.train")


def test_blur_centre_blurs_only_the_middle_frame_with_a_drawn_sigma() -> None:
    frames = [np.random.default_rng(i).integers(0, 256, (12, 10, 3), dtype=np.uint8) for i in range(5)]
    rng = np.random.default_rng(3)
    out = blur_centre(frames, rng, probability=1.0, sigma=(0.7, 1.3))
    # the same draws by hand: the coin, then the sigma
    ref = np.random.default_rng(3)
    assert ref.random() < 1.0
    s = ref.uniform(0.7, 1.3)
    expected = cv2.GaussianBlur(frames[2], (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_array_equal(out[2], expected)
    assert np.abs(out[2].astype(int) - frames[2]).mean() > 10  # noise frames: a real blur, not a no-op
    for t in (0, 1, 3, 4):
        assert out[t] is frames[t]
    # probability 0 draws nothing, so runs without the option keep their random stream
    rng = np.random.default_rng(5)
    assert all(a is b for a, b in zip(blur_centre(frames, rng, probability=0.0, sigma=(1, 2)), frames))
    assert rng.random() == np.random.default_rng(5).random()


def test_centre_blur_changes_the_centre_lr_of_training_windows_only(clips) -> None:
    plain = dict(kind="video", root=str(clips), layout="folders", gt_size=16)
    a = build_dataset(DatasetConfig(**plain), SPEC, seed=2, train=True, where="d")
    b = build_dataset(DatasetConfig(**plain, centre_blur=1.0, centre_blur_sigma=[1.0, 1.0]), SPEC, seed=2, train=True,
                      where="d")
    for index in range(4):
        x, y = a[index], b[index]
        torch.testing.assert_close(x["gt"], y["gt"])
        torch.testing.assert_close(x["lq"][[0, 2]], y["lq"][[0, 2]])
        assert (x["lq"][1] - y["lq"][1]).abs().mean() > 0.02
    # validation windows are never blurred
    va = build_dataset(DatasetConfig(**plain), SPEC, seed=2, train=False, where="d")
    vb = build_dataset(DatasetConfig(**plain, centre_blur=1.0), SPEC, seed=2, train=False, where="d")
    torch.testing.assert_close(va[0]["lq"], vb[0]["lq"])
    with pytest.raises(ConfigError, match="data.train.centre_blur: blurs the centre of video windows"):
        build_dataset(DatasetConfig(kind="image", root=str(clips), centre_blur=0.5), SPEC, seed=0, train=True,
                      where="data.train")
    with pytest.raises(ConfigError, match="centre_blur_sigma \\[lo, hi\\] with 0 < lo <= hi"):
        build_dataset(DatasetConfig(**plain, centre_blur=0.5, centre_blur_sigma=[2.0, 1.0]), SPEC, seed=0, train=True,
                      where="d")


def test_lmdb_source_gives_the_same_samples_as_the_folders(clips, tmp_path_factory) -> None:
    from srkit.data.lmdb_pack import pack

    db = tmp_path_factory.mktemp("packs") / "gt.lmdb"
    pack(clips, db, layout="folders", workers=1)
    folder = build_dataset(DatasetConfig(kind="video", root=str(clips), layout="folders", gt_size=16), SPEC,
                           seed=3, train=True, where="data.train")
    packed = build_dataset(DatasetConfig(kind="video", lmdb=str(db), gt_size=16), SPEC, seed=3, train=True,
                           where="data.train")
    a, b = _batches(folder, 0, 2, 2), _batches(packed, 0, 2, 2)
    for x, y in zip(a, b, strict=True):
        assert x["key"] == y["key"] and torch.equal(x["lq"], y["lq"]) and torch.equal(x["gt"], y["gt"])


def test_unshared_epoch_stays_in_its_worker(clips) -> None:
    """``set_epoch`` reaches other processes through shared memory until a worker unshares its epoch.

    The trainer's loader passes the epoch with every item (its stream crosses epoch boundaries), so
    each worker unshares first: otherwise one worker's ``set_epoch`` would change another's crops.
    """
    import multiprocessing as mp

    from srkit.train.data import EpochIndexed, Repeated

    ds = build_dataset(DatasetConfig(kind="video", root=str(clips), layout="folders", gt_size=16), SPEC,
                       seed=7, train=True, where="data.train")
    ctx = mp.get_context("fork")

    def run(target) -> None:
        proc = ctx.Process(target=target)
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0

    def shared_child() -> None:
        ds.set_epoch(5)

    def unsharing_child() -> None:
        wrapped = EpochIndexed(Repeated(ds, 2))
        wrapped[(3, 13)]  # repeat 1 of item 1 in epoch 3: the inner dataset draws epoch 3 * 2 + 1
        assert ds.epoch == 7, ds.epoch

    run(unsharing_child)
    assert ds.epoch == 0  # the child's epoch stayed in the child
    run(shared_child)
    assert ds.epoch == 5  # the default: a worker follows (and here, sets) the shared epoch


def test_extra_sources_are_mixed_in_with_their_own_repeat_and_seed(clips, tmp_path_factory) -> None:
    from srkit.train.config import SourceConfig
    from srkit.train.data import Mixed

    other = tmp_path_factory.mktemp("other")
    rng = np.random.default_rng(5)
    (other / "c").mkdir()
    for i in range(4):
        cv2.imwrite(str(other / "c" / f"{i:03d}.png"), rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    ds_cfg = DatasetConfig(kind="video", root=str(clips), layout="folders", gt_size=16, subset=["a"],
                           extra_sources=[SourceConfig(root=str(other), repeat=2), SourceConfig(root=str(clips), subset=["b"])])
    ds = build_dataset(ds_cfg, SPEC, seed=7, train=True, where="data.train")
    assert isinstance(ds, Mixed) and len(ds) == 6 + 2 * 4 + 6
    keys = [ds[i]["key"] for i in range(len(ds))]
    assert keys[:6] == [f"a/{i:03d}" for i in range(6)]
    assert keys[6:14] == [f"c/{i:03d}" for i in range(4)] * 2 and keys[14:] == [f"b/{i:03d}" for i in range(6)]
    # The stream through the resumable loader is the same with workers as without (epoch reaches every part).
    ref, with_workers = _batches(ds, 0, 0, 5), _batches(build_dataset(ds_cfg, SPEC, seed=7, train=True, where="data.train"), 2, 0, 5)
    for a, b in zip(ref, with_workers, strict=True):
        assert a["key"] == b["key"] and torch.equal(a["gt"], b["gt"])
    # A source's crops do not repeat the main source's random draws (own seed).
    single = build_dataset(DatasetConfig(kind="video", root=str(clips), layout="folders", gt_size=16, subset=["b"]),
                           SPEC, seed=7, train=True, where="data.train")
    assert not torch.equal(single[0]["gt"], ds[14]["gt"])


def test_extra_source_errors_name_the_folder_or_the_config_key(clips) -> None:
    from srkit.errors import SrkitError
    from srkit.train.config import config_from_data

    cfg = config_from_data({"data": {"train": {"kind": "video", "root": str(clips), "gt_size": 16,
                                               "extra_sources": [{"root": str(clips / "missing")}]}}})
    with pytest.raises(SrkitError, match="missing"):
        build_dataset(cfg.data.train, SPEC, seed=0, train=True, where="data.train")
    from srkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.train\.extra_sources\[0\]\.repeat"):
        config_from_data({"data": {"train": {"extra_sources": [{"root": "x", "repeat": 0}]}}})


IMAGE_SPEC = ModelSpec(scale=4, num_frames=1, center_index=0, input_kind="image", pad_multiple=4)


def _image_root(root, names, seed, low=0, high=256):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for name in names:
        cv2.imwrite(str(root / f"{name}.png"), rng.integers(low, high, (24 + 4 * len(name), 36, 3), dtype=np.uint8))
    return root


def test_image_dataset_from_two_hr_roots_draws_from_both(tmp_path) -> None:
    # DIV2K + Flickr2K as the UDVD paper trains (BasicSR layout: flat HR folders), kind: image.
    from collections import Counter

    from srkit.train.config import config_from_data
    from srkit.train.data import Mixed

    div2k = _image_root(tmp_path / "DIV2K" / "DIV2K_train_HR", ["0001", "0002", "0003"], 1, 0, 120)
    flickr = _image_root(tmp_path / "Flickr2K" / "Flickr2K_HR", ["000001", "000002"], 2, 136, 256)
    cfg = config_from_data({"model": {"name": "udvd-x4"}, "data": {"batch_size": 5, "num_workers": 0, "train": {
        "kind": "image", "root": str(div2k), "layout": "images", "gt_size": 16, "enlarge_ratio": 2,
        "extra_sources": [{"root": str(flickr), "repeat": 3}]}}})
    assert cfg.data.train.extra_sources[0].layout is None  # inherits the dataset's layout (images)
    ds = build_dataset(cfg.data.train, IMAGE_SPEC, seed=3, train=True, where="data.train")
    assert isinstance(ds, Mixed) and len(ds) == 3 * 2 + 2 * 3
    item = ds[7]
    assert item["lq"].shape == (3, 4, 4) and item["gt"].shape == (3, 16, 16)
    # One epoch of the training stream lists every image enlarge_ratio / repeat times, by source.
    keys = [k for b in _batches(ds, 0, 0, 12 // 5 + 1) for k in b["key"]][:12]
    by_image = Counter(k.split("/")[0] for k in keys)
    assert by_image == {"0001": 2, "0002": 2, "0003": 2, "000001": 3, "000002": 3}, by_image
    by_source = Counter("flickr" if len(k.split("/")[0]) == 6 else "div2k" for k in keys)
    assert by_source == {"div2k": 6, "flickr": 6}
    # Pixels tell the sources apart (DIV2K images are dark, Flickr2K bright): each key's crop is its source's.
    for i in range(len(ds)):
        item = ds[i]
        bright = len(item["key"].split("/")[0]) == 6
        assert (item["gt"].min() >= 0.5) if bright else (item["gt"].max() < 0.5), item["key"]


def test_missing_image_root_is_a_one_line_error_naming_it(tmp_path) -> None:
    from srkit.errors import SrkitError
    from srkit.train.config import DatasetConfig, SourceConfig

    div2k = _image_root(tmp_path / "DIV2K_train_HR", ["0001"], 1)
    missing = tmp_path / "Flickr2K" / "Flickr2K_HR"
    ds_cfg = DatasetConfig(kind="image", root=str(div2k), layout="images", gt_size=16,
                           extra_sources=[SourceConfig(root=str(missing), repeat=2)])
    with pytest.raises(SrkitError) as info:
        build_dataset(ds_cfg, IMAGE_SPEC, seed=0, train=True, where="data.train")
    msg = str(info.value)
    assert "\n" not in msg and str(missing) in msg and "data.train.extra_sources[0].root" in msg, msg


def test_shipped_udvd_config_trains_on_div2k_and_flickr2k(tmp_path, monkeypatch) -> None:
    from srkit.train.config import load_config

    monkeypatch.chdir(tmp_path)  # shipped configs: paths relative to the working directory (BasicSR's datasets/)
    _image_root(tmp_path / "datasets" / "DIV2K" / "DIV2K_train_HR", ["0001", "0002"], 1)
    _image_root(tmp_path / "datasets" / "Flickr2K" / "Flickr2K_HR", ["000001"], 2)
    cfg = load_config("udvd-x4-div2k", ["data.train.gt_size=16"])
    train = cfg.data.train
    assert train.kind == "image" and train.root.endswith("datasets/DIV2K/DIV2K_train_HR")
    assert [s.root.split("datasets/")[-1] for s in train.extra_sources] == ["Flickr2K/Flickr2K_HR"]
    assert train.extra_sources[0].repeat == train.enlarge_ratio  # images drawn uniformly over both sets
    spec = ModelSpec(scale=4, num_frames=1, input_kind="image", pad_multiple=4, condition="degradation")
    ds = build_dataset(train, spec, seed=0, train=True, where="data.train")
    assert len(ds) == 3 * train.enlarge_ratio
    assert ds[len(ds) - 1]["key"].startswith("000001") and ds[len(ds) - 1]["maps"].shape == (16, 4, 4)
