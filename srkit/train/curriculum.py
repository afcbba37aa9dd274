"""Global batches, gradient accumulation and curriculum learning: which samples each optimiser step sees.

Global batch
    ``data.batch_size`` is the number of samples of one optimiser step over all processes. Each process
    runs forward passes of ``data.micro_batch_size`` samples (default: ``batch_size / processes``) and
    accumulates ``batch_size / (micro_batch_size x processes)`` of them before the step
    (:func:`accumulation`). The loss of every micro-batch is scaled (:func:`loss_scales`) so that the
    accumulated gradient is the gradient of the loss of the whole global batch as if it were one batch
    in one process, whatever the number of processes: the same config gives the same training on one
    GPU or eight.

Curriculum
    (EDVR's advice: train on easy data first, then add harder data.) Every training sample gets the
    difficulty score of its clip (mean optical flow, or a score file); samples are ranked from easy to
    hard. The global batch of iteration ``i`` is drawn, without replacement, from the easiest
    ``fraction(i)`` of the ranking, ``fraction`` growing from ``start_fraction`` at iteration 1 to 1 at
    ``full_at_iter`` (linearly, or in equal steps). The draw is a function of ``(seed, i)`` only, as is
    the sample's augmentation, so a resumed run draws exactly what the uninterrupted run drew. From
    ``full_at_iter`` on the batches are the plain epoch stream of
    :class:`~srkit.train.distributed.ResumableBatchSampler` (the one a run without curriculum uses).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from srkit.errors import ConfigError, InputError
from srkit.train.config import CurriculumConfig, DataConfig
from srkit.train.distributed import ResumableBatchSampler

# Epoch numbers of curriculum draws (the datasets derive augmentation from (seed, epoch, index)): far
# above the epochs of the plain stream, so a sample drawn in both gets different crops.
CURRICULUM_EPOCH_BASE = 1 << 31

# --------------------------------------------------------------------------------------------------
# Global batch and accumulation


def accumulation(cfg: DataConfig, world_size: int) -> tuple[int, int]:
    """``(micro_batch_size, accumulation steps)`` of a global ``cfg.batch_size`` over ``world_size`` processes."""
    g = cfg.batch_size
    if cfg.micro_batch_size is None:
        if g % world_size:
            raise ConfigError(f"data.batch_size: the global batch {g} does not split over {world_size} processes "
                              f"(set data.batch_size to a multiple of {world_size}, or data.micro_batch_size)")
        return g // world_size, 1
    m = cfg.micro_batch_size
    if g % (m * world_size):
        raise ConfigError(f"data.micro_batch_size: a global batch of {g} is not a whole number of micro-batches of "
                          f"{m} on {world_size} process{'es' if world_size > 1 else ''} ({g} / ({m} x {world_size}))")
    return m, g // (m * world_size)


def loss_scales(accum_steps: int, world_size: int) -> tuple[float, float]:
    """``(mean_scale, sum_scale)``: factors of mean- and sum-reduced loss terms of one micro-batch.

    DDP averages gradients over processes. A mean over the global batch is the average of the
    micro-batch means, hence ``1 / accum_steps`` (the process average does the rest); a sum over the
    global batch is the sum of the micro-batch sums, hence ``world_size`` (undoing the average).
    """
    return 1.0 / accum_steps, float(world_size)


# --------------------------------------------------------------------------------------------------
# Difficulty scores


def sample_clips(dataset: Any) -> tuple[list[str], dict[str, Any]]:
    """The clip name of every sample of a training dataset, and each clip's frame source (or None).

    Understands srkit's datasets and the trainer's wrappers (repeats, mixed sources). Synthetic samples
    are clips of their own named by their key (``synthetic/00003``).
    """
    from srkit.train.data import Mixed, Repeated, SyntheticSRDataset

    if isinstance(dataset, Repeated):
        names, sources = sample_clips(dataset.dataset)
        return names * dataset.times, sources
    if isinstance(dataset, Mixed):
        names, sources = [], {}
        for d in dataset.datasets:
            n, s = sample_clips(d)
            names += n
            sources.update(s)
        return names, sources
    if isinstance(dataset, SyntheticSRDataset):
        names = [f"synthetic/{i:05d}" for i in range(len(dataset))]
        return names, {n: ("synthetic", dataset, i) for i, n in enumerate(names)}
    inner = getattr(dataset, "_frames", dataset)  # ImageSRDataset wraps a one-frame VideoSRDataset
    clips, items = getattr(inner, "clips", None), getattr(inner, "items", None)
    if clips is None or items is None:
        raise ConfigError(f"data.train.curriculum: cannot tell the clips of a {type(dataset).__name__}")
    return [clips[ci].name for ci, _ in items], {c.name: c for c in clips}


def clip_motion_score(source: Any, cfg: CurriculumConfig) -> float:
    """Mean Farnebäck flow magnitude (pixels/frame) of a clip, as ``srkit data motion-rank`` scores it."""
    if isinstance(source, tuple) and source[0] == "synthetic":
        _, ds, index = source
        return float(ds.motion_magnitude(index))
    from srkit.data.motion import mean_flow_magnitude

    gt = source.gt
    n = len(gt) if cfg.motion_max_frames is None else min(len(gt), cfg.motion_max_frames)
    if n < 2:
        return 0.0  # a single image has no motion: the easiest
    mean, _ = mean_flow_magnitude((gt.read(i) for i in range(n)), max_side=cfg.motion_max_side)
    return float(mean)


def read_score_file(path: str | Path) -> dict[str, float]:
    """Clip scores from a JSON object ``{name: score}`` or a text file of ``name score`` lines.

    ``srkit data motion-rank --top 1 -o F`` output is read too (``name  # mean flow 1.234 px/frame ...``).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"data.train.curriculum.score_file: cannot read ({exc.strerror})", p) from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
            return {str(k): float(v) for k, v in data.items()}
        except (ValueError, AttributeError, TypeError):
            raise InputError("data.train.curriculum.score_file: expected a JSON object of clip name -> number", p) from None
    scores: dict[str, float] = {}
    for n, line in enumerate(text.splitlines(), 1):
        body, _, comment = line.partition("#")
        parts = body.split()
        if not parts:
            continue
        value: str | None = parts[1] if len(parts) > 1 else None
        if value is None and comment.strip().startswith("mean flow"):
            value = comment.split()[2]
        try:
            scores[parts[0]] = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InputError(f"data.train.curriculum.score_file: line {n}: expected 'name score', got {line.strip()!r}", p) from None
    return scores


def clip_scores(dataset: Any, cfg: CurriculumConfig, cache: Path | None = None,
                log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Score of every clip of ``dataset``: from the score file, or computed (and cached in ``cache``)."""
    names, sources = sample_clips(dataset)
    wanted = list(dict.fromkeys(names))
    if cfg.score == "file":
        scores = read_score_file(cfg.score_file)  # type: ignore[arg-type]
        missing = [n for n in wanted if n not in scores]
        if missing:
            raise ConfigError(f"data.train.curriculum.score_file: no score for {len(missing)} of the {len(wanted)} "
                              f"training clips (e.g. {', '.join(missing[:3])})", Path(cfg.score_file or ""))
        return {n: scores[n] for n in wanted}
    setting = {"max_frames": cfg.motion_max_frames, "max_side": cfg.motion_max_side}
    if cache is not None and cache.is_file():
        try:
            saved = json.loads(cache.read_text(encoding="utf-8"))
            if saved.get("settings") == setting and set(saved.get("scores", {})) >= set(wanted):
                return {n: float(saved["scores"][n]) for n in wanted}
        except (OSError, ValueError, AttributeError):
            pass  # recompute
    if log is not None and not all(isinstance(sources[n], tuple) for n in wanted):
        log(f"curriculum: scoring the motion of {len(wanted)} clips (mean optical flow; cached in {cache})")
    scores = {n: clip_motion_score(sources[n], cfg) for n in wanted}
    if cache is not None:
        from srkit.io.atomic import atomic_write_text

        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps({"settings": setting, "scores": scores}, indent=1) + "\n")
    return scores


def rank_samples(names: Sequence[str], scores: dict[str, float], easy: str = "low") -> list[int]:
    """Sample indices from easiest to hardest (ties keep the dataset order)."""
    sign = 1.0 if easy == "low" else -1.0
    return sorted(range(len(names)), key=lambda i: (sign * scores[names[i]], i))


# --------------------------------------------------------------------------------------------------
# The schedule and the sampler


def pool_fraction(cfg: CurriculumConfig, iteration: int) -> float:
    """Fraction of the ranked set available at ``iteration`` (1-based): ``start_fraction`` at 1, 1 at ``full_at_iter``."""
    if iteration >= cfg.full_at_iter:
        return 1.0
    t = (iteration - 1) / max(cfg.full_at_iter - 1, 1)
    if cfg.steps is not None:
        t = math.floor(t * cfg.steps) / cfg.steps
    return cfg.start_fraction + (1.0 - cfg.start_fraction) * t


def pool_size(cfg: CurriculumConfig, iteration: int, n: int) -> int:
    return min(n, max(1, math.ceil(pool_fraction(cfg, iteration) * n - 1e-9)))


class CurriculumBatchSampler(torch.utils.data.Sampler):
    """Micro-batches of ``(epoch, index)`` for this process, startable at any iteration.

    Before ``full_at_iter``: the global batch of iteration ``i`` is ``global_batch`` samples drawn without
    replacement (with wrap-around when the pool is smaller) from the easiest ``pool_size(i)`` samples of
    ``order`` by a generator seeded with ``(seed, i)``; process ``r`` takes every ``world_size``-th of them
    and splits its share into micro-batches. Afterwards, the plain :class:`ResumableBatchSampler` stream.
    """

    def __init__(self, order: Sequence[int], cfg: CurriculumConfig, *, global_batch: int, micro_batch: int, seed: int,
                 rank: int = 0, world_size: int = 1, start_iteration: int = 0):
        self.order = list(order)
        self.cfg = cfg
        self.global_batch, self.micro_batch = global_batch, micro_batch
        self.seed, self.rank, self.world = seed, rank, world_size
        self.start_iteration = start_iteration
        self.per_step = global_batch // world_size  # this process's samples per optimiser step
        self.accum = self.per_step // micro_batch

    def global_batch_at(self, iteration: int) -> list[tuple[int, int]]:
        """All processes' ``(epoch, index)`` of iteration ``iteration`` (1-based, before ``full_at_iter``)."""
        pool = pool_size(self.cfg, iteration, len(self.order))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0xC0DE, iteration]))
        picks: list[int] = []
        while len(picks) < self.global_batch:
            picks += rng.permutation(pool).tolist()
        epoch = CURRICULUM_EPOCH_BASE + iteration
        return [(epoch, self.order[p]) for p in picks[: self.global_batch]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        k = self.start_iteration  # completed iterations: the next batch is for iteration k + 1
        while k + 1 < self.cfg.full_at_iter:
            mine = self.global_batch_at(k + 1)[self.rank :: self.world]
            for j in range(self.accum):
                yield mine[j * self.micro_batch : (j + 1) * self.micro_batch]
            k += 1
        yield from ResumableBatchSampler(len(self.order), self.micro_batch, seed=self.seed, rank=self.rank,
                                         world_size=self.world, start_iteration=k * self.accum)

    def __len__(self) -> int:
        return 2**62
