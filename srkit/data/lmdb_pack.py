"""Packing datasets into LMDB frame stores (the format and the reading side: :mod:`srkit.data.lmdb_store`).

:func:`pack` streams frames from any source (folder layouts, video files, another pack; through
:func:`srkit.data.sources.open_sources`) without holding the dataset in memory: frames are read and
PNG-encoded by a small thread pool (OpenCV releases the GIL) and committed in batches
(:func:`pack_records`). The environment starts at ``map_size`` and is grown (doubled) whenever LMDB
reports ``MapFullError``, so no size has to be guessed. Work happens in ``<out>.partial``; a crash or
Ctrl-C leaves every committed batch there and ``resume=True`` continues, skipping the records already
present. When every record is in, ``meta_info.txt`` is written atomically and the folder is renamed to
``<out>``: a folder under the final name is always complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from srkit.data.lmdb_store import (META_NAME, PACK_INFO_NAME, PARTIAL_SUFFIX, MetaRecord, RecordSource,
                                   format_meta_line, import_lmdb, png_shape)
from srkit.data.sources import VideoSource, open_sources
from srkit.errors import InputError, OutputError
from srkit.io.atomic import atomic_write_text, check_output_path
from srkit.io.images import encode_image

__all__ = ["PackReport", "pack", "pack_records"]


@dataclass
class PackReport:
    path: Path
    total: int = 0
    written: int = 0
    skipped: int = 0
    bytes_written: int = 0
    map_size: int = 0
    seconds: float = 0.0


def _remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# Below this much free space a failed write is reported as a full disk: LMDB writes through a memory
# map, so a full disk often surfaces as EIO ("mdb_txn_commit: Input/output error"), not ENOSPC.
_LOW_DISK_BYTES = 64 << 20


@contextlib.contextmanager
def _writing(where: Path) -> Iterator[None]:
    """Turn a failed write into the pack (LMDB or file) into one line saying where and why."""
    lmdb = import_lmdb()
    try:
        yield
    except (lmdb.Error, OSError) as exc:
        if isinstance(exc, lmdb.MapFullError):  # pragma: no cover - handled by _write_batch
            raise
        try:
            free = shutil.disk_usage(where if where.exists() else where.parent).free
        except OSError:
            free = None
        full = getattr(exc, "errno", None) == errno.ENOSPC or (free is not None and free < _LOW_DISK_BYTES)
        cause = f"the disk is full ({free / 2**20:.0f} MiB free)" if full and free is not None else (
            "the disk is full" if full else "the write failed")
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OutputError(f"cannot write the pack: {cause} ({detail}); the records committed so far are kept "
                          "(free space, then run the same command with --resume)", where) from None


def _write_batch(env, batch: list[tuple[bytes, bytes]], report: PackReport) -> None:
    """Commit ``batch`` in one transaction, doubling the map size until it fits."""
    lmdb = import_lmdb()
    while True:
        try:
            with env.begin(write=True) as txn:
                for k, v in batch:
                    txn.put(k, v)
            return
        except lmdb.MapFullError:
            # The transaction was aborted by the context manager: grow and replay the whole batch.
            new_size = env.info()["map_size"] * 2
            env.set_mapsize(new_size)
            report.map_size = new_size


def _check_pack_output(out_path: str | os.PathLike, *, resume: bool, overwrite: bool) -> tuple[Path, Path]:
    """Fail early (one line) when ``out_path`` cannot be packed into; returns (out, out.partial)."""
    out = check_output_path(out_path, overwrite=overwrite)
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    if partial.exists() and not resume and not overwrite:
        raise OutputError(f"an interrupted pack exists at {partial.name} (use --resume to continue it, "
                          "or --overwrite to start again)", out)
    return out, partial


def pack_records(records: Iterable[RecordSource], out_path: str | os.PathLike, *, compress_level: int = 1,
                 map_size: int = 1 << 30, resume: bool = False, overwrite: bool = False, batch_records: int = 16,
                 batch_bytes: int = 64 << 20, workers: int | None = None, info: dict | None = None,
                 progress: Callable[[int], None] | None = None) -> PackReport:
    """Pack ``(key, read_fn)`` records into the LMDB folder ``out_path`` (see the module docstring).

    ``info`` describes the source (stored in ``srkit_pack.json``); resuming with a different ``info``
    is refused, since mixing two sources in one pack would be silently wrong. ``progress(n)`` is
    called with the number of records handled so far. Records are committed every ``batch_records``
    frames (fewer when frames are large: a batch holds about ``batch_bytes``), which bounds both
    memory and the work an interruption can lose.
    """
    lmdb = import_lmdb()
    out, partial = _check_pack_output(out_path, resume=resume, overwrite=overwrite)
    if not 0 <= compress_level <= 9:
        raise OutputError(f"PNG compression level must be 0-9, got {compress_level}", out)
    info = dict(info or {})
    info.update(compress_level=compress_level, format="png")
    info_path = partial / PACK_INFO_NAME
    if partial.exists():
        if overwrite and not resume:
            _remove_tree(partial)
        else:
            try:
                old = json.loads(info_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise OutputError(f"cannot resume: {PACK_INFO_NAME} missing or unreadable in {partial.name} "
                                  "(use --overwrite to start again)", out) from None
            old_src = {k: v for k, v in old.items() if k not in ("complete", "records")}
            if old_src != info:
                diff = sorted(k for k in set(old_src) | set(info) if old_src.get(k) != info.get(k))
                raise OutputError(f"cannot resume: the interrupted pack was made with different settings "
                                  f"({', '.join(diff)}); use --overwrite to start again", out)
    with _writing(partial):
        partial.mkdir(exist_ok=True)
        atomic_write_text(info_path, json.dumps({**info, "complete": False}, indent=1, sort_keys=True))

    report = PackReport(path=out)
    t0 = time.perf_counter()
    with _writing(partial):
        env = lmdb.open(str(partial), map_size=map_size, subdir=True, meminit=False, max_dbs=0)
    try:
        current = env.info()["map_size"]
        if current < map_size:
            env.set_mapsize(map_size)
        report.map_size = env.info()["map_size"]
        with env.begin(write=False) as txn:
            existing = {bytes(k) for k in txn.cursor().iternext(keys=True, values=False)}
        keys_in_order: list[str] = []
        seen: set[str] = set()
        workers = workers or min(4, os.cpu_count() or 1)

        def encode(item: RecordSource) -> tuple[bytes, bytes, int]:
            key, read = item
            frame = read()
            return key.encode("utf-8"), encode_image(frame, ".png", png_compression=compress_level), frame.nbytes

        def todo() -> Iterator[RecordSource]:
            for key, read in records:
                if key in seen:
                    raise InputError(f"two frames map to the same LMDB key {key!r} (frame names must be unique "
                                     "within a clip, ignoring the extension)")
                seen.add(key)
                keys_in_order.append(key)
                if key.encode("utf-8") in existing:
                    report.skipped += 1
                    continue
                yield key, read

        with ThreadPoolExecutor(max_workers=workers) as pool:
            batch: list[RecordSource] = []
            limit = max(1, batch_records)

            def flush() -> None:
                nonlocal limit
                encoded = []
                for rec in pool.map(encode, batch):
                    encoded.append(rec)
                    if progress is not None:  # per frame: a batch of large frames takes a while
                        progress(report.written + report.skipped + len(encoded))
                with _writing(partial):
                    _write_batch(env, [(k, v) for k, v, _ in encoded], report)
                report.written += len(encoded)
                report.bytes_written += sum(len(v) for _, v, _ in encoded)
                # A batch holds up to `limit` decoded frames (video sources decode ahead) and their PNGs:
                # shrink it for large frames so memory stays near batch_bytes whatever the resolution.
                largest = max(max(len(v), raw) for _, v, raw in encoded)
                limit = max(1, min(batch_records, batch_bytes // max(1, largest)))
                batch.clear()

            for item in todo():
                batch.append(item)
                if len(batch) >= limit:
                    flush()
            if batch:
                flush()
        report.total = len(keys_in_order)
        if report.total == 0:
            raise InputError("nothing to pack: the source has no frames")

        # Meta from the stored PNG headers (no decoding, no per-record state kept while packing).
        lines = []
        with env.begin(write=False, buffers=True) as txn:
            for key in keys_in_order:
                data = txn.get(key.encode("utf-8"))
                shape = png_shape(bytes(data[:32])) if data is not None else None
                if shape is None:
                    raise OutputError(f"record {key} unreadable right after packing (disk problem?)", partial)
                lines.append(format_meta_line(MetaRecord(key, shape, compress_level)))
            extra = sum(1 for k in txn.cursor().iternext(keys=True, values=False)) - len(keys_in_order)
        if extra:
            raise OutputError(f"{extra} records in the interrupted pack are not part of this source "
                              "(use --overwrite to start again)", out)
        with _writing(partial):
            env.sync(True)
        report.map_size = env.info()["map_size"]
    finally:
        env.close()
    with _writing(partial):
        atomic_write_text(partial / META_NAME, "\n".join(lines) + "\n")
        atomic_write_text(info_path, json.dumps({**info, "complete": True, "records": report.total}, indent=1,
                                                sort_keys=True))
    if out.exists():  # overwrite: move the old pack aside first so the final name is never half-made
        trash = out.with_name(out.name + ".old")
        _remove_tree(trash)
        os.replace(out, trash)
        os.replace(partial, out)
        _remove_tree(trash)
    else:
        os.replace(partial, out)
    report.seconds = time.perf_counter() - t0
    return report


def pack(src, out_path: str | os.PathLike, *, layout: str = "auto", which: str = "gt", degradation: str = "BI",
         scale: int = 4, split: str = "all", subset=None, compress_level: int = 1, map_size: int = 1 << 30,
         resume: bool = False, overwrite: bool = False, workers: int | None = None, batch_records: int = 16,
         progress: Callable[[int], None] | None = None,
         on_total: Callable[[int | None], None] | None = None) -> PackReport:
    """Pack a dataset into the LMDB folder ``out_path``.

    Args:
        src: dataset folder in any :mod:`srkit.data.layouts` layout, a video file, a folder of videos,
            another LMDB pack (repacking, e.g. at a different compression level), or a list of
            :class:`~srkit.data.layouts.Clip`.
        layout, degradation, scale, split, subset: passed to :func:`~srkit.data.layouts.discover_clips`.
        which: ``"gt"`` packs the ground-truth frames, ``"lr"`` the low-resolution ones found on disk
            (one LMDB per kind, as BasicSR does: e.g. ``train_sharp.lmdb`` and ``train_sharp_bicubic.lmdb``).
        compress_level: PNG compression 0-9 (BasicSR's default 1: larger files, much faster reading).
        map_size: initial LMDB map size in bytes; it grows by itself when full.
        resume: continue an interrupted pack of the same source (records present are skipped).
        overwrite: replace an existing pack (or discard an interrupted one).
        progress: called with the number of frames handled so far; ``on_total`` once with the
            number of frames to pack (None when unknown before decoding, i.e. videos).
    """
    _check_pack_output(out_path, resume=resume, overwrite=overwrite)  # before any slow source scan
    sources = open_sources(src, layout=layout, which=which, degradation=degradation, scale=scale, split=split,
                           subset=subset)
    if on_total is not None:
        # Known without decoding except for videos (their count may need a full decode: leave it open).
        on_total(None if any(isinstance(s, VideoSource) for s in sources) else sum(len(s) for s in sources))
    if isinstance(src, list):
        described = "clips:" + ",".join(c.name for c in src)
    else:
        described = str(Path(src).resolve())
        if layout == "auto" and not (Path(src) / "data.mdb").is_file():
            from srkit.data.layouts import detect_layout

            layout = detect_layout(src)  # recorded resolved: datasets read it (Vimeo: middle-frame centres)
    info = {"source": described, "layout": layout, "which": which, "split": split,
            "subset": None if subset is None else (list(subset) if isinstance(subset, list) else str(subset)),
            "degradation": degradation if which == "lr" else None, "scale": scale if which == "lr" else None}

    def records() -> Iterator[RecordSource]:
        for s in sources:
            yield from s.records()

    return pack_records(records(), out_path, compress_level=compress_level, map_size=map_size, resume=resume,
                        overwrite=overwrite, workers=workers, info=info, batch_records=batch_records,
                        progress=progress)
