"""``srkit demo``: runs with no data and no network, writes decodable outputs and a score table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from srkit.cli import main
from srkit.io.images import read_rgb
from srkit.io.video import open_video


def test_demo_writes_clips_panel_and_scores(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--frames", "4", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "bicubic" in printed and "edvr-s" in printed and "dB over bicubic" in printed
    summary = json.loads((out / "demo.json").read_text())
    assert summary["model"] == "edvr-s" and summary["frames"] == 4
    for method in ("bicubic", "edvr-s"):
        assert len(summary["per_frame"][method]["psnr"]) == 4
        assert 15 < summary["mean"][method]["psnr"] < 60 and 0 < summary["mean"][method]["ssim"] <= 1
    sizes = {}
    for name in ("lr", "bicubic", "edvr-s", "original"):
        with open_video(out / f"{name}.mp4") as reader:
            frames = [f.rgb for f in reader]
        assert len(frames) == 4, name
        sizes[name] = frames[0].shape
    h, w = sizes["lr"][:2]
    assert sizes["bicubic"] == sizes["edvr-s"] == sizes["original"] == (4 * h, 4 * w, 3)
    assert read_rgb(out / "lr.png").shape == sizes["lr"]  # the middle LR frame, lossless
    panel = read_rgb(out / "comparison.png")
    assert panel.shape[1] >= 4 * 4 * w and panel.dtype == np.uint8
    assert not list(out.glob(".srkit-tmp-*"))


def test_demo_refreshes_its_own_folder_and_refuses_a_foreign_one(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--frames", "1", "--out", str(out), "-q"]) == 0
    assert main(["demo", "--frames", "1", "--out", str(out), "-q"]) == 0  # an earlier demo: refreshed
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert main(["demo", "--frames", "1", "--out", str(foreign), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an earlier demo's output" in err[0] and str(foreign) in err[0]
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert main(["demo", "--model", "edvr-m", "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "needs a preset with shipped weights" in capsys.readouterr().err
