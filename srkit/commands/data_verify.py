"""``srkit data verify``: decode every record of an LMDB pack and report the bad ones."""

from __future__ import annotations

import argparse

EPILOG = """\
Checks every key listed in meta_info.txt: the record exists, decodes, and has the listed shape;
keys in the database that meta_info.txt does not list are reported as extra. Prints one line per
bad key ("<key>: <reason>") and exits with status 1 when there is any (0 when all are good).
Works on srkit and BasicSR packs.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("path", metavar="PACK.lmdb", help="LMDB folder to check")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import sys

    from srkit.data.lmdb_store import read_meta, verify

    bar = None
    progress = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(read_meta(args.path)), unit="record", desc="verifying", file=sys.stderr,
                   dynamic_ncols=True)

        def progress(done: int) -> None:
            bar.update(done - bar.n)

    try:
        report = verify(args.path, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    for key, reason in report.bad:
        print(f"{key}: {reason}")
    if report.ok:
        print(f"{report.path}: {report.records} records, all decode with the listed shapes")
        return 0
    print(f"{report.path}: {report.records} records, {len(report.bad)} bad", file=sys.stderr)
    return 1
