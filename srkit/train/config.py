"""Typed training configuration: dataclasses, strict YAML loading, ``--set`` overrides.

A config is ONE YAML file (no inheritance chains: what you read is what runs). It is parsed into the
dataclasses below and validated before anything starts, so a typo costs a second, not a night:
each unknown key or bad value is a :class:`~srkit.errors.ConfigError` that names the key path
(``train.optim.lr: expected a positive float, got 'abc'``) and, for unknown keys, suggests the closest
known one.

Shipped configs live in ``srkit/configs/*.yaml`` (package data, also reachable as ``configs/`` at the
repository root) and can be given by name: ``srkit train edvr-m-reds-wotsa``.

Relative paths: in your own config file they are relative to that file; in a shipped config, to the
working directory.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from srkit.errors import ConfigError
from srkit.utils.config import from_dict, to_dict
from srkit.utils.config import typed_field as _f

# --------------------------------------------------------------------------------------------------
# Schema


@dataclass
class ModelConfig:
    """Which network to train and how to initialise it."""

    name: str = _f("edvr-m", help="registered preset name (see `srkit models`)")
    overrides: dict[str, Any] = _f(factory=dict, help="preset config overrides, e.g. {num_feat: 16}")
    init_from: str | None = _f(None, help="weights to start from (srkit/BasicSR checkpoint or safetensors)")
    init_key: Literal["auto", "params", "params_ema"] = _f("params", help="which weights of a checkpoint to use")
    init_allow_missing: list[str] = _f(
        factory=list, help="glob patterns of parameter names allowed to be absent from init_from (e.g. 'fusion.*')"
    )
    init_from_parts: dict[str, str] = _f(
        factory=dict, help="weights for parts of the network, {submodule: checkpoint}, loaded after init_from: e.g. a "
                           "cascade's {stage1: runs/edvr-m-reds/checkpoints/iter_00600000.pt} (foreign names renamed, "
                           "init_key as for init_from; init_allow_missing patterns apply with the part's prefix)"
    )


@dataclass
class SourceConfig:
    """Another footage source mixed into a dataset (same crops, degradation and augmentation)."""

    root: str | None = _f(None, help="dataset folder (relative paths are relative to the config file)")
    layout: str | None = _f(None, help="folder layout: folders, reds, vimeo, vid4, images, videos (null: the dataset's)")
    partition: str | None = _f(None, help="layout partition/split, e.g. train, all")
    subset: list[str] | None = _f(None, help="only these clip names")
    lmdb: str | None = _f(None, help="LMDB of GT frames (read instead of the folders)")
    lmdb_lq: str | None = _f(None, help="LMDB of LQ frames (optional)")
    repeat: int = _f(1, check="positive", help="list this source's samples this many times per epoch (balancing)")


@dataclass
class CurriculumConfig:
    """Curriculum learning (EDVR's training advice: easy data first, then harder data).

    Samples are ranked by the difficulty score of their clip; iteration 1 draws its batch from the
    easiest ``start_fraction`` of the training set, and the pool widens (linearly, or in ``steps`` equal
    jumps) to the whole set at ``full_at_iter``. From then on batches are the plain epoch stream.
    Every batch is a function of (seed, iteration), so resumed runs draw the same samples.
    """

    score: Literal["motion", "file"] = _f(
        "motion", help="motion: mean optical flow of each clip (as `srkit data motion-rank`); file: read score_file"
    )
    score_file: str | None = _f(
        None, help="clip scores: `srkit data motion-rank --top 1 -o F` output, 'name score' lines, or a JSON {name: score}"
    )
    easy: Literal["low", "high"] = _f("low", help="which end of the score is easy (motion: low)")
    start_fraction: float = _f(0.3, check="unit", help="fraction of the set (the easiest) used at iteration 1")
    full_at_iter: int = _f(1, check="ge1", help="iteration from which the whole set is used")
    steps: int | None = _f(None, check="positive", help="widen in this many equal steps (null: linearly every iteration)")
    motion_max_frames: int | None = _f(None, check="positive", help="score: motion: use the first N frames of each clip")
    motion_max_side: int | None = _f(None, check="positive", help="score: motion: flow on frames shrunk to this long side")


@dataclass
class DatasetConfig:
    """One dataset (training or validation)."""

    kind: Literal["synthetic", "video", "image"] = _f("synthetic", help="synthetic (tests), video or image")
    root: str | None = _f(None, help="dataset folder (relative paths are relative to the config file)")
    layout: str = _f("folders", help="folder layout: folders, reds, vimeo, vid4, images")
    partition: str | None = _f(None, help="layout partition/split, e.g. train, reds4, test")
    subset: list[str] | None = _f(None, help="only these clip names")
    lmdb: str | None = _f(None, help="LMDB of GT frames (read instead of the folders)")
    lmdb_lq: str | None = _f(None, help="LMDB of LQ frames (optional)")
    degradation: str = _f("BI", help="how LQ is synthesised when absent: BI, BD, DN (BI + noise; degradation_params: {noise: 15} or a range [0, 50]), SRMD")
    degradation_params: dict[str, Any] = _f(factory=dict, help="keyword arguments of the degradation")
    gt_size: int = _f(256, check="positive", help="GT crop size for training (LQ crop = gt_size / scale)")
    interval_list: list[int] = _f(factory=lambda: [1], help="temporal frame intervals to sample from")
    random_reverse: bool = _f(False, help="reverse the frame order at random")
    use_flip: bool = _f(True, help="random horizontal/vertical flips")
    use_rot: bool = _f(True, help="random 90-degree rotations")
    padding: str = _f("reflection_circle", help="frame padding at clip borders")
    border: Literal["pad", "redraw"] = _f(
        "pad", help="training windows at clip borders: pad them, or redraw the centre among those that fit (BasicSR REDS)"
    )
    enlarge_ratio: int = _f(1, check="positive", help="repeat the sample list this many times per epoch")
    extra_sources: list[SourceConfig] = _f(
        factory=list, help="more footage mixed in (each: root/lmdb, layout, partition, subset, repeat)"
    )
    max_frames: int | None = _f(None, check="positive", help="validation: use only the first N frames per clip")
    flow: bool = _f(False, help="video training: give each sample the optical flow from its centre frame to every "
                                "frame (LR pixels), for EDVR's offset_fidelity loss")
    synthetic_motion: float = _f(0.0, check="unit",
                                 help="video training: probability that a window is views of its centre frame under "
                                      "a random global translation (exact flow: alignment learns from it)")
    synthetic_speed: float = _f(16.0, check="non_negative", help="synthetic_motion: largest speed, GT px per frame per axis")
    centre_blur: float = _f(0.0, check="unit",
                            help="video training: probability that a window's centre LR frame is Gaussian-blurred "
                                 "(GT unchanged): the network must take detail from the neighbours")
    centre_blur_sigma: list[float] = _f(factory=lambda: [0.5, 1.5], help="centre_blur: sigma range [lo, hi], LR pixels")
    frame_cache_mb: int = _f(1024, check="non_negative",
                             help="decoded frames (folders, LMDB) kept per worker process, least recently used "
                                  "dropped first: a set that fits is decoded once, not once per window; 0: off")
    curriculum: CurriculumConfig | None = _f(None, help="training: widen the set from easy to hard clips (see CurriculumConfig)")
    length: int = _f(64, check="positive", help="synthetic: number of samples")
    height: int = _f(64, check="positive", help="synthetic: GT height")
    width: int = _f(64, check="positive", help="synthetic: GT width")


@dataclass
class DataConfig:
    train: DatasetConfig = _f(factory=DatasetConfig)
    val: DatasetConfig | None = _f(None)
    batch_size: int = _f(4, check="positive", help="samples per optimiser step over all processes (the global batch)")
    micro_batch_size: int | None = _f(
        None, check="positive",
        help="samples per forward pass and process (null: batch_size / processes); gradients of "
             "batch_size / (micro_batch_size x processes) micro-batches are accumulated per optimiser step",
    )
    num_workers: int = _f(2, check="non_negative", help="DataLoader worker processes per process")
    persistent_workers: bool = _f(True, help="keep workers alive between epochs")
    prefetch_factor: int = _f(2, check="positive", help="batches prefetched per worker")
    pin_memory: Literal["auto", "on", "off"] = _f("auto", help="pinned memory (auto: on with CUDA)")


@dataclass
class ParamGroupConfig:
    pattern: str = _f("*", help="glob over parameter names (e.g. '*dcn*')")
    lr_mul: float = _f(1.0, check="non_negative", help="learning-rate multiplier of matching parameters")
    weight_decay: float | None = _f(None, check="non_negative", help="weight decay of matching parameters")


@dataclass
class OptimConfig:
    type: Literal["adam", "adamw"] = _f("adam")
    lr: float = _f(4e-4, check="positive", help="base learning rate")
    betas: list[float] = _f(factory=lambda: [0.9, 0.99], help="Adam betas")
    eps: float = _f(1e-8, check="positive")
    weight_decay: float = _f(0.0, check="non_negative")
    param_groups: list[ParamGroupConfig] = _f(
        factory=list, help="per-parameter-group LR multipliers; the first matching pattern wins"
    )


@dataclass
class ScheduleConfig:
    type: Literal["cosine_restart", "constant", "multistep"] = _f("cosine_restart")
    periods: list[int] = _f(factory=lambda: [600000], help="cosine: length of each restart period")
    restart_weights: list[float] = _f(factory=lambda: [1.0], help="cosine: peak LR factor of each period")
    eta_min: float = _f(1e-7, check="non_negative", help="cosine: LR floor")
    milestones: list[int] = _f(factory=list, help="multistep: iterations where the LR is multiplied by gamma")
    gamma: float = _f(0.5, check="positive", help="multistep: factor")
    warmup_iters: int = _f(0, check="non_negative", help="linear warm-up length (0: none)")


@dataclass
class StageConfig:
    """A training stage, active from its first iteration until the next stage starts.

    The first iteration is ``start_iter`` (1-based) or ``start_frac``, a fraction of ``train.total_iters``
    (iteration ``round(start_frac * total_iters) + 1``), so that stages keep their shares when the run is
    lengthened or shortened. The first stage starts at iteration 1 and may give neither.
    """

    name: str = _f("all")
    start_iter: int | None = _f(None, check="ge1", help="first iteration of the stage, 1-based (or give start_frac)")
    trainable: list[str] = _f(factory=lambda: ["*"], help="glob patterns of trained parameters")
    frozen: list[str] = _f(factory=list, help="glob patterns excluded from training (wins over trainable)")
    loss_weights: dict[str, float] = _f(factory=dict, help="per-loss-term weight overrides in this stage")
    reset_optimizer: bool = _f(False, help="start the stage with fresh optimiser moments (MANA's code does)")
    start_frac: float | None = _f(
        None, check="unit_open", help="start at this fraction of train.total_iters instead of at start_iter "
                                      "(0.7: iteration 0.7 * total_iters + 1)")


@dataclass
class LossConfig:
    """One term of the training loss."""

    name: str = _f("pixel", help="term name (used by stage loss_weights and in the logs)")
    type: Literal["charbonnier", "l1", "mse", "aux"] = _f("charbonnier")
    weight: float = _f(1.0, check="non_negative")
    reduction: Literal["mean", "sum"] = _f("mean")
    eps: float = _f(1e-12, check="positive", help="Charbonnier: sqrt(diff^2 + eps)")
    target: Literal["image", "stages"] = _f("image", help="compare the final image or every stage output")
    stage_weights: list[float] | None = _f(None, help="weights of the stage outputs (target: stages)")
    key: str | None = _f(None, help="aux: name of the model-returned loss (e.g. quantization)")


@dataclass
class EMAConfig:
    enabled: bool = _f(False)
    decay: float = _f(0.999, check="unit_open")
    start_iter: int = _f(0, check="non_negative", help="copy raw weights until this iteration")


@dataclass
class TrainConfig:
    total_iters: int = _f(600000, check="positive")
    optim: OptimConfig = _f(factory=OptimConfig)
    schedule: ScheduleConfig = _f(factory=ScheduleConfig)
    stages: list[StageConfig] = _f(factory=lambda: [StageConfig()])
    losses: list[LossConfig] = _f(factory=lambda: [LossConfig()])
    grad_clip: float | None = _f(None, check="positive", help="max global gradient norm (none: no clipping)")
    ema: EMAConfig = _f(factory=EMAConfig)


@dataclass
class ValConfig:
    every: int = _f(5000, check="positive", help="validate every N iterations")
    y_channel: bool = _f(False, help="PSNR/SSIM on the Y channel (else RGB)")
    crop_border: int = _f(0, check="non_negative")
    ssim: bool = _f(True, help="also compute SSIM")
    use_ema: bool = _f(True, help="validate the EMA weights when EMA is enabled")
    best_metric: Literal["psnr", "ssim"] = _f("psnr")
    num_images: int = _f(2, check="non_negative", help="sample images (LR | output | GT) sent to TensorBoard")


@dataclass
class CheckpointConfig:
    every: int = _f(5000, check="positive", help="save every N iterations")
    keep_last: int = _f(3, check="positive", help="keep the last K checkpoints (the best is kept apart)")


@dataclass
class GuardConfig:
    enabled: bool = _f(True)
    spike_factor: float = _f(20.0, check="positive", help="loss > factor x running median is a spike")
    window: int = _f(100, check="positive", help="running-median window (iterations)")
    min_history: int = _f(20, check="positive", help="iterations seen before spikes are judged")
    offset_threshold: float | None = _f(
        100.0, check="positive", help="mean |offset| of deformable convs above this is divergence (None: off)"
    )
    lr_factor: float = _f(0.5, check="unit", help="LR multiplier applied at each rollback")
    max_rollbacks: int = _f(3, check="non_negative", help="stop after this many rollbacks")


@dataclass
class LogConfig:
    every: int = _f(100, check="positive", help="log scalars every N iterations")
    tensorboard: bool = _f(True)
    progress: Literal["auto", "on", "off"] = _f("auto", help="progress bar (auto: when stderr is a terminal)")


@dataclass
class DebugConfig:
    inject_nan_at_iter: int | None = _f(None, check="positive", help="make the loss NaN once at this iteration")
    inject_spike_at_iter: int | None = _f(
        None, check="positive", help="multiply the loss by 1000 once at this iteration (exercises the spike guard)"
    )
    kill_at_iter: int | None = _f(None, check="positive", help="SIGKILL the process after this iteration")
    deterministic: bool = _f(False, help="torch.use_deterministic_algorithms (slower)")


@dataclass
class ExperimentConfig:
    """A whole training run."""

    name: str = _f("experiment", help="run name (the run folder is output_dir/name)")
    output_dir: str = _f("runs", help="parent folder of run folders (relative: to the working directory)")
    seed: int = _f(0, check="non_negative")
    device: str = _f("auto", help="auto, cpu, cuda, cuda:N, mps (torchrun: one GPU per process)")
    precision: Literal["fp32", "bf16", "fp16"] = _f("fp32", help="autocast precision of forward passes")
    threads: int | None = _f(None, check="positive", help="torch intra-op threads per process")
    memory_format: Literal["contiguous", "channels_last"] = _f(
        "contiguous", help="layout of the model's 4-D weights and activations; channels_last: srkit train edvr-s "
                           "1.47x faster on an AMX CPU (bf16), same losses; measure other models first")
    model: ModelConfig = _f(factory=ModelConfig)
    data: DataConfig = _f(factory=DataConfig)
    train: TrainConfig = _f(factory=TrainConfig)
    val: ValConfig = _f(factory=ValConfig)
    checkpoint: CheckpointConfig = _f(factory=CheckpointConfig)
    guard: GuardConfig = _f(factory=GuardConfig)
    log: LogConfig = _f(factory=LogConfig)
    debug: DebugConfig = _f(factory=DebugConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# --------------------------------------------------------------------------------------------------
# Cross-field validation


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Checks that involve several fields; raises :class:`ConfigError`."""
    t = cfg.train
    if len(t.optim.betas) != 2 or not all(0.0 <= b < 1.0 for b in t.optim.betas):
        raise ConfigError(f"train.optim.betas: expected two floats in [0, 1), got {t.optim.betas!r}")
    s = t.schedule
    if s.type == "cosine_restart":
        if not s.periods or any(p <= 0 for p in s.periods):
            raise ConfigError(f"train.schedule.periods: expected a non-empty list of positive integers, got {s.periods!r}")
        if len(s.restart_weights) != len(s.periods):
            raise ConfigError(
                f"train.schedule.restart_weights: expected {len(s.periods)} values (one per period), "
                f"got {len(s.restart_weights)}"
            )
        if sum(s.periods) < t.total_iters:
            raise ConfigError(
                f"train.schedule.periods: they cover {sum(s.periods)} iterations but train.total_iters is {t.total_iters}"
            )
    if s.type == "multistep" and sorted(s.milestones) != s.milestones:
        raise ConfigError(f"train.schedule.milestones: expected increasing iterations, got {s.milestones!r}")
    if not t.stages:
        raise ConfigError("train.stages: expected at least one stage")
    for i, st in enumerate(t.stages):
        _resolve_stage_start(i, st, t.total_iters)
    if t.stages[0].start_iter != 1:
        raise ConfigError(f"train.stages[0].start_iter: the first stage must start at iteration 1, got {t.stages[0].start_iter}")
    for i in range(1, len(t.stages)):
        if t.stages[i].start_iter <= t.stages[i - 1].start_iter:
            raise ConfigError(f"train.stages[{i}].start_iter: stages must start at increasing iterations")
    names = [loss.name for loss in t.losses]
    if not names:
        raise ConfigError("train.losses: expected at least one loss term")
    if len(set(names)) != len(names):
        raise ConfigError(f"train.losses: loss names must be unique, got {names}")
    for i, loss in enumerate(t.losses):
        if loss.type == "aux" and not loss.key:
            raise ConfigError(f"train.losses[{i}].key: an 'aux' loss needs the key of the model's loss (e.g. quantization)")
        if loss.stage_weights is not None and loss.target != "stages":
            raise ConfigError(f"train.losses[{i}].stage_weights: only valid with target: stages")
    for i, st in enumerate(t.stages):
        for k in st.loss_weights:
            if k not in names:
                close = difflib.get_close_matches(k, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; loss terms: {', '.join(names)}"
                raise ConfigError(f"train.stages[{i}].loss_weights.{k}: unknown loss term{hint}")
            if st.loss_weights[k] < 0:
                raise ConfigError(f"train.stages[{i}].loss_weights.{k}: expected a non-negative float")
    d = cfg.data
    if d.micro_batch_size is not None and d.batch_size % d.micro_batch_size:
        raise ConfigError(f"data.micro_batch_size: {d.micro_batch_size} does not divide data.batch_size {d.batch_size} "
                          "(the global batch is a whole number of micro-batches)")
    if d.val is not None and d.val.curriculum is not None:
        raise ConfigError("data.val.curriculum: a curriculum applies to the training set only")
    cur = d.train.curriculum
    if cur is not None:
        if cur.score == "file" and not cur.score_file:
            raise ConfigError("data.train.curriculum.score_file: score: file needs a score file")
        if cur.score != "file" and cur.score_file:
            raise ConfigError("data.train.curriculum.score_file: given, but score is 'motion' (set score: file to use it)")
        if cur.start_fraction <= 0.0:
            raise ConfigError(f"data.train.curriculum.start_fraction: expected a float in (0, 1], got {cur.start_fraction!r}")
    if cfg.model.init_from is not None and not cfg.model.init_from:
        raise ConfigError("model.init_from: expected a path or null, got an empty string")
    for part, path in cfg.model.init_from_parts.items():
        if not isinstance(path, str) or not path:
            raise ConfigError(f"model.init_from_parts.{part}: expected a checkpoint path, got {path!r}")
    return cfg


def _resolve_stage_start(i: int, st: StageConfig, total_iters: int) -> None:
    """Fill ``start_iter`` from ``start_frac``. Both may be given only when they agree (a run's saved
    config.yaml lists both), so a start_frac never silently overrides a start_iter."""
    if st.start_frac is not None:
        derived = round(st.start_frac * total_iters) + 1
        if st.start_iter is not None and st.start_iter != derived:
            raise ConfigError(
                f"train.stages[{i}]: start_iter {st.start_iter} and start_frac {st.start_frac} (iteration {derived} of "
                f"train.total_iters {total_iters}) disagree; give one of them")
        st.start_iter = derived
    elif st.start_iter is None:
        if i:
            raise ConfigError(f"train.stages[{i}]: expected start_iter or start_frac (only the first stage starts "
                              "at iteration 1 by default)")
        st.start_iter = 1


# --------------------------------------------------------------------------------------------------
# Loading, overrides, shipped configs


def shipped_config_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "configs"


def list_shipped_configs() -> list[str]:
    return sorted(p.stem for p in shipped_config_dir().glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path, or the name of a shipped config (``edvr-m-reds-wotsa``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix in (".yaml", ".yml") or "/" in str(name_or_path):
        raise ConfigError("config file not found", p)
    shipped = shipped_config_dir() / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = list_shipped_configs()
    close = difflib.get_close_matches(str(name_or_path), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; shipped configs: {', '.join(names)}"
    raise ConfigError(f"no config file or shipped config named {str(name_or_path)!r}{hint}")


def parse_set(items: list[str] | None) -> list[tuple[list[str], Any]]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``[(["a", "b"], 1), (["c"], [1, 2])]`` (values parsed as YAML)."""
    out = []
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. train.optim.lr=1e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: bad key {key!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({str(exc).splitlines()[0]})") from None
        out.append((key.split("."), value))
    return out


def _merge(base: Any, data: Any) -> Any:
    """``data`` over ``base``: mappings merge key by key, anything else (lists too) replaces."""
    if isinstance(base, dict) and isinstance(data, dict):
        out = dict(base)
        for k, v in data.items():
            out[k] = _merge(base.get(k), v) if k in base else v
        return out
    return data


def with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """The user's data over the full default config, so ``--set`` can address defaults too
    (``train.stages.0.trainable=[...]`` in a config that does not list stages)."""
    return _merge(to_dict(ExperimentConfig()), data)


def apply_overrides(data: dict[str, Any], overrides: list[tuple[list[str], Any]]) -> dict[str, Any]:
    """Set nested keys in plain ``data``; list items are addressed by index (``train.stages.1.start_iter``)."""
    for keys, value in overrides:
        node: Any = data
        for i, k in enumerate(keys[:-1]):
            nxt = _child(node, k, keys[: i + 1])
            if nxt is None:
                nxt = {}
                _set(node, k, nxt, keys[: i + 1])
            node = nxt
        _set(node, keys[-1], value, keys)
    return data


def _child(node: Any, k: str, keys: list[str]) -> Any:
    if isinstance(node, list):
        return node[_index(node, k, keys)]
    if isinstance(node, dict):
        return node.get(k)
    raise ConfigError(f"{'.'.join(keys[:-1])}: is a value, cannot set {'.'.join(keys)}")


def _set(node: Any, k: str, value: Any, keys: list[str]) -> None:
    if isinstance(node, list):
        node[_index(node, k, keys)] = value
    elif isinstance(node, dict):
        node[k] = value
    else:
        raise ConfigError(f"{'.'.join(keys[:-1])}: is a value, cannot set {'.'.join(keys)}")


def _index(node: list, k: str, keys: list[str]) -> int:
    if not k.lstrip("-").isdigit() or not -len(node) <= int(k) < len(node):
        raise ConfigError(f"{'.'.join(keys)}: expected a list index below {len(node)}")
    return int(k)


def load_config(
    path: str | Path, overrides: list[str] | None = None, *, base_dir_for_paths: Path | None = None
) -> ExperimentConfig:
    """Read ``path`` (or a shipped config name), apply ``--set`` overrides, parse and validate."""
    p = resolve_config_path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({str(exc).splitlines()[0]})", p) from None
    except OSError as exc:
        raise ConfigError(f"cannot read ({exc.strerror})", p) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", p)
    sets = parse_set(overrides)
    raw = data
    # Unknown keys of the file itself are reported before merging (merging keeps them, so they still fail).
    data = apply_overrides(with_defaults(data) if sets else data, sets)
    cfg = validate(from_dict(ExperimentConfig, data))
    _require_model_and_data(raw, sets, p)
    fallback = None
    if base_dir_for_paths is None:
        # Your own config: paths are relative to it (portable). A shipped config: relative to the
        # working directory (BasicSR's datasets/ convention), and where a folder is not there, relative
        # to the project root (so the development configs' ../shared/data is found from anywhere).
        shipped = p.resolve().parent == shipped_config_dir().resolve()
        base_dir_for_paths = Path.cwd() if shipped else p.parent
        fallback = PROJECT_ROOT if shipped else None
    _resolve_paths(cfg, base_dir_for_paths, fallback)
    return cfg


def _given(raw: dict[str, Any], sets: list[tuple[list[str], Any]], path: list[str]) -> bool:
    """Whether the file or a --set gives ``path`` (e.g. ["model", "name"]) a value."""

    def lookup(node: Any, keys: list[str]) -> bool:
        for k in keys:
            if not isinstance(node, dict) or node.get(k) is None:
                return False
            node = node[k]
        return True

    return lookup(raw, path) or any(key == path[: len(key)] and lookup(value, path[len(key):]) for key, value in sets)


def _require_model_and_data(raw: dict[str, Any], sets: list[tuple[list[str], Any]], p: Path) -> None:
    """A config file must say what to train and on what: the defaults (EDVR-M on synthetic test data)
    exist for the Python API and the tests, and would turn an empty or truncated file into a
    meaningless run instead of an error."""
    for keys, example in ((["model", "name"], "model: {name: edvr-m}"),
                          (["data", "train"], "data: {train: {kind: video, root: ..., layout: folders}}")):
        if not _given(raw, sets, keys):
            if not raw:
                raise ConfigError("config is empty (it needs at least model.name and data.train; srkit train "
                                  "--print-config lists every key)", p)
            raise ConfigError(f"no {'.'.join(keys)}: a config must say what to train and on what (e.g. {example})", p)


def config_from_data(data: dict[str, Any], overrides: list[str] | None = None) -> ExperimentConfig:
    """Parse and validate plain data (used by tests and the Python API)."""
    sets = parse_set(overrides)
    data = apply_overrides(with_defaults(data) if sets else dict(data), sets)
    return validate(from_dict(ExperimentConfig, data))


# The folder holding the srkit package (the repository root for a source checkout).
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _resolve_paths(cfg: ExperimentConfig, base: Path, fallback: Path | None = None) -> None:
    """Dataset paths in a config are relative to ``base``; one missing there is taken relative to
    ``fallback`` when it exists there (shipped configs: the project root)."""

    def fix(p: str | None) -> str | None:
        if p is None:
            return None
        q = Path(p).expanduser()
        if q.is_absolute():
            return str(q)
        if fallback is not None and not (base / q).exists() and (fallback / q).exists():
            return str((fallback / q).resolve())
        return str((base / q).resolve())

    for ds in (cfg.data.train, cfg.data.val):
        if ds is not None:
            for src in (ds, *ds.extra_sources):
                src.root, src.lmdb, src.lmdb_lq = fix(src.root), fix(src.lmdb), fix(src.lmdb_lq)
            if ds.curriculum is not None:
                ds.curriculum.score_file = fix(ds.curriculum.score_file)
    # init_from is relative to the working directory (it usually points into runs/), unless absent there.
    if cfg.model.init_from and not Path(cfg.model.init_from).exists():
        alt = base / cfg.model.init_from
        if alt.exists():
            cfg.model.init_from = str(alt.resolve())
    for part, path in cfg.model.init_from_parts.items():
        if not Path(path).exists() and (base / path).exists():
            cfg.model.init_from_parts[part] = str((base / path).resolve())


def dump_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
