"""Dynamic per-pixel convolution: srkit's shifted-view op vs the straightforward unfold + matmul.

The case is UDVD on a 512 x 512 LR image at x4:

* ``upsample``: the upsampling dynamic convolution on the LR image, x ``(1, 3, 512, 512)``,
  kernels ``(1, 16*25, 512, 512)`` -> ``(1, 3, 2048, 2048)``;
* ``same``: a common dynamic convolution at the output size, x ``(1, 3, 2048, 2048)``,
  kernels ``(1, 25, 2048, 2048)``.

Each (form, implementation, pass) runs in its own subprocess so that its peak memory can be read
from ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (torch allocations are invisible to tracemalloc):
the "extra peak" is the high-water mark during the timed calls minus the high-water mark once the
inputs exist, i.e. what the operation itself needs on top of its inputs. Time is the median of
``--repeat`` calls after one warm-up. One intra-op thread by default: on a shared machine OpenMP
barriers make multi-threaded timings of memory-bound kernels meaningless (use ``--threads``).

    python benchmarks/dynamic_conv.py                 # forward and forward+backward, both forms
    python benchmarks/dynamic_conv.py --size 256 --forms same --passes forward
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def _maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB, macOS bytes


def unfold_reference(x, kernels, scale: int):
    """Copy every k x k neighbourhood (F.unfold, k*k times the input), then one matmul per pixel."""
    import torch
    from torch.nn import functional as F

    n, c, h, w = x.shape
    k2 = kernels.shape[1] // (scale * scale)
    k = int(round(k2**0.5))
    cols = F.unfold(x, k, padding=k // 2).view(n, c, k2, h * w).permute(0, 3, 1, 2)  # (N, HW, C, k*k)
    kmat = kernels.view(n, scale * scale, k2, h * w).permute(0, 3, 2, 1)  # (N, HW, k*k, s*s)
    out = torch.matmul(cols, kmat).permute(0, 2, 3, 1).reshape(n, c * scale * scale, h, w)
    return F.pixel_shuffle(out, scale) if scale > 1 else out


def worker(form: str, impl: str, passes: str, size: int, scale: int, repeat: int, threads: int) -> dict:
    import torch

    from srkit.ops import dynamic_conv2d, dynamic_upsample_conv2d

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    k = 5
    if form == "upsample":
        x = torch.rand(1, 3, size, size, generator=gen)
        kernels = torch.randn(1, scale * scale * k * k, size, size, generator=gen)
        s = scale
    else:
        x = torch.rand(1, 3, size * scale, size * scale, generator=gen)
        kernels = torch.randn(1, k * k, size * scale, size * scale, generator=gen)
        s = 1
    backward = passes == "backward"
    if backward:
        x.requires_grad_(True)
        kernels.requires_grad_(True)

    def op():
        if impl == "unfold":
            return unfold_reference(x, kernels, s)
        return dynamic_upsample_conv2d(x, kernels, s) if s > 1 else dynamic_conv2d(x, kernels)

    grad = torch.rand(1, 3, size * scale, size * scale, generator=gen) if backward else None
    baseline = _maxrss_bytes()
    times = []
    for i in range(repeat + 1):
        if backward:
            x.grad = kernels.grad = None
        t0 = time.perf_counter()
        if backward:
            op().backward(grad)
        else:
            with torch.no_grad():
                op()
        if i:  # the first call is a warm-up
            times.append(time.perf_counter() - t0)
    peak = _maxrss_bytes()
    return {"form": form, "impl": impl, "passes": passes, "time_s": statistics.median(times),
            "extra_peak_mb": (peak - baseline) / 2**20, "peak_rss_mb": peak / 2**20,
            "inputs_mb": (x.numel() + kernels.numel()) * 4 / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="LR size (square; default 512)")
    parser.add_argument("--scale", type=int, default=4, help="upscaling factor (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls after one warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--forms", nargs="+", default=["upsample", "same"], choices=["upsample", "same"])
    parser.add_argument("--passes", nargs="+", default=["forward", "backward"], choices=["forward", "backward"],
                        help="'backward' times forward + backward")
    parser.add_argument("--json", action="store_true", help="print one JSON line per measurement instead of a table")
    parser.add_argument("--worker", nargs=3, metavar=("FORM", "IMPL", "PASSES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(*args.worker, args.size, args.scale, args.repeat, args.threads)))
        return 0

    print(f"dynamic convolution, LR {args.size}x{args.size} x{args.scale}, k=5, {args.threads} thread(s), "
          f"median of {args.repeat}")
    print(f"{'form':9s} {'pass':9s} {'impl':8s} {'time s':>8s} {'extra peak MB':>14s} {'peak RSS MB':>12s}")
    for form in args.forms:
        for passes in args.passes:
            rows = {}
            for impl in ("srkit", "unfold"):
                cmd = [sys.executable, __file__, "--worker", form, impl, passes, "--size", str(args.size),
                       "--scale", str(args.scale), "--repeat", str(args.repeat), "--threads", str(args.threads)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{form:9s} {passes:9s} {impl:8s} FAILED: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                rows[impl] = r
                if args.json:
                    print(json.dumps(r))
                else:
                    print(f"{form:9s} {passes:9s} {impl:8s} {r['time_s']:8.3f} {r['extra_peak_mb']:14.1f} "
                          f"{r['peak_rss_mb']:12.1f}")
            if len(rows) == 2 and not args.json:
                a, b = rows["srkit"], rows["unfold"]
                mem = b["extra_peak_mb"] / a["extra_peak_mb"] if a["extra_peak_mb"] > 0 else float("inf")
                print(f"{'':9s} {'':9s} {'ratio':8s} unfold/srkit: time x{b['time_s'] / a['time_s']:.2f}, "
                      f"extra memory x{mem:.2f}  (inputs {a['inputs_mb']:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
