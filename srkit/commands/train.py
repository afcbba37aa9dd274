"""``srkit train CONFIG [--set key=value ...] [--resume auto|PATH] [--print-config]``."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
CONFIG is a YAML file or the name of a shipped config (see --list).

examples:
  srkit train --list
  srkit train tiny-edvr-set8 --set train.total_iters=200
  srkit train my.yaml --set train.optim.lr=2e-4 --set data.batch_size=8 --print-config
  srkit train my.yaml --resume auto                  # continue after a crash, Ctrl-C or kill
  torchrun --nproc_per_node 2 -m srkit train my.yaml  # same config, DDP (gloo on CPU, NCCL on GPU)

--set KEY=VALUE parses VALUE as YAML: numbers, true/false, null, [1, 2], {a: 1}; list items are
addressed by index (train.stages.1.start_iter=5000). Ctrl-C or SIGTERM saves a checkpoint and exits;
a second Ctrl-C stops at once. Outputs go to OUTPUT_DIR/NAME (config keys output_dir and name):
checkpoints/ (last K + best, each with a checksum manifest), model_best.safetensors and
model_final.safetensors (EMA weights when kept; usable with srkit upscale --weights), scalars.csv,
train.log, tb/ (TensorBoard).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("config", nargs="?", metavar="CONFIG", help="YAML config file or shipped config name")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable), e.g. --set train.optim.lr=1e-4")
    parser.add_argument("--resume", metavar="auto|PATH",
                        help="continue a run: 'auto' = newest valid checkpoint of the run folder (fresh start "
                             "if none), or a checkpoint file")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (after --set) as YAML and exit without training; "
                             "without CONFIG, print every key with its default")
    parser.add_argument("--list", action="store_true", help="list the shipped configs and exit")


def run(args: argparse.Namespace) -> int:
    from srkit.errors import ConfigError
    from srkit.train.config import dump_yaml, list_shipped_configs, load_config

    if args.list:
        for name in list_shipped_configs():
            print(name)
        return 0
    if not args.config:
        if args.print_config:  # the full schema with its defaults: a starting point for a new config
            from srkit.train.config import config_from_data

            sys.stdout.write(dump_yaml(config_from_data({}, args.overrides)))
            return 0
        raise ConfigError("no CONFIG given (a YAML file or a shipped config name; see srkit train --list)")
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        sys.stdout.write(dump_yaml(cfg))
        return 0
    from srkit.train.trainer import train

    summary = train(cfg, resume=args.resume)
    if summary.get("stopped_by"):
        return 130 if summary["stopped_by"] == "SIGINT" else 143
    return 0
