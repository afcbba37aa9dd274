"""Divergence guard: notice a run going bad before the bad step is applied, and roll it back.

Signals (each configurable): a non-finite loss or gradient norm, a loss spike (loss above
``spike_factor`` times the running median of recent losses), and exploding deformable-convolution
offsets (EDVR's ``max_offset_abs_mean()``, the classic way EDVR training dies). The trainer asks
:meth:`DivergenceGuard.check` after the backward pass and BEFORE the optimiser step; on a verdict it
restores the last good checkpoint, multiplies the LR by ``lr_factor`` and goes on. After
``max_rollbacks`` rollbacks it stops with :class:`DivergenceError`.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

from srkit.errors import SrkitError
from srkit.train.config import GuardConfig


class DivergenceError(SrkitError):
    """Training kept diverging after the allowed number of rollbacks."""


class DivergenceGuard:
    def __init__(self, cfg: GuardConfig):
        self.cfg = cfg
        self.history: deque[float] = deque(maxlen=cfg.window)
        self.rollbacks = 0
        self.lr_scale = 1.0

    def check(self, loss: float, grad_norm: float | None = None, offset_mean: float | None = None) -> str | None:
        """The reason this step must not be applied, or ``None`` when it looks healthy."""
        if not self.cfg.enabled:
            return None
        if not math.isfinite(loss):
            return f"loss is {loss}"
        if grad_norm is not None and not math.isfinite(grad_norm):
            return f"gradient norm is {grad_norm}"
        if self.cfg.offset_threshold is not None and offset_mean is not None and offset_mean > self.cfg.offset_threshold:
            return f"deformable offsets exploded (mean |offset| {offset_mean:.1f} > {self.cfg.offset_threshold:g})"
        if len(self.history) >= self.cfg.min_history:
            med = statistics.median(self.history)
            if med > 0 and loss > self.cfg.spike_factor * med:
                return f"loss spike ({loss:.4g} > {self.cfg.spike_factor:g} x running median {med:.4g})"
        return None

    def accept(self, loss: float) -> None:
        """Record the loss of an applied step."""
        self.history.append(float(loss))

    def register_rollback(self, reason: str, iteration: int) -> str:
        """Count a rollback and lower the LR; raise :class:`DivergenceError` past the limit."""
        self.rollbacks += 1
        if self.rollbacks > self.cfg.max_rollbacks:
            raise DivergenceError(
                f"training diverged at iteration {iteration} ({reason}) after {self.cfg.max_rollbacks} rollbacks; "
                f"lower train.optim.lr, enable train.grad_clip or raise guard.max_rollbacks"
            )
        self.lr_scale *= self.cfg.lr_factor
        # The losses that led here are not a trustworthy baseline for the next spike test.
        self.history.clear()
        return (
            f"divergence at iteration {iteration}: {reason}; rollback {self.rollbacks}/{self.cfg.max_rollbacks}, "
            f"LR scale now {self.lr_scale:g}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"rollbacks": self.rollbacks, "lr_scale": self.lr_scale, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rollbacks = int(state.get("rollbacks", 0))
        self.lr_scale = float(state.get("lr_scale", 1.0))
        self.history.clear()
        self.history.extend(float(x) for x in state.get("history", []))
