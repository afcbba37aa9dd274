"""``srkit data motion-rank``: rank clips by optical-flow magnitude and write the large-motion subset."""

from __future__ import annotations

import argparse

EPILOG = """\
Scores each clip by the mean magnitude of the dense Farneback optical flow (OpenCV) between
consecutive grayscale frames, in pixels per frame at the clip's resolution (ground-truth frames when
the layout has them, else LR frames, else the video file), and writes the clips with the largest
motion to OUT, one clip name per line (the score follows as a '#' comment). The names are the
layout's clip names (e.g. 00001/0001 for Vimeo-90K), so the file is what 'srkit eval --subset' takes:

  srkit data motion-rank datasets/vimeo_septuplet --layout vimeo --split test --top 0.1 -o fast.txt
  srkit eval --model mana --weights mana.pt --data datasets/vimeo_septuplet --layout vimeo --subset fast.txt

Named subsets (--preset) fix layout, split and fraction to those of a published subset:
  vimeo-motion   MANA's Vimeo-90K-Motion: the top 6% of the Vimeo-90K test set (sep_testlist.txt)
                 by mean optical flow, i.e. --layout vimeo --split test --top 0.06

  srkit data motion-rank datasets/vimeo_septuplet --preset vimeo-motion -o vimeo_motion.txt
  srkit eval --model mana --weights mana.pt --data datasets/vimeo_septuplet --layout vimeo \\
      --subset vimeo_motion.txt

(MANA does not name its flow method: near the 6% boundary a clip may differ from the paper's list.)

Every clip's score is printed, largest first. OUT is written atomically (a temporary name, then
renamed), and an existing OUT is kept unless --overwrite is given.
"""


def _top(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or (value > 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1] or a whole clip count, got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


# What --layout/--split/--top mean when neither they nor --preset are given.
DEFAULTS = {"layout": "auto", "split": "all", "top": 0.1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from srkit.data.layouts import LAYOUTS
    from srkit.data.motion import MOTION_PRESETS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("root", metavar="ROOT", help="dataset folder (or video file / folder of videos)")
    parser.add_argument("--preset", choices=sorted(MOTION_PRESETS), default=None,
                        help="a published subset, which fixes --layout, --split and --top: "
                             + "; ".join(f"{k} = {p.description} (--layout {p.layout} --split {p.split} --top {p.top:g})"
                                         for k, p in sorted(MOTION_PRESETS.items())).replace("%", "%%"))
    parser.add_argument("--layout", default=None, choices=LAYOUTS, help="dataset layout (default: auto-detect)")
    parser.add_argument("--split", default=None,
                        help="split of the layout (Vimeo-90K train|test|all, REDS reds4|val|train|all; default all)")
    parser.add_argument("--top", type=_top, default=None, metavar="F",
                        help="fraction of clips to keep, in (0, 1] (at least one), or a whole number of clips "
                             "(default 0.1)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.txt", help="subset list to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--max-frames", type=_positive, default=None, metavar="N",
                        help="score only the first N frames of each clip (default: all)")
    parser.add_argument("--max-side", type=_positive, default=None, metavar="PX",
                        help="compute the flow on frames shrunk to this long side (scores are scaled back to "
                             "full-resolution pixels); faster on large frames")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors (no progress, no score table)")


def _apply_preset(args: argparse.Namespace) -> None:
    """Fill --layout/--split/--top from --preset (or the plain defaults). An option that contradicts the
    preset is refused: the subset would no longer be the one its name says."""
    from srkit.data.motion import MOTION_PRESETS
    from srkit.errors import ConfigError

    preset = MOTION_PRESETS[args.preset] if args.preset else None
    for key, default in DEFAULTS.items():
        given = getattr(args, key)
        if preset is None:
            setattr(args, key, default if given is None else given)
            continue
        fixed = getattr(preset, key)
        if given is not None and given != fixed:
            show = (lambda v: f"{v:g}") if isinstance(fixed, float) else str
            raise ConfigError(f"--preset {args.preset} means --{key} {show(fixed)}; drop --{key} {show(given)} "
                              "(or drop --preset to choose your own subset)")
        setattr(args, key, fixed)


def run(args: argparse.Namespace) -> int:
    import sys

    from srkit.data.layouts import discover_clips
    from srkit.data.motion import rank_clips, select_top, write_subset
    from srkit.errors import ConfigError
    from srkit.io.atomic import check_output_path

    _apply_preset(args)
    if args.max_frames is not None and args.max_frames < 2:
        raise ConfigError(f"--max-frames must be at least 2 (a frame pair), got {args.max_frames}")
    check_output_path(args.output, overwrite=args.overwrite)  # fail before the (slow) scoring
    clips = discover_clips(args.root, args.layout, split=args.split)
    bar = None
    progress = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(clips), unit="clip", desc="optical flow", file=sys.stderr, dynamic_ncols=True)

        def progress(done: int, _score) -> None:
            bar.update(done - bar.n)

    try:
        ranked = rank_clips(clips, max_frames=args.max_frames, max_side=args.max_side, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    chosen = select_top(ranked, args.top)
    named = f"{args.preset}, " if args.preset else ""
    header = (f"srkit data motion-rank: {len(chosen)} of {len(ranked)} clips of {args.root} "
              f"({named}layout {args.layout}, split {args.split}, top {args.top:g}) by mean Farneback flow magnitude")
    path = write_subset(args.output, chosen, header=header, overwrite=args.overwrite)
    if not args.quiet:
        keep = {c.name for c in chosen}
        width = max(len(c.name) for c in ranked)
        for c in ranked:
            print(f"{'*' if c.name in keep else ' '} {c.name:<{width}}  {c.mean_flow:8.3f} px/frame  ({c.pairs} pairs)")
        print(f"{path}: {len(chosen)} of {len(ranked)} clips (largest motion first)", file=sys.stderr)
    return 0
