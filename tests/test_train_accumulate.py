"""Global batch + gradient accumulation, and curriculum learning (srkit.train.curriculum), in-process."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_overrides

from srkit.errors import ConfigError
from srkit.train.config import CurriculumConfig, DataConfig, config_from_data
from srkit.train.curriculum import (
    CurriculumBatchSampler,
    accumulation,
    pool_fraction,
    pool_size,
    rank_samples,
    read_score_file,
)
from srkit.train.distributed import ResumableBatchSampler
from srkit.train.trainer import Trainer

TINY_EDVR = tiny_overrides("edvr", num_frame=3, deformable_groups=1)


def _cfg(tmp_path: Path, name: str, *, batch: int, micro: int | None, reduction: str = "mean", length: int = 8,
         total: int = 1, optim: dict | None = None, **data_extra: Any):
    return config_from_data({
        "name": name, "output_dir": str(tmp_path), "seed": 3, "threads": 1,
        "model": {"name": "edvr-m", "overrides": dict(TINY_EDVR)},
        "data": {"train": {"kind": "synthetic", "gt_size": 32, "length": length, **data_extra},
                 "batch_size": batch, "micro_batch_size": micro, "num_workers": 0},
        "train": {"total_iters": total, "optim": optim or {"lr": 1e-3}, "schedule": {"type": "constant"},
                  "losses": [{"name": "pixel", "type": "charbonnier", "reduction": reduction, "eps": 1e-6}],
                  "ema": {"enabled": True, "decay": 0.5}},
        "checkpoint": {"every": 100},
        "log": {"every": 1, "tensorboard": False, "progress": "off"},
    })


def _one_step(cfg) -> Trainer:
    tr = Trainer(cfg)
    try:
        tr.fit()
    finally:
        tr.close()
    return tr


# ------------------------------------------------------------------------------------- accumulation


def test_accumulation_splits_the_global_batch() -> None:
    assert accumulation(DataConfig(batch_size=32, micro_batch_size=4), 8) == (4, 1)
    assert accumulation(DataConfig(batch_size=32, micro_batch_size=4), 1) == (4, 8)
    assert accumulation(DataConfig(batch_size=32, micro_batch_size=4), 2) == (4, 4)
    assert accumulation(DataConfig(batch_size=32), 8) == (4, 1)  # no micro-batch size: the share of each process
    assert accumulation(DataConfig(batch_size=4), 1) == (4, 1)
    with pytest.raises(ConfigError, match=r"data.micro_batch_size: a global batch of 32 is not a whole number .* \(32 / \(4 x 3\)\)"):
        accumulation(DataConfig(batch_size=32, micro_batch_size=4), 3)
    with pytest.raises(ConfigError, match="data.batch_size: the global batch 30 does not split over 8 processes"):
        accumulation(DataConfig(batch_size=30), 8)
    with pytest.raises(ConfigError, match="data.micro_batch_size: 5 does not divide data.batch_size 32"):
        config_from_data({"data": {"batch_size": 32, "micro_batch_size": 5}})


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_accumulated_micro_batches_equal_one_big_batch(tmp_path, reduction) -> None:
    """One optimiser step on 4 samples as one batch == as 4 accumulated micro-batches of 1 (and 2 of 2).

    Adam's first step is lr * g / (|g| + eps): with the usual tiny eps that is sign(g), blind to the
    gradient's scale. Here eps = 1 makes the step proportional to the gradient (lr * g / (|g| + 1)), and
    the gradient itself is also compared through Adam's moments (exp_avg = (1 - beta1) g,
    exp_avg_sq = (1 - beta2) g^2): a wrong loss scale shows in both."""
    optim = {"lr": 1.0, "eps": 1.0 if reduction == "mean" else 1e4}  # eps >> |g| (a sum's g is ~12288x a mean's)
    ref = _one_step(_cfg(tmp_path, f"big-{reduction}", batch=4, micro=None, reduction=reduction, optim=optim))
    assert ref.accum_steps == 1
    init = torch.load(tmp_path / f"big-{reduction}" / "checkpoints" / "iter_00000000.pt", weights_only=True)["params"]
    for micro in (1, 2):
        acc = _one_step(_cfg(tmp_path, f"acc{micro}-{reduction}", batch=4, micro=micro, reduction=reduction, optim=optim))
        assert acc.accum_steps == 4 // micro
        moved = 0
        for (name, p), (_, q) in zip(ref.model.named_parameters(), acc.model.named_parameters(), strict=True):
            # The steps (about 1e-5 here) compared to a few float32 ulps of the weights (about 1e-8).
            step_ref, step_acc = p.detach() - init[name], q.detach() - init[name]
            moved += int(step_ref.abs().max() > 1e-6)
            torch.testing.assert_close(step_acc, step_ref, rtol=1e-3, atol=5e-8, msg=name)
            sa, sb = ref.optimizer.state[p], acc.optimizer.state[q]
            scale = float(sa["exp_avg"].abs().max())
            torch.testing.assert_close(sb["exp_avg"], sa["exp_avg"], rtol=1e-4, atol=1e-5 * scale + 1e-12, msg=name)
            torch.testing.assert_close(sb["exp_avg_sq"], sa["exp_avg_sq"], rtol=1e-3,
                                       atol=1e-8 * scale**2 + 1e-16, msg=name)
        for (name, a), (_, b) in zip(ref.ema.state_dict().items(), acc.ema.state_dict().items(), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
        assert moved > 20
        # The logged loss is the global batch's loss (mean of the micro-means / sum of the micro-sums).
        rows = (tmp_path / f"acc{micro}-{reduction}" / "scalars.csv").read_text().splitlines()
        ref_rows = (tmp_path / f"big-{reduction}" / "scalars.csv").read_text().splitlines()
        loss = [float(r.split(",")[-1]) for r in rows if ",loss," in r]
        ref_loss = [float(r.split(",")[-1]) for r in ref_rows if ",loss," in r]
        assert loss == pytest.approx(ref_loss, rel=1e-5)
    # Negative control: without the micro-batch scaling (each micro-mean counted whole) the step differs.
    if reduction == "mean":
        wrong = Trainer(_cfg(tmp_path, "unscaled", batch=4, micro=1, optim=optim))
        wrong.loss_scales = (1.0, 1.0)
        wrong.fit()
        wrong.close()
        p, q = next(ref.model.parameters()), next(wrong.model.parameters())
        assert not torch.allclose(ref.optimizer.state[p]["exp_avg"], wrong.optimizer.state[q]["exp_avg"], rtol=0.5)


def test_accumulated_run_counts_iterations_in_optimizer_steps(tmp_path) -> None:
    tr = _one_step(_cfg(tmp_path, "steps", batch=4, micro=1, total=3))
    state = torch.load(sorted((tmp_path / "steps" / "checkpoints").glob("iter_*.pt"))[-1], weights_only=True)
    assert tr.iteration == state["iteration"] == 3
    assert state["data_position"]["accumulation"] == 4 and state["data_position"]["micro_batch_size"] == 1
    # 3 steps x 4 samples = 12 stream items of an 8-sample set: epoch 1, offset 4
    assert (state["data_position"]["epoch"], state["data_position"]["offset"]) == (1, 4)
    assert all(int(v["step"]) == 3 for v in tr.optimizer.state.values())  # Adam stepped once per iteration
    rows = [r for r in (tmp_path / "steps" / "scalars.csv").read_text().splitlines() if ",loss," in r]
    assert len(rows) == 3


def _items(batches) -> list[tuple[int, int]]:
    return [x for b in batches for x in b]


@pytest.mark.parametrize("world", [2, 4])
def test_global_batch_is_the_same_samples_on_any_number_of_processes(world) -> None:
    """Per process: micro-batches of m, accumulated A = G / (m W) times. Over all processes each step
    holds the same samples (with the same epoch, hence the same augmentation) as on one process."""
    n, g, m = 16, 8, 2
    one = ResumableBatchSampler(n, m, seed=4)
    single = list(itertools.islice(iter(one), 6 * (g // m)))
    acc = g // (m * world)
    per_rank = [list(itertools.islice(iter(ResumableBatchSampler(n, m, seed=4, rank=r, world_size=world)), 6 * acc))
                for r in range(world)]
    for step in range(6):
        want = sorted(_items(single[step * (g // m):(step + 1) * (g // m)]))
        got = sorted(x for r in range(world) for x in _items(per_rank[r][step * acc:(step + 1) * acc]))
        assert got == want, step


# --------------------------------------------------------------------------------------- curriculum


CUR = CurriculumConfig(score="file", score_file="x", start_fraction=0.25, full_at_iter=5)


def test_pool_grows_linearly_or_in_steps() -> None:
    assert [pool_fraction(CUR, i) for i in (1, 2, 3, 4, 5, 9)] == [0.25, 0.4375, 0.625, 0.8125, 1.0, 1.0]
    stepped = CurriculumConfig(start_fraction=0.2, full_at_iter=11, steps=2)
    assert [pool_fraction(stepped, i) for i in (1, 5, 6, 10, 11)] == pytest.approx([0.2, 0.2, 0.6, 0.6, 1.0])
    assert [pool_size(CUR, i, 20) for i in (1, 2, 5)] == [5, 9, 20]
    assert pool_size(CurriculumConfig(start_fraction=0.01, full_at_iter=3), 1, 20) == 1  # never empty


def _curriculum(start: int = 0, rank: int = 0, world: int = 1, micro: int = 2, cfg: CurriculumConfig = CUR):
    order = list(range(19, -1, -1))  # sample 19 is the easiest, 0 the hardest
    return CurriculumBatchSampler(order, cfg, global_batch=8, micro_batch=micro, seed=7, rank=rank,
                                  world_size=world, start_iteration=start)


def test_curriculum_sampler_draws_from_the_easiest_fraction_then_everything() -> None:
    it = iter(_curriculum())
    steps = [_items(next(it) for _ in range(4)) for _ in range(12)]  # 4 micro-batches of 2 per iteration
    easiest = lambda k: set(range(19, 19 - k, -1))
    # Iteration 1: only the easiest 25% (5 samples); 8 draws from 5 wrap around: every one of them appears.
    assert {i for _, i in steps[0]} == easiest(5)
    for it_no in range(1, 5):  # iterations 1..4: inside the pool of that iteration
        assert {i for _, i in steps[it_no - 1]} <= easiest(pool_size(CUR, it_no, 20)), it_no
    assert len({i for _, i in steps[3]}) == 8  # a pool of 17: 8 distinct samples (drawn without replacement)
    # From full_at_iter (5) on: the plain epoch stream, exactly what a run without curriculum reads there.
    plain = ResumableBatchSampler(20, 2, seed=7, start_iteration=4 * 4)
    assert steps[4:] == [_items(b) for b in itertools.islice(
        (list(itertools.islice(p, 4)) for p in itertools.repeat(iter(plain))), 8)]
    assert set().union(*({i for _, i in s} for s in steps[4:])) - easiest(15)  # hard samples are drawn now
    # Curriculum draws carry their own epoch (fresh augmentation each time a sample is drawn).
    assert len({e for e, _ in steps[0]}) == 1 and steps[0][0][0] != steps[1][0][0]


def test_curriculum_sampler_resumes_and_shards_exactly() -> None:
    full = list(itertools.islice(iter(_curriculum()), 40))
    for start in (1, 3, 4, 6):
        assert list(itertools.islice(iter(_curriculum(start)), 40 - 4 * start)) == full[4 * start:], start
    # Two processes with micro-batches of 2 (2 each per step): together the same global batch per step.
    r0 = list(itertools.islice(iter(_curriculum(rank=0, world=2)), 20))
    r1 = list(itertools.islice(iter(_curriculum(rank=1, world=2)), 20))
    for step in range(10):
        both = sorted(_items(r0[2 * step:2 * step + 2] + r1[2 * step:2 * step + 2]))
        assert both == sorted(_items(full[4 * step:4 * step + 4])), step


def test_score_files_and_ranking(tmp_path) -> None:
    ranked = tmp_path / "motion.txt"  # srkit data motion-rank --top 1 output
    ranked.write_text("# srkit data motion-rank: 3 of 3 clips\nfast  # mean flow 9.500 px/frame over 6 pairs\n"
                      "mid  # mean flow 2.000 px/frame over 6 pairs\nstill  # mean flow 0.100 px/frame over 6 pairs\n")
    assert read_score_file(ranked) == {"fast": 9.5, "mid": 2.0, "still": 0.1}
    plain = tmp_path / "scores.txt"
    plain.write_text("a 3\nb 1.5  # comment\n\n")
    assert read_score_file(plain) == {"a": 3.0, "b": 1.5}
    js = tmp_path / "scores.json"
    js.write_text(json.dumps({"a": 1, "b": 0}))
    assert read_score_file(js) == {"a": 1.0, "b": 0.0}
    names = ["fast", "still", "mid", "still"]
    scores = {"fast": 9.5, "mid": 2.0, "still": 0.1}
    assert rank_samples(names, scores, "low") == [1, 3, 2, 0]
    assert rank_samples(names, scores, "high") == [0, 2, 1, 3]


def _cur_cfg(tmp_path: Path, name: str, **cur: Any):
    return _cfg(tmp_path, name, batch=4, micro=2, length=12, total=2,
                curriculum={"start_fraction": 0.25, "full_at_iter": 3, **cur})


def test_trainer_curriculum_starts_on_the_least_motion(tmp_path) -> None:
    cfg = _cur_cfg(tmp_path, "cur")
    tr = _one_step(cfg)
    ds = tr.train_set
    motion = [ds.motion_magnitude(i) for i in range(len(ds))]
    assert len(set(motion)) > 1  # the synthetic clips do differ in motion
    cached = json.loads((tmp_path / "cur" / "curriculum_scores.json").read_text())["scores"]
    assert cached == {f"synthetic/{i:05d}": motion[i] for i in range(12)}
    easiest = set(sorted(range(12), key=lambda i: (motion[i], i))[:3])  # 25% of 12
    first = _items(itertools.islice(iter(tr._batch_sampler(0)), 2))  # iteration 1: 2 micro-batches of 2
    assert len(first) == 4 and {i for _, i in first} == easiest
    # A score file works the same way; 'easy: high' turns the ranking round.
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({f"synthetic/{i:05d}": float(i) for i in range(12)}))
    tr2 = Trainer(_cur_cfg(tmp_path, "cur-file", score="file", score_file=str(scores), easy="high"))
    tr2.close()
    assert {i for _, i in _items(itertools.islice(iter(tr2._batch_sampler(0)), 2))} == {9, 10, 11}
    with pytest.raises(ConfigError, match="no score for 12 of the 12 training clips"):
        scores.write_text("{}")
        Trainer(_cur_cfg(tmp_path, "cur-missing", score="file", score_file=str(scores)))
    with pytest.raises(ConfigError, match="data.train.curriculum.score_file: score: file needs a score file"):
        _cur_cfg(tmp_path, "x", score="file")


def test_curriculum_run_resumes_exactly(tmp_path) -> None:
    """In-process resume across the end of the curriculum (the SIGKILL version is in test_train_process)."""
    from srkit.train.trainer import train

    straight = _cfg(tmp_path, "straight", batch=4, micro=2, length=12, total=4,
                    curriculum={"start_fraction": 0.25, "full_at_iter": 3})
    train(straight)
    first = _cfg(tmp_path, "cut", batch=4, micro=2, length=12, total=2, curriculum={"start_fraction": 0.25, "full_at_iter": 3})
    train(first)
    again = _cfg(tmp_path, "cut", batch=4, micro=2, length=12, total=4, curriculum={"start_fraction": 0.25, "full_at_iter": 3})
    again.train.total_iters = 4
    train(again, resume="auto")
    a = torch.load(sorted((tmp_path / "straight" / "checkpoints").glob("iter_*.pt"))[-1], weights_only=True)
    b = torch.load(sorted((tmp_path / "cut" / "checkpoints").glob("iter_*.pt"))[-1], weights_only=True)
    assert a["iteration"] == b["iteration"] == 4
    for key in ("params", "params_ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert math.isfinite(float(next(iter(a["params"].values())).sum()))
