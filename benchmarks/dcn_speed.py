"""Speed of srkit's deform_conv2d against torchvision's, measured side by side in one run.

Default size is EDVR-M's level-1 alignment DCN: input (1, 64, 180, 320) (REDS LR), 3x3, padding 1,
8 deformable groups, 64 output channels, float32, with a modulation mask.  Both implementations get
the same inputs; runs are interleaved (ours, torchvision, ours, ...) so that load from other
processes affects both alike, and the median of ``--repeats`` runs is reported.

    python benchmarks/dcn_speed.py                 # forward, inference mode
    python benchmarks/dcn_speed.py --backward      # also forward + backward (training step)
    python benchmarks/dcn_speed.py --size 1 64 90 160 --repeats 7

Prints times in milliseconds, the speed-up ratio (torchvision time / ours) and the max abs difference.
srkit's inference runs through its compiled im2col (``srkit.ops.native``) when that builds here; the
"PyTorch path" rows time the same calls with it switched off (grid_sample, mask multiply, cast).
``--channels-last`` gives srkit channels_last tensors as the inference engine does, and the bf16 rows
get bf16 features, offsets and masks, as autocast's convolutions give them.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from typing import Callable

import torch

from srkit.ops import deform_conv2d
from srkit.ops import deform_conv as dc_module
from srkit.ops.native import deform_im2col


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms per function, alternating between them each round."""
    for fn in fns.values():  # warm-up (allocator, oneDNN primitive cache)
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}


def make_inputs(n: int, c: int, h: int, w: int, cout: int, dg: int, offset_scale: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    offset = torch.randn(n, 2 * dg * 9, h, w, generator=g) * offset_scale
    mask = torch.rand(n, dg * 9, h, w, generator=g)
    weight = torch.randn(cout, c, 3, 3, generator=g) * (1.0 / (c * 9) ** 0.5)
    bias = torch.randn(cout, generator=g) * 0.1
    return x, offset, weight, bias, mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=4, default=[1, 64, 180, 320], metavar=("N", "C", "H", "W"))
    parser.add_argument("--out-channels", type=int, default=64)
    parser.add_argument("--deformable-groups", type=int, default=8)
    parser.add_argument("--offset-scale", type=float, default=4.0, help="std of the random offsets (pixels)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--backward", action="store_true", help="also time forward + backward")
    parser.add_argument("--no-torchvision", action="store_true", help="time srkit only")
    parser.add_argument("--channels-last", action="store_true", help="srkit's inputs in channels_last (as in the engine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    n, c, h, w = args.size
    x, offset, weight, bias, mask = make_inputs(n, c, h, w, args.out_channels, args.deformable_groups, args.offset_scale)
    tv = None
    if not args.no_torchvision:
        try:
            import torchvision.ops as tv
        except ImportError:
            print("torchvision not installed: timing srkit only", file=sys.stderr)

    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    xs, offs, masks = (t.contiguous(memory_format=fmt) for t in (x, offset, mask))
    xb, offb, maskb = (t.to(torch.bfloat16) for t in (xs, offs, masks))
    compiled = deform_im2col() is not None

    @contextlib.contextmanager
    def pytorch_path():
        usable = dc_module._fused_usable
        dc_module._fused_usable = lambda *a: False
        try:
            yield
        finally:
            dc_module._fused_usable = usable

    def ours() -> torch.Tensor:
        return deform_conv2d(xs, offs, weight, bias, padding=1, mask=masks)

    def ours_bf16() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return deform_conv2d(xb, offb, weight, bias, padding=1, mask=maskb)

    def without_kernel(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with pytorch_path():
                return fn()
        return run

    def theirs() -> torch.Tensor:
        return tv.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"input {tuple(x.shape)}{' channels_last' if args.channels_last else ''}, 3x3 pad 1, "
          f"dg {args.deformable_groups}, cout {args.out_channels}, |offset| std {args.offset_scale}, "
          f"compiled im2col: {'yes' if compiled else 'not available'}")
    with torch.inference_mode():
        fns = {"srkit fp32": ours, "srkit bf16-autocast": ours_bf16}
        if compiled:
            fns["srkit fp32, PyTorch path"] = without_kernel(ours)
            fns["srkit bf16, PyTorch path"] = without_kernel(ours_bf16)
        if tv is not None:
            fns["torchvision fp32"] = theirs
        med = _interleaved(fns, args.repeats)
        for name, ms in med.items():
            print(f"  forward  {name:<26s} {ms:9.1f} ms")
        if compiled:
            print(f"  forward  compiled im2col vs PyTorch path: "
                  f"{med['srkit fp32, PyTorch path'] / med['srkit fp32']:.2f}x fp32, "
                  f"{med['srkit bf16, PyTorch path'] / med['srkit bf16-autocast']:.2f}x bf16-autocast")
        if tv is not None:
            diff = (ours() - theirs()).abs().max().item()
            diff_bf16 = (ours_bf16().float() - theirs()).abs().max().item()
            print(f"  forward  speed-up vs torchvision: {med['torchvision fp32'] / med['srkit fp32']:.2f}x fp32, "
                  f"{med['torchvision fp32'] / med['srkit bf16-autocast']:.2f}x bf16-autocast")
            print(f"  forward  max |srkit - torchvision|: fp32 {diff:.2e}, bf16-autocast {diff_bf16:.2e}")

    if args.backward:
        leaves = [t.detach().clone().requires_grad_() for t in (x, offset, weight, bias, mask)]
        grad_out = torch.randn(n, args.out_channels, h, w)

        def step(fn) -> Callable[[], list[torch.Tensor]]:
            def run() -> list[torch.Tensor]:
                for t in leaves:
                    t.grad = None
                fn(*leaves[:4], padding=1, mask=leaves[4]).backward(grad_out)
                return [t.grad for t in leaves]
            return run

        fns = {"srkit fp32": step(deform_conv2d)}
        if tv is not None:
            fns["torchvision fp32"] = step(tv.deform_conv2d)
        med = _interleaved(fns, args.repeats)
        for name, ms in med.items():
            print(f"  fwd+bwd  {name:<22s} {ms:9.1f} ms")
        if tv is not None:
            g_ours = [g.clone() for g in fns["srkit fp32"]()]
            g_tv = fns["torchvision fp32"]()
            # Relative to each gradient's scale; the offset gradient also lists how many elements
            # differ by > 1e-3 of its scale: samples within float32 rounding of a pixel line, where
            # bilinear has a kink and the one-sided derivative depends on the last bit.
            parts = []
            for name, a, b in zip(("input", "offset", "weight", "bias", "mask"), g_ours, g_tv):
                scale = b.abs().max().item() or 1.0
                rel = (a - b).abs() / scale
                extra = f" ({int((rel > 1e-3).sum())}/{rel.numel()} at kinks)" if name == "offset" else ""
                parts.append(f"{name} {rel.max().item():.1e}{extra}")
            diffs = ", ".join(parts)
            print(f"  fwd+bwd  speed-up vs torchvision: {med['torchvision fp32'] / med['srkit fp32']:.2f}x")
            print(f"  fwd+bwd  max |grad diff| / max |grad|: {diffs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
