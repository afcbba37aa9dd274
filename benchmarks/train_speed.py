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


def speed(args) -> tuple[float, float]:
    from srkit.models import create_model

    torch.manual_seed(0)
    models = {p: create_model(args.model).train() for p in ("fp32", "bf16")}
    models["bf16"].load_state_dict(models["fp32"].state_dict())
    opts = {p: torch.optim.Adam(m.parameters(), 4e-4) for p, m in models.items()}
    s = args.lr_size
    lq = torch.rand(args.batch, 5, 3, s, s)
    gt = torch.rand(args.batch, 3, 4 * s, 4 * s)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(args.steps + 1):  # the first step of each is a warm-up
        for p in ("fp32", "bf16"):
            t, _ = step(models[p], opts[p], lq, gt, p)
            if i:
                times[p].append(t)
        if i:
            print(f"  step {i}: fp32 {times['fp32'][-1]:.2f}s, bf16 {times['bf16'][-1]:.2f}s", flush=True)
    return statistics.median(times["fp32"]), statistics.median(times["bf16"])


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
    from srkit.models import create_model

    data = batches(args.run_steps, 4, 32, seed=0)
    curves = {}
    for p in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = create_model("edvr-s").train()
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
    args = ap.parse_args()
    from srkit.utils.device import cpu_has_native_bf16, cpu_summary

    print(f"CPU: {cpu_summary()}")
    print(f"1. {args.model} training step, batch {args.batch} x 5 frames of {args.lr_size}x{args.lr_size} LR:")
    t32, t16 = speed(args)
    amx = bool(getattr(getattr(torch, "cpu", None), "_is_amx_tile_supported", lambda: False)())
    target = "target >= 2x with AMX" if amx else ("no AMX: no target" if cpu_has_native_bf16() else
                                                   "bf16 emulated on this CPU: no target")
    print(f"   median step: fp32 {t32:.2f} s, bf16 {t16:.2f} s -> bf16 {t32 / t16:.2f}x fp32 ({target})")
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
