"""``srkit data pack``: stream a dataset (frame folders, videos, another pack) into an LMDB database."""

from __future__ import annotations

import argparse

from srkit.errors import ConfigError
from srkit.utils.sizes import parse_byte_size

EPILOG = """\
layouts (see srkit.data.layouts for the folder names accepted):
  vid4     ROOT/GT/<seq>/..., ROOT/BIx4/<seq>/...       reds   ROOT/train_sharp/000/00000000.png, ...
  vimeo    ROOT/sequences/00001/0001/im1.png ...        images DIV2K-style HR/LR image folders
  folders  every sub-folder of ROOT is a clip           videos a video file or a folder of videos
  auto     guess from the folder (default)

The pack is written to OUT.partial and renamed to OUT when complete. If packing stops (error,
Ctrl-C, power loss), run the same command with --resume: records already stored are skipped.
The format is BasicSR's (PNG records keyed <clip>/<frame>, meta_info.txt), so packs work in both.

examples:
  srkit data pack datasets/REDS datasets/REDS/train_sharp_with_val.lmdb --layout reds
  srkit data pack datasets/REDS datasets/REDS/train_sharp_bicubic_with_val.lmdb --layout reds --which lr
  srkit data pack datasets/vimeo_septuplet vimeo_train_GT.lmdb --layout vimeo --split train
  srkit data pack bikes.mp4 bikes.lmdb
"""

def parse_size(text: str) -> int:
    """``"1G"``, ``"512MiB"``, ``"65536"`` -> bytes (an argparse type: errors become usage errors)."""
    try:
        return parse_byte_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from srkit.data.layouts import LAYOUTS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("src", metavar="SRC", help="dataset folder, video file, folder of videos or LMDB pack")
    parser.add_argument("out", metavar="OUT.lmdb", help="LMDB folder to create")
    parser.add_argument("--layout", default="auto",
                        choices=LAYOUTS,
                        help="dataset layout of SRC (default: auto)")
    parser.add_argument("--which", default="gt", choices=["gt", "lr"],
                        help="pack the ground-truth frames (default) or the LR frames stored beside them")
    parser.add_argument("--degradation", default="BI",
                        help="LR folder to pack with --which lr: BI, BD, REDS blur_bicubic ... (default: BI)")
    parser.add_argument("--scale", type=int, default=4, help="scale of the LR folder with --which lr (default: 4)")
    parser.add_argument("--split", default="all",
                        help="REDS all|train|reds4|official_val, Vimeo all|train|test, DIV2K train|val (default: all)")
    parser.add_argument("--subset", metavar="LIST", help="text file naming the clips to pack (first token per line)")
    parser.add_argument("--compress-level", type=int, default=1, choices=range(10), metavar="0-9",
                        help="PNG compression level (default: 1, BasicSR's: fast to read)")
    parser.add_argument("--map-size", type=parse_size, default=parse_size("1G"), metavar="SIZE",
                        help="initial LMDB map size, grown automatically when full (default: 1G)")
    parser.add_argument("--workers", type=int, default=None, help="threads reading and encoding frames (default: up to 4)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted pack (OUT.partial)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT (or discard OUT.partial)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import sys

    from srkit.data.lmdb_pack import pack

    bar = None

    def on_total(total: int | None) -> None:
        nonlocal bar
        if not args.quiet:  # created only once the source is found, so errors are not preceded by a bar
            from tqdm import tqdm

            bar = tqdm(total=total, unit="frame", desc="packing", file=sys.stderr, dynamic_ncols=True)

    def progress(done: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    try:
        report = pack(args.src, args.out, layout=args.layout, which=args.which, degradation=args.degradation,
                      scale=args.scale, split=args.split, subset=args.subset, compress_level=args.compress_level,
                      map_size=args.map_size, resume=args.resume, overwrite=args.overwrite, workers=args.workers,
                      progress=progress, on_total=on_total)
    finally:
        if bar is not None:
            bar.close()
    resumed = f", {report.skipped} already present" if report.skipped else ""
    print(f"{report.path}: {report.total} records ({report.written} written{resumed}, "
          f"{report.bytes_written / 2**20:.1f} MiB) in {report.seconds:.1f} s")
    return 0
