"""Exponential moving average of model weights (kept beside the raw weights in checkpoints)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * raw`` for parameters; buffers are copied.

    The EMA copy lives on the training device, never requires gradients and is updated after every
    optimiser step. Before ``start_iter`` it simply tracks the raw weights (EMA of a random
    initialisation is not worth averaging).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, start_iter: int = 0):
        self.decay = float(decay)
        self.start_iter = int(start_iter)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, iteration: int) -> None:
        d = self.decay if iteration > self.start_iter else 0.0
        ema_p = dict(self.module.named_parameters())
        for name, p in model.named_parameters():
            e = ema_p[name]
            if d == 0.0:
                e.copy_(p.detach())
            else:
                e.lerp_(p.detach().to(e.dtype), 1.0 - d)
        ema_b = dict(self.module.named_buffers())
        for name, b in model.named_buffers():
            ema_b[name].copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
