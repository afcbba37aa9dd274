"""A folder of training checkpoints that never loses one: atomic writes, manifests, keep-last-K + best.

Layout of ``<run>/checkpoints``::

    iter_00005000.pt      torch.save of plain tensors / dicts / numbers (torch.load(weights_only=True))
    iter_00005000.json    manifest: iteration, size, sha256 (written AFTER the .pt, both atomically)
    best.pt / best.json   the best validation checkpoint (kept apart from the last K)

A checkpoint counts only when its manifest exists and the file's size and SHA-256 match it: a file
truncated by a full disk, corrupted on copy, or written by a process killed before its manifest is
skipped (with a message) in favour of the previous one.

The ``.pt`` files hold ``params`` / ``params_ema`` at the top level, as BasicSR checkpoints do, so
that ``srkit upscale --weights iter_....pt`` and other tools read the weights directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from srkit.errors import CheckpointError, OutputError
from srkit.io.atomic import atomic_path, atomic_write_text

FORMAT = "srkit-train"
FORMAT_VERSION = 1
_NAME = re.compile(r"^iter_(\d{8,})\.pt$")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    iteration: int


class CheckpointStore:
    """Save, list, verify and load the checkpoints of one run."""

    def __init__(self, folder: str | os.PathLike, keep_last: int = 3, log: Callable[[str], None] = print):
        self.folder = Path(folder)
        self.keep_last = keep_last
        self.log = log

    # -- writing -------------------------------------------------------------------------------------

    def save(self, state: dict[str, Any], iteration: int, *, best: bool = False) -> Path:
        """Write ``state`` as ``iter_<iteration>.pt`` (+ manifest), prune old ones; also ``best`` if asked."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"iter_{iteration:08d}.pt"
        self._write(path, state, iteration)
        if best:
            self.save_best(path, iteration)
        self.prune()
        return path

    def save_best(self, source: Path, iteration: int) -> Path:
        """Copy a verified checkpoint to ``best.pt`` (a hard link when possible: no extra disk)."""
        dst = self.folder / "best.pt"
        with atomic_path(dst) as tmp:
            tmp.unlink()
            try:
                os.link(source, tmp)
            except OSError:
                import shutil

                shutil.copyfile(source, tmp)
        self._write_manifest(dst, iteration)
        return dst

    def _write(self, path: Path, state: dict[str, Any], iteration: int) -> None:
        payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "iteration": iteration, **state}
        try:
            with atomic_path(path) as tmp:
                torch.save(payload, tmp)
            self._write_manifest(path, iteration)
        except OSError as exc:  # disk full, folder removed, ...: earlier checkpoints are untouched
            raise OutputError(f"cannot write checkpoint ({exc.strerror or exc}); the previous ones are intact", path) from None

    def _write_manifest(self, path: Path, iteration: int) -> None:
        manifest = {
            "file": path.name,
            "iteration": iteration,
            "size": path.stat().st_size,
            "sha256": sha256_file(path),
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
        }
        atomic_write_text(path.with_suffix(".json"), json.dumps(manifest, indent=1) + "\n")

    def prune(self) -> None:
        """Keep the newest ``keep_last`` iteration checkpoints (best.pt is separate and always kept)."""
        found = self._candidates()
        for info in found[: max(0, len(found) - self.keep_last)]:
            for p in (info.path, info.path.with_suffix(".json")):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass

    # -- reading -------------------------------------------------------------------------------------

    def _candidates(self) -> list[CheckpointInfo]:
        if not self.folder.is_dir():
            return []
        out = []
        for p in self.folder.iterdir():
            m = _NAME.match(p.name)
            if m:
                out.append(CheckpointInfo(p, int(m.group(1))))
        return sorted(out, key=lambda c: c.iteration)

    def verify(self, path: Path) -> str | None:
        """``None`` when ``path`` matches its manifest, else the reason it cannot be trusted."""
        manifest_path = path.with_suffix(".json")
        if not path.is_file():
            return "file missing"
        if not manifest_path.is_file():
            return "no manifest (the writer was interrupted before finishing)"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            size, digest = int(manifest["size"]), str(manifest["sha256"])
        except (ValueError, KeyError, TypeError, OSError):
            return "manifest unreadable"
        actual = path.stat().st_size
        if actual != size:
            return f"size {actual} bytes differs from the manifest's {size} (truncated?)"
        if sha256_file(path) != digest:
            return "checksum differs from the manifest (corrupt)"
        return None

    def latest_valid(self) -> CheckpointInfo | None:
        """The newest checkpoint that passes :meth:`verify`; bad ones are reported and skipped."""
        for info in reversed(self._candidates()):
            problem = self.verify(info.path)
            if problem is None:
                return info
            self.log(f"skipping checkpoint {info.path}: {problem}; trying the previous one")
        return None

    def load(self, path: str | os.PathLike, *, verify: bool = True) -> dict[str, Any]:
        return load_checkpoint(path, verify=verify, store=self)


def load_checkpoint(path: str | os.PathLike, *, verify: bool = True, store: CheckpointStore | None = None) -> dict[str, Any]:
    """Load a training checkpoint safely (``weights_only=True``); raise :class:`CheckpointError` if bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path)
    if verify and path.with_suffix(".json").is_file():
        problem = (store or CheckpointStore(path.parent)).verify(path)
        if problem is not None:
            raise CheckpointError(f"checkpoint is not valid: {problem}", path)
    from srkit.models.checkpoint import safe_torch_load, safetensors_header_length

    if safetensors_header_length(path) is not None:
        raise CheckpointError("is a weights file (safetensors), not a training checkpoint: --resume continues a run "
                              "from its checkpoints/iter_*.pt (model.init_from starts from weights)", path)
    # The same refusals as every other checkpoint srkit reads (code-running pickles, torch's advice
    # to drop weights_only never quoted).
    state = safe_torch_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError("not an srkit training checkpoint (use model.init_from to start from weights)", path)
    if int(state.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"written by a newer srkit (format {state.get('format_version')})", path)
    return state
