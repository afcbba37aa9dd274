"""LMDB frame stores: a dataset packed once (:mod:`srkit.data.lmdb_pack`), read fast from many
DataLoader workers.

Format (the same as BasicSR's, so packs are interchangeable in both directions)
    An LMDB environment folder (``name.lmdb/data.mdb``) whose records are PNG files (``cv2``-encoded,
    RGB order in the PNG as in any PNG file) keyed ``<clip>/<frame stem>``: ``000/00000000`` (REDS),
    ``00001/0001/im4`` (Vimeo-90K), ``calendar/frame_0001`` ...; video frames are keyed
    ``<clip>/<index:08d>``. ``meta_info.txt`` inside the folder lists one record per line as
    ``<key>.png (<H>,<W>,<C>) <compression level>``.

Packing (:func:`srkit.data.lmdb_pack.pack`)
    Works in ``<out>.partial`` (an interrupted pack, resumable) and renames the folder to ``<out>``
    once every record and ``meta_info.txt`` are in: a folder under the final name is always complete.

Reading (:class:`LmdbReader`)
    Opens the environment lazily in the process that first reads (``readonly, lock=False,
    readahead=False``) and reopens it after ``fork``: an LMDB handle must not cross processes, and
    DataLoader workers are forked copies of the dataset.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from srkit.errors import InputError
from srkit.io.images import natural_key

META_NAME = "meta_info.txt"
PACK_INFO_NAME = "srkit_pack.json"
PARTIAL_SUFFIX = ".partial"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # PNG colour type -> channels as decoded
_PNG_TRAILER = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the mandatory, always identical last chunk


def import_lmdb():
    """The ``lmdb`` package, imported on first use (a one-line error when it is missing)."""
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
    env = import_lmdb().open(str(folder), readonly=True, lock=False, readahead=False, meminit=False, subdir=True,
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


# A record as a pack stores it: its key and a function producing the RGB frame (the packer calls it
# in a worker thread). Frame sources yield them (srkit.data.sources), the packer consumes them.
RecordSource = tuple[str, Callable[[], np.ndarray]]


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
