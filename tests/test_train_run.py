"""End-to-end trainer behaviour in-process on a tiny EDVR and synthetic data (fast)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_overrides

from srkit.errors import CheckpointError, ConfigError
from srkit.models import create_model
from srkit.train.config import config_from_data
from srkit.train.guard import DivergenceError
from srkit.train.trainer import Trainer, train

# The suite's tiny models (conftest.TINY_OVERRIDES), narrowed further for training: 3 frames, 1 deformable group.
TINY_EDVR = tiny_overrides("edvr", num_frame=3, deformable_groups=1)
TINY_MANA = tiny_overrides("mana", num_feat=8, num_frame=3, memory_size=8)


def tiny(tmp_path: Path, name: str = "run", **sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name, "output_dir": str(tmp_path), "seed": 3, "threads": 1,
        "model": {"name": "edvr-m", "overrides": dict(TINY_EDVR)},
        "data": {"train": {"kind": "synthetic", "gt_size": 32, "length": 6}, "batch_size": 2, "num_workers": 0},
        "train": {
            "total_iters": 6,
            "optim": {"lr": 1e-3, "param_groups": [{"pattern": "*dcn*", "lr_mul": 0.5}]},
            "schedule": {"periods": [3, 3], "restart_weights": [1, 0.5], "warmup_iters": 2},
            "stages": [{"name": "tsa_only", "start_iter": 1, "trainable": ["fusion.*"]}, {"name": "all", "start_iter": 4}],
            "ema": {"enabled": True, "decay": 0.9},
        },
        "checkpoint": {"every": 2, "keep_last": 5},
        "log": {"every": 1, "tensorboard": False, "progress": "off"},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def _rows(run: Path) -> list[list[str]]:
    with open(run / "scalars.csv", newline="") as fh:
        return list(csv.reader(fh))[1:]


def _final(run: Path) -> dict[str, Any]:
    ckpts = sorted((run / "checkpoints").glob("iter_*.pt"))
    return torch.load(ckpts[-1], weights_only=True)


def test_loss_decreases_on_tiny_overfit(tmp_path) -> None:
    cfg = config_from_data(tiny(tmp_path, train={
        "total_iters": 40, "optim": {"lr": 4e-3}, "schedule": {"type": "constant"}, "stages": [{}],
        "ema": {"enabled": False}}, data={"train": {"kind": "synthetic", "gt_size": 32, "length": 2, "use_flip": False,
                                                    "use_rot": False}, "batch_size": 2,
                                          "num_workers": 0}, checkpoint={"every": 100}))
    train(cfg)
    losses = [float(r[2]) for r in _rows(tmp_path / "run") if r[1] == "loss"]
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)


@pytest.mark.parametrize("cut", [2, 5])
def test_resume_equals_uninterrupted_across_stage_change(tmp_path, cut) -> None:
    # Stage 1 starts at 4 with fresh optimiser moments (as MANA's stages do): a resume inside it (cut 5)
    # must not reset them again.
    sets = ["train.stages.1.reset_optimizer=true"]
    train(config_from_data(tiny(tmp_path, "full"), sets))
    # Interrupted at `cut` (2: inside stage 0 and the warm-up; 5: inside stage 1), resumed to 6.
    train(config_from_data(tiny(tmp_path, "cut"), [*sets, f"train.total_iters={cut}"]))
    tr = Trainer(config_from_data(tiny(tmp_path, "cut"), sets), resume="auto")
    assert tr.iteration == cut
    tr.fit()
    a, b = _final(tmp_path / "full"), _final(tmp_path / "cut")
    assert a["iteration"] == b["iteration"] == 6 and b["stage"] == 1
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
        assert torch.equal(a["params_ema"][k], b["params_ema"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    # The stage is re-derived from the iteration after the resume.
    expected = ["1", "3", "4"] if cut == 2 else ["1", "4", "6"]
    assert [r[0] for r in _rows(tmp_path / "cut") if r[1] == "event/stage"] == expected
    lrs = {int(r[0]): float(r[2]) for r in _rows(tmp_path / "cut") if r[1] == "lr"}
    assert lrs[1] == pytest.approx(0.5e-3) and sorted(lrs) == [1, 2, 3, 4, 5, 6]


def test_channels_last_training_resumes_exactly_and_saves_plain_weights(tmp_path) -> None:
    sets = ["memory_format=channels_last"]
    train(config_from_data(tiny(tmp_path, "full"), sets))
    train(config_from_data(tiny(tmp_path, "cut"), [*sets, "train.total_iters=3"]))
    tr = Trainer(config_from_data(tiny(tmp_path, "cut"), sets), resume="auto")
    conv = tr.model.conv_first.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert tr.ema.module.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    tr.fit()
    a, b = _final(tmp_path / "full"), _final(tmp_path / "cut")
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
    # The exported weights load into a plain (NCHW) model and give its output.
    model = create_model("edvr-m", **TINY_EDVR)
    model.load_state_dict(a["params"])
    assert torch.isfinite(model(torch.rand(1, 3, 3, 16, 16))).all()
    plain = Trainer(config_from_data(tiny(tmp_path, "plain")))
    assert plain.model.conv_first.weight.is_contiguous()
    plain.close()


def test_resume_with_a_new_lr_uses_it(tmp_path) -> None:
    train(config_from_data(tiny(tmp_path), ["train.total_iters=2"]))
    tr = Trainer(config_from_data(tiny(tmp_path), ["train.optim.lr=1e-4"]), resume="auto")
    assert [g["base_lr"] for g in tr.optimizer.param_groups] == pytest.approx([1e-4, 0.5e-4])
    assert tr.optimizer.state  # the Adam moments were kept
    assert any("optimiser settings differ from the checkpoint's; using the config's" in m for m in tr._pending_log)
    tr.close()


def test_fp16_on_cpu_trains_with_loss_scaling_and_resumes_the_scale(tmp_path) -> None:
    cfg = config_from_data(tiny(tmp_path, precision="fp16", train={"total_iters": 2}, checkpoint={"every": 1}))
    tr = Trainer(cfg)
    assert tr.scaler is not None and tr.scaler.get_scale() == 65536.0  # GradScaler's initial scale
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.fit()
    tr.close()
    after = tr.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # steps were taken, not all skipped
    saved = _final(tmp_path / "run")["scaler"]
    assert saved and saved["scale"] == tr.scaler.get_scale()
    resumed = Trainer(config_from_data(tiny(tmp_path, precision="fp16", train={"total_iters": 3})), resume="auto")
    assert resumed.scaler.get_scale() == tr.scaler.get_scale()
    resumed.close()


def test_stage_freezes_everything_but_fusion(tmp_path) -> None:
    tr = Trainer(config_from_data(tiny(tmp_path), ["train.total_iters=3"]))
    # dcn_lr_mul: parameters whose name matches *dcn* run at half the scheduled LR.
    lr = tr._set_lr(5)
    groups = {g["name"]: g for g in tr.optimizer.param_groups}
    assert groups["default"]["lr"] == pytest.approx(lr) and groups["*dcn*"]["lr"] == pytest.approx(0.5 * lr)
    dcn = {id(p) for n, p in tr.model.named_parameters() if "dcn" in n}
    assert dcn and {id(p) for p in groups["*dcn*"]["params"]} == dcn
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.fit()
    after = tr.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("fusion.") for k in changed)


def test_nan_injection_rolls_back_and_lowers_lr(tmp_path) -> None:
    cfg = config_from_data(tiny(tmp_path, debug={"inject_nan_at_iter": 3}))
    summary = train(cfg)
    assert summary["iteration"] == 6 and summary["rollbacks"] == 1 and summary["lr_scale"] == 0.5
    run = tmp_path / "run"
    log = (run / "train.log").read_text()
    assert log.splitlines()[0].endswith(f"run folder {run.absolute()}")  # said first (issue 13, item 19)
    assert "divergence at iteration 3: loss is nan; rollback 1/3, LR scale now 0.5" in log
    assert "restored iter_00000002.pt (iteration 2)" in log
    rows = _rows(run)
    assert ["3", "event/rollback"] == [r for r in rows if r[1] == "event/rollback"][0][:2]
    # LR after the rollback is half the scheduled one (iteration 3 = end of period 1: eta_min scaled).
    lr5 = [float(r[2]) for r in rows if r[1] == "lr" and r[0] == "5"][-1]
    full = train(config_from_data(tiny(tmp_path, "ref")))
    assert full["rollbacks"] == 0
    lr5_ref = [float(r[2]) for r in _rows(tmp_path / "ref") if r[1] == "lr" and r[0] == "5"][-1]
    assert lr5 == pytest.approx(0.5 * lr5_ref)
    assert all(torch.isfinite(v).all() for v in _final(run)["params"].values())


def test_loss_spike_rolls_back_and_lowers_lr(tmp_path) -> None:
    """A loss 1000x the running median (injected once at iteration 5) is rolled back like a NaN."""
    one_stage = ["train.stages=[{}]"]  # a stage change clears the loss history: keep 4 losses before the spike
    cfg = config_from_data(tiny(tmp_path, guard={"min_history": 3, "spike_factor": 10.0},
                                debug={"inject_spike_at_iter": 5}), one_stage)
    summary = train(cfg)
    # One rollback only: the healthy steps (and the repeated iteration 5) never looked like a spike.
    assert summary["iteration"] == 6 and summary["rollbacks"] == 1 and summary["lr_scale"] == 0.5
    log = (tmp_path / "run" / "train.log").read_text()
    assert "divergence at iteration 5: loss spike (" in log and "> 10 x running median" in log
    assert "restored iter_00000004.pt (iteration 4)" in log
    rows = _rows(tmp_path / "run")
    assert [r[0] for r in rows if r[1] == "event/rollback"] == ["5"]
    # The spiked step was never applied: iteration 5's logged loss is the repeated, healthy one.
    losses = {r[0]: float(r[2]) for r in rows if r[1] == "loss"}
    assert losses["5"] < 10 * sorted(losses[k] for k in "234")[1]


def test_divergence_stops_after_max_rollbacks(tmp_path) -> None:
    cfg = config_from_data(tiny(tmp_path, guard={"max_rollbacks": 0}, debug={"inject_nan_at_iter": 2}))
    with pytest.raises(DivergenceError, match="training diverged at iteration 2 .loss is nan. after 0 rollbacks"):
        train(cfg)


def test_resume_skips_corrupt_latest_checkpoint(tmp_path, capsys) -> None:
    train(config_from_data(tiny(tmp_path), ["train.total_iters=4"]))
    latest = tmp_path / "run" / "checkpoints" / "iter_00000004.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    tr = Trainer(config_from_data(tiny(tmp_path)), resume="auto")
    assert tr.iteration == 2
    tr.fit()
    err = capsys.readouterr().err
    assert "skipping checkpoint" in err and "iter_00000004.pt" in err and "truncated" in err
    assert "resumed from" in err and "iter_00000002.pt at iteration 2" in err


def test_fresh_run_refuses_existing_checkpoints(tmp_path) -> None:
    train(config_from_data(tiny(tmp_path), ["train.total_iters=2"]))
    with pytest.raises(ConfigError, match="already holds checkpoints; use --resume auto"):
        Trainer(config_from_data(tiny(tmp_path)))
    Trainer(config_from_data(tiny(tmp_path)), resume="auto").close()  # the failed setup released the folder


def test_one_trainer_per_run_folder(tmp_path) -> None:
    first = Trainer(config_from_data(tiny(tmp_path)))
    with pytest.raises(ConfigError, match="another `srkit train` is already using this run folder"):
        Trainer(config_from_data(tiny(tmp_path)), resume="auto")
    first.close()
    Trainer(config_from_data(tiny(tmp_path)), resume="auto").close()


def test_validation_keeps_best_and_logs_images(tmp_path) -> None:
    cfg = config_from_data(tiny(
        tmp_path, data={"val": {"kind": "synthetic", "length": 2, "height": 32, "width": 48}},
        val={"every": 2, "num_images": 1}, log={"every": 1, "tensorboard": True, "progress": "off"}))
    summary = train(cfg)
    run = tmp_path / "run"
    psnr = [float(r[2]) for r in _rows(run) if r[1] == "val/psnr"]
    assert len(psnr) == 3 and summary["best"] == pytest.approx(max(psnr))
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["best"] == pytest.approx(max(psnr)) and best["iteration"] in (2, 4, 6)
    # TensorBoard: the scalars and the LR | output | GT sample (3 x 48 wide, 32 high).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert {"loss", "lr", "val/psnr", "val/ssim"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val/psnr")] == [2, 4, 6]
    sample = events.Images("val/sample_0")
    assert [e.step for e in sample] == [2, 4, 6] and (sample[0].width, sample[0].height) == (3 * 48, 32)
    # The best and final weights as one-file srkit models (EMA weights: EMA is on in this config).
    from srkit.models.checkpoint import load_model

    final = load_model(run / "model_final.safetensors")
    assert final.preset == "edvr-m" and final.config.num_feat == 8
    ema = torch.load(sorted((run / "checkpoints").glob("iter_*.pt"))[-1], weights_only=True)["params_ema"]
    assert all(torch.equal(final.state_dict()[k], ema[k]) for k in ema)
    assert (run / "model_best.safetensors").is_file()
    waits = [float(r[2]) for r in _rows(run) if r[1] == "perf/data_wait_fraction"]
    assert len(waits) == 6 and all(0.0 <= w <= 1.0 for w in waits)
    log = (run / "train.log").read_text()
    assert "iter 6/6 loss " in log and " it/s, data wait " in log and "ETA " in log
    assert "% of step time waiting for data" in log


def test_init_from_woTSA_allows_only_missing_fusion(tmp_path) -> None:
    woTSA = tiny(tmp_path, "wotsa", model={"name": "edvr-m-wotsa"}, train={"stages": [{}], "total_iters": 2})
    train(config_from_data(woTSA))
    src = sorted((tmp_path / "wotsa" / "checkpoints").glob("iter_*.pt"))[-1]
    ok = Trainer(config_from_data(tiny(tmp_path, "tsa", model={"init_from": str(src), "init_allow_missing": ["fusion.*"]})))
    state = torch.load(src, weights_only=True)["params"]
    assert torch.equal(ok.model.state_dict()["conv_first.weight"], state["conv_first.weight"])
    with pytest.raises(CheckpointError, match=r"does not fit model edvr-m: missing \d+ keys \(e.g. fusion\."):
        Trainer(config_from_data(tiny(tmp_path, "tsa2", model={"init_from": str(src)})))


def test_init_from_accepts_foreign_key_names(tmp_path) -> None:
    """A woTSA checkpoint in MMagic's names starts the TSA model just as srkit's own names do."""
    from test_checkpoint import to_mmagic

    src_model = create_model("edvr-m-wotsa", **TINY_EDVR)
    state = src_model.state_dict()
    foreign = tmp_path / "wotsa_mmagic.pth"
    torch.save({"state_dict": {f"generator.{k}": v for k, v in to_mmagic(state).items()}}, foreign)
    ok = Trainer(config_from_data(tiny(tmp_path, "tsa_mm", model={"init_from": str(foreign),
                                                                  "init_allow_missing": ["fusion.*"]})))
    own = ok.model.state_dict()
    assert torch.equal(own["pcd_align.offset_conv1.l3.weight"], state["pcd_align.offset_conv1.l3.weight"])
    assert torch.equal(own["upconv1.weight"], state["upconv1.weight"])


TINY_UDVD = tiny_overrides("udvd")


def test_udvd_multistage_loss_trains_with_maps(tmp_path) -> None:
    cfg = config_from_data(tiny(
        tmp_path, model={"name": "udvd-x4", "overrides": {**TINY_UDVD, "stage_loss_weights": [0.25, 0.5, 1.0]}},
        train={"stages": [{}], "losses": [{"name": "ms", "type": "l1", "target": "stages"}], "ema": {"enabled": False},
               "optim": {"lr": 1e-3}},
        data={"val": {"kind": "synthetic", "length": 1, "height": 32, "width": 32}}, val={"every": 3, "ssim": False}),
        ["train.total_iters=3", "train.schedule.periods=[3]", "train.schedule.restart_weights=[1]"])
    tr = Trainer(cfg)
    batch = next(iter(tr._batches()))
    assert batch["maps"].shape == (2, 16, 8, 8) and batch["lq"].shape == (2, 3, 8, 8)
    # The loss is the model's stage weights applied to the three outputs.
    from srkit.models import as_sr_output

    with torch.no_grad():
        out = as_sr_output(tr.model(batch["lq"], batch["maps"]))
        total, _ = tr.losses(out, batch["gt"])
    l1 = [float((s - batch["gt"]).abs().mean()) for s in out.stages]
    assert float(total) == pytest.approx(0.25 * l1[0] + 0.5 * l1[1] + 1.0 * l1[2], rel=1e-5)
    summary = tr.fit()
    assert summary["iteration"] == 3 and summary["best"] is not None


def test_bf16_autocast_and_grad_clip_run(tmp_path) -> None:
    cfg = config_from_data(tiny(tmp_path, precision="bf16"), ["train.grad_clip=0.001", "train.total_iters=2"])
    tr = Trainer(cfg)
    conv_dtypes: list[torch.dtype] = []
    tr.model.conv_last.register_forward_hook(lambda m, i, o: conv_dtypes.append(o.dtype))
    applied: list[float] = []  # the gradient norm the optimiser actually steps with
    step = tr.optimizer.step

    def recording_step(*a, **kw):
        grads = [p.grad for p in tr.model.parameters() if p.grad is not None]
        applied.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return step(*a, **kw)

    tr.optimizer.step = recording_step
    try:
        summary = tr.fit()
    finally:
        tr.close()
    assert summary["iteration"] == 2
    assert conv_dtypes and set(conv_dtypes) == {torch.bfloat16}  # the forward ran under bf16 autocast
    norms = [float(r[2]) for r in _rows(tmp_path / "run") if r[1] == "grad_norm"]
    assert len(norms) == 2 and min(norms) > 0.001  # the logged norm is the one before clipping ...
    assert len(applied) == 2 and max(applied) <= 0.001 * (1 + 1e-4)  # ... the applied one is clipped


def test_exploding_offsets_trigger_rollbacks_then_stop(tmp_path) -> None:
    # Any non-zero offset counts as "exploded" here: the first steps move the offsets off zero.
    cfg = config_from_data(tiny(tmp_path, model={"overrides": {**TINY_EDVR, "offset_warn_threshold": 1e9}},
                                guard={"offset_threshold": 1e-12, "max_rollbacks": 1}),
                           ["train.stages=[{}]"])
    with pytest.raises(DivergenceError, match="deformable offsets exploded"):
        train(cfg)
    assert "rollback 1/1" in (tmp_path / "run" / "train.log").read_text()


def test_mana_three_stages_train_the_right_parameters(tmp_path) -> None:
    from srkit.train.config import load_config

    shipped = load_config("mana-vimeo")
    stages = [dict(name=s.name, start_iter=s.start_iter, trainable=s.trainable, frozen=s.frozen,
                   loss_weights=s.loss_weights, reset_optimizer=s.reset_optimizer) for s in shipped.train.stages]
    for st, start in zip(stages, (1, 2, 3), strict=True):
        st["start_iter"] = start
    cfg = config_from_data(tiny(
        tmp_path, model={"name": "mana", "overrides": dict(TINY_MANA)},
        train={"total_iters": 3, "optim": {"lr": 1e-2, "betas": [0.5, 0.999]}, "schedule": {"type": "constant"},
               "stages": stages, "losses": [dict(vars(t)) for t in shipped.train.losses], "ema": {"enabled": False}},
        guard={"enabled": False}))
    tr = Trainer(cfg)
    memory = {"nonloc_spatial.mb", "nonloc_spatial.W_z1.weight", "nonloc_spatial.W_z1.bias"}
    snapshots = [{k: v.clone() for k, v in tr.model.state_dict().items()}]
    for total in (1, 2, 3):
        tr.cfg.train.total_iters = total
        tr.fit()
        snapshots.append({k: v.clone() for k, v in tr.model.state_dict().items()})
    changed = [{k for k in a if not torch.equal(a[k], b[k])} for a, b in zip(snapshots, snapshots[1:], strict=False)]
    assert changed[0] and not changed[0] & memory          # stage 1: all but the memory bank + its 1x1 conv
    assert changed[1] and changed[1] <= memory             # stage 2: only those two ...
    rows = _rows(tmp_path / "run")
    # ... on the quantization loss
    assert {r[1] for r in rows if r[0] == "2" and r[1].startswith("loss/")} == {"loss/quantization"}
    assert {r[1] for r in rows if r[0] == "3" and r[1].startswith("loss/")} == {"loss/pixel"}
    assert changed[2] & memory and changed[2] - memory     # stage 3: everything on L1


def _tiny_mana_staged(tmp_path, name: str) -> dict:
    """The shipped MANA schedule (stages, losses, fresh Adam per stage) on a tiny MANA, stages at 1/3/5."""
    from srkit.train.config import load_config

    shipped = load_config("mana-vimeo")
    stages = [dict(name=s.name, start_iter=start, trainable=s.trainable, frozen=s.frozen, loss_weights=s.loss_weights,
                   reset_optimizer=s.reset_optimizer) for s, start in zip(shipped.train.stages, (1, 3, 5), strict=True)]
    return tiny(tmp_path, name, model={"name": "mana", "overrides": dict(TINY_MANA)},
                train={"total_iters": 6, "optim": {"lr": 1e-2, "betas": [0.5, 0.999]}, "schedule": {"type": "constant"},
                       "stages": stages, "losses": [dict(vars(t)) for t in shipped.train.losses]},
                checkpoint={"every": 1, "keep_last": 10}, guard={"enabled": False})


def test_mana_stage_follows_the_iteration_across_a_resume(tmp_path) -> None:
    """Cut inside stage 2 (memory bank on the quantization loss) and resumed: same weights, right stage.

    The official code restarts its schedule on resume; srkit derives the stage from the iteration.
    """
    train(config_from_data(_tiny_mana_staged(tmp_path, "full")))
    # Iterations 1-3 done (stage 2 began at 3 with a fresh Adam); the resume runs 4 in stage 2, 5-6 in 3.
    train(config_from_data(_tiny_mana_staged(tmp_path, "cut"), ["train.total_iters=3"]))
    tr = Trainer(config_from_data(_tiny_mana_staged(tmp_path, "cut")), resume="auto")
    assert tr.iteration == 3
    tr.fit()
    a, b = _final(tmp_path / "full"), _final(tmp_path / "cut")
    assert a["iteration"] == b["iteration"] == 6 and b["stage"] == 2
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
    rows = _rows(tmp_path / "cut")
    # The resumed run logs the stage it re-derived at iteration 4, then stage 3 at 5; the losses show that
    # iteration 4 ran in stage 2 (quantization loss) instead of restarting the schedule at stage 1.
    assert [r[0] for r in rows if r[1] == "event/stage"] == ["1", "3", "4", "5"]
    losses = sorted({(int(r[0]), r[1]) for r in rows if r[1].startswith("loss/")})
    assert losses == [(1, "loss/pixel"), (2, "loss/pixel"), (3, "loss/quantization"), (4, "loss/quantization"),
                      (5, "loss/pixel"), (6, "loss/pixel")]


def test_model_errors_name_the_config_key(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"^model\.name: unknown model 'nosuch'"):
        Trainer(config_from_data(tiny(tmp_path, model={"name": "nosuch"})))
    with pytest.raises(ConfigError, match=r"^model\.overrides: .*num_feat must be a positive integer, got -1"):
        Trainer(config_from_data(tiny(tmp_path, model={"overrides": {**TINY_EDVR, "num_feat": -1}})))
    # A run that never started leaves no (empty) run folder behind; an existing folder is kept.
    (tmp_path / "existing").mkdir()
    for name, should_exist in (("fresh", False), ("existing", True)):
        cfg = config_from_data(tiny(tmp_path, name, model={"name": "nosuch"}))
        assert cfg.run_dir == tmp_path / name
        with pytest.raises(ConfigError):
            Trainer(cfg)
        assert cfg.run_dir.exists() == should_exist


def test_sigint_saves_a_checkpoint_and_exits_130(tmp_path, capsys) -> None:
    """Ctrl-C (SIGINT, delivered here to this process during iteration 2) finishes the step, saves, exits 130."""
    import os
    import signal

    import yaml

    from srkit.cli import main
    from srkit.train import trainer as T

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny(tmp_path, checkpoint={"every": 100}, train={"total_iters": 6})))
    real = T.to_device
    calls = []

    def interrupting(batch, device):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(batch, device)

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs as a background (nohup) job
    T.to_device = interrupting
    try:
        assert main(["train", str(cfg_path)]) == 130
    finally:
        T.to_device = real
    err = capsys.readouterr().err
    assert "received SIGINT: saving a checkpoint" in err and "stopped by SIGINT at iteration 2" in err
    assert _final(tmp_path / "run")["iteration"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # the handler is restored


def test_mana_nomem_trains_with_the_shipped_nomem_schedule(tmp_path) -> None:
    """The No-Mem ablation (memory_size 0) trains end to end on the shipped one-stage config's losses."""
    from srkit.train.config import load_config

    shipped = load_config("mana-vimeo-nomem")
    cfg = config_from_data(tiny(
        tmp_path, model={"name": "mana-nomem", "overrides": {k: v for k, v in TINY_MANA.items() if k != "memory_size"}},
        train={"total_iters": 2, "optim": {"lr": 1e-3, "betas": [0.5, 0.999]}, "schedule": {"type": "constant"},
               "stages": [dict(name=s.name, start_iter=s.start_iter, trainable=s.trainable) for s in shipped.train.stages],
               "losses": [dict(vars(t)) for t in shipped.train.losses], "ema": {"enabled": False}},
        guard={"enabled": False}))
    tr = Trainer(cfg)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.fit()
    assert tr.model.config.memory_size == 0 and not any("mb" in k.split(".") for k in before)
    assert any(not torch.equal(before[k], v) for k, v in tr.model.state_dict().items())
    assert {r[1] for r in _rows(tmp_path / "run") if r[1].startswith("loss/")} <= {"loss/pixel"}
