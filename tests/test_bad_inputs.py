"""Issue 13's battery: every bad or unusual input is a one-line refusal naming the file or option and
the cause (exit 2, no traceback, nothing at the output path, inputs untouched) or a correct result."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_model, tiny_overrides

from srkit.cli import main
from srkit.errors import ConfigError, InputError
from srkit.io.images import write_image
from srkit.models.checkpoint import save_model
from tests.media import make_frames

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def tiny_edvr():
    torch.manual_seed(0)
    return make_tiny_model("edvr-m", num_frame=3)


def tiny_udvd():
    torch.manual_seed(0)
    return make_tiny_model("udvd-x2")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs_weights")
    save_model(tiny_edvr(), d / "edvr.safetensors")
    save_model(tiny_udvd(), d / "udvd.safetensors")
    return {"edvr": d / "edvr.safetensors", "udvd": d / "udvd.safetensors"}


def srkit(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


def refused(rc: int, err: str, *needles: str) -> None:
    """Exit 2 and exactly one line, ``srkit: error: ...`` containing every needle."""
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("srkit: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


def frame_folder(path: Path, n: int = 3, size=(16, 12)) -> Path:
    path.mkdir(parents=True)
    for i, f in enumerate(make_frames(n, size, seed=1)):
        write_image(path / f"{i:05d}.png", f)
    return path


# ------------------------------------------------------------------------------------------- item 4
@pytest.mark.parametrize("fps", ["0", "-5", "nan", "inf"])
def test_upscale_fps_must_be_a_finite_positive_rate(capsys, tmp_path, weights, fps):
    frames = frame_folder(tmp_path / "frames")
    out = tmp_path / "out.mp4"
    rc, err = srkit(capsys, "upscale", frames, "-o", out, "--weights", weights["edvr"], "--fps", fps, "-q")
    refused(rc, err, "--fps must be a finite frame rate > 0", fps)
    assert not out.exists() and os.listdir(tmp_path) == ["frames"]


# ------------------------------------------------------------------------------------------- item 7
@pytest.mark.parametrize("command", [["upscale"], ["eval"], ["demo"], ["sweep", "x.png"], ["data", "pack", "a", "b"],
                                     ["data", "verify", "a"], ["data", "motion-rank", "a", "-o", "b"]])
def test_quiet_is_spelled_dash_q_everywhere(command):
    from srkit.cli import build_parser

    argv = [*command, "-q"]
    assert getattr(build_parser(argv).parse_args(argv), "quiet") is True


# ------------------------------------------------------------------------------------------- item 8
def test_upscale_model_bicubic_is_one_clear_line(capsys, tmp_path):
    frames = frame_folder(tmp_path / "frames")
    out = tmp_path / "out"
    rc, err = srkit(capsys, "upscale", frames, "-o", out, "--model", "bicubic")
    refused(rc, err, "--model bicubic is srkit eval's MATLAB-bicubic baseline")
    assert "random weights" not in err and not out.exists()
    rc, err = srkit(capsys, "upscale", frames, "-o", out, "--model", "edvr-mm")  # no weights warning first
    refused(rc, err, "unknown model 'edvr-mm'")
    assert not out.exists()


# ------------------------------------------------------------------------------------------- item 9
def test_subset_list_may_be_a_pipe(tmp_path):
    from srkit.data.layouts import discover_clips

    for clip in ("a", "b"):
        frame_folder(tmp_path / "data" / clip, n=1)
    r, w = os.pipe()
    os.write(w, b"b\n")
    os.close(w)
    try:
        clips = discover_clips(tmp_path / "data", "folders", subset=f"/dev/fd/{r}")
    finally:
        os.close(r)
    assert [c.name for c in clips] == ["b"]
    # The command line as a shell gives it: `srkit eval ... --subset <(echo b)`.
    r, w = os.pipe()
    os.write(w, b"b\n")
    os.close(w)
    try:
        rc = main(["eval", "--model", "bicubic", "--data", str(tmp_path / "data"), "--layout", "folders",
                   "--subset", f"/dev/fd/{r}", "--no-ssim", "-q"])
    finally:
        os.close(r)
    assert rc == 0
    with pytest.raises(InputError, match="list file is a folder"):
        discover_clips(tmp_path / "data", "folders", subset=tmp_path / "data")


# ------------------------------------------------------------------------------------------- item 10
def test_convert_refuses_to_write_over_its_input(capsys, tmp_path, weights):
    src = tmp_path / "m.safetensors"
    src.write_bytes(weights["edvr"].read_bytes())
    before = src.read_bytes()
    link = tmp_path / "link.safetensors"
    link.symlink_to(src)
    for out in (src, link):
        rc, err = srkit(capsys, "convert", src, out, "--overwrite")
        refused(rc, err, str(out), "output is the input")
    assert src.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["link.safetensors", "m.safetensors"]


# ------------------------------------------------------------------------------------------- item 11
@pytest.mark.parametrize("text,needle", [
    ("", "config is empty"),
    ("# nothing here\n", "config is empty"),
    ("name: x\ndata: {train: {kind: synthetic}}\n", "no model.name"),
    ("model: {name: edvr-m}\n", "no data.train"),
])
def test_train_config_needs_a_model_and_data(capsys, tmp_path, text, needle):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    rc, err = srkit(capsys, "train", cfg, "--set", f"output_dir={tmp_path / 'runs'}")
    refused(rc, err, str(cfg), needle)
    assert not (tmp_path / "runs").exists()


def test_train_config_model_and_data_may_come_from_set(tmp_path):
    from srkit.train.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("seed: 1\n")
    got = load_config(cfg, ["model.name=edvr-s", "data.train={kind: synthetic}"])
    assert got.model.name == "edvr-s" and got.data.train.kind == "synthetic"


def test_train_from_a_missing_earlier_run_says_which_run_to_train_first(capsys, tmp_path):
    """Item 20: EDVR's step 2 (edvr-m-reds) starts from step 1's checkpoint; without it, say so."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: edvr-m, init_from: runs/edvr-m-reds-wotsa/checkpoints/iter_00600000.pt}\n"
                   "data: {train: {kind: synthetic}}\n")
    rc, err = srkit(capsys, "train", cfg, "--set", f"output_dir={tmp_path / 'runs'}")
    refused(rc, err, "iter_00600000.pt", "model.init_from: file not found",
            "train that config first, e.g. srkit train edvr-m-reds-wotsa")


# ------------------------------------------------------------------------------------------- item 12
@pytest.mark.parametrize("option,value,needle", [
    ("--blur", "1e6", "--blur must be a Gaussian width in (0, 4] HR pixels"),
    ("--blur", "0", "--blur must be a Gaussian width in (0, 4]"),
    ("--blur2", "nan", "--blur2 must be a Gaussian width"),
    ("--angle", "inf", "--angle must be a finite number"),
    ("--noise", "-1", "noise level must be in 0..255"),
])
def test_upscale_degradation_options_are_range_checked(capsys, tmp_path, weights, option, value, needle):
    src = tmp_path / "in.png"
    write_image(src, make_frames(1, (12, 10))[0])
    before = src.read_bytes()
    out = tmp_path / "out.png"
    extra = ["--blur", "1"] if option in ("--blur2", "--angle") else []
    rc, err = srkit(capsys, "upscale", src, "-o", out, "--weights", weights["udvd"], *extra, option, value, "-q")
    refused(rc, err, needle)
    assert not out.exists() and src.read_bytes() == before


@pytest.mark.parametrize("codec,crf,ok", [("libx264", "1000", False), ("libx264", "-1", False),
                                          ("libx264", "nan", False), ("libx264", "51", True),
                                          ("libvpx-vp9", "63", True), ("libvpx-vp9", "64", False)])
def test_crf_is_checked_against_the_encoder_range(codec, crf, ok):
    from srkit.io.video import check_crf

    if ok:
        check_crf(codec, float(crf))
    else:
        with pytest.raises(ConfigError, match=rf"--crf {crf} is outside {codec}'s range 0\.\.\d+"):
            check_crf(codec, float(crf))


def test_upscale_crf_out_of_range_is_refused_before_any_work(capsys, tmp_path, weights):
    frames = frame_folder(tmp_path / "frames")
    out = tmp_path / "out.mp4"
    rc, err = srkit(capsys, "upscale", frames, "-o", out, "--weights", weights["edvr"], "--crf", "1000", "-q")
    refused(rc, err, "--crf 1000 is outside libx264's range 0..51")
    assert os.listdir(tmp_path) == ["frames"]


def test_sweep_blur_grid_is_range_checked(capsys, tmp_path, weights):
    src = tmp_path / "in.png"
    write_image(src, make_frames(1, (12, 10))[0])
    rc, err = srkit(capsys, "sweep", src, "--weights", weights["udvd"], "--blur", "1,9", "-o", tmp_path / "s.png")
    refused(rc, err, "--blur must be a Gaussian width in (0, 4]", "got 9")
    assert os.listdir(tmp_path) == ["in.png"]


# ------------------------------------------------------------------------------------------- items 14, 15
@pytest.mark.parametrize("bad,needle", [
    (lambda f: f.astype(np.float32), "must be in [0, 1] (0..255 data: divide by 255"),  # 0..255 floats
    (lambda f: f.astype(np.float32) * 257.0, "must be in [0, 1]"),  # 0..65535 floats
    (lambda f: np.where(f > 128, np.nan, f / 255.0).astype(np.float32), "NaN or infinite"),
    (lambda f: f.astype(np.int32), "frame must be uint8, uint16 or float"),
])
def test_upscale_frames_refuses_frames_out_of_range(bad, needle):
    from srkit.infer import upscale_frames

    frames = make_frames(3, (16, 12), seed=2)
    frames[1] = bad(frames[1])
    with pytest.raises(InputError) as exc:
        list(upscale_frames(frames, tiny_edvr(), device="cpu"))
    msg = str(exc.value)
    assert msg.startswith("frame 1: ") and needle in msg and "\n" not in msg


def test_upscale_frames_accepts_floats_in_range_with_resampling_overshoot():
    from srkit.infer import upscale_frames

    frames = [f.astype(np.float32) / 255.0 for f in make_frames(3, (16, 12), seed=2)]
    frames[0] = frames[0] * 1.1 - 0.05  # bicubic-like overshoot of real [0, 1] data
    # SRMD's unclipped noise at its highest level (75/255), as UDVD's evaluation feeds it.
    frames[1] = frames[1] + np.random.default_rng(0).normal(0, 75 / 255, frames[1].shape).astype(np.float32)
    out = list(upscale_frames(frames, tiny_edvr(), device="cpu"))
    assert len(out) == 3 and all(np.isfinite(o).all() for o in out)


# ------------------------------------------------------------------------------------------- item 16
def test_api_condition_noise_is_validated_like_the_cli(tmp_path):
    import srkit
    from srkit.data.conditions import udvd_condition

    src = tmp_path / "in.png"
    write_image(src, make_frames(1, (12, 10))[0])
    good = udvd_condition(1, 1, blur=1.0, noise=10)[:, 0, 0]
    for noise in (-1.0, 300.0, np.nan):
        bad = good.copy()
        bad[-1] = noise / 255.0
        with pytest.raises(ConfigError) as exc:
            srkit.upscale(src, tmp_path / "out.png", tiny_udvd(), condition=bad, device="cpu", quiet=True)
        assert "noise level must be in 0..255" in str(exc.value) or "NaN" in str(exc.value)
        with pytest.raises(ConfigError):
            next(srkit.upscale_frames([make_frames(1, (12, 10))[0]], tiny_udvd(), device="cpu",
                                      condition=lambda h, w, b=bad: np.broadcast_to(b[:, None, None], (16, h, w))))
    assert sorted(os.listdir(tmp_path)) == ["in.png"]
    # The edges of the range pass (255 / 255 * 255 is not exactly 255 in float32).
    top = good.copy()
    top[-1] = np.float32(255) / np.float32(255)
    assert next(srkit.upscale_frames([make_frames(1, (12, 10))[0]], tiny_udvd(), device="cpu", condition=top)).shape == (
        20, 24, 3)


# ------------------------------------------------------------------------------------------- items 1, 2, 3
class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _code_running_files(d: Path) -> dict[str, Path]:
    """Checkpoints that would run code when unpickled, in every pickle container torch or Python writes."""
    import pickle

    marker = d / "pwned"
    payload = {"params": {"conv_first.weight": torch.zeros(1)}, "x": _Exploit(marker)}
    files = {"zip": d / "zip.pth", "legacy": d / "legacy.pth", "plain": d / "plain.pth"}
    torch.save(payload, files["zip"])
    torch.save(payload, files["legacy"], _use_new_zipfile_serialization=False)
    with open(files["plain"], "wb") as fh:  # pickle.dump: protocol 4/5 with FRAME opcodes
        # (no tensor: pickle.dump'd tensors import torch.storage._load_from_bytes, named first)
        pickle.dump({"params": {"conv_first.weight": [0.0]}, "x": _Exploit(marker)}, fh,
                    protocol=pickle.HIGHEST_PROTOCOL)
    return files


def test_pickles_that_run_code_are_refused_in_every_container(capsys, tmp_path):
    from srkit.models.checkpoint import load_model

    files = _code_running_files(tmp_path)
    for kind, path in files.items():
        before = path.read_bytes()
        with pytest.raises(Exception) as exc:
            load_model(path)
        assert type(exc.value).__name__ == "CheckpointError"
        msg = str(exc.value)
        assert msg == (f"{path}: refused: this pickle needs to run code (posix.system) to load; srkit only loads "
                       "plain tensor checkpoints (safetensors, or torch.save of tensors/dicts), and nothing in it "
                       "was executed"), (kind, msg)
        image = tmp_path / "in.png"
        write_image(image, make_frames(1, (12, 10))[0])
        for argv in (["convert", path, tmp_path / "o.safetensors"], ["upscale", image, "-o", tmp_path / "o.png",
                                                                      "--weights", path]):
            rc, err = srkit(capsys, *argv)
            refused(rc, err, f"{path}: refused: this pickle needs to run code (posix.system)")
            assert "UserWarning" not in err and "weights_only" not in err
        assert path.read_bytes() == before
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "o.safetensors").exists()


def test_plain_pickles_without_code_and_junk_say_what_they_are(tmp_path):
    import pickle

    from srkit.errors import CheckpointError
    from srkit.models.checkpoint import load_model

    plain = tmp_path / "plain.pth"
    with open(plain, "wb") as fh:
        pickle.dump({"a": 1}, fh, protocol=4)
    with pytest.raises(CheckpointError, match=r"not a readable checkpoint \(a plain pickle of protocol 4, not a "
                                              r"torch.save file"):
        load_model(plain)
    tensors = tmp_path / "tensors.pth"  # pickle.dump of tensors: loading it runs torch.load(weights_only=False)
    with open(tensors, "wb") as fh:
        pickle.dump({"a": torch.zeros(2)}, fh)
    with pytest.raises(CheckpointError, match=r"refused: this pickle needs to run code \(torch.storage._load_from_bytes\)"):
        load_model(tensors)


def _tiny_train_cfg(tmp_path: Path, name: str, model: dict) -> Path:
    import yaml

    data = {"name": name, "output_dir": str(tmp_path / "runs"), "seed": 1, "threads": 1, "model": model,
            "data": {"train": {"kind": "synthetic", "gt_size": 32, "length": 4}, "batch_size": 2, "num_workers": 0},
            "train": {"total_iters": 2, "schedule": {"periods": [2], "restart_weights": [1]}},
            "log": {"every": 1, "tensorboard": False, "progress": "off"}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


EDVR_TINY = {"name": "edvr-m", "overrides": tiny_overrides("edvr", num_frame=3)}  # the network of tiny_edvr()


@pytest.mark.parametrize("kind", ["random", "zip", "legacy", "plain"])
def test_train_resume_refuses_unreadable_and_code_running_files(capsys, tmp_path, kind):
    d = tmp_path / "files"
    d.mkdir()
    if kind == "random":
        bad = d / "random.pt"
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
        needle = "not a readable checkpoint"
    else:
        bad = _code_running_files(d)[kind]
        needle = "refused: this pickle needs to run code (posix.system)"
    cfg = _tiny_train_cfg(tmp_path, "r", EDVR_TINY)
    rc, err = srkit(capsys, "train", cfg, "--resume", bad)
    refused(rc, err, str(bad), needle)
    assert "weights_only" not in err and "Warning" not in err
    assert not (tmp_path / "runs").exists()  # no empty run folder (nor its parent) left behind
    assert not (d / "pwned").exists()


def test_train_resume_from_another_network_names_the_file_and_both_networks(capsys, tmp_path):
    from srkit.train.config import load_config
    from srkit.train.trainer import Trainer

    trainer = Trainer(load_config(_tiny_train_cfg(tmp_path, "edvr", EDVR_TINY)))
    try:
        ckpt = trainer.save()
    finally:
        trainer.close()
    udvd = {"name": "udvd-x2", "overrides": tiny_overrides("udvd")}
    cfg = _tiny_train_cfg(tmp_path, "udvd", udvd)
    rc, err = srkit(capsys, "train", cfg, "--resume", ckpt)
    refused(rc, err, f"{ckpt}: is a checkpoint of edvr-m but the config trains udvd-x2 (model.name)")
    assert not (tmp_path / "runs" / "udvd").exists()
    wider = {**EDVR_TINY, "overrides": {**EDVR_TINY["overrides"], "num_feat": 16}}
    rc, err = srkit(capsys, "train", _tiny_train_cfg(tmp_path, "wider", wider), "--resume", ckpt)
    refused(rc, err, f"{ckpt}: its edvr-m network differs from the config's (model.overrides?): ",
            "of another shape (conv_first.weight [8, 3, 3, 3] vs [16, 3, 3, 3]")
    assert not (tmp_path / "runs" / "wider").exists()
    rc, err = srkit(capsys, "train", cfg, "--resume", tmp_path / "edvr.yaml")  # not a checkpoint at all
    refused(rc, err, "edvr.yaml: not a readable checkpoint")


# ------------------------------------------------------------------------------------------- item 5
def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (the data is a few bytes: decoding must not start)."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_huge_image_header_names_the_file_and_the_limit(capsys, tmp_path, weights):
    from srkit.io.images import MAX_IMAGE_PIXELS, read_image

    huge = _png_header_only(tmp_path / "huge.png", 100000, 100000)
    limit = f"above the limit of {MAX_IMAGE_PIXELS} pixels"
    with pytest.raises(InputError, match=rf"huge.png: image is 100000x100000 \(10000 megapixels\), {limit}"):
        read_image(huge)
    out = tmp_path / "o.png"
    rc, err = srkit(capsys, "upscale", huge, "-o", out, "--weights", weights["udvd"], "--blur", "1", "-q")
    refused(rc, err, f"{huge}: image is 100000x100000", limit)
    # In a folder: an image folder (image model) and a frame folder (video model), first frame or later.
    for first in (True, False):
        folder = tmp_path / f"folder{first}"
        frame_folder(folder, n=2)
        _png_header_only(folder / ("00000.png" if first else "00001.png"), 100000, 100000)
        for w, extra in ((weights["udvd"], ["--blur", "1"]), (weights["edvr"], [])):
            out = tmp_path / "out_folder"
            rc, err = srkit(capsys, "upscale", folder, "-o", out, "--weights", w, *extra, "-q")
            refused(rc, err, f"{folder / ('00000.png' if first else '00001.png')}: image is 100000x100000", limit)
            if first or w == weights["edvr"]:  # a video model checks every frame's size before any output
                assert not out.exists()
            else:  # an image folder is restored image by image: the good one is done (--resume skips it)
                assert sorted(os.listdir(out)) == ["00000.png"]
                shutil.rmtree(out)


# ------------------------------------------------------------------------------------------- item 6
@pytest.mark.parametrize("free,cause", [(1 << 20, "the disk is full (1 MiB free)"), (10 << 30, "the write failed")])
def test_data_pack_write_failure_says_where_and_why(capsys, tmp_path, monkeypatch, free, cause):
    import collections

    import lmdb

    from srkit.data import lmdb_pack

    src = tmp_path / "clips"
    frame_folder(src / "c1", n=2)
    before = {p: p.read_bytes() for p in src.rglob("*.png")}

    def failing_batch(env, batch, report):
        raise lmdb.Error("mdb_txn_commit: Input/output error")

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(lmdb_pack, "_write_batch", failing_batch)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(free * 2, free, free))
    out = tmp_path / "out.lmdb"
    rc, err = srkit(capsys, "data", "pack", src, out, "--layout", "folders", "-q")
    refused(rc, err, f"{out}.partial: cannot write the pack: {cause} (mdb_txn_commit: Input/output error)",
            "run the same command with --resume")
    assert not out.exists() and {p: p.read_bytes() for p in src.rglob("*.png")} == before


# ------------------------------------------------------------------------------------------- item 13
def test_rgba_frames_through_a_video_model_warn_once(capsys, tmp_path, weights, caplog):
    folder = tmp_path / "rgba"
    folder.mkdir()
    for i, f in enumerate(make_frames(3, (16, 12), seed=4)):
        write_image(folder / f"{i:05d}.png", f, alpha=np.full(f.shape[:2], 128, np.uint8))
    out = tmp_path / "out"
    rc, err = srkit(capsys, "upscale", folder, "-o", out, "--weights", weights["edvr"], "-q")
    assert rc == 0, err
    assert err.count("the alpha channel is dropped") == 1 and f"{folder}: the alpha channel is dropped" in err
    assert len(list(out.iterdir())) == 3
    from srkit.infer import upscale_frames

    rgba = [np.dstack([f, np.full(f.shape[:2], 255, np.uint8)]) for f in make_frames(3, (16, 12), seed=4)]
    with caplog.at_level("WARNING", logger="srkit.infer.engine"):
        got = list(upscale_frames(rgba, tiny_edvr(), device="cpu"))
    assert len(got) == 3 and got[0].shape[2] == 3
    assert sum("alpha channel (RGBA): it is dropped" in r.getMessage() for r in caplog.records) == 1


# ------------------------------------------------------------------------------------------- item 17
def test_stale_video_temporaries_are_removed_only_when_their_writer_is_gone(capsys, tmp_path, weights):
    import signal
    import subprocess
    import sys

    from srkit.io.atomic import TMP_PREFIX, writer_gone
    from srkit.io.video import VideoWriter

    out = tmp_path / "out.mp4"
    script = ("import sys, time, numpy as np\nfrom srkit.io.video import VideoWriter\n"
              "w = VideoWriter(sys.argv[1], width=64, height=48, fps=25)\n"
              "w.write(np.zeros((48, 64, 3), np.uint8))\nprint('ready', flush=True)\ntime.sleep(120)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        (tmp,) = tmp_path.glob(TMP_PREFIX + "out-*.mp4")
        assert writer_gone(tmp) is False
        # Another writer of the same output while the first one lives: its temporary stays.
        VideoWriter(out, width=64, height=48, fps=25).abort()
        assert tmp.exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert tmp.exists() and writer_gone(tmp) is True  # what SIGKILL leaves behind
    frames = frame_folder(tmp_path / "frames")
    rc, err = srkit(capsys, "upscale", frames, "-o", out, "--weights", weights["edvr"], "-q")
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "out.mp4"]


def test_stale_image_temporaries_are_removed_by_the_next_run(capsys, tmp_path, weights):
    """Item 17 for image outputs: a killed run's half-written images (nobody holds their lock) go."""
    from srkit.io.atomic import TMP_PREFIX

    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", make_frames(1, (12, 10))[0])
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{TMP_PREFIX}a-abcd1234.png").write_bytes(b"half an image")
    rc, err = srkit(capsys, "upscale", src, "-o", out, "--weights", weights["udvd"], "--blur", "1", "-q")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]
    single = tmp_path / "single.png"
    (tmp_path / f"{TMP_PREFIX}single-abcd1234.png").write_bytes(b"half an image")
    rc, err = srkit(capsys, "upscale", src / "a.png", "-o", single, "--weights", weights["udvd"], "--blur", "1", "-q")
    assert rc == 0, err
    assert not list(tmp_path.glob(TMP_PREFIX + "*"))


# ------------------------------------------------------------------------------------------- item 18
def test_ctrl_c_in_a_frame_folder_upscale_says_resume_continues_it(capsys, tmp_path, weights, monkeypatch):
    from srkit.io.frames import FrameFolderWriter

    frames = frame_folder(tmp_path / "frames", n=4)
    out = tmp_path / "out"
    real = FrameFolderWriter.write

    def interrupted(self, rgb, index=None):
        if index == 2:
            raise KeyboardInterrupt
        return real(self, rgb, index)

    monkeypatch.setattr(FrameFolderWriter, "write", interrupted)
    rc, err = srkit(capsys, "upscale", frames, "-o", out, "--weights", weights["edvr"], "-q")
    assert rc == 130 and err.strip() == (f"srkit: interrupted: 2 frame(s) are complete in {out}; run the same "
                                         "command with --resume to continue"), err
    monkeypatch.setattr(FrameFolderWriter, "write", real)
    rc, err = srkit(capsys, "upscale", frames, "-o", out, "--weights", weights["edvr"], "--resume", "-q")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in frames.iterdir())  # names kept (item 21)


def test_options_checked_before_anything_is_created(capsys, tmp_path, weights):
    """Item 12: --tile-overlap without --tile, and eval options, are checked before any output exists."""
    src = tmp_path / "in.png"
    write_image(src, make_frames(1, (12, 10))[0])
    rc, err = srkit(capsys, "upscale", src, "-o", tmp_path / "o.png", "--weights", weights["udvd"], "--blur", "1",
                    "--tile-overlap", "-1")
    refused(rc, err, "--tile-overlap must be >= 0, got -1")
    rc, err = srkit(capsys, "eval", "--model", "bicubic", "--data", tmp_path, "--crop-size", "-3", "--crops",
                    "--out", tmp_path / "report")
    refused(rc, err, "crop size must be >= 8, got -3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]
