"""Datasets: layouts on disk, temporal windows, frame sources, LMDB packs, SR training samples.

Light to import: the submodules are loaded on first use of a name (``from srkit.data import
VideoSRDataset`` imports torch; ``from srkit.data import window_indices`` does not).
"""

from __future__ import annotations

from srkit.utils.lazy import lazy_exports

_EXPORTS = {
    "window_indices": "srkit.data.windows",
    "strided_window": "srkit.data.windows",
    "PADDING_MODES": "srkit.data.windows",
    "Clip": "srkit.data.layouts",
    "discover_clips": "srkit.data.layouts",
    "detect_layout": "srkit.data.layouts",
    "read_name_list": "srkit.data.layouts",
    "LAYOUTS": "srkit.data.layouts",
    "FrameSource": "srkit.data.sources",
    "FolderSource": "srkit.data.sources",
    "VideoSource": "srkit.data.sources",
    "LmdbSource": "srkit.data.sources",
    "open_sources": "srkit.data.sources",
    "LmdbReader": "srkit.data.lmdb_store",
    "pack": "srkit.data.lmdb_pack",
    "verify": "srkit.data.lmdb_store",
    "VideoSRDataset": "srkit.data.video_dataset",
    "ImageSRDataset": "srkit.data.image_dataset",
    "Augment": "srkit.data.transforms",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
