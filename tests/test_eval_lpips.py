"""`srkit eval --lpips`: the optional lpips package, its errors, and LPIPS in every report.

Nothing is downloaded: the real package is never needed (a fake ``lpips`` module is injected into
``sys.modules``; the missing package is simulated the same way).
"""

from __future__ import annotations

import csv
import json
import sys
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from test_eval import _make_vid4 as make_vid4
import torch

from srkit.cli import main
from srkit.data.imresize import imresize
from srkit.io.images import read_rgb

pytestmark = pytest.mark.usefixtures("one_thread")

CLIPS = ("calendar", "city")


def _make_vid4(root: Path, frames: int = 3) -> Path:
    return make_vid4(root, frames=frames, size=(32, 40))


def _fake_lpips(calls: list, *, fail: Exception | None = None) -> types.ModuleType:
    """A stand-in for the lpips package: distance = mean |in0 - in1| (a known function of the inputs)."""
    mod = types.ModuleType("lpips")

    class LPIPS(torch.nn.Module):
        def __init__(self, pretrained=True, net="alex", version="0.1", verbose=True, **kwargs):
            super().__init__()
            if fail is not None:
                raise fail
            calls.append(("init", net, verbose))

        def forward(self, in0, in1, normalize=False):
            calls.append(("forward", in0.clone(), in1.clone(), normalize))
            return (in0 - in1).abs().mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1) as lpips

    mod.LPIPS = LPIPS
    return mod


def _vid4_args(root: Path, *extra: str) -> list[str]:
    return ["eval", "--model", "bicubic", "--data", str(root), "--layout", "vid4", "--quiet", *extra]


def test_lpips_without_the_package_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # `import lpips` raises ImportError
    root = _make_vid4(tmp_path / "vid4")
    out = tmp_path / "report"
    code = main(_vid4_args(root, "--lpips", "--out", str(out)))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == "srkit: error: --lpips needs the lpips package: pip install 'srkit[lpips]'", err
    assert not out.exists()  # failed before any work or output
    # Without --lpips nothing needs the package.
    assert main(_vid4_args(root, "--frames", "1")) == 0


def test_lpips_backbone_weights_missing_offline_names_the_file_and_cache(tmp_path, capsys, monkeypatch):
    calls: list = []
    fake = _fake_lpips(calls, fail=urllib.error.URLError("[Errno -3] Temporary failure in name resolution"))
    monkeypatch.setitem(sys.modules, "lpips", fake)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    root = _make_vid4(tmp_path / "vid4")
    assert main(_vid4_args(root, "--lpips")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "alexnet-owt-7be5be79.pth" in err and str(tmp_path / "torch-home" / "hub" / "checkpoints") in err
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in err and "TORCH_HOME" in err


def test_lpips_per_frame_and_per_clip_in_every_report(tmp_path, capsys, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "lpips", _fake_lpips(calls))
    root = _make_vid4(tmp_path / "vid4")
    out = tmp_path / "report"
    # Y-channel PSNR/SSIM; LPIPS stays RGB. The crop border applies to LPIPS as to the others.
    assert main(_vid4_args(root, "--lpips", "--y-channel", "--crop-border", "2", "--out", str(out))) == 0
    table = capsys.readouterr().out
    inits = [c for c in calls if c[0] == "init"]
    assert inits == [("init", "alex", False)]  # one model, AlexNet, built once
    forwards = [c for c in calls if c[0] == "forward"]
    assert len(forwards) == 6
    for _, a, b, normalize in forwards:
        assert normalize is False and a.shape == b.shape == (1, 3, 28, 36) and a.dtype == torch.float32
        assert a.min() >= -1 and a.max() <= 1 and b.min() >= -1 and b.max() <= 1

    report = json.loads((out / "eval.json").read_text())
    assert report["options"]["lpips"] is True
    clip_means = []
    for clip in CLIPS:
        expected = []
        for p in sorted((root / "GT" / clip).iterdir()):
            g = read_rgb(p)
            sr = imresize(imresize(g, 0.25), 4.0)  # the bicubic model's uint8 output
            a = sr[2:-2, 2:-2].astype(np.float64) / 255 * 2 - 1
            b = g[2:-2, 2:-2].astype(np.float64) / 255 * 2 - 1
            expected.append(np.abs(a - b).mean())
        entry = report["clips"][clip]
        np.testing.assert_allclose(entry["per_frame"]["lpips"], expected, rtol=1e-5)
        assert entry["mean"]["lpips"] == pytest.approx(np.mean(expected), rel=1e-5)
        clip_means.append(np.mean(expected))
        row = next(line for line in table.splitlines() if line.startswith(clip))
        assert row.split()[-1] == f"{np.mean(expected):.4f}"  # the LPIPS column, 4 decimals
    assert report["mean"]["lpips"] == pytest.approx(np.mean(clip_means), rel=1e-5)
    header = table.splitlines()[0].split()
    assert header == ["clip", "frames", "PSNR", "SSIM", "LPIPS"]
    assert "LPIPS alex (RGB)" in table
    frames = list(csv.DictReader((out / "per_frame.csv").open()))
    assert list(frames[0]) == ["clip", "frame", "psnr", "ssim", "lpips"] and len(frames) == 6
    assert float(frames[4]["lpips"]) == pytest.approx(report["clips"]["city"]["per_frame"]["lpips"][1], abs=1e-6)
    rows = list(csv.DictReader((out / "per_clip.csv").open()))
    assert [r["clip"] for r in rows] == ["calendar", "city", "MEAN"]
    assert float(rows[-1]["lpips"]) == pytest.approx(np.mean(clip_means), abs=1e-6)


def test_lpips_from_a_config_file_and_absent_by_default(tmp_path, capsys, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "lpips", _fake_lpips(calls))
    root = _make_vid4(tmp_path / "vid4", frames=1)
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("lpips: true\n")
    assert main(_vid4_args(root, "--config", str(cfg))) == 0
    assert "LPIPS" in capsys.readouterr().out
    assert main(_vid4_args(root)) == 0
    assert "LPIPS" not in capsys.readouterr().out
