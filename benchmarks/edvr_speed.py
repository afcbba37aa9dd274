"""EDVR-M x4 inference speed on CPU: seconds per output frame, and the share spent in deformable convs.

Input: 5 frames at the REDS LR size (320x180) from ``../shared/data/lr_only/street_320x180`` when that
folder exists, random frames otherwise.  Variants, measured in one run with the same weights and input:

* ``srkit fp32``             -- the network as shipped (srkit's pure-PyTorch DCN);
* ``srkit fp32 ch-last``     -- model and input in ``channels_last`` memory format;
* ``srkit bf16 autocast``    -- ``torch.autocast("cpu", bfloat16)``; skipped unless the CPU has native
  bf16 (oneDNN reports it) or ``--bf16 on``: without it oneDNN emulates bf16 convolutions ~30x slower;
* ``reference fp32``         -- the same network with every DCN swapped for ``torchvision.ops.deform_conv2d``
  (what a BasicSR/MMagic-style build on torchvision's kernel costs).

The offset-predicting convolutions are zero at initialisation (all samples on the pixel grid, which
flatters every kernel's memory access); they are re-initialised with small random weights so the
offsets are a few pixels, as in a trained network.  The mean |offset| is printed (OffsetMonitor).

    python benchmarks/edvr_speed.py                    # 2 timed forwards per variant
    python benchmarks/edvr_speed.py --iters 3 --size 90 160
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

import srkit.ops.deform_conv as dc
from srkit.models import create_model

FRAMES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lr_only" / "street_320x180"


def load_frames(num: int, height: int, width: int) -> tuple[torch.Tensor, str]:
    """(1, num, 3, H, W) float frames: the street clip's first frames when present, else random."""
    if FRAMES.is_dir():
        from srkit.io.images import list_images, read_rgb, to_float

        files = list_images(FRAMES)[:num]
        if len(files) == num:
            arr = np.stack([to_float(read_rgb(f)) for f in files])  # (T, H, W, 3)
            t = torch.from_numpy(arr).permute(0, 3, 1, 2)[None]
            if t.shape[-2:] != (height, width):
                t = torch.nn.functional.interpolate(
                    t[0], size=(height, width), mode="bilinear", align_corners=False, antialias=True
                )[None]
            return t.contiguous(), f"{FRAMES.name} frames 0-{num - 1}"
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, num, 3, height, width, generator=g), "random frames"


@contextlib.contextmanager
def dcn_timer(impl: Callable | None = None) -> Iterator[list[float]]:
    """Route every ModulatedDeformConv2d call through ``impl`` (default: srkit's) and time it."""
    original = dc.deform_conv2d
    inner = impl or original
    spent: list[float] = []

    depth = [0]

    def timed(*args, **kwargs):
        depth[0] += 1  # count only outermost calls, should an implementation recurse via the name
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                spent.append(time.perf_counter() - t0)

    dc.deform_conv2d = timed  # ModulatedDeformConv2d.forward looks the function up at call time
    try:
        yield spent
    finally:
        dc.deform_conv2d = original


def time_variant(model: torch.nn.Module, x: torch.Tensor, iters: int, impl: Callable | None = None,
                 bf16: bool = False) -> tuple[list[float], list[float]]:
    """Seconds per forward (= per output frame) and seconds in DCN calls per forward."""
    totals, dcn = [], []
    with torch.inference_mode():
        for _ in range(iters):
            with dcn_timer(impl) as spent:
                ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
                t0 = time.perf_counter()
                with ctx:
                    model(x)
                totals.append(time.perf_counter() - t0)
            dcn.append(sum(spent))
    return totals, dcn


def calibrate_offsets(model: torch.nn.Module, packs: list[torch.nn.Module], x: torch.Tensor, target: float) -> None:
    """Give the (zero-initialised) offset convs random weights scaled so mean |offset| ~ ``target`` px.

    Offsets are linear in the offset-conv weights, so one forward per pass measures the mean |offset|
    (OffsetMonitor) and rescales the offset rows (the mask rows stay small: mask ~ 0.5).  Two passes,
    since later layers see the earlier layers' deformed features.  Runs on a quarter-size input.
    """
    small = torch.nn.functional.interpolate(x[0], scale_factor=0.25, mode="area")[None]
    for m in packs:
        torch.nn.init.normal_(m.conv_offset.weight, std=0.01)
    for _ in range(2):
        with torch.inference_mode():
            model(small)
        with torch.no_grad():
            for m in packs:
                n_off = 2 * m.conv_offset.out_channels // 3
                value = m.monitor.last_abs_mean if m.monitor is not None else None
                if value:
                    m.conv_offset.weight[:n_off] *= target / value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=[180, 320], metavar=("H", "W"), help="LR frame size")
    parser.add_argument("--iters", type=int, default=2, help="timed forwards per variant (median reported)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                        help="bf16 autocast variant: auto = only with native CPU bf16")
    parser.add_argument("--no-reference", action="store_true", help="skip the torchvision-DCN reference")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--offset-px", type=float, default=2.0, help="target mean |offset| of the random DCNs")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    h, w = args.size
    x, source = load_frames(5, h, w)
    torch.manual_seed(0)
    model = create_model("edvr-m").eval()
    packs = [m for m in model.modules() if hasattr(m, "conv_offset")]
    calibrate_offsets(model, packs, x, args.offset_px)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, EDVR-M x4, input {tuple(x.shape)} "
          f"({source}), {args.iters} timed forwards per variant, {len(packs)} DCN layers")

    # Each variant: (name, one timed forward -> (total s, DCN s)).  Rounds interleave the variants so
    # that load from other processes drifts over all of them alike.
    def once(impl: Callable | None = None, bf16: bool = False, channels_last: bool = False):
        def run() -> tuple[float, float]:
            if channels_last:
                model.to(memory_format=torch.channels_last)
            try:
                totals, dcn = time_variant(model, x, 1, impl, bf16)
            finally:
                if channels_last:
                    model.to(memory_format=torch.contiguous_format)
            return totals[0], dcn[0]
        return run

    variants: list[tuple[str, Callable[[], tuple[float, float]]]] = [("srkit fp32", once())]
    if not args.no_channels_last:
        variants.append(("srkit fp32 ch-last", once(channels_last=True)))
    from srkit.utils.device import cpu_has_native_bf16

    # "auto" adds bf16 only where it is native (AVX512-BF16/AMX); emulated bf16 is slower than fp32.
    native_bf16 = bool(cpu_has_native_bf16())
    if args.bf16 == "on" or (args.bf16 == "auto" and native_bf16):
        variants.append(("srkit bf16 autocast", once(bf16=True)))
    tv = None
    if not args.no_reference:
        try:
            import torchvision.ops as tv
        except ImportError:
            print("torchvision not installed: no reference variant", file=sys.stderr)
    if tv is not None:
        variants.append(("reference fp32 (tv DCN)", once(impl=tv.deform_conv2d)))

    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in variants}
    for round_ in range(args.iters):
        for name, run in variants:
            samples[name].append(run())
            print(f"  round {round_ + 1} {name}: {samples[name][-1][0]:.2f} s "
                  f"(DCN {samples[name][-1][1]:.2f} s)", flush=True)
    results = {name: (statistics.median(t for t, _ in v), statistics.median(d for _, d in v))
               for name, v in samples.items()}
    offsets = [m.monitor.last_abs_mean for m in packs if getattr(m, "monitor", None) is not None]
    if offsets and offsets[0] is not None:
        print(f"mean |offset| per DCN layer: {', '.join(f'{v:.2f}' for v in offsets)} px")

    ref = results.get("reference fp32 (tv DCN)")
    print(f"\n{'variant':<26s}{'s/frame':>9s}{'DCN s':>8s}{'DCN %':>7s}{'vs ref':>8s}")
    for name, (total, dcn_s) in results.items():
        ratio = f"{ref[0] / total:7.2f}x" if ref else "      -"
        print(f"{name:<26s}{total:9.2f}{dcn_s:8.2f}{100 * dcn_s / total:6.0f}%{ratio}")
    if "srkit bf16 autocast" not in results:
        print(f"bf16 autocast skipped: native CPU bf16 = {native_bf16} (oneDNN would emulate it; --bf16 on forces)")
    if ref and "srkit fp32" in results:
        print(f"DCN layers alone: srkit {results['srkit fp32'][1]:.2f} s vs torchvision {ref[1]:.2f} s per frame "
              f"({ref[1] / results['srkit fp32'][1]:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
