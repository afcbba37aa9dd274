"""Write files so that a crash never leaves a partial file under the final name.

Everything srkit writes (images, videos, checkpoints, LMDB packs, reports) goes to a temporary name
in the destination folder (same filesystem, so the final rename is atomic) and is renamed on success.
"""

from __future__ import annotations

import contextlib
import os
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


def temp_path_for(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path`` that keeps its extension (encoders pick formats by it)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.stem + "-", suffix=path.suffix, dir=path.parent or ".")
    os.close(fd)
    return Path(tmp)


def _default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give (mkstemp's files are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
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
            _fsync_dir(path.parent if str(path.parent) else Path("."))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)
