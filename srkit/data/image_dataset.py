"""``ImageSRDataset``: single-image SR pairs (DIV2K-style folders, frame folders, LMDB packs).

Items are ``{"lq": (C, h, w), "gt": (C, H, W), "key": str}`` plus ``"maps": (16, h, w)`` for the
non-blind SRMD degradation (UDVD / SRMD conditioning). LR images come from disk when paired folders
exist (``0001.png`` <- ``0001x4.png``), otherwise they are synthesised from the HR image on the fly
(BI, BD, SRMD). Random crops, flips and transposition in training; whole images in validation.

An image dataset is a video dataset with one-frame windows: this class reuses
:class:`~srkit.data.video_dataset.VideoSRDataset` with ``num_frames=1`` (every image of every clip is
a sample), so cropping, LR synthesis, determinism (``seed``, :meth:`set_epoch`) and LMDB reading are
one implementation, tested once.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from srkit.data.sources import DEFAULT_FRAME_CACHE_BYTES
from srkit.data.video_dataset import VideoSRDataset


class ImageSRDataset(Dataset):
    """Single-image SR samples.

    Args:
        source: image folder (``images`` layout: DIV2K_*_HR / HR / GT folders with optional LR
            partners, or a flat folder of HR images), ``folders`` of frames, an LMDB pack, or clips.
        layout: dataset layout (default ``"images"``); ``"folders"`` uses every frame of every clip.
        lr_source: LR LMDB pack matching an LMDB ``source``.
        degradation: ``"BI"``, ``"BD"``, ``"SRMD"`` (with maps), a degradation object, or None.
        gt_patch: HR crop size in training (LR patch ``gt_patch // scale``).
        Other arguments as :class:`~srkit.data.video_dataset.VideoSRDataset`.
    """

    def __init__(self, source, *, layout: str = "images", split: str = "train", subset=None, lr_source=None,
                 scale: int = 4, degradation="BI", degradation_params: dict | None = None, lr_from_disk: bool = True,
                 train: bool = True, gt_patch: int = 128, use_flip: bool = True, use_rot: bool = True, seed: int = 0,
                 degrade_margin: int = 24, frame_cache_bytes: int = DEFAULT_FRAME_CACHE_BYTES):
        self._frames = VideoSRDataset(
            source, layout=layout, split=split, subset=subset, lr_source=lr_source, scale=scale, num_frames=1,
            padding="replicate", degradation=degradation, degradation_params=degradation_params,
            lr_from_disk=lr_from_disk, train=train, gt_patch=gt_patch, interval_list=(1,), random_reverse=False,
            use_flip=use_flip, use_rot=use_rot, border="pad", centers="all", seed=seed, degrade_margin=degrade_margin,
            frame_cache_bytes=frame_cache_bytes)
        self.scale, self.train, self.gt_patch = scale, train, gt_patch

    def __len__(self) -> int:
        return len(self._frames)

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch`` (reaches running DataLoader workers too)."""
        self._frames.set_epoch(epoch)

    def unshare_epoch(self) -> None:
        """Keep the epoch private to this process (see :meth:`VideoSRDataset.unshare_epoch`)."""
        self._frames.unshare_epoch()

    @property
    def degradation(self):
        return self._frames.degradation

    def __getitem__(self, index: int) -> dict:
        item = self._frames[index]
        item["lq"] = item["lq"][0]
        return item

    def __repr__(self) -> str:
        return repr(self._frames).replace("VideoSRDataset", "ImageSRDataset").replace(", 1 frames", "")
