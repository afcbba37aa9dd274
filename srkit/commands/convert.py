"""``srkit convert``: any checkpoint srkit can load -> srkit safetensors (preset + config inside)."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from srkit.errors import OutputError

EXAMPLES = textwrap.dedent(
    """\
    examples:
      # official BasicSR release (params_ema preferred over params); the preset is inferred
      srkit convert EDVR_M_x4_SR_REDS_official-36f1f566.pth edvr_m_reds.safetensors
      # MMagic / MMEditing checkpoint ({"state_dict": {"generator.*": ...}})
      srkit convert edvr_m_wotsa_reds_mmagic.pth edvr_m_wotsa.safetensors
      # the 2019 xinntao/EDVR release, naming the preset explicitly
      srkit convert EDVR_REDS_SR_M.pth edvr_m.safetensors --preset edvr-m

    Accepted inputs: srkit/any safetensors, BasicSR {"params"/"params_ema"}, MMagic {"state_dict"},
    the 2019 EDVR names, srkit training checkpoints (iter_*.pt / best.pt: the model config stored
    in them is rebuilt exactly), bare state dicts (a "module." prefix is removed). Pickles are read with
    torch.load(weights_only=True): a file that would need to run code is refused, never executed.
    The output is written atomically (temporary name, then rename). Load it back with
    srkit.load_model(path) or --weights PATH in any command.
    """
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    parser.add_argument("input", metavar="IN", help="checkpoint to convert (.pth, .pt, .ckpt, .safetensors)")
    parser.add_argument("output", metavar="OUT", help="srkit checkpoint to write (.safetensors)")
    parser.add_argument("--preset", metavar="NAME",
                        help="network to load into (default: inferred from the checkpoint's keys and shapes)")
    parser.add_argument("--param-key", metavar="KEY",
                        help="entry of a BasicSR-style dict to use (default: params_ema if present, else params)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from srkit.io.atomic import check_output_path
    from srkit.models.checkpoint import load_model_with_info, save_model

    out = Path(args.output)
    if out.suffix.lower() != ".safetensors":
        raise OutputError("output must be a .safetensors file", out)
    inp = Path(args.input)
    if out.exists() and inp.exists() and out.samefile(inp):  # also a symlink or hard link to the input
        raise OutputError("output is the input; refusing to write over it (inputs are never written)", out)
    check_output_path(out, overwrite=args.overwrite)
    model, ckpt = load_model_with_info(args.input, preset=args.preset, param_key=args.param_key)
    source = ckpt.source + (f" {ckpt.note}" if ckpt.note else "")
    save_model(model, out, extra_metadata={"converted_from": Path(args.input).name, "source_format": source})
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.input} ({source}) -> {out}: preset {model.preset}, {n / 1e6:.2f}M parameters")
    return 0
