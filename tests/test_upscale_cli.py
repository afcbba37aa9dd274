"""``srkit upscale`` end to end on tiny files: kinds, timestamps/audio, resume, safety and bad inputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from conftest import make_tiny_model

from srkit.cli import main
from srkit.infer.engine import upscale_frames
from srkit.io.images import from_float, read_image, write_image
from srkit.io.video import open_video, probe_video
from srkit.models import create_model
from srkit.models.checkpoint import save_model
from tests.media import make_frames, make_video

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("upscale_assets")
    torch.manual_seed(0)
    edvr = make_tiny_model("edvr-m")
    save_model(edvr, d / "edvr_tiny.safetensors")
    udvd = make_tiny_model("udvd-x2")
    save_model(udvd, d / "udvd_tiny.safetensors")
    clip = make_video(d / "clip.mp4", n_frames=9, size=(32, 24), fps=25, audio=True, vfr=True)
    frames = d / "frames"
    frames.mkdir()
    for i, f in enumerate(make_frames(7, (32, 24), seed=3)):
        write_image(frames / f"f{i}.png", f)
    return {"dir": d, "edvr": d / "edvr_tiny.safetensors", "udvd": d / "udvd_tiny.safetensors", "clip": clip,
            "frames": frames}


def run(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["upscale", *map(str, args)])
    return rc, capsys.readouterr().err


def one_error_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("srkit: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


def test_video_to_video_keeps_timestamps_audio_and_pixels(assets, capsys, tmp_path):
    out = tmp_path / "out.mkv"
    rc, err = run(capsys, assets["clip"].path, "-o", out, "--weights", assets["edvr"], "--lossless", "-q")
    assert rc == 0, err
    src, dst = probe_video(assets["clip"].path), probe_video(out)
    assert (dst.width, dst.height) == (4 * src.width, 4 * src.height)
    assert dst.has_audio
    with open_video(assets["clip"].path) as r:
        inp = list(r)
    with open_video(out) as r:
        got = list(r)
    assert len(got) == len(inp) == 9
    # Timestamps (VFR) survive: same frame times relative to the first frame (Matroska may shift the
    # whole stream by a constant start offset).
    assert [round(f.time - got[0].time, 3) for f in got] == [round(f.time - inp[0].time, 3) for f in inp]
    # Lossless output = the engine's frames on the decoded input, rounded to 8 bits.
    model = make_tiny_model("edvr-m")
    from srkit.models.checkpoint import load_weights

    load_weights(model, assets["edvr"])
    ref = [from_float(o, np.uint8) for o in upscale_frames([f.rgb for f in inp], model, device="cpu")]
    assert max(int(np.abs(a.rgb.astype(int) - b).max()) for a, b in zip(got, ref)) <= 1


def test_rotated_video_comes_out_upright(assets, capsys, tmp_path):
    src = make_video(tmp_path / "rot.mp4", n_frames=6, size=(32, 24), audio=False, rotation=90)
    info = probe_video(src.path)
    assert (info.width, info.height) == (24, 32)  # the reader applies the display rotation
    rc, err = run(capsys, src.path, "-o", tmp_path / "o.mp4", "--weights", assets["edvr"], "-q")
    assert rc == 0, err
    out = probe_video(tmp_path / "o.mp4")
    assert (out.width, out.height, out.source_rotation, out.num_frames) == (96, 128, 0, 6)


def test_video_to_frames_resume_is_identical(assets, capsys, tmp_path):
    out = tmp_path / "frames_out"
    rc, err = run(capsys, assets["clip"].path, "-o", out, "--weights", assets["edvr"], "-q")
    assert rc == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:08d}.png" for i in range(9)]
    full = {n: (out / n).read_bytes() for n in names}
    assert read_image(out / names[0]).rgb.shape == (96, 128, 3)
    # An interrupted run: the last 4 frames missing, a leftover temporary file.
    for n in names[5:]:
        (out / n).unlink()
    (out / ".srkit-tmp-00000005-x.png").write_bytes(b"partial")
    rc, err = run(capsys, assets["clip"].path, "-o", out, "--weights", assets["edvr"], "-q")
    assert rc != 0
    one_error_line(err, "already holds 5 frame")
    rc, err = run(capsys, assets["clip"].path, "-o", out, "--weights", assets["edvr"], "--resume")
    assert rc == 0, err
    assert "4 frames, 5 already done" in err
    assert sorted(p.name for p in out.iterdir()) == names
    for n in names:
        assert (out / n).read_bytes() == full[n], n  # resumed frames identical to the uninterrupted run
    rc, err = run(capsys, assets["clip"].path, "-o", out, "--weights", assets["edvr"], "-q", "--overwrite")
    assert rc == 0, err


def test_frame_folder_to_frames_and_video(assets, capsys, tmp_path):
    rc, err = run(capsys, assets["frames"], "-o", tmp_path / "o", "--weights", assets["edvr"], "-q")
    assert rc == 0, err
    assert len(list((tmp_path / "o").iterdir())) == 7
    rc, err = run(capsys, assets["frames"], "-o", tmp_path / "o.mp4", "--weights", assets["edvr"], "-q",
                  "--fps", "10")
    assert rc == 0, err
    info = probe_video(tmp_path / "o.mp4")
    assert (info.width, info.height, info.num_frames, info.fps) == (128, 96, 7, 10)


def test_image_model_keeps_depth_gray_and_alpha(assets, capsys, tmp_path):
    rng = np.random.default_rng(0)
    rgba16 = tmp_path / "in16.png"
    rgb = rng.integers(0, 65536, (12, 10, 3), dtype=np.uint16)
    alpha = np.tile(np.linspace(0, 65535, 10).astype(np.uint16), (12, 1))
    write_image(rgba16, rgb, alpha)
    out = tmp_path / "out16.png"
    rc, err = run(capsys, rgba16, "-o", out, "--weights", assets["udvd"], "--blur", "1.2", "--noise", "5", "-q")
    assert rc == 0, err
    img = read_image(out)
    assert img.rgb.dtype == np.uint16 and img.rgb.shape == (24, 20, 3)
    assert img.alpha is not None and img.alpha.shape == (24, 20)
    assert img.alpha[:, 0].max() < 6000 and img.alpha[:, -1].min() > 59000  # the ramp, upscaled
    # A gray folder: outputs stay one-channel, same names (JPEG -> PNG).
    folder = tmp_path / "grays"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"g{i}.jpg"), rng.integers(0, 256, (9, 11), dtype=np.uint8))
    rc, err = run(capsys, folder, "-o", tmp_path / "gout", "--weights", assets["udvd"], "--blur", "2", "-q")
    assert rc == 0, err
    outs = sorted(p.name for p in (tmp_path / "gout").iterdir())
    assert outs == ["g0.png", "g1.png"]
    g = read_image(tmp_path / "gout" / "g0.png")
    assert g.grayscale and g.rgb.shape == (18, 22, 1)
    rc, err = run(capsys, rgba16, "-o", tmp_path / "x.png", "--weights", assets["udvd"], "-q")
    assert rc != 0
    one_error_line(err, "blur")


def test_bad_inputs_one_line_errors(assets, capsys, tmp_path):
    w = ["--weights", assets["edvr"], "-q"]
    rc, err = run(capsys, tmp_path / "missing.mp4", "-o", tmp_path / "o.mp4", *w)
    assert rc != 0
    one_error_line(err, "missing.mp4", "no such file")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    rc, err = run(capsys, text, "-o", tmp_path / "o.mp4", *w)
    assert rc != 0
    one_error_line(err, "notes.mp4")
    trunc = tmp_path / "trunc.mp4"
    trunc.write_bytes(assets["clip"].path.read_bytes()[:600])
    rc, err = run(capsys, trunc, "-o", tmp_path / "o.mp4", *w)
    assert rc != 0
    one_error_line(err, "trunc.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    rc, err = run(capsys, empty, "-o", tmp_path / "o.mp4", *w)
    assert rc != 0
    one_error_line(err, "empty.mp4")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_image(mixed / "a.png", np.zeros((24, 32, 3), np.uint8))
    write_image(mixed / "b.png", np.zeros((20, 32, 3), np.uint8))
    rc, err = run(capsys, mixed, "-o", tmp_path / "mo", *w)
    assert rc != 0
    one_error_line(err, "b.png", "32x20")
    nofolder = tmp_path / "nothing_here"
    nofolder.mkdir()
    rc, err = run(capsys, nofolder, "-o", tmp_path / "no", *w)
    assert rc != 0
    one_error_line(err, "nothing_here", "no images")
    img = tmp_path / "one.png"
    write_image(img, np.zeros((24, 32, 3), np.uint8))
    rc, err = run(capsys, img, "-o", tmp_path / "one_x4.png", *w)
    assert rc != 0
    one_error_line(err, "one.png", "single image", "5 frames")
    rc, err = run(capsys, assets["clip"].path, "-o", tmp_path / "o.mp4", "--weights", assets["udvd"], "--blur", "1")
    assert rc != 0
    one_error_line(err, "clip.mp4", "is a video", "single images")
    rc, err = run(capsys, assets["clip"].path, "-o", tmp_path / "o.mp4", *w, "--blur", "1.6", "--noise", "5")
    assert rc != 0
    one_error_line(err, "takes no degradation maps")
    assert not list(tmp_path.glob("*.mp4")) or {p.name for p in tmp_path.glob("*.mp4")} == {
        "notes.mp4", "trunc.mp4", "empty.mp4"}


def test_output_safety(assets, capsys, tmp_path):
    w = ["--weights", assets["edvr"], "-q"]
    rc, err = run(capsys, assets["clip"].path, "-o", tmp_path / "nope" / "o.mp4", *w)
    assert rc != 0
    one_error_line(err, "nope", "does not exist")
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"keep me")
    rc, err = run(capsys, assets["clip"].path, "-o", existing, *w)
    assert rc != 0
    one_error_line(err, "exists.mp4", "--overwrite")
    assert existing.read_bytes() == b"keep me"
    rc, err = run(capsys, assets["clip"].path, "-o", assets["clip"].path, *w, "--overwrite")
    assert rc != 0
    one_error_line(err, "is the input")
    rc, err = run(capsys, assets["frames"], "-o", assets["frames"], *w)
    assert rc != 0
    one_error_line(err, "is the input")
    rc, err = run(capsys, assets["clip"].path, "-o", tmp_path / "o.mp4", *w, "--resume")
    assert rc != 0
    one_error_line(err, "--resume")
    if os.geteuid() != 0:  # root writes anywhere: the read-only case cannot be staged
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            rc, err = run(capsys, assets["clip"].path, "-o", ro / "o.mp4", *w)
            assert rc != 0
            one_error_line(err, "not writable")
        finally:
            ro.chmod(0o755)


def test_failure_midway_leaves_no_partial_output(assets, capsys, tmp_path, monkeypatch):
    import srkit.infer.run as run_mod

    real = run_mod._run_engine

    def failing(frames, opts, **kw):
        for i, f in enumerate(real(frames, opts, **kw)):
            if i == 3:
                raise KeyboardInterrupt
            yield f

    monkeypatch.setattr(run_mod, "_run_engine", failing)
    rc, err = run(capsys, assets["clip"].path, "-o", tmp_path / "o.mp4", "--weights", assets["edvr"], "-q")
    assert rc == 130 and "interrupted" in err
    rc, err = run(capsys, assets["clip"].path, "-o", tmp_path / "fr", "--weights", assets["edvr"], "-q")
    assert rc == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fr"]  # no video, no temporary file
    assert sorted(p.name for p in (tmp_path / "fr").iterdir()) == [f"{i:08d}.png" for i in range(3)]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("SRKIT_DEBUG", None)
    return env


def test_subprocess_error_has_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "srkit", "upscale", str(tmp_path / "missing.mp4"), "-o",
                        str(tmp_path / "o.mp4"), "-q"], capture_output=True, text=True, env=_env(), timeout=300)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    one_error_line(p.stderr, "missing.mp4")


@pytest.mark.slow
def test_sigterm_removes_temporary_video(assets, tmp_path):
    long = make_video(tmp_path / "long.mp4", n_frames=150, size=(32, 24), fps=25, audio=False)
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "srkit", "upscale", str(long.path), "-o", str(out), "--weights",
                             str(assets["edvr"]), "-q"], env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list(tmp_path.glob(".srkit-tmp-out*")):
            time.sleep(0.05)
        assert list(tmp_path.glob(".srkit-tmp-out*")), "the encoder never started"
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4"]


def test_a_single_image_without_model_options_uses_the_shipped_image_model(capsys, tmp_path):
    """No --model/--weights: an image goes to udvd-s-x4 (a video to edvr-s), told "no blur, noise 0"
    unless --blur/--noise say otherwise; the lines printed say which model ran and what it assumed."""
    from srkit.data.conditions import DEFAULT_BLUR, udvd_condition

    rgb = make_frames(1, (20, 16), seed=5)[0]
    src = tmp_path / "photo.png"
    write_image(src, rgb)
    model = create_model("udvd-s-x4", pretrained=True)
    for extra, noise in (((), 0.0), (("--noise", "10"), 10.0)):
        out = tmp_path / f"photo_x4_{noise:g}.png"
        rc, err = run(capsys, src, "-o", out, *extra)
        assert rc == 0, err
        assert "using udvd-s-x4, srkit's shipped x4 image model" in err
        assert f"assuming blur {DEFAULT_BLUR} (none beyond the downscaling) and noise {noise:g}" in err
        expected = next(upscale_frames([rgb], model, device="cpu",
                                       condition=lambda h, w, n=noise: udvd_condition(h, w, blur=DEFAULT_BLUR, noise=n)))
        got = read_image(out).rgb
        assert got.shape == (64, 80, 3)
        assert np.abs(got.astype(np.float64) - from_float(expected, np.uint8)).max() <= 1
    # An explicit --blur is used as given (no "assuming" line).
    rc, err = run(capsys, src, "-o", tmp_path / "b.png", "--blur", "1.6")
    assert rc == 0 and "assuming" not in err and "using udvd-s-x4" in err


@pytest.mark.native_bf16_default
def test_upscale_defaults_to_bf16_only_where_the_cpu_computes_it_natively(assets, capsys, tmp_path, monkeypatch):
    from srkit.commands import upscale as upscale_cmd

    seen = []
    real = upscale_cmd.default_precision
    for native in (True, False):
        monkeypatch.setattr("srkit.utils.device.cpu_has_native_bf16", lambda n=native: n)
        assert real("cpu") == ("bf16" if native else "fp32")
        # The restoration itself is not what this test checks: record the precision it would run in.
        monkeypatch.setattr("srkit.infer.run.upscale", lambda inp, out, *a, **kw: seen.append(kw["restore_options"].precision) or
                            SimpleNamespace(input=inp, output=out, frames=0, kind="video", skipped=0, seconds=0.0, fps=0.0))
        rc, err = run(capsys, assets["clip"].path, "-o", tmp_path / f"o{native}.mp4", "--weights", assets["edvr"])
        assert rc == 0, err
        assert ("srkit: bf16 autocast (this CPU computes bf16 natively" in err) == native
        rc, err = run(capsys, assets["clip"].path, "-o", tmp_path / f"p{native}.mp4", "--weights", assets["edvr"],
                      "--precision", "fp32")
        assert rc == 0 and "bf16 autocast" not in err
    assert seen == ["bf16", "fp32", "fp32", "fp32"]
    # Bad options and inputs are checked before those lines are printed: one error line, even on a
    # native-bf16 CPU with the shipped default model.
    monkeypatch.setattr("srkit.utils.device.cpu_has_native_bf16", lambda: True)
    for argv in ((assets["clip"].path, "-o", tmp_path / "x.mp4", "--fps", "0"),
                 (tmp_path / "missing.mp4", "-o", tmp_path / "y.mp4")):
        rc, err = run(capsys, *argv)
        assert rc == 2
        one_error_line(err)


def test_numbered_frame_folders_keep_their_names(assets, capsys, tmp_path):
    """Issue 13 item 21: 00001.png ... in -> 00001.png ... out (Set8/REDS naming kept), also on --resume;
    names that are not one consecutive numbered sequence are renumbered from 00000000.png."""
    from srkit.infer.run import numbered_pattern

    src = tmp_path / "clip"
    src.mkdir()
    for i, f in enumerate(make_frames(5, (32, 24), seed=4), start=1):
        write_image(src / f"{i:05d}.png", f)
    out = tmp_path / "out"
    rc, err = run(capsys, src, "-o", out, "--weights", assets["edvr"], "-q")
    assert rc == 0, err
    assert sorted(os.listdir(out)) == [f"{i:05d}.png" for i in range(1, 6)]
    full = {n: (out / n).read_bytes() for n in os.listdir(out)}
    for n in ("00004.png", "00005.png"):
        (out / n).unlink()
    rc, err = run(capsys, src, "-o", out, "--weights", assets["edvr"], "-q", "--resume")
    assert rc == 0, err
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == full
    assert numbered_pattern([Path("0009.png"), Path("0010.png")]) == ("{:04d}.png", 9)
    assert numbered_pattern([Path("1.png"), Path("2.png"), Path("10.png")]) is None  # widths differ
    assert numbered_pattern([Path("001.png"), Path("003.png")]) is None  # a gap
    assert numbered_pattern([Path("f0.png")]) is None
