"""Many inputs: ``--input-list`` sharded over torchrun ranks (RANK / WORLD_SIZE, no process group)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_model

from srkit.cli import main
from srkit.errors import ConfigError
from srkit.infer.run import read_input_list, shard
from srkit.io.images import write_image
from srkit.models.checkpoint import save_model
from tests.media import make_frames, make_video

ROOT = Path(__file__).resolve().parents[1]


def test_shard_splits_every_item_once():
    items = [Path(f"v{i}") for i in range(7)]
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts == [[items[0], items[3], items[6]], [items[1], items[4]], [items[2], items[5]]]
    assert shard(items, 0, 1) == items
    with pytest.raises(ConfigError):
        shard(items, 3, 3)


def test_shard_reads_torchrun_env(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert shard([Path("a"), Path("b"), Path("c")]) == [Path("b")]


def test_input_list_parsing(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("# videos\nclips/a.mp4\n\n  /abs/b.mp4  \n")
    assert read_input_list(lst) == [tmp_path / "clips" / "a.mp4", Path("/abs/b.mp4")]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(Exception, match="empty"):
        read_input_list(tmp_path / "empty.txt")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    torch.manual_seed(0)
    model = make_tiny_model("edvr-m")
    save_model(model, d / "tiny.safetensors")
    make_video(d / "a.mp4", n_frames=6, size=(16, 16), audio=False)
    make_video(d / "b.mp4", n_frames=5, size=(16, 16), audio=False, seed=1)
    (d / "c").mkdir()
    for i, f in enumerate(make_frames(4, (16, 16), seed=2)):
        write_image(d / "c" / f"{i}.png", f)
    (d / "list.txt").write_text("a.mp4\nb.mp4\nc\n")
    return d


def test_input_list_in_one_process(inputs, tmp_path, capsys):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = main(["upscale", "--input-list", str(inputs / "list.txt"), "--output-dir", str(tmp_path),
                   "--weights", str(inputs / "tiny.safetensors"), "-q"])
    finally:
        torch.set_num_threads(old)
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4", "c"]
    assert len(list((tmp_path / "c").iterdir())) == 4
    rc = main(["upscale", "--input-list", str(inputs / "list.txt"), "--output-dir", str(tmp_path / "missing"),
               "--weights", str(inputs / "tiny.safetensors"), "-q"])
    assert rc != 0
    # A broken input is reported and skipped; the others are still restored; the exit code says so.
    bad = inputs / "bad_list.txt"
    bad.write_text("nope.mp4\nc\n")
    out = tmp_path / "second"
    out.mkdir()
    capsys.readouterr()
    rc = main(["upscale", "--input-list", str(bad), "--output-dir", str(out), "--weights",
               str(inputs / "tiny.safetensors"), "-q"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "nope.mp4: no such file" in err and "1 input(s) failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["c"]


@pytest.mark.slow
def test_torchrun_two_ranks_share_the_list(inputs, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not installed")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    p = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", "0", "-m", "srkit", "upscale",
                        "--input-list", str(inputs / "list.txt"), "--output-dir", str(tmp_path),
                        "--weights", str(inputs / "tiny.safetensors")],
                       capture_output=True, text=True, env=env, timeout=500, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4", "c"]
    # Each input was restored by exactly one rank (rank 0: a and c, rank 1: b), reported once.
    done = [ln for ln in p.stderr.splitlines() if " -> " in ln and " frames" in ln]
    assert len(done) == 3, p.stderr[-2000:]
    assert len(list((tmp_path / "c").iterdir())) == 4
    assert np.all([(tmp_path / n).stat().st_size > 0 for n in ("a.mp4", "b.mp4")])
