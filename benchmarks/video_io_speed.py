"""Video I/O: decode/encode throughput and colour-conversion accuracy, srkit vs plain PyAV.

Prints, side by side:
  * decode + RGB conversion speed (frames/s) of srkit's VideoReader (accurate and fast conversion)
    and of a plain PyAV loop (``frame.to_ndarray(format="rgb24")``), with ratios;
  * the colour round trip RGB -> yuv420p -> RGB (no compression) in PSNR, for srkit's swscale flags
    and PyAV's defaults: what the conversion alone costs before any codec does;
  * encode speed of VideoWriter (libx264, CRF 18) at the clip's size.

Uses ../shared/data when present (mp4/bigbuckbunny.mp4, set8/snowboard frames), otherwise synthetic
frames. Run: ``python benchmarks/video_io_speed.py [--frames N]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Colorspace, VideoReformatter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srkit.io.images import list_images, read_rgb  # noqa: E402
from srkit.io.video import SWS_FLAGS, VideoReader, VideoWriter  # noqa: E402
from tests.media import make_frames, make_video  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def decode_speed(path: Path, limit: int) -> None:
    def srkit_loop(**kw) -> tuple[int, float]:
        t = time.perf_counter()
        n = 0
        with VideoReader(path, **kw) as reader:
            for _ in reader:
                n += 1
                if n >= limit:
                    break
        return n, time.perf_counter() - t

    def pyav_loop() -> tuple[int, float]:
        t = time.perf_counter()
        n = 0
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            for frame in c.decode(s):
                frame.to_ndarray(format="rgb24")
                n += 1
                if n >= limit:
                    break
        return n, time.perf_counter() - t

    n0, t0 = pyav_loop()
    n1, t1 = srkit_loop()
    n2, t2 = srkit_loop(fast_conversion=True)
    print(f"decode {path.name} ({n0} frames)")
    print(f"  plain PyAV to_ndarray        {n0 / t0:7.1f} fps")
    print(f"  srkit accurate (default)     {n1 / t1:7.1f} fps   ({t1 / t0:.2f}x the PyAV time)")
    print(f"  srkit fast_conversion=True   {n2 / t2:7.1f} fps   ({t2 / t0:.2f}x the PyAV time)")


def conversion_accuracy(images: list[np.ndarray]) -> None:
    """RGB -> yuv420p (BT.709, limited) -> RGB with srkit's flags vs swscale defaults, no codec."""
    print(f"colour round trip RGB->yuv420p->RGB on {len(images)} frames {images[0].shape[1]}x{images[0].shape[0]}")
    for enc_name, enc_flags in (("PyAV default", None), ("srkit", SWS_FLAGS)):
        for dec_name, dec_flags in (("PyAV default", None), ("srkit", SWS_FLAGS)):
            r1, r2 = VideoReformatter(), VideoReformatter()
            scores = []
            for img in images:
                kw = {"format": "yuv420p", "dst_colorspace": Colorspace.ITU709, "dst_color_range": 1}
                if enc_flags is not None:
                    kw["interpolation"] = enc_flags
                yuv = r1.reformat(av.VideoFrame.from_ndarray(img, format="rgb24"), **kw)
                kw = {"format": "rgb24", "src_colorspace": Colorspace.ITU709}
                if dec_flags is not None:
                    kw["interpolation"] = dec_flags
                scores.append(psnr(img, r2.reformat(yuv, **kw).to_ndarray()))
            print(f"  encode {enc_name:13s} decode {dec_name:13s} PSNR {np.mean(scores):6.2f} dB")


def encode_speed(frames: list[np.ndarray], preset: str) -> None:
    h, w = frames[0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "o.mp4"
        t = time.perf_counter()
        with VideoWriter(out, width=w, height=h, fps=25, preset=preset) as writer:
            for f in frames:
                writer.write(f)
        dt = time.perf_counter() - t
    print(f"encode libx264 CRF 18 preset {preset:8s} {w}x{h}: {len(frames) / dt:7.1f} fps")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=60, help="frames per measurement (default 60)")
    args = ap.parse_args()
    print(f"PyAV {av.__version__}, FFmpeg {av.ffmpeg_version_info}")
    clip = SHARED / "mp4" / "bigbuckbunny.mp4"
    snow = SHARED / "video_hr" / "set8" / "snowboard"
    with tempfile.TemporaryDirectory() as tmp:
        if not clip.is_file():
            print("(shared data absent: synthetic 1280x720 clip)")
            clip = make_video(Path(tmp) / "synthetic.mp4", n_frames=args.frames, size=(1280, 720), audio=False).path
        decode_speed(clip, args.frames)
        with VideoReader(clip) as reader:
            decoded = [f.rgb for _, f in zip(range(args.frames), reader)]
    images = [read_rgb(p) for p in list_images(snow)[:8]] if snow.is_dir() else make_frames(8, (960, 540))
    conversion_accuracy(images)
    encode_speed(decoded[: min(len(decoded), 30)], "veryfast")
    encode_speed(decoded[: min(len(decoded), 30)], "medium")


if __name__ == "__main__":
    main()
