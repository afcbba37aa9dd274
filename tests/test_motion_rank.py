"""Motion ranking: synthetic clips with known motion rank correctly; the subset list feeds eval's --subset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from srkit.cli import main
from srkit.data.layouts import discover_clips
from srkit.data.motion import ClipMotion, mean_flow_magnitude, rank_clips, select_top, write_subset
from srkit.errors import ConfigError, InputError, OutputError
from srkit.io.images import write_image

H, W = 64, 80


def _texture(seed: int) -> np.ndarray:
    """A smooth random texture (Farnebäck needs structure to track)."""
    import cv2

    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((H + 64, W + 64)).astype(np.float32), (0, 0), 2.0)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    return (tex * 255).astype(np.uint8)


def _moving_square(n: int, speed: int, seed: int = 0) -> list[np.ndarray]:
    """A textured 24x24 square moving ``speed`` px/frame to the right over a static textured background."""
    bg = _texture(seed)[:H, :W]
    patch = _texture(seed + 100)[:24, :24] // 2 + 128
    frames = []
    for i in range(n):
        f = bg.copy()
        x = 4 + i * speed
        f[20:44, x:x + 24] = patch
        frames.append(np.repeat(f[:, :, None], 3, axis=2))
    return frames


def _panning(n: int, speed: int, seed: int = 0) -> list[np.ndarray]:
    """The whole frame pans ``speed`` px/frame (global motion)."""
    tex = _texture(seed)
    return [np.repeat(tex[16:16 + H, 8 + i * speed: 8 + i * speed + W, None], 3, axis=2) for i in range(n)]


def _write_clip(folder: Path, frames: list[np.ndarray], pattern: str = "{:05d}.png") -> None:
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        write_image(folder / pattern.format(i + 1), f)


@pytest.fixture
def folders_root(tmp_path: Path) -> Path:
    root = tmp_path / "clips"
    _write_clip(root / "static", _moving_square(5, 0))
    _write_clip(root / "square_slow", _moving_square(5, 2, seed=1))
    _write_clip(root / "square_fast", _moving_square(5, 6, seed=2))
    _write_clip(root / "pan", _panning(5, 3, seed=3))
    return root


def test_flow_magnitude_of_known_motion():
    still, pairs = mean_flow_magnitude(_moving_square(4, 0))
    assert pairs == 3 and still < 0.05
    # Global pan of 3 px/frame: the mean magnitude over the frame is close to 3 (borders excepted).
    pan, _ = mean_flow_magnitude(_panning(4, 3))
    assert 2.4 < pan < 3.3
    # The moving square covers 24*24/(64*80) = 11% of the frame: mean about 0.11 * speed.
    fast, _ = mean_flow_magnitude(_moving_square(4, 6))
    slow, _ = mean_flow_magnitude(_moving_square(4, 2))
    assert still < slow < fast
    # Shrinking for speed keeps the score in full-resolution pixels.
    pan_small, _ = mean_flow_magnitude(_panning(4, 3), max_side=40)
    assert abs(pan_small - pan) < 0.6


def test_rank_clips_orders_by_motion(folders_root):
    clips = discover_clips(folders_root, "folders")
    seen = []
    ranked = rank_clips(clips, progress=lambda done, s: seen.append((done, s.name)))
    assert [r.name for r in ranked] == ["pan", "square_fast", "square_slow", "static"]
    assert [d for d, _ in seen] == [1, 2, 3, 4]
    assert ranked[-1].mean_flow < 0.05 and all(r.pairs == 4 for r in ranked)
    two = rank_clips(clips, max_frames=2)
    assert all(r.pairs == 1 for r in two)


def test_select_top_fraction_and_count():
    ranked = [ClipMotion(str(i), 10.0 - i, 6) for i in range(10)]
    assert [c.name for c in select_top(ranked, 0.1)] == ["0"]
    assert [c.name for c in select_top(ranked, 0.25)] == ["0", "1", "2"]  # ceil
    assert len(select_top(ranked, 0.01)) == 1  # at least one clip
    assert len(select_top(ranked, 1.0)) == 10 and len(select_top(ranked, 4)) == 4 and len(select_top(ranked, 50)) == 10
    with pytest.raises(ConfigError):
        select_top(ranked, 0)
    with pytest.raises(ConfigError):
        select_top(ranked, 2.5)


def test_subset_file_is_read_back_by_discover_clips(tmp_path):
    # Vimeo-90K layout: clip names are "00001/0001"; the written list selects them in eval.
    root = tmp_path / "vimeo"
    speeds = {"00001/0001": 0, "00001/0002": 5, "00002/0001": 2}
    for name, speed in speeds.items():
        _write_clip(root / "sequences" / name, _moving_square(7, speed, seed=speed), "im{}.png")
    out = tmp_path / "fast.txt"
    rc = main(["data", "motion-rank", str(root), "--layout", "vimeo", "--top", "2", "-o", str(out), "--quiet"])
    assert rc == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("#")
    chosen = discover_clips(root, "vimeo", split="all", subset=out)
    assert [c.name for c in chosen] == ["00001/0002", "00002/0001"]
    assert all(c.centers == [3] for c in chosen)


def test_cli_writes_atomically_and_refuses_to_overwrite(folders_root, tmp_path, capsys):
    out = tmp_path / "subset.txt"
    assert main(["data", "motion-rank", str(folders_root), "--layout", "folders", "--top", "0.5",
                 "-o", str(out), "--quiet"]) == 0
    names = [line.split()[0] for line in out.read_text().splitlines() if not line.startswith("#")]
    assert names == ["pan", "square_fast"]
    assert not list(tmp_path.glob(".*subset*"))  # no temporary left behind
    before = out.read_bytes()
    capsys.readouterr()
    rc = main(["data", "motion-rank", str(folders_root), "--layout", "folders", "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc != 0 and "output exists" in err and str(out) in err and err.count("\n") == 1
    assert out.read_bytes() == before
    assert main(["data", "motion-rank", str(folders_root), "--layout", "folders", "--top", "1", "-o", str(out),
                 "--overwrite"]) == 0
    table = capsys.readouterr().out
    assert table.index("pan") < table.index("square_fast") < table.index("static")


def test_errors_name_the_clip(tmp_path, capsys):
    root = tmp_path / "one"
    _write_clip(root / "single", _moving_square(1, 0))
    with pytest.raises(InputError, match="single has fewer than 2 frames"):
        rank_clips(discover_clips(root, "folders"))
    bad = tmp_path / "bad"
    _write_clip(bad / "clip", _moving_square(2, 1))
    (bad / "clip" / "00002.png").write_bytes(b"not a png")
    rc = main(["data", "motion-rank", str(bad), "--layout", "folders", "-o", str(tmp_path / "o.txt"), "--quiet"])
    err = capsys.readouterr().err
    assert rc != 0 and "00002.png" in err and err.count("\n") == 1
    assert not (tmp_path / "o.txt").exists()
    with pytest.raises(OutputError):
        write_subset(tmp_path / "missing_dir" / "x.txt", [ClipMotion("a", 1.0, 1)])


def test_help_mentions_eval_subset(capsys):
    with pytest.raises(SystemExit):
        main(["data", "motion-rank", "--help"])
    text = capsys.readouterr().out
    assert "--subset" in text and "Farneback" in text and "--top" in text


def _tiny_vimeo(root: Path) -> dict[str, int]:
    """A Vimeo-90K septuplet layout: 20 test sequences (sep_testlist.txt) and 2 train ones, with known
    motion. The fastest clip of all is a TRAIN clip: the test split must exclude it."""
    speeds = {f"0000{1 + i // 10}/{i % 10 + 1:04d}": (i % 3) for i in range(20)}  # slow test clips (0-2 px)
    speeds["00001/0004"], speeds["00002/0007"] = 7, 5  # the two fastest test clips
    test = sorted(speeds)
    train = {"00003/0001": 8, "00003/0002": 0}
    for name, speed in {**speeds, **train}.items():
        _write_clip(root / "sequences" / name, _moving_square(7, speed, seed=speed), "im{}.png")
    (root / "sep_testlist.txt").write_text("\n".join(test) + "\n")
    (root / "sep_trainlist.txt").write_text("\n".join(train) + "\n")
    return speeds


def test_vimeo_motion_preset_is_the_top_6_percent_of_the_test_split(tmp_path, capsys):
    root = tmp_path / "vimeo_septuplet"
    _tiny_vimeo(root)
    out = tmp_path / "vimeo_motion.txt"
    assert main(["data", "motion-rank", str(root), "--preset", "vimeo-motion", "-o", str(out), "--quiet"]) == 0
    names = [line.split()[0] for line in out.read_text().splitlines() if not line.startswith("#")]
    # 6% of 20 test clips is 1.2: at least that share, i.e. 2 clips (largest flow first); the faster train
    # clip 00003/0001 is not in the test split.
    assert sorted(names) == ["00001/0004", "00002/0007"]
    header = out.read_text().splitlines()[0]
    assert "vimeo-motion" in header and "split test" in header and "top 0.06" in header
    # Exactly the explicit options it names.
    explicit = tmp_path / "explicit.txt"
    assert main(["data", "motion-rank", str(root), "--layout", "vimeo", "--split", "test", "--top", "0.06",
                 "-o", str(explicit), "--quiet"]) == 0
    assert [ln.split()[0] for ln in explicit.read_text().splitlines() if not ln.startswith("#")] == names
    # The list feeds eval's --subset: those two septuplets, scored on their centre frame.
    chosen = discover_clips(root, "vimeo", split="test", subset=out)
    assert [c.name for c in chosen] == names and all(c.centers == [3] for c in chosen)
    # Options that contradict the preset are refused (the file would not be Vimeo-90K-Motion); the same
    # values are accepted.
    capsys.readouterr()
    assert main(["data", "motion-rank", str(root), "--preset", "vimeo-motion", "--top", "0.1",
                 "-o", str(tmp_path / "x.txt"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--preset vimeo-motion means --top 0.06; drop --top 0.1" in err and err.count("\n") == 1
    assert main(["data", "motion-rank", str(root), "--preset", "vimeo-motion", "--split", "all",
                 "-o", str(tmp_path / "x.txt"), "--quiet"]) == 2
    assert "means --split test" in capsys.readouterr().err
    assert main(["data", "motion-rank", str(root), "--preset", "vimeo-motion", "--layout", "vimeo", "--split", "test",
                 "-o", str(tmp_path / "y.txt"), "--quiet"]) == 0
    assert not (tmp_path / "x.txt").exists()


def test_help_documents_the_vimeo_motion_preset(capsys):
    with pytest.raises(SystemExit):
        main(["data", "motion-rank", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--preset {vimeo-motion}" in text and "Vimeo-90K-Motion" in text
    assert "--layout vimeo --split test --top 0.06" in text
