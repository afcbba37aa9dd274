"""Read and write videos with PyAV (FFmpeg): any container/codec in, faithful timing and streams out.

Reading
    :func:`probe_video` describes a file (:class:`VideoInfo`); :class:`VideoReader` (or
    :func:`open_video`) decodes it with FFmpeg's frame threading and yields :class:`VideoFrame` objects
    holding an ``HxWx3`` RGB array (``uint8``; ``uint16`` for sources with more than 8 bits per sample)
    and the source timestamp. Untagged YUV is converted with the matrix players assume (BT.709 from
    720 lines up, BT.601 below); tagged sources use their tag and range. Chroma is interpolated
    properly (swscale's accurate path, ~4 dB better colour than its default fast path).

Timing
    Frames keep the source's pts in the source's time base (variable frame rate included);
    ``VideoFrame.duration`` is the gap to the next frame. Matroska cannot store negative timestamps:
    when copied audio starts before 0 (AAC priming in MP4), FFmpeg shifts every stream of an MKV
    output by the same amount, so sync is kept while absolute times move by a few milliseconds.

Rotation (decision)
    Phones store portrait video as landscape pixels plus a display matrix. By default the reader
    APPLIES the rotation to the pixels (``apply_rotation=True``): frames come out upright, ``info.width``
    and ``info.height`` are the upright size and ``info.rotation`` is 0, so writing them with
    ``rotation=info.rotation`` is correct. With ``apply_rotation=False`` frames are stored pixels and
    ``info.rotation`` is the display rotation, which :class:`VideoWriter` can store again unchanged.
    Rotation is in clockwise degrees (0/90/180/270), like the ``rotate`` tag phones write. Flips in a
    display matrix are ignored.

Damaged input (decision)
    A missing, empty, unreadable, non-video or headerless file raises :class:`~srkit.errors.InputError`
    when opened, as does a file with no video stream or no decodable frame. A file that is damaged
    further in (a truncated download, corrupt packets) raises ``InputError`` when the reader reaches the
    damage (``errors="raise"``, the default: an upscaled video silently missing frames is worse than no
    output). With ``errors="skip"`` the reader decodes everything it can, skips broken packets and
    records what it skipped in :attr:`VideoReader.problems`. A stream cut before its first keyframe
    is not damage: the decoder starts at the first keyframe, as players do.

Interlacing (decision)
    Interlaced sources (flagged by the decoder) are deinterlaced by default with FFmpeg's bwdif, one
    frame out per frame in, timestamps kept: woven fields are combs that a super-resolution model
    sharpens into artefacts. ``deinterlace="off"`` keeps the woven frames.

Writing
    :class:`VideoWriter` encodes RGB frames (H.264 CRF 18 yuv420p by default), keeps the timestamps it
    is given (variable frame rate survives), copies audio and subtitle streams packet by packet from a
    source file without re-encoding, interleaved by time, and writes to a temporary name in the
    destination folder that is renamed only after a successful :meth:`VideoWriter.close`; any error
    (or KeyboardInterrupt) inside ``with VideoWriter(...)`` removes the temporary file.
    Formats with chroma subsampling (yuv420p...) need even sizes: odd frames are padded by repeating the
    last column/row (``odd_size="pad"``, the size is then one pixel larger) or encoded as 4:4:4
    (``odd_size="yuv444p"``, exact size but fewer players). The output's colour matrix and
    primaries/transfer tags follow the source (:class:`ColorTags`), so HDR stays HDR.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Literal

import av
import numpy as np

from srkit.errors import ConfigError, InputError, OutputError
from srkit.io.atomic import check_output_path, fsync_dir, release_temp, set_default_file_mode, temp_path_for

__all__ = [
    "ColorTags",
    "VideoInfo",
    "VideoFrame",
    "VideoReader",
    "VideoWriter",
    "probe_video",
    "open_video",
    "encoder_available",
    "VIDEO_EXTENSIONS",
    "SWS_FLAGS",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts",
                    ".mts", ".flv", ".wmv", ".ogv", ".3gp", ".mxf", ".y4m", ".gif")

# swscale flags for RGB<->YUV: bicubic chroma resampling, full-precision rounding, and full horizontal
# chroma interpolation (without the FULL_CHR flags swscale's fast paths reuse one chroma sample for
# two pixels, which shows as colour fringes on sharp edges - exactly what SR output has).
SWS_FLAGS = (av.video.reformatter.Interpolation.BICUBIC | av.video.reformatter.Interpolation.ACCURATE_RND
             | av.video.reformatter.Interpolation.FULL_CHR_H_INT
             | av.video.reformatter.Interpolation.FULL_CHR_H_INP)
_CS = av.video.reformatter.Colorspace
# AVColorSpace (frame tag) -> swscale colourspace constant.
_AVCOL_TO_SWS = {1: _CS.ITU709, 4: _CS.FCC, 5: _CS.ITU601, 6: _CS.ITU601, 7: _CS.SMPTE240M,
                 9: _CS.BT2020, 10: _CS.BT2020}
_AVCOL_SPC_UNSPECIFIED = 2
_MATRIX_NAMES = {1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020nc", 10: "bt2020c"}


@dataclass(frozen=True)
class ColorTags:
    """How YUV relates to RGB and how RGB is to be displayed, as FFmpeg's enum values.

    ``matrix`` (AVColorSpace: 1 BT.709, 5/6 BT.601, 9 BT.2020) is what the reader converted with and
    the writer converts with; ``primaries`` (AVColorPrimaries) and ``trc`` (transfer, e.g. 16 PQ,
    18 HLG) are only tags - srkit does not convert between them - and 2 means unspecified. Keeping a
    source's tags on the output is what keeps HDR (BT.2020 PQ/HLG) footage looking right.
    """

    matrix: int = 1
    primaries: int = 2
    trc: int = 2

    def __post_init__(self) -> None:
        if self.matrix not in _AVCOL_TO_SWS:
            raise ConfigError(f"unsupported colour matrix {self.matrix} (supported: "
                              f"{', '.join(f'{k} {v}' for k, v in _MATRIX_NAMES.items())})")

    @property
    def matrix_name(self) -> str:
        return _MATRIX_NAMES[self.matrix]

    @property
    def hdr(self) -> bool:
        return self.trc in (16, 18)  # SMPTE ST 2084 (PQ), ARIB STD-B67 (HLG)


# ----------------------------------------------------------------------------------------------- info
@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds (first video stream), as the reader will deliver it.

    ``width``/``height`` are the size of the frames the reader yields (upright when rotation is
    applied); ``coded_width``/``coded_height`` the size stored in the file. ``rotation`` is the display
    rotation (clockwise degrees) still to be applied by a player: 0 when the reader applies it,
    ``source_rotation`` otherwise. ``num_frames`` is exact when ``num_frames_exact`` (taken from the
    container's index or counted), otherwise estimated from duration x frame rate. ``color`` holds the
    matrix the reader converts with (the tagged one, or the players' guess for untagged video) and
    the primaries/transfer tags, to be handed to :class:`VideoWriter`.
    """

    path: Path
    width: int
    height: int
    num_frames: int
    num_frames_exact: bool
    fps: Fraction
    time_base: Fraction
    codec: str
    pix_fmt: str
    bit_depth: int
    rotation: int
    source_rotation: int
    has_audio: bool
    num_audio_streams: int
    num_subtitle_streams: int
    duration: float | None
    start_time: float | None
    container: str
    coded_width: int
    coded_height: int
    stream_index: int
    color: ColorTags = ColorTags()
    interlaced: bool = False
    sample_aspect_ratio: Fraction = Fraction(1)

    @property
    def frame_interval(self) -> int:
        """One nominal frame duration (1/fps) in ``time_base`` units, at least 1."""
        return max(1, int(round(1 / (self.fps * self.time_base))))


@dataclass
class VideoFrame:
    """One decoded frame: ``rgb`` HxWx3 (uint8 or uint16), ``pts`` in the stream's time base,
    ``time`` in seconds, ``index`` counted from 0 in decode order, ``duration`` in time-base units."""

    rgb: np.ndarray
    pts: int | None
    time: float | None
    index: int = 0
    duration: int | None = None


def encoder_available(name: str) -> bool:
    """True when the installed FFmpeg (inside the PyAV wheel) has an encoder called ``name``."""
    if name not in av.codecs_available:
        return False
    try:
        av.Codec(name, "w")
    except Exception:  # noqa: BLE001 - unknown or decoder-only: not usable
        return False
    return True


def _bit_depth(pix_fmt: str | None) -> int:
    if not pix_fmt:
        return 8
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except Exception:  # noqa: BLE001 - hardware or exotic format: assume 8-bit
        return 8


def _ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's own words for an error, without errno noise or the file name repeated."""
    if isinstance(exc, av.error.FFmpegError):
        text = exc.strerror or str(exc)
    else:
        text = str(exc)
    return text.strip().rstrip(".") or type(exc).__name__


def _open_input(path: Path) -> av.container.InputContainer:
    """av.open with every failure mapped to a one-line InputError naming the file."""
    if not path.exists():
        raise InputError("no such file", path)
    if path.is_dir():
        raise InputError("is a folder, not a video file", path)
    if not os.access(path, os.R_OK):
        raise InputError("permission denied", path)
    if path.stat().st_size == 0:
        raise InputError("empty file", path)
    try:
        return av.open(str(path), "r", metadata_errors="replace")
    except av.error.EOFError:
        raise InputError("no decodable video frames (the file ends after its header)", path) from None
    except av.error.InvalidDataError:
        raise InputError("not a readable video (unknown format, or the file is corrupt or truncated)",
                         path) from None
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(f"cannot open video ({_ffmpeg_reason(exc)})", path) from None


def _pick_video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    # Cover art in audio files is a one-frame "video" stream flagged attached_pic: not a video.
    streams = [s for s in container.streams.video
               if not (int(s.disposition) & int(av.stream.Disposition.attached_pic))]
    if not streams:
        kinds = sorted({s.type for s in container.streams})
        has = f" (it has {', '.join(kinds)} only)" if kinds else ""
        raise InputError(f"no video stream{has}", path)
    return streams[0]


def _frame_color(frame: av.VideoFrame) -> ColorTags:
    """The frame's colour tags; an untagged matrix is guessed as players do (HD BT.709, SD BT.601)."""
    cs = frame.colorspace
    if cs == _AVCOL_SPC_UNSPECIFIED or cs not in _AVCOL_TO_SWS:
        cs = 1 if frame.height >= 720 else 6
    return ColorTags(matrix=cs, primaries=int(frame.color_primaries), trc=int(frame.color_trc))


def _has_frame_table(container: av.container.InputContainer) -> bool:
    """MP4/MOV sample tables list every frame exactly (AVI header counts can include placeholders)."""
    return container.format.name.startswith("mov,mp4")


def _stream_rotation_tag(stream: av.video.stream.VideoStream) -> int:
    """The legacy ``rotate`` metadata tag (clockwise degrees), for demuxers that still expose it."""
    try:
        return int(float(stream.metadata.get("rotate", 0))) % 360
    except (TypeError, ValueError):
        return 0


def _frame_rotation_cw(frame: av.VideoFrame) -> int:
    """Clockwise display rotation from the frame's display matrix, snapped to a multiple of 90."""
    ccw = frame.rotation  # PyAV: counter-clockwise degrees, from AV_FRAME_DATA_DISPLAYMATRIX
    return int(round(-ccw / 90.0)) * 90 % 360


def _parse_duration_tag(value: str | None) -> float | None:
    """Matroska per-track ``DURATION`` tag ("00:00:01.200000000") in seconds."""
    if not value:
        return None
    try:
        h, m, s = value.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
        return None


def _expected_end(stream: av.video.stream.VideoStream) -> float | None:
    """Where the video stream should end (seconds) according to the container, when it says so."""
    tb = stream.time_base
    if stream.duration and tb:
        start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        return start + float(stream.duration * tb)
    return _parse_duration_tag(stream.metadata.get("DURATION"))


# --------------------------------------------------------------------------------------------- reader
class VideoReader:
    """Decode the first video stream of ``path`` to RGB frames; a context manager and an iterator.

    >>> with VideoReader("clip.mp4") as reader:
    ...     for frame in reader:          # VideoFrame(rgb=HxWx3 uint8, pts=..., time=...)
    ...         ...

    The file is opened, checked and its first frame decoded at construction, so a bad file fails
    before any work starts. A reader iterates once.

    Args:
        dtype: ``np.uint8`` or ``np.uint16``; ``None`` picks uint16 for sources above 8 bits.
        apply_rotation: rotate frames upright (see the module docstring).
        errors: ``"raise"`` (corrupt/truncated data raises InputError) or ``"skip"`` (decode what can be
            decoded; problems are listed in :attr:`problems`).
        threads: decoder threads, 0 = FFmpeg's automatic choice.
        count_frames: count the frames by reading every packet (no decoding) when the container has no
            frame count (Matroska/WebM), making ``info.num_frames`` exact. Costs one fast pass.
        fast_conversion: use swscale's fast YUV->RGB path (nearest-neighbour chroma, ~3-4x faster,
            ~4 dB lower colour round-trip PSNR; see benchmarks/video_io_speed.py). The default
            interpolates chroma properly, which matters for the model's input.
        deinterlace: ``"auto"`` deinterlaces (FFmpeg's bwdif, same frame count and timestamps) when
            the source is flagged interlaced - woven fields look like combs to a super-resolution
            model and get amplified; ``"on"`` forces it, ``"off"`` keeps the woven frames.
            :attr:`deinterlaced` says what was done.
    """

    def __init__(self, path: str | os.PathLike, *, dtype: type | np.dtype | None = None,
                 apply_rotation: bool = True, errors: Literal["raise", "skip"] = "raise",
                 threads: int = 0, count_frames: bool = False, fast_conversion: bool = False,
                 deinterlace: Literal["auto", "on", "off"] = "auto"):
        if deinterlace not in ("auto", "on", "off"):
            raise ValueError(f"deinterlace must be 'auto', 'on' or 'off', not {deinterlace!r}")
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
        if dtype is not None and np.dtype(dtype) not in (np.dtype(np.uint8), np.dtype(np.uint16)):
            raise ValueError(f"dtype must be uint8 or uint16, not {np.dtype(dtype)}")
        self.path = Path(path)
        self.errors = errors
        self.apply_rotation = apply_rotation
        self.problems: list[str] = []
        self._container = _open_input(self.path)
        try:
            self._stream = _pick_video_stream(self._container, self.path)
            if count_frames and not (self._stream.frames and _has_frame_table(self._container)):
                exact_count = self._count_packets()
            else:
                exact_count = None
            self._stream.thread_type = "AUTO"
            self._stream.codec_context.thread_count = threads
            self._expected_end = _expected_end(self._stream)
            self._decoded = self._decode()
            try:
                first = next(self._decoded)
            except StopIteration:
                raise InputError("no decodable video frames", self.path) from None
            self._first: av.VideoFrame | None = first
            self._first_props = (first.width, first.height, first.format)
            self.info = self._make_info(first, exact_count)
        except BaseException:
            self.close()
            raise
        self._dtype = np.dtype(np.uint16 if self.info.bit_depth > 8 else np.uint8) if dtype is None \
            else np.dtype(dtype)
        self._rgb_format = "rgb48le" if self._dtype == np.uint16 else "rgb24"
        self._reformatter = av.video.reformatter.VideoReformatter()
        self._fast = fast_conversion
        self._matrix_sws = _AVCOL_TO_SWS[self.info.color.matrix]
        self._rotate_k = (self.info.source_rotation // 90) if apply_rotation else 0
        self._deinterlace_mode = deinterlace
        self.deinterlaced = deinterlace == "on" or (deinterlace == "auto" and self.info.interlaced)
        if self.deinterlaced:
            log.info("%s: interlaced video, deinterlacing with bwdif (deinterlace='off' to keep fields)",
                     self.path)
        self._iterated = False

    # -- inspection -------------------------------------------------------------------------------
    def _count_packets(self) -> int:
        """Count video packets without decoding (demuxing is cheap), then start again."""
        n = 0
        try:
            for packet in self._container.demux(self._stream):
                if packet.size:
                    n += 1
        except av.error.FFmpegError as exc:
            raise InputError(f"corrupt or truncated video ({_ffmpeg_reason(exc)})", self.path) from None
        # Reopen rather than seek(0): not every demuxer can seek back to the start exactly.
        self._container.close()
        self._container = _open_input(self.path)
        self._stream = _pick_video_stream(self._container, self.path)
        return n

    def _make_info(self, first: av.VideoFrame, exact_count: int | None) -> VideoInfo:
        c, s = self._container, self._stream
        tb = s.time_base or Fraction(1, 90000)
        fps = s.average_rate or s.guessed_rate or s.base_rate
        if not fps or fps <= 0:
            fps = Fraction(25)
            self.problems.append("no frame rate in the file; assuming 25 fps")
        fps = Fraction(fps)
        duration = None
        if s.duration and s.time_base:
            duration = float(s.duration * s.time_base)
        elif _parse_duration_tag(s.metadata.get("DURATION")) is not None:
            duration = _parse_duration_tag(s.metadata.get("DURATION"))
        elif c.duration:
            duration = c.duration / av.time_base
        if exact_count is not None:
            num, exact = exact_count, True
        elif s.frames:
            # MP4/MOV sample tables list every frame; other containers' counts (AVI headers) can
            # include placeholders, so they are only estimates.
            num, exact = int(s.frames), _has_frame_table(c)
        elif duration:
            num, exact = max(1, int(round(duration * fps))), False
        else:
            num, exact = 0, False
        color = _frame_color(first)
        # Anamorphic video (DVD, HDV) has non-square pixels; turning the picture swaps the ratio.
        sar = Fraction(s.sample_aspect_ratio or s.codec_context.sample_aspect_ratio or 1)
        if sar <= 0:
            sar = Fraction(1)
        rot = _frame_rotation_cw(first) or _stream_rotation_tag(s)
        w, h = first.width, first.height
        out_w, out_h = (h, w) if (self.apply_rotation and rot in (90, 270)) else (w, h)
        if self.apply_rotation and rot in (90, 270):
            sar = 1 / sar
        pix_fmt = first.format.name
        start = float(s.start_time * tb) if s.start_time is not None else None
        return VideoInfo(
            path=self.path, width=out_w, height=out_h, num_frames=num, num_frames_exact=exact, fps=fps,
            time_base=Fraction(tb), codec=s.codec_context.name, pix_fmt=pix_fmt, bit_depth=_bit_depth(pix_fmt),
            rotation=0 if self.apply_rotation else rot, source_rotation=rot,
            has_audio=len(c.streams.audio) > 0, num_audio_streams=len(c.streams.audio),
            num_subtitle_streams=len(c.streams.subtitles), duration=duration, start_time=start,
            container=c.format.name, coded_width=w, coded_height=h, stream_index=s.index, color=color,
            interlaced=bool(first.interlaced_frame), sample_aspect_ratio=sar,
        )

    # -- decoding ---------------------------------------------------------------------------------
    def _problem(self, message: str) -> None:
        if self.errors == "raise":
            raise InputError(message, self.path)
        self.problems.append(message)
        log.warning("%s: %s", self.path, message)

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Yield decoded frames; damaged data is raised or recorded per ``errors``."""
        stream = self._stream
        tb = stream.time_base or Fraction(1, 90000)
        n = 0
        last_end: float | None = None
        packets = self._container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                self._problem(f"corrupt or truncated video data after {n} frames ({_ffmpeg_reason(exc)})")
                break
            try:
                frames = packet.decode()  # the final empty packet flushes the decoder
            except av.error.FFmpegError as exc:
                where = f" at {float(packet.pts * tb):.3f} s" if packet.pts is not None else ""
                self._problem(f"corrupt or truncated video data{where}, after {n} frames "
                              f"({_ffmpeg_reason(exc)})")
                continue
            for frame in frames:
                n += 1
                if frame.pts is not None:
                    dur = frame.duration or 0
                    last_end = float((frame.pts + dur) * tb)
                yield frame
        # Demuxers stop quietly at the end of a truncated Matroska/MP4 file: compare where the video
        # ended with where the container says it ends.
        if n and self._expected_end is not None and last_end is not None:
            # MP4 track durations include the initial B-frame dts offset, so allow a few frames or
            # a quarter second; real truncation loses far more.
            fps = stream.average_rate or stream.guessed_rate or Fraction(25)
            slack = max(4.0 / float(fps), 0.25)
            if last_end + slack < self._expected_end:
                self._problem(f"truncated or corrupt: video stops at {last_end:.3f} s after {n} frames, "
                              f"but the file says it lasts {self._expected_end:.3f} s")

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        kwargs: dict[str, Any] = {"format": self._rgb_format}
        if not self._fast:
            kwargs["interpolation"] = SWS_FLAGS
        if not frame.format.is_rgb:
            cs = frame.colorspace
            # Untagged frames use the matrix decided from the first frame (the players' guess).
            kwargs["src_colorspace"] = _AVCOL_TO_SWS.get(cs, self._matrix_sws)
        rgb = self._reformatter.reformat(frame, **kwargs).to_ndarray()
        if self._rotate_k:
            rgb = np.rot90(rgb, k=-self._rotate_k)  # negative k: clockwise
        return np.ascontiguousarray(rgb)

    def __iter__(self) -> Iterator[VideoFrame]:
        if self._iterated:
            raise RuntimeError("a VideoReader iterates once; open the file again to re-read it")
        self._iterated = True
        return self._frames()

    def _deinterlace(self, frames: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        """Run frames through FFmpeg's bwdif (one output frame per input frame, timestamps kept)."""
        width, height, fmt = self._first_props
        graph = av.filter.Graph()
        src = graph.add_buffer(width=width, height=height, format=fmt, time_base=self.info.time_base)
        # deint=interlaced leaves progressive frames of mixed content alone; "on" forces every frame.
        deint = "all" if self._deinterlace_mode == "on" else "interlaced"
        bwdif = graph.add("bwdif", f"mode=send_frame:parity=auto:deint={deint}")
        sink = graph.add("buffersink")
        src.link_to(bwdif)
        bwdif.link_to(sink)
        graph.configure()

        tb = self.info.time_base

        def drain() -> Iterator[av.VideoFrame]:
            while True:
                try:
                    out = graph.vpull()
                except (av.error.BlockingIOError, av.error.EOFError):
                    return
                # bwdif halves its output time base (room for field rate); bring pts back.
                if out.pts is not None and out.time_base and out.time_base != tb:
                    out.pts = int(round(out.pts * out.time_base / tb))
                    out.time_base = tb
                yield out

        for frame in frames:
            graph.vpush(frame)
            yield from drain()
        graph.vpush(None)  # flush the one frame bwdif holds back
        yield from drain()

    def _frames(self) -> Iterator[VideoFrame]:
        tb = self.info.time_base
        step = self.info.frame_interval
        last_pts: int | None = None
        index = 0
        # One frame of look-ahead: a frame's duration is the gap to the next pts (decoders report
        # packet durations in decode order, which B-frames scramble).
        pending: tuple[av.VideoFrame, int] | None = None
        last_gap: int | None = None
        source: Iterator[av.VideoFrame] = itertools.chain([self._first], self._decoded)
        self._first = None
        if self.deinterlaced:
            source = self._deinterlace(source)
        try:
            for frame in source:
                pts = frame.pts if frame.pts is not None else frame.dts
                if pts is None or (last_pts is not None and pts <= last_pts):
                    # Missing or repeated timestamps (raw streams, broken muxers): continue the
                    # nominal rate so every frame keeps a distinct, increasing time.
                    pts = 0 if last_pts is None else last_pts + step
                last_pts = pts
                if pending is not None:
                    prev, prev_pts = pending
                    last_gap = pts - prev_pts
                    yield VideoFrame(rgb=self._to_rgb(prev), pts=prev_pts, time=float(prev_pts * tb),
                                     index=index, duration=last_gap)
                    index += 1
                pending = (frame, pts)
            if pending is not None:
                prev, prev_pts = pending
                # The last frame lasts until the end the container announces (Matroska's DURATION
                # tag, the MP4 track duration) when that is plausible; otherwise as long as the
                # previous gap, which is exact for constant frame rates.
                duration = last_gap if last_gap else step
                if self._expected_end is not None:
                    to_end = int(round(self._expected_end / tb)) - prev_pts
                    if 0 < to_end <= 2 * duration:
                        duration = to_end
                yield VideoFrame(rgb=self._to_rgb(prev), pts=prev_pts, time=float(prev_pts * tb),
                                 index=index, duration=duration)
        finally:
            self.close()

    # -- lifetime ---------------------------------------------------------------------------------
    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            self._container = None
            with contextlib.suppress(Exception):
                container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def open_video(path: str | os.PathLike, **kwargs: Any) -> VideoReader:
    """Open ``path`` for reading; keyword arguments go to :class:`VideoReader`."""
    return VideoReader(path, **kwargs)


def probe_video(path: str | os.PathLike, *, apply_rotation: bool = True, count_frames: bool = False) -> VideoInfo:
    """Describe a video (decodes only its first frame). Raises InputError for anything unreadable."""
    with VideoReader(path, apply_rotation=apply_rotation, count_frames=count_frames) as reader:
        return reader.info


# --------------------------------------------------------------------------------------------- writer
_LOSSLESS_RGB_FORMAT = {  # codec -> (8-bit format, >8-bit format or None) that stores RGB exactly
    "ffv1": ("bgr0", "gbrp16le"),
    "libx264rgb": ("rgb24", None),
    "libx265": ("gbrp", "gbrp12le"),
    "libvpx-vp9": ("gbrp", None),
}
_CRF_CODECS = {"libx264", "libx264rgb", "libx265", "libvpx-vp9", "libsvtav1", "libaom-av1"}
# The encoders' own CRF scales (x264/x265: 0..51, VP9/AV1: 0..63); FFmpeg passes values beyond them on
# without a word and the encoder clamps or ignores them, so a typo would go unnoticed.
_CRF_MAX = {"libx264": 51, "libx264rgb": 51, "libx265": 51, "libvpx-vp9": 63, "libsvtav1": 63, "libaom-av1": 63}


def check_crf(codec: str, crf: float) -> None:
    """Refuse a CRF the encoder cannot use (encoders without CRF ignore it)."""
    if codec not in _CRF_MAX:
        return
    try:
        value = float(crf)
    except (TypeError, ValueError):
        raise ConfigError(f"--crf must be a number, got {crf!r}") from None
    if not (math.isfinite(value) and 0 <= value <= _CRF_MAX[codec]):
        raise ConfigError(f"--crf {value:g} is outside {codec}'s range 0..{_CRF_MAX[codec]} (lower is better quality)")


def _as_rate(fps: Fraction | float | int) -> Fraction:
    """A frame rate as a Fraction; floats near the NTSC rates (29.97, 23.976, 59.94) become N*1000/1001."""
    if isinstance(fps, (Fraction, int)):
        return Fraction(fps)
    fps = float(fps)
    ntsc = Fraction(round(fps * 1.001) * 1000, 1001)
    if abs(float(ntsc) - fps) < 5e-4 and round(fps * 1.001) != fps:
        return ntsc
    return Fraction(fps).limit_denominator(1001)


def _chroma_subsampled(pix_fmt: str) -> tuple[bool, bool]:
    fmt = av.VideoFormat(pix_fmt, 16, 16)
    return fmt.chroma_width() < 16, fmt.chroma_height() < 16


class VideoWriter:
    """Encode RGB frames to a video file atomically, optionally copying audio/subtitles from a source.

    >>> with VideoWriter("out.mp4", width=W, height=H, fps=info.fps, time_base=info.time_base,
    ...                  copy_streams_from="in.mp4") as writer:
    ...     for frame in reader:
    ...         writer.write(upscale(frame.rgb), pts=frame.pts)

    Args:
        width, height: frame size given to :meth:`write` (the encoded size may be padded, see
            ``odd_size``).
        fps: nominal frame rate (stored as the stream's frame rate; used for missing pts).
        time_base: unit of the ``pts`` passed to :meth:`write`; default ``1/fps``. Pass the source's
            ``info.time_base`` with its ``frame.pts`` to keep timestamps (VFR included).
        codec: FFmpeg encoder name (``libx264``, ``libx265``, ``libvpx-vp9``, ``ffv1``, ...).
        crf: quality for CRF-capable encoders (x264/x265/vp9/av1); ignored by others and by lossless.
        pix_fmt: encoder pixel format; ``None`` = ``yuv420p`` (``yuv420p10le`` when ``bit_depth`` > 8
            and the codec has it), or an RGB format when ``lossless``.
        lossless: exact RGB (ffv1 as bgr0/gbrp16le, x264 via libx264rgb qp 0, x265/vp9 lossless gbrp).
            With an explicit YUV ``pix_fmt`` the codec is lossless but the RGB->YUV step is not.
        copy_streams_from: a source file whose audio and subtitle streams are copied (no re-encoding),
            with its attachments (Matroska only), chapters and title. Streams the output container
            cannot hold are skipped with a warning; those and data/extra video streams are listed in
            :attr:`skipped_streams`.
        rotation: display rotation (clockwise degrees) stored as a display matrix (MP4/MOV/MKV).
        overwrite: replace an existing ``path``.
        extra_options: encoder options passed to FFmpeg, overriding srkit's (e.g. ``{"preset": "slow"}``).
        bit_depth: bits of the content (8, 10, 16...): picks the default ``pix_fmt``.
        odd_size: ``"pad"`` or ``"yuv444p"``: what to do with odd sizes in a subsampled format.
        preset: encoder speed preset (x264/x265), default ``medium``.
        color: matrix to convert RGB->YUV with and primaries/transfer to tag (pass the source's
            ``info.color``). ``None``: the colour of ``copy_streams_from``'s video when given (the
            output is a processed version of it, HDR stays HDR), else BT.709. Always tagged, so
            players never guess.
        sample_aspect_ratio: pixel aspect ratio to store (anamorphic sources); ``None``: that of
            ``copy_streams_from``'s video when given, else square pixels. Upscaling keeps it.
    """

    def __init__(self, path: str | os.PathLike, *, width: int, height: int, fps: Fraction | float | int,
                 time_base: Fraction | None = None, codec: str = "libx264", crf: int | float = 18,
                 pix_fmt: str | None = None, lossless: bool = False,
                 copy_streams_from: str | os.PathLike | None = None, rotation: int = 0,
                 overwrite: bool = False, extra_options: dict[str, Any] | None = None, bit_depth: int = 8,
                 odd_size: Literal["pad", "yuv444p"] = "pad", preset: str | None = None,
                 color: ColorTags | None = None, sample_aspect_ratio: Fraction | None = None):
        self.path = Path(path)
        self._closed = False
        self._container: av.container.OutputContainer | None = None
        self._source: av.container.InputContainer | None = None
        self._tmp: Path | None = None
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.fps = _as_rate(fps)
        if self.fps <= 0:
            raise ConfigError(f"frame rate must be positive, got {fps}")
        self.time_base = Fraction(time_base) if time_base is not None else 1 / self.fps
        if rotation % 90:
            raise ConfigError(f"rotation must be a multiple of 90 degrees, got {rotation}")
        if odd_size not in ("pad", "yuv444p"):
            raise ConfigError(f"odd_size must be 'pad' or 'yuv444p', not {odd_size!r}")
        self.rotation = int(rotation) % 360
        self.skipped_streams: list[str] = []
        self.frames_written = 0

        codec, pix_fmt, options = self._resolve_codec(codec, pix_fmt, lossless, crf, bit_depth, preset)
        # Odd sizes with chroma subsampling: encoders reject them (x264: "width not divisible by 2").
        sub_w, sub_h = _chroma_subsampled(pix_fmt)
        pad_w = 1 if (sub_w and self.width % 2) else 0
        pad_h = 1 if (sub_h and self.height % 2) else 0
        if (pad_w or pad_h) and odd_size == "yuv444p":
            pix_fmt = pix_fmt.replace("420", "444").replace("422", "444")
            self._check_pix_fmt(codec, pix_fmt)
            pad_w = pad_h = 0
        self._pad = (pad_h, pad_w)
        self.encoded_width, self.encoded_height = self.width + pad_w, self.height + pad_h
        if pad_w or pad_h:
            log.info("%s: %dx%d is odd for %s; padding to %dx%d", self.path, self.width, self.height,
                     pix_fmt, self.encoded_width, self.encoded_height)
        options.update({str(k): str(v) for k, v in (extra_options or {}).items()})
        # FFmpeg silently ignores option names it does not know: catch typos here.
        known = av.CodecContext.create(codec, "w").supported_options
        names = {o.name for o in known.generic} | {o.name for o in known.private}
        unknown = sorted(k for k in options if k not in names)
        if unknown:
            raise ConfigError(f"encoder {codec} has no option(s) {', '.join(unknown)}")
        self.codec, self.pix_fmt, self.options = codec, pix_fmt, options

        check_output_path(self.path, overwrite=overwrite)
        source_path = Path(copy_streams_from) if copy_streams_from is not None else None
        if (color is None or sample_aspect_ratio is None) and source_path is not None:
            source_info = probe_video(source_path, apply_rotation=False)
            color = source_info.color if color is None else color
            if sample_aspect_ratio is None:
                # Stored pixels' ratio; if the frames were turned by 90/270 degrees on the way (the
                # reader's default), the ratio turns with them.
                sample_aspect_ratio = source_info.sample_aspect_ratio
                if (source_info.rotation - self.rotation) % 180 == 90:
                    sample_aspect_ratio = 1 / sample_aspect_ratio
        self.color = color if color is not None else ColorTags()
        self.sample_aspect_ratio = Fraction(sample_aspect_ratio) if sample_aspect_ratio else Fraction(1)
        if self.sample_aspect_ratio <= 0:
            raise ConfigError(f"sample aspect ratio must be positive, got {sample_aspect_ratio}")
        if source_path is not None:
            self._source = _open_input(source_path)
        try:
            self._tmp = temp_path_for(self.path, clean_stale=True)  # a killed run's leftovers go
            try:
                self._container = av.open(str(self._tmp), "w")
            except (av.error.FFmpegError, ValueError) as exc:
                raise OutputError(f"cannot write a video with this extension ({_ffmpeg_reason(exc)})",
                                  self.path) from None
            self._setup_video_stream()
            if self._source is not None:
                self._setup_copied_streams(source_path)
            # Open the encoder and write the header now, so a bad option, size or stream combination
            # fails before the caller spends hours producing frames.
            try:
                self._container.start_encoding()
            except (av.error.FFmpegError, ValueError) as exc:
                raise OutputError(f"cannot start encoding with {self.codec} {self.pix_fmt} "
                                  f"{self.encoded_width}x{self.encoded_height} "
                                  f"options {self.options} ({_ffmpeg_reason(exc)})", self.path) from None
        except BaseException:
            self.abort()
            raise
        self._last_pts: int | None = None
        self._durations: dict[int, int] = {}
        self._nominal_step = max(1, round(1 / (self.fps * self.time_base)))
        self._last_gap: int | None = None
        self._last_auto = False
        self._warned_pts = False
        self._reformatter = av.video.reformatter.VideoReformatter()

    # -- configuration ----------------------------------------------------------------------------
    @staticmethod
    def _check_pix_fmt(codec: str, pix_fmt: str) -> None:
        formats = [f.name for f in (av.Codec(codec, "w").video_formats or ())]
        if formats and pix_fmt not in formats:
            raise ConfigError(f"encoder {codec} does not support pixel format {pix_fmt} "
                              f"(it supports: {', '.join(formats)})")

    def _resolve_codec(self, codec: str, pix_fmt: str | None, lossless: bool, crf: float, bit_depth: int,
                       preset: str | None) -> tuple[str, str, dict[str, str]]:
        if not encoder_available(codec):
            raise ConfigError(f"video encoder {codec!r} is not available in this FFmpeg build")
        if av.Codec(codec, "w").type != "video":
            raise ConfigError(f"{codec!r} is not a video encoder")
        high = bit_depth > 8
        options: dict[str, str] = {}
        if codec == "ffv1":
            lossless = True  # ffv1 is always lossless
        if lossless:
            if codec == "libx264" and (pix_fmt is None or av.VideoFormat(pix_fmt).is_rgb):
                codec = "libx264rgb"  # x264's RGB entry point: lossless RGB without a YUV round trip
            if codec not in _LOSSLESS_RGB_FORMAT:
                raise ConfigError(f"no lossless mode for encoder {codec!r}; use ffv1, libx264, libx265 "
                                  "or libvpx-vp9")
            if pix_fmt is None:
                fmt8, fmt16 = _LOSSLESS_RGB_FORMAT[codec]
                if high and fmt16 is None:
                    raise ConfigError(f"{codec} cannot store more than 8 bits losslessly as RGB; use ffv1")
                pix_fmt = fmt16 if high else fmt8
            if codec in ("libx264", "libx264rgb"):
                options["qp"] = "0"
            elif codec == "libx265":
                options["x265-params"] = "lossless=1:log-level=error"
            elif codec == "libvpx-vp9":
                options["lossless"] = "1"
        else:
            if pix_fmt is None:
                pix_fmt = "yuv420p"
                if high:
                    formats = [f.name for f in (av.Codec(codec, "w").video_formats or ())]
                    if "yuv420p10le" in formats:
                        pix_fmt = "yuv420p10le"
            if codec in _CRF_CODECS:
                check_crf(codec, crf)
                options["crf"] = str(crf)
            if codec == "libvpx-vp9":
                # Constant quality needs a zero target bitrate; 'good'+cpu-used 4 and row threading keep
                # VP9 from being the slowest step of the pipeline.
                options.update({"b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"})
        if codec in ("libx264", "libx264rgb", "libx265"):
            options["preset"] = preset or "medium"
        if codec == "libx265":  # x265 prints its statistics to stderr unless told not to
            options.setdefault("x265-params", "log-level=error")
        self._check_pix_fmt(codec, pix_fmt)
        return codec, pix_fmt, options

    def _setup_video_stream(self) -> None:
        assert self._container is not None
        try:
            stream = self._container.add_stream(self.codec, rate=self.fps, options=dict(self.options))
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(f"cannot add a {self.codec} stream ({_ffmpeg_reason(exc)})", self.path) from None
        stream.width, stream.height = self.encoded_width, self.encoded_height
        stream.pix_fmt = self.pix_fmt
        stream.time_base = self.time_base  # a hint: muxers may pick their own and rescale
        cc = stream.codec_context
        cc.time_base = self.time_base
        cc.framerate = self.fps
        self._yuv = not av.VideoFormat(self.pix_fmt).is_rgb
        if self._yuv:
            # Tag what we convert with (limited range, as every player expects), so nobody guesses.
            cc.colorspace = self.color.matrix
            cc.color_range = 1  # AVCOL_RANGE_MPEG
        cc.color_primaries = self.color.primaries
        cc.color_trc = self.color.trc
        if self.sample_aspect_ratio != 1:
            cc.sample_aspect_ratio = self.sample_aspect_ratio
        if self.rotation:
            stream.set_display_rotation(-self.rotation)  # PyAV: counter-clockwise degrees
        self._video = stream

    def _setup_copied_streams(self, source_path: Path) -> None:
        assert self._container is not None and self._source is not None
        supported = self._container.supported_codecs
        self._copy_map: dict[int, Any] = {}
        video_index = _pick_video_stream(self._source, source_path).index
        for s in self._source.streams:
            if s.type == "attachment":
                # Fonts for ASS subtitles, cover art...: only Matroska can hold attachments.
                label = f"attachment #{s.index} ({s.name})"
                if self._container.format.name == "matroska":
                    self._container.add_attachment(s.name, s.mimetype, s.data)
                else:
                    self.skipped_streams.append(label)
                    warnings.warn(f"{self.path}: cannot store {label} in a {self.path.suffix} file; skipped",
                                  stacklevel=3)
                continue
            if s.type not in ("audio", "subtitle"):
                if s.index != video_index:  # timecode/telemetry data, other video angles: not copied
                    self.skipped_streams.append(f"{s.type} stream #{s.index}")
                    log.info("%s: not copying %s stream #%d of %s", self.path, s.type, s.index, source_path)
                continue
            name = s.codec_context.name if s.codec_context is not None else None
            name = {"srt": "subrip"}.get(name, name)
            label = f"{s.type} stream #{s.index} ({name})"
            if name is None or name not in supported:
                self.skipped_streams.append(label)
                warnings.warn(f"{self.path}: cannot copy {label} into a {self.path.suffix} file; skipped",
                              stacklevel=3)
                continue
            try:
                out = self._container.add_stream_from_template(s)
            except (av.error.FFmpegError, ValueError) as exc:
                self.skipped_streams.append(label)
                warnings.warn(f"{self.path}: cannot copy {label} ({_ffmpeg_reason(exc)}); skipped", stacklevel=3)
                continue
            for key, value in s.metadata.items():
                if key.upper() not in ("DURATION", "ENCODER", "HANDLER_NAME", "VENDOR_ID"):
                    out.metadata[key] = value
            with contextlib.suppress(Exception):
                out.disposition = s.disposition
            self._copy_map[s.index] = out
        with contextlib.suppress(Exception):
            for key, value in self._source.metadata.items():
                if key.lower() not in ("encoder", "major_brand", "minor_version", "compatible_brands"):
                    self._container.metadata[key] = value
            chapters = self._source.chapters()
            if chapters:
                self._container.set_chapters(chapters)
        self._copy_source_path = source_path
        self._copy_packets = (self._source.demux(*[self._source.streams[i] for i in self._copy_map])
                              if self._copy_map else iter(()))
        self._copy_next: av.Packet | None = None
        self._copy_done = not self._copy_map

    # -- copying ----------------------------------------------------------------------------------
    def _next_copy_packet(self) -> av.Packet | None:
        if self._copy_next is None and not self._copy_done:
            while True:
                try:
                    packet = next(self._copy_packets)
                except StopIteration:
                    self._copy_done = True
                    break
                except av.error.FFmpegError as exc:
                    raise InputError(f"cannot copy audio/subtitles: corrupt data ({_ffmpeg_reason(exc)})",
                                     self._copy_source_path) from None
                if packet.size == 0:  # PyAV's end-of-stream marker packets
                    continue
                self._copy_next = packet
                break
        return self._copy_next

    def _mux_copied_until(self, seconds: float | None) -> None:
        """Mux copied packets whose decode time is <= ``seconds`` (all when None), keeping order."""
        if self._source is None:
            return
        assert self._container is not None
        while True:
            packet = self._next_copy_packet()
            if packet is None:
                return
            ts = packet.dts if packet.dts is not None else packet.pts
            if seconds is not None and ts is not None and float(ts * packet.time_base) > seconds:
                return
            self._copy_next = None
            packet.stream = self._copy_map[packet.stream_index]
            self._container.mux(packet)

    def _mux_video(self, packets: list[av.Packet]) -> None:
        assert self._container is not None
        for packet in packets:
            if packet.pts is not None:
                duration = self._durations.pop(packet.pts, None)
                if duration is not None and packet.time_base == self.time_base:
                    packet.duration = duration
            ts = packet.dts if packet.dts is not None else packet.pts
            if ts is not None and packet.time_base:
                self._mux_copied_until(float(ts * packet.time_base))
            self._container.mux(packet)

    # -- writing ----------------------------------------------------------------------------------
    def write(self, rgb: np.ndarray, pts: int | None = None, duration: int | None = None) -> None:
        """Encode one HxWx3 RGB frame (uint8 or uint16) at ``pts`` (``time_base`` units).

        ``pts=None`` continues at the nominal frame rate. Timestamps must increase; a repeated or
        backwards pts (broken source) is moved just after the previous one so no frame is lost.
        ``duration`` (time-base units; the reader's ``frame.duration``) sets the frame's length; without
        it a frame lasts until the next pts and the last one as long as the one before it.
        """
        if self._closed or self._container is None:
            raise RuntimeError("VideoWriter is closed")
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[:2] != (self.height, self.width):
            raise ValueError(f"expected a {self.height}x{self.width}x3 frame, got shape {rgb.shape}")
        if rgb.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"frames must be uint8 or uint16, got {rgb.dtype}")
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + self._nominal_step
        pts = int(pts)
        if self._last_pts is not None and pts <= self._last_pts:
            if not self._warned_pts:
                log.warning("%s: non-increasing timestamp %d after %d; shifted to keep every frame",
                            self.path, pts, self._last_pts)
                self._warned_pts = True
            pts = self._last_pts + 1
        # Encoders do not carry frame durations to packets, and muxers need them for the last frame
        # (MP4 sample duration, Matroska block duration): keep them by pts and re-attach them when
        # the packets are muxed. Without a given duration, assume the previous gap, and correct the
        # previous frame to the real gap while its packet is still inside the encoder.
        prev = self._last_pts
        if prev is not None:
            gap = pts - prev
            if self._last_auto and prev in self._durations:
                self._durations[prev] = gap
            self._last_gap = gap
        auto = not duration
        self._durations[pts] = int(duration) if duration else (self._last_gap or self._nominal_step)
        self._last_auto = auto
        self._last_pts = pts
        if any(self._pad):
            rgb = np.pad(rgb, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        fmt = "rgb48le" if rgb.dtype == np.uint16 else "rgb24"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=fmt)
        if self._yuv:
            frame = self._reformatter.reformat(frame, format=self.pix_fmt,
                                               dst_colorspace=_AVCOL_TO_SWS[self.color.matrix],
                                               dst_color_range=1, interpolation=SWS_FLAGS)
        elif frame.format.name != self.pix_fmt:
            frame = self._reformatter.reformat(frame, format=self.pix_fmt, interpolation=SWS_FLAGS)
        frame.pts = pts
        frame.time_base = self.time_base
        try:
            self._mux_video(self._video.encode(frame))
        except av.error.FFmpegError as exc:
            raise OutputError(f"video encoding failed ({_ffmpeg_reason(exc)})", self.path) from None
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder, mux the remaining copied packets, and rename into place."""
        if self._closed:
            return
        if self._container is None:
            self.abort()
            return
        try:
            if self.frames_written == 0:
                raise OutputError("no frames were written", self.path)
            try:
                self._mux_video(self._video.encode(None))
                self._mux_copied_until(None)
                self._container.close()
            except av.error.FFmpegError as exc:
                raise OutputError(f"cannot finish the video ({_ffmpeg_reason(exc)})", self.path) from None
            self._container = None
            assert self._tmp is not None
            with open(self._tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            set_default_file_mode(self._tmp)
            os.replace(self._tmp, self.path)
            release_temp(self._tmp)
            self._tmp = None
            fsync_dir(self.path.parent if str(self.path.parent) else Path("."))
        except BaseException:
            self.abort()
            raise
        self._close_source()
        self._closed = True

    def abort(self) -> None:
        """Stop without producing ``path``: close everything and delete the temporary file."""
        self._closed = True
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        self._close_source()
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
            release_temp(self._tmp)
            self._tmp = None

    def _close_source(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            with contextlib.suppress(Exception):
                source.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # Never publish an unfinished file: an unclosed writer is an aborted one.
        if not getattr(self, "_closed", True):
            self.abort()

