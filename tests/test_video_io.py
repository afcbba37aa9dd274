"""srkit.io.video: probing, decoding, encoding, timestamp/stream preservation, damage and atomicity.

Every clip is made here with PyAV (tests/media.py): tiny frames, ~12 frames, so the file runs in
seconds. Encoders are tested only when the installed FFmpeg build has them.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from srkit.errors import ConfigError, InputError, OutputError
from srkit.io.atomic import TMP_PREFIX
from srkit.io.video import ColorTags, VideoReader, VideoWriter, encoder_available, open_video, probe_video
from tests.media import make_frames, make_video

needs = {name: pytest.mark.skipif(not encoder_available(name), reason=f"no {name} encoder in this FFmpeg")
         for name in ("libx264", "libx265", "libvpx-vp9", "ffv1", "libx264rgb", "aac", "libopus")}


# ---------------------------------------------------------------------------------------------- helpers
def read_all(path, **kw):
    with VideoReader(path, **kw) as reader:
        info = reader.info
        frames = list(reader)
    return info, frames


def stream_packets(path, kind: str) -> list[tuple[int | None, int | None, bytes]]:
    """(pts, dts, payload) of every non-empty packet of the first ``kind`` stream, in file order."""
    with av.open(str(path)) as c:
        streams = getattr(c.streams, kind)
        if not streams:
            return []
        s = streams[0]
        tb = s.time_base
        out = []
        for p in c.demux(s):
            if p.size:
                # Normalise to seconds*1e6 so containers with different time bases compare.
                to_us = (lambda t: None if t is None else round(float(t * tb) * 1e6))
                out.append((to_us(p.pts), to_us(p.dts), bytes(p)))
        return out


def copy_video(src, dst, *, with_duration=True, **writer_kw):
    """Decode ``src`` and re-encode it to ``dst`` keeping timestamps and copying its other streams."""
    info, frames = read_all(src, apply_rotation=writer_kw.pop("apply_rotation", True))
    kw = dict(width=info.width, height=info.height, fps=info.fps, time_base=info.time_base,
              copy_streams_from=src, rotation=info.rotation)
    kw.update(writer_kw)
    with VideoWriter(dst, **kw) as writer:
        for f in frames:
            writer.write(f.rgb, f.pts, f.duration if with_duration else None)
    return info, frames, writer


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def no_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]


# ---------------------------------------------------------------------------------------------- reading
@needs["libx264"]
@needs["aac"]
def test_probe_describes_clip(tmp_path):
    clip = make_video(tmp_path / "c.mp4", n_frames=12, size=(64, 48), fps=25, audio=True)
    info = probe_video(clip.path)
    assert (info.width, info.height) == (64, 48)
    assert info.num_frames == 12 and info.num_frames_exact
    assert info.fps == 25
    assert info.codec == "h264" and info.pix_fmt == "yuv420p" and info.bit_depth == 8
    assert info.has_audio and info.num_audio_streams == 1
    assert info.rotation == 0 and info.source_rotation == 0
    assert info.duration == pytest.approx(12 / 25, abs=0.05)
    assert info.frame_interval * info.time_base == Fraction(1, 25)


@needs["libx264"]
def test_reader_yields_source_frames_in_order(tmp_path):
    clip = make_video(tmp_path / "c.mkv", n_frames=12, size=(64, 48), audio=False, options={"crf": "10"})
    info, frames = read_all(clip.path)
    assert len(frames) == 12
    assert [f.index for f in frames] == list(range(12))
    for i, f in enumerate(frames):
        assert f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8 and f.rgb.flags.c_contiguous
        # Each decoded frame matches its own source frame much better than its neighbours (order kept).
        own = psnr(f.rgb, clip.frames[i])
        assert own > 29, own  # 4:2:0 chroma of per-pixel noise limits this; 4:4:4 gives ~52 dB
        if i:
            assert own > psnr(f.rgb, clip.frames[i - 1]) + 3
    # Matroska stores milliseconds: the 1/25 s ticks come back as the same times.
    assert info.time_base == Fraction(1, 1000)
    assert [f.time for f in frames] == pytest.approx([p / 25 for p in clip.pts], abs=1e-9)


@needs["libx264"]
def test_fast_conversion_is_close_to_accurate(tmp_path):
    clip = make_video(tmp_path / "c.mp4", n_frames=3, size=(64, 48), audio=False)
    _, accurate = read_all(clip.path)
    _, fast = read_all(clip.path, fast_conversion=True)
    for a, b in zip(accurate, fast):
        diff = np.abs(a.rgb.astype(int) - b.rgb.astype(int))
        assert 0 < diff.mean() < 4  # same picture and matrix, different chroma interpolation


@needs["libx264"]
def test_count_frames_makes_matroska_count_exact(tmp_path):
    clip = make_video(tmp_path / "c.mkv", n_frames=13, audio=False)
    assert not probe_video(clip.path).num_frames_exact  # Matroska stores no frame count
    info = probe_video(clip.path, count_frames=True)
    assert info.num_frames == 13 and info.num_frames_exact
    _, frames = read_all(clip.path, count_frames=True)
    assert len(frames) == 13


@needs["libx264"]
def test_reader_iterates_once_and_dtype_option(tmp_path):
    clip = make_video(tmp_path / "c.mp4", n_frames=4, audio=False)
    with open_video(clip.path, dtype=np.uint16) as reader:
        frames = list(reader)
        with pytest.raises(RuntimeError, match="once"):
            list(reader)
    assert frames[0].rgb.dtype == np.uint16
    _, frames8 = read_all(clip.path)
    # 16-bit output is the same picture at 257x scale (within conversion rounding).
    assert np.abs(frames[0].rgb / 257.0 - frames8[0].rgb).max() <= 1.5


# ---------------------------------------------------------------------------------------------- round trips
@needs["libx264"]
@needs["aac"]
def test_round_trip_cfr_keeps_count_rate_timestamps_and_audio(tmp_path):
    clip = make_video(tmp_path / "src.mp4", n_frames=15, size=(64, 48), fps=25, audio=True)
    src_info, src_frames, writer = copy_video(clip.path, tmp_path / "out.mp4")
    assert writer.skipped_streams == []
    out_info, out_frames = read_all(tmp_path / "out.mp4")
    assert out_info.num_frames == len(out_frames) == 15
    assert out_info.fps == src_info.fps == 25
    assert [f.pts for f in out_frames] == [f.pts for f in src_frames]
    assert out_info.duration == pytest.approx(src_info.duration, abs=1e-3)
    src_audio, out_audio = stream_packets(clip.path, "audio"), stream_packets(tmp_path / "out.mp4", "audio")
    assert len(src_audio) > 10 and out_audio == src_audio  # same packets, bytes and timestamps
    with av.open(str(clip.path)) as a, av.open(str(tmp_path / "out.mp4")) as b:
        sa, sb = a.streams.audio[0], b.streams.audio[0]
        assert float(sa.duration * sa.time_base) == pytest.approx(float(sb.duration * sb.time_base), abs=1e-6)
        assert sb.codec_context.name == "aac" and sb.sample_rate == sa.sample_rate
    for a_, b_ in zip(src_frames, out_frames):
        assert psnr(a_.rgb, b_.rgb) > 35  # second generation: CRF 18 of already-coded frames


@needs["libx264"]
@needs["aac"]
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_round_trip_vfr_keeps_every_timestamp(tmp_path, suffix):
    clip = make_video(tmp_path / f"src{suffix}", n_frames=14, fps=25, vfr=True, audio=True)
    gaps = np.diff(clip.pts)
    assert len(set(gaps.tolist())) >= 3  # the clip really is variable-rate
    src_info, src_frames, _ = copy_video(clip.path, tmp_path / f"out{suffix}")
    out_info, out_frames = read_all(tmp_path / f"out{suffix}")
    src_times = [f.time for f in src_frames]
    assert src_times == pytest.approx([p * float(clip.time_base) for p in clip.pts], abs=1e-9)
    assert [f.time for f in out_frames] == pytest.approx(src_times, abs=1e-9)
    assert out_info.time_base == src_info.time_base
    # Given durations (the reader's), every frame keeps its length, the last one included.
    assert [f.duration for f in out_frames] == [f.duration for f in src_frames]
    assert out_info.duration == pytest.approx(src_info.duration, abs=1e-3)
    assert stream_packets(tmp_path / f"out{suffix}", "audio") == stream_packets(clip.path, "audio")


@needs["libx264"]
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_frame_durations_inferred_without_duration_argument(tmp_path, suffix):
    clip = make_video(tmp_path / f"src{suffix}", n_frames=10, fps=25, vfr=True, audio=False)
    src_info, src_frames, _ = copy_video(clip.path, tmp_path / f"out{suffix}", with_duration=False)
    out_info, out_frames = read_all(tmp_path / f"out{suffix}")
    assert [f.time for f in out_frames] == pytest.approx([f.time for f in src_frames], abs=1e-9)
    # Each frame lasts until the next; the last (unknown to the writer) as long as the one before it.
    assert [f.duration for f in out_frames[:-1]] == [f.duration for f in src_frames[:-1]]
    assert out_frames[-1].duration == out_frames[-2].duration
    gap = out_frames[-2].duration * float(out_info.time_base)
    assert out_info.duration == pytest.approx(out_frames[-1].time + gap, abs=1e-3)


@needs["libx264"]
@needs["aac"]
def test_matroska_output_shifts_all_streams_together_for_negative_audio(tmp_path):
    # AAC in MP4 starts at a negative pts (encoder priming); Matroska cannot store that, so FFmpeg
    # shifts every stream by the same amount: sync is kept even though absolute times move.
    clip = make_video(tmp_path / "src.mp4", n_frames=10, audio=True)
    copy_video(clip.path, tmp_path / "out.mkv")
    src_v, out_v = stream_packets(clip.path, "video"), stream_packets(tmp_path / "out.mkv", "video")
    src_a, out_a = stream_packets(clip.path, "audio"), stream_packets(tmp_path / "out.mkv", "audio")
    shift = out_a[0][0] - src_a[0][0]
    assert [p[2] for p in out_a] == [p[2] for p in src_a]
    assert all(abs((o[0] - s[0]) - shift) <= 1000 for o, s in zip(out_a, src_a))  # Matroska: 1 ms ticks
    src_vpts = sorted(p[0] for p in src_v)
    out_vpts = sorted(p[0] for p in out_v)
    assert all(abs((o - s) - shift) <= 1000 for o, s in zip(out_vpts, src_vpts))


@needs["libx264"]
@needs["aac"]
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_subtitles_are_copied(tmp_path, suffix):
    clip = make_video(tmp_path / f"src{suffix}", n_frames=12, audio=True, subtitles=True)
    copy_video(clip.path, tmp_path / f"out{suffix}")
    src = [p for p in stream_packets(clip.path, "subtitles") if len(p[2]) > 2]  # mov_text gaps: 2-byte empties
    out = [p for p in stream_packets(tmp_path / f"out{suffix}", "subtitles") if len(p[2]) > 2]
    assert len(src) == 2 and out == src
    texts = b"".join(p[2] for p in out)
    assert b"first cue" in texts and b"second cue" in texts


@needs["libx264"]
@needs["aac"]
def test_stream_the_container_cannot_hold_is_skipped_with_warning(tmp_path):
    clip = make_video(tmp_path / "src.mp4", n_frames=6, audio=True, subtitles=True)  # mov_text
    with pytest.warns(UserWarning, match="subtitle"):
        _, _, writer = copy_video(clip.path, tmp_path / "out.mkv")
    assert len(writer.skipped_streams) == 1 and "mov_text" in writer.skipped_streams[0]
    assert stream_packets(tmp_path / "out.mkv", "audio")  # audio still copied


@pytest.mark.parametrize("suffix,codec,audio_codec", [(".mov", "libx264", "aac"), (".avi", "mpeg4", "libmp3lame"),
                                                       (".mkv", "libx265", "libopus"), (".mov", "libx264", "pcm_s16le")])
def test_other_containers_and_codecs(tmp_path, suffix, codec, audio_codec):
    if not (encoder_available(codec) and encoder_available(audio_codec)):
        pytest.skip(f"no {codec} or {audio_codec} encoder")
    opts = {"x265-params": "log-level=error"} if codec == "libx265" else None
    clip = make_video(tmp_path / f"src{suffix}", n_frames=8, audio=True, codec=codec, audio_codec=audio_codec,
                      options=opts)
    info, frames = read_all(clip.path, count_frames=True)
    assert info.has_audio and len(frames) == 8 and info.num_frames == 8 and info.num_frames_exact
    assert all(f.rgb.shape == (48, 64, 3) for f in frames)
    assert np.mean([psnr(f.rgb, s) for f, s in zip(frames, clip.frames)]) > 25
    copy_video(clip.path, tmp_path / f"out{suffix}")
    _, out = read_all(tmp_path / f"out{suffix}")
    assert len(out) == 8
    assert stream_packets(tmp_path / f"out{suffix}", "audio") == stream_packets(clip.path, "audio")


@needs["libx264"]
@needs["aac"]
def test_attachments_chapters_and_title_are_copied(tmp_path):
    clip = make_video(tmp_path / "plain.mkv", n_frames=10, audio=True, subtitles=True)
    src = tmp_path / "src.mkv"
    chapters = [{"id": 1, "start": 0, "end": 200, "time_base": Fraction(1, 1000), "metadata": {"title": "Intro"}},
                {"id": 2, "start": 200, "end": 400, "time_base": Fraction(1, 1000), "metadata": {"title": "Main"}}]
    with av.open(str(clip.path)) as a, av.open(str(src), "w") as b:  # remux, adding the extras
        out = {s.index: b.add_stream_from_template(s) for s in a.streams}
        b.add_attachment("font.ttf", "font/ttf", b"FONTDATA" * 16)
        b.set_chapters(chapters)
        b.metadata["title"] = "My clip"
        for p in a.demux():
            if p.size:
                p.stream = out[p.stream_index]
                b.mux(p)
    copy_video(src, tmp_path / "out.mkv")
    with av.open(str(src)) as a, av.open(str(tmp_path / "out.mkv")) as b:
        assert b.metadata.get("title") == "My clip"
        assert [(c["start"], c["end"], c["metadata"]) for c in b.chapters()] == \
            [(c["start"], c["end"], c["metadata"]) for c in a.chapters()]
        att = [s for s in b.streams if s.type == "attachment"]
        assert len(att) == 1 and att[0].name == "font.ttf" and bytes(att[0].data) == b"FONTDATA" * 16
    with pytest.warns(UserWarning, match="attachment"):
        _, _, writer = copy_video(src, tmp_path / "out.mp4")
    assert any("attachment" in s for s in writer.skipped_streams)


@needs["libx264"]
def test_writer_without_pts_is_constant_rate(tmp_path):
    frames = make_frames(6, (32, 24))
    with VideoWriter(tmp_path / "o.mp4", width=32, height=24, fps=Fraction(30000, 1001)) as w:
        for f in frames:
            w.write(f)
    info, out = read_all(tmp_path / "o.mp4")
    assert info.fps == Fraction(30000, 1001)
    assert [f.time for f in out] == pytest.approx([i * 1001 / 30000 for i in range(6)], abs=1e-9)


@needs["libx264"]
def test_float_ntsc_rate_becomes_exact_fraction(tmp_path):
    with VideoWriter(tmp_path / "o.mp4", width=32, height=24, fps=23.976) as w:
        w.write(np.zeros((24, 32, 3), np.uint8))
    assert w.fps == Fraction(24000, 1001)
    assert probe_video(tmp_path / "o.mp4").fps == Fraction(24000, 1001)


@needs["libx264"]
def test_non_increasing_pts_are_moved_not_dropped(tmp_path):
    frames = make_frames(5, (32, 24))
    with VideoWriter(tmp_path / "o.mkv", width=32, height=24, fps=25, time_base=Fraction(1, 1000)) as w:
        for f, p in zip(frames, [0, 40, 40, 30, 120]):
            w.write(f, p)
    _, out = read_all(tmp_path / "o.mkv")
    assert [f.pts for f in out] == [0, 40, 41, 42, 120]


# ---------------------------------------------------------------------------------------------- formats
@needs["ffv1"]
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_ffv1_lossless_round_trip_is_pixel_exact(tmp_path, dtype):
    frames = make_frames(5, (33, 21), dtype=dtype, seed=3)  # odd size: RGB formats have no subsampling
    out = tmp_path / "o.mkv"
    with VideoWriter(out, width=33, height=21, fps=24, codec="ffv1", bit_depth=16 if dtype == np.uint16 else 8) as w:
        for f in frames:
            w.write(f)
    assert w.pix_fmt == ("gbrp16le" if dtype == np.uint16 else "bgr0")
    info, back = read_all(out)
    assert info.bit_depth == (16 if dtype == np.uint16 else 8)
    assert len(back) == 5
    for a, b in zip(frames, back):
        assert b.rgb.dtype == dtype
        np.testing.assert_array_equal(a, b.rgb)


@needs["libx264rgb"]
def test_x264_lossless_is_pixel_exact_rgb(tmp_path):
    frames = make_frames(4, (32, 24), seed=5)
    with VideoWriter(tmp_path / "o.mp4", width=32, height=24, fps=25, lossless=True) as w:
        for f in frames:
            w.write(f)
    assert w.codec == "libx264rgb" and w.options["qp"] == "0"
    _, back = read_all(tmp_path / "o.mp4")
    for a, b in zip(frames, back):
        np.testing.assert_array_equal(a, b.rgb)


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_ten_bit_output(tmp_path, codec):
    if not encoder_available(codec):
        pytest.skip(f"no {codec}")
    frames = make_frames(3, (32, 24), dtype=np.uint16, seed=1)
    # A grey ramp spanning ~2.5 eight-bit levels: 8 bits can only keep <= 4 distinct values of it.
    ramp = np.linspace(0.30, 0.31, 32)[None, :, None] * np.ones((24, 1, 3))
    frames.append(np.floor(ramp * 65535 + 0.5).astype(np.uint16))
    out = tmp_path / "o.mkv"
    with VideoWriter(out, width=32, height=24, fps=25, codec=codec, bit_depth=10, crf=8,
                     extra_options={"preset": "ultrafast"} if codec == "libx265" else None) as w:
        for f in frames:
            w.write(f)
    assert w.pix_fmt == "yuv420p10le"
    info, back = read_all(out)
    assert info.pix_fmt == "yuv420p10le" and info.bit_depth == 10
    assert back[0].rgb.dtype == np.uint16
    for a, b in zip(frames[:3], back):
        assert psnr(a, b.rgb, peak=65535.0) > 26  # 4:2:0 chroma of per-pixel noise limits this
    grey = back[3].rgb[12, :, 1].astype(np.int64)
    assert len(np.unique(grey // 64)) >= 7  # distinct 10-bit levels survive
    assert np.abs(grey - frames[3][12, :, 1].astype(np.int64)).max() < 300


@needs["libvpx-vp9"]
@needs["libopus"]
def test_webm_vp9_with_opus_round_trip(tmp_path):
    clip = make_video(tmp_path / "src.webm", n_frames=8, codec="libvpx-vp9", audio=True)
    copy_video(clip.path, tmp_path / "out.webm", codec="libvpx-vp9", crf=20)
    info, out = read_all(tmp_path / "out.webm")
    assert info.codec == "vp9" and len(out) == 8
    assert stream_packets(tmp_path / "out.webm", "audio") == stream_packets(clip.path, "audio")


@needs["libx264"]
def test_writer_colour_conversion_round_trips(tmp_path):
    # Flat patches of saturated colours: the writer's RGB->YUV matrix (tagged BT.709) and the
    # reader's YUV->RGB must agree, or hues shift by many levels.
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [20, 200, 180], [128, 128, 128]],
                       np.uint8)
    img = np.repeat(np.repeat(colours[None], 16, axis=0), 16, axis=1)  # 16x96
    with VideoWriter(tmp_path / "o.mp4", width=96, height=16, fps=25, pix_fmt="yuv444p", crf=0) as w:
        w.write(img)
    _, back = read_all(tmp_path / "o.mp4")
    centres = back[0].rgb[8, 8::16].astype(int)
    assert np.abs(centres - colours.astype(int)).max() <= 2


def _luma_of_red(path) -> float:
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        return float(frame.to_ndarray(format="yuv444p")[0].mean())  # raw Y plane, no conversion


@needs["libx264"]
@pytest.mark.parametrize("matrix,kr", [(1, 0.2126), (6, 0.299), (9, 0.2627)])  # BT.709, BT.601, BT.2020
def test_writer_uses_the_requested_matrix(tmp_path, matrix, kr):
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    out = tmp_path / "o.mkv"
    with VideoWriter(out, width=16, height=16, fps=25, pix_fmt="yuv444p", crf=0,
                     color=ColorTags(matrix=matrix)) as w:
        w.write(red)
    # Limited-range luma of pure red is 16 + 219 * Kr: tells the matrices apart by 10+ levels.
    assert _luma_of_red(out) == pytest.approx(16 + 219 * kr, abs=1.0)
    info, back = read_all(out)
    assert info.color.matrix == matrix
    assert np.abs(back[0].rgb.astype(int) - red).max() <= 2


@needs["libx265"]
@needs["aac"]
def test_hdr_tags_survive_a_round_trip(tmp_path):
    pq = ColorTags(matrix=9, primaries=9, trc=16)  # BT.2020 non-constant luminance, SMPTE ST 2084
    frames = make_frames(4, (32, 24), dtype=np.uint16)
    src = tmp_path / "hdr.mkv"
    with VideoWriter(src, width=32, height=24, fps=25, codec="libx265", bit_depth=10, color=pq) as w:
        for f in frames:
            w.write(f)
    info = probe_video(src)
    assert info.color == pq and info.color.hdr and info.bit_depth == 10
    # The output of a source keeps its colour by default (no color argument needed).
    copy_video(src, tmp_path / "out.mp4", codec="libx265", bit_depth=10)
    assert probe_video(tmp_path / "out.mp4").color == pq
    # Untagged SD video is read as BT.601 (what players assume) and re-tagged explicitly.
    assert probe_video(make_video(tmp_path / "sd.mp4", n_frames=2, audio=False).path).color.matrix == 6


@needs["libx264"]
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_anamorphic_pixel_aspect_is_kept(tmp_path, suffix):
    src = tmp_path / f"dvd{suffix}"
    with VideoWriter(src, width=64, height=48, fps=25, sample_aspect_ratio=Fraction(32, 27)) as w:
        for f in make_frames(3, (64, 48)):
            w.write(f)
    assert probe_video(src).sample_aspect_ratio == Fraction(32, 27)
    copy_video(src, tmp_path / f"out{suffix}")  # taken from the source by default
    assert probe_video(tmp_path / f"out{suffix}").sample_aspect_ratio == Fraction(32, 27)
    assert make_video(tmp_path / f"sq{suffix}", n_frames=1, audio=False).path and \
        probe_video(tmp_path / f"sq{suffix}").sample_aspect_ratio == 1


@needs["libx264"]
def test_anamorphic_and_rotated(tmp_path):
    src = tmp_path / "phone.mp4"
    with VideoWriter(src, width=64, height=48, fps=25, sample_aspect_ratio=Fraction(4, 3), rotation=90) as w:
        for f in make_frames(2, (64, 48)):
            w.write(f)
    assert probe_video(src, apply_rotation=False).sample_aspect_ratio == Fraction(4, 3)
    assert probe_video(src).sample_aspect_ratio == Fraction(3, 4)  # upright frames: ratio turned
    copy_video(src, tmp_path / "upright.mp4")  # rotated pixels, rotation 0
    assert probe_video(tmp_path / "upright.mp4").sample_aspect_ratio == Fraction(3, 4)
    copy_video(src, tmp_path / "kept.mp4", apply_rotation=False)  # stored pixels + rotation 90
    assert probe_video(tmp_path / "kept.mp4", apply_rotation=False).sample_aspect_ratio == Fraction(4, 3)


@needs["libx264"]
def test_odd_size_is_padded_or_444(tmp_path):
    frames = make_frames(3, (63, 47))
    with VideoWriter(tmp_path / "pad.mp4", width=63, height=47, fps=25) as w:
        for f in frames:
            w.write(f)
    assert (w.encoded_width, w.encoded_height) == (64, 48)
    info, back = read_all(tmp_path / "pad.mp4")
    assert (info.width, info.height) == (64, 48)
    assert psnr(back[0].rgb[:47, :63], frames[0]) > 29
    # The pad repeats the last column/row, so the extra pixels look like their neighbours.
    assert np.abs(back[0].rgb[:47, 63].astype(int) - back[0].rgb[:47, 62]).mean() < 6

    with VideoWriter(tmp_path / "444.mp4", width=63, height=47, fps=25, odd_size="yuv444p") as w:
        for f in frames:
            w.write(f)
    info, back = read_all(tmp_path / "444.mp4")
    assert (info.width, info.height, info.pix_fmt) == (63, 47, "yuv444p")


# ---------------------------------------------------------------------------------------------- rotation
@needs["libx264"]
@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_applied_by_reader(tmp_path, rotation):
    clip = make_video(tmp_path / "r.mp4", n_frames=3, size=(40, 24), rotation=rotation, audio=False)
    raw_info, raw = read_all(clip.path, apply_rotation=False)
    assert raw_info.rotation == rotation and (raw_info.width, raw_info.height) == (40, 24)
    info, upright = read_all(clip.path)
    assert info.rotation == 0 and info.source_rotation == rotation
    expected_size = (24, 40) if rotation in (90, 270) else (40, 24)
    assert (info.width, info.height) == expected_size
    for a, b in zip(raw, upright):
        np.testing.assert_array_equal(np.rot90(a.rgb, k=-rotation // 90), b.rgb)  # clockwise
        assert b.rgb.shape[:2] == (info.height, info.width)


@needs["libx264"]
def test_rotation_metadata_round_trip(tmp_path):
    clip = make_video(tmp_path / "r.mp4", n_frames=3, size=(40, 24), rotation=90, audio=False)
    copy_video(clip.path, tmp_path / "keep.mp4", apply_rotation=False)  # stored pixels + same metadata
    kept = probe_video(tmp_path / "keep.mp4", apply_rotation=False)
    assert kept.rotation == 90 and (kept.width, kept.height) == (40, 24)
    copy_video(clip.path, tmp_path / "upright.mp4")  # rotated pixels, no metadata
    up = probe_video(tmp_path / "upright.mp4", apply_rotation=False)
    assert up.rotation == 0 and (up.width, up.height) == (24, 40)


# ---------------------------------------------------------------------------------------------- interlacing
def _comb(rgb: np.ndarray) -> float:
    """Combing energy: how much each row differs from the mean of its neighbours."""
    g = rgb.astype(np.float64).mean(axis=2)
    return float(np.abs(g[1:-1] - 0.5 * (g[:-2] + g[2:])).mean())


@needs["libx264"]
def test_interlaced_source_is_deinterlaced_keeping_timing(tmp_path):
    # Woven frames: even rows show a bar at time 2t, odd rows at 2t+1 - the bar moves 6 px per
    # field, so every frame combs like real interlaced camera footage.
    h, w, n = 48, 64, 8
    woven = []
    for t in range(n):
        img = np.full((h, w, 3), 40, np.uint8)
        for field in (0, 1):
            x = 4 + 6 * (2 * t + field)
            img[field::2, x:x + 8] = 220
        woven.append(img)
    clip = make_video(tmp_path / "i.mkv", frames=woven, audio=False, pix_fmt="yuv444p",
                      options={"x264-params": "interlaced=1:tff=1", "crf": "4"})
    info_off, raw = read_all(clip.path, deinterlace="off")
    assert info_off.interlaced
    with VideoReader(clip.path) as reader:  # auto
        assert reader.deinterlaced
        clean = list(reader)
    assert [f.pts for f in clean] == [f.pts for f in raw] and len(clean) == n
    assert np.mean([_comb(f.rgb) for f in clean]) < 0.5 * np.mean([_comb(f.rgb) for f in raw])
    # Progressive sources are left alone by "auto".
    prog = make_video(tmp_path / "p.mkv", n_frames=3, audio=False)
    with VideoReader(prog.path) as reader:
        assert not reader.info.interlaced and not reader.deinterlaced


# ---------------------------------------------------------------------------------------------- bad input
def _one_line(exc: BaseException, path: Path) -> str:
    msg = str(exc)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_missing_folder_and_empty_files(tmp_path):
    for path, words in [(tmp_path / "nope.mp4", "no such file"), (tmp_path, "folder")]:
        with pytest.raises(InputError) as e:
            probe_video(path)
        assert words in _one_line(e.value, path)
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(InputError, match="empty file"):
        VideoReader(empty)


@pytest.mark.parametrize("content", [b"hello, this is text, not a video\n" * 20, bytes(range(256)) * 40])
def test_non_video_file_with_video_extension(tmp_path, content):
    path = tmp_path / "fake.mp4"
    path.write_bytes(content)
    with pytest.raises(InputError) as e:
        probe_video(path)
    assert "not a readable video" in _one_line(e.value, path)


@needs["aac"]
def test_file_without_video_stream(tmp_path):
    path = tmp_path / "audio.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=48000)
        s.layout = "mono"
        f = av.AudioFrame.from_ndarray(np.zeros((1, 2048), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 48000, 0
        c.mux(s.encode(f))
        c.mux(s.encode(None))
    with pytest.raises(InputError) as e:
        probe_video(path)
    assert "no video stream (it has audio only)" in _one_line(e.value, path)


@needs["libx264"]
def test_video_stream_with_zero_frames(tmp_path):
    path = tmp_path / "zero.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        c.start_encoding()
    with pytest.raises(InputError) as e:
        probe_video(path)
    assert "no decodable video frames" in _one_line(e.value, path)


@needs["libx264"]
def test_truncated_mp4_without_index(tmp_path):
    clip = make_video(tmp_path / "c.mp4", n_frames=12, audio=False)  # moov atom written at the end
    data = clip.path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        probe_video(cut)
    assert "corrupt or truncated" in _one_line(e.value, cut)


@needs["libx264"]
def test_truncated_mp4_with_index_first(tmp_path):
    clip = make_video(tmp_path / "c.mp4", n_frames=30, size=(64, 48), audio=False,
                      frames=[np.random.default_rng(i).integers(0, 255, (48, 64, 3), np.uint8) for i in range(30)])
    fast = tmp_path / "fast.mp4"
    with av.open(str(clip.path)) as src, av.open(str(fast), "w", options={"movflags": "+faststart"}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for p in src.demux(src.streams.video[0]):
            if p.size:
                p.stream = out
                dst.mux(p)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    info = probe_video(cut)  # the index is intact, so the file opens ...
    assert info.num_frames == 30
    with pytest.raises(InputError) as e:  # ... and the damage is reported when reached
        read_all(cut)
    assert "truncated" in _one_line(e.value, cut)
    with VideoReader(cut, errors="skip") as reader:
        frames = list(reader)
    assert 5 < len(frames) < 30 and reader.problems


@needs["libx264"]
def test_truncated_matroska_detected_from_duration(tmp_path):
    clip = make_video(tmp_path / "c.mkv", n_frames=40, size=(64, 48), audio=False,
                      frames=[np.random.default_rng(i).integers(0, 255, (48, 64, 3), np.uint8) for i in range(40)])
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(clip.path.read_bytes()[: clip.path.stat().st_size // 2])
    with pytest.raises(InputError) as e:
        read_all(cut)
    assert "truncated" in _one_line(e.value, cut)
    with VideoReader(cut, errors="skip") as reader:
        frames = list(reader)
    assert 5 < len(frames) < 40 and "truncated" in reader.problems[-1]
    # A complete file raises nothing.
    assert len(read_all(clip.path)[1]) == 40


# ---------------------------------------------------------------------------------------------- atomicity
@needs["libx264"]
@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_exception_while_writing_leaves_nothing(tmp_path, exc_type):
    out = tmp_path / "o.mp4"
    frames = make_frames(4, (32, 24))
    with pytest.raises(exc_type):
        with VideoWriter(out, width=32, height=24, fps=25) as w:
            w.write(frames[0])
            w.write(frames[1])
            assert no_leftovers(tmp_path)  # work in progress lives under a temporary name
            assert not out.exists()
            raise exc_type("interrupted")
    assert not out.exists()
    assert no_leftovers(tmp_path) == []


@needs["libx264"]
def test_unclosed_or_empty_writer_publishes_nothing(tmp_path):
    out = tmp_path / "o.mp4"
    w = VideoWriter(out, width=32, height=24, fps=25)
    w.write(make_frames(1, (32, 24))[0])
    del w  # dropped without close(): treated as aborted
    assert not out.exists() and no_leftovers(tmp_path) == []
    with pytest.raises(OutputError, match="no frames"):
        with VideoWriter(out, width=32, height=24, fps=25):
            pass
    assert not out.exists() and no_leftovers(tmp_path) == []


@needs["libx264"]
def test_writer_refuses_existing_output_and_bad_config(tmp_path):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(OutputError, match="exists"):
        VideoWriter(out, width=32, height=24, fps=25)
    assert out.read_bytes() == b"precious"
    with pytest.raises(ConfigError, match="not available"):
        VideoWriter(tmp_path / "x.mp4", width=32, height=24, fps=25, codec="no-such-codec")
    with pytest.raises(ConfigError, match="does not support pixel format"):
        VideoWriter(tmp_path / "x.mp4", width=32, height=24, fps=25, pix_fmt="rgb555le")
    with pytest.raises(ConfigError, match="lossless"):
        VideoWriter(tmp_path / "x.mp4", width=32, height=24, fps=25, codec="mpeg4", lossless=True)
    with pytest.raises(ConfigError, match="no option.*nonsense"):
        VideoWriter(tmp_path / "x.mp4", width=32, height=24, fps=25, extra_options={"nonsense": 1})
    with pytest.raises(OutputError, match="cannot start encoding"):  # invalid value: fails before any frame
        VideoWriter(tmp_path / "x.mp4", width=32, height=24, fps=25, preset="superduper")
    with pytest.raises(OutputError, match="does not exist"):
        VideoWriter(tmp_path / "missing" / "x.mp4", width=32, height=24, fps=25)
    with pytest.raises(ValueError, match="24x32x3"):
        with VideoWriter(tmp_path / "x.mp4", width=32, height=24, fps=25) as w:
            w.write(np.zeros((24, 31, 3), np.uint8))
    assert no_leftovers(tmp_path) == [] and not (tmp_path / "x.mp4").exists()
    with VideoWriter(out, width=32, height=24, fps=25, overwrite=True) as w:
        w.write(np.zeros((24, 32, 3), np.uint8))
    assert probe_video(out).num_frames == 1


@needs["libx264"]
def test_output_gets_normal_file_permissions(tmp_path):
    import os

    out = tmp_path / "o.mp4"
    with VideoWriter(out, width=32, height=24, fps=25) as w:
        w.write(np.zeros((24, 32, 3), np.uint8))
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------------------------------------- real footage
@pytest.mark.shared_data
def test_real_mp4_probe_and_read(shared_data):
    path = shared_data / "mp4" / "bikes.mp4"
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames, info.fps) == (640, 272, 250, 25)
    with VideoReader(path) as reader:
        for i, frame in enumerate(reader):
            assert frame.rgb.shape == (272, 640, 3)
            if i == 5:
                break
    assert frame.rgb.std() > 10  # real picture content, not a blank conversion


@pytest.mark.shared_data
def test_real_clip_round_trip_keeps_ntsc_timing(shared_data, tmp_path):
    src = shared_data / "mp4" / "carphone_pristine.mp4"
    info, frames, _ = copy_video(src, tmp_path / "out.mp4")
    assert info.fps == Fraction(30000, 1001) and len(frames) == 120
    out_info, out = read_all(tmp_path / "out.mp4")
    assert out_info.fps == info.fps and out_info.num_frames == 120
    assert [f.time for f in out] == pytest.approx([f.time for f in frames], abs=1e-9)
    assert out_info.duration == pytest.approx(info.duration, abs=1e-3)
    assert min(psnr(a.rgb, b.rgb) for a, b in zip(frames, out)) > 35
