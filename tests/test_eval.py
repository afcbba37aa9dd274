"""`srkit eval` on a tiny Vid4-layout fixture: reports exist and their numbers equal direct recomputation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from srkit.cli import main
from srkit.data.degrade import make_degradation
from srkit.data.imresize import imresize
from srkit.eval import EvalOptions, evaluate, write_report
from srkit.io.images import from_float, read_rgb
from srkit.metrics import psnr, ssim

CLIPS = ("calendar", "city")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def _make_vid4(root: Path, *, with_lr: bool = False, frames: int = 4, size=(40, 48)) -> Path:
    rng = np.random.default_rng(0)
    for c, clip in enumerate(CLIPS):
        gt_dir = root / "GT" / clip
        gt_dir.mkdir(parents=True)
        base = cv2.GaussianBlur(rng.integers(0, 256, size + (3,), dtype=np.uint8), (5, 5), 1.0 + c)
        for i in range(frames):
            frame = np.roll(base, i, axis=1)  # a moving clip
            cv2.imwrite(str(gt_dir / f"{i:08d}.png"), frame)
            if with_lr:
                lr_dir = root / "BIx4" / clip
                lr_dir.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(lr_dir / f"{i:08d}.png"), imresize(frame, 0.25))
    return root


def _gt(root: Path, clip: str) -> list[np.ndarray]:
    return [read_rgb(p) for p in sorted((root / "GT" / clip).iterdir())]


def test_cli_bicubic_writes_reports_matching_direct_metrics(tmp_path, capsys):
    root = _make_vid4(tmp_path / "vid4")
    out = tmp_path / "report"
    code = main(["eval", "--model", "bicubic", "--data", str(root), "--layout", "vid4", "--y-channel",
                 "--crop-border", "2", "--out", str(out), "--crops", "--quiet"])
    assert code == 0
    table = capsys.readouterr().out
    assert "calendar" in table and "city" in table and "mean" in table
    for name in ("eval.json", "per_frame.csv", "per_clip.csv", "psnr_per_frame.png"):
        assert (out / name).stat().st_size > 0
    crops = sorted((out / "crops").glob("*.png"))
    assert [p.name for p in crops] == ["calendar_00000002.png", "city_00000002.png"]
    assert read_rgb(crops[0]).shape[1] > 2 * 128  # two magnified panels side by side

    report = json.loads((out / "eval.json").read_text())
    clip_means = []
    for clip in CLIPS:
        # recompute: MATLAB bicubic down on uint8, MATLAB bicubic up, uint8, Y, crop 2
        ps, ss = [], []
        for g in _gt(root, clip):
            sr = imresize(imresize(g, 0.25), 4.0)
            ps.append(psnr(sr, g, crop_border=2, y_channel=True))
            ss.append(ssim(sr, g, crop_border=2, y_channel=True))
        entry = report["clips"][clip]
        np.testing.assert_allclose(entry["per_frame"]["psnr"], ps, atol=1e-9)
        np.testing.assert_allclose(entry["per_frame"]["ssim"], ss, atol=1e-9)
        assert entry["mean"]["psnr"] == pytest.approx(np.mean(ps), abs=1e-9)
        assert report["lr_source"][clip] == "synthesised"
        clip_means.append(np.mean(ps))
        assert f"{np.mean(ps):.3f}" in table
    assert report["mean"]["psnr"] == pytest.approx(np.mean(clip_means), abs=1e-9)
    rows = list(csv.DictReader((out / "per_clip.csv").open()))
    assert [r["clip"] for r in rows] == ["calendar", "city", "MEAN"]
    assert float(rows[-1]["psnr"]) == pytest.approx(np.mean(clip_means), abs=1e-5)
    frames = list(csv.DictReader((out / "per_frame.csv").open()))
    assert len(frames) == 8 and float(frames[0]["psnr"]) == pytest.approx(report["clips"]["calendar"]["per_frame"]["psnr"][0], abs=1e-5)

    # a second run refuses to replace the report (one line, exit code 2) unless --overwrite
    code = main(["eval", "--data", str(root), "--layout", "vid4", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "exists" in err and "Traceback" not in err


def test_lr_from_disk_equals_synthesised_bi(tmp_path):
    """BI synthesis on uint8 is MATLAB-exact, so disk LR (made by MATLAB-imresize) gives the same scores."""
    disk = _make_vid4(tmp_path / "a", with_lr=True)
    synth = _make_vid4(tmp_path / "b")
    r1 = evaluate(EvalOptions(data=str(disk), layout="vid4", quiet=True, frames=2))
    r2 = evaluate(EvalOptions(data=str(synth), layout="vid4", quiet=True, frames=2))
    assert {c.lr_source for c in r1.clips} == {"disk"} and {c.lr_source for c in r2.clips} == {"synthesised"}
    assert r1.scores.to_dict() == r2.scores.to_dict()
    assert len(r1.scores.clips["city"].frames) == 2


def test_bd_synthesis_uses_blur_option(tmp_path):
    from srkit.data.degrade import bd_downsample

    root = _make_vid4(tmp_path / "vid4", frames=1)
    r = evaluate(EvalOptions(data=str(root), layout="vid4", degradation="bd", blur=1.2, quiet=True, ssim=False))
    g = _gt(root, "calendar")[0]
    sr = imresize(bd_downsample(g, 4, 1.2), 4.0)  # BD on uint8 (quantised LR), then MATLAB bicubic up
    assert r.scores.clips["calendar"].metrics["psnr"][0] == pytest.approx(psnr(sr, g), abs=1e-9)
    assert r.options.degradation == "BD" and "ssim" not in r.scores.metric_names
    # BasicSR's MATLAB BD grid on request (block centres, 12x12 kernel at sigma 1.6)
    m = evaluate(EvalOptions(data=str(root), layout="vid4", degradation="BD", bd_variant="matlab", quiet=True,
                             ssim=False))
    sr = imresize(bd_downsample(g, 4, variant="matlab"), 4.0)
    assert m.scores.clips["calendar"].metrics["psnr"][0] == pytest.approx(psnr(sr, g), abs=1e-9)
    assert m.scores.mean("psnr") != pytest.approx(r.scores.mean("psnr"), abs=1e-3)
    from srkit.eval import format_table

    assert "BD (matlab grid)" in format_table(m)


def test_tiny_edvr_scores_equal_direct_inference(tmp_path, tiny_model):
    import torch

    from srkit.infer import upscale_frames

    root = _make_vid4(tmp_path / "vid4", frames=3, size=(32, 36))
    torch.manual_seed(0)
    net = tiny_model("edvr-m").eval()
    opts = EvalOptions(data=str(root), layout="vid4", model="edvr-m", quiet=True, device="cpu", crops=True)
    report = evaluate(opts, model=net)
    files = write_report(report, tmp_path / "out")
    assert files["json"].is_file() and (tmp_path / "out" / "crops" / "city_00000001.png").is_file()
    data = json.loads(files["json"].read_text())
    assert data["model"] == "edvr-m"
    for clip in CLIPS:
        gt = _gt(root, clip)
        lr = [imresize(g, 0.25) for g in gt]
        outs = [from_float(o) for o in upscale_frames(lr, net, device="cpu")]
        expect = [psnr(o, g) for o, g in zip(outs, gt)]
        np.testing.assert_allclose(data["clips"][clip]["per_frame"]["psnr"], expect, atol=1e-9)
        assert data["clips"][clip]["per_frame"]["ssim"][0] == pytest.approx(ssim(outs[0], gt[0]), abs=1e-9)


def test_cli_weights_file_alone_rebuilds_the_network(tmp_path, capsys, tiny_model):
    import torch

    from srkit.models.checkpoint import save_model

    root = _make_vid4(tmp_path / "vid4", frames=2, size=(24, 28))
    torch.manual_seed(1)
    net = tiny_model("edvr-m").eval()
    ckpt = save_model(net, tmp_path / "tiny.safetensors")
    out = tmp_path / "rep"
    assert main(["eval", "--weights", str(ckpt), "--data", str(root), "--layout", "vid4", "--device", "cpu",
                 "--out", str(out), "--quiet", "--no-ssim"]) == 0
    data = json.loads((out / "eval.json").read_text())
    assert data["model"] == "edvr-m"
    direct = evaluate(EvalOptions(data=str(root), layout="vid4", device="cpu", quiet=True, ssim=False), model=net)
    assert data["mean"]["psnr"] == pytest.approx(direct.scores.mean("psnr"), abs=1e-9)
    assert "edvr-m" in capsys.readouterr().out


def test_srmd_synthesis_is_seeded_per_clip_and_conditions_udvd(tmp_path, tiny_model):
    root = _make_vid4(tmp_path / "vid4", frames=2, size=(24, 28))
    base = dict(data=str(root), layout="vid4", degradation="SRMD", blur=1.2, noise=10.0, quiet=True)
    a = evaluate(EvalOptions(**base))
    b = evaluate(EvalOptions(**base, subset=None))
    assert a.scores.to_dict() == b.scores.to_dict()
    c = evaluate(EvalOptions(**{**base, "seed": 1}))
    assert a.scores.mean("psnr") != c.scores.mean("psnr")
    # the bicubic score equals a direct recomputation with the same per-clip generator
    import zlib

    g = _gt(root, "city")
    rng = np.random.default_rng([0, zlib.crc32(b"city")])
    lr = make_degradation("SRMD", 4, blur=1.2, noise=10.0)(g, rng).lr
    sr = [from_float(imresize(x, 4.0)) for x in lr]
    np.testing.assert_allclose(a.scores.clips["city"].metrics["psnr"], [psnr(s, t) for s, t in zip(sr, g)], atol=1e-9)

    import torch

    torch.manual_seed(0)
    udvd = tiny_model("udvd-x4").eval()
    r = evaluate(EvalOptions(**{**base, "model": "udvd-x4", "device": "cpu"}), model=udvd)
    assert np.isfinite(r.scores.mean("psnr"))


def _mean_row(table: str) -> list[str]:
    return next(line.split() for line in table.splitlines() if line.startswith("mean"))


def test_config_file_and_command_line_precedence(tmp_path, capsys):
    root = _make_vid4(tmp_path / "vid4", frames=2)
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"data: {root}\nlayout: vid4\ny-channel: true\nframes: 1\nquiet: true\n")
    assert main(["eval", "--config", str(cfg), "--no-ssim"]) == 0
    table = capsys.readouterr().out
    assert "SSIM" not in table and ", Y," in table and "LR synthesised" in table
    assert _mean_row(table)[:2] == ["mean", "2"]  # frames: 1 from the config, 2 clips
    assert main(["eval", "--config", str(cfg), "--frames", "2"]) == 0
    assert _mean_row(capsys.readouterr().out)[:2] == ["mean", "4"]  # the command line wins
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: x\nframez: 3\n")
    assert main(["eval", "--config", str(bad)]) == 2
    assert "bad.yaml: framez: unknown key; did you mean 'frames'?" in capsys.readouterr().err
    bad.write_text("data: x\nframes: many\n")
    assert main(["eval", "--config", str(bad)]) == 2
    assert "bad.yaml: frames: expected an integer, got 'many'" in capsys.readouterr().err
    assert main(["eval", "--data", str(root), "--layout", "vid4", "--crops"]) == 2
    assert "--crops needs --out" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path / "missing"), "--layout", "vid4"]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["eval", "--data", str(root), "--layout", "vid4", "--model", "edvr-m", "--scale", "2", "--quiet"]) == 2
    assert "--scale is 2" in capsys.readouterr().err
    assert main(["eval", "--data", str(root), "--layout", "vid4", "--degradation", "blur_bicubic", "--quiet"]) == 2
    assert "no LR frames on disk for degradation 'blur_bicubic'" in capsys.readouterr().err


@pytest.mark.shared_data
def test_vimeo_scores_only_the_centre_frame_on_real_septuplets(shared_data, tmp_path):
    root = shared_data / "video_hr" / "vimeo_septuplet"
    subset = tmp_path / "list.txt"
    subset.write_text("00001/0002\n00002/0003\n")
    r = evaluate(EvalOptions(data=str(root), layout="vimeo", split="all", subset=str(subset), y_channel=True, quiet=True))
    assert list(r.scores.clips) == ["00001/0002", "00002/0003"]
    for name, clip in r.scores.clips.items():
        assert clip.frames == ["im4"]  # 7 frames in, only the middle one scored (EDVR/BasicSR protocol)
        gt = read_rgb(root / "sequences" / name / "im4.png")
        sr = imresize(imresize(gt, 0.25), 4.0)
        assert clip.metrics["psnr"][0] == pytest.approx(psnr(sr, gt, y_channel=True), abs=1e-9)
        assert 25 < clip.metrics["psnr"][0] < 45


def test_crop_border_too_large_is_a_one_line_config_error(tmp_path, capsys):
    root = _make_vid4(tmp_path / "vid4", frames=1, size=(24, 28))  # 24x28 GT
    assert main(["eval", "--data", str(root), "--layout", "vid4", "--crop-border", "12", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--crop-border 12 leaves nothing of clip calendar's 28x24 frames" in err
    assert "ValueError" not in err and len(err.strip().splitlines()) == 1
    # 24 - 2*7 = 10 rows left: PSNR is fine, SSIM's 11x11 window is not
    assert main(["eval", "--data", str(root), "--layout", "vid4", "--crop-border", "7", "--quiet"]) == 2
    assert "smaller than SSIM's 11x11 window" in capsys.readouterr().err
    assert main(["eval", "--data", str(root), "--layout", "vid4", "--crop-border", "7", "--no-ssim", "--quiet"]) == 0


def test_preset_without_weights_is_flagged_untrained(tmp_path, capsys):
    root = _make_vid4(tmp_path / "vid4", frames=1, size=(16, 16))
    out = tmp_path / "rep"
    assert main(["eval", "--data", str(root), "--layout", "vid4", "--model", "udvd-x4", "--device", "cpu",
                 "--no-ssim", "--quiet", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "no --weights, udvd-x4 is untrained" in cap.err
    assert "udvd-x4 (UNTRAINED: no weights)" in cap.out
    assert json.loads((out / "eval.json").read_text())["untrained"] is True
    assert main(["eval", "--data", str(root), "--layout", "vid4", "--no-ssim", "--quiet"]) == 0
    cap = capsys.readouterr()
    assert "untrained" not in cap.err.lower() + cap.out.lower()


def test_padding_option_reaches_the_video_engine(tmp_path, monkeypatch, tiny_model):
    import torch

    from srkit.infer.engine import Restorer

    seen = {}

    def fake_stream(self, frames, *, condition=None, start_frame=0):  # records, restores with MATLAB bicubic
        seen["padding"] = self.options.padding
        for f in list(frames)[start_frame:]:
            yield imresize(f.astype(np.float32) / 255, 4.0)

    monkeypatch.setattr(Restorer, "stream", fake_stream)
    root = _make_vid4(tmp_path / "vid4", frames=2, size=(16, 16))
    torch.manual_seed(0)
    net = tiny_model("udvd-x4").eval()
    evaluate(EvalOptions(data=str(root), layout="vid4", padding="replicate", quiet=True, ssim=False), model=net)
    assert seen["padding"] == "replicate"
    with pytest.raises(Exception, match="--padding must be one of"):
        evaluate(EvalOptions(data=str(root), layout="vid4", padding="mirror", quiet=True))


def test_frames_limit_keeps_real_temporal_context(tmp_path, tiny_model):
    import torch

    root = _make_vid4(tmp_path / "vid4", frames=5, size=(16, 20))
    torch.manual_seed(3)
    net = tiny_model("edvr-m").eval()
    base = dict(data=str(root), layout="vid4", model="edvr-m", quiet=True, device="cpu", ssim=False)
    full = evaluate(EvalOptions(**base), model=net)
    part = evaluate(EvalOptions(**base, frames=2), model=net)
    for clip in CLIPS:
        got = part.scores.clips[clip].metrics["psnr"]
        assert len(got) == 2
        # frame 1's 5-frame window holds real frames 2 and 3, exactly as in the full-clip run
        np.testing.assert_array_equal(got, full.scores.clips[clip].metrics["psnr"][:2])


def test_repeat_centre_feeds_each_window_as_its_centre_frame_repeated(tmp_path, capsys, tiny_model):
    import torch

    root = _make_vid4(tmp_path / "vid4", frames=4, size=(32, 36))
    torch.manual_seed(0)
    net = tiny_model("edvr-m").eval()
    opts = EvalOptions(data=str(root), layout="vid4", quiet=True, device="cpu", repeat_centre=True, frames=3)
    report = evaluate(opts, model=net)
    normal = evaluate(EvalOptions(data=str(root), layout="vid4", quiet=True, device="cpu", frames=3), model=net)
    for clip in CLIPS:
        gt = _gt(root, clip)[:3]
        expect = []
        for g in gt:
            lr = torch.from_numpy(imresize(g, 0.25).astype(np.float32) / 255).permute(2, 0, 1)
            with torch.no_grad():
                out = net(lr.expand(5, -1, -1, -1)[None])[0].clamp(0, 1).permute(1, 2, 0).numpy()
            expect.append(psnr(from_float(out), g))
        got = report.scores.clips[clip].metrics["psnr"]
        np.testing.assert_allclose(got, expect, atol=0.02)  # float rounding of two execution paths
        # ...and it differs from the normal run, whose windows hold the moving neighbours.
        assert got != normal.scores.clips[clip].metrics["psnr"]
    from srkit.eval import format_table

    assert "centre frame repeated" in format_table(report)


@pytest.mark.parametrize("options,needle", [
    (dict(degradation="SRMD", blur=5.0), r"--blur must be a Gaussian width in \(0, 4\]"),
    (dict(degradation="srmd", blur=float("nan")), "--blur must be positive"),
    (dict(degradation="BI", noise=300.0), r"--noise must be in 0\.\.255"),
])
def test_eval_options_are_range_checked(options, needle):
    from srkit.errors import ConfigError
    from srkit.eval import EvalOptions

    with pytest.raises(ConfigError, match=needle):
        EvalOptions(data="x", **options).validate()
