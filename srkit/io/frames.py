"""Frame folders: a video stored as numbered images (PNG/JPEG/BMP/TIFF...).

:class:`FrameFolderReader` reads a folder in natural order (``frame2`` before ``frame10``), keeps
16-bit images 16-bit, and checks before any work starts that every frame has the same size (an
:class:`~srkit.errors.InputError` names the first file that differs). It yields the same
:class:`~srkit.io.video.VideoFrame` objects as :class:`~srkit.io.video.VideoReader`, with the frame
number as ``pts``.

:class:`FrameFolderWriter` writes each frame atomically (temporary name, fsync, rename), so a file
that exists under a frame name is always complete. That makes resuming trivial and safe:
``FrameFolderWriter(folder, resume=True).completed`` is the number of consecutive frames already
there, and writing continues after them.
"""

from __future__ import annotations

import os
import string
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from srkit.errors import ConfigError, InputError, OutputError
from srkit.io.atomic import atomic_path, remove_stale_temps_in, set_default_file_mode
from srkit.io.images import IMAGE_EXTENSIONS, check_pixel_limit, encode_image, header_size, list_images, read_image
from srkit.io.video import VideoFrame

__all__ = ["FrameFolderReader", "FrameFolderWriter", "image_size"]


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image from its header when possible (no full decode)."""
    path = Path(path)
    size = header_size(path)
    if size is not None:
        check_pixel_limit(path, size)  # a frame too large to decode is refused here, by name
        return size
    rgb = read_image(path).rgb  # formats Pillow does not know: decode with OpenCV
    return int(rgb.shape[1]), int(rgb.shape[0])


class FrameFolderReader:
    """Read a folder of frames as a video.

    >>> reader = FrameFolderReader("frames/")
    >>> reader.num_frames, reader.width, reader.height, reader.dtype
    >>> for frame in reader:            # VideoFrame(rgb=HxWx3, pts=index, time=index/fps or None)
    ...     ...
    >>> reader.read(5)                  # random access, HxWx3 array

    Grayscale frames are replicated to 3 channels and alpha is dropped (super-resolution works on RGB).

    Args:
        folder: the folder; hidden and temporary files are ignored.
        fps: nominal frame rate, used only to fill ``VideoFrame.time`` (None leaves it None).
        check_sizes: read every header up front and fail on the first frame with a different size.
    """

    def __init__(self, folder: str | os.PathLike, *, fps: Fraction | float | None = None,
                 check_sizes: bool = True):
        self.folder = Path(folder)
        self.files: list[Path] = list_images(self.folder)
        if not self.files:
            raise InputError(f"no images ({', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)})", self.folder)
        self.fps = Fraction(fps) if fps is not None else None
        # Frames are numbered: pts counts frames, so one tick is one frame interval.
        self.time_base = 1 / self.fps if self.fps else None
        first_image = read_image(self.files[0])
        # Alpha is dropped (see above); the caller is told so through this, once.
        self.has_alpha = first_image.alpha is not None
        first = first_image.rgb if first_image.rgb.shape[2] == 3 else np.repeat(first_image.rgb, 3, axis=2)
        self.height, self.width = first.shape[:2]
        self.dtype = first.dtype
        self.bit_depth = 16 if first.dtype == np.uint16 else 8
        if check_sizes:
            for path in self.files[1:]:
                w, h = image_size(path)
                if (w, h) != (self.width, self.height):
                    raise InputError(f"frame size {w}x{h} differs from {self.width}x{self.height} of "
                                     f"{self.files[0].name}", path)

    @property
    def num_frames(self) -> int:
        return len(self.files)

    def __len__(self) -> int:
        return len(self.files)

    @staticmethod
    def _read_file(path: Path) -> np.ndarray:
        img = read_image(path).rgb
        return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` as HxWx3 (uint8 or uint16), checked against the first frame's size/depth."""
        path = self.files[index]
        img = self._read_file(path)
        if img.shape[:2] != (self.height, self.width):
            raise InputError(f"frame size {img.shape[1]}x{img.shape[0]} differs from "
                             f"{self.width}x{self.height} of {self.files[0].name}", path)
        if img.dtype != self.dtype:
            raise InputError(f"{8 * img.dtype.itemsize}-bit frame in a {self.bit_depth}-bit sequence "
                             f"(first frame {self.files[0].name})", path)
        return img

    def __iter__(self) -> Iterator[VideoFrame]:
        for i in range(len(self.files)):
            time = float(i / self.fps) if self.fps else None
            yield VideoFrame(rgb=self.read(i), pts=i, time=time, index=i, duration=1)

    def __enter__(self) -> FrameFolderReader:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _check_pattern(pattern: str) -> str:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
        a, b = pattern.format(0), pattern.format(1)
    except (ValueError, IndexError, KeyError) as exc:
        raise ConfigError(f"bad frame name pattern {pattern!r} ({exc}); expected e.g. '{{:08d}}.png'") from None
    if len(fields) != 1 or a == b:
        raise ConfigError(f"frame name pattern {pattern!r} needs exactly one number field, e.g. '{{:08d}}.png'")
    if os.sep in a or (os.altsep and os.altsep in a):
        raise ConfigError(f"frame name pattern {pattern!r} must be a file name, not a path")
    if Path(a).suffix.lower() not in IMAGE_EXTENSIONS:
        raise ConfigError(f"frame name pattern {pattern!r} needs an image extension "
                          f"({', '.join(IMAGE_EXTENSIONS)})")
    return pattern


class FrameFolderWriter:
    """Write numbered frames into a folder, each one atomically.

    >>> with FrameFolderWriter("out/", resume=True) as writer:
    ...     for i, frame in enumerate(frames):
    ...         if i < writer.completed:
    ...             continue                   # already written by an interrupted run
    ...         writer.write(frame.rgb, i)

    Args:
        folder: created if missing (its parent must exist).
        pattern: file name for frame ``i``: ``pattern.format(i)``; the extension picks the format
            (16-bit frames stay 16-bit in PNG/TIFF).
        resume: continue an interrupted run: :attr:`completed` counts the consecutive frames from
            ``start`` that already exist (all complete, since frames are only renamed into place
            whole); leftover temporary files are removed.
        overwrite: allow writing into a folder that already holds frames without resuming.  When the
            writer is closed after a run that ended without error (the ``with`` block, or
            :meth:`finish`), the old frames past the last one written are removed, so the folder
            holds exactly the new sequence (a shorter clip leaves no stale tail).
        start: number of the first frame.
    """

    def __init__(self, folder: str | os.PathLike, pattern: str = "{:08d}.png", *, resume: bool = False,
                 overwrite: bool = False, start: int = 0):
        self.folder = Path(folder)
        self.pattern = _check_pattern(pattern)
        self.start = int(start)
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError("exists and is not a folder", self.folder)
        if not self.folder.exists():
            parent = self.folder.parent if str(self.folder.parent) else Path(".")
            if not parent.is_dir():
                raise OutputError("parent folder does not exist", parent)
            try:
                self.folder.mkdir()
            except OSError as exc:
                raise OutputError(f"cannot create folder ({exc.strerror or exc})", self.folder) from None
        if not os.access(self.folder, os.W_OK):
            raise OutputError("folder is not writable", self.folder)
        # Temporary files of an interrupted run are incomplete by definition: remove them -- unless a
        # live writer still holds one (False; None = this filesystem cannot tell: removed, as always).
        remove_stale_temps_in(self.folder)
        self.completed = 0
        while self.path_for(self.start + self.completed).is_file():
            self.completed += 1
        if self.completed and not (resume or overwrite):
            raise OutputError(f"already holds {self.completed} frame(s) named like {self.pattern!r} "
                              "(resume to continue, or overwrite)", self.folder)
        self.next_index = self.start + (self.completed if resume else 0)
        self.frames_written = 0
        # Old frames this run replaces (overwrite): those it does not reach are removed by finish().
        self._replaced_end = self.start + self.completed if (overwrite and not resume) else None

    @property
    def num_existing(self) -> int:
        """Alias of :attr:`completed`: consecutive complete frames found at construction."""
        return self.completed

    def path_for(self, index: int) -> Path:
        return self.folder / self.pattern.format(index)

    def write(self, rgb: np.ndarray, index: int | None = None) -> Path:
        """Write frame ``index`` (default: the next one) atomically and return its path."""
        if index is None:
            index = self.next_index
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] not in (1, 3) or rgb.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"expected an HxWx3 uint8/uint16 frame, got {rgb.shape} {rgb.dtype}")
        path = self.path_for(index)
        data = encode_image(rgb, path.suffix)
        try:
            with atomic_path(path, fsync=True) as tmp:
                tmp.write_bytes(data)
                set_default_file_mode(tmp)  # mkstemp makes 0600 files; frames are ordinary files
        except OSError as exc:
            raise OutputError(f"cannot write frame ({exc.strerror or exc})", path) from None
        self.next_index = index + 1
        self.frames_written += 1
        return path

    def close(self) -> None:
        """Nothing is buffered: every frame is complete on disk as soon as :meth:`write` returns."""

    def finish(self) -> int:
        """The run completed: with ``overwrite``, remove the old frames past the last one written.
        Returns how many were removed."""
        removed = 0
        if self._replaced_end is not None:
            for index in range(self.next_index, self._replaced_end):
                try:
                    self.path_for(index).unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise OutputError(f"cannot remove an old frame ({exc.strerror or exc})", self.path_for(index)) from None
            self._replaced_end = None
        return removed

    def __enter__(self) -> FrameFolderWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close()
        if exc_type is None:
            self.finish()
