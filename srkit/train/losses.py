"""Training losses: Charbonnier / L1 / MSE terms, multi-output weighting, model auxiliary losses.

A :class:`LossSet` turns the config's list of terms into one scalar per iteration and a dict of the
weighted parts (for the logs). Terms compare either the final image or every stage output
(UDVD's three refinement outputs, weighted per stage); ``aux`` terms pick a loss the model computed
itself (MANA's quantization loss). Stages of the training schedule may re-weight terms by name.
"""

from __future__ import annotations

from typing import Mapping

import torch

from srkit.errors import ConfigError
from srkit.models.api import SROutput
from srkit.train.config import LossConfig


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-12, reduction: str = "mean") -> torch.Tensor:
    """``sqrt((pred - target)^2 + eps)``, reduced by mean or sum (BasicSR's CharbonnierLoss)."""
    loss = torch.sqrt((pred - target) ** 2 + eps)
    return loss.mean() if reduction == "mean" else loss.sum()


def l1(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    loss = (pred - target).abs()
    return loss.mean() if reduction == "mean" else loss.sum()


def mse(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    loss = (pred - target) ** 2
    return loss.mean() if reduction == "mean" else loss.sum()


def pixel_loss(term: LossConfig, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Losses are computed in fp32 even under autocast: a bf16 sum over a 256x256 crop loses digits.
    pred, target = pred.float(), target.float()
    if term.type == "charbonnier":
        return charbonnier(pred, target, term.eps, term.reduction)
    if term.type == "l1":
        return l1(pred, target, term.reduction)
    if term.type == "mse":
        return mse(pred, target, term.reduction)
    raise ConfigError(f"loss {term.name!r}: type {term.type!r} is not a pixel loss")  # pragma: no cover


class LossSet:
    """The weighted sum of the configured terms."""

    def __init__(self, terms: list[LossConfig], default_stage_weights: list[float] | None = None):
        self.terms = list(terms)
        # A multi-output model may publish its own stage weights (UDVD's config.stage_loss_weights);
        # they apply to ``target: stages`` terms that do not set stage_weights themselves.
        self.default_stage_weights = None if default_stage_weights is None else [float(w) for w in default_stage_weights]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.terms]

    def __call__(
        self, out: SROutput, gt: torch.Tensor, weights: Mapping[str, float] | None = None,
        scales: tuple[float, float] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its weighted parts. ``weights`` overrides term weights by name (stage schedules).

        ``scales``: ``(mean_scale, sum_scale)`` factors of mean- and sum-reduced terms of a micro-batch
        (gradient accumulation, :func:`srkit.train.curriculum.loss_scales`); the parts are scaled too.
        """
        parts: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        for term in self.terms:
            w = float(weights[term.name]) if weights and term.name in weights else term.weight
            if w == 0.0:
                continue  # skipped entirely: a stage that trains only the aux loss pays nothing for it
            value = self._term(term, out, gt)
            if scales is not None:
                w = w * (scales[1] if term.type != "aux" and term.reduction == "sum" else scales[0])
            part = w * value
            parts[term.name] = part.detach()
            total = part if total is None else total + part
        if total is None:
            raise ConfigError("every loss term has weight 0 in this stage; nothing to train")
        return total, parts

    def _term(self, term: LossConfig, out: SROutput, gt: torch.Tensor) -> torch.Tensor:
        if term.type == "aux":
            if term.key not in out.aux_losses:
                have = ", ".join(out.aux_losses) or "none"
                hint = {"offset_fidelity": "; EDVR returns it when the samples carry their flow (data.train.flow: true)",
                        "attention_fidelity": "; MANA returns it with attention_fidelity_queries > 0 and "
                                              "data.train.flow: true"}.get(term.key, "")
                raise ConfigError(f"loss {term.name!r}: the model returned no {term.key!r} loss (it returns: {have}){hint}")
            return out.aux_losses[term.key].float()
        if term.target == "image":
            return pixel_loss(term, out.image, gt)
        stages = out.stages or (out.image,)
        sw = term.stage_weights if term.stage_weights is not None else self.default_stage_weights
        if sw is None:
            sw = [1.0] * len(stages)
        if len(sw) != len(stages):
            raise ConfigError(
                f"loss {term.name!r}: stage_weights has {len(sw)} values but the model returns {len(stages)} outputs"
            )
        total = None
        for w, img in zip(sw, stages, strict=True):
            if w == 0.0:
                continue
            v = w * pixel_loss(term, img, gt)
            total = v if total is None else total + v
        if total is None:
            raise ConfigError(f"loss {term.name!r}: every stage weight is 0")
        return total
