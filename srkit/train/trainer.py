"""The training loop, composed of small pieces.

:class:`Trainer` wires together the config (:mod:`.config`), data (:mod:`.data`), the optimiser and
its schedules (:mod:`.schedule`), the loss (:mod:`.losses`), EMA (:mod:`.ema`), the checkpoint store
(:mod:`.checkpointing`), the divergence guard (:mod:`.guard`), the logger (:mod:`.logging`) and the
validator (:class:`Validator` below). It owns only the loop and the state that crosses iterations.

Exactness: every piece of randomness or schedule is either saved in the checkpoint (weights, EMA,
optimiser, RNG states of every rank, guard history, best metric) or derived from the iteration
(LR, stage, the data stream position and each sample's augmentation). A run killed at any moment
and resumed from its last checkpoint therefore produces bitwise the same weights as an
uninterrupted one (on CPU with a fixed seed and thread count).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import random
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from srkit.errors import CheckpointError, ConfigError
from srkit.models import as_sr_output, create_model
from srkit.models.api import SRModel
from srkit.models.checkpoint import convert_state_dict
from srkit.train import distributed as D
from srkit.train.checkpointing import CheckpointStore, load_checkpoint
from srkit.train.config import ExperimentConfig, dump_yaml
from srkit.train.curriculum import (
    CurriculumBatchSampler,
    accumulation,
    clip_scores,
    loss_scales,
    rank_samples,
    sample_clips,
)
from srkit.train.data import build_dataset, make_train_loader, make_val_loader
from srkit.train.distributed import ResumableBatchSampler
from srkit.train.ema import ModelEMA
from srkit.train.guard import DivergenceGuard
from srkit.train.logging import RunLogger, side_by_side
from srkit.train.losses import LossSet
from srkit.train.schedule import apply_stage, lr_factor, resolve_stages, stage_index
from srkit.utils.device import autocast, select_device

# --------------------------------------------------------------------------------------------------
# Model input / output


def model_forward(model: nn.Module, batch: dict[str, Any], spec: Any) -> Any:
    """Call a model with a batch, whatever its kind (video window, image, image + degradation maps)."""
    if spec.condition == "degradation":
        return model(batch["lq"], batch["maps"])
    if "flow" in batch:  # data.train.flow: EDVR's offset_fidelity, MANA's attention_fidelity
        return model(batch["lq"], flow=batch["flow"])
    return model(batch["lq"])


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    nb = device.type == "cuda"
    return {k: (v.to(device, non_blocking=nb) if torch.is_tensor(v) else v) for k, v in batch.items()}


# --------------------------------------------------------------------------------------------------
# Weights for model.init_from


def read_weights(path: str | os.PathLike, key: str = "params") -> dict[str, torch.Tensor]:
    """A state dict from any checkpoint srkit reads (srkit / BasicSR / MMagic / safetensors / bare).

    ``key`` picks the entry of a BasicSR-style file (``params`` or ``params_ema``; ``auto`` prefers
    the EMA weights); srkit training checkpoints are BasicSR-style.
    """
    from srkit.models.checkpoint import read_checkpoint

    p = Path(path)
    if not p.is_file():
        # Multi-step recipes (EDVR: woTSA first) point at an earlier run's checkpoint: say which run.
        parts = p.parts
        run = parts[parts.index("runs") + 1] if "runs" in parts[:-1] and parts.index("runs") + 1 < len(parts) - 1 else None
        hint = f" (it is written by the run {run!r}: train that config first, e.g. srkit train {run})" if run else ""
        raise CheckpointError(f"model.init_from: file not found{hint}", p)
    param_key = None if key == "auto" else key
    try:
        return read_checkpoint(p, map_location="cpu", param_key=param_key).state
    except (CheckpointError, TypeError):  # TypeError: the entry exists but is empty (no EMA was kept)
        if param_key is None:
            raise
        # Not BasicSR-style (MMagic, safetensors, bare state dict): there is only one set of weights.
        return read_checkpoint(p, map_location="cpu").state


def init_model_from(model: nn.Module, path: str, key: str, allow_missing: list[str]) -> list[str]:
    """Load ``path`` into ``model``: every key must fit except missing ones matching ``allow_missing``.

    This is the paper's woTSA -> TSA procedure: the TSA model starts from the woTSA weights and only
    its fusion module (absent from the woTSA checkpoint) starts from scratch. Returns the missing keys.
    """
    # Foreign names (MMagic, 2019 EDVR, DataParallel's "module.") are renamed to the model's own first.
    state = convert_state_dict(model, read_weights(path, key))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_missing = [k for k in missing if not any(fnmatch.fnmatchcase(k, p) for p in allow_missing)]
    # The woTSA fusion is a 1x1 conv named like TSA's final fusion conv but of another shape; shapes of
    # keys under an allowed-missing pattern may differ (they are re-initialised), others must match.
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    bad_shape = [k for k in mismatched if not any(fnmatch.fnmatchcase(k, p) for p in allow_missing)]
    if bad_missing or bad_shape:
        parts = []
        if bad_missing:
            parts.append(f"missing {len(bad_missing)} keys (e.g. {', '.join(bad_missing[:3])})")
        if bad_shape:
            k = bad_shape[0]
            parts.append(f"shape mismatch for {len(bad_shape)} keys "
                         f"(e.g. {k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)})")
        raise CheckpointError(f"does not fit model {getattr(model, 'preset', '?')}: {'; '.join(parts)} "
                              f"(model.init_allow_missing: {allow_missing})", path)
    keep = {k: v for k, v in state.items() if k in own and k not in mismatched}
    model.load_state_dict(keep, strict=False)
    return sorted(set(missing) | set(mismatched)) + ([f"(ignored unexpected: {len(unexpected)})"] if unexpected else [])


def init_parts_from(model: nn.Module, parts: dict[str, str], key: str, allow_missing: list[str]) -> None:
    """``model.init_from_parts``: load each checkpoint into the submodule it names, as :func:`init_model_from`
    loads a whole model (e.g. a cascade's ``stage1`` from an EDVR run); ``allow_missing`` patterns
    apply with the part's prefix (``stage2.fusion.*``)."""
    children = dict(model.named_children())
    for part, path in parts.items():
        if part not in children:
            raise ConfigError(f"model.init_from_parts.{part}: the model has no part {part!r} "
                              f"(its parts: {', '.join(children) or 'none'})")
        prefix = f"{part}."
        init_model_from(children[part], path, key, [p[len(prefix):] for p in allow_missing if p.startswith(prefix)])


# --------------------------------------------------------------------------------------------------
# Optimiser


def build_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    """Adam/AdamW with one group per (lr_mul, weight_decay) rule; every parameter is in some group.

    Groups keep a ``base_lr`` (the config LR times the group's multiplier) from which the schedule
    sets ``lr`` each iteration. Frozen parameters stay in the optimiser (without gradients Adam
    skips them), so stage changes never rebuild it and its state survives resume untouched.
    """
    o = cfg.optim
    groups: list[dict[str, Any]] = []
    by_rule: dict[int, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        rule = next((i for i, g in enumerate(o.param_groups) if fnmatch.fnmatchcase(name, g.pattern)), -1)
        by_rule.setdefault(rule, []).append(p)
    for rule in sorted(by_rule):
        g = o.param_groups[rule] if rule >= 0 else None
        mul = g.lr_mul if g is not None else 1.0
        wd = g.weight_decay if g is not None and g.weight_decay is not None else o.weight_decay
        groups.append({"params": by_rule[rule], "lr": o.lr * mul, "base_lr": o.lr * mul, "weight_decay": wd,
                       "name": g.pattern if g is not None else "default"})
    for i, g in enumerate(o.param_groups):
        if i not in by_rule:
            raise ConfigError(f"train.optim.param_groups[{i}].pattern: {g.pattern!r} matches no parameter "
                              f"(or an earlier pattern already took them)")
    cls = torch.optim.AdamW if o.type == "adamw" else torch.optim.Adam
    return cls(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)


# --------------------------------------------------------------------------------------------------
# RNG state (plain tensors so that torch.load(weights_only=True) reads it)


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((int(py[0]), tuple(int(x) for x in py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------------
# Validation


def _metrics_fns() -> tuple[Any, Any]:
    from srkit.metrics import psnr_torch, ssim_torch

    return psnr_torch, ssim_torch


class Validator:
    """PSNR / SSIM of a model over the validation set (mean over images; clips weigh by frame count)."""

    def __init__(self, loader: Any, cfg: Any, spec: Any, device: torch.device, precision: str):
        self.loader, self.cfg, self.spec, self.device, self.precision = loader, cfg, spec, device, precision

    @torch.no_grad()
    def run(self, model: nn.Module) -> tuple[dict[str, float], list[torch.Tensor]]:
        psnr_fn, ssim_fn = _metrics_fns()
        was_training = model.training
        model.eval()
        psnr_sum = ssim_sum = 0.0
        n = 0
        samples: list[torch.Tensor] = []
        try:
            for batch in self.loader:
                batch = to_device(batch, self.device)
                with autocast(self.device, self.precision):
                    out = as_sr_output(model_forward(model, batch, self.spec)).image
                out = out.float().clamp(0, 1)
                gt = batch["gt"].float()
                kw = dict(crop_border=self.cfg.crop_border, y_channel=self.cfg.y_channel)
                psnr_sum += float(psnr_fn(out, gt, **kw).sum())
                if self.cfg.ssim:
                    ssim_sum += float(ssim_fn(out, gt, **kw).sum())
                for i in range(out.shape[0]):
                    if len(samples) < self.cfg.num_images:
                        lq = batch["lq"][i]
                        lq = lq[self.spec.center_index] if lq.dim() == 4 else lq
                        samples.append(side_by_side(lq.cpu(), out[i].cpu(), gt[i].cpu()))
                n += out.shape[0]
        finally:
            model.train(was_training)
        if n == 0:
            raise ConfigError("data.val: the validation set is empty")
        metrics = {"psnr": psnr_sum / n}
        if self.cfg.ssim:
            metrics["ssim"] = ssim_sum / n
        return metrics, samples


# --------------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """Train ``cfg`` (a validated :class:`ExperimentConfig`), optionally resuming.

    ``resume``: ``None`` (fresh run; refuses a run folder that already has checkpoints), ``"auto"``
    (continue from the newest valid checkpoint in the run folder, or start fresh) or a checkpoint path.
    """

    def __init__(self, cfg: ExperimentConfig, resume: str | None = None):
        self.cfg = cfg
        self.device = select_device(cfg.device)
        self.dist = D.init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        if cfg.debug.deterministic:
            torch.use_deterministic_algorithms(True)
        self.run_dir = cfg.run_dir
        # An explicit --resume file is read before anything is created: a bad one leaves no folder behind.
        self._resume_state: dict[str, Any] | None = None
        if resume not in (None, "auto"):
            self._resume_state = load_checkpoint(self._resume_path(resume))
        created = _outermost_missing(self.run_dir)
        self._lock = _lock_run_dir(self.run_dir) if self.dist.is_main else None
        try:
            self._setup(resume)
        except BaseException:
            self.close()  # a failed setup must not keep the run folder locked
            if created is not None and self.dist.is_main:
                _remove_if_only_lock(self.run_dir, created)  # a config error leaves no empty run folder behind
            raise

    def _setup(self, resume: str | None) -> None:
        cfg = self.cfg
        self.store = CheckpointStore(self.run_dir / "checkpoints", cfg.checkpoint.keep_last, log=self._log)
        self.logger: RunLogger | None = None
        self._pending_log: list[str] = []

        resume_path = self._resume_path(resume)
        # Same initial weights on every rank and in every run of this config.
        seed_everything(cfg.seed)
        try:
            self.model: SRModel = create_model(cfg.model.name, **cfg.model.overrides)
        except ConfigError as exc:  # name the config key: the registry / model config do not know it
            key = "model.overrides" if cfg.model.overrides and "unknown model" not in str(exc) else "model.name"
            raise ConfigError(f"{key}: {exc}") from None
        self.spec = self.model.spec
        self.model.to(self.device)
        if cfg.memory_format == "channels_last":
            # Before the optimizer and the EMA copy are made: their tensors take the parameters' layout.
            self.model.to(memory_format=torch.channels_last)
        if cfg.model.init_from and resume_path is None:
            missing = init_model_from(self.model, cfg.model.init_from, cfg.model.init_key, cfg.model.init_allow_missing)
            self._log(f"initialised from {cfg.model.init_from}" + (f"; fresh: {len(missing)} keys" if missing else ""))
        if cfg.model.init_from_parts and resume_path is None:
            init_parts_from(self.model, cfg.model.init_from_parts, cfg.model.init_key, cfg.model.init_allow_missing)
            self._log("initialised " + ", ".join(f"{k} from {v}" for k, v in cfg.model.init_from_parts.items()))
        self.stages = resolve_stages(cfg.train.stages, self.model)
        self.optimizer = build_optimizer(self.model, cfg.train)
        self.ema = ModelEMA(self.model, cfg.train.ema.decay, cfg.train.ema.start_iter) if cfg.train.ema.enabled else None
        # fp16 gradients underflow without loss scaling, on the CPU as on CUDA (GradScaler("cpu") exists
        # since PyTorch 2.3); bf16 has fp32's range and needs none.
        fp16_scaling = cfg.precision == "fp16" and self.device.type in ("cuda", "cpu")
        self.scaler = torch.amp.GradScaler(self.device.type) if fp16_scaling else None
        self.losses = LossSet(cfg.train.losses, getattr(self.model.config, "stage_loss_weights", None))
        self.guard = DivergenceGuard(cfg.guard)
        self.iteration = 0
        self.best: float | None = None
        self._ddp: nn.Module | None = None
        self._stage_idx: int | None = None
        self._stop_signal: int | None = None
        self._nan_injected = False
        self._spike_injected = False

        self.train_set = build_dataset(cfg.data.train, self.spec, seed=cfg.seed, train=True, where="data.train")
        if len(self.train_set) == 0:
            raise ConfigError("data.train: the training set is empty")
        # The config's batch is the global batch: micro-batches per process, accumulated per optimiser step.
        self.micro_batch, self.accum_steps = accumulation(cfg.data, self.dist.world_size)
        self.loss_scales = loss_scales(self.accum_steps, self.dist.world_size)
        if self.accum_steps > 1:
            self._log(f"global batch {cfg.data.batch_size} = {self.accum_steps} accumulated micro-batches of "
                      f"{self.micro_batch} x {self.dist.world_size} process{'es' if self.dist.world_size > 1 else ''}")
        self._curriculum_order: list[int] | None = None
        cur = cfg.data.train.curriculum
        if cur is not None:
            # Rank 0 scores the clips (motion scores are cached in the run folder, so a resume ranks the same way).
            scores = None
            if self.dist.is_main:
                scores = clip_scores(self.train_set, cur, cache=self.run_dir / "curriculum_scores.json", log=self._log)
            scores = D.broadcast_object(self.dist, scores)
            self._curriculum_order = rank_samples(sample_clips(self.train_set)[0], scores, cur.easy)
        self.validator: Validator | None = None
        if cfg.data.val is not None and self.dist.is_main:
            val_set = build_dataset(cfg.data.val, self.spec, seed=cfg.seed, train=False, where="data.val")
            self.validator = Validator(make_val_loader(val_set, cfg.data), cfg.val, self.spec, self.device, cfg.precision)

        if resume_path is not None:
            state, self._resume_state = self._resume_state, None
            self._restore(state if state is not None else load_checkpoint(resume_path, store=self.store),
                          restore_guard=True, path=resume_path)
            self._log(f"resumed from {resume_path} at iteration {self.iteration}")
        else:
            seed_everything(cfg.seed + 7919 * self.dist.rank)

    def close(self) -> None:
        """Release the run folder (also happens when the process ends)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- setup helpers ---------------------------------------------------------------------------------

    def _log(self, msg: str) -> None:
        if self.logger is not None:
            self.logger.info(msg)
        elif self.dist.is_main:
            self._pending_log.append(msg)

    def _resume_path(self, resume: str | None) -> Path | None:
        if resume is None:
            if self.store._candidates():
                raise ConfigError(f"{self.run_dir} already holds checkpoints; use --resume auto to continue "
                                  f"it or change the run name (--set name=...)")
            return None
        if resume == "auto":
            info = self.store.latest_valid()
            return None if info is None else info.path
        path = Path(resume)
        if not path.is_file():
            raise CheckpointError("--resume: checkpoint not found", path)
        return path

    # -- state -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The full training state (called on every rank: RNG states are gathered from all of them)."""
        rngs = D.gather_objects(self.dist, rng_state())
        guards = D.gather_objects(self.dist, self.guard.state_dict())  # each rank judges its own losses
        per_step = self.micro_batch * self.accum_steps  # this process's samples per optimiser step
        epoch, offset = divmod(self.iteration * per_step, -(-len(self.train_set) // self.dist.world_size))
        return {
            "params": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "params_ema": None if self.ema is None else {k: v.detach().cpu() for k, v in self.ema.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "iteration": self.iteration,
            "stage": stage_index(self.cfg.train.stages, max(self.iteration, 1)),
            "rng": rngs,
            "world_size": self.dist.world_size,
            "guard": guards,
            # Informational: the sampler position follows from (iteration, batch size, world size), and
            # during a curriculum from (seed, iteration).
            "data_position": {"epoch": epoch, "offset": offset, "batch_size": self.cfg.data.batch_size,
                              "micro_batch_size": self.micro_batch, "accumulation": self.accum_steps,
                              "world_size": self.dist.world_size, "dataset_len": len(self.train_set)},
            "best": self.best,
            "meta": {"preset": self.cfg.model.name, "model_config": json.dumps(self.model.config_dict(), default=str),
                     "config": dump_yaml(self.cfg), "srkit_version": _srkit_version()},
        }

    def _restore(self, state: dict[str, Any], *, restore_guard: bool, path: Path | None = None) -> None:
        try:
            self.model.load_state_dict(state["params"])
            if self.ema is not None:
                self.ema.load_state_dict(state["params_ema"] if state.get("params_ema") else state["params"])
            # The config's LR / weight decay win over the saved ones: resuming with
            # --set train.optim.lr=... must change the LR (the moments are kept).
            wanted = [(g["base_lr"], g["weight_decay"]) for g in self.optimizer.param_groups]
            self.optimizer.load_state_dict(state["optimizer"])
            saved = [(g.get("base_lr"), g.get("weight_decay")) for g in self.optimizer.param_groups]
            for g, (lr, wd) in zip(self.optimizer.param_groups, wanted, strict=True):
                g["base_lr"], g["weight_decay"] = lr, wd
            if saved != wanted:
                self._log(f"optimiser settings differ from the checkpoint's; using the config's (base LR, weight decay "
                          f"per group: {saved} -> {wanted})")
        except (RuntimeError, KeyError, ValueError) as exc:
            raise self._misfit(state, exc, path) from None
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.best = state.get("best")
        same_world = int(state.get("world_size", 1)) == self.dist.world_size
        if restore_guard:
            guards = state.get("guard") or [{}]
            self.guard.load_state_dict(guards[self.dist.rank] if same_world and len(guards) > self.dist.rank else guards[0])
        pos = state.get("data_position") or {}
        if pos and (pos.get("batch_size"), pos.get("dataset_len")) != (self.cfg.data.batch_size, len(self.train_set)):
            self._log(f"batch size / dataset size changed since the checkpoint ({pos.get('batch_size')}/{pos.get('dataset_len')} "
                      f"-> {self.cfg.data.batch_size}/{len(self.train_set)}): the data order will differ from the original run")
        rngs = state.get("rng") or []
        if same_world and len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        else:
            self._log(f"checkpoint was written by {state.get('world_size')} processes, this run has "
                      f"{self.dist.world_size}: RNG states re-seeded (data order still follows the iteration)")
            seed_everything(self.cfg.seed + 7919 * self.dist.rank + self.iteration)
        self._stage_idx = None  # re-derived (and re-applied) from the iteration

    def _misfit(self, state: dict[str, Any], exc: BaseException, path: Path | None) -> CheckpointError:
        """Why a checkpoint's weights do not fit this config's network, naming both networks."""
        from srkit.models.checkpoint import state_dict_diff, state_dict_shapes

        theirs = str((state.get("meta") or {}).get("preset") or "an unknown")
        ours = self.cfg.model.name
        params = state.get("params")
        if theirs != ours:
            return CheckpointError(f"is a checkpoint of {theirs} but the config trains {ours} (model.name): resume a "
                                   f"run with the config that wrote it", path)
        if isinstance(params, dict):
            diff = state_dict_diff(state_dict_shapes(params), state_dict_shapes(self.model.state_dict()))
            if not diff.ok:
                return CheckpointError(f"its {theirs} network differs from the config's (model.overrides?): "
                                       f"{diff.describe()}", path)
        return CheckpointError(f"does not fit this config ({str(exc).splitlines()[0][:200]})", path)

    def save(self, *, best: bool = False) -> Path | None:
        state = self.state_dict()  # collective: every rank takes part
        path = None
        if self.dist.is_main:
            path = self.store.save(state, self.iteration, best=best)
        D.barrier(self.dist)
        return path

    # -- the loop --------------------------------------------------------------------------------------

    def _set_stage(self, iteration: int) -> None:
        idx = stage_index(self.cfg.train.stages, iteration)
        if idx == self._stage_idx:
            return
        stage = self.stages[idx]
        apply_stage(self.model, stage)
        self._stage_idx = idx
        if iteration == self.cfg.train.stages[idx].start_iter:  # the stage really begins (not a resume into it)
            if self.cfg.train.stages[idx].reset_optimizer:
                self.optimizer.state.clear()
            # A stage may train another loss (MANA's quantization stage): earlier losses are no baseline
            # for the spike test.
            self.guard.history.clear()
        if self.dist.enabled:
            # DDP registers the parameters that need gradients when it is built: rebuild it per stage.
            from torch.nn.parallel import DistributedDataParallel as DDP

            # Frozen parameters are invisible to DDP; trained ones can only go unused when a loss term is
            # switched off in this stage (e.g. a parameter that only feeds an auxiliary loss).
            weights = self.cfg.train.stages[idx].loss_weights
            skipped = any(weights.get(t.name, t.weight) == 0.0 for t in self.cfg.train.losses)
            self._ddp = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                            find_unused_parameters=skipped)
        else:
            self._ddp = self.model
        n = sum(p.numel() for name, p in self.model.named_parameters() if name in stage.trainable)
        if self.logger is not None:
            self.logger.event(iteration, "stage", f"iteration {iteration}: stage {idx} '{stage.name}' "
                              f"({len(stage.trainable)} tensors, {n:,} parameters trained)")

    def _set_lr(self, iteration: int) -> float:
        f = lr_factor(self.cfg.train.schedule, iteration, self.cfg.train.optim.lr) * self.guard.lr_scale
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * f
        return self.cfg.train.optim.lr * f

    def _batch_sampler(self, start_iteration: int) -> Any:
        """Micro-batches of this process from the start of iteration ``start_iteration + 1`` on."""
        if self._curriculum_order is not None:
            return CurriculumBatchSampler(self._curriculum_order, self.cfg.data.train.curriculum,
                                          global_batch=self.cfg.data.batch_size, micro_batch=self.micro_batch,
                                          seed=self.cfg.seed, rank=self.dist.rank, world_size=self.dist.world_size,
                                          start_iteration=start_iteration)
        return ResumableBatchSampler(len(self.train_set), self.micro_batch, seed=self.cfg.seed, rank=self.dist.rank,
                                     world_size=self.dist.world_size, start_iteration=start_iteration * self.accum_steps)

    def _batches(self) -> Iterator[dict[str, Any]]:
        loader = make_train_loader(self.train_set, self.cfg.data, seed=self.cfg.seed, dist_info=self.dist,
                                   device=self.device, start_iteration=self.iteration,
                                   batch_sampler=self._batch_sampler(self.iteration))
        return iter(loader)

    def _install_signals(self) -> dict[int, Any]:
        old = {}

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None:  # second Ctrl-C: stop now
                raise KeyboardInterrupt
            self._stop_signal = signum
            self._log(f"received {signal.Signals(signum).name}: saving a checkpoint after this iteration")

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not in the main thread
                old[sig] = signal.signal(sig, handler)
        return old

    def fit(self) -> dict[str, Any]:
        """Run to ``train.total_iters``; returns a summary (iteration, best metric, stopped_by)."""
        cfg = self.cfg
        total = cfg.train.total_iters
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.logger = RunLogger(self.run_dir, cfg.log, enabled=True, total_iters=total, start_iter=self.iteration)
            # Where the logs, checkpoints and final weights go (relative output_dir: the working directory).
            self.logger.info(f"run folder {self.run_dir.absolute()}")
            for m in self._pending_log:
                self.logger.info(m)
            from srkit.io.atomic import atomic_write_text

            atomic_write_text(self.run_dir / "config.yaml", dump_yaml(cfg))
        else:
            self.logger = RunLogger(None, cfg.log, enabled=False, total_iters=total)
        old_handlers = self._install_signals()
        try:
            # The rollback target before any step. Rank 0 decides: save() is collective, every rank must agree.
            if D.broadcast_object(self.dist, self.iteration == 0 and not self.store._candidates()):
                self.save()
            return self._loop(total)
        finally:
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
            self.logger.close()

    def _loop(self, total: int) -> dict[str, Any]:
        cfg = self.cfg
        log = self.logger
        assert log is not None
        batches = self._batches()
        self.model.train()
        window: dict[str, float] = {}
        t_data = t_step = 0.0
        run_data = run_step = 0.0  # whole-run totals for the closing summary
        run_iters = 0
        n_window = 0
        t_last = time.perf_counter()
        stopped_by = None
        while self.iteration < total:
            i = self.iteration + 1
            self._set_stage(i)
            lr = self._set_lr(i)
            weights = cfg.train.stages[self._stage_idx].loss_weights
            inject_nan = cfg.debug.inject_nan_at_iter == i and not self._nan_injected
            inject_spike = cfg.debug.inject_spike_at_iter == i and not self._spike_injected
            self._nan_injected |= inject_nan
            self._spike_injected |= inject_spike
            self.optimizer.zero_grad(set_to_none=True)
            # One optimiser step = accum_steps micro-batches per process; each micro-loss is scaled so the
            # accumulated gradient is the global batch's (see srkit.train.curriculum). DDP synchronises
            # gradients on the last micro-batch only.
            loss_value = 0.0
            parts: dict[str, float] = {}
            t0 = time.perf_counter()
            t_wait = 0.0
            for j in range(self.accum_steps):
                tj = time.perf_counter()
                batch = to_device(next(batches), self.device)
                t_wait += time.perf_counter() - tj
                sync = self._ddp is self.model or j == self.accum_steps - 1
                with contextlib.nullcontext() if sync else self._ddp.no_sync():
                    with autocast(self.device, cfg.precision):
                        out = as_sr_output(model_forward(self._ddp, batch, self.spec))
                    loss, micro_parts = self.losses(out, batch["gt"], weights, self.loss_scales)
                    if inject_nan:
                        loss = loss * float("nan")
                    if inject_spike:
                        loss = loss * 1000.0
                    if self.scaler is not None:
                        self.scaler.scale(loss).backward()
                    else:
                        loss.backward()
                loss_value += float(loss.detach())
                for k, v in micro_parts.items():
                    parts[k] = parts.get(k, 0.0) + float(v)
                del out, loss
            t1 = t0 + t_wait
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            grad_norm = self._grad_norm()
            offset = self._offset_mean()
            # Under fp16 loss scaling an overflowing gradient is routine: the scaler skips that step
            # and lowers its scale, so only the loss and offsets are the guard's business then.
            judged_norm = grad_norm if self.scaler is None else None
            reason = self.guard.check(loss_value, judged_norm, offset)
            bad, stop = D.any_across_ranks(self.dist, [reason is not None, self._stop_signal is not None], self.device)
            if bad:
                self._rollback(reason or "another process diverged", i)
                batches = self._batches()
                window, n_window, t_data, t_step = {}, 0, 0.0, 0.0
                continue
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model, i)
            self.guard.accept(loss_value)
            self.iteration = i
            t2 = time.perf_counter()
            t_data += t1 - t0  # time waiting for data (summed over the micro-batches)
            run_data += t1 - t0
            run_step += t2 - t0
            run_iters += 1
            t_step += t2 - t0
            n_window += 1
            window["loss"] = window.get("loss", 0.0) + loss_value
            for k, v in parts.items():
                window[f"loss/{k}"] = window.get(f"loss/{k}", 0.0) + float(v)

            if i % cfg.log.every == 0 or i == total:
                now = time.perf_counter()
                scalars = {k: v / n_window for k, v in window.items()}
                scalars = D.mean_across_ranks(self.dist, scalars, self.device)
                scalars.update({"lr": lr, "perf/it_per_s": n_window / max(now - t_last, 1e-9),
                                "perf/data_wait_fraction": t_data / max(t_step, 1e-9)})
                if grad_norm is not None:
                    scalars["grad_norm"] = grad_norm
                if offset is not None:
                    scalars["dcn/offset_abs_mean"] = offset
                log.scalars(i, scalars)
                log.progress(i, {"loss": f"{scalars['loss']:.4g}", "lr": f"{lr:.2e}",
                                 "data": f"{100 * scalars['perf/data_wait_fraction']:.0f}%"})
                if log._bar is None:
                    eta = (total - i) / max(scalars["perf/it_per_s"], 1e-9)
                    log.info(f"iter {i}/{total} loss {scalars['loss']:.5g} lr {lr:.3e} "
                             f"{scalars['perf/it_per_s']:.2f} it/s, data wait {100 * scalars['perf/data_wait_fraction']:.0f}%, "
                             f"ETA {_fmt_time(eta)}")
                window, n_window, t_data, t_step, t_last = {}, 0, 0.0, 0.0, now

            improved = self._maybe_validate(i)
            if i % cfg.checkpoint.every == 0 or improved or i == total or stop:
                self.save(best=improved)
            if improved:
                self._export("best", i)
            if i == total:
                self._export("final", i)
            if cfg.debug.kill_at_iter == i:
                os.kill(os.getpid(), signal.SIGKILL)
            if stop:
                stopped_by = signal.Signals(self._stop_signal).name if self._stop_signal else "another process"
                log.info(f"stopped by {stopped_by} at iteration {i}; resume with --resume auto")
                break
        if run_iters:
            log.info(f"{run_iters} iterations in {_fmt_time(run_step)} ({run_iters / max(run_step, 1e-9):.3g} it/s), "
                     f"{100 * run_data / max(run_step, 1e-9):.1f}% of step time waiting for data; now at iteration "
                     f"{self.iteration}/{total}"
                     + (f", best {cfg.val.best_metric} {self.best:.4f}" if self.best is not None else ""))
        return {"iteration": self.iteration, "best": self.best, "stopped_by": stopped_by,
                "rollbacks": self.guard.rollbacks, "lr_scale": self.guard.lr_scale}

    def _export(self, tag: str, iteration: int) -> None:
        """``<run>/model_<tag>.safetensors``: the weights to use (EMA when kept), in srkit's format, so
        ``srkit upscale --weights`` and ``srkit.load_model`` rebuild the network from this one file."""
        if not self.dist.is_main:
            return
        from srkit.models.checkpoint import save_model

        use_ema = self.ema is not None
        save_model(self.ema.module if use_ema else self.model, self.run_dir / f"model_{tag}.safetensors",
                   {"iteration": str(iteration), "weights": "ema" if use_ema else "raw", "run": self.cfg.name})

    def _grad_norm(self) -> float | None:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return None
        clip = self.cfg.train.grad_clip
        if clip is not None:
            return float(torch.nn.utils.clip_grad_norm_(params, clip))
        if not self.cfg.guard.enabled:
            return None
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.detach().float()) for p in params])))

    def _offset_mean(self) -> float | None:
        fn = getattr(self.model, "max_offset_abs_mean", None)
        if fn is None or self.cfg.guard.offset_threshold is None:
            return None
        v = fn()
        return None if v is None else float(v)

    def _rollback(self, reason: str, iteration: int) -> None:
        msg = self.guard.register_rollback(reason, iteration)  # raises past the limit
        info = self.store.latest_valid()
        if info is None:
            raise CheckpointError("divergence guard: no valid checkpoint to roll back to", self.store.folder)
        # The guard's count and LR scale, and the best score (best.pt on disk may be newer than the
        # checkpoint rolled back to) survive the rollback.
        keep = (self.guard.rollbacks, self.guard.lr_scale, self.best)
        self._restore(load_checkpoint(info.path, store=self.store), restore_guard=False)
        self.guard.rollbacks, self.guard.lr_scale, self.best = keep
        self.guard.history.clear()
        assert self.logger is not None
        self.logger.event(iteration, "rollback", f"{msg}; restored {info.path.name} (iteration {self.iteration})")
        self.logger.scalars(iteration, {"guard/lr_scale": self.guard.lr_scale, "guard/rollbacks": float(self.guard.rollbacks)})

    def _maybe_validate(self, i: int) -> bool:
        """Validate on rank 0 every ``val.every`` iterations; True when the best metric improved."""
        if self.cfg.data.val is None or (i % self.cfg.val.every != 0 and i != self.cfg.train.total_iters):
            return False
        improved = False
        if self.dist.is_main and self.validator is not None:
            use_ema = self.cfg.val.use_ema and self.ema is not None
            metrics, samples = self.validator.run(self.ema.module if use_ema else self.model)
            assert self.logger is not None
            self.logger.scalars(i, {f"val/{k}": v for k, v in metrics.items()})
            for j, img in enumerate(samples):
                self.logger.image(i, f"val/sample_{j}", img)
            value = metrics[self.cfg.val.best_metric]
            improved = self.best is None or value > self.best
            if improved:
                self.best = value
            self.logger.info(f"validation at {i}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                             + (" (best)" if improved else f" (best {self.best:.4f})"))
        improved = D.broadcast_object(self.dist, improved)
        self.best = D.broadcast_object(self.dist, self.best)
        return bool(improved)


def _lock_run_dir(run_dir: Path) -> Any:
    """Hold an exclusive lock on the run folder for the life of the process.

    Two trainers writing one run folder would interleave checkpoints and logs; the lock (released by
    the OS whenever the process ends, SIGKILL included) makes the second one stop with a clear error.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the run folder ({exc.strerror})", run_dir) from None
    fh = open(run_dir / ".lock", "a+")  # noqa: SIM115 - kept open on purpose: the lock lives with it
    try:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # pragma: no cover - Windows: no advisory locks, carry on unguarded
        pass
    except OSError:
        fh.close()
        raise ConfigError("another `srkit train` is already using this run folder", run_dir) from None
    return fh


def _outermost_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (what ``mkdir(parents=True)`` creates)."""
    path = path.absolute()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _remove_if_only_lock(run_dir: Path, created: Path | None = None) -> None:
    """Remove a run folder this process created if it holds nothing but its lock file, and the empty
    parents it created with it, up to ``created`` (e.g. ``runs/`` made for this run)."""
    try:
        if {p.name for p in run_dir.iterdir()} <= {".lock"}:
            (run_dir / ".lock").unlink(missing_ok=True)
            run_dir.rmdir()
            folder = run_dir.absolute()
            while created is not None and folder != created and created in folder.parents:
                folder = folder.parent
                folder.rmdir()  # OSError when not empty: stops here
    except OSError:  # best effort: the error being reported matters more
        pass


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _srkit_version() -> str:
    from srkit import __version__

    return __version__


def train(cfg: ExperimentConfig, resume: str | None = None) -> dict[str, Any]:
    """Train ``cfg``; the Python entry point behind ``srkit train``."""
    trainer = Trainer(cfg, resume=resume)
    try:
        return trainer.fit()
    finally:
        D.shutdown_distributed(trainer.dist)
        trainer.close()
