"""MANA at any frame size: time and peak memory of the full network, exact vs window attention.

The official MANA materialises an (H*W)^2 squared-distance matrix ``D`` (and, per frame, an (H*W)^2
score matrix): 13 GB each at the REDS LR size 180x320, 212 GB at 360x640. srkit's attention is exact
without either (fused attention kernel on CPU, else chunks over query positions: memory O(H*W * chunk));
its window mode approximates it (numerator
over keys within ``r * std``, softmax denominator over the whole frame with far keys on a grid of
stride ``s``).

For each frame size and attention mode, one subprocess builds the full ``mana`` preset (128 channels,
5 + 40 residual blocks, 7 frames), runs one forward pass (no gradients) on 7 frames and reports:

* time of the forward pass (after a warm-up on a small input, so allocator and thread-pool start-up
  are not counted);
* peak resident memory (``ru_maxrss``) of the process, and the extra peak during the forward pass on
  top of the model and inputs;
* for window modes, the max / mean |difference| to the exact result of the same size (when the exact
  mode ran too) in [0, 1] image units, and the PSNR between the two.

Weights are the preset's initialisation except the two zero-initialised attention outputs (``W_z``,
``W_z1``), which get random weights so that the attention actually reaches the image (no official
weights are published). Frames are real footage when ``../shared/data`` exists (lr_only/street_320x180
for 180x320 and crops of it for smaller sizes, lr_only/tram_night_640x360 for 360x640), else noise.

    python benchmarks/mana_memory.py                       # 64x64, 180x320, 360x640 (exact where feasible)
    python benchmarks/mana_memory.py --sizes 64x64 --modes exact,w3s4,w3s1,w4s4,w3
    python benchmarks/mana_memory.py --sizes 180x320 --modes w3s4 --threads 2

Modes: ``exact`` (on CPU without gradients: two passes of PyTorch's fused attention kernel, see
``srkit.ops.attention._exact_flash``); ``exact-chunked`` (the same result by the chunked path, which runs
where that kernel is missing and for gradients: ``--modes exact,exact-chunked`` compares the two);
``w<r>s<stride>`` window of radius r*std with far keys every ``stride`` pixels
(``w3s1``: exact denominator); ``w<r>`` window-only softmax. The exact attention costs O((H*W)^2) time:
about 6e12 flops of matrix products and 2.3e10 exponentials at 180x320 (plus 2.8e12 flops of
convolutions), i.e. about a minute on an idle 2-core CPU but far longer on a shared one; at 360x640 it
costs 16x that and is not run by default (pass ``--modes exact`` explicitly to measure it).
Measured on a 2-core Intel Xeon with AMX (``--sizes 180x320 --modes exact,exact-chunked``): fp32 53.2 s
fused vs 181.9 s chunked (3.42x, images within 1.8e-7); bf16 22.7 vs 146.7 s (6.47x).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_MODES = {"64x64": "exact,w3s4,w3s1,w3", "180x320": "exact,w3s4", "360x640": "w3s4"}


def _maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _parse_mode(mode: str) -> tuple[float | None, int | None]:
    """``exact`` / ``exact-chunked`` -> (None, None); ``w3s4`` -> (3.0, 4); ``w3`` -> (3.0, None) (window-only softmax)."""
    if mode in ("exact", "exact-chunked"):
        return None, None
    m = re.fullmatch(r"w([0-9.]+)(?:s([0-9]+))?", mode)
    if not m:
        raise SystemExit(f"unknown mode {mode!r} (exact, exact-chunked, w<r>s<stride>, w<r>)")
    return float(m.group(1)), (int(m.group(2)) if m.group(2) else None)


def _frames(h: int, w: int):
    """7 RGB frames (1, 7, 3, h, w) in [0, 1]: real footage when available (centre crop), else noise."""
    import numpy as np
    import torch

    source = None
    if SHARED.is_dir():
        for folder in ("lr_only/street_320x180", "lr_only/tram_night_640x360"):
            d = SHARED / folder
            if d.is_dir():
                from srkit.io.images import list_images, read_rgb

                first = read_rgb(list_images(d)[0])
                if first.shape[0] >= h and first.shape[1] >= w:
                    source = d
                    break
    if source is None:
        g = torch.Generator().manual_seed(0)
        return torch.rand(1, 7, 3, h, w, generator=g), "noise"
    from srkit.io.images import list_images, read_rgb, to_float

    paths = list_images(source)[:7]
    arr = np.stack([to_float(read_rgb(p)) for p in paths])  # (7, H, W, 3)
    y0, x0 = (arr.shape[1] - h) // 2, (arr.shape[2] - w) // 2
    arr = arr[:, y0:y0 + h, x0:x0 + w]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).unsqueeze(0), source.name


def worker(size: str, mode: str, threads: int, precision: str, chunk: int | None, out: str | None) -> dict:
    import numpy as np
    import torch

    from srkit.models import create_model
    from srkit.ops import attention
    from srkit.utils.device import autocast

    if mode == "exact-chunked":  # the chunked path, as where PyTorch has no fused CPU attention kernel
        attention._FLASH_CPU = None

    torch.set_num_threads(threads)
    h, w = (int(v) for v in size.split("x"))
    window, stride = _parse_mode(mode)
    torch.manual_seed(0)
    model = create_model("mana", attention_window=window, attention_window_stride=stride,
                         attention_chunk=chunk).eval()
    with torch.no_grad():  # make the attention matter (its outputs are zero-initialised)
        g = torch.Generator().manual_seed(1)
        for conv in (model.nonloc_spatial.W_z, model.nonloc_spatial.W_z1):
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
    x, source = _frames(h, w)
    device = torch.device("cpu")
    with torch.no_grad(), autocast(device, precision):
        model(torch.rand(1, 7, 3, 16, 16))  # warm-up
    base = _maxrss_bytes()
    t0 = time.perf_counter()
    with torch.no_grad(), autocast(device, precision):
        res = model(x)
    seconds = time.perf_counter() - t0
    peak = _maxrss_bytes()
    if out:
        np.save(out, res.image.float().clamp(0, 1).numpy())
    return {"size": size, "mode": mode, "seconds": seconds, "peak_rss": peak, "extra_peak": peak - base,
            "source": source, "std": float(model.nonloc_spatial.std.detach()), "threads": threads, "precision": precision}


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64x64,180x320,360x640", help="HxW list (default: %(default)s)")
    ap.add_argument("--modes", default=None, help="modes for every size (default per size: "
                    + "; ".join(f"{k}: {v}" for k, v in DEFAULT_MODES.items()) + ")")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="compute precision")
    ap.add_argument("--chunk", type=int, default=None, help="query positions per exact-attention chunk")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--worker", nargs=3, metavar=("SIZE", "MODE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        size, mode, out = args.worker
        print(json.dumps(worker(size, mode, args.threads, args.precision, args.chunk, out or None)))
        return 0

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"MANA (preset 'mana', 7 frames) forward, {args.threads} threads, {args.precision}; "
          f"load average at start {load:.1f} on {os.cpu_count()} CPUs")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            h, w = (int(v) for v in size.split("x"))
            n = h * w
            print(f"\n{size}: official dense D alone would be {_gb(n * n * 4)} (fp32), plus {_gb(n * n * 4)} of "
                  f"scores per frame")
            modes = (args.modes or DEFAULT_MODES.get(size, "exact,w3s4")).split(",")
            exact_img = exact_seconds = None
            for mode in modes:
                out = os.path.join(tmp, f"{size}-{mode}.npy")
                cmd = [sys.executable, __file__, "--worker", size, mode, out, "--threads", str(args.threads),
                       "--precision", args.precision] + (["--chunk", str(args.chunk)] if args.chunk else [])
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"  {mode:>13}: FAILED\n{proc.stderr[-2000:]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                line = (f"  {mode:>13}: {r['seconds']:8.1f} s   peak RSS {_gb(r['peak_rss']):>9}   "
                        f"forward extra {_gb(r['extra_peak']):>9}   ({r['source']})")
                import numpy as np

                img = np.load(out)
                if mode == "exact":
                    exact_img, exact_seconds = img, r["seconds"]
                elif exact_img is not None:
                    d = np.abs(img.astype(np.float64) - exact_img)
                    mse = float((d ** 2).mean())
                    psnr = 10 * np.log10(1.0 / mse) if mse > 0 else float("inf")
                    r.update(max_abs_diff=float(d.max()), mean_abs_diff=float(d.mean()), psnr_vs_exact=psnr)
                    line += f"\n                 vs exact: max |diff| {d.max():.2e}, mean {d.mean():.2e}, PSNR {psnr:.1f} dB"
                    if mode == "exact-chunked":
                        r["seconds_vs_exact"] = r["seconds"] / exact_seconds
                        line += f"; exact (fused kernel) is {r['seconds'] / exact_seconds:.2f}x faster"
                print(line, flush=True)
                results.append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
