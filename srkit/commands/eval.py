"""``srkit eval``: PSNR/SSIM of a model (or MATLAB bicubic) on a benchmark, as papers report them."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap
from pathlib import Path
from typing import Any

from srkit.errors import ConfigError, InputError

EXAMPLES = textwrap.dedent(
    """\
    examples:
      # MATLAB-bicubic baseline on Vid4 (BI x4, Y channel, as EDVR reports Vid4)
      srkit eval --model bicubic --data datasets/Vid4 --layout vid4 --y-channel
      # EDVR-M on REDS4 (RGB, no crop), with a report folder and side-by-side crops
      # (--model may be omitted: the checkpoint says which network it is)
      srkit eval --model edvr-m --weights edvr_m_reds.safetensors --data datasets/REDS --layout reds4 \\
          --out results/edvr_m_reds4 --crops
      # UDVD on images degraded by blur 1.6 and noise 15 (synthesised from the ground truth)
      srkit eval --model udvd-x4 --weights udvd.pth --data Set5 --layout images --degradation SRMD \\
          --blur 1.6 --noise 15 --y-channel --crop-border 4
      # UDVD on DN (bicubic x4 + Gaussian noise of level 15), as the UDVD paper reports BI and DN
      srkit eval --model udvd-x4 --weights udvd.pth --data Set5 --layout images --degradation DN --noise 15
      # everything from a YAML file (keys are the long option names); command-line options win
      srkit eval --config eval.yaml --frames 10

    LR frames come from disk when the layout has them for the degradation (e.g. Vid4/BIx4,
    REDS train_sharp_bicubic/X4), otherwise they are synthesised from the ground truth (MATLAB
    bicubic for BI, Gaussian 13x13 sigma 0.4*scale + subsampling for BD (see --bd-variant), BI +
    Gaussian noise of level --noise for DN, SRMD blur+noise). Scores are
    computed on outputs rounded to 8 bits; the dataset score is the mean of per-clip means.
    """
)

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from srkit.data.layouts import LAYOUTS
    from srkit.data.windows import PADDING_MODES
    from srkit.utils.device import PRECISIONS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    S = argparse.SUPPRESS  # unset options fall back to --config, then to the built-in defaults
    g = parser.add_argument_group("what to evaluate")
    g.add_argument("--model", default=S, metavar="NAME", help="registered model preset, or 'bicubic' for the MATLAB-bicubic baseline (default: the network the --weights file describes; bicubic without weights)")
    g.add_argument("--weights", default=S, metavar="FILE", help="checkpoint for the model (any format srkit loads)")
    g.add_argument("--config", metavar="FILE.yaml", help="read options from a YAML mapping (keys: long option names, e.g. 'y-channel: true', 'ssim: false'); command-line options win")
    d = parser.add_argument_group("data")
    d.add_argument("--data", default=S, metavar="DIR", help="dataset root (or a video file / folder for --layout videos)")
    d.add_argument("--layout", default=S, choices=(*LAYOUTS, "reds4"), help="dataset layout; reds4 = REDS clips 000/011/015/020 (default auto)")
    d.add_argument("--split", default=S, metavar="NAME", help="REDS/Vimeo/DIV2K split (default test; reds4 for --layout reds4)")
    d.add_argument("--subset", default=S, metavar="LIST.txt", help="only the clips named in this file (first token per line)")
    d.add_argument("--frames", default=S, type=int, metavar="N", help="score only the first N frames of each clip (a video model still reads the real neighbours of frame N-1)")
    d.add_argument("--degradation", default=S, metavar="NAME", help="how LR relates to GT: BI, BD, DN (bicubic + --noise, as UDVD reports) or SRMD (synthesised when not on disk), or a layout's own LR set such as REDS blur_bicubic / blur (default BI)")
    d.add_argument("--scale", default=S, type=int, metavar="S", help="upscaling factor (default 4)")
    d.add_argument("--blur", default=S, type=float, metavar="SIGMA", help="SRMD: Gaussian blur width (default: random per clip, SRMD range); BD: sigma (default 0.4 x scale = 1.6 at x4); also the conditioned model's blur when LR is on disk")
    d.add_argument("--bd-variant", dest="bd_variant", default=S, metavar="{duf,matlab}", help="BD sampling grid when synthesised: duf = 13x13 Gaussian, pixels 0, s, 2s, ... (DUF, BasicSR duf_downsample; default); matlab = BasicSR's MATLAB BD script (12x12 at sigma 1.6, replicate borders, block centres: BasicVSR/IconVSR Vimeo-90K and Vid4 BD)")
    d.add_argument("--pca-basis", dest="pca_basis", default=S, metavar="BASIS", help="PCA basis of a conditioned model's kernel codes: srkit (default, srkit's models), srmd (SRMD's procedure) or an SRMD/KAIR .mat file (PCA_P.mat): the basis the model was trained with")
    d.add_argument("--noise", default=S, type=float, metavar="N", help="additive Gaussian noise, 0-255 units (default 0)")
    d.add_argument("--jpeg", default=S, type=int, metavar="Q", help="JPEG-compress the synthesised LR at quality Q")
    d.add_argument("--seed", default=S, type=int, help="seed of synthesised degradations (default 0; per clip, independent of --subset)")
    m = parser.add_argument_group("metrics")
    m.add_argument("--y-channel", dest="y_channel", default=S, action="store_true", help="score the BT.601 Y channel (MATLAB rgb2ycbcr) instead of RGB")
    m.add_argument("--crop-border", dest="crop_border", default=S, type=int, metavar="N", help="ignore N pixels at each border (default 0)")
    m.add_argument("--no-ssim", dest="ssim", default=S, action="store_false", help="PSNR only (faster)")
    m.add_argument("--lpips", default=S, action="store_true", help="also LPIPS per frame (AlexNet, RGB, as MANA reports; lower is better): needs pip install 'srkit[lpips]' and torchvision's alexnet-owt-7be5be79.pth in TORCH_HOME/hub/checkpoints (downloaded on first use)")
    o = parser.add_argument_group("output")
    o.add_argument("--out", default=S, metavar="DIR", help="write eval.json, per_frame.csv, per_clip.csv, psnr_per_frame.png (and crops/) here")
    o.add_argument("--crops", default=S, action="store_true", help="with --out: side-by-side crops (bicubic | model | GT) of each clip's middle frame")
    o.add_argument("--crop-size", dest="crop_size", default=S, type=int, metavar="PX", help="crop side in output pixels (default 128)")
    o.add_argument("--overwrite", default=S, action="store_true", help="replace an earlier report in --out")
    o.add_argument("-q", "--quiet", default=S, action="store_true", help="no progress bar")
    r = parser.add_argument_group("runtime")
    r.add_argument("--device", default=S, metavar="DEV", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    r.add_argument("--precision", default=S, choices=tuple(PRECISIONS), help="autocast precision (default fp32)")
    r.add_argument("--padding", default=S, choices=PADDING_MODES, help="how video models' frame windows are filled at clip borders (default reflection_circle, as EDVR's BasicSR test configs)")
    r.add_argument("--repeat-centre", dest="repeat_centre", default=S, action="store_true", help="temporal ablation: feed a video model every window as its centre frame repeated (what the model gains from the neighbours is the drop against the normal run)")
    r.add_argument("--tile", default=S, type=int, metavar="PX", help="restore in tiles of PX input pixels (large frames, small memory)")
    r.add_argument("--max-memory", dest="max_memory", default=S, metavar="SIZE", help="pick the tile size for this memory budget, e.g. 4GB")


def _load_config(path: str) -> dict[str, Any]:
    """The option mapping of a ``--config`` YAML file (keys are long option names, dashes or underscores)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError("no such config file" if not p.exists() else "config is not a file", p)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid YAML ({str(exc).splitlines()[0]})", p) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config must be a mapping of option names to values", p)
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_options(args: argparse.Namespace):
    from srkit.eval import EvalOptions
    from srkit.utils.config import check_values

    fields = {f.name for f in dataclasses.fields(EvalOptions)}
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        # The same typed engine as training configs: unknown keys and bad values name the key.
        cfg = _load_config(args.config)
        try:
            values.update(check_values(EvalOptions, cfg))
        except ConfigError as exc:
            raise ConfigError(str(exc), args.config) from None
    values.update({k: v for k, v in vars(args).items() if k in fields})
    if not values.get("data"):
        raise ConfigError("--data is required (or 'data:' in the --config file)")
    values["data"] = str(values["data"])
    if values.get("layout") == "reds4":
        values["layout"] = "reds"
        values.setdefault("split", "reds4")
    return EvalOptions(**values)


def run(args: argparse.Namespace) -> int:
    from srkit.eval import check_report_folder, evaluate, format_table, write_report

    opts = build_options(args)
    opts.validate()  # every option checked before the report folder is created
    if opts.crops and not opts.out:
        raise ConfigError("--crops needs --out DIR (the crops are written there)")
    if opts.out:
        check_report_folder(opts.out, overwrite=opts.overwrite)  # fail before the long run, not after
    from srkit.models import has_pretrained

    if opts.model not in (None, "bicubic") and not opts.weights and not has_pretrained(opts.model):
        # Legal (smoke tests, timing), but numbers from random weights must never pass for results.
        print(f"srkit eval: warning: no --weights, {opts.model} is untrained (random outputs)", file=sys.stderr)
    report = evaluate(opts)
    print(format_table(report))
    if opts.out:
        files = write_report(report, opts.out, overwrite=opts.overwrite)
        print(f"wrote {len(files)} files to {opts.out}", file=sys.stderr)
    return 0

