"""Config validation, --set overrides, shipped configs and the `srkit train` command's fast paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from srkit.cli import main
from srkit.errors import ConfigError
from srkit.train.config import (
    ExperimentConfig,
    config_from_data,
    dump_yaml,
    list_shipped_configs,
    load_config,
    shipped_config_dir,
)


def _err(data: dict, sets: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_data(data, sets)
    return str(info.value)


def test_unknown_keys_suggest_the_closest() -> None:
    assert _err({"trian": {}}) == "trian: unknown key; did you mean 'train'?"
    assert _err({"train": {"optim": {"lrr": 1e-3}}}) == "train.optim.lrr: unknown key; did you mean 'lr'?"
    assert _err({"train": {"stages": [{}, {"strat_iter": 5}]}}) == (
        "train.stages[1].strat_iter: unknown key; did you mean 'start_iter'?")
    assert _err({"data": {"zzz": 1}}).startswith("data.zzz: unknown key; known keys: train, val, batch_size")


def test_bad_types_and_ranges_name_the_key() -> None:
    assert _err({"train": {"optim": {"lr": "abc"}}}) == "train.optim.lr: expected a positive float, got 'abc'"
    assert _err({"train": {"optim": {"lr": -1}}}) == "train.optim.lr: expected a positive float, got -1"
    assert _err({"data": {"batch_size": 2.5}}) == "data.batch_size: expected a positive integer, got 2.5"
    assert _err({"data": {"num_workers": True}}) == "data.num_workers: expected a non-negative integer, got True"
    assert _err({"train": {"ema": {"decay": 1.0}}}) == "train.ema.decay: expected a float in [0, 1), got 1.0"
    assert _err({"precision": "bf61"}) == "precision: expected one of 'fp32', 'bf16', 'fp16', got 'bf61' (did you mean 'bf16'?)"
    assert _err({"train": {"schedule": {"periods": [10], "restart_weights": [1, 1]}, "total_iters": 10}}) == (
        "train.schedule.restart_weights: expected 1 values (one per period), got 2")
    assert "cover 10 iterations but train.total_iters is 20" in _err(
        {"train": {"schedule": {"periods": [10], "restart_weights": [1]}, "total_iters": 20}})
    assert _err({"train": {"stages": [{"start_iter": 5}]}}) == (
        "train.stages[0].start_iter: the first stage must start at iteration 1, got 5")
    assert "unknown loss term; did you mean 'pixel'" in _err({"train": {"stages": [{"loss_weights": {"pixl": 0}}]}})


def test_stage_start_frac_follows_total_iters() -> None:
    """A stage may start at a fraction of the run, so lengthening it keeps the stages' shares; the
    run's saved config.yaml (which lists both keys) loads again, and a disagreement is an error."""
    stages = [{}, {"start_frac": 0.7}, {"start_frac": 0.7667}]
    for total, starts in ((3000, [1, 2101, 2301]), (14000, [1, 9801, 10735]), (18000, [1, 12601, 13802])):
        cfg = config_from_data({"train": {"total_iters": total, "schedule": {"periods": [total]}, "stages": stages}})
        assert [s.start_iter for s in cfg.train.stages] == starts
    saved = yaml.safe_load(dump_yaml(cfg))
    assert (saved["train"]["stages"][1]["start_iter"], saved["train"]["stages"][1]["start_frac"]) == (12601, 0.7)
    assert [s.start_iter for s in config_from_data(saved).train.stages] == [1, 12601, 13802]
    assert _err(saved, ["train.total_iters=20000", "train.schedule.periods=[20000]"]) == (
        "train.stages[1]: start_iter 12601 and start_frac 0.7 (iteration 14001 of train.total_iters 20000) "
        "disagree; give one of them")
    # mana-s.yaml's fractions give the iterations its shipped weights were trained with
    assert [s.start_iter for s in load_config("mana-s").train.stages] == [1, 9801, 10735]
    assert _err({"train": {"stages": [{}, {}]}}) == (
        "train.stages[1]: expected start_iter or start_frac (only the first stage starts at iteration 1 by default)")
    assert _err({"train": {"stages": [{"start_frac": 0.5}]}}) == (
        "train.stages[0].start_iter: the first stage must start at iteration 1, got 300001")
    assert _err({"train": {"stages": [{}, {"start_frac": 1.0}]}}) == (
        "train.stages[1].start_frac: expected a float in [0, 1), got 1.0")
    assert _err({"train": {"total_iters": 10, "schedule": {"periods": [10]}, "stages": [{}, {"start_frac": 0.5}, {"start_frac": 0.5}]}}) == (
        "train.stages[2].start_iter: stages must start at increasing iterations")


def test_yaml_numbers_and_set_overrides() -> None:
    # PyYAML reads 4e-4 as a string; BasicSR-style values must still work.
    cfg = config_from_data({"train": {"optim": {"lr": "4e-4"}, "total_iters": "6e5"}})
    assert cfg.train.optim.lr == 4e-4 and cfg.train.total_iters == 600000
    cfg = config_from_data({"train": {"stages": [{}, {"start_iter": 9}]}},
                           ["train.optim.betas=[0.5, 0.999]", "train.stages.1.start_iter=7", "model.overrides.num_feat=16",
                            "data.val={kind: synthetic, length: 2}", "train.grad_clip=null"])
    assert cfg.train.optim.betas == [0.5, 0.999] and cfg.train.stages[1].start_iter == 7
    assert cfg.model.overrides == {"num_feat": 16} and cfg.data.val.length == 2 and cfg.train.grad_clip is None
    assert _err({}, ["train.optim.lr"]) == "--set 'train.optim.lr': expected KEY=VALUE (e.g. train.optim.lr=1e-4)"
    assert _err({}, ["train.stages.3.start_iter=2"]) == "train.stages.3: expected a list index below 1"
    assert _err({}, ["train.optim.lr=abc"]) == "train.optim.lr: expected a positive float, got 'abc'"


@pytest.mark.parametrize("name", list_shipped_configs())
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load_config(name)
    assert isinstance(cfg, ExperimentConfig) and cfg.name
    raw = yaml.safe_load((shipped_config_dir() / f"{name}.yaml").read_text())
    assert raw["name"] == name  # run folder named after the config


def test_shipped_edvr_configs_follow_basicsr() -> None:
    wo = load_config("edvr-m-reds-wotsa")
    # The paper's optimiser and global batch (BasicSR: betas (0.9, 0.99), 4 per GPU x 8 GPUs).
    assert (wo.model.name, wo.train.optim.lr, wo.train.optim.betas) == ("edvr-m-wotsa", 4e-4, [0.9, 0.999])
    assert (wo.data.batch_size, wo.data.micro_batch_size) == (32, 4)
    assert wo.train.schedule.periods == [150000] * 4 and wo.train.total_iters == 600000
    assert wo.train.losses[0].type == "charbonnier" and wo.train.losses[0].reduction == "sum"
    tsa = load_config("edvr-m-reds")
    assert tsa.model.init_allow_missing == ["fusion.*"] and tsa.model.init_from.endswith("iter_00600000.pt")
    assert [(s.start_iter, s.trainable) for s in tsa.train.stages] == [(1, ["fusion.*"]), (50000, ["*"])]
    assert tsa.train.schedule.periods == [50000, 100000, 150000, 150000, 150000]


@pytest.mark.parametrize("name", [n for n in list_shipped_configs() if n.startswith("edvr-")])
def test_shipped_edvr_configs_use_the_papers_optimizer(name: str) -> None:
    """EDVR paper: Adam beta1 0.9, beta2 0.999, lr 4e-4, batch 32 (a global batch, accumulated as needed).
    edvr-s documents its own recipe (its shipped weights come from it)."""
    from srkit.train.curriculum import accumulation

    cfg = load_config(name)
    if name == "edvr-s" or cfg.model.name.endswith("cascade"):
        pytest.skip("srkit's own recipe")
    o = cfg.train.optim
    assert (o.type, o.lr, o.betas, cfg.data.batch_size) == ("adam", 4e-4, [0.9, 0.999], 32)
    assert accumulation(cfg.data, 1) == (4, 8) and accumulation(cfg.data, 8) == (4, 1)
    assert "BasicSR" in (shipped_config_dir() / f"{name}.yaml").read_text()  # says where BasicSR differs


def test_cli_prints_config_and_reports_errors(tmp_path, capsys) -> None:
    assert main(["train", "edvr-m-reds-wotsa", "--set", "train.optim.lr=1e-4", "--print-config"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["train"]["optim"]["lr"] == 1e-4 and out["model"]["name"] == "edvr-m-wotsa"
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  optim:\n    lr: abc\n")
    assert main(["train", str(bad)]) == 2
    assert capsys.readouterr().err == "srkit: error: train.optim.lr: expected a positive float, got 'abc'\n"
    assert main(["train", "edvr-m-reds-wotas"]) == 2
    assert "did you mean 'edvr-m-reds-wotsa'?" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: config file not found" in capsys.readouterr().err
    assert main(["train", "--print-config"]) == 0
    defaults = yaml.safe_load(capsys.readouterr().out)
    assert defaults["guard"]["max_rollbacks"] == 3 and defaults["train"]["stages"][0]["trainable"] == ["*"]
    assert main(["train", "--list"]) == 0
    assert "tiny-edvr-set8" in capsys.readouterr().out.split()


@pytest.mark.parametrize("name", list_shipped_configs())
def test_shipped_configs_fit_their_models(name: str) -> None:
    """Model presets, overrides, stage patterns and LR-multiplier patterns match the real network."""
    import torch

    from srkit.models import create_model, list_models
    from srkit.train.schedule import resolve_stages
    from srkit.train.trainer import build_optimizer

    cfg = load_config(name)
    if cfg.model.name not in list_models():
        pytest.skip(f"model {cfg.model.name} is not in this build")
    with torch.device("meta"):  # shapes only: EDVR-L builds in milliseconds
        model = create_model(cfg.model.name, **cfg.model.overrides)
    stages = resolve_stages(cfg.train.stages, model)
    build_optimizer(model, cfg.train)
    names = {n for n, _ in model.named_parameters()}
    if cfg.model.init_allow_missing:  # the woTSA -> TSA chain: the allowed-missing keys are exactly TSA's fusion
        assert stages[0].trainable == {n for n in names if n.startswith("fusion.")}
    if cfg.model.init_from_parts:  # a cascade's stage 2 trained on a frozen, pre-trained stage 1
        assert set(cfg.model.init_from_parts) == {"stage1"}
        assert all(s.trainable == {n for n in names if n.startswith("stage2.")} for s in stages)
        return
    assert stages[-1].trainable == names  # every other shipped schedule ends by training the whole network


@pytest.mark.parametrize(("name", "starts"), [("mana-vimeo", [1, 90001, 120001]), ("mana-vimeo-m512", [1, 90001, 120001]),
                                             ("tiny-mana-vimeo", [1, 301, 401])])
def test_shipped_mana_configs_follow_the_official_schedule(name: str, starts: list[int]) -> None:
    """jiy173/MANA train.py: stage 1 (steps 0..89999) trains everything but ``nonloc_spatial.W_z1`` and
    ``nonloc_spatial.mb`` on L1; stage 2 (steps 90000..119999) only those two on ``mean(qloss)``; stage 3
    (120000..) everything on L1; a fresh Adam(lr 1e-4, betas (0.5, 0.999)) at each stage. srkit counts
    iterations from 1, so the official step 90000 is srkit's iteration 90001."""
    import torch

    from srkit.models import create_model, list_models
    from srkit.train.schedule import resolve_stages

    if "mana" not in list_models():
        pytest.skip("MANA is not in this build")
    cfg = load_config(name)
    with torch.device("meta"):
        model = create_model(cfg.model.name, **cfg.model.overrides)
    names = {n for n, _ in model.named_parameters()}
    memory = {"nonloc_spatial.mb", "nonloc_spatial.W_z1.weight", "nonloc_spatial.W_z1.bias"}
    assert memory <= names
    stages = resolve_stages(cfg.train.stages, model)
    assert [s.start_iter for s in cfg.train.stages] == starts
    assert [set(s.trainable) for s in stages] == [names - memory, memory, names]
    terms = {t.name: t for t in cfg.train.losses}
    assert (terms["pixel"].type, terms["pixel"].reduction) == ("l1", "mean")  # F.l1_loss
    assert (terms["quantization"].type, terms["quantization"].key) == ("aux", "quantization")
    weights = [{t: st.loss_weights.get(t, terms[t].weight) for t in terms} for st in cfg.train.stages]
    assert weights == [{"pixel": 1.0, "quantization": 0.0}, {"pixel": 0.0, "quantization": 1.0},
                       {"pixel": 1.0, "quantization": 0.0}]
    assert all(st.reset_optimizer for st in cfg.train.stages)
    o = cfg.train.optim
    assert (o.type, o.lr, list(o.betas), o.weight_decay) == ("adam", 1e-4, [0.5, 0.999], 0.0)
    assert cfg.train.schedule.type == "constant" and cfg.train.schedule.warmup_iters == 0
    if name.startswith("mana-vimeo"):  # batch 16 of 64x64 LR patches (x4: 256x256 GT), 7-frame Vimeo-90K septuplets
        assert cfg.data.batch_size == 16 and cfg.data.train.gt_size == 256 and cfg.data.train.layout == "vimeo"
    if name == "mana-vimeo-m512":  # the paper's best memory size, otherwise mana-vimeo as it is
        assert cfg.model.name == "mana-m512" and model.config.memory_size == 512
        base = load_config("mana-vimeo")
        assert (cfg.data, cfg.train, cfg.val) == (base.data, base.train, base.val)


@pytest.mark.shared_data
def test_shipped_configs_find_the_development_data_from_any_folder(shared_data, tmp_path, monkeypatch):
    """Issue 13 item 19: `srkit train tiny-edvr-set8` outside the project root still finds ../shared/data
    (relative to the project); a folder that exists relative to the working directory still wins."""
    from srkit.train.config import load_config

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = load_config("tiny-edvr-set8")
    assert Path(cfg.data.train.root) == (shared_data / "video_hr" / "set8").resolve()
    own = tmp_path / "shared" / "data" / "video_hr" / "set8"
    own.mkdir(parents=True)
    assert Path(load_config("tiny-edvr-set8").data.train.root) == own.resolve()
