"""What every srkit model shares: its spec (what it consumes and produces) and its output type.

Models are plain ``nn.Module`` subclasses of :class:`SRModel`. They carry a typed ``config``
(a dataclass whose fields are exactly the keyword arguments of their preset functions), so that a
checkpoint's metadata (preset name + config) rebuilds the same network.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Literal, NamedTuple

import torch
from torch import nn

from srkit.errors import ConfigError
from srkit.utils.config import typed_field


@dataclass(frozen=True)
class ModelSpec:
    """How a model is fed.

    Video models take ``(N, T, C, H, W)`` with ``T == num_frames`` and restore frame ``center_index``;
    image models take ``(N, C, H, W)``. Inputs and outputs are RGB float in [0, 1].
    """

    scale: int
    num_frames: int = 1
    center_index: int = 0
    input_kind: Literal["video", "image"] = "video"
    # Inputs are padded internally to a multiple of this (callers need not care).
    pad_multiple: int = 1
    # "degradation": the model also takes per-pixel degradation maps (UDVD); None otherwise.
    condition: str | None = None
    # True when the input is already at output size (EDVR deblurring "HR-input" mode).
    hr_input: bool = False
    # True when ``forward(x, flow=...)`` takes the window's optical flow in training and returns an aux
    # loss measured against it (EDVR with PCD: ``offset_fidelity``; MANA: ``attention_fidelity``).
    takes_flow: bool = False

    @property
    def output_ratio(self) -> int:
        """Output size / input size: ``scale``, or 1 when the input is already at output size (HR input)."""
        return 1 if self.hr_input else self.scale

    @property
    def half_window(self) -> int:
        """Frames a window spans on its longer side of the centre (0 for single frames)."""
        return max(self.center_index, self.num_frames - 1 - self.center_index)

    @property
    def window_reach(self) -> int:
        """How far (in frames) the windows of a clip can reach from their centre, in either direction:
        ``2 * half_window``, as a window at a clip border is padded (reflection_circle, circle) with
        frames from past its far side."""
        return 2 * self.half_window


class SROutput(NamedTuple):
    """A model's result when it has more than the image to give.

    ``image`` is the final restored image; ``stages`` the intermediate images a multi-stage loss uses
    (the last equals ``image``); ``aux_losses`` losses the model computes itself (MANA's quantization).
    """

    image: torch.Tensor
    stages: tuple[torch.Tensor, ...] = ()
    aux_losses: dict[str, torch.Tensor] = {}


def as_sr_output(out: torch.Tensor | SROutput | tuple) -> SROutput:
    """Normalise a model's forward result to :class:`SROutput`."""
    if isinstance(out, SROutput):
        return out if out.stages else out._replace(stages=(out.image,))
    if isinstance(out, torch.Tensor):
        return SROutput(out, (out,), {})
    raise TypeError(f"model returned {type(out).__name__}; expected a Tensor or SROutput")


class SRModel(nn.Module):
    """Base class of srkit networks: a typed config, a spec, and the preset they were built from."""

    family: ClassVar[str] = ""

    def __init__(self, config: Any):
        super().__init__()
        if not dataclasses.is_dataclass(config):
            raise TypeError("SRModel config must be a dataclass instance")
        self.config = config
        self.preset: str | None = None  # set by create_model

    @property
    def spec(self) -> ModelSpec:  # pragma: no cover - every model overrides it
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)


def config_field(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse's name
    """A model-config field with a description (shown by ``srkit models --details``): the typed config
    engine's field (:func:`srkit.utils.config.typed_field`), so one field helper serves every config."""
    return typed_field(default, help=help)


def check_int_fields(cfg: Any, model: str, *, positive: Iterable[str] = (), non_negative: Iterable[str] = ()) -> None:
    """Raise ``ConfigError("<model> config: NAME must be a positive integer, got V")`` for the first
    field of ``cfg`` that is not an int (bools are refused too) of the required sign."""
    for names, low, kind in ((positive, 1, "a positive"), (non_negative, 0, "a non-negative")):
        for name in names:
            v = getattr(cfg, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"{model} config: {name} must be {kind} integer, got {v!r}")
