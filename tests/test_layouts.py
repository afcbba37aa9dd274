"""Dataset layouts: each layout on a small fixture tree, splits, subsets and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from srkit.data.layouts import REDS4, Clip, detect_layout, discover_clips, read_name_list
from srkit.errors import ConfigError, InputError
from srkit.io.images import encode_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_PNG = encode_image(np.zeros((4, 4, 3), np.uint8), ".png")


def _touch_frames(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(_PNG)


def test_vid4_layout_natural_order_and_degradations(tmp_path):
    names = [f"f{i}.png" for i in (1, 2, 10, 11)]  # natural sort puts f10 after f2
    for seq in ("calendar", "city"):
        _touch_frames(tmp_path / "GT" / seq, names)
        _touch_frames(tmp_path / "BIx4" / seq, names)
    clips = discover_clips(tmp_path, "vid4")
    assert [c.name for c in clips] == ["calendar", "city"]
    assert [p.name for p in clips[0].gt] == names
    assert clips[0].lr[0] == tmp_path / "BIx4" / "calendar" / "f1.png"
    assert clips[0].center_list() == [0, 1, 2, 3]
    # No BDx4 folder: LR must be synthesised by the caller.
    assert all(c.lr is None for c in discover_clips(tmp_path, "vid4", degradation="BD"))
    assert [c.name for c in discover_clips(tmp_path, "vid4", subset=["city"])] == ["city"]
    assert detect_layout(tmp_path) == "vid4"


def test_vid4_frame_count_mismatch_is_one_line_error(tmp_path):
    _touch_frames(tmp_path / "GT" / "walk", ["1.png", "2.png"])
    _touch_frames(tmp_path / "BIx4" / "walk", ["1.png"])
    with pytest.raises(InputError, match=r"BIx4/walk: 1 LR frames but 2 ground-truth"):
        discover_clips(tmp_path, "vid4")


def test_vid4_missing_lr_sequence(tmp_path):
    _touch_frames(tmp_path / "GT" / "walk", ["1.png"])
    (tmp_path / "BDx4").mkdir()
    with pytest.raises(InputError, match="BDx4: LR folder has no sequence 'walk'"):
        discover_clips(tmp_path, "vid4", degradation="BD")


def _reds_tree(root: Path, clips: list[str], frames: int = 3) -> None:
    names = [f"{i:08d}.png" for i in range(frames)]
    for c in clips:
        _touch_frames(root / "train_sharp" / c, names)
        _touch_frames(root / "train_sharp_bicubic" / "X4" / c, names)
    _touch_frames(root / "val_sharp" / "000", names)
    _touch_frames(root / "val_sharp_bicubic" / "X4" / "000", names)


def test_reds_partitions(tmp_path):
    _reds_tree(tmp_path, ["000", "001", "011", "015", "020", "021", "245"])
    reds4 = discover_clips(tmp_path, "reds", split="reds4")
    assert [c.name for c in reds4] == list(REDS4)
    assert reds4[0].lr[0] == tmp_path / "train_sharp_bicubic" / "X4" / "000" / "00000000.png"
    assert [c.name for c in discover_clips(tmp_path, "reds", split="train")] == ["001", "021", "245"]
    assert [c.name for c in discover_clips(tmp_path, "reds", split="train_official")] == \
        ["000", "001", "011", "015", "020", "021"]
    val = discover_clips(tmp_path, "reds", split="official_val")
    assert [c.name for c in val] == ["000"] and val[0].gt[0].parent == tmp_path / "val_sharp" / "000"
    assert discover_clips(tmp_path, "reds", split="train", degradation="BD")[0].lr is None
    assert detect_layout(tmp_path) == "reds"
    with pytest.raises(ConfigError, match="unknown REDS split"):
        discover_clips(tmp_path, "reds", split="nope")


def test_reds_official_val_in_basicsr_regrouped_tree(tmp_path):
    # BasicSR's regroup_reds_dataset.py: val_sharp/000-029 become train_sharp/240-269, no val_sharp.
    val = [f"{i:03d}" for i in range(240, 270)]
    names = ["00000000.png"]
    for c in ["000", "011", "015", "020", "239"] + val:
        _touch_frames(tmp_path / "train_sharp" / c, names)
        _touch_frames(tmp_path / "train_sharp_bicubic" / "X4" / c, names)
    clips = discover_clips(tmp_path, "reds", split="official_val")
    assert [c.name for c in clips] == val
    assert clips[0].lr[0] == tmp_path / "train_sharp_bicubic" / "X4" / "240" / "00000000.png"
    assert len(discover_clips(tmp_path, "reds", split="train_official")) == 5
    # a regrouped tree missing some of 240-269 is not silently taken for the validation set
    (tmp_path / "train_sharp" / "269" / "00000000.png").unlink()
    (tmp_path / "train_sharp" / "269").rmdir()
    with pytest.raises(InputError, match="no val_sharp folder"):
        discover_clips(tmp_path, "reds", split="val")


def test_reds4_incomplete(tmp_path):
    _reds_tree(tmp_path, ["000", "001"])
    with pytest.raises(InputError, match="REDS4 needs clips"):
        discover_clips(tmp_path, "reds")


def test_vimeo_lists_lr_and_centre(tmp_path):
    septuplet = [f"im{i}.png" for i in range(1, 8)]
    for seq in ("00001/0001", "00001/0002", "00002/0001"):
        _touch_frames(tmp_path / "sequences" / seq, septuplet)
        _touch_frames(tmp_path / "sequences_BIx4" / seq, septuplet)
    (tmp_path / "sep_trainlist.txt").write_text("00001/0001\n00002/0001\n\n")
    (tmp_path / "sep_testlist.txt").write_text("00001/0002\n")
    train = discover_clips(tmp_path, "vimeo", split="train")
    assert [c.name for c in train] == ["00001/0001", "00002/0001"]
    assert train[0].centers == [3] and train[0].center_list() == [3]
    assert train[0].lr[3] == tmp_path / "sequences_BIx4" / "00001" / "0001" / "im4.png"
    assert [c.name for c in discover_clips(tmp_path, "vimeo", split="test")] == ["00001/0002"]
    assert len(discover_clips(tmp_path, "vimeo", split="all")) == 3
    assert discover_clips(tmp_path, "vimeo", split="all", degradation="BD")[0].lr is None
    (tmp_path / "sep_testlist.txt").unlink()
    with pytest.raises(InputError, match="no sep_testlist.txt"):
        discover_clips(tmp_path, "vimeo", split="test")


def test_vimeo_basicsr_lr_folder(tmp_path):
    root = tmp_path / "vimeo_septuplet"
    _touch_frames(root / "sequences" / "00001" / "0001", [f"im{i}.png" for i in range(1, 8)])
    _touch_frames(tmp_path / "vimeo_septuplet_matlabLRx4" / "sequences" / "00001" / "0001",
                  [f"im{i}.png" for i in range(1, 8)])
    clip = discover_clips(root, "vimeo", split="all")[0]
    assert clip.lr[0].parents[2].name == "sequences" and "matlabLRx4" in str(clip.lr[0])
    # BD: no LR yet -> synthesised; then BasicSR's MATLAB BD script output beside the dataset is found,
    # and BasicVSR's in-tree sequences_BD wins over it
    assert discover_clips(root, "vimeo", split="all", degradation="BD")[0].lr is None
    septuplet = [f"im{i}.png" for i in range(1, 8)]
    _touch_frames(tmp_path / "vimeo_septuplet_BDLRx4" / "sequences" / "00001" / "0001", septuplet)
    lr = discover_clips(root, "vimeo", split="all", degradation="BD")[0].lr
    assert lr[6] == tmp_path / "vimeo_septuplet_BDLRx4" / "sequences" / "00001" / "0001" / "im7.png"
    _touch_frames(root / "sequences_BD" / "00001" / "0001", septuplet)
    lr = discover_clips(root, "vimeo", split="all", degradation="BD")[0].lr
    assert lr[0] == root / "sequences_BD" / "00001" / "0001" / "im1.png"
    assert discover_clips(root, "vimeo", split="all", degradation="BD", scale=2)[0].lr is None


def test_images_div2k_pairs(tmp_path):
    _touch_frames(tmp_path / "DIV2K_train_HR", ["0001.png", "0002.png"])
    _touch_frames(tmp_path / "DIV2K_train_LR_bicubic" / "X4", ["0001x4.png", "0002x4.png"])
    _touch_frames(tmp_path / "DIV2K_valid_HR", ["0801.png"])
    clips = discover_clips(tmp_path, "images", split="train")
    assert [c.name for c in clips] == ["0001", "0002"]
    assert clips[1].gt == [tmp_path / "DIV2K_train_HR" / "0002.png"]
    assert clips[1].lr == [tmp_path / "DIV2K_train_LR_bicubic" / "X4" / "0002x4.png"]
    val = discover_clips(tmp_path, "images", split="val")
    assert [c.name for c in val] == ["0801"] and val[0].lr is None
    assert detect_layout(tmp_path) == "images"


def test_images_hr_only_and_benchmark_names(tmp_path):
    _touch_frames(tmp_path / "set" / "GTmod12", ["baby.png", "bird.png"])
    _touch_frames(tmp_path / "set" / "LRbicx4", ["baby.png", "bird.png"])
    clips = discover_clips(tmp_path / "set", "images")
    assert clips[0].lr == [tmp_path / "set" / "LRbicx4" / "baby.png"]
    _touch_frames(tmp_path / "flat", ["a.png", "b.png"])
    flat = discover_clips(tmp_path / "flat", "images")
    assert [c.name for c in flat] == ["a", "b"] and flat[0].lr is None


def test_images_missing_lr_partner(tmp_path):
    _touch_frames(tmp_path / "HR", ["a.png", "b.png"])
    _touch_frames(tmp_path / "LR", ["a.png"])
    with pytest.raises(InputError, match="LR: no LR image for b.png"):
        discover_clips(tmp_path, "images")


def test_folders_and_single_folder(tmp_path):
    _touch_frames(tmp_path / "clips" / "b", ["1.png", "2.png"])
    _touch_frames(tmp_path / "clips" / "a", ["1.png"])
    clips = discover_clips(tmp_path / "clips", "folders")
    assert [c.name for c in clips] == ["a", "b"] and clips[1].num_frames == 2 and clips[1].lr is None
    one = discover_clips(tmp_path / "clips" / "b", "folders")
    assert [c.name for c in one] == ["b"]
    assert detect_layout(tmp_path / "clips") == "folders"


def test_videos_layout(tmp_path):
    (tmp_path / "b.mp4").write_bytes(b"x")
    (tmp_path / "a.mkv").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    clips = discover_clips(tmp_path, "videos")
    assert [c.name for c in clips] == ["a", "b"] and clips[0].video == tmp_path / "a.mkv" and clips[0].gt is None
    assert discover_clips(tmp_path / "b.mp4", "auto")[0].video == tmp_path / "b.mp4"
    with pytest.raises(InputError, match="not a video file"):
        discover_clips(tmp_path / "notes.txt", "videos")


def test_subset_from_basicsr_meta_info(tmp_path):
    _touch_frames(tmp_path / "c1", ["1.png"])
    _touch_frames(tmp_path / "c2", ["1.png"])
    meta = tmp_path.parent / f"{tmp_path.name}_meta.txt"
    meta.write_text("c2 1 (4,4,3)\n# comment\n")
    assert read_name_list(meta) == ["c2"]
    assert [c.name for c in discover_clips(tmp_path, "folders", subset=meta)] == ["c2"]
    with pytest.raises(InputError, match="subset names clips not found in the dataset: zz"):
        discover_clips(tmp_path, "folders", subset=["zz"])


def test_missing_and_empty_roots_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="no such dataset folder") as exc:
        discover_clips(tmp_path / "nope", "vid4")
    assert "\n" not in str(exc.value) and str(tmp_path / "nope") in str(exc.value)
    with pytest.raises(InputError, match="no GT folder"):
        discover_clips(tmp_path, "vid4")
    with pytest.raises(InputError, match="no clip sub-folders"):
        discover_clips(tmp_path, "folders")
    (tmp_path / "empty_clip").mkdir()
    with pytest.raises(InputError, match="empty_clip: empty clip folder"):
        discover_clips(tmp_path, "folders")
    with pytest.raises(ConfigError, match="unknown dataset layout"):
        discover_clips(tmp_path, "div2k")


def test_clip_dataclass_defaults():
    c = Clip("x", None, None, video=Path("v.mp4"))
    assert c.num_frames is None and c.centers is None
    with pytest.raises(ValueError):
        c.center_list()


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
def test_shared_vimeo_and_set8_layouts():
    vimeo = discover_clips(SHARED / "video_hr" / "vimeo_septuplet", "vimeo", split="all")
    assert len(vimeo) == 16 and all(c.num_frames == 7 and c.centers == [3] and c.lr is None for c in vimeo)
    set8 = discover_clips(SHARED / "video_hr" / "set8", "folders")
    assert {c.name: c.num_frames for c in set8} == {"hypersmooth": 37, "motorbike": 32, "rafting": 29, "snowboard": 59}
