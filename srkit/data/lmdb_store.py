"""LMDB frame stores: pack a dataset once, read it fast from many DataLoader workers.

Format (the same as BasicSR's, so packs are interchangeable in both directions)
    An LMDB environment folder (``name.lmdb/data.mdb``) whose records are PNG files (``cv2``-encoded,
    RGB order in the PNG as in any PNG file) keyed ``<clip>/<frame stem>``: ``000/00000000`` (REDS),
    ``00001/0001/im4`` (Vimeo-90K), ``calendar/frame_0001`` ...; video frames are keyed
    ``<clip>/<index:08d>``. ``meta_info.txt`` inside the folder lists one record per line as
    ``<key>.png (<H>,<W>,<C>) <compression level>``.

Packing (:func:`pack`)
    Streams frames from any source (folder layouts, video files) without holding the dataset in
    memory: frames are read and PNG-encoded by a small thread pool (OpenCV releases the GIL) and
    committed in batches. The environment starts at ``map_size`` and is grown (doubled) whenever LMDB
    reports ``MapFullError``, so no size has to be guessed. Work happens in ``<out>.partial``; a crash or
    Ctrl-C leaves every committed batch there and ``resume=True`` continues, skipping the records
    already present. When every record is in, ``meta_info.txt`` is written atomically and the folder
    is renamed to ``<out>``: a folder under the final name is always complete.

Reading (:class:`LmdbReader`)
    Opens the environment lazily in the process that first reads (``readonly, lock=False,
    readahead=False``) and reopens it after ``fork``: an LMDB handle must not cross processes, and
    DataLoader workers are forked copies of the dataset.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from srkit.errors import InputError, OutputError
from srkit.io.atomic import atomic_write_text, check_output_path
from srkit.io.images import encode_image, natural_key

META_NAME = "meta_info.txt"
PACK_INFO_NAME = "srkit_pack.json"
PARTIAL_SUFFIX = ".partial"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # PNG colour type -> channels as decoded
_PNG_TRAILER = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the mandatory, always identical last chunk


def _lmdb():
    try:
        import lmdb
    except ImportError as exc:  # pragma: no cover - lmdb is a hard dependency, but say it in one line
        raise InputError(f"the 'lmdb' package is required for LMDB datasets ({exc})") from None
    return lmdb


# ------------------------------------------------------------------------------------------ records

def png_shape(data: bytes) -> tuple[int, int, int] | None:
    """(H, W, C) from a PNG header without decoding; None when ``data`` is not a PNG."""
    if len(data) < 26 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return height, width, _PNG_CHANNELS.get(data[25], 3)


def decode_record(data: bytes | memoryview) -> np.ndarray | None:
    """Decode a stored image to RGB (HxWx3, or HxWx1 for grayscale) keeping its bit depth; None if corrupt."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        return None
    if bytes(data[:8]) == _PNG_SIGNATURE and bytes(data[-12:]) != _PNG_TRAILER:
        # Truncated PNG (interrupted write, damaged disk): known bad without asking libpng, which would
        # print its own "PNG input buffer is incomplete" line to stderr for every such record.
        return None
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    if img.ndim == 2:
        return img[:, :, None]
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class MetaRecord:
    key: str
    shape: tuple[int, int, int]
    compress_level: int


def format_meta_line(rec: MetaRecord) -> str:
    h, w, c = rec.shape
    return f"{rec.key}.png ({h},{w},{c}) {rec.compress_level}"


def read_meta(path: str | os.PathLike) -> list[MetaRecord]:
    """Parse ``meta_info.txt`` of an LMDB folder (srkit or BasicSR)."""
    folder = Path(path)
    meta = folder / META_NAME
    if not folder.exists():
        raise InputError("no such LMDB folder", folder)
    if not (folder / "data.mdb").is_file():
        raise InputError("not an LMDB folder (no data.mdb)", folder)
    if not meta.is_file():
        hint = " (an interrupted pack: run `srkit data pack ... --resume`)" if folder.name.endswith(PARTIAL_SUFFIX) \
            or (folder / PACK_INFO_NAME).is_file() else ""
        raise InputError(f"no {META_NAME}: not a complete LMDB pack{hint}", folder)
    records = []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.strip().split()
        if not parts:
            continue
        try:
            name = parts[0]
            key = name[:-4] if name.lower().endswith(".png") else name
            shape = tuple(int(v) for v in parts[1].strip("()").split(","))
            level = int(parts[2]) if len(parts) > 2 else -1
            if len(shape) == 2:
                shape = (*shape, 1)
            if len(shape) != 3:
                raise ValueError
        except (IndexError, ValueError):
            raise InputError(f"line {n} is not '<key>.png (H,W,C) <level>': {line.strip()[:60]!r}", meta) from None
        records.append(MetaRecord(key, shape, level))  # type: ignore[arg-type]
    if not records:
        raise InputError("empty meta_info.txt", meta)
    return records


def group_clips(keys: Iterable[str]) -> dict[str, list[str]]:
    """``{clip: [keys in natural frame order]}`` for keys ``<clip>/<frame>``, clips in first-seen order."""
    clips: dict[str, list[str]] = {}
    for key in keys:
        clip = key.rsplit("/", 1)[0] if "/" in key else ""
        clips.setdefault(clip, []).append(key)
    return {c: sorted(ks, key=natural_key) for c, ks in clips.items()}


_READ_ENVS: dict[tuple[str, int, int], object] = {}
_READ_ENVS_LOCK = threading.Lock()  # packing reads a pack from several threads


def open_readonly(path: str | os.PathLike):
    """A read-only environment for ``path``, shared by every reader in this process.

    py-lmdb refuses to open one environment twice in a process, and several readers (GT and LR
    datasets, a verification) may want the same pack. The cache key includes the process id (a
    forked worker opens its own handle; the parent's must not be used across fork) and the inode of
    ``data.mdb`` (a pack replaced by ``--overwrite`` is a new file, not the stale mapping).
    """
    folder = Path(path)
    try:
        inode = (folder / "data.mdb").stat().st_ino
    except OSError:
        raise InputError("not an LMDB folder (no data.mdb)", folder) from None
    key = (os.path.realpath(folder), inode, os.getpid())
    with _READ_ENVS_LOCK:
        return _READ_ENVS.get(key) or _open_shared(folder, key)


def _open_shared(folder: Path, key: tuple[str, int, int]):
    """Open and cache a read-only environment (caller holds the lock)."""
    for old in [k for k in _READ_ENVS if k[0] == key[0]]:
        # Same process: the pack was replaced, drop the stale mapping. Other pid: a handle inherited
        # through fork. py-lmdb still counts it as open here and would refuse a new one; closing
        # our copy is harmless to the parent (lock=False: no shared reader table, and munmap/close
        # only affect this process) and is what makes the fresh open possible.
        _READ_ENVS.pop(old).close()
    env = _lmdb().open(str(folder), readonly=True, lock=False, readahead=False, meminit=False, subdir=True,
                       max_readers=512)
    _READ_ENVS[key] = env
    return env


def close_readonly(path: str | os.PathLike) -> None:
    """Close this process's shared read-only handle on ``path`` (e.g. before deleting the pack)."""
    real = os.path.realpath(Path(path))
    with _READ_ENVS_LOCK:
        for k in [k for k in _READ_ENVS if k[0] == real and k[2] == os.getpid()]:
            _READ_ENVS.pop(k).close()


class LmdbReader:
    """Read-only access to a packed LMDB folder; safe to copy into forked DataLoader workers."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.records = read_meta(self.path)
        self.keys = [r.key for r in self.records]
        self.shapes = {r.key: r.shape for r in self.records}
        self._env = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_env"], state["_pid"] = None, None  # handles never travel to another process
        return state

    def _environment(self):
        pid = os.getpid()
        if self._env is None or self._pid != pid:
            # First read in this process (e.g. a freshly forked DataLoader worker): the inherited handle
            # belongs to the parent, so open (or share) one of our own and never touch theirs.
            self._env = open_readonly(self.path)
            self._pid = pid
        return self._env

    def get_bytes(self, key: str) -> bytes | None:
        with self._environment().begin(write=False, buffers=False) as txn:
            return txn.get(key.encode("utf-8"))

    def read(self, key: str) -> np.ndarray:
        """Decode record ``key`` to an RGB array (uint8 or uint16)."""
        data = self.get_bytes(key)
        if data is None:
            raise InputError(f"record {key} listed in {META_NAME} is missing from the database", self.path)
        img = decode_record(data)
        if img is None:
            raise InputError(f"record {key} is corrupt (cannot decode; run `srkit data verify`)", self.path)
        return img

    def clips(self) -> dict[str, list[str]]:
        return group_clips(self.keys)

    def close(self) -> None:
        """Forget the handle (the shared environment stays open for other readers; see :func:`close_readonly`)."""
        self._env, self._pid = None, None


# ------------------------------------------------------------------------------------------- packing

@dataclass
class PackReport:
    path: Path
    total: int = 0
    written: int = 0
    skipped: int = 0
    bytes_written: int = 0
    map_size: int = 0
    seconds: float = 0.0


# A record to pack: its key and a function producing the RGB frame (called in a worker thread).
RecordSource = tuple[str, Callable[[], np.ndarray]]


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
    lmdb = _lmdb()
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
    lmdb = _lmdb()
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
    lmdb = _lmdb()
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


# ------------------------------------------------------------------------------------------ verifying

@dataclass
class VerifyReport:
    path: Path
    records: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)

    @property
    def ok(self) -> bool:
        return not self.bad


def verify(path: str | os.PathLike, *, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Decode every record of an LMDB pack; report corrupt records, shape mismatches, missing and extra keys."""
    folder = Path(path)
    meta = read_meta(folder)
    report = VerifyReport(folder, records=len(meta))
    listed = set()
    env = open_readonly(folder)
    with env.begin(write=False, buffers=True) as txn:
        for n, rec in enumerate(meta, 1):
            listed.add(rec.key)
            data = txn.get(rec.key.encode("utf-8"))
            if data is None:
                report.bad.append((rec.key, f"missing: listed in {META_NAME} but not in the database"))
                continue
            img = decode_record(data)
            if img is None:
                report.bad.append((rec.key, "corrupt: cannot be decoded"))
            elif img.shape != rec.shape:
                h, w, c = img.shape
                report.bad.append((rec.key, f"shape ({h},{w},{c}) but {META_NAME} says "
                                            f"({rec.shape[0]},{rec.shape[1]},{rec.shape[2]})"))
            if progress is not None and n % 256 == 0:
                progress(n)
        for raw in txn.cursor().iternext(keys=True, values=False):
            key = bytes(raw).decode("utf-8", errors="replace")
            if key not in listed:
                report.bad.append((key, f"extra: in the database but not listed in {META_NAME}"))
    if progress is not None:
        progress(len(meta))
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
    from srkit.data.sources import VideoSource, open_sources

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
