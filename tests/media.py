"""Make small, deterministic test videos with PyAV (used by the I/O and end-to-end tests).

Everything here writes real files through FFmpeg's encoders and muxers, so tests exercise the same
code paths as user footage: constant or variable frame rate, an audio track (a sine wave), a text
subtitle track, display-matrix rotation, 8- or 10-bit pixel formats.

>>> from tests.media import make_video
>>> clip = make_video(tmp_path / "clip.mp4", n_frames=12, size=(64, 48), audio=True, vfr=True)
>>> clip.frames[0].shape, clip.pts[:3]
((48, 64, 3), [0, 40, 120])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["MadeVideo", "make_video", "make_frames", "encoder_available", "VFR_PATTERN"]

# Frame durations (in 1/fps units) cycled through for variable-frame-rate clips: irregular on purpose,
# so a writer that re-times frames to a constant rate changes the timestamps and fails the tests.
VFR_PATTERN = (1, 2, 1, 3, 1, 1, 2)


@dataclass
class MadeVideo:
    """What :func:`make_video` wrote: the source RGB frames and their timestamps."""

    path: Path
    frames: list[np.ndarray]
    pts: list[int]  # in ``time_base`` units, as given to the encoder
    time_base: Fraction
    fps: Fraction
    audio_seconds: float = 0.0
    subtitles: list[tuple[float, float, str]] = field(default_factory=list)


def encoder_available(name: str) -> bool:
    """True when the installed PyAV/FFmpeg build can encode with ``name``."""
    if name not in av.codecs_available:
        return False
    try:
        av.Codec(name, "w")
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return False
    return True


def make_frames(n_frames: int, size: tuple[int, int], *, seed: int = 0, dtype: type = np.uint8) -> list[np.ndarray]:
    """Deterministic RGB frames (``size`` = (width, height)) with smooth content and real motion.

    A colour gradient with a bright square that moves 2 px/frame plus mild noise: smooth enough that
    lossy encoders reproduce it closely, textured enough that frames differ.
    """
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / max(width - 1, 1), yy / max(height - 1, 1),
                     0.5 + 0.25 * np.sin(xx / 5.0) * np.cos(yy / 7.0)], axis=2)
    frames = []
    side = max(2, min(width, height) // 4)
    for t in range(n_frames):
        img = 0.15 + 0.6 * base
        x0 = (2 * t) % max(width - side, 1)
        y0 = (t + height // 3) % max(height - side, 1)
        img[y0:y0 + side, x0:x0 + side] = (0.9, 0.85, 0.2)
        img = img + rng.normal(0.0, 0.01, img.shape).astype(np.float32)
        peak = 65535.0 if dtype == np.uint16 else 255.0
        frames.append(np.clip(np.floor(img * peak + 0.5), 0, peak).astype(dtype))
    return frames


_ASS_HEADER = (
    b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n"
    b"[V4+ Styles]\nFormat: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
    b"BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, "
    b"Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
    b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
    b"[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)


def _audio_codec_for(suffix: str) -> str:
    if suffix == ".webm":
        return "libopus"
    if suffix == ".avi":
        return "libmp3lame"
    return "aac"


def _subtitle_codec_for(suffix: str) -> str:
    return "mov_text" if suffix in (".mp4", ".mov", ".m4v") else "subrip"


def make_video(
    path: str | os.PathLike,
    n_frames: int = 12,
    size: tuple[int, int] = (64, 48),
    fps: int | Fraction = 25,
    codec: str = "libx264",
    audio: bool = True,
    vfr: bool = False,
    rotation: int | None = None,
    subtitles: bool = False,
    *,
    pix_fmt: str | None = None,
    audio_codec: str | None = None,
    sample_rate: int = 48000,
    options: dict[str, str] | None = None,
    frames: list[np.ndarray] | None = None,
    seed: int = 0,
) -> MadeVideo:
    """Encode a small clip to ``path`` (container chosen by the extension) and describe it.

    ``size`` is (width, height). ``vfr=True`` spaces frames by :data:`VFR_PATTERN` (in 1/fps units) on
    a 1/1000 s time base. ``rotation`` (clockwise degrees, as a phone's ``rotate`` tag) is stored as
    a display matrix. ``audio`` adds a 440 Hz sine (AAC, Opus for .webm, MP3 for .avi) as long as the
    video; ``subtitles`` adds two text cues (mov_text in MP4/MOV, SubRip otherwise).
    Pass ``frames`` (uint8 HxWx3, or uint16 for >8-bit ``pix_fmt``) to encode given content.
    """
    path = Path(path)
    fps = Fraction(fps)
    if frames is None:
        frames = make_frames(n_frames, size, seed=seed)
    n_frames = len(frames)
    height, width = frames[0].shape[:2]

    if vfr:
        time_base = Fraction(1, 1000)
        step = Fraction(1, 1) / fps / time_base  # one nominal frame in time-base units
        pts, t = [], 0
        for i in range(n_frames):
            pts.append(int(round(t)))
            t += VFR_PATTERN[i % len(VFR_PATTERN)] * step
        end_time = float(t * time_base)
    else:
        time_base = 1 / fps
        pts = list(range(n_frames))
        end_time = float(n_frames / fps)

    cues = [(0.0, end_time / 2, "first cue"), (end_time / 2, end_time, "second cue")] if subtitles else []

    container = av.open(str(path), "w")
    try:
        vs = container.add_stream(codec, rate=fps, options=dict(options or {}))
        vs.width, vs.height = width, height
        vs.pix_fmt = pix_fmt or ("gbrp" if codec == "ffv1" else "yuv420p")
        vs.time_base = time_base
        vs.codec_context.time_base = time_base
        if rotation:
            # PyAV's degrees are counter-clockwise (what VideoFrame.rotation reads back).
            vs.set_display_rotation(-rotation)

        streams_audio = None
        if audio:
            acodec = audio_codec or _audio_codec_for(path.suffix.lower())
            streams_audio = container.add_stream(acodec, rate=sample_rate)
            streams_audio.layout = "mono"
        sub_stream = None
        if cues:
            sub_stream = container.add_stream(_subtitle_codec_for(path.suffix.lower()))
            sub_stream.time_base = Fraction(1, 1000)
            # Text subtitle encoders take ASS events and need the ASS header that defines "Default".
            sub_stream.codec_context.subtitle_header = _ASS_HEADER

        # Untagged, like most camera/phone files, and converted with the matrix players (and srkit's
        # reader) assume for untagged video: BT.709 from 720 lines, BT.601 below.
        from av.video.reformatter import Colorspace

        matrix = Colorspace.ITU709 if height >= 720 else Colorspace.ITU601
        in_fmt = "rgb48le" if frames[0].dtype == np.uint16 else "rgb24"
        for img, p in zip(frames, pts):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=in_fmt)
            frame = frame.reformat(format=vs.pix_fmt, dst_colorspace=matrix)
            frame.pts = p
            frame.time_base = time_base
            container.mux(vs.encode(frame))
        container.mux(vs.encode(None))

        if streams_audio is not None:
            n_samples = int(round(end_time * sample_rate))
            t = np.arange(n_samples, dtype=np.float64) / sample_rate
            wave = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
            chunk = 960
            fmt = streams_audio.codec_context.codec.audio_formats[0].name
            for start in range(0, n_samples, chunk):
                piece = wave[None, start:start + chunk]
                if fmt in ("s16", "s16p"):
                    piece = (piece * 32767).astype(np.int16)
                    fmt_use = fmt
                else:
                    fmt_use = "fltp" if fmt.endswith("p") else "flt"
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format=fmt_use, layout="mono")
                af.sample_rate = sample_rate
                af.pts = start
                af.time_base = Fraction(1, sample_rate)
                container.mux(streams_audio.encode(af))
            container.mux(streams_audio.encode(None))

        if sub_stream is not None:
            for start, end, text in cues:
                ms0, ms1 = int(start * 1000), int(end * 1000)
                sub = av.subtitles.subtitle.SubtitleSet.create(
                    text=f"0,0,Default,,0,0,0,,{text}".encode(), start=0, end=ms1 - ms0, pts=ms0)
                packet = sub_stream.codec_context.encode_subtitle(sub)
                packet.stream = sub_stream
                packet.time_base = Fraction(1, 1000)
                container.mux(packet)
    except BaseException:
        container.close()
        path.unlink(missing_ok=True)
        raise
    container.close()
    return MadeVideo(path=path, frames=frames, pts=pts, time_base=time_base, fps=fps,
                     audio_seconds=end_time if audio else 0.0, subtitles=cues)
