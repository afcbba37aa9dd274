"""Peak memory of ``srkit upscale`` does not grow with the video's length (streaming).

Encodes two small test videos (60 and 600 frames, same content kind and size), restores each with a
tiny EDVR (feature cache on) in its own fresh subprocess through the real command line
(``srkit upscale IN -o OUT.mp4``: decode -> windows -> model -> encode, audio copied), and prints
each process's peak resident set size (``ru_maxrss``) and the ratio. Target: the 600-frame run
within 10% of the 60-frame run.

    python benchmarks/upscale_memory.py                     # 60 vs 600 frames of 64x48
    python benchmarks/upscale_memory.py --size 96x64 --frames 50 500
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args: list[str]) -> int:
    """Run the command line in this process, then report this process's peak RSS (KiB on Linux)."""
    from srkit.cli import main

    rc = main(args)
    print(f"RSS_KIB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
    return rc


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="64x48", help="WxH of the test videos (default 64x48)")
    ap.add_argument("--frames", type=int, nargs=2, default=(60, 600), metavar=("SHORT", "LONG"))
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    sys.path.insert(0, str(ROOT))
    import torch

    from srkit.models import create_model
    from srkit.models.checkpoint import save_model
    from tests.media import make_video

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    with tempfile.TemporaryDirectory(prefix="srkit-mem-") as tmp:
        d = Path(tmp)
        torch.manual_seed(0)
        model = create_model("edvr-m", num_feat=16, num_extract_block=1, num_reconstruct_block=2,
                             deformable_groups=2)
        save_model(model, d / "tiny.safetensors")
        results = {}
        for n in args.frames:
            video = make_video(d / f"clip{n}.mp4", n_frames=n, size=(width, height), fps=25, audio=True).path
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, __file__, "--child", "upscale", str(video), "-o", str(d / f"out{n}.mp4"),
                                "--weights", str(d / "tiny.safetensors"), "-q", "--threads", "1"],
                               capture_output=True, text=True, env=env)
            dt = time.perf_counter() - t0
            if p.returncode != 0:
                print(p.stdout, p.stderr, file=sys.stderr)
                return 1
            rss = int(next(ln for ln in p.stdout.splitlines() if ln.startswith("RSS_KIB")).split()[1])
            results[n] = rss
            print(f"{n:5d} frames {width}x{height} -> x4: peak RSS {rss / 1024:7.1f} MiB  ({dt:.1f}s, "
                  f"{n / dt:.1f} frames/s incl. start-up)", flush=True)
        short, long = args.frames
        ratio = results[long] / results[short]
        print(f"ratio {long}/{short} frames: {ratio:.3f} (target <= 1.10) -> {'OK' if ratio <= 1.10 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
