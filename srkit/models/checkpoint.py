"""Checkpoints: srkit's own safetensors format, and the published formats of other toolkits.

Saving
    :func:`save_model` writes a ``.safetensors`` file (atomically: temp name + rename) whose metadata
    rebuilds the network: ``{"format": "srkit", "format_version": "1", "family", "preset", "config"}``
    (``config`` is the JSON of ``model.config_dict()``, the complete set of preset overrides).

Loading
    :func:`load_model` rebuilds a model from one file; :func:`load_weights` loads a file into an
    existing model; :func:`create_model` builds a registered preset and loads a file (or the weights
    shipped with it) into it. Accepted files:

    * srkit safetensors (any other safetensors file is read as a bare state dict);
    * srkit training checkpoints (``iter_*.pt`` / ``best.pt`` of ``srkit train``): BasicSR-style
      weights plus ``meta.model_config``, from which :func:`load_model` rebuilds the exact network
      (hyper-parameters without weights, e.g. UDVD's ``kernel_norm``, included);
    * BasicSR ``{"params": ...}`` / ``{"params_ema": ...}`` (the EMA weights are preferred);
    * MMagic / MMEditing ``{"state_dict": {"generator.…": ...}}``;
    * bare state dicts (optionally with DataParallel's ``module.`` prefix), e.g. the 2019
      xinntao/EDVR release, and generic training files ``{"model" | "net_g" | "net" | "network" |
      "generator": state_dict, "optimizer": ..., ...}``.

    Pickled files are read with ``torch.load(weights_only=True)`` only: a pickle that would need to
    run code (import a class or call a function) is refused with a one-line :class:`CheckpointError`
    and nothing in it is executed.

Foreign key names
    :func:`convert_state_dict` applies them to an in-memory state dict (no strictness: for partial
    initialisation such as ``model.init_from``). Each model family registers, in its own model file,
    **key adapters** ``fn(state) -> dict | None`` that recognise a foreign naming (returning None
    when it is not theirs) and rename the keys (and fix any layout difference) to srkit's names, e.g.
    EDVR's for MMagic ``EDVRNet`` and the 2019 ``EDVR_arch`` names (BasicSR's names *are* srkit's
    EDVR names). A family plugs in without editing this file::

        from srkit.models.checkpoint import register_checkpoint_support

        def _from_official(state):
            if "head.0.weight" not in state:
                return None
            return {k.replace("head.0", "conv_first"): v for k, v in state.items()}

        register_checkpoint_support("udvd", key_adapters=[_from_official], config_inferrer=infer_config)

    When the preset is not known (foreign files carry no metadata) it is inferred: every registered
    preset is built on the ``meta`` device (no memory, no init) and the one whose state-dict keys and
    shapes equal the checkpoint's wins; a family may also register a **config inferrer**
    (``fn(state) -> (preset, overrides) | None``) for checkpoints trained with non-preset
    hyper-parameters. A checkpoint that fits nothing gets ONE error naming the preset it most
    resembles and its first mismatches (missing / unexpected / shape).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from srkit.errors import CheckpointError, ConfigError, SrkitError
from srkit.io.atomic import atomic_path
from srkit.models.api import SRModel
from srkit.models.registry import list_families, list_models, model_entry, pretrained_path

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LoadedCheckpoint",
    "StateDictDiff",
    "TRAIN_FORMAT",
    "convert_state_dict",
    "create_model",
    "load_model",
    "load_model_with_info",
    "load_weights",
    "read_checkpoint",
    "register_checkpoint_support",
    "register_config_inferrer",
    "register_key_adapter",
    "safe_torch_load",
    "safetensors_header_length",
    "save_model",
    "stored_preset",
    "state_dict_diff",
    "state_dict_shapes",
]

FORMAT = "srkit"
FORMAT_VERSION = "1"
# srkit training checkpoints (srkit/train/checkpointing.py): BasicSR-style ``params`` / ``params_ema``
# plus ``meta = {"preset", "model_config" (JSON of config_dict()), ...}`` that rebuild the network.
TRAIN_FORMAT = "srkit-train"

StateDict = dict[str, torch.Tensor]
KeyAdapter = Callable[[StateDict], "StateDict | None"]
ConfigInferrer = Callable[[StateDict], "tuple[str, dict[str, Any]] | None"]

_KEY_ADAPTERS: dict[str, list[KeyAdapter]] = {}
_CONFIG_INFERRERS: dict[str, list[ConfigInferrer]] = {}


def register_key_adapter(family: str, fn: KeyAdapter) -> KeyAdapter:
    """Register ``fn(state) -> converted state | None`` for checkpoints of model ``family``.

    ``fn`` gets a flat ``{name: tensor}`` dict (wrappers such as ``params_ema`` / ``state_dict`` /
    ``generator.`` / ``module.`` already removed) and returns it with srkit's key names, or None when
    the naming is not the one it knows. Usable as a decorator-free call at import of the model file.
    """
    _KEY_ADAPTERS.setdefault(family, []).append(fn)
    return fn


def register_config_inferrer(family: str, fn: ConfigInferrer) -> ConfigInferrer:
    """Register ``fn(state in srkit names) -> (preset, overrides) | None`` for ``family``.

    Used when no preset's keys and shapes equal a foreign checkpoint's (e.g. a model trained with
    other widths or block counts): the returned preset + overrides is built and checked strictly.
    """
    _CONFIG_INFERRERS.setdefault(family, []).append(fn)
    return fn


def register_checkpoint_support(family: str, *, key_adapters: Iterable[KeyAdapter] = (),
                                config_inferrer: ConfigInferrer | None = None) -> None:
    """What a model file registers for its ``family``: the key adapters of the foreign namings it
    reads (:func:`register_key_adapter`, tried in this order) and the inferrer of non-preset configs
    (:func:`register_config_inferrer`)."""
    for fn in key_adapters:
        register_key_adapter(family, fn)
    if config_inferrer is not None:
        register_config_inferrer(family, config_inferrer)


# --------------------------------------------------------------------------------------- reading
@dataclass
class LoadedCheckpoint:
    """A checkpoint file's tensors and what is known of where they come from."""

    state: StateDict
    source: str  # "srkit", "srkit-train", "basicsr", "mmagic", "state_dict" (bare) or "safetensors" (bare)
    metadata: dict[str, str]
    note: str = ""  # e.g. "params_ema" (which entry of a BasicSR file was used)


def safetensors_header_length(path: Path) -> int | None:
    """The header length of a safetensors file (8-byte little-endian length, then a JSON object), or
    None when ``path`` is not one.  A length beyond the file end still counts: that is a truncated
    safetensors file, not a pickle; the 100 MB cap keeps random bytes starting with '{' out."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return None
    n = int.from_bytes(head[:8], "little")
    return n if 2 <= n <= 100 * 2**20 else None


def _strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _only_tensors(state: Mapping[str, Any], path: Path, what: str) -> StateDict:
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{what} holds non-tensor entries (e.g. {bad[0]!r}); not a state dict", path)
    if not state:
        raise CheckpointError(f"{what} is empty", path)
    return dict(state)


_REFUSED = ("refused: this pickle needs to run code{what} to load; srkit only loads plain tensor checkpoints "
            "(safetensors, or torch.save of tensors/dicts), and nothing in it was executed")


def _weights_only_globals() -> set[str]:
    """Globals torch.load(weights_only=True) itself rebuilds tensors with: naming one of them as "the
    code to run" would point at the wrong culprit when a pickle also imports something else."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 - a private torch helper: without it, name the first import
        return set()


def _pickle_global(path: Path) -> str | None:
    """The global a plain (non-zip) pickle imports on loading -- ``module.name``, "" when its name
    cannot be told -- or None when it imports none. Read with :mod:`pickletools`, which parses
    opcodes without executing anything (torch's weights-only reader stops at protocol 4's first
    opcode, before it reaches the imports)."""
    import pickletools

    allowed = _weights_only_globals()
    found: list[str] = []
    strings: list[str] = []  # strings pushed so far: STACK_GLOBAL takes module and name from them
    memo: dict[int, str | None] = {}
    last: str | None = None  # the string the previous opcode pushed, if any
    try:
        with open(path, "rb") as fh:
            for op, arg, _ in pickletools.genops(fh):
                pushed = None
                if op.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    found.append(".".join(strings[-2:]) if len(strings) >= 2 else "")
                elif op.name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ") and not found:
                    found.append("")
                elif "UNICODE" in op.name or op.name.endswith("STRING"):
                    pushed = arg if isinstance(arg, str) else None
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = last
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = last
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed = memo.get(int(arg))
                if pushed is not None:
                    strings.append(pushed)
                last = pushed if pushed is not None else (last if op.name in ("MEMOIZE", "PUT", "BINPUT",
                                                                                 "LONG_BINPUT") else None)
                if found and found[-1] and found[-1] not in allowed:
                    return found[-1]
    except Exception:  # noqa: BLE001 - a corrupt or cut pickle: judged on what was read before it
        pass
    return found[0] if found else None


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with its failures as one-line :class:`CheckpointError`:
    a pickle that would run code is refused (saying so, naming what it imports), anything else is
    "not a readable checkpoint". torch's advice to retry with ``weights_only=False`` is never
    passed on, and its warnings about unusual pickle protocols are not printed."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # A plain pickle.dump file (protocol 4/5) makes torch warn before failing: the failure says it all.
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if not re.search(r"global|reduce|class", text, re.IGNORECASE):
            # No import named by torch: either bytes that are not a pickle, or a plain (non-zip) pickle
            # whose protocol torch's weights-only reader cannot even parse up to its imports.
            culprit = _pickle_global(path)
            if culprit is not None:
                raise CheckpointError(_REFUSED.format(what=f" ({culprit})" if culprit else ""), path) from None
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
            first = detail.group(1).strip() if detail else (text.strip().splitlines() or ["invalid pickle"])[0]
            if "weights_only" in first:  # torch's advice paragraph, not a detail of this file
                first = "invalid pickle"
            with open(path, "rb") as fh:
                head = fh.read(2)
            if head[:1] == b"\x80" and len(head) == 2 and head[1] > 2 and "Unsupported operand" in first:
                first = (f"a plain pickle of protocol {head[1]}, not a torch.save file; save the weights with "
                         "torch.save or as safetensors")
            raise CheckpointError(f"not a readable checkpoint ({first})", path) from None
        culprit = re.search(r"GLOBAL (\S+)", text)
        raise CheckpointError(_REFUSED.format(what=f" ({culprit.group(1)})" if culprit else ""), path) from None
    except Exception as exc:  # noqa: BLE001 - truncated zip, random bytes, ...
        # torch's own messages for such files are cryptic ("101" is a KeyError on the first byte,
        # an empty file an empty EOFError): say what was tried, keep torch's text as a detail.
        if path.stat().st_size == 0:
            raise CheckpointError("not a readable checkpoint (the file is empty)", path) from None
        msg = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
        if "weights_only" in msg:
            msg = ""
        detail = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
        raise CheckpointError("not a readable checkpoint (neither safetensors nor a torch.save file; "
                              f"torch.load: {detail})", path) from None


def stored_preset(path: str | os.PathLike) -> str | None:
    """The preset an srkit model file says it holds, read from its header alone; None for any other file
    (foreign formats, training checkpoints, unreadable files: :func:`read_checkpoint` reports those)."""
    path = Path(path)
    try:
        if not path.is_file() or safetensors_header_length(path) is None:
            return None
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
    except Exception:  # noqa: BLE001 - corrupt files are refused with their cause when they are read
        return None
    return (metadata.get("preset") or None) if metadata.get("format") == FORMAT else None


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    param_key: str | None = None) -> LoadedCheckpoint:
    """Read any accepted checkpoint file into a flat state dict (foreign key names kept as they are).

    ``param_key`` picks an entry of a BasicSR-style dict explicitly (default: ``params_ema`` when
    present, else ``params``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint file not found" if not path.exists() else "not a file", path)
    header_len = safetensors_header_length(path)
    if header_len is not None:
        from safetensors import safe_open

        if header_len > path.stat().st_size - 8:
            raise CheckpointError("truncated safetensors file (its header runs past the end of the file)", path)

        try:
            with safe_open(str(path), framework="pt", device=str(map_location)) as fh:
                metadata = dict(fh.metadata() or {})
                state = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # noqa: BLE001 - a corrupt file is the user's input problem
            raise CheckpointError(f"corrupt safetensors file ({exc})", path) from None
        if not state:
            raise CheckpointError("safetensors file holds no tensors", path)
        source = FORMAT if metadata.get("format") == FORMAT else "safetensors"
        return LoadedCheckpoint(state, source, metadata)

    obj = safe_torch_load(path, map_location)

    if isinstance(obj, torch.nn.Module):  # cannot happen with weights_only, kept as a guard
        raise CheckpointError("holds a pickled module; save its state_dict instead", path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"holds a {type(obj).__name__}, not a state dict", path)

    source, metadata = _train_metadata(obj)
    if param_key is not None:
        if param_key not in obj:
            raise CheckpointError(f"has no entry {param_key!r} (entries: {', '.join(map(str, obj))})", path)
        if not isinstance(obj[param_key], Mapping) or not obj[param_key]:
            # e.g. params_ema of a training checkpoint written without EMA (stored as None).
            raise CheckpointError(f"entry {param_key!r} holds no weights", path)
        return LoadedCheckpoint(_only_tensors(_strip_prefix(obj[param_key], "module."), path, param_key),
                                source, metadata, param_key)
    for key in ("params_ema", "params"):  # BasicSR: the EMA weights are the published ones
        if isinstance(obj.get(key), Mapping) and obj[key]:
            return LoadedCheckpoint(_only_tensors(_strip_prefix(obj[key], "module."), path, key),
                                    source, metadata, key)
    if isinstance(obj.get("state_dict"), Mapping):
        sd = obj["state_dict"]
        for prefix in ("generator_ema.", "generator."):  # MMagic: EMA generator when it has one
            sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            if sub:
                return LoadedCheckpoint(_only_tensors(sub, path, "state_dict"), "mmagic", {}, prefix.rstrip("."))
        return LoadedCheckpoint(_only_tensors(_strip_prefix(sd, "module."), path, "state_dict"), "state_dict", {})
    # Generic training checkpoints ({"model": ..., "optimizer": ..., "epoch": ...}).
    for key in ("model", "net_g", "net", "network", "generator"):
        sub = obj.get(key)
        if isinstance(sub, Mapping) and sub and all(isinstance(v, torch.Tensor) for v in sub.values()):
            return LoadedCheckpoint(_only_tensors(_strip_prefix(sub, "module."), path, key), "state_dict", {}, key)
    return LoadedCheckpoint(_only_tensors(_strip_prefix(obj, "module."), path, "checkpoint"), "state_dict", {})


def _train_metadata(obj: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """("srkit-train", {"preset", "config", "family"}) for an srkit training checkpoint, else ("basicsr", {}).

    A training checkpoint stores the exact model config, which carries what the weights cannot
    show (e.g. UDVD's kernel_norm, a non-middle centre frame): loading must use it, not guess.
    """
    meta = obj.get("meta")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("model_config"), str):
        return "basicsr", {}
    out = {"format": TRAIN_FORMAT, "config": meta["model_config"], "preset": str(meta.get("preset") or "")}
    try:
        out["family"] = model_entry(out["preset"]).family
    except Exception:  # noqa: BLE001 - a preset unknown to this srkit: decided when loading
        out["family"] = ""
    return TRAIN_FORMAT, out


# --------------------------------------------------------------------------------------- matching
@lru_cache(maxsize=None)
def _preset_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of preset ``name``, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = create_model(name)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def state_dict_shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """The shape table of a state dict: ``{key: shape}`` (what :func:`state_dict_diff` compares)."""
    return {k: tuple(v.shape) for k, v in state.items()}


@dataclass
class StateDictDiff:
    """How a state dict's keys and shapes differ from what a model expects (``ok`` when they match)."""

    missing: list[str]
    unexpected: list[str]
    shape: list[str]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape)

    def score(self, n_expected: int) -> float:
        """Fraction of the model's keys present with the right shape (penalising extras)."""
        good = n_expected - len(self.missing) - len(self.shape)
        return good / max(1, n_expected + len(self.unexpected))

    def describe(self, limit: int = 3) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({', '.join(self.missing[:limit])}"
                         f"{', ...' if len(self.missing) > limit else ''})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({', '.join(self.unexpected[:limit])}"
                         f"{', ...' if len(self.unexpected) > limit else ''})")
        if self.shape:
            parts.append(f"{len(self.shape)} of another shape ({', '.join(self.shape[:limit])}"
                         f"{', ...' if len(self.shape) > limit else ''})")
        return "; ".join(parts)


def state_dict_diff(state: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]) -> StateDictDiff:
    """How shape table ``state`` differs from ``expected``: missing keys, unexpected keys, other shapes."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shape = [f"{k} {list(state[k])} vs {list(expected[k])}" for k in expected
             if k in state and tuple(state[k]) != tuple(expected[k])]
    return StateDictDiff(missing, unexpected, shape)


def _candidates(state: StateDict, family: str | None) -> list[tuple[str, StateDict]]:
    """(family, converted state) for every family's adapters that accept ``state``, plus as-is."""
    families = [family] if family else list_families()
    out: list[tuple[str, StateDict]] = []
    for fam in families:
        for adapter in _KEY_ADAPTERS.get(fam, []):
            try:
                converted = adapter(dict(state))
            except Exception:  # noqa: BLE001 - another family's adapter choking on this file: not a match
                converted = None
            if converted is not None:
                out.append((fam, converted))
        out.append((fam, state))  # srkit's own names
    return out


def _best_preset(state: StateDict, family: str | None, path: Path | None,
                 preferred: str | None = None) -> tuple[str, dict[str, Any], StateDict]:
    """Find (preset, overrides, converted state) whose keys and shapes equal the checkpoint's."""
    best: tuple[float, str, StateDictDiff] | None = None
    for fam, converted in _candidates(state, family):
        shapes = state_dict_shapes(converted)
        names = list_models(fam)
        if preferred in names:
            names = [preferred] + [n for n in names if n != preferred]
        exact = []
        for name in names:
            d = state_dict_diff(shapes, _preset_shapes(name))
            if d.ok:
                exact.append(name)
            s = d.score(len(_preset_shapes(name)))
            if best is None or s > best[0]:
                best = (s, name, d)
        if exact:
            return _pick_by_filename(exact, path, preferred), {}, converted
        for inferrer in _CONFIG_INFERRERS.get(fam, []):
            try:
                guess = inferrer(converted)
            except Exception:  # noqa: BLE001 - an inferrer that cannot read this state: not a match
                guess = None
            if guess is not None:
                name, overrides = guess
                with torch.device("meta"):
                    try:
                        shaped = {k: tuple(v.shape) for k, v in create_model(name, **overrides).state_dict().items()}
                    except Exception:  # noqa: BLE001 - an implausible guess is just not a match
                        continue
                if state_dict_diff(shapes, shaped).ok:
                    return name, overrides, converted
    if best is None:
        raise CheckpointError("no model family is registered to load it", path)
    _, name, d = best
    raise CheckpointError(f"fits no registered preset; closest is {name}: {d.describe()}", path)


def _pick_by_filename(names: list[str], path: Path | None, preferred: str | None) -> str:
    """Presets with identical shapes (edvr-l-deblur / -deblurcomp): the file name decides, if it can."""
    if preferred in names:
        return preferred
    if path is not None and len(names) > 1:
        stem = re.sub(r"[^a-z0-9]", "", path.name.lower())
        hits = [n for n in names if re.sub(r"[^a-z0-9]", "", n) in stem]
        if hits:
            return max(hits, key=len)
    return names[0]


# --------------------------------------------------------------------------------------- API
def save_model(model: nn.Module, path: str | os.PathLike, extra_metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model`` as srkit safetensors (atomically) with the metadata that rebuilds it."""
    from safetensors.torch import save_file

    if not isinstance(model, SRModel):
        raise TypeError("save_model needs an srkit SRModel (it stores the preset and config)")
    path = Path(path)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": model.family,
        "preset": model.preset or "",
        "config": json.dumps(model.config_dict(), sort_keys=True),
    }
    for k, v in (extra_metadata or {}).items():
        if k in metadata:
            raise ValueError(f"extra_metadata may not override {k!r}")
        metadata[str(k)] = str(v)
    tensors: StateDict = {}
    seen: set[int] = set()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu").contiguous()
        # safetensors refuses tensors sharing storage: give shared ones their own copy.
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel():
            t = t.clone()
        seen.add(ptr)
        tensors[k] = t
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def _fit_error(path: Path | None, target: str, diff: StateDictDiff, state: StateDict, family: str | None) -> CheckpointError:
    closest = ""
    try:
        scored = []
        for fam, converted in _candidates(state, family):
            shapes = state_dict_shapes(converted)
            for name in list_models(fam):
                expected = _preset_shapes(name)
                scored.append((state_dict_diff(shapes, expected).score(len(expected)), name))
        if scored:
            closest = f"; it most resembles preset {max(scored)[1]}"
    except Exception:  # noqa: BLE001 - the hint is best effort, the diff is the message
        pass
    return CheckpointError(f"does not fit {target}: {diff.describe()}{closest}", path)


def _convert_for(model: nn.Module, state: StateDict) -> tuple[StateDict, StateDictDiff]:
    """The converted state (by the model family's adapters, or as-is) that fits ``model`` best."""
    expected = state_dict_shapes(model.state_dict())
    family = getattr(model, "family", None) or None
    best: tuple[float, StateDict, StateDictDiff] | None = None
    for _, converted in _candidates(state, family):
        d = state_dict_diff(state_dict_shapes(converted), expected)
        if d.ok:
            return converted, d
        s = d.score(len(expected))
        if best is None or s > best[0]:
            best = (s, converted, d)
    assert best is not None
    return best[1], best[2]


def convert_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> StateDict:
    """``state`` with foreign key names (MMagic, 2019 EDVR, ...) renamed to ``model``'s own names.

    The family's key adapters are tried and the renaming that fits ``model`` best is returned (a
    state already in srkit/BasicSR names comes back unchanged; DataParallel's ``module.`` prefix
    is removed). Nothing is checked: the result may still lack keys or hold others, which lets a
    caller load a partial fit on purpose (``model.init_from`` starting EDVR with TSA from woTSA
    weights) and report the difference itself. :func:`load_weights` is the strict file loader.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"convert_state_dict needs a mapping of tensors, got {type(state).__name__}")
    return _convert_for(model, _strip_prefix(state, "module."))[0]


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True,
                 param_key: str | None = None) -> nn.Module:
    """Load any accepted checkpoint file into ``model`` (keys renamed by the family's adapters).

    With ``strict`` every key must be present with the right shape and none may be left over;
    otherwise the matching subset is loaded (shape mismatches are always an error).
    """
    path = Path(path)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ckpt = read_checkpoint(path, map_location="cpu", param_key=param_key)
    state, diff = _convert_for(model, ckpt.state)
    if diff.shape or (strict and not diff.ok):
        target = f"model {getattr(model, 'preset', None) or type(model).__name__}"
        raise _fit_error(path, target, diff, ckpt.state, getattr(model, "family", None) or None)
    model.load_state_dict(state, strict=strict)
    return model.to(device)


def create_model(name: str, *, weights: str | os.PathLike | None = None, pretrained: bool = False,
                 **overrides: Any) -> nn.Module:
    """Build preset ``name`` (with config ``overrides``).

    ``weights`` loads a checkpoint (any accepted format); ``pretrained=True`` loads the weights shipped
    with srkit for this preset (see :func:`srkit.models.registry.pretrained_path`). Without either the
    weights are random.
    """
    entry = model_entry(name)
    if pretrained:
        if weights is not None:
            raise ConfigError("give either weights or pretrained=True, not both")
        weights = pretrained_path(name)
    try:
        model = entry.builder(**overrides)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None
    model.preset = name
    if weights is not None:
        load_weights(model, weights)
    return model


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
               preset: str | None = None, param_key: str | None = None):
    """Rebuild the model stored in ``path`` (srkit file: from its metadata; foreign: inferred preset).

    ``preset`` forces the network for a foreign file (keys must still fit strictly); ``param_key``
    picks an entry of a BasicSR-style dict (default ``params_ema``, else ``params``).
    """
    return load_model_with_info(path, map_location, preset=preset, param_key=param_key)[0]


def load_model_with_info(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                         preset: str | None = None, param_key: str | None = None):
    """:func:`load_model` that also returns the :class:`LoadedCheckpoint` it read (source format etc.)."""
    path = Path(path)
    ckpt = read_checkpoint(path, map_location="cpu", param_key=param_key)
    meta = ckpt.metadata
    # A training checkpoint names a preset of the srkit that trained it; if this srkit lacks it,
    # the weights are still loadable by the shape-based inference below.
    rebuild = ckpt.source == FORMAT or (ckpt.source == TRAIN_FORMAT and meta.get("preset") in list_models())
    if rebuild and preset is None:
        if ckpt.source == FORMAT and meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"srkit format version {meta.get('format_version')!r} is not supported "
                                  f"(this srkit reads version {FORMAT_VERSION})", path)
        try:
            config = json.loads(meta["config"])
        except (KeyError, json.JSONDecodeError):
            raise CheckpointError("srkit checkpoint has no valid 'config' metadata", path) from None
        if not isinstance(config, dict):
            raise CheckpointError("srkit checkpoint has no valid 'config' metadata", path)
        name = meta.get("preset") or ""
        if name not in list_models():
            # The config is complete, so any preset of the family rebuilds the same network.
            family_presets = list_models(meta.get("family") or None) if meta.get("family") else []
            if not family_presets:
                raise CheckpointError(f"model {name or meta.get('family')!r} is not available in this srkit", path)
            build_with = family_presets[0]
        else:
            build_with = name
        try:
            model = create_model(build_with, **config)
        except SrkitError as exc:  # e.g. a config field from a newer srkit
            raise CheckpointError(f"its stored config cannot be built by this srkit ({exc})", path) from None
        model.preset = name or None
        diff = state_dict_diff(state_dict_shapes(ckpt.state), state_dict_shapes(model.state_dict()))
        if not diff.ok:
            raise _fit_error(path, f"its own config ({name or build_with})", diff, ckpt.state, model.family)
        model.load_state_dict(ckpt.state, strict=True)
        return model.to(map_location), ckpt

    if preset is not None:
        model_entry(preset)  # unknown preset -> ConfigError with suggestions
        model = create_model(preset)
        state, diff = _convert_for(model, ckpt.state)
        if not diff.ok:
            raise _fit_error(path, f"preset {preset}", diff, ckpt.state, model.family)
    else:
        name, overrides, state = _best_preset(ckpt.state, None, path)
        model = create_model(name, **overrides)
    model.load_state_dict(state, strict=True)
    return model.to(map_location), ckpt
