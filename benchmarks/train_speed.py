"""Training step speed in bf16 autocast against fp32, side by side in one run, and whether bf16 learns alike.

1. Speed: an EDVR-M training step (forward, Charbonnier loss, backward, Adam) on a batch of 5-frame
   LR windows, fp32 and bf16 autocast interleaved step by step (so load from other processes hits both
   alike); the median step time of each and the ratio. Issue 14's target: bf16 >= 2x fp32 on a CPU with
   AMX; without native bf16 (no AVX512-BF16/AMX) bf16 is emulated and the ratio means nothing.
2. Learning: the same short run twice -- a small EDVR, the same seed, the same batches of BI x4
   samples from the development footage (random data when it is absent) -- in fp32 and in bf16; the
   loss curves side by side (mean over blocks of steps) and their largest relative difference.

    python benchmarks/train_speed.py                    # EDVR-M, batch 4, 64x64 LR crops; 60-step runs
    python benchmarks/train_speed.py --batch 2 --lr-size 48 --steps 6 --run-steps 40

Measured on a 2-core AMD EPYC (Zen 4: native AVX512-BF16, no AMX), ``--steps 4 --run-steps 48``:
EDVR-M step fp32 7.28 s, bf16 4.38 s (1.66x); the two 48-step edvr-s runs' block-mean losses agree
to 0.0% (e.g. 0.03965 / 0.03963 over steps 1-8, 0.04364 / 0.04364 over 41-48).
On a 2-core Intel Xeon with AMX: the same part 2 agrees to 0.030%; ``--steps 3 --steps-only`` (part 1 also
times the models in channels_last, as ``srkit train --set memory_format=channels_last`` trains): fp32 6.01 s, bf16 3.74 s
(1.61x), fp32/channels_last 5.17 s, bf16/channels_last 2.93 s (1.76x; 2.05x the NCHW fp32 step).
``--profile bf16/channels_last`` prints where a step's time goes (table in docs/PERFORMANCE.md).
Session 12, same kind of Xeon, after the DCN's modulated GEMM moved to bf16 under autocast, ``--steps 5
--steps-only`` twice: bf16 2.30x / 2.02x fp32, channels_last 2.29x / 2.52x -- but the host was slower
that session for fp32 (7.4-8.7 s per fp32 step, 3.65-3.77 s per bf16 one), so the ratios are flattered.

    python benchmarks/train_speed.py --steps 3 --steps-only          # part 1 only, NCHW and channels_last
    python benchmarks/train_speed.py --profile bf16/channels_last    # self time by op group
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "video_hr" / "set8"


def charbonnier(out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((out.float() - gt) ** 2 + 1e-12).mean()


def step(model, opt, lq, gt, precision: str) -> tuple[float, float]:
    """One training step; ``(seconds, loss)``."""
    from srkit.utils.device import autocast

    t0 = time.perf_counter()
    with autocast(torch.device("cpu"), precision):
        out = model(lq)
    loss = charbonnier(out.image if hasattr(out, "image") else out, gt)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0, float(loss.detach())


def variants(args) -> list[str]:
    """Timed variants: ``precision`` or ``precision/channels_last``."""
    formats = {"nchw": [""], "channels_last": ["/channels_last"], "both": ["", "/channels_last"]}[args.memory_format]
    return [p + f for f in formats for p in ("fp32", "bf16")]


def build(name: str, state: dict | None = None):
    from srkit.models import create_model

    model = create_model(name).train()
    if state is not None:
        model.load_state_dict(state)
    return model


def speed(args) -> dict[str, float]:
    """Median step seconds of each variant, timed in lock step (one step of each per round)."""
    torch.manual_seed(0)
    state = build(args.model).state_dict()
    models = {}
    for v in variants(args):
        m = build(args.model, state)
        models[v] = m.to(memory_format=torch.channels_last) if v.endswith("/channels_last") else m
    opts = {v: torch.optim.Adam(m.parameters(), 4e-4) for v, m in models.items()}
    s = args.lr_size
    lq = torch.rand(args.batch, 5, 3, s, s)
    gt = torch.rand(args.batch, 3, 4 * s, 4 * s)
    times: dict[str, list[float]] = {v: [] for v in models}
    for i in range(args.steps + 1):  # the first step of each is a warm-up
        for v in models:
            t, _ = step(models[v], opts[v], lq, gt, v.split("/")[0])
            if i:
                times[v].append(t)
        if i:
            print(f"  step {i}: " + ", ".join(f"{v} {times[v][-1]:.2f}s" for v in models), flush=True)
    return {v: statistics.median(t) for v, t in times.items()}


# --profile: which group an op's self time belongs to (first matching rule; torch.profiler's names).
TRAIN_OP_GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("convolution backward", ("aten::convolution_backward", "aten::mkldnn_convolution_backward")),
    ("convolution", ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::thnn_conv2d")),
    ("deformable sampling backward", ("aten::grid_sampler_2d_backward",)),
    ("deformable sampling", ("aten::grid_sampler_2d",)),
    ("GEMM (DCN, attention)", ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm")),
    ("optimizer (Adam)", ("aten::_foreach", "aten::_fused_adam")),
    ("dtype/layout copies", ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous")),
    ("resampling", ("aten::pixel_shuffle", "aten::pixel_unshuffle", "aten::upsample_bilinear2d",
                    "aten::upsample_bilinear2d_backward", "aten::avg_pool2d", "aten::max_pool2d")),
]


def profile_steps(args, variant: str, steps: int = 2) -> None:
    """Self time per op group of ``steps`` training steps of ``variant`` (after one warm-up step)."""
    from torch.profiler import ProfilerActivity, profile
    from upscale_speed import self_time_by_group  # beside this script

    torch.manual_seed(0)
    model = build(args.model)
    if variant.endswith("/channels_last"):
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 4e-4)
    s = args.lr_size
    lq, gt = torch.rand(args.batch, 5, 3, s, s), torch.rand(args.batch, 3, 4 * s, 4 * s)
    precision = variant.split("/")[0]
    step(model, opt, lq, gt, precision)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(model, opt, lq, gt, precision)
    wall = (time.perf_counter() - t0) / steps
    by_group, by_op = self_time_by_group(prof, steps, TRAIN_OP_GROUPS, "other (elementwise, activations, reductions, ...)")
    print(f"\n{variant} training step: {wall:.2f} s per step with the profiler on; self time by group:")
    for g, t, share in by_group:
        print(f"  {g:48s} {t:7.3f} s {share:6.1%}")
    print("  top ops:")
    for name, t, share, calls in by_op[:12]:
        print(f"  {name:48s} {t:7.3f} s {share:6.1%} {calls:6.0f} calls")


def batches(n: int, batch: int, lr: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` fixed (lq, gt) batches: BI x4 windows of the development footage, else random frames."""
    g = torch.Generator().manual_seed(seed)
    if DATA.is_dir():
        from srkit.data.video_dataset import VideoSRDataset

        ds = VideoSRDataset(DATA, num_frames=5, subset=["hypersmooth", "motorbike", "rafting"], scale=4,
                            degradation="BI", train=True, gt_patch=4 * lr, seed=seed, layout="folders")
        out = []
        for _ in range(n):
            items = [ds[int(torch.randint(len(ds), (1,), generator=g))] for _ in range(batch)]
            out.append((torch.stack([it["lq"] for it in items]), torch.stack([it["gt"] for it in items])))
        return out
    return [(torch.rand(batch, 5, 3, lr, lr, generator=g), torch.rand(batch, 3, 4 * lr, 4 * lr, generator=g))
            for _ in range(n)]


def learning(args) -> dict[str, list[float]]:
    data = batches(args.run_steps, 4, 32, seed=0)
    curves = {}
    for p in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build("edvr-s")
        opt = torch.optim.Adam(model.parameters(), 4e-4)
        curves[p] = [step(model, opt, lq, gt, p)[1] for lq, gt in data]
    return curves


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="edvr-m", help="preset timed in part 1 (default edvr-m)")
    ap.add_argument("--batch", type=int, default=4, help="windows per step in part 1 (default 4)")
    ap.add_argument("--lr-size", type=int, default=64, help="LR crop side in part 1 (default 64: 256 GT)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps of each precision (default 5)")
    ap.add_argument("--run-steps", type=int, default=60, help="steps of each learning run (default 60)")
    ap.add_argument("--memory-format", choices=("nchw", "channels_last", "both"), default="both",
                    help="memory format(s) of the timed models in part 1 (default both)")
    ap.add_argument("--steps-only", action="store_true", help="part 1 only")
    ap.add_argument("--profile", metavar="VARIANT", choices=("fp32", "bf16", "fp32/channels_last", "bf16/channels_last"),
                    help="instead: profile two training steps of this variant, self time by op group")
    args = ap.parse_args()
    from srkit.utils.device import cpu_has_native_bf16, cpu_summary

    print(f"CPU: {cpu_summary()}")
    if args.profile:
        profile_steps(args, args.profile)
        return 0
    print(f"1. {args.model} training step, batch {args.batch} x 5 frames of {args.lr_size}x{args.lr_size} LR:")
    med = speed(args)
    amx = bool(getattr(getattr(torch, "cpu", None), "_is_amx_tile_supported", lambda: False)())
    target = "target >= 2x with AMX" if amx else ("no AMX: no target" if cpu_has_native_bf16() else
                                                   "bf16 emulated on this CPU: no target")
    base_name = "fp32" if "fp32" in med else next(iter(med))
    print("   median step: " + ", ".join(f"{v} {t:.2f} s ({med[base_name] / t:.2f}x)" for v, t in med.items())
          + f" -- speed-ups against {base_name}")
    for suffix in ("", "/channels_last"):
        if "fp32" + suffix in med and "bf16" + suffix in med:
            r = med["fp32" + suffix] / med["bf16" + suffix]
            print(f"   bf16 vs fp32{suffix.replace('/', ', ')}: {r:.2f}x ({target})")
    if args.steps_only:
        return 0
    print(f"2. edvr-s from the same seed on the same {args.run_steps} batches (4 x 5 frames, 32x32 LR):")
    curves = learning(args)
    block = max(1, args.run_steps // 6)
    print(f"   {'steps':>9s} {'fp32 loss':>10s} {'bf16 loss':>10s}")
    worst = 0.0
    for a in range(0, args.run_steps, block):
        f = statistics.mean(curves["fp32"][a:a + block])
        b = statistics.mean(curves["bf16"][a:a + block])
        worst = max(worst, abs(b - f) / f)
        print(f"   {a + 1:4d}-{min(a + block, args.run_steps):<4d} {f:10.5f} {b:10.5f}")
    print(f"   largest relative difference of the block means: {worst:.3%}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
