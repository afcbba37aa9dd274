"""Unit tests of the training parts: schedules, stages, losses, EMA, sampler, checkpoint store, guard."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from srkit.errors import CheckpointError, ConfigError
from srkit.models.api import SROutput
from srkit.train.checkpointing import CheckpointStore, load_checkpoint
from srkit.train.config import GuardConfig, LossConfig, ScheduleConfig, StageConfig
from srkit.train.distributed import ResumableBatchSampler
from srkit.train.ema import ModelEMA
from srkit.train.guard import DivergenceError, DivergenceGuard
from srkit.train.losses import LossSet, charbonnier
from srkit.train.schedule import apply_stage, cosine_restart_factor, lr_factor, resolve_stages, stage_index

# ----------------------------------------------------------------------------------------- schedules


def _basicsr_cosine(it: int, base: float, periods: list[int], weights: list[float], eta_min: float) -> float:
    """The published formula, written out independently (cumulative periods, restart weights)."""
    cum = [sum(periods[: i + 1]) for i in range(len(periods))]
    idx = next(i for i, c in enumerate(cum) if it <= c)
    start = 0 if idx == 0 else cum[idx - 1]
    return eta_min + weights[idx] * 0.5 * (base - eta_min) * (1 + math.cos(math.pi * (it - start) / periods[idx]))


def test_cosine_restart_matches_basicsr_formula() -> None:
    periods, weights, base, eta = [50, 100, 150], [1.0, 0.5, 0.5], 4e-4, 1e-7
    cfg = ScheduleConfig(periods=periods, restart_weights=weights, eta_min=eta)
    for it in [1, 2, 25, 49, 50, 51, 100, 149, 150, 151, 299, 300]:
        got = base * lr_factor(cfg, it, base)
        assert got == pytest.approx(_basicsr_cosine(it, base, periods, weights, eta), rel=1e-12), it
    # Restart: LR falls to eta_min at the end of a period and jumps back up (to weight x base) right after.
    assert base * lr_factor(cfg, 50, base) == pytest.approx(eta)
    assert base * lr_factor(cfg, 51, base) == pytest.approx(eta + 0.5 * 0.5 * (base - eta) * (1 + math.cos(math.pi / 100)))
    # Past the last period the LR stays at the floor.
    assert cosine_restart_factor(1000, periods, weights, eta / base) == pytest.approx(eta / base)


def test_warmup_is_linear_then_schedule() -> None:
    cfg = ScheduleConfig(type="constant", warmup_iters=10)
    assert [lr_factor(cfg, i, 1.0) for i in (1, 5, 9, 10, 11)] == [0.1, 0.5, 0.9, 1.0, 1.0]
    ms = ScheduleConfig(type="multistep", milestones=[3, 5], gamma=0.1)
    assert [round(lr_factor(ms, i, 1.0), 6) for i in (1, 3, 4, 5, 6)] == [1.0, 1.0, 0.1, 0.1, 0.01]


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(2, 2)
        self.fusion = nn.Linear(2, 2)
        self.mb = nn.Parameter(torch.zeros(3))


def test_stage_follows_iteration_and_sets_requires_grad() -> None:
    stages = [StageConfig("fusion_only", 1, ["fusion.*"]), StageConfig("all", 5), StageConfig("bank", 8, ["mb"])]
    assert [stage_index(stages, i) for i in (1, 4, 5, 7, 8, 100)] == [0, 0, 1, 1, 2, 2]
    net = _Net()
    resolved = resolve_stages(stages, net)
    apply_stage(net, resolved[0])
    assert {n for n, p in net.named_parameters() if p.requires_grad} == {"fusion.weight", "fusion.bias"}
    apply_stage(net, resolved[2])
    assert {n for n, p in net.named_parameters() if p.requires_grad} == {"mb"}
    frozen = resolve_stages([StageConfig("x", 1, ["*"], frozen=["mb", "fusion.*"])], net)[0]
    assert frozen.trainable == {"body.weight", "body.bias"}
    with pytest.raises(ConfigError, match=r"train.stages\[0\].trainable: pattern 'nope.\*' matches no parameter"):
        resolve_stages([StageConfig("x", 1, ["body.*", "nope.*"])], net)


# -------------------------------------------------------------------------------------------- losses


def test_charbonnier_and_weighted_terms() -> None:
    g = torch.Generator().manual_seed(1)
    pred, gt = torch.rand(2, 3, 4, 4, generator=g), torch.rand(2, 3, 4, 4, generator=g)
    ref = torch.sqrt((pred - gt) ** 2 + 1e-6)
    assert charbonnier(pred, gt, 1e-6, "mean") == pytest.approx(float(ref.mean()), rel=1e-6)
    assert charbonnier(pred, gt, 1e-6, "sum") == pytest.approx(float(ref.sum()), rel=1e-6)
    s1, s2 = torch.rand(2, 3, 4, 4, generator=g), torch.rand(2, 3, 4, 4, generator=g)
    out = SROutput(pred, (s1, s2, pred), {"quantization": torch.tensor(0.25)})
    losses = LossSet([
        LossConfig("multi", "l1", 2.0, target="stages", stage_weights=[0.5, 0.0, 1.0]),
        LossConfig("mse", "mse", 0.5),
        LossConfig("quant", "aux", 3.0, key="quantization"),
    ])
    total, parts = losses(out, gt)
    l1 = lambda a: float((a - gt).abs().mean())  # noqa: E731
    expect_multi = 2.0 * (0.5 * l1(s1) + 1.0 * l1(pred))
    expect_mse = 0.5 * float(((pred - gt) ** 2).mean())
    assert parts["multi"] == pytest.approx(expect_multi, rel=1e-6)
    assert parts["mse"] == pytest.approx(expect_mse, rel=1e-6)
    assert parts["quant"] == pytest.approx(0.75)
    assert float(total) == pytest.approx(expect_multi + expect_mse + 0.75, rel=1e-6)
    # Stage weights: a term at weight 0 is not even computed; only the aux loss trains.
    total, parts = losses(out, gt, {"multi": 0.0, "mse": 0.0, "quant": 1.0})
    assert set(parts) == {"quant"} and float(total) == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="returned no 'quantization' loss"):
        losses(SROutput(pred, (s1, s2, pred), {}), gt)
    with pytest.raises(ConfigError, match="stage_weights has 3 values but the model returns 1"):
        losses(SROutput(pred, (pred,), {"quantization": torch.tensor(0.0)}), gt)


# ----------------------------------------------------------------------------------------------- EMA


def test_ema_update_rule_with_decay_warm_up() -> None:
    net = nn.Linear(3, 1)
    ema = ModelEMA(net, decay=0.9, start_iter=1)
    w0 = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, 1)  # before/at start_iter: copy
    assert torch.equal(ema.module.weight, net.weight)
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, 2)  # 1 step after start: decay warms up as (1 + k) / (10 + k) = 2/11
    d = 2 / 11
    expected = d * (w0 + 1) + (1 - d) * (w0 + 2)
    assert torch.allclose(ema.module.weight, expected, atol=1e-6)
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, 200)  # far past the warm-up: the configured decay
    assert torch.allclose(ema.module.weight, 0.9 * expected + 0.1 * (w0 + 3), atol=1e-6)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_of_a_short_run_follows_the_recent_weights() -> None:
    """decay 0.999 over 300 steps of a weight moving 0 -> 1: without the warm-up the EMA would still be
    at 1 - (1 - 0.999**300) / (300 * 0.001) ~ 0.14 of the way; with it, near the recent weights."""
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.zero_()
    ema = ModelEMA(net, decay=0.999)
    for i in range(1, 301):
        with torch.no_grad():
            net.weight.fill_(i / 300)
        ema.update(net, i)
    assert 0.85 < float(ema.module.weight) < 1.0


# ------------------------------------------------------------------------------------------- sampler


def _flatten(sampler: ResumableBatchSampler, n_batches: int) -> list[list[tuple[int, int]]]:
    it = iter(sampler)
    return [next(it) for _ in range(n_batches)]


def test_sampler_resumes_mid_epoch_exactly() -> None:
    full = _flatten(ResumableBatchSampler(10, 3, seed=5), 12)
    for start in (0, 1, 3, 4, 7):
        resumed = _flatten(ResumableBatchSampler(10, 3, seed=5, start_iteration=start), 12 - start)
        assert resumed == full[start:], start
    # Each epoch is a permutation of the dataset; batches cross epoch boundaries without dropping items.
    flat = [x for b in full for x in b]
    assert sorted(i for e, i in flat if e == 0) == list(range(10))
    assert flat[10][0] == 1 and flat[9][0] == 0
    assert [i for _, i in flat[:10]] != [i for _, i in flat[10:20]]  # reshuffled per epoch


def test_sampler_shards_are_disjoint_and_cover() -> None:
    a = ResumableBatchSampler(9, 2, seed=1, rank=0, world_size=2)
    b = ResumableBatchSampler(9, 2, seed=1, rank=1, world_size=2)
    ea, eb = a.epoch_indices(3), b.epoch_indices(3)
    assert len(ea) == len(eb) == 5
    assert set(ea) | set(eb) == set(range(9))
    assert len(set(ea) & set(eb)) <= 1  # only the wrap-around padding item may repeat


# ---------------------------------------------------------------------------------------- checkpoints


def _state(v: float) -> dict:
    return {"params": {"w": torch.full((4,), v)}, "rng": [{"torch": torch.get_rng_state()}]}


def test_store_keeps_last_k_and_best(tmp_path) -> None:
    store = CheckpointStore(tmp_path, keep_last=2, log=lambda m: None)
    for it in (1, 2, 3):
        store.save(_state(it), it, best=(it == 2))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best.json", "best.pt", "iter_00000002.json", "iter_00000002.pt",
                     "iter_00000003.json", "iter_00000003.pt"]
    assert float(load_checkpoint(tmp_path / "best.pt")["params"]["w"][0]) == 2.0
    # Plain tensors and dicts: readable with weights_only=True.
    assert torch.load(tmp_path / "iter_00000003.pt", weights_only=True)["iteration"] == 3
    assert not list(tmp_path.glob(".srkit-tmp-*"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "no_manifest"])
def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, damage) -> None:
    messages: list[str] = []
    store = CheckpointStore(tmp_path, keep_last=3, log=messages.append)
    store.save(_state(1), 1)
    latest = store.save(_state(2), 2)
    data = bytearray(latest.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        latest.write_bytes(bytes(data))
    elif damage == "truncate":
        latest.write_bytes(bytes(data[: len(data) // 3]))
    else:
        latest.with_suffix(".json").unlink()
    info = store.latest_valid()
    assert info is not None and info.iteration == 1
    assert len(messages) == 1 and "iter_00000002.pt" in messages[0]
    expected = {"flip": "checksum", "truncate": "truncated", "no_manifest": "no manifest"}[damage]
    assert expected in messages[0]
    if damage != "no_manifest":
        with pytest.raises(CheckpointError, match="checkpoint is not valid"):
            load_checkpoint(latest)


def test_failed_write_keeps_previous_checkpoints(tmp_path, monkeypatch) -> None:
    from srkit.errors import OutputError

    store = CheckpointStore(tmp_path, keep_last=3, log=lambda m: None)
    store.save(_state(1), 1)

    def full_disk(obj, f, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OutputError, match="cannot write checkpoint .No space left on device.; the previous ones are intact"):
        store.save(_state(2), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_00000001.json", "iter_00000001.pt"]
    assert store.latest_valid().iteration == 1


def test_load_rejects_foreign_files(tmp_path) -> None:
    p = tmp_path / "x.pt"
    torch.save({"params": {}}, p)
    with pytest.raises(CheckpointError, match="not an srkit training checkpoint"):
        load_checkpoint(p)
    p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(p)


# --------------------------------------------------------------------------------------------- guard


def test_guard_verdicts_and_rollback_limit() -> None:
    g = DivergenceGuard(GuardConfig(spike_factor=5.0, window=10, min_history=3, offset_threshold=50.0,
                                    lr_factor=0.5, max_rollbacks=2))
    assert g.check(float("nan")) == "loss is nan"
    assert "gradient norm" in g.check(1.0, grad_norm=float("inf"))
    assert "offsets exploded" in g.check(1.0, offset_mean=60.0)
    assert g.check(100.0) is None  # no history yet: spikes are not judged
    for v in (1.0, 1.2, 0.8):
        g.accept(v)
    assert g.check(4.9) is None and "loss spike" in g.check(5.1)
    assert "rollback 1/2" in g.register_rollback("x", 7) and g.lr_scale == 0.5
    g.register_rollback("x", 8)
    assert g.lr_scale == 0.25
    with pytest.raises(DivergenceError, match="after 2 rollbacks"):
        g.register_rollback("loss is nan", 9)
    assert json.dumps(g.state_dict())  # plain data


def test_adamw_groups_equal_a_hand_built_adamw() -> None:
    """AdamW with per-group LR multiplier and weight decay steps exactly like torch.optim.AdamW built by hand."""
    from srkit.train.config import config_from_data
    from srkit.train.trainer import build_optimizer

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Conv2d(3, 2, 1))
    ref = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Conv2d(3, 2, 1))
    ref.load_state_dict(net.state_dict())
    train_cfg = config_from_data({"train": {"optim": {
        "type": "adamw", "lr": 1e-2, "betas": [0.8, 0.9], "weight_decay": 0.1,
        "param_groups": [{"pattern": "0.*", "lr_mul": 0.25, "weight_decay": 0.0}]}}}).train
    opt = build_optimizer(net, train_cfg)
    assert isinstance(opt, torch.optim.AdamW)
    ref_opt = torch.optim.AdamW([{"params": list(ref[0].parameters()), "lr": 2.5e-3, "weight_decay": 0.0},
                                 {"params": list(ref[1].parameters())}], lr=1e-2, betas=(0.8, 0.9), weight_decay=0.1)
    x = torch.randn(2, 2, 5, 5)
    for _ in range(3):
        for model, o in ((net, opt), (ref, ref_opt)):
            o.zero_grad()
            model(x).square().mean().backward()
            o.step()
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)
