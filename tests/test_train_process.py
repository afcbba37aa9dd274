"""Training as separate processes: SIGKILL + exact resume, SIGTERM, torchrun/DDP, shipped small config.

These start Python subprocesses (a few seconds of imports each), so they are marked ``slow``; they
are still short (tiny EDVR, 32x32 crops, a handful of iterations).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_overrides

from srkit.train.config import load_config
from srkit.train.trainer import train

pytestmark = pytest.mark.slow

TINY = {
    "seed": 5, "threads": 1,
    "model": {"name": "edvr-m", "overrides": tiny_overrides("edvr", num_frame=3, deformable_groups=1)},  # as test_train_run
    "data": {"train": {"kind": "synthetic", "gt_size": 32, "length": 5, "random_reverse": True},
             "batch_size": 2, "num_workers": 2},
    "train": {"total_iters": 8, "optim": {"lr": 1e-3}, "schedule": {"periods": [8], "restart_weights": [1]},
              "stages": [{"name": "fusion", "start_iter": 1, "trainable": ["fusion.*"]}, {"name": "all", "start_iter": 4}],
              "ema": {"enabled": True, "decay": 0.8}},
    "checkpoint": {"every": 3, "keep_last": 2},
    "log": {"every": 1, "tensorboard": False, "progress": "off"},
}


def _write(tmp_path: Path, name: str, **extra) -> Path:
    data = {**TINY, "name": name, "output_dir": str(tmp_path / "runs"), **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _srkit(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "srkit", "train", *args], capture_output=True, text=True,
                          timeout=300, **kw)


def _last(run: Path) -> dict:
    return torch.load(sorted((run / "checkpoints").glob("iter_*.pt"))[-1], weights_only=True)


# Gradient accumulation (a global batch of 4 as 2 micro-batches of 2) and a curriculum whose pool
# widens over iterations 1..4: the kill lands inside the curriculum, the resumed part crosses its end.
ACCUM_CURRICULUM = {**TINY["data"], "batch_size": 4, "micro_batch_size": 2,
                    "train": {**TINY["data"]["train"], "curriculum": {"start_fraction": 0.4, "full_at_iter": 4}}}


@pytest.mark.parametrize("variant", ["plain", "accumulate+curriculum"])
def test_sigkill_then_resume_auto_equals_uninterrupted(tmp_path, capfd, variant) -> None:
    from srkit.cli import main

    # As small as it can be while still covering everything that must survive the kill: 5 iterations,
    # two data workers, EMA, a stage change (fresh optimiser moments) inside the resumed part.
    short = {"train": {**TINY["train"], "total_iters": 5, "schedule": {"periods": [5], "restart_weights": [1]},
                       "stages": [{"name": "fusion", "start_iter": 1, "trainable": ["fusion.*"]},
                                  {"name": "all", "start_iter": 3, "reset_optimizer": True}]},
             "checkpoint": {"every": 2, "keep_last": 2}}
    if variant != "plain":
        short["data"] = ACCUM_CURRICULUM
    cfg = _write(tmp_path, "killed", **short)
    # Killed by SIGKILL after iteration 3: the last checkpoint is at 2, iteration 3 is lost.
    first = _srkit(str(cfg), "--set", "debug.kill_at_iter=3")
    assert first.returncode == -signal.SIGKILL, first.stderr
    ckpts = sorted(p.name for p in (tmp_path / "runs" / "killed" / "checkpoints").glob("iter_*.pt"))
    assert ckpts == ["iter_00000000.pt", "iter_00000002.pt"]
    # The resumed run is the CLI in this process (saves a second interpreter start-up): the process
    # state does not matter, a resume restores every RNG and schedule from the checkpoint.
    capfd.readouterr()
    assert main(["train", str(cfg), "--resume", "auto"]) == 0
    err = capfd.readouterr().err
    assert "resumed from" in err and "at iteration 2" in err
    # The uninterrupted reference run (in this process too: same code path, same thread count).
    train(load_config(_write(tmp_path, "straight", **short)))
    a, b = _last(tmp_path / "runs" / "straight"), _last(tmp_path / "runs" / "killed")
    assert a["iteration"] == b["iteration"] == 5
    for key in ("params", "params_ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    if variant != "plain":
        assert a["data_position"]["accumulation"] == 2
        assert (tmp_path / "runs" / "killed" / "curriculum_scores.json").is_file()


@pytest.mark.parametrize("target", ["process", "process-group"])
def test_sigterm_saves_a_checkpoint_and_exits(tmp_path, target) -> None:
    """SIGTERM to the trainer alone, or to its whole process group with the data workers (as `kill --
    -PGID`, systemd or a batch scheduler send it): either way it saves at the iteration it stops at."""
    cfg = _write(tmp_path, "term")
    proc = subprocess.Popen([sys.executable, "-m", "srkit", "train", str(cfg), "--set", "train.total_iters=100000",
                             "--set", "train.schedule.periods=[100000]", "--set", "checkpoint.every=100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    csv_path = tmp_path / "runs" / "term" / "scalars.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (csv_path.exists() and ",loss," in csv_path.read_text()):
        time.sleep(0.2)
    if target == "process":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "received SIGTERM: saving a checkpoint" in err and "resume with --resume auto" in err
    state = _last(tmp_path / "runs" / "term")
    assert state["iteration"] >= 1
    assert f"stopped by SIGTERM at iteration {state['iteration']}" in err


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch
    from srkit.train.config import load_config
    from srkit.train.trainer import Trainer
    from srkit.train import distributed as D
    tr = Trainer(load_config(sys.argv[1]))
    tr.fit()
    torch.save({k: v for k, v in tr.model.state_dict().items()}, f"{sys.argv[2]}/rank{tr.dist.rank}.pt")
    D.shutdown_distributed(tr.dist)
""")


def test_torchrun_two_cpu_processes_keep_identical_weights(tmp_path) -> None:
    # 4 iterations: a stage change at 3 (DDP is rebuilt for the new trainable set), checkpoints at 3 and 4,
    # validation at 2 and 4. Most of the time is three interpreter start-ups (torchrun + 2 ranks).
    # A global batch of 4 on 2 processes as 2 accumulated micro-batches of 1 each (DDP no_sync on the first).
    cfg = _write(tmp_path, "ddp", data={**TINY["data"], "num_workers": 0, "batch_size": 4, "micro_batch_size": 1,
                                       "val": {"kind": "synthetic", "length": 1, "height": 16, "width": 16}},
                 train={**TINY["train"], "total_iters": 4, "schedule": {"periods": [4], "restart_weights": [1]},
                        "stages": [{"name": "fusion", "start_iter": 1, "trainable": ["fusion.*"]},
                                   {"name": "all", "start_iter": 3}]},
                 val={"every": 2, "ssim": False})
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(cfg), str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    start = _last(tmp_path / "runs" / "ddp")
    assert start["world_size"] == 2 and len(start["rng"]) == 2  # both ranks' RNG states are saved
    assert not torch.equal(start["rng"][0]["torch"], start["rng"][1]["torch"])
    assert len(start["guard"]) == 2 and start["data_position"]["world_size"] == 2
    assert start["data_position"]["accumulation"] == 2
    # Only rank 0 logged: one row per iteration, and validation ran.
    rows = (tmp_path / "runs" / "ddp" / "scalars.csv").read_text().splitlines()
    assert sum(1 for r in rows if ",loss," in r) == 4 and sum(1 for r in rows if ",val/psnr," in r) == 2


SMALL_OVERRIDES = {
    "edvr-s": ["model.overrides.num_feat=8", "model.overrides.deformable_groups=2",
               "model.overrides.num_reconstruct_block=1"],
    "tiny-edvr-set8": ["model.overrides.num_feat=8", "model.overrides.num_reconstruct_block=1"],
    "tiny-udvd-set8": ["model.overrides.num_feat=8", "model.overrides.num_blocks=1"],
    "tiny-mana-vimeo": [],
}


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(SMALL_OVERRIDES))
def test_shipped_small_configs_run_on_shared_data(tmp_path, shared_data, name) -> None:
    from srkit.models import list_models

    cfg0 = load_config(name)
    if cfg0.model.name not in list_models():
        pytest.skip(f"model {cfg0.model.name} is not in this build")
    root = shared_data / "video_hr" / Path(cfg0.data.train.root).name
    sets = [f"output_dir={tmp_path}", "train.total_iters=2", f"data.train.root={root}", "data.train.gt_size=32",
            "data.num_workers=1", "data.batch_size=2", "data.val=null", *SMALL_OVERRIDES[name]]
    if cfg0.train.schedule.type == "cosine_restart":
        sets += ["train.schedule.periods=[2]", "train.schedule.restart_weights=[1]"]
    if len(cfg0.train.stages) > 1:  # visit every stage: one iteration each where possible
        sets += [f"train.stages.{i}.{k}" for i in range(1, len(cfg0.train.stages)) for k in (f"start_iter={i + 1}", "start_frac=null")]
        sets[1] = f"train.total_iters={len(cfg0.train.stages)}"
    summary = train(load_config(name, sets))
    state = _last(tmp_path / name)
    assert summary["iteration"] == state["iteration"] >= 2
    assert all(torch.isfinite(v).all() for v in state["params"].values())
