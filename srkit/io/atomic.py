"""Write files so that a crash never leaves a partial file under the final name.

Everything srkit writes (images, videos, checkpoints, LMDB packs, reports) goes to a temporary name
in the destination folder (same filesystem, so the final rename is atomic) and is renamed on success.

A temporary file is locked (``flock``) by its writer for as long as it exists, so a process killed
without a chance to clean up (SIGKILL, power loss) leaves an unlocked one: the next write of the same
video (or frame folder) removes such stale temporaries -- and only those, never one a live writer
still holds.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from srkit.errors import OutputError

TMP_PREFIX = ".srkit-tmp-"


def check_output_path(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Fail early, with one line, when ``path`` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError("output folder does not exist", parent)
    if not os.access(parent, os.W_OK):
        raise OutputError("output folder is not writable", parent)
    if path.exists() and not overwrite:
        raise OutputError("output exists (use --overwrite to replace it)", path)
    return path


try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; stale temporaries stay
    fcntl = None  # type: ignore[assignment]

# Open, locked descriptors of this process's temporary files (released by release_temp).
_HELD: dict[str, int] = {}


def _try_lock(fd: int) -> bool | None:
    """Lock ``fd`` exclusively without waiting: True, False (someone holds it) or None (cannot tell)."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:  # e.g. ENOLCK: this filesystem has no locks
        return None


def writer_gone(tmp: str | os.PathLike) -> bool | None:
    """Whether the process that wrote temporary file ``tmp`` has ended (its lock is free): True, False,
    or None when this platform or filesystem cannot tell."""
    try:
        fd = os.open(tmp, os.O_RDWR)  # read-write: NFS emulates flock with write locks
    except OSError:
        return None
    try:
        return _try_lock(fd)
    finally:
        os.close(fd)  # releases the probe's own lock


def stale_temps_of(path: str | os.PathLike) -> list[Path]:
    """Temporary files of ``path`` (named by :func:`temp_path_for`) whose writer is gone."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    # mkstemp's names: the prefix, then 8 characters of [a-z0-9_], then the suffix.
    pattern = re.compile(re.escape(TMP_PREFIX + path.stem + "-") + r"[a-z0-9_]{8}" + re.escape(path.suffix) + "$")
    try:
        names = [n for n in os.listdir(folder) if pattern.match(n)]
    except OSError:
        return []
    return [folder / n for n in names if str(folder / n) not in _HELD and writer_gone(folder / n) is True]


def remove_stale_temps_in(folder: str | os.PathLike) -> None:
    """Remove every srkit temporary file in ``folder`` that no live writer holds (a folder output --
    frames or images -- is written by one run at a time; None, "cannot tell", counts as gone)."""
    for stale in Path(folder).glob(TMP_PREFIX + "*"):
        if str(stale) not in _HELD and writer_gone(stale) is not False:
            with contextlib.suppress(OSError):
                stale.unlink()


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a killed writer of ``path`` left behind; returns those removed."""
    removed = []
    for stale in stale_temps_of(path):
        with contextlib.suppress(OSError):
            stale.unlink()
            removed.append(stale)
    return removed


def temp_path_for(path: str | os.PathLike, *, clean_stale: bool = False) -> Path:
    """A fresh temporary name beside ``path`` that keeps its extension (encoders pick formats by it).

    The file is locked until :func:`release_temp` (or the process's end): see the module docstring.
    ``clean_stale`` first removes the stale temporaries of the same ``path`` (it lists the folder: meant
    for one large output such as a video, not for each frame of a frame folder, which
    :class:`~srkit.io.frames.FrameFolderWriter` cleans once).
    """
    path = Path(path)
    if clean_stale:
        remove_stale_temps(path)
    while True:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.stem + "-", suffix=path.suffix, dir=path.parent or ".")
        locked = _try_lock(fd)
        # Between mkstemp and the lock, another run may have judged the file stale and removed it (or be
        # holding its probe lock): then take another name, so no writer ever works on an unlocked file.
        if locked is False or (locked and not _same_file(fd, tmp)):
            os.close(fd)
            continue
        if locked:
            _HELD[tmp] = fd
        else:
            os.close(fd)
        return Path(tmp)


def _same_file(fd: int, name: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(name)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def release_temp(tmp: str | os.PathLike) -> None:
    """Drop this process's lock on a temporary file (after renaming or removing it)."""
    fd = _HELD.pop(os.fspath(tmp), None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give (mkstemp's files are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def set_default_file_mode(path: str | os.PathLike) -> None:
    """Give ``path`` the permissions a plain new file gets (mkstemp makes 0600 files); errors are ignored."""
    with contextlib.suppress(OSError):
        os.chmod(path, _default_file_mode())


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush ``folder``'s entries (e.g. a rename into it) to disk, where the filesystem supports it."""
    with contextlib.suppress(OSError):  # not every filesystem supports it
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``path``, on any error remove it.

    >>> with atomic_path("out.png") as tmp:
    ...     cv2.imwrite(str(tmp), img)
    """
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, _default_file_mode())
            if fsync:
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent if str(path.parent) else Path("."))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        release_temp(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)
