"""``srkit sweep``: a contact sheet of a non-blind model's outputs over a grid of degradation settings.

A non-blind model (UDVD) restores an image according to the blur and noise it is *told*. Real photos
come with unknown degradations, so the practical way to use such a model is to look at its outputs
over a grid of assumed blur widths (columns) and noise levels (rows) and pick the best-looking cell
-- then run ``srkit upscale --blur B --noise N`` with those settings on the whole image.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from srkit.errors import ConfigError

# Without --model/--weights: the shipped, srkit-trained image model.
DEFAULT_MODEL = "udvd-s-x4"

EPILOG = """\
grid values (--blur, --noise):
  START:STOP:NUM   NUM evenly spaced values from START to STOP inclusive (as numpy.linspace)
  A,B,C            an explicit list
  V                a single value

crop (--crop), in input pixels:
  X,Y,W,H  or  WxH+X+Y   the region at (X, Y) of size W x H
  WxH                    a centred W x H region

examples:
  srkit sweep photo.png --blur 0.5:3:6 --noise 0,10,25      # udvd-s-x4, the shipped image model
      (writes photo_sweep.png in the current folder; -o FILE to choose)
  srkit sweep photo.png --model udvd-x4 --weights udvd_x4.safetensors --blur 0.5:3:6 --noise 0,10,25
  srkit sweep big.jpg --model udvd-x2 --weights udvd_x2.pth --crop 160x120 --blur 0.2,1,2 --noise 0,15 -o s.png
  then: srkit upscale photo.png --blur 1.5 --noise 10 -o out.png   (same --model/--weights if given)
"""

# A sheet larger than this is almost certainly a mistake (a full photo at x4 per cell); ask for --crop.
MAX_SHEET_PIXELS = 120_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from srkit.infer.options import RestoreOptions
    from srkit.utils.device import PRECISIONS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("input", help="image to restore (PNG, JPEG, TIFF, ...)")
    parser.add_argument("-o", "--output",
                        help="contact sheet image to write (.png recommended; default: INPUT_STEM_sweep.png "
                             "in the current folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--model",
                        help="a model conditioned on degradation maps (udvd-s-x4, udvd-x2, udvd-x3, udvd-x4); "
                             "default: the network stored in --weights, else udvd-s-x4 (shipped weights)")
    parser.add_argument("--weights", metavar="FILE",
                        help="checkpoint; an srkit file rebuilds its own network and config (without weights the "
                             "network is untrained and the sheet is noise)")
    parser.add_argument("--blur", default="0.2:3:6", metavar="GRID",
                        help="blur widths (Gaussian sigma, HR pixels), one per column (default: 0.2:3:6)")
    parser.add_argument("--noise", default="0,15,30", metavar="GRID",
                        help="noise levels (0-255 units), one per row (default: 0,15,30)")
    parser.add_argument("--pca-basis", metavar="BASIS",
                        help="PCA basis of the maps' kernel codes: srkit (default), srmd, or an SRMD/KAIR .mat file")
    parser.add_argument("--crop", metavar="REGION", help="sweep on this region of the input only (big photos)")
    parser.add_argument("--cell-width", type=int, metavar="PX",
                        help="resize every output to this width on the sheet (default: output size)")
    parser.add_argument("--device", default=RestoreOptions.device, help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default=RestoreOptions.precision,
                        help="autocast precision (default: %(default)s)")
    parser.add_argument("--tile", type=int, metavar="PX", help="restore in tiles of PX input pixels (bounds memory)")
    parser.add_argument("--tile-overlap", type=int, default=RestoreOptions.tile_overlap, metavar="PX",
                        help="context pixels shared by neighbouring tiles, blended (default: %(default)s)")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for PyTorch")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


# ---------------------------------------------------------------------- parsing
def parse_grid(text: str, option: str) -> list[float]:
    """``"a:b:n"`` (linspace), ``"a,b,c"`` or ``"a"`` -> list of floats (``ConfigError`` otherwise)."""
    text = str(text).strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, num = float(parts[0]), float(parts[1]), parts[2]
            if not re.fullmatch(r"\s*\d+\s*", num) or int(num) < 1:
                raise ValueError
            values = np.linspace(start, stop, int(num)).tolist()
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected START:STOP:NUM, a comma list or a number, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{option}: expected finite values, got {text!r}")
    return [round(v, 6) for v in values]


def parse_crop(text: str, height: int, width: int) -> tuple[int, int, int, int]:
    """``X,Y,W,H`` / ``WxH+X+Y`` / ``WxH`` (centred) -> ``(x, y, w, h)`` inside a ``height x width`` image."""
    text = text.strip()
    m_list = re.fullmatch(r"(\d+),(\d+),(\d+),(\d+)", text)
    m_geom = re.fullmatch(r"(\d+)x(\d+)(?:\+(\d+)\+(\d+))?", text)
    if m_list:
        x, y, w, h = (int(v) for v in m_list.groups())
    elif m_geom:
        w, h = int(m_geom.group(1)), int(m_geom.group(2))
        if m_geom.group(3) is None:
            x, y = (width - w) // 2, (height - h) // 2
        else:
            x, y = int(m_geom.group(3)), int(m_geom.group(4))
    else:
        raise ConfigError(f"--crop: expected X,Y,W,H or WxH+X+Y or WxH, got {text!r}")
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise ConfigError(f"--crop {text} is outside the {width}x{height} image")
    return x, y, w, h


# ---------------------------------------------------------------------- drawing
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _fit_text(text: str, max_width: int, max_height: int) -> tuple[float, int]:
    """The largest font scale (<= 1) and thickness at which ``text`` fits in the box."""
    scale = 1.0
    while scale > 0.2:
        thick = max(1, int(round(scale * 2)))
        (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
        if tw <= max_width and th + base <= max_height:
            return scale, thick
        scale *= 0.9
    return 0.2, 1


def _label(width: int, height: int, text: str, *, dark: bool = True) -> np.ndarray:
    """A ``height x width`` RGB band with ``text`` centred (shrunk to fit)."""
    band = np.full((height, width, 3), 32 if dark else 235, np.uint8)
    scale, thick = _fit_text(text, width - 6, height - 4)
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
    org = (max(3, (width - tw) // 2), (height + th) // 2)
    colour = (255, 255, 255) if dark else (0, 0, 0)
    cv2.putText(band, text, org, _FONT, scale, colour, thick, cv2.LINE_AA)
    return band


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def contact_sheet(cells: Sequence[Sequence[np.ndarray]], blurs: Sequence[float], noises: Sequence[float], *,
                  title: str = "", label_height: int | None = None, gap: int = 4) -> np.ndarray:
    """Assemble uint8 RGB cells (``rows = noises``, ``cols = blurs``, all the same size) into one sheet.

    Every cell gets a band with its settings above it; a title band (if any) tops the sheet.
    Cell ``(r, c)`` starts at ``y = title_h + r * (label_h + cell_h + gap)`` and
    ``x = c * (cell_w + gap)`` (see :func:`cell_origin`).
    """
    ch, cw = cells[0][0].shape[:2]
    lh = label_height or max(14, min(32, cw // 10))
    th = lh if title else 0
    rows, cols = len(noises), len(blurs)
    sheet_h = th + rows * (lh + ch) + (rows - 1) * gap
    sheet_w = cols * cw + (cols - 1) * gap
    sheet = np.full((sheet_h, sheet_w, 3), 255, np.uint8)
    if title:
        sheet[:th] = _label(sheet_w, th, title, dark=False)
    for r, noise in enumerate(noises):
        for c, blur in enumerate(blurs):
            y, x = cell_origin(r, c, (ch, cw), lh, th, gap)
            sheet[y - lh : y, x : x + cw] = _label(cw, lh, f"blur {_fmt(blur)}  noise {_fmt(noise)}")
            sheet[y : y + ch, x : x + cw] = cells[r][c]
    return sheet


def cell_origin(row: int, col: int, cell_size: tuple[int, int], label_height: int, title_height: int,
                gap: int = 4) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the image of cell ``(row, col)`` on a sheet made by :func:`contact_sheet`."""
    ch, cw = cell_size
    return title_height + row * (label_height + ch + gap) + label_height, col * (cw + gap)


# ---------------------------------------------------------------------- command
def run(args: argparse.Namespace) -> int:
    from srkit.infer.engine import Restorer
    from srkit.infer.options import RestoreOptions
    from srkit.io.atomic import check_output_path
    from srkit.io.images import from_float, read_rgb, write_image
    from srkit.data.conditions import udvd_condition
    from srkit.utils.device import torch_threads

    blurs = parse_grid(args.blur, "--blur")
    noises = parse_grid(args.noise, "--noise")
    if any(b <= 0 for b in blurs):
        raise ConfigError(f"--blur: widths must be positive, got {args.blur}")
    from srkit.data.degrade import check_blur_width

    for b in blurs:
        check_blur_width(b, "--blur")
    if args.pca_basis is not None:
        from srkit.data.degrade import load_pca_basis

        load_pca_basis(args.pca_basis)  # a bad name or file: one line before the model is built
    if any(n < 0 or n > 255 for n in noises):
        raise ConfigError(f"--noise: levels must be in 0..255, got {args.noise}")
    if args.cell_width is not None and args.cell_width < 8:
        raise ConfigError(f"--cell-width must be at least 8 pixels, got {args.cell_width}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be positive, got {args.threads}")
    # Default beside the working directory, not beside the input (input folders may be read-only).
    output = args.output if args.output else f"{Path(args.input).stem}_sweep.png"
    out_path = check_output_path(output, overwrite=args.overwrite)
    if Path(args.input).resolve() == out_path.resolve():
        raise ConfigError("the output would overwrite the input", out_path)
    if out_path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"):
        raise ConfigError("the contact sheet must be an image file (.png, .jpg, .tif, ...)", out_path)

    image = read_rgb(args.input)
    height, width = image.shape[:2]
    region = ""
    if args.crop:
        x, y, w, h = parse_crop(args.crop, height, width)
        image = np.ascontiguousarray(image[y : y + h, x : x + w])
        region = f" [{w}x{h}+{x}+{y}]"
        height, width = h, w

    restore = RestoreOptions(device=args.device, precision=args.precision, tile=args.tile,
                             tile_overlap=args.tile_overlap).validate()
    with torch_threads(args.threads):
        # The model is made ready once (device, precision warning) and restores every cell.
        restorer = Restorer(args.model or (None if args.weights else DEFAULT_MODEL), restore, weights=args.weights)
        model, spec = restorer.model, restorer.spec
        name = model.preset or args.model or type(model).__name__
        if spec.condition != "degradation":
            raise ConfigError(f"model {name!r} is not conditioned on degradation maps; "
                              f"sweep needs a non-blind model such as udvd-x4")
        out_h, out_w = height * spec.scale, width * spec.scale
        cell_w = args.cell_width or out_w
        cell_h = max(1, round(out_h * cell_w / out_w))
        if len(blurs) * len(noises) * cell_w * cell_h > MAX_SHEET_PIXELS:
            megapixels = len(blurs) * len(noises) * cell_w * cell_h / 1e6
            raise ConfigError(f"the sheet would have {megapixels:.0f} megapixels; "
                              f"sweep a region (--crop WxH) or shrink the cells (--cell-width)")
        from srkit.models import has_pretrained

        if args.weights is None and not has_pretrained(model.preset or ""):
            print("srkit sweep: warning: no --weights, the network is untrained (random outputs)", file=sys.stderr)

        from tqdm import tqdm

        cells: list[list[np.ndarray]] = []
        with tqdm(total=len(blurs) * len(noises), desc="sweep", unit="cell", disable=args.quiet,
                  file=sys.stderr) as bar:
            for noise in noises:
                row = []
                for blur in blurs:
                    maps = udvd_condition(height, width, blur=blur, noise=noise, pca_basis=args.pca_basis)
                    out = next(restorer.stream([image], condition=maps))
                    cell = from_float(out, np.uint8)
                    if (cell_h, cell_w) != cell.shape[:2]:
                        interp = cv2.INTER_AREA if cell_w < out_w else cv2.INTER_CUBIC
                        cell = cv2.resize(cell, (cell_w, cell_h), interpolation=interp)
                    row.append(cell)
                    bar.update()
                cells.append(row)

    title = f"{name} x{spec.scale} on {Path(args.input).name}{region}  (rows: noise, cols: blur)"
    sheet = contact_sheet(cells, blurs, noises, title=title)
    write_image(out_path, sheet)
    if not args.quiet:
        print(f"wrote {out_path} ({len(noises)} x {len(blurs)} cells of {cell_w}x{cell_h})", file=sys.stderr)
    return 0
