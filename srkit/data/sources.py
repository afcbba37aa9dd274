"""Frame sources: one interface over frame folders, video files and LMDB packs.

A :class:`FrameSource` is one clip's frames, readable by index as RGB ``HxWx3`` arrays (``uint8``,
or ``uint16`` for 16-bit sources). Datasets and the LMDB packer only see this interface, so every
layout in :mod:`srkit.data.layouts` can be trained on directly or packed, and a pack can be trained
on exactly like the folders it came from.

Video files are decoded once per process on first access and kept in memory (random access into
H.264 is slow, and each DataLoader worker is its own process). That is fine for short clips; a
video whose decoded frames exceed ``max_cache_bytes`` is refused with a hint to pack it into an
LMDB first (``srkit data pack video.mp4 video.lmdb``), which streams it without caching.

Frame folders and LMDB packs store compressed images (PNG) whose decoding costs more than everything
else a training sample needs (a 960x540 PNG: ~9 ms; five of them per window). :class:`CachedSource`
keeps decoded frames in a per-process :class:`FrameCache` (least recently used first out, bounded in
bytes), so a training set that fits is decoded once per worker, not once per window.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from srkit.data.layouts import Clip, discover_clips
from srkit.data.lmdb_store import LmdbReader, RecordSource
from srkit.errors import InputError
from srkit.io.images import read_rgb

DEFAULT_VIDEO_CACHE_BYTES = 2 << 30
DEFAULT_FRAME_CACHE_BYTES = 1 << 30


def _rgb3(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    return img[:, :, :3]


class FrameSource(ABC):
    """The frames of one clip, in temporal order."""

    name: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` as RGB HxWx3 (uint8 or uint16)."""

    @abstractmethod
    def frame_key(self, index: int) -> str:
        """Stable key ``<clip>/<frame>`` (the LMDB key of this frame)."""

    def records(self) -> Iterator[RecordSource]:
        """``(key, read_fn)`` for every frame, for :func:`srkit.data.lmdb_pack.pack_records`."""
        for i in range(len(self)):
            yield self.frame_key(i), (lambda i=i: self.read(i))

    def _check(self, index: int) -> None:
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} outside clip {self.name} of {len(self)} frames")


class FolderSource(FrameSource):
    """Frames stored as image files (any format :func:`srkit.io.images.read_rgb` reads)."""

    def __init__(self, name: str, paths: list[Path]):
        if not paths:
            raise InputError(f"clip {name} has no frames")
        self.name = name
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> np.ndarray:
        self._check(index)
        return read_rgb(self.paths[index])

    def frame_key(self, index: int) -> str:
        return f"{self.name}/{self.paths[index].stem}"


class VideoSource(FrameSource):
    """A video file; decoded completely (once per process) on first :meth:`read`."""

    def __init__(self, name: str, path: str | os.PathLike, *, max_cache_bytes: int = DEFAULT_VIDEO_CACHE_BYTES):
        self.name = name
        self.path = Path(path)
        self.max_cache_bytes = max_cache_bytes
        self._frames: list[np.ndarray] | None = None
        self._pid: int | None = None
        self._length: int | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_frames"], state["_pid"] = None, None  # each (spawned) worker decodes for itself
        return state

    def __len__(self) -> int:
        if self._length is None:
            from srkit.io.video import probe_video

            info = probe_video(self.path, count_frames=True)
            if info.num_frames_exact and info.num_frames > 0:
                self._length = info.num_frames
            else:  # container gives no trustworthy count: decoding is the only exact way
                self._length = len(self._decoded())
        return self._length

    def _decoded(self) -> list[np.ndarray]:
        if self._frames is None or self._pid != os.getpid():
            from srkit.io.video import open_video

            frames: list[np.ndarray] = []
            total = 0
            with open_video(self.path) as reader:
                for frame in reader:
                    frames.append(frame.rgb)
                    total += frame.rgb.nbytes
                    if total > self.max_cache_bytes:
                        raise InputError(f"decoded video exceeds {self.max_cache_bytes >> 20} MiB of frame cache per "
                                         "worker; pack it first (srkit data pack VIDEO OUT.lmdb) and train on the LMDB",
                                         self.path)
            if self._length is not None and len(frames) != self._length:
                # The probed count was wrong: trust the decoder, but indices past the end must fail loudly.
                self._length = len(frames)
            self._frames, self._pid = frames, os.getpid()
        return self._frames

    def read(self, index: int) -> np.ndarray:
        frames = self._decoded()
        if not 0 <= index < len(frames):
            raise InputError(f"frame {index} requested but the video decodes to {len(frames)} frames", self.path)
        return frames[index]

    def frame_key(self, index: int) -> str:
        return f"{self.name}/{index:08d}"

    def records(self) -> Iterator[RecordSource]:
        # Stream: packing a long video must not hold it in memory.
        from srkit.io.video import open_video

        with open_video(self.path) as reader:
            for i, frame in enumerate(reader):
                rgb = frame.rgb
                yield self.frame_key(i), (lambda rgb=rgb: rgb)


class LmdbSource(FrameSource):
    """The frames of one clip inside an LMDB pack (keys ``<clip>/<frame>``)."""

    def __init__(self, name: str, reader: LmdbReader, keys: list[str]):
        if not keys:
            raise InputError(f"clip {name} has no records", reader.path)
        self.name = name
        self.reader = reader
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, index: int) -> np.ndarray:
        self._check(index)
        return _rgb3(self.reader.read(self.keys[index]))

    def frame_key(self, index: int) -> str:
        return self.keys[index]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.reader.shapes[self.keys[0]]


class CentreOnly(FrameSource):
    """A clip whose only stored GT frame is its middle one (BasicSR's ``vimeo90k_train_GT_only4th.lmdb``).

    Presents ``length`` frames so indices line up with the clip's LR frames; reading any frame but the
    middle one is an error (such clips are only usable with LR frames on disk, centred on the middle).
    """

    def __init__(self, inner: FrameSource, length: int):
        if len(inner) != 1:
            raise ValueError("CentreOnly wraps a one-frame source")
        self.name, self.inner, self.length = inner.name, inner, length

    def __len__(self) -> int:
        return self.length

    def read(self, index: int) -> np.ndarray:
        if index != self.length // 2:
            raise InputError(f"clip {self.name}: only the middle ground-truth frame is stored (frame {index} "
                             "requested; LR must come from disk for such packs)")
        return self.inner.read(0)

    def frame_key(self, index: int) -> str:
        return self.inner.frame_key(0) if index == self.length // 2 else f"{self.name}/#{index}"


class FrameCache:
    """Decoded frames of one process, least recently used evicted first, at most ``max_bytes`` in all.

    Cached frames are read-only arrays (an in-place change by a caller would corrupt every later read,
    so it raises instead). Pickling (a spawned DataLoader worker) gives an empty cache of the same size.
    """

    def __init__(self, max_bytes: int = DEFAULT_FRAME_CACHE_BYTES):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._frames: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = 0

    def __getstate__(self) -> dict:
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_bytes"])

    def __len__(self) -> int:
        return len(self._frames)

    def get(self, key: tuple[int, int], load) -> np.ndarray:
        """The frame under ``key``; ``load()`` decodes it on a miss."""
        frame = self._frames.get(key)
        if frame is not None:
            self._frames.move_to_end(key)
            self.hits += 1
            return frame
        self.misses += 1
        frame = load()
        if frame.nbytes > self.max_bytes:
            return frame  # larger than the whole budget: never cached
        frame.flags.writeable = False
        self._frames[key] = frame
        self.nbytes += frame.nbytes
        while self.nbytes > self.max_bytes:
            _, old = self._frames.popitem(last=False)
            self.nbytes -= old.nbytes
        return frame


class CachedSource(FrameSource):
    """``inner``'s frames through a :class:`FrameCache` (shared by the sources of one dataset)."""

    def __init__(self, inner: FrameSource, cache: FrameCache):
        self.inner, self.cache, self.name = inner, cache, inner.name

    def __len__(self) -> int:
        return len(self.inner)

    def read(self, index: int) -> np.ndarray:
        # id(self) tells the GT and LR sources of one clip apart (their frame keys are equal); it is unique
        # while the dataset lives, and the cache lives and is pickled (emptied) with the same dataset.
        return self.cache.get((id(self), index), lambda: self.inner.read(index))

    def frame_key(self, index: int) -> str:
        return self.inner.frame_key(index)

    def records(self) -> Iterator[RecordSource]:
        return self.inner.records()  # packing streams every frame once: nothing to gain from the cache


def cached(source: FrameSource | None, cache: FrameCache | None) -> FrameSource | None:
    """``source`` behind ``cache`` when it decodes on every read (folders, LMDB); others as they are."""
    if source is None or cache is None or cache.max_bytes == 0 or not isinstance(source, (FolderSource, LmdbSource)):
        return source
    return CachedSource(source, cache)


def is_lmdb(path: str | os.PathLike) -> bool:
    """True for an LMDB folder (``data.mdb`` inside)."""
    return (Path(path) / "data.mdb").is_file()


def lmdb_sources(path: str | os.PathLike, subset: list[str] | None = None) -> list[LmdbSource]:
    """One source per clip of an LMDB pack (all records share one lazily opened reader)."""
    reader = LmdbReader(path)
    clips = reader.clips()
    names = list(clips) if subset is None else list(subset)
    missing = [n for n in names if n not in clips]
    if missing:
        raise InputError(f"LMDB has no clip {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                         path)
    return [LmdbSource(n, reader, clips[n]) for n in names]


def clip_source(clip: Clip, which: str = "gt", *, max_video_bytes: int = DEFAULT_VIDEO_CACHE_BYTES) -> FrameSource | None:
    """The ``gt`` or ``lr`` frames of a clip as a source (None when the clip has none of that kind)."""
    if which not in ("gt", "lr"):
        raise ValueError(f"which must be 'gt' or 'lr', not {which!r}")
    if which == "gt" and clip.video is not None:
        return VideoSource(clip.name, clip.video, max_cache_bytes=max_video_bytes)
    paths = clip.gt if which == "gt" else clip.lr
    return None if paths is None else FolderSource(clip.name, paths)


def open_sources(src: str | os.PathLike | list[Clip], *, layout: str = "auto", which: str = "gt",
                 degradation: str = "BI", scale: int = 4, split: str = "all",
                 subset: Path | str | list[str] | None = None) -> list[FrameSource]:
    """Frame sources of a dataset folder, video, LMDB pack or clip list (``which`` = ``gt`` or ``lr``)."""
    if not isinstance(src, list) and is_lmdb(src):
        if which == "lr":
            raise InputError("an LMDB pack holds one kind of frames; pass the LR pack itself", src)
        names = None if subset is None else (list(subset) if isinstance(subset, list) else None)
        if subset is not None and names is None:
            from srkit.data.layouts import read_name_list

            names = read_name_list(subset)
        return list(lmdb_sources(src, names))
    clips = src if isinstance(src, list) else discover_clips(src, layout, degradation=degradation, scale=scale,
                                                            subset=subset, split=split)
    out = []
    for clip in clips:
        s = clip_source(clip, which)
        if s is None:
            where = "" if isinstance(src, list) else f" under {src}"
            raise InputError(f"clip {clip.name} has no {which.upper()} frames{where} (degradation {degradation}, x{scale})")
        out.append(s)
    return out
