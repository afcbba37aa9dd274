"""EDVR two-stage restoration: the NTIRE19 entry's cascade of a second, shallower EDVR.

The EDVR paper (and the design note ``000_...``): "we cascade the same EDVR network with a shallower
depth to refine the output frames of the first stage; the cascaded network further removes the severe
motion blur the preceding model cannot handle". The notes say no more than "the same network,
shallower"; the 2019 release (xinntao/EDVR ``codes/test_Vid4_REDS4_with_GT.py``, ``stage = 2``, and
its ``EDVR_REDS_*_Stage2.pth`` models) fixes the rest, and srkit's presets follow it:

* stage 2 is an EDVR of stage 1's width, 5 frames, 5 extraction blocks, **half the reconstruction
  blocks** (EDVR-L: 40 -> 20; srkit's ``edvr-m-cascade`` applies the same rule to EDVR-M: 10 -> 5),
  in **HR-input mode at scale 1** (``hr_in``: its input is stage 1's output, at output size), with the
  predeblur module exactly when stage 1 has it (SR-blur and deblurring tracks);
* stage 2 restores a frame from the window of T stage-1 outputs around it, each of which stage 1
  restored from its own T-frame window.

As one network (:class:`EDVRCascade`) the cascade consumes ``T1 + T2 - 1`` input frames (9 for two
5-frame stages) and restores the centre one: stage 1 runs on the T2 sub-windows ``frames[j : j + T1]``
(restoring frames ``j + c1``) and stage 2 on those T2 outputs. Its :class:`~srkit.models.api.ModelSpec`
says so (``num_frames = 9``, centre 4, stage 1's scale and HR-input mode), so ``srkit upscale``,
``srkit eval``, training datasets and the streaming engine use it unchanged. At a clip border the
9-frame window is padded by the usual rule (``reflection_circle``...) and the stage-1 sub-windows are
its slices: the cascade trained on such windows sees exactly that at inference. (The 2019 scripts ran
the stages as two passes over the clip, stage 1 padding each frame's 5-frame window by itself; inside
the clip, 2 frames or more from either end, the two are the same.)

Execution:

* ``forward`` pads the frames once (to :attr:`ModelSpec.pad_multiple`, chosen so that stage 1 and
  stage 2 need no padding of their own), computes every frame's stage-1 feature pyramid once (not
  once per sub-window), decodes the T2 stage-1 outputs and runs stage 2 on them; it is exactly
  ``decode(encode(frames))``;
* the **feature cache** for the streaming engine: :meth:`EDVRCascade.encode` is stage 1's per-frame
  pyramid plus the frame itself (stage 1 adds its residual to each sub-window's centre frame), and
  :meth:`EDVRCascade.decode` restores the centre from the ``T1 + T2 - 1`` cached entries. Without
  autograd, decode also remembers each stage-1 output for as long as the engine holds the cached
  pyramids it came from, so a stream computes every stage-1 output once, not T2 times;
* with stage 1 frozen (the shipped training config trains ``stage2.*`` only) stage 1 runs without
  autograd: no graph, no activations kept for it.

Checkpoints: a cascade's state dict is ``stage1.*`` + ``stage2.*`` (each an EDVR's, BasicSR names);
halves in the 2019 or MMagic names are renamed like EDVR's own. :func:`cascade_from` builds a cascade
from two separate EDVR checkpoints (e.g. ``EDVR_REDS_SR_L.pth`` + ``EDVR_REDS_SR_Stage2.pth``); a
training config starts its stages from separate files with ``model.init_from_parts``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from srkit.errors import ConfigError, InputError
from srkit.models.api import ModelSpec, SRModel
from srkit.models.blocks import crop_to, pad_to_multiple
from srkit.models.checkpoint import StateDict, register_checkpoint_support
from srkit.models.edvr import _L, _M, EDVR, EDVRConfig, _config_from_state, _from_2019, _from_mmagic
from srkit.models.registry import register_model
from srkit.utils.config import typed_field

__all__ = ["EDVRCascade", "EDVRCascadeConfig", "cascade_from"]

_STAGES = ("stage1", "stage2")


@dataclass
class EDVRCascadeConfig:
    """The two EDVRs of a cascade, each as its :class:`~srkit.models.edvr.EDVRConfig` fields.

    A preset's own values are the defaults; overrides are merged into them field by field
    (``stage2: {num_reconstruct_block: 10}`` changes that field only).
    """

    stage1: dict[str, Any] = typed_field(
        factory=dict, help="stage 1: EDVR config fields (any EDVR: SR x4, SR-blur, or deblurring at scale 1)")
    stage2: dict[str, Any] = typed_field(
        factory=dict, help="stage 2: EDVR config fields of the refining EDVR (hr_in: true, scale: 1; shallower)")


def _edvr_config(stage: str, fields: Any) -> EDVRConfig:
    if not isinstance(fields, dict):
        raise ConfigError(f"EDVR cascade config: {stage} must be a mapping of EDVR config fields, got {fields!r}")
    try:
        return EDVRConfig(**fields)
    except TypeError as exc:
        known = ", ".join(f.name for f in dataclasses.fields(EDVRConfig))
        raise ConfigError(f"EDVR cascade config: {stage}: {exc} (EDVR fields: {known})") from None


class EDVRCascade(SRModel):
    """Two EDVRs in cascade. Input ``(N, T1 + T2 - 1, C, H, W)`` RGB in [0, 1], any H/W; output the
    centre frame restored, ``(N, C, H*s, W*s)`` (``s`` = stage 1's scale; 1 with HR input)."""

    family = "edvr-cascade"

    def __init__(self, config: EDVRCascadeConfig | None = None, **overrides: Any):
        config = config if config is not None else EDVRCascadeConfig(**overrides)
        cfg1, cfg2 = _edvr_config("stage1", config.stage1), _edvr_config("stage2", config.stage2)
        if not cfg2.hr_in or cfg2.scale != 1:
            raise ConfigError("EDVR cascade config: stage2 must be an HR-input EDVR at scale 1 (hr_in: true, "
                              f"scale: 1), got hr_in={cfg2.hr_in!r}, scale={cfg2.scale!r}: it refines stage 1's output")
        if cfg2.num_in_ch != cfg1.num_out_ch:
            raise ConfigError(f"EDVR cascade config: stage2.num_in_ch ({cfg2.num_in_ch}) must equal "
                              f"stage1.num_out_ch ({cfg1.num_out_ch})")
        super().__init__(config)
        self.stage1 = EDVR(cfg1)
        self.stage2 = EDVR(cfg2)
        # The complete configs (every EDVR field), so a checkpoint's metadata rebuilds the same network.
        self.config = EDVRCascadeConfig(stage1=dataclasses.asdict(cfg1), stage2=dataclasses.asdict(cfg2))
        self.t1, self.t2 = cfg1.num_frame, cfg2.num_frame
        self.c1, self.c2 = self.stage1.center_frame_idx, self.stage2.center_frame_idx
        s1, s2 = self.stage1.spec, self.stage2.spec
        # One padding for both stages: stage 1's multiple, and one whose stage-1 output (x ratio) is a
        # multiple of stage 2's.
        need2 = s2.pad_multiple // math.gcd(s2.pad_multiple, s1.output_ratio)
        self._pad_multiple = s1.pad_multiple * need2 // math.gcd(s1.pad_multiple, need2)
        # Stage-1 outputs of the stream being decoded (see _stage1_output).
        self._memo: dict[tuple[int, ...], tuple[list[weakref.ref], torch.Tensor]] = {}

    # ------------------------------------------------------------------ spec and monitoring
    @property
    def spec(self) -> ModelSpec:
        s1 = self.stage1.spec
        return ModelSpec(scale=s1.scale, num_frames=self.t1 + self.t2 - 1, center_index=self.c1 + self.c2,
                         input_kind="video", pad_multiple=self._pad_multiple, condition=None, hr_input=s1.hr_input)

    def max_offset_abs_mean(self) -> float | None:
        """Largest mean |offset| of any DCN of either stage at its last forward (the trainer's guard reads it)."""
        values = [v for v in (self.stage1.max_offset_abs_mean(), self.stage2.max_offset_abs_mean()) if v is not None]
        return max(values) if values else None

    def __getstate__(self) -> dict[str, Any]:
        # copy.deepcopy (EMA) and pickling: remembered stage-1 outputs belong to a stream, not the network.
        state = dict(super().__getstate__())
        state["_memo"] = {}
        return state

    def train(self, mode: bool = True) -> "EDVRCascade":
        self._memo = {}
        return super().train(mode)

    # ------------------------------------------------------------------ feature cache API
    def encode(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """Stage 1's pyramid of ``frames (B, C, H, W)`` (padded to ``spec.pad_multiple``), then the frames."""
        with torch.set_grad_enabled(self._stage1_grad(frames)):
            return [*self.stage1.encode(frames), frames]

    def decode(self, feats: Sequence[Sequence[torch.Tensor]], center: torch.Tensor | None = None) -> torch.Tensor:
        """Restore the centre frame from ``T1 + T2 - 1`` entries of :meth:`encode` (batch ``B``).

        ``center`` (the centre frame, as the engine passes it) is not needed: every sub-window's
        centre frame is in its entry. Result ``(B, C, H*s, W*s)`` of the padded size.
        """
        if len(feats) != self.t1 + self.t2 - 1:
            raise InputError(f"EDVR cascade decode: expected {self.t1 + self.t2 - 1} cached frames, got {len(feats)}")
        return self._decode(feats, remember=not torch.is_grad_enabled() and not self.training)

    def _stage1_grad(self, *inputs: torch.Tensor) -> bool:
        """Whether stage 1 needs autograd: not when it is frozen and its input needs no gradient."""
        return torch.is_grad_enabled() and (any(t.requires_grad for t in inputs)
                                            or any(p.requires_grad for p in self.stage1.parameters()))

    def _decode(self, feats: Sequence[Sequence[torch.Tensor]], remember: bool) -> torch.Tensor:
        outs = [self._stage1_output(feats[j:j + self.t1], remember) for j in range(self.t2)]
        return self.stage2(torch.stack(outs, dim=1))

    def _stage1_output(self, sub: Sequence[Sequence[torch.Tensor]], remember: bool) -> torch.Tensor:
        """Stage 1's restoration of one sub-window (T1 entries of :meth:`encode`).

        With ``remember`` (no autograd, eval mode: the engine's cached decoding), the result is kept
        as long as the cached tensors it came from are alive, and reused when the next window's
        sub-window is made of the same ones (the engine caches each frame's entry once per tile):
        each stage-1 output of a stream is then computed once instead of T2 times. Entries are keyed
        by the tensors' identities and checked through weak references, so a freed tensor whose id is
        reused can never hit.
        """
        tensors = [t for entry in sub for t in entry]

        def compute() -> torch.Tensor:
            with torch.set_grad_enabled(self._stage1_grad(*tensors)):
                return self.stage1.decode([entry[:-1] for entry in sub], sub[self.c1][-1])

        if not remember:
            return compute()
        key = tuple(id(t) for t in tensors)
        hit = self._memo.get(key)
        if hit is not None and all(r() is t for r, t in zip(hit[0], tensors)):
            return hit[1]
        out = compute()
        # Forget the outputs whose inputs the engine has dropped (frames that left its ring).
        self._memo = {k: v for k, v in self._memo.items() if all(r() is not None for r in v[0])}
        self._memo[key] = ([weakref.ref(t) for t in tensors], out)
        return out

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, T1 + T2 - 1, C, H, W)`` -> restored centre frame ``(N, C, H*s, W*s)``."""
        t_in = self.t1 + self.t2 - 1
        if x.dim() != 5:
            raise InputError(f"EDVR cascade expects (N, T, C, H, W) frames, got a tensor of shape {tuple(x.shape)}")
        n, t, c = x.shape[:3]
        if t != t_in or c != self.stage1.config.num_in_ch:
            raise InputError(f"EDVR cascade ({self.preset or 'custom'}) expects {t_in} frames of "
                             f"{self.stage1.config.num_in_ch} channels, got {t} frames of {c}")
        x, size = pad_to_multiple(x, self._pad_multiple)
        levels = [lv.unflatten(0, (n, t)) for lv in self.encode(x.flatten(0, 1))]
        feats = [[lv[:, i] for lv in levels] for i in range(t)]  # the last "level" is the frame itself
        out = self._decode(feats, remember=False)
        return crop_to(out, size, self.stage1.spec.output_ratio)


# ---------------------------------------------------------------------- checkpoints
def _split(state: StateDict) -> dict[str, StateDict] | None:
    """``state`` as its ``stage1.`` and ``stage2.`` halves (None unless every key is in one of them)."""
    halves: dict[str, StateDict] = {s: {} for s in _STAGES}
    for key, value in state.items():
        stage, _, rest = key.partition(".")
        if stage not in halves or not rest:
            return None
        halves[stage][rest] = value
    return halves if all(halves.values()) else None


def _per_stage(state: StateDict) -> StateDict | None:
    """A cascade whose halves are in the 2019 xinntao/EDVR or MMagic names: each half renamed as EDVR's."""
    halves = _split(state)
    if halves is None:
        return None
    out: StateDict = {}
    renamed = False
    for stage, half in halves.items():
        for adapter in (_from_mmagic, _from_2019):
            converted = adapter(dict(half))
            if converted is not None:
                half, renamed = converted, True
                break
        out.update({f"{stage}.{k}": v for k, v in half.items()})
    return out if renamed else None


_CASCADE_OF = {"edvr-l": "edvr-l-cascade", "edvr-l-srblur": "edvr-l-srblur-cascade",
               "edvr-l-deblur": "edvr-l-deblur-cascade"}


def _cascade_config_from_state(state: StateDict) -> tuple[str, dict[str, Any]] | None:
    """Both stages' hyper-parameters read off their tensors (as EDVR's inferrer does for each half)."""
    halves = _split(state)
    if halves is None:
        return None
    guesses = [_config_from_state(halves[s]) for s in _STAGES]
    if any(g is None for g in guesses):
        return None
    (name1, over1), (_, over2) = guesses  # type: ignore[misc]
    return _CASCADE_OF.get(name1, "edvr-m-cascade"), {"stage1": over1, "stage2": over2}


register_checkpoint_support("edvr-cascade", key_adapters=[_per_stage], config_inferrer=_cascade_config_from_state)


def cascade_from(stage1_weights: str | os.PathLike, stage2_weights: str | os.PathLike) -> EDVRCascade:
    """A cascade built from two separate EDVR checkpoints (any format srkit reads: srkit, BasicSR,
    MMagic, the 2019 release; each network as its file describes it), e.g. ``EDVR_REDS_SR_L.pth`` +
    ``EDVR_REDS_SR_Stage2.pth``. Its preset is the registered cascade with the same configuration,
    if any (``save_model`` then records it)."""
    from srkit.models.checkpoint import create_model, load_model
    from srkit.models.registry import list_models

    stages = []
    for stage, path in zip(_STAGES, (stage1_weights, stage2_weights)):
        net = load_model(path)
        if not isinstance(net, EDVR):
            raise ConfigError(f"cascade_from: {stage} must be an EDVR checkpoint, {path} holds a "
                              f"{getattr(net, 'family', type(net).__name__)} network")
        stages.append(net)
    model = EDVRCascade(EDVRCascadeConfig(stage1=stages[0].config_dict(), stage2=stages[1].config_dict()))
    model.stage1.load_state_dict(stages[0].state_dict())
    model.stage2.load_state_dict(stages[1].state_dict())
    for name in list_models("edvr-cascade"):
        with torch.device("meta"):
            if create_model(name).config == model.config:
                model.preset = name
                break
    return model


# ---------------------------------------------------------------------- presets
def _merge(stage: str, preset: dict[str, Any], override: Any) -> dict[str, Any]:
    if override is None:
        return dict(preset)
    if not isinstance(override, dict):
        raise ConfigError(f"EDVR cascade config: {stage} must be a mapping of EDVR config fields, got {override!r}")
    return {**preset, **override}


def _build(stage1: dict[str, Any], stage2: dict[str, Any], over1: Any, over2: Any) -> EDVRCascade:
    return EDVRCascade(EDVRCascadeConfig(stage1=_merge("stage1", stage1, over1), stage2=_merge("stage2", stage2, over2)))


# Stage 2 as the 2019 release builds it: stage 1's width, HR input at scale 1, half the reconstruction blocks.
_HR = {"hr_in": True, "scale": 1}
_STAGE2_M = {**_M, **_HR, "num_reconstruct_block": _M["num_reconstruct_block"] // 2}
_STAGE2_L = {**_L, **_HR, "num_reconstruct_block": _L["num_reconstruct_block"] // 2}


@register_model("edvr-m-cascade", family="edvr-cascade",
                description="EDVR two-stage restoration (NTIRE19): edvr-m x4, then a shallower EDVR (64 ch, HR input "
                            "at scale 1) refining 5 stage-1 outputs; 9 input frames. The notes say only 'the same EDVR, "
                            "shallower': 5 reconstruction blocks = half of stage 1's, as the 2019 Stage2 models halve EDVR-L's")
def edvr_m_cascade(*, stage1: dict[str, Any] | None = None, stage2: dict[str, Any] | None = None) -> EDVRCascade:
    return _build(_M, _STAGE2_M, stage1, stage2)


@register_model("edvr-l-cascade", family="edvr-cascade",
                description="EDVR two-stage restoration (NTIRE19 REDS SR): edvr-l x4, then the 2019 "
                            "EDVR_REDS_SR_Stage2 network (128 ch, 20 reconstruction blocks, HR input); 9 input frames")
def edvr_l_cascade(*, stage1: dict[str, Any] | None = None, stage2: dict[str, Any] | None = None) -> EDVRCascade:
    return _build(_L, _STAGE2_L, stage1, stage2)


@register_model("edvr-l-srblur-cascade", family="edvr-cascade",
                description="EDVR two-stage SR of blurry video: edvr-l-srblur, then the 2019 "
                            "EDVR_REDS_SRblur_Stage2 network (predeblur, HR input, 20 blocks); 9 input frames")
def edvr_l_srblur_cascade(*, stage1: dict[str, Any] | None = None,
                          stage2: dict[str, Any] | None = None) -> EDVRCascade:
    return _build({**_L, "with_predeblur": True}, {**_STAGE2_L, "with_predeblur": True}, stage1, stage2)


@register_model("edvr-l-deblur-cascade", family="edvr-cascade",
                description="EDVR two-stage deblurring at scale 1: edvr-l-deblur, then the 2019 "
                            "EDVR_REDS_deblur_Stage2 network (predeblur, HR input, 20 blocks); 9 input frames")
def edvr_l_deblur_cascade(*, stage1: dict[str, Any] | None = None,
                          stage2: dict[str, Any] | None = None) -> EDVRCascade:
    return _build({**_L, "with_predeblur": True, **_HR}, {**_STAGE2_L, "with_predeblur": True}, stage1, stage2)
