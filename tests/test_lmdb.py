"""LMDB packs: pixel-exact round trip, resume after interruption, map growth, verification, CLI."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import lmdb
import numpy as np
import pytest

from srkit import cli
from srkit.data.layouts import Clip
from srkit.data.lmdb_pack import pack, pack_records
from srkit.data.lmdb_store import LmdbReader, png_shape, read_meta, verify
from srkit.errors import InputError, OutputError
from srkit.io.images import encode_image, read_rgb, write_image


def _noise_clips(root: Path, clips=("a", "b"), frames=5, size=(12, 16), seed=0) -> None:
    rng = np.random.default_rng(seed)
    for c in clips:
        (root / c).mkdir(parents=True)
        for i in range(frames):
            write_image(root / c / f"{i:08d}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def test_round_trip_is_pixel_exact_and_basicsr_shaped(tmp_path):
    src = tmp_path / "src"
    _noise_clips(src)
    # A 16-bit and a grayscale frame: bit depth kept, gray stored as RGB like every other frame.
    write_image(src / "b" / "00000005.png", (np.arange(12 * 16 * 3).reshape(12, 16, 3) * 97).astype(np.uint16))
    write_image(src / "b" / "00000006.png", np.full((12, 16, 1), 7, np.uint8))
    out = tmp_path / "db.lmdb"
    report = pack(src, out, layout="folders", compress_level=3)
    assert report.total == report.written == 12 and report.skipped == 0
    assert not (tmp_path / "db.lmdb.partial").exists()
    lines = (out / "meta_info.txt").read_text().splitlines()
    assert lines[0] == "a/00000000.png (12,16,3) 3" and len(lines) == 12
    reader = LmdbReader(out)
    assert reader.clips() == {"a": [f"a/{i:08d}" for i in range(5)], "b": [f"b/{i:08d}" for i in range(7)]}
    for key in reader.keys:
        clip, stem = key.split("/")
        expected = read_rgb(src / clip / f"{stem}.png")
        got = reader.read(key)
        if got.shape[2] == 1:
            got = np.repeat(got, 3, axis=2)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), key
    assert reader.read("b/00000005").dtype == np.uint16
    assert verify(out).ok
    with pytest.raises(OutputError, match="output exists"):
        pack(src, out, layout="folders")
    assert pack(src, out, layout="folders", overwrite=True).written == 12
    # Repacking a pack (here at another compression level) keeps keys and pixels.
    pack(out, tmp_path / "re.lmdb", compress_level=9)
    again = LmdbReader(tmp_path / "re.lmdb")
    assert again.keys == LmdbReader(out).keys
    assert np.array_equal(again.read("b/00000005"), LmdbReader(out).read("b/00000005"))
    assert read_meta(tmp_path / "re.lmdb")[0].compress_level == 9


def test_png_header_shape():
    assert png_shape(encode_image(np.zeros((5, 7, 3), np.uint8), ".png")) == (5, 7, 3)
    assert png_shape(encode_image(np.zeros((5, 7, 1), np.uint8), ".png")) == (5, 7, 1)
    assert png_shape(b"garbage" * 10) is None


def test_interrupted_pack_resumes_without_rewriting(tmp_path):
    src = tmp_path / "src"
    _noise_clips(src, clips=("a",), frames=9)
    good = (src / "a" / "00000005.png").read_bytes()
    (src / "a" / "00000005.png").write_bytes(b"not a png")  # reading it raises mid-pack
    out = tmp_path / "db.lmdb"
    with pytest.raises(InputError, match="00000005.png"):
        pack(src, out, layout="folders", batch_records=2, workers=1)
    partial = tmp_path / "db.lmdb.partial"
    assert partial.is_dir() and not out.exists()
    with lmdb.open(str(partial), readonly=True, lock=False) as env:
        assert env.stat()["entries"] == 4  # two batches of two were committed before the failure
    with pytest.raises(InputError, match="interrupted pack"):
        LmdbReader(partial)
    with pytest.raises(OutputError, match="--resume"):
        pack(src, out, layout="folders")
    with pytest.raises(OutputError, match="different settings"):
        pack(src, out, layout="folders", compress_level=5, resume=True)
    (src / "a" / "00000005.png").write_bytes(good)
    report = pack(src, out, layout="folders", resume=True, batch_records=2)
    assert (report.skipped, report.written, report.total) == (4, 5, 9)
    assert verify(out).ok and not partial.exists()
    reader = LmdbReader(out)
    assert np.array_equal(reader.read("a/00000005"), read_rgb(src / "a" / "00000005.png"))


def test_map_grows_instead_of_failing(tmp_path):
    src = tmp_path / "src"
    _noise_clips(src, clips=("a",), frames=12, size=(32, 32))  # ~3 KB of incompressible PNG each
    report = pack(src, tmp_path / "db.lmdb", layout="folders", map_size=32 * 1024, batch_records=4)
    assert report.written == 12 and report.map_size > 32 * 1024
    assert verify(tmp_path / "db.lmdb").ok


def test_verify_reports_corrupt_missing_and_extra_records(tmp_path, capsys):
    src = tmp_path / "src"
    _noise_clips(src, clips=("a",), frames=4)
    out = tmp_path / "db.lmdb"
    pack(src, out, layout="folders")
    with lmdb.open(str(out)) as env, env.begin(write=True) as txn:
        data = bytearray(txn.get(b"a/00000001"))
        data[40:60] = b"\0" * 20  # inside the pixel data: the PNG checksum no longer matches
        txn.put(b"a/00000001", bytes(data[:-30]))
        txn.delete(b"a/00000002")
        txn.put(b"zz/extra", b"x")
    report = verify(out)
    assert not report.ok and report.records == 4
    reasons = dict(report.bad)
    assert set(reasons) == {"a/00000001", "a/00000002", "zz/extra"}
    assert reasons["a/00000001"].startswith("corrupt") and reasons["a/00000002"].startswith("missing")
    assert reasons["zz/extra"].startswith("extra")
    with pytest.raises(InputError, match="a/00000001 is corrupt"):
        LmdbReader(out).read("a/00000001")
    # CLI: non-zero exit, one line per bad key.
    assert cli.main(["data", "verify", str(out)]) != 0
    err_lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(("a/", "zz/"))]
    assert sorted(ln.split(":")[0] for ln in err_lines) == ["a/00000001", "a/00000002", "zz/extra"]


def test_pack_and_verify_commands(tmp_path, capsys):
    src = tmp_path / "src"
    _noise_clips(src, clips=("x",), frames=3)
    out = tmp_path / "cli.lmdb"
    assert cli.main(["data", "pack", str(src), str(out), "--layout", "folders", "--quiet"]) == 0
    assert cli.main(["data", "verify", str(out), "--quiet"]) == 0
    assert "3 records" in capsys.readouterr().out
    assert cli.main(["data", "pack", str(src), str(out), "--layout", "folders", "--quiet"]) == 2
    assert "output exists" in capsys.readouterr().err
    assert cli.main(["data", "verify", str(tmp_path / "nope.lmdb")]) == 2
    assert "no such LMDB folder" in capsys.readouterr().err


def test_pack_lr_frames_and_clip_lists(tmp_path):
    (tmp_path / "GT" / "s").mkdir(parents=True)
    (tmp_path / "BIx4" / "s").mkdir(parents=True)
    write_image(tmp_path / "GT" / "s" / "1.png", np.zeros((8, 8, 3), np.uint8))
    write_image(tmp_path / "BIx4" / "s" / "1.png", np.ones((2, 2, 3), np.uint8))
    pack(tmp_path, tmp_path / "lr.lmdb", layout="vid4", which="lr")
    assert read_meta(tmp_path / "lr.lmdb")[0].shape == (2, 2, 3)
    with pytest.raises(InputError, match="no LR frames"):
        pack(tmp_path, tmp_path / "bd.lmdb", layout="vid4", which="lr", degradation="BD")
    clips = [Clip("c", [tmp_path / "GT" / "s" / "1.png"], None)]
    assert pack(clips, tmp_path / "clips.lmdb").total == 1


def _read_in_child(reader: LmdbReader, key: str, queue) -> None:
    queue.put(int(reader.read(key).sum()))


def test_reader_reopens_after_fork(tmp_path):
    src = tmp_path / "src"
    _noise_clips(src, clips=("a",), frames=2)
    pack(src, tmp_path / "db.lmdb", layout="folders")
    reader = LmdbReader(tmp_path / "db.lmdb")
    expected = int(reader.read("a/00000001").sum())  # opens the environment in the parent
    parent_env = reader._env
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_read_in_child, args=(reader, "a/00000001", q))
    p.start()
    got = q.get(timeout=30)
    p.join(timeout=30)
    assert got == expected and reader._env is parent_env
    assert int(reader.read("a/00000001").sum()) == expected  # the parent's handle still works


def test_truncated_png_records_are_corrupt_without_libpng_noise(tmp_path, capfd):
    from srkit.data.lmdb_store import decode_record

    src = tmp_path / "src"
    _noise_clips(src, clips=("a",), frames=2)
    out = tmp_path / "db.lmdb"
    pack(src, out, layout="folders")
    with lmdb.open(str(out)) as env, env.begin(write=True) as txn:
        whole = bytes(txn.get(b"a/00000000"))
        txn.put(b"a/00000000", whole[: len(whole) // 2])  # an interrupted write
        txn.put(b"a/00000001", bytes(txn.get(b"a/00000001"))[:-12])  # pixels intact, IEND chunk lost
    assert decode_record(whole) is not None
    capfd.readouterr()
    report = verify(out)
    assert [k for k, _ in report.bad] == ["a/00000000", "a/00000001"]
    assert all(r.startswith("corrupt") for _, r in report.bad)
    assert "libpng" not in capfd.readouterr().err


def _pack_then_die(out: str, kill_at: int) -> None:
    """Child process: pack 10 records and SIGKILL itself (no cleanup of any kind) while reading one."""
    import signal

    def read(i: int) -> np.ndarray:
        if i == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return np.full((6, 5, 3), i, np.uint8)

    pack_records(((f"c/{i:03d}", lambda i=i: read(i)) for i in range(10)), out, batch_records=2, workers=1)


def test_pack_killed_hard_resumes_from_committed_batches(tmp_path):
    out = tmp_path / "db.lmdb"
    p = mp.get_context("fork").Process(target=_pack_then_die, args=(str(out), 7))
    p.start()
    p.join(timeout=60)
    assert p.exitcode == -9  # killed like a power cut: no exception handler, no atexit, no close()
    partial = tmp_path / "db.lmdb.partial"
    assert partial.is_dir() and not out.exists()
    with lmdb.open(str(partial), readonly=True, lock=False) as env:
        assert env.stat()["entries"] == 6  # three committed batches of two survive the kill
    records = ((f"c/{i:03d}", lambda i=i: np.full((6, 5, 3), i, np.uint8)) for i in range(10))
    report = pack_records(records, out, resume=True, batch_records=2, workers=1)
    assert (report.skipped, report.written, report.total) == (6, 4, 10)
    reader = LmdbReader(out)
    assert [int(reader.read(k)[0, 0, 0]) for k in reader.keys] == list(range(10))
    assert verify(out).ok
