"""Data-loading speed: LMDB vs PNG folders, and LR synthesis on crops vs on whole frames.

Measured side by side in one run (interleaved rounds, medians), on real footage when
``../shared/data`` exists (Set8 ``snowboard``, 960x540) or on generated noise frames otherwise:

1. packing throughput (frames/s) and size of the pack against the PNG folder;
2. reading one frame: ``read_rgb`` on the PNG file vs ``LmdbReader.read`` (PNG level 1 records);
3. one training sample (7 frames, BI x4 synthesised, 256x256 GT patch): srkit's crop-region synthesis
   vs degrading the 7 whole frames and cropping afterwards (what a naive pipeline does); the script
   also checks the two give the same LR patch;
4. one training sample as edvr-s draws them (5 frames, BI x4, 128x128 GT patch, flips and rotations)
   with the decoded-frame cache (``data.train.frame_cache_mb``, warm: every frame decoded once) and
   without it (five PNG decodes per sample); the script checks the samples are identical.

    python benchmarks/data_loading.py                  # 15 frames
    python benchmarks/data_loading.py --frames 30 --repeats 7

Temporary packs go to a temporary folder outside the project and are deleted at the end.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from srkit.data.degrade import bicubic_downsample
from srkit.data.layouts import Clip
from srkit.data.lmdb_pack import pack
from srkit.data.lmdb_store import LmdbReader
from srkit.data.transforms import mod_crop
from srkit.data.video_dataset import VideoSRDataset, read_window
from srkit.io.images import list_images, read_rgb, to_float, write_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _frames(tmp: Path, n: int) -> list[Path]:
    clip = SHARED / "video_hr" / "set8" / "snowboard"
    if clip.is_dir():
        return list_images(clip)[:n]
    rng = np.random.default_rng(0)
    out = []
    base = rng.integers(0, 256, (540, 960, 3), dtype=np.uint8)
    for i in range(n):
        p = tmp / "gen" / f"{i:05d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        write_image(p, np.roll(base, 3 * i, axis=1))
        out.append(p)
    return out


def _interleaved(fns: dict, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up (page cache, lazy opens)
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=15, help="frames of the clip to use (default 15)")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="srkit-bench-data-"))
    try:
        paths = _frames(tmp, args.frames)
        source = "Set8 snowboard" if SHARED.is_dir() else "generated noise"
        h, w = read_rgb(paths[0]).shape[:2]
        print(f"source: {source}, {len(paths)} frames of {w}x{h}")
        clips = [Clip("clip", paths, None)]

        t0 = time.perf_counter()
        report = pack(clips, tmp / "clip.lmdb", compress_level=1)
        dt = time.perf_counter() - t0
        png_mb = sum(p.stat().st_size for p in paths) / 2**20
        print(f"pack: {report.total / dt:.1f} frames/s ({dt:.2f} s), pack {report.bytes_written / 2**20:.1f} MiB "
              f"vs PNG folder {png_mb:.1f} MiB")

        reader = LmdbReader(tmp / "clip.lmdb")
        keys = reader.keys
        i = {"n": 0}

        def png() -> None:
            read_rgb(paths[i["n"] % len(paths)])

        def lmdb() -> None:
            reader.read(keys[i["n"] % len(keys)])
            i["n"] += 1

        t = _interleaved({"png": png, "lmdb": lmdb}, args.repeats * 3)
        print(f"read one frame: PNG file {t['png']:.1f} ms, LMDB {t['lmdb']:.1f} ms "
              f"(PNG/LMDB {t['png'] / t['lmdb']:.2f}x)")

        # Part 3 compares two ways of synthesising LR, not decoding: both read the same cached frames.
        ds = VideoSRDataset(clips, num_frames=7, degradation="BI", gt_patch=256, use_flip=False, use_rot=False, seed=0)
        idx = len(ds) // 2

        def crop_synth() -> None:
            ds[idx]

        def whole_synth() -> np.ndarray:
            _, _, indices = ds.window(idx)
            frames = read_window(ds.clips[0].gt, indices)
            return np.stack([bicubic_downsample(to_float(mod_crop(f, 4)), 4) for f in frames])

        t = _interleaved({"crop": crop_synth, "whole": whole_synth}, args.repeats)
        item = ds[idx]
        gt = item["gt"].numpy()
        # Locate the crop by matching the GT patch in the centre frame, then compare LR patches.
        full_gt = to_float(read_rgb(paths[idx]))
        lr_whole = whole_synth()
        found = None
        for top in range(0, full_gt.shape[0] - 256 + 1, 4):
            row = full_gt[top: top + 1, :, 0]
            for left in range(0, full_gt.shape[1] - 256 + 1, 4):
                if np.array_equal(row[:, left: left + 256], gt[0, :1]) and \
                        np.array_equal(full_gt[top: top + 256, left: left + 256], gt.transpose(1, 2, 0)):
                    found = (top // 4, left // 4)
                    break
            if found:
                break
        diff = float("nan")
        if found:
            y, x = found
            diff = float(np.abs(lr_whole[:, y: y + 64, x: x + 64].transpose(0, 3, 1, 2) - item["lq"].numpy()).max())
        print(f"training sample (7 frames, BI x4, 256 GT patch): crop synthesis {t['crop']:.1f} ms, "
              f"whole frames {t['whole']:.1f} ms (speed-up {t['whole'] / t['crop']:.1f}x; "
              f"max |LR difference| {diff:.2e})")

        kw = {"num_frames": 5, "degradation": "BI", "gt_patch": 128, "random_reverse": True, "seed": 0}
        warm, cold = VideoSRDataset(clips, **kw), VideoSRDataset(clips, frame_cache_bytes=0, **kw)
        for k in range(len(warm)):
            warm[k]  # fill the cache: a training set that fits is decoded once per worker
        j = {"n": 0}

        def sample(d) -> None:
            d[j["n"] % len(d)]

        def with_cache() -> None:
            sample(warm)

        def without() -> None:
            sample(cold)
            j["n"] += 1  # each round reads a different window

        t = _interleaved({"cache": with_cache, "none": without}, args.repeats * 3)
        same = all(torch.equal(warm[k]["lq"], cold[k]["lq"]) and torch.equal(warm[k]["gt"], cold[k]["gt"])
                   for k in range(0, len(warm), max(1, len(warm) // 4)))
        print(f"training sample (5 frames, BI x4, 128 GT patch, as edvr-s): frame cache {t['cache']:.1f} ms, "
              f"decoding every frame {t['none']:.1f} ms (speed-up {t['none'] / t['cache']:.1f}x; "
              f"identical samples: {same}; cache {warm.frame_cache.nbytes / 2**20:.0f} MiB)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
