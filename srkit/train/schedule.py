"""Learning-rate and stage schedules, both pure functions of the iteration.

Nothing here holds state: the LR factor and the active stage at iteration ``i`` follow from ``i`` and
the config alone, so a resumed run (or a rollback by the divergence guard) lands on exactly the
schedule an uninterrupted run would have followed.

Iterations are 1-based: iteration ``i`` is the ``i``-th optimiser step.
"""

from __future__ import annotations

import bisect
import fnmatch
import math
from dataclasses import dataclass

from torch import nn

from srkit.errors import ConfigError
from srkit.train.config import ScheduleConfig, StageConfig


def cosine_restart_factor(iteration: int, periods: list[int], restart_weights: list[float], eta_min_ratio: float) -> float:
    """BasicSR's ``CosineAnnealingRestartLR`` as a factor of the base LR.

    Period ``k`` spans ``(c_{k-1}, c_k]`` with ``c_k`` the cumulative sum of ``periods`` (``c_{-1} = 0``);
    within it ``lr = eta_min + w_k * (base - eta_min) * (1 + cos(pi * (i - c_{k-1}) / p_k)) / 2``.
    Past the last period the LR stays at its final value (``eta_min``).
    """
    cumulative = []
    acc = 0
    for p in periods:
        acc += p
        cumulative.append(acc)
    idx = bisect.bisect_left(cumulative, iteration)  # first k with iteration <= c_k
    if idx >= len(periods):
        return eta_min_ratio
    start = 0 if idx == 0 else cumulative[idx - 1]
    progress = (iteration - start) / periods[idx]
    return eta_min_ratio + restart_weights[idx] * 0.5 * (1.0 - eta_min_ratio) * (1.0 + math.cos(math.pi * progress))


def lr_factor(cfg: ScheduleConfig, iteration: int, base_lr: float) -> float:
    """Factor applied to every group's base LR at ``iteration``.

    Linear warm-up (BasicSR semantics): for ``iteration < warmup_iters`` the LR is ``base * i / warmup``
    regardless of the main schedule, which takes over afterwards.
    """
    if cfg.warmup_iters > 0 and iteration < cfg.warmup_iters:
        return iteration / cfg.warmup_iters
    if cfg.type == "constant":
        return 1.0
    if cfg.type == "multistep":
        return cfg.gamma ** bisect.bisect_right(cfg.milestones, iteration - 1)
    return cosine_restart_factor(iteration, cfg.periods, cfg.restart_weights, cfg.eta_min / base_lr)


@dataclass(frozen=True)
class Stage:
    index: int
    name: str
    trainable: frozenset[str]  # parameter names trained in this stage


def stage_index(stages: list[StageConfig], iteration: int) -> int:
    """Index of the stage active at ``iteration`` (the last one whose ``start_iter <= iteration``)."""
    starts = [s.start_iter for s in stages]
    return max(0, bisect.bisect_right(starts, iteration) - 1)


def trainable_names(stage: StageConfig, names: list[str]) -> frozenset[str]:
    def match(name: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    return frozenset(n for n in names if match(n, stage.trainable) and not match(n, stage.frozen))


def _why_absent(model: nn.Module, patterns: list[str]) -> str:
    """``"; <reason>"`` when the model explains why one of ``patterns`` matches none of its parameters
    (``model.explain_missing_parameters(pattern)``: e.g. a No-Mem MANA has no memory bank for MANA's
    memory stages to freeze or train), else ``""``. An ablation's missing module is then named as such,
    not left to look like a typo in the config."""
    explain = getattr(model, "explain_missing_parameters", None)
    if not callable(explain):
        return ""
    for pat in patterns:
        reason = explain(pat)
        if reason:
            return f"; {reason}"
    return ""


def resolve_stages(stages: list[StageConfig], model: nn.Module) -> list[Stage]:
    """Match each stage's patterns against the model; a stage that trains nothing is a config error."""
    names = [n for n, _ in model.named_parameters()]
    out = []
    for i, st in enumerate(stages):
        chosen = trainable_names(st, names)
        if not chosen:
            raise ConfigError(
                f"train.stages[{i}] ({st.name}): its patterns match no parameter of the model "
                f"(trainable={st.trainable}, frozen={st.frozen}; e.g. names: {', '.join(names[:3])}...)"
                + _why_absent(model, st.trainable + st.frozen)
            )
        for j, pat in enumerate(st.trainable + st.frozen):
            if pat != "*" and not any(fnmatch.fnmatchcase(n, pat) for n in names):
                key = "trainable" if j < len(st.trainable) else "frozen"
                raise ConfigError(f"train.stages[{i}].{key}: pattern {pat!r} matches no parameter of the model"
                                  + _why_absent(model, [pat]))
        out.append(Stage(i, st.name, chosen))
    return out


def apply_stage(model: nn.Module, stage: Stage) -> None:
    """Set ``requires_grad`` so that only the stage's parameters are trained (and get gradients)."""
    for name, p in model.named_parameters():
        p.requires_grad_(name in stage.trainable)
