"""Datasets and loaders for training: what the config's ``data`` section turns into.

Real data comes from engineer D's :mod:`srkit.data` datasets (folders, video files, LMDB, on-the-fly
degradations); ``kind: synthetic`` builds a small deterministic dataset in memory (used by the tests
and to smoke-test a config without any data on disk).

Every training sample is addressed by ``(epoch, index)`` (see
:class:`~srkit.train.distributed.ResumableBatchSampler`); its randomness (crop position, flips, the
degradation) derives from ``(seed, epoch, index)`` only, so a resumed run sees the same samples as an
uninterrupted one, whatever the number of workers.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from srkit.data.conditions import CONDITION_CHANNELS, degradations_for
from srkit.errors import ConfigError, InputError
from srkit.models.api import ModelSpec
from srkit.train.config import DataConfig, DatasetConfig
from srkit.train.distributed import DistInfo, ResumableBatchSampler


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Independent stream per (seed, epoch, index): Philox-free, order-free, worker-count-free."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index]))


class SyntheticSRDataset(Dataset):
    """Smooth random images (or short clips of a moving smooth image) and their area-downsampled LQ.

    Content depends on ``(seed, index)``; training augmentation (flips, transposition, temporal
    reversal, as configured) on ``(seed, epoch, index)``.
    Video samples are a window of ``num_frames`` shifted views (a little camera motion), so alignment
    modules have something to align.
    """

    def __init__(self, cfg: DatasetConfig, spec: ModelSpec, *, seed: int, train: bool):
        self.cfg, self.spec, self.seed, self.train = cfg, spec, seed, train
        self.epoch = 0
        h, w = (cfg.gt_size, cfg.gt_size) if train else (cfg.height, cfg.width)
        if h % max(spec.scale, 1) or w % max(spec.scale, 1):
            raise ConfigError(f"synthetic data: GT size {h}x{w} is not a multiple of the model scale {spec.scale}")
        self.h, self.w, self.lq_div = h, w, spec.output_ratio

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.cfg.length

    def motion_magnitude(self, index: int) -> float:
        """Camera motion of sample ``index`` in pixels/frame (0 for images): its curriculum difficulty."""
        if self.spec.input_kind != "video":
            return 0.0
        rng = sample_rng(self.seed, 0, index)
        rng.random((1, 3, 6, 6), dtype=np.float32)  # the same draws as __getitem__
        dy, dx = (int(v) for v in rng.integers(-1, 2, size=2))
        return float(np.hypot(dy, dx))

    def __getitem__(self, index: int) -> dict[str, Any]:
        # Content depends on the index only (a fixed "dataset"); augmentation on (epoch, index).
        rng = sample_rng(self.seed, 0, index)
        aug = sample_rng(self.seed, self.epoch, index) if self.train else None
        t = self.spec.num_frames if self.spec.input_kind == "video" else 1
        base = torch.from_numpy(rng.random((1, 3, 6, 6), dtype=np.float32))
        big = F.interpolate(base, size=(self.h + 2 * t, self.w + 2 * t), mode="bicubic", align_corners=False).clamp(0, 1)
        dy, dx = (int(v) for v in rng.integers(-1, 2, size=2))
        c = t // 2
        frames = []
        for i in range(t):
            oy, ox = t + (i - c) * dy, t + (i - c) * dx
            frames.append(big[0, :, oy : oy + self.h, ox : ox + self.w])
        hr = torch.stack(frames)  # (T, 3, H, W)
        if aug is not None:
            if self.cfg.use_flip and aug.random() < 0.5:
                hr = hr.flip(-1)
            if self.cfg.use_flip and aug.random() < 0.5:
                hr = hr.flip(-2)
            if self.cfg.use_rot and self.h == self.w and aug.random() < 0.5:
                hr = hr.transpose(-1, -2)
            if self.cfg.random_reverse and aug.random() < 0.5:
                hr = hr.flip(0)
        lq = F.avg_pool2d(hr, self.lq_div) if self.lq_div > 1 else hr.clone()
        out: dict[str, Any] = {"gt": hr[c].contiguous(), "key": f"synthetic/{index:05d}"}
        out["lq"] = lq.contiguous() if self.spec.input_kind == "video" else lq[0].contiguous()
        if self.spec.condition == "degradation":
            # Maps of a "no blur, no noise" degradation: zero PCA code and zero noise level.
            out["maps"] = torch.zeros(CONDITION_CHANNELS, lq.shape[-2], lq.shape[-1])
        return out


class EpochIndexed(Dataset):
    """Adapter: ``dataset[(epoch, index)]`` sets the epoch (inside the worker) and fetches ``index``.

    The batch sampler's stream crosses epoch boundaries, so two workers may hold items of different
    epochs at the same time. srkit's datasets keep their epoch in shared memory (so that a
    ``set_epoch`` in the main process reaches persistent workers); here every item carries its own
    epoch, so each process gets a private epoch cell instead -- otherwise a worker could draw an item
    with the epoch another worker just set.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._has_epoch = callable(getattr(dataset, "set_epoch", None))
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _localise(self) -> None:
        self._pid = os.getpid()
        unshare = getattr(self.dataset, "unshare_epoch", None)
        if callable(unshare):
            unshare()

    def __getitem__(self, item: tuple[int, int]) -> Any:
        epoch, index = item
        if self._has_epoch:
            if self._pid != os.getpid():
                self._localise()
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


class Repeated(Dataset):
    """``dataset`` listed ``times`` times per epoch (BasicSR's ``dataset_enlarge_ratio``).

    Repeat ``r`` of an item in epoch ``e`` is drawn as epoch ``e * times + r`` of the inner dataset,
    so the repeats of an item get different crops and augmentations, still a function of
    ``(seed, epoch, index)``.
    """

    def __init__(self, dataset: Dataset, times: int):
        self.dataset, self.times = dataset, times
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset) * self.times  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def unshare_epoch(self) -> None:
        unshare = getattr(self.dataset, "unshare_epoch", None)
        if callable(unshare):
            unshare()

    def __getitem__(self, index: int) -> Any:
        rep, inner = divmod(index, len(self.dataset))  # type: ignore[arg-type]
        if callable(getattr(self.dataset, "set_epoch", None)):
            self.dataset.set_epoch(self.epoch * self.times + rep)
        return self.dataset[inner]


class FirstFrames(Dataset):
    """Validation on the first ``n`` centre frames of each clip (keeps validation short)."""

    def __init__(self, dataset: Dataset, items: list[tuple[int, int]], n: int):
        self.dataset = dataset
        self.indices = [i for i, (_, center) in enumerate(items) if center < n]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]


class Mixed(Dataset):
    """Several datasets listed one after the other (``extra_sources``), with the epoch passed to each."""

    def __init__(self, datasets: list[Dataset]):
        self.datasets = datasets
        self.offsets = np.cumsum([0] + [len(d) for d in datasets])  # type: ignore[arg-type]
        self.epoch = 0

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for d in self.datasets:
            if callable(getattr(d, "set_epoch", None)):
                d.set_epoch(epoch)

    def unshare_epoch(self) -> None:
        for d in self.datasets:
            unshare = getattr(d, "unshare_epoch", None)
            if callable(unshare):
                unshare()

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(index)
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.datasets[k][index - int(self.offsets[k])]


def build_dataset(cfg: DatasetConfig, spec: ModelSpec, *, seed: int, train: bool, where: str) -> Dataset:
    """The dataset a config section describes (``where`` names it in errors: ``data.train``).

    ``extra_sources`` are built with the same settings and listed after the main source; each gets
    its own seed (``seed + k``), so sources do not share crop positions or degradations, its own
    ``repeat`` (instead of ``enlarge_ratio``) and, unless it names one, the dataset's layout. This works
    for every kind: several HR image roots (DIV2K + Flickr2K) make one ``kind: image`` training set.
    """
    if cfg.extra_sources:
        parts = [build_dataset(dataclasses.replace(cfg, extra_sources=[]), spec, seed=seed, train=train, where=where)]
        for k, src in enumerate(cfg.extra_sources, start=1):
            sub = dataclasses.replace(cfg, extra_sources=[], root=src.root, layout=src.layout or cfg.layout,
                                      partition=src.partition, subset=src.subset, lmdb=src.lmdb,
                                      lmdb_lq=src.lmdb_lq, enlarge_ratio=src.repeat if train else 1)
            parts.append(build_dataset(sub, spec, seed=seed + k, train=train, where=f"{where}.extra_sources[{k - 1}]"))
        return Mixed(parts)
    scale = spec.output_ratio
    if train and cfg.gt_size % scale:
        raise ConfigError(f"{where}.gt_size: expected a multiple of the model scale {scale}, got {cfg.gt_size}")
    if cfg.flow and cfg.kind != "video":
        raise ConfigError(f"{where}.flow: the optical flow is computed for video windows only (kind: video, not {cfg.kind})")
    if cfg.synthetic_motion and cfg.kind != "video":
        raise ConfigError(f"{where}.synthetic_motion: synthetic motion makes video windows (kind: video, not {cfg.kind})")
    if cfg.centre_blur and cfg.kind != "video":
        raise ConfigError(f"{where}.centre_blur: blurs the centre of video windows (kind: video, not {cfg.kind})")
    if cfg.flow and not spec.takes_flow:
        raise ConfigError(f"{where}.flow: this model has nothing to compare with a flow (EDVR's offset_fidelity "
                          "needs PCD; MANA's attention_fidelity needs model.overrides.attention_fidelity_queries > 0); "
                          "remove flow")
    if cfg.kind == "synthetic":
        ds: Dataset = SyntheticSRDataset(cfg, spec, seed=seed, train=train)
        return Repeated(ds, cfg.enlarge_ratio) if train and cfg.enlarge_ratio > 1 else ds
    source = cfg.lmdb or cfg.root
    if source is None:
        raise ConfigError(f"{where}.root: a {cfg.kind} dataset needs a root folder (or {where}.lmdb)")
    if not os.path.exists(source):
        # One line naming the folder and the config key (which of several sources is missing).
        key = f"{where}.lmdb" if cfg.lmdb else f"{where}.root"
        raise InputError(f"no such dataset {'LMDB' if cfg.lmdb else 'folder'} ({key})", source)
    if cfg.kind == "video" and spec.input_kind != "video":
        raise ConfigError(f"{where}.kind: 'video' data but the model takes single images; use kind: image")
    if cfg.kind == "image" and spec.input_kind != "image":
        raise ConfigError(f"{where}.kind: 'image' data but the model takes {spec.num_frames}-frame windows; use kind: video")
    if spec.condition is not None:
        providers = degradations_for(spec.condition)  # the degradations whose samples carry those maps
        if cfg.degradation.upper() not in providers:
            raise ConfigError(f"{where}.degradation: the model is conditioned on {spec.condition} maps; "
                              f"use {' or '.join(providers)} (got {cfg.degradation})")
    common: dict[str, Any] = dict(
        layout=cfg.layout, split=cfg.partition or ("train" if train else "test"), subset=cfg.subset,
        lr_source=cfg.lmdb_lq, scale=scale, degradation=cfg.degradation,
        degradation_params=dict(cfg.degradation_params), train=train, gt_patch=cfg.gt_size,
        use_flip=cfg.use_flip, use_rot=cfg.use_rot, seed=seed, frame_cache_bytes=cfg.frame_cache_mb << 20,
    )
    if cfg.kind == "video":
        from srkit.data.video_dataset import VideoSRDataset

        ds = VideoSRDataset(source, num_frames=spec.num_frames, padding=cfg.padding, interval_list=list(cfg.interval_list),
                            random_reverse=cfg.random_reverse, border=cfg.border, flow=cfg.flow and train,
                            synthetic_motion=cfg.synthetic_motion if train else 0.0, synthetic_speed=cfg.synthetic_speed,
                            centre_blur=cfg.centre_blur if train else 0.0, centre_blur_sigma=list(cfg.centre_blur_sigma),
                            **common)
    else:
        from srkit.data.image_dataset import ImageSRDataset

        ds = ImageSRDataset(source, **common)
    if not train and cfg.max_frames is not None:
        # (clip, centre) pairs of the samples; an image dataset is a one-frame video dataset inside.
        items = getattr(ds, "items", None) or getattr(getattr(ds, "_frames", None), "items", None)
        if items is None:
            raise ConfigError(f"{where}.max_frames: not supported by this dataset")
        ds = FirstFrames(ds, items, cfg.max_frames)
    if train and cfg.enlarge_ratio > 1:
        ds = Repeated(ds, cfg.enlarge_ratio)
    return ds


def make_train_loader(dataset: Dataset, cfg: DataConfig, *, seed: int, dist_info: DistInfo, device: torch.device,
                      start_iteration: int, batch_sampler: Any = None) -> DataLoader:
    """A loader that yields batch ``start_iteration``, ``start_iteration + 1``, ... of the endless stream
    (or the batches of ``batch_sampler``: the trainer's micro-batches, see :mod:`srkit.train.curriculum`)."""
    sampler = batch_sampler if batch_sampler is not None else ResumableBatchSampler(
        len(dataset), cfg.batch_size, seed=seed, rank=dist_info.rank, world_size=dist_info.world_size,
        start_iteration=start_iteration)
    pin = cfg.pin_memory == "on" or (cfg.pin_memory == "auto" and device.type == "cuda")
    workers = cfg.num_workers
    return DataLoader(
        EpochIndexed(dataset), batch_sampler=sampler, num_workers=workers, pin_memory=pin,
        persistent_workers=cfg.persistent_workers and workers > 0,
        prefetch_factor=cfg.prefetch_factor if workers > 0 else None,
        # A private generator: creating the loader must not consume the global torch RNG, or a
        # resumed run (which creates one more loader) would drift from the uninterrupted one.
        generator=torch.Generator().manual_seed(seed), worker_init_fn=_worker_init,
    )


def _worker_init(worker_id: int) -> None:
    # One thread per worker: the main process already uses the cores for the model.
    torch.set_num_threads(1)
    # Ctrl-C in a terminal, `kill -- -PGID`, systemd and batch schedulers signal every process of the
    # job, workers included.  A worker killed by the signal makes the DataLoader raise in the main
    # process before the trainer has saved its stop checkpoint; ignored here, the main process finishes
    # the iteration, saves and exits, and the loader shuts the workers down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_val_loader(dataset: Dataset, cfg: DataConfig) -> DataLoader:
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=min(cfg.num_workers, 2),
                      worker_init_fn=_worker_init)
