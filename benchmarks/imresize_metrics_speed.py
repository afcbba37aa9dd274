#!/usr/bin/env python
"""Speed of MATLAB-compatible imresize, BD downsampling and PSNR/SSIM, side by side with OpenCV.

OpenCV's resizers are the speed reference only: they are not MATLAB's imresize (other kernel
centring, antialiasing, borders), and the script prints how far their x4 downsampling is from it
(PSNR of cv2's LR against MATLAB-bicubic LR) — the reason srkit does not use them for benchmark LR.

    python benchmarks/imresize_metrics_speed.py [--size 1280x720] [--repeat 5] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

from srkit.data.degrade import bd_downsample, bd_downsample_torch
from srkit.data.imresize import imresize, imresize_torch
from srkit.metrics import psnr, psnr_torch, ssim, ssim_torch


def timeit(fn, repeat: int) -> float:
    fn()  # warm-up (caches weight matrices, BLAS threads)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1280x720", help="frame WxH (default 1280x720, REDS GT)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch / OpenCV threads (default: library default)")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    rng = np.random.default_rng(0)
    # smooth random content (natural-image-like spectrum) so the resizer differences are realistic
    img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2.0)
    imgf = img.astype(np.float32) / 255.0
    x = torch.from_numpy(imgf).permute(2, 0, 1)[None].contiguous()
    r = args.repeat
    print(f"frame {w}x{h}x3, best of {r}, torch threads {torch.get_num_threads()}")

    rows = []
    t_np8 = timeit(lambda: imresize(img, 0.25), r)
    t_np32 = timeit(lambda: imresize(imgf, 0.25), r)
    t_th = timeit(lambda: imresize_torch(x, 0.25), r)
    t_cv_cubic = timeit(lambda: cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_CUBIC), r)
    t_cv_area = timeit(lambda: cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA), r)
    rows += [
        ("imresize x1/4 numpy uint8 (MATLAB-exact)", t_np8),
        ("imresize x1/4 numpy float32", t_np32),
        ("imresize x1/4 torch float32 (N=1)", t_th),
        ("cv2.resize INTER_CUBIC x1/4 (not MATLAB)", t_cv_cubic),
        ("cv2.resize INTER_AREA x1/4 (not MATLAB)", t_cv_area),
    ]
    lr = imresize(img, 0.25)
    lrf = lr.astype(np.float32) / 255
    xl = torch.from_numpy(lrf).permute(2, 0, 1)[None].contiguous()
    rows += [
        ("imresize x4 up numpy uint8", timeit(lambda: imresize(lr, 4.0), r)),
        ("imresize x4 up torch float32", timeit(lambda: imresize_torch(xl, 4.0), r)),
        ("cv2.resize INTER_CUBIC x4 up (not MATLAB)", timeit(lambda: cv2.resize(lr, (w, h), interpolation=cv2.INTER_CUBIC), r)),
        ("BD x1/4 numpy float32", timeit(lambda: bd_downsample(imgf, 4), r)),
        ("BD x1/4 torch float32", timeit(lambda: bd_downsample_torch(x, 4), r)),
    ]
    sr = imresize(lr, 4.0)
    srt = torch.from_numpy(sr).permute(2, 0, 1)[None].float() / 255
    gt_t = x
    rows += [
        ("PSNR numpy (Y)", timeit(lambda: psnr(sr, img, y_channel=True), r)),
        ("PSNR torch (Y)", timeit(lambda: psnr_torch(srt, gt_t, y_channel=True), r)),
        ("SSIM numpy (RGB)", timeit(lambda: ssim(sr, img), r)),
        ("SSIM torch (RGB)", timeit(lambda: ssim_torch(srt, gt_t), r)),
    ]
    width = max(len(n) for n, _ in rows)
    for name, ms in rows:
        print(f"  {name:<{width}}  {ms:9.1f} ms")
    print(f"  ratio numpy-uint8 imresize / cv2 INTER_AREA: {t_np8 / t_cv_area:.1f}x;  torch / numpy-uint8: {t_th / t_np8:.2f}x")

    # How different are the fast resizers from MATLAB's LR?
    cub = cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_CUBIC)
    area = cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    print("distance of OpenCV LR to MATLAB-bicubic LR (uint8):")
    print(f"  INTER_CUBIC: PSNR {psnr(cub, lr):.2f} dB, max |diff| {np.abs(cub.astype(int) - lr).max()}")
    print(f"  INTER_AREA : PSNR {psnr(area, lr):.2f} dB, max |diff| {np.abs(area.astype(int) - lr).max()}")
    th = (imresize_torch(x, 0.25)[0].permute(1, 2, 0).numpy())
    print(f"torch vs numpy float32 imresize: max |diff| {np.abs(th - imresize(imgf, 0.25)).max():.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
