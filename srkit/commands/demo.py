"""``srkit demo``: make a clip from a shipped photograph, degrade it, restore it, show and score the result."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
writes into DIR (default ./srkit-demo): lr.mp4, bicubic.mp4, <model>.mp4, original.mp4, comparison.png
(whole middle frame side by side, and a zoomed crop) and demo.json (per-frame PSNR/SSIM); the table
printed at the end compares the model with MATLAB bicubic (Y channel, as the literature scores).
A folder written by an earlier demo is refreshed in place.

examples:
  srkit demo                              # edvr-s on a 12-frame pan of a sample photograph
  srkit demo --frames 4 --out /tmp/demo   # shorter
  srkit demo --image my_photo.png         # pan over your own photograph instead
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--out", default="srkit-demo", metavar="DIR", help="output folder (default: ./srkit-demo)")
    parser.add_argument("--frames", type=int, default=12, metavar="N", help="frames in the clip (default 12)")
    parser.add_argument("--model", default="edvr-s",
                        help="a preset with shipped weights restoring BI x4 video (default: edvr-s)")
    parser.add_argument("--image", metavar="FILE", help="photograph to pan over (default: matplotlib's sample photo)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty folder that is not an earlier demo's")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from srkit.demo import run_demo
    from srkit.models import has_pretrained

    if not has_pretrained(args.model):
        from srkit.errors import ConfigError
        from srkit.models import list_models

        shipped = ", ".join(n for n in list_models() if has_pretrained(n))
        raise ConfigError(f"--model {args.model}: the demo needs a preset with shipped weights ({shipped})")
    result = run_demo(args.out, frames=args.frames, model=args.model, image=args.image, overwrite=args.overwrite,
                      device=args.device, quiet=args.quiet)
    print(result.table())
    print(f"wrote {', '.join(p.name for p in result.files)} to {result.folder} in {result.seconds:.1f} s",
          file=sys.stderr)
    return 0
