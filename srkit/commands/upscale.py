"""``srkit upscale``: restore / upscale videos, frame folders and images with any srkit model."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


from srkit.errors import ConfigError, InputError

EPILOG = """\
output kind:
  OUTPUT with a video extension (.mp4 .mkv .mov .webm ...) -> video file (same frame count, fps and
  timestamps, audio/subtitles copied without re-encoding); with an image extension -> image; anything
  else is a folder: PNG frames for a video or frame-folder input (00000000.png ... for a video; a
  numbered frame folder keeps its names, e.g. 00001.png ...), images (same names) for image inputs.

examples:
  srkit upscale clip.mp4 -o clip_x4.mp4                    # edvr-s, the shipped srkit-trained video model
  srkit upscale photo.jpg -o photo_x4.png --noise 10       # udvd-s-x4, the shipped image model
  srkit upscale clip.mp4 -o clip_x4.mp4 --model edvr-m --weights EDVR_M_x4_SR_REDS.pth
  srkit upscale frames/ -o out_frames/ --model edvr-l --weights edvr_l.safetensors --tile 256
  srkit upscale clip.mp4 -o frames_x4/ --resume            # continue an interrupted frame-folder output
  srkit upscale photo.png -o photo_x4.png --model udvd-x4 --weights udvd.pth --blur 1.6 --noise 15
  (UDVD models are told the input's degradation; without --blur/--kernel they assume no blur beyond the
  downscaling: --blur 0.2, SRMD's smallest width; --noise defaults to 0)
  torchrun --nproc-per-node 2 -m srkit upscale --input-list videos.txt --output-dir out/
"""


# What runs when neither --model nor --weights is given: the shipped, srkit-trained x4 models -- the
# video model for videos, frame folders and input lists, the image model for a single image.
DEFAULT_MODEL = "edvr-s"
DEFAULT_IMAGE_MODEL = "udvd-s-x4"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from srkit.data.windows import PADDING_MODES
    from srkit.infer.options import OUTPUT_KINDS, OutputOptions, RestoreOptions
    from srkit.utils.device import PRECISIONS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    io = parser.add_argument_group("input and output")
    io.add_argument("input", nargs="?", help="video file, frame folder, image or image folder")
    io.add_argument("-o", "--output", help="output video file, image file or folder (see 'output kind')")
    io.add_argument("--input-list", metavar="FILE",
                    help="text file with one input per line (relative to the file); needs --output-dir. "
                         "Under torchrun each rank takes every WORLD_SIZE-th input from RANK")
    io.add_argument("--output-dir", metavar="DIR", help="existing folder receiving one output per input (same names)")
    io.add_argument("--output-kind", choices=OUTPUT_KINDS, default=OutputOptions.output_kind,
                    help="override the kind deduced from OUTPUT (default: auto)")
    io.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    io.add_argument("--resume", action="store_true",
                    help="continue a frame-folder output after its last complete frame (image folders: skip done "
                         "images); the context frames are re-read so the result equals an uninterrupted run")
    io.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    mg = parser.add_argument_group("model")
    mg.add_argument("--model", help="preset name (see 'srkit models'); default: the network the --weights file "
                                    f"describes, or without --weights the shipped {DEFAULT_MODEL} (videos, frame "
                                    f"folders) or {DEFAULT_IMAGE_MODEL} (a single image)")
    mg.add_argument("--weights", metavar="FILE",
                    help="checkpoint: srkit safetensors, BasicSR, MMagic or original format (default: the "
                         "preset's shipped weights, e.g. edvr-s; random for presets without, speed tests only)")

    rt = parser.add_argument_group("runtime")
    rt.add_argument("--device", default=RestoreOptions.device, help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    rt.add_argument("--precision", choices=tuple(PRECISIONS),
                    help="autocast precision (default: bf16 on CPUs that compute it natively -- AVX512-BF16 or "
                         "AMX -- where it is about twice as fast, fp32 elsewhere; bf16 is emulated and slow on "
                         "other CPUs)")
    rt.add_argument("--threads", type=int, metavar="N", help="CPU threads for PyTorch (default: PyTorch's choice)")
    rt.add_argument("--tile", type=int, metavar="PX",
                    help="restore in tiles of PX input pixels (blended; bounds memory for large frames)")
    rt.add_argument("--tile-overlap", type=int, default=RestoreOptions.tile_overlap, metavar="PX",
                    help="context added on each side of a tile and blended across tile seams (default: %(default)s)")
    rt.add_argument("--max-memory", metavar="SIZE",
                    help="choose the tile size so that one restoration fits SIZE (e.g. 4GB, 512MB)")
    rt.add_argument("--batch-size", type=int, default=RestoreOptions.batch_size, metavar="N",
                    help="windows restored together (default: %(default)s)")
    rt.add_argument("--padding", default=RestoreOptions.padding, choices=PADDING_MODES,
                    help="how windows are padded at the start/end of a clip (default: %(default)s, as "
                         "EDVR's training and evaluation)")
    rt.add_argument("--no-cache", action="store_true",
                    help="recompute every frame's features in every window (slower; same output)")
    rt.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory layout")

    vo = parser.add_argument_group("video output")
    vo.add_argument("--codec", default=OutputOptions.codec,
                    help="encoder (libx264, libx265, libvpx-vp9, ffv1...; default %(default)s)")
    vo.add_argument("--crf", type=float, default=OutputOptions.crf, help="quality for x264/x265/vp9 (default: %(default)s)")
    vo.add_argument("--pix-fmt", help="pixel format (default: yuv420p; yuv420p10le for >8-bit sources)")
    vo.add_argument("--lossless", action="store_true", help="lossless encoding (exact RGB)")
    vo.add_argument("--fps", type=float, default=OutputOptions.fps,
                    help="frame rate of a video made from a frame folder (default %(default)s)")

    dg = parser.add_argument_group("degradation (UDVD and other non-blind models)")
    dg.add_argument("--blur", type=float, metavar="SIGMA", help="Gaussian blur width in HR (output) pixels, as the SRMD/UDVD degradation model defines it")
    dg.add_argument("--blur2", type=float, metavar="SIGMA2", help="second width (anisotropic blur)")
    dg.add_argument("--angle", type=float, default=0.0, metavar="DEG", help="rotation of an anisotropic blur (degrees)")
    dg.add_argument("--noise", type=float, default=0.0, metavar="N", help="noise level, 0-255 units (default 0)")
    dg.add_argument("--kernel", metavar="FILE.npy", help="blur kernel as a 2-D .npy array (instead of --blur)")
    dg.add_argument("--pca-basis", metavar="BASIS", default=None,
                    help="PCA basis of the maps' kernel codes: srkit (default, srkit's models), srmd (SRMD's "
                         "procedure), or an SRMD/KAIR .mat file (PCA_P.mat): the basis the model was trained with")


def degradation_condition(args: argparse.Namespace, conditioned_model: bool = False):
    """``(height, width) -> (16, H, W)`` maps from the blur/noise options, or None when none is given.

    The maps are UDVD's (``srkit.data.conditions.udvd_condition``: 15 PCA codes of the kernel + noise).
    For a model known to take them (``conditioned_model``) a missing blur defaults to
    ``conditions.DEFAULT_BLUR`` (:func:`run` says so), so that a photo upscales without degradation options.
    """
    given = args.blur is not None or args.kernel is not None or args.blur2 is not None or args.noise
    if not given and not conditioned_model:
        return None
    from srkit.data.conditions import DEFAULT_BLUR, udvd_condition

    if args.kernel is not None and not Path(args.kernel).is_file():
        raise InputError("no such file", args.kernel)
    from srkit.data.degrade import check_blur_width

    for option, value in (("--blur", args.blur), ("--blur2", args.blur2)):
        if value is not None:
            check_blur_width(value, option)
    if not math.isfinite(args.angle):
        raise ConfigError(f"--angle must be a finite number of degrees, got {args.angle}")
    blur = DEFAULT_BLUR if _no_blur_given(args) else args.blur
    options = dict(blur=blur, blur2=args.blur2, angle=args.angle, noise=args.noise, kernel=args.kernel,
                   pca_basis=getattr(args, "pca_basis", None))
    udvd_condition(1, 1, **options)  # check the options now, before any input is read
    return lambda h, w: udvd_condition(h, w, **options)


def _no_blur_given(args: argparse.Namespace) -> bool:
    return args.blur is None and args.kernel is None and args.blur2 is None


def _default_model(args: argparse.Namespace) -> str:
    """The shipped model for this input: the image model for one image file, else the video model."""
    from srkit.io.images import IMAGE_EXTENSIONS

    single_image = (not args.input_list and args.input is not None
                    and Path(args.input).suffix.lower() in IMAGE_EXTENSIONS and not Path(args.input).is_dir())
    return DEFAULT_IMAGE_MODEL if single_image else DEFAULT_MODEL


def default_precision(device: str) -> str:
    """What `srkit upscale` runs in without --precision: bf16 on a CPU that computes it natively
    (AVX512-BF16 or AMX: about 2x fp32), fp32 elsewhere (emulated bf16 is slower than fp32; GPUs keep
    fp32 unless asked, as eval's literature-exact numbers do)."""
    from srkit.utils.device import cpu_has_native_bf16, select_device

    return "bf16" if select_device(device).type == "cpu" and cpu_has_native_bf16() else "fp32"


def run(args: argparse.Namespace) -> int:
    from srkit.infer.run import read_input_list, upscale, upscale_many
    from srkit.utils.device import torch_threads

    if args.input_list:
        if args.input or args.output:
            raise ConfigError("give either INPUT -o OUTPUT or --input-list with --output-dir")
        if not args.output_dir:
            raise ConfigError("--input-list needs --output-dir")
    else:
        if not args.input:
            raise ConfigError("no input given (srkit upscale INPUT -o OUTPUT, or --input-list FILE --output-dir DIR)")
        if not args.output and not args.output_dir:
            raise ConfigError("no output given (-o OUTPUT or --output-dir DIR)")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    from srkit.infer.options import OutputOptions, RestoreOptions

    # Every option is checked before anything is printed or read: a bad one is a single error line.
    restore = RestoreOptions(device=args.device, precision=args.precision or RestoreOptions.precision, tile=args.tile,
                             tile_overlap=args.tile_overlap, max_memory=args.max_memory,
                             channels_last=not args.no_channels_last, padding=args.padding,
                             use_cache=not args.no_cache, batch_size=args.batch_size).validate()
    out = OutputOptions(overwrite=args.overwrite, resume=args.resume, quiet=args.quiet, codec=args.codec,
                        crf=args.crf, pix_fmt=args.pix_fmt, lossless=args.lossless, fps=args.fps,
                        output_kind=args.output_kind).validate()
    from srkit.models import has_pretrained, model_entry, preset_spec

    if args.model == "bicubic":  # eval's reference row, not a network: say so before any other line
        raise ConfigError("--model bicubic is srkit eval's MATLAB-bicubic baseline, not a network upscale can run; "
                          "choose a preset from 'srkit models'")
    model = args.model or (None if args.weights else _default_model(args))
    if model is not None:
        model_entry(model)  # an unknown name fails here, before a warning about its weights
    conditioned = model is not None and preset_spec(model).condition is not None
    condition = degradation_condition(args, conditioned)
    if args.input and not args.input_list:
        from srkit.infer.run import input_kind
        from srkit.io.video import probe_video

        # A missing, unreadable or undecodable input is one error line, before the lines below.
        if input_kind(Path(args.input)) == "video":
            probe_video(args.input)
    restore.precision = args.precision or default_precision(args.device)
    if not args.quiet:
        if args.weights is None and not has_pretrained(model):
            print(f"srkit: warning: no --weights given: {model} runs with random weights (speed tests only)",
                  file=sys.stderr)
        elif args.weights is None and args.model is None:
            what = "image" if model == DEFAULT_IMAGE_MODEL else "video"
            print(f"srkit: using {model}, srkit's shipped x4 {what} model (--model / --weights choose another)",
                  file=sys.stderr)
        if args.precision is None and restore.precision == "bf16":
            print("srkit: bf16 autocast (this CPU computes bf16 natively: about 2x faster than fp32; "
                  "--precision fp32 for fp32)", file=sys.stderr)
        if conditioned and _no_blur_given(args):
            from srkit.data.conditions import DEFAULT_BLUR

            print(f"srkit: assuming blur {DEFAULT_BLUR} (none beyond the downscaling) and noise {args.noise:g}; "
                  "--blur/--kernel and --noise describe the input's degradation", file=sys.stderr)
    failed: list[Path] = []  # inputs of an --input-list that could not be restored
    with torch_threads(args.threads):
        if args.input_list or (args.output_dir and not args.output):
            inputs = read_input_list(args.input_list) if args.input_list else [Path(args.input)]

            def report(path: Path, exc: Exception) -> None:
                failed.append(path)
                print(f"srkit: error: {exc}", file=sys.stderr)

            results = upscale_many(inputs, args.output_dir, model, weights=args.weights, condition=condition,
                                   restore_options=restore, output_options=out, on_error=report if args.input_list else None)
        else:
            results = [upscale(args.input, args.output, model, weights=args.weights, condition=condition,
                               restore_options=restore, output_options=out)]
    if not args.quiet:
        for r in results:
            extra = f", {r.skipped} already done" if r.skipped else ""
            noun = ("image" if r.kind in ("image", "images") else "frame") + ("" if r.frames == 1 else "s")
            print(f"{r.input} -> {r.output}: {r.frames} {noun}{extra} in {r.seconds:.1f}s ({r.fps:.2f}/s)",
                  file=sys.stderr)
    if args.input_list and failed:
        print(f"srkit: error: {len(failed)} input(s) failed: {', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    return 0
