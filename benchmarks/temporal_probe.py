"""How much does a video model take from its neighbour frames? An exact-motion probe.

``srkit eval --repeat-centre`` measures a model's temporal gain on real footage: its score minus its score
when every window is the centre frame repeated. That number mixes three things: how much the content
offers (sub-pixel detail that aliasing hides in one frame but not in its moved neighbours), how well the
model aligns real motion, and how well it fuses aligned frames. This probe removes the alignment question:
each window is ``T`` views of ONE held-out HR frame under a global translation of ``(sx, sy)`` GT pixels
per frame (integer GT shifts, so the LR views sample the scene at other sub-pixel phases), each degraded
with BI x4 (MATLAB bicubic, uint8 as the evaluation does). The model restores the centre view from the
window and from the centre repeated; the PSNR-Y difference is what it can take from neighbours when the
motion is exact and uniform -- for a model that fuses well, the upper end of what real footage gives.

    python benchmarks/temporal_probe.py                        # edvr-s (shipped weights), snowboard + bus
    python benchmarks/temporal_probe.py --model mana-s
    python benchmarks/temporal_probe.py --model edvr-s --weights runs/x/model_final.safetensors

Default frames and crop (speeds in GT px/frame; window | centre repeated | gain, PSNR-Y dB). The shipped
edvr-s (session 15: 14,000 iterations with the train split's DAVIS and Vimeo clips) and mana-s (session 16),
2-core Intel Xeon (AVX512-BF16 + AMX):

| model | frame | 0,0 | 2,1 | 5,3 | 10,7 |
|---|---|---|---|---|---|
| edvr-s (shipped) | Set8 snowboard 00031 | +0.000 | +0.214 | 25.862 / 25.729 / **+0.133** | +0.129 |
| edvr-s (shipped) | DAVIS bus 00020 | +0.000 | +0.667 | 27.930 / 27.384 / **+0.546** | +0.332 |
| mana-s (shipped, session 16: sigma starting at 1) | Set8 snowboard 00031 | +0.000 | +0.146 | 25.884 / 25.792 / **+0.092** | +0.073 |
| mana-s (shipped, session 16: sigma starting at 1) | DAVIS bus 00020 | +0.000 | +0.065 | 28.705 / 28.605 / **+0.100** | +0.062 |

Earlier weights, 2-core AMD EPYC (Zen 4):

| model | frame | 0,0 | 2,1 | 5,3 | 10,7 |
|---|---|---|---|---|---|
| edvr-s (first shipped weights, 5000 iterations) | Set8 snowboard 00031 | +0.000 | +0.043 | 25.807 / 25.734 / **+0.073** | +0.076 |
| edvr-s (first shipped weights, 5000 iterations) | DAVIS bus 00020 | +0.000 | +0.301 | 27.368 / 26.731 / **+0.637** | +0.680 |
| mana-s (first shipped weights, sigma starting at 4) | snowboard / bus | | | +0.011 / +0.020 | |
| edvr-s, offset-fidelity run (not shipped) | snowboard / bus | | | +0.006 / -0.006 | |

The first edvr-s weights took 0.6 dB from exact neighbours on the bus crop but under 0.1 dB on this snowboard crop (+0.071,
+0.146, +0.042, +0.075 on four others: ``--frames .../snowboard/00011.png .../snowboard/00046.png --speeds 5,3
--at 20,40``, then ``--at 260,520``): on real snowboard (0.058 dB over the whole clip) it is close to what this model's fusion
gets even from perfect motion. Its PCD offsets on such pans stay near 0 (-0.1 px for a 3 LR px/frame pan):
it fuses the unaligned neighbours in its later layers. The run trained with EDVR's offset-fidelity loss
(``runs/edvr-s-synthetic-motion-tried``) aligns -- its offsets follow the pan -- yet takes nothing from the
aligned neighbours; the first mana-s weights, whose cross-frame attention is nearly flat, take 0.01-0.02 dB,
and the mana-s run whose attention was trained onto the flow's correspondences (``attention_fidelity``) +0.002 /
+0.018 dB. The current edvr-s weights take about twice the first weights' share from the snowboard crop's
exact neighbours (+0.133 / +0.214 dB) and 0.166 dB from the real clip's (``srkit eval --repeat-centre``).
The current mana-s weights (the Gaussian started at sigma 1 instead of 4) take +0.07-0.15 dB from exact
neighbours on both crops, against 0.01-0.02 for the first; on the real clips 0.078 (snowboard) and 0.113 dB (bus).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "video_hr"
DEFAULT_FRAMES = [f"{DATA / 'set8' / 'snowboard' / '00031.png'}", f"{DATA / 'davis' / 'bus' / '00020.jpg'}"]


def pan_window(frame: np.ndarray, num_frames: int, speed: tuple[int, int], top: int, left: int, height: int,
               width: int) -> list[np.ndarray]:
    """``num_frames`` crops of ``frame``; view ``t`` is the crop moved by ``(t - c) * speed`` (dx, dy) GT px."""
    from srkit.data.transforms import translated_crops

    c = num_frames // 2
    disp = [((t - c) * speed[0], (t - c) * speed[1]) for t in range(num_frames)]
    return translated_crops(frame, disp, top=top, left=left, height=height, width=width)


def probe(model: torch.nn.Module, frame: np.ndarray, speeds: list[tuple[int, int]], *, top: int, left: int,
          height: int, width: int, border: int = 8) -> list[tuple[float, float]]:
    """Per speed, PSNR-Y (dB) of the centre view restored from the pan window and from the centre repeated.

    The centre view does not depend on the speed, so its repeated-centre restoration is computed once."""
    from srkit.data.degrade import bicubic_downsample
    from srkit.infer.engine import tensor_to_frame
    from srkit.io.images import from_float, to_float
    from srkit.metrics.quality import psnr
    from srkit.models import as_sr_output

    spec, c = model.spec, model.spec.center_index

    def score(lq: list[np.ndarray], target: np.ndarray) -> float:
        x = torch.from_numpy(np.stack([to_float(f) for f in lq])).permute(0, 3, 1, 2)[None]
        with torch.no_grad():
            sr = from_float(tensor_to_frame(as_sr_output(model(x)).image))  # rounded as srkit eval rounds
        return psnr(sr, target, crop_border=border, y_channel=True)

    scores, repeated = [], None
    for speed in speeds:
        views = pan_window(frame, spec.num_frames, speed, top, left, height, width)
        lq = [bicubic_downsample(v, spec.scale) for v in views]  # uint8, as srkit eval's BI
        if repeated is None:
            repeated = score([lq[c]] * spec.num_frames, views[c])
        scores.append((score(lq, views[c]), repeated))
    return scores


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="edvr-s", help="a registered video model (default edvr-s)")
    ap.add_argument("--weights", help="a checkpoint (default: the preset's shipped weights)")
    ap.add_argument("--frames", nargs="+", default=DEFAULT_FRAMES, help="HR frames to pan over (held-out footage)")
    ap.add_argument("--speeds", nargs="+", default=["0,0", "2,1", "5,3", "10,7"], help="dx,dy GT px per frame")
    ap.add_argument("--crop", default="256x384", help="HxW of the GT crop (multiples of the scale)")
    ap.add_argument("--at", default="60,120", help="top,left of the centre crop")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import srkit
    from srkit.errors import SrkitError
    from srkit.io.images import read_rgb

    torch.set_num_threads(args.threads)
    if args.weights:
        model = srkit.create_model(args.model, weights=args.weights)
    else:
        model = srkit.create_model(args.model, pretrained=True)
    model.eval()
    if model.spec.input_kind != "video":
        print(f"{args.model} is not a video model", file=sys.stderr)
        return 2
    height, width = (int(v) for v in args.crop.lower().split("x"))
    top, left = (int(v) for v in args.at.split(","))
    speeds = [tuple(int(v) for v in s.split(",")) for s in args.speeds]
    print(f"{args.model} ({args.weights or 'shipped weights'}), {model.spec.num_frames} frames, crop {height}x{width} "
          f"at ({top}, {left}); PSNR-Y of the centre view: window | centre repeated | gain")
    for path in args.frames:
        if not Path(path).is_file():
            print(f"{path}: no such frame (is ../shared/data beside the project?)", file=sys.stderr)
            return 2
        frame = read_rgb(path)
        try:
            scores = probe(model, frame, speeds, top=top, left=left, height=height, width=width)
        except SrkitError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 2
        for speed, (full, rep) in zip(speeds, scores):
            print(f"{Path(path).parent.name}/{Path(path).name}  speed {speed[0]},{speed[1]} GT px/frame: "
                  f"{full:.3f} | {rep:.3f} | {full - rep:+.3f} dB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
