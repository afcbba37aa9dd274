"""The ``srkit`` command line.

Each command lives in its own module under :mod:`srkit.commands` and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their command
runs, so a broken optional dependency of one command never breaks the others (or ``--help``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from srkit.errors import SrkitError
from srkit.utils.memory import tune_allocator

# name -> (module, one-line help). Groups map to their own table of sub-commands.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("srkit.commands.demo", "restore a clip made from a shipped photograph with edvr-s; compare with bicubic"),
    "models": ("srkit.commands.models", "list the registered models with parameter counts"),
    "convert": ("srkit.commands.convert", "convert a checkpoint (BasicSR, MMagic, original, official) to srkit safetensors"),
    "upscale": ("srkit.commands.upscale", "restore / upscale videos, frame folders or images"),
    "eval": ("srkit.commands.eval", "score a model on a benchmark layout (PSNR/SSIM as the literature computes them)"),
    "train": ("srkit.commands.train", "train a model from a YAML config (one process or torchrun)"),
    "sweep": ("srkit.commands.sweep", "contact sheet of a non-blind model's outputs over a grid of degradation settings"),
}
GROUPS: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "data": (
        "dataset tools: LMDB packing and verification, motion ranking",
        {
            "pack": ("srkit.commands.data_pack", "stream a dataset into an LMDB database (resumable)"),
            "verify": ("srkit.commands.data_verify", "decode every record of an LMDB database and report bad ones"),
            "motion-rank": ("srkit.commands.data_motion", "rank clips by optical-flow magnitude and write the large-motion subset"),
        },
    ),
}


def _add_command(subparsers, name: str, module: str, help_text: str, argv_has_it: bool) -> None:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    # Accepted after the command name too (``srkit upscale ... --debug``).
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.set_defaults(_module=module)
    # Import the module only for the command being run; its arguments are then added.
    if argv_has_it:
        mod = importlib.import_module(module)
        mod.add_arguments(parser)
        parser.set_defaults(_run=mod.run)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="srkit",
        description="srkit: video and image super-resolution and restoration (EDVR, UDVD, MANA).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"srkit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    positional = [a for a in argv if not a.startswith("-")]
    first = positional[0] if positional else None
    for name, (module, help_text) in COMMANDS.items():
        _add_command(sub, name, module, help_text, first == name)
    for group, (help_text, table) in GROUPS.items():
        gparser = sub.add_parser(group, help=help_text, description=help_text)
        gsub = gparser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        second = positional[1] if len(positional) > 1 and first == group else None
        for name, (module, sub_help) in table.items():
            _add_command(gsub, name, module, sub_help, second == name)
        gparser.set_defaults(_group_parser=gparser)
    return parser


def _version() -> str:
    from srkit import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SRKIT_DEBUG") == "1"
    # Before torch is imported (by the command's module): PyTorch reads THP_MEM_ALLOC_ENABLE once.
    tune_allocator()
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        run = getattr(args, "_run", None)
        if run is None:
            (getattr(args, "_group_parser", None) or parser).print_help(sys.stderr)
            return 2
        return int(run(args) or 0)
    except SrkitError as exc:
        if debug:
            raise
        print(f"srkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if debug:
            raise
        # A command may say how to continue (e.g. a frame-folder upscale: --resume).
        print(f"srkit: interrupted: {exc}" if str(exc) else "srkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`srkit models | head`): not an error of ours; say nothing. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        if debug:
            raise
        print(f"srkit: error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
