"""srkit.io.frames: frame-folder reading (order, sizes, bit depth) and atomic, resumable writing."""

from __future__ import annotations

import os
from fractions import Fraction

import cv2
import numpy as np
import pytest

from srkit.errors import ConfigError, InputError, OutputError
from srkit.io.atomic import TMP_PREFIX
from srkit.io.frames import FrameFolderReader, FrameFolderWriter, image_size
from srkit.io.images import write_image


def frame(value: int, shape=(6, 8), dtype=np.uint8) -> np.ndarray:
    img = np.zeros((*shape, 3), dtype)
    img[..., 0] = value
    img[0, 0] = (value, 1, 2)
    return img


def test_reader_natural_order_and_frames(tmp_path):
    for i in (10, 2, 1, 0, 9):  # names as some tools write them: unpadded numbers
        write_image(tmp_path / f"frame{i}.png", frame(i * 10))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    reader = FrameFolderReader(tmp_path, fps=Fraction(25))
    assert [p.name for p in reader.files] == ["frame0.png", "frame1.png", "frame2.png", "frame9.png", "frame10.png"]
    assert (reader.num_frames, reader.width, reader.height, reader.dtype) == (5, 8, 6, np.uint8)
    frames = list(reader)
    assert [f.rgb[1, 1, 0] for f in frames] == [0, 10, 20, 90, 100]
    assert [f.pts for f in frames] == [0, 1, 2, 3, 4]
    assert frames[3].time == pytest.approx(3 / 25) and reader.time_base == Fraction(1, 25)
    np.testing.assert_array_equal(reader.read(4), frame(100))


def test_reader_keeps_16_bit_and_mixed_formats(tmp_path):
    write_image(tmp_path / "a1.png", frame(40000, dtype=np.uint16))
    write_image(tmp_path / "a2.tif", frame(50000, dtype=np.uint16))
    reader = FrameFolderReader(tmp_path)
    assert reader.dtype == np.uint16 and reader.bit_depth == 16
    values = [int(f.rgb[1, 1, 0]) for f in reader]
    assert values == [40000, 50000]


def test_reader_grayscale_replicated(tmp_path):
    cv2.imwrite(str(tmp_path / "0.png"), np.full((4, 5), 77, np.uint8))
    rgb = FrameFolderReader(tmp_path).read(0)
    assert rgb.shape == (4, 5, 3) and (rgb == 77).all()


def test_size_mismatch_names_first_offending_file(tmp_path):
    for i in range(5):
        write_image(tmp_path / f"{i:03d}.png", frame(i, shape=(6, 8) if i not in (2, 4) else (6, 9)))
    with pytest.raises(InputError) as e:
        FrameFolderReader(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path / "002.png"))
    assert "9x6" in msg and "8x6" in msg and "000.png" in msg
    # Without the up-front check the same error comes when the frame is reached.
    reader = FrameFolderReader(tmp_path, check_sizes=False)
    with pytest.raises(InputError, match="002.png"):
        list(reader)


def test_bit_depth_mismatch_is_an_error(tmp_path):
    write_image(tmp_path / "0.png", frame(1))
    write_image(tmp_path / "1.png", frame(1000, dtype=np.uint16))
    with pytest.raises(InputError, match="16-bit frame in a 8-bit sequence"):
        list(FrameFolderReader(tmp_path))


def test_reader_bad_folders(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        FrameFolderReader(tmp_path / "missing")
    with pytest.raises(InputError, match="no images"):
        FrameFolderReader(tmp_path)
    (tmp_path / "0.png").write_bytes(b"not a png at all")
    with pytest.raises(InputError, match="not a readable image"):
        FrameFolderReader(tmp_path)


def test_image_size_from_header(tmp_path):
    write_image(tmp_path / "a.png", frame(0, shape=(7, 11)))
    write_image(tmp_path / "a.jpg", frame(0, shape=(7, 11)))
    write_image(tmp_path / "a.bmp", frame(0, shape=(7, 11)))
    for name in ("a.png", "a.jpg", "a.bmp"):
        assert image_size(tmp_path / name) == (11, 7)


# ---------------------------------------------------------------------------------------------- writer
def test_writer_round_trip_16_bit(tmp_path):
    out = tmp_path / "out"
    frames = [frame(v * 1000, dtype=np.uint16) for v in range(4)]
    with FrameFolderWriter(out) as writer:
        for f in frames:
            writer.write(f)
    assert sorted(os.listdir(out)) == [f"{i:08d}.png" for i in range(4)]
    back = list(FrameFolderReader(out))
    for a, b in zip(frames, back):
        np.testing.assert_array_equal(a, b.rgb)
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "00000000.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_writer_resume_counts_complete_frames_and_removes_temporaries(tmp_path):
    out = tmp_path / "out"
    with FrameFolderWriter(out, pattern="im{:04d}.png", start=1) as writer:
        for i in range(3):
            writer.write(frame(i))
    (out / f"{TMP_PREFIX}im0004-abc.png").write_bytes(b"half a frame")  # killed mid-write
    with pytest.raises(OutputError, match="already holds 3 frame"):
        FrameFolderWriter(out, pattern="im{:04d}.png", start=1)
    writer = FrameFolderWriter(out, pattern="im{:04d}.png", start=1, resume=True)
    assert writer.completed == writer.num_existing == 3 and writer.next_index == 4
    assert not any(p.name.startswith(TMP_PREFIX) for p in out.iterdir())
    writer.write(frame(3))
    assert sorted(p.name for p in out.iterdir()) == ["im0001.png", "im0002.png", "im0003.png", "im0004.png"]
    # overwrite=True starts again from the first frame.
    assert FrameFolderWriter(out, pattern="im{:04d}.png", start=1, overwrite=True).next_index == 1


def test_overwrite_with_a_shorter_run_leaves_no_stale_frames(tmp_path):
    out = tmp_path / "out"
    with FrameFolderWriter(out, pattern="im{:04d}.png", start=1) as writer:
        for i in range(5):
            writer.write(frame(i))
    (out / "notes.txt").write_text("not a frame")
    # A failed overwrite run keeps what it did not replace (nothing is deleted before success).
    with pytest.raises(RuntimeError), FrameFolderWriter(out, pattern="im{:04d}.png", start=1, overwrite=True) as w:
        w.write(frame(9))
        raise RuntimeError("decoder died")
    assert len(list(out.glob("im*.png"))) == 5
    with FrameFolderWriter(out, pattern="im{:04d}.png", start=1, overwrite=True) as writer:
        for i in range(2):
            writer.write(frame(10 + i))
    assert sorted(p.name for p in out.iterdir()) == ["im0001.png", "im0002.png", "notes.txt"]
    assert np.array_equal(FrameFolderReader(out).read(1), frame(11))  # the new frames, not the old ones


def test_writer_failure_leaves_no_partial_frame(tmp_path, monkeypatch):
    out = tmp_path / "out"
    writer = FrameFolderWriter(out)
    writer.write(frame(1))

    def boom(self, data):  # the disk fills up halfway through the frame
        with open(self, "wb") as fh:
            fh.write(data[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pathlib.Path.write_bytes", boom)
    with pytest.raises(OutputError, match="No space left"):
        writer.write(frame(2))
    monkeypatch.undo()
    assert sorted(os.listdir(out)) == ["00000000.png"]
    assert FrameFolderWriter(out, resume=True).completed == 1


def test_writer_bad_arguments(tmp_path):
    for pattern in ("frame.png", "{:08d}", "{}/{}.png", "sub/{:08d}.png", "{:08d}.txt", "{x}.png"):
        with pytest.raises(ConfigError):
            FrameFolderWriter(tmp_path / "o", pattern=pattern)
    with pytest.raises(OutputError, match="parent folder does not exist"):
        FrameFolderWriter(tmp_path / "a" / "b")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        FrameFolderWriter(tmp_path / "file")
    with pytest.raises(ValueError):
        FrameFolderWriter(tmp_path / "o").write(np.zeros((4, 4), np.float32))
