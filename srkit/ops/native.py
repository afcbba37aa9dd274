"""srkit's optional compiled CPU kernels, built on first use with PyTorch's C++ extension tooling.

Today one kernel: the fused deformable im2col of :func:`srkit.ops.deform_conv.deform_conv2d`'s
inference path (``csrc/deform_im2col.cpp``). It is built once per machine (about a minute, with the
system's C++ compiler and ninja) into PyTorch's extension cache (``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``) and loaded from there afterwards. The build is keyed by the source, the
PyTorch version and the CPU's feature flags, since it is compiled for the CPU it runs on
(``-march=native``): a home directory shared by different machines gets one build per CPU.

Everything works without it: when there is no compiler, the build fails, or ``SRKIT_NATIVE=0`` is set,
the kernel is None and the callers take their pure-PyTorch path (same results up to float rounding),
with one warning naming the cause.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Callable

import torch

logger = logging.getLogger("srkit.ops.native")

_SOURCE = Path(__file__).with_name("csrc") / "deform_im2col.cpp"


def _cpu_signature() -> str:
    """The CPU's feature flags (Linux) or its name: what a ``-march=native`` build depends on."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _flags() -> tuple[list[str], list[str]]:
    if sys.platform == "win32":
        return ["/O2", "/openmp"], []
    return ["-O3", "-march=native", "-fopenmp"], ["-fopenmp"]


def native_disabled() -> bool:
    return os.environ.get("SRKIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


@functools.lru_cache(maxsize=None)
def deform_im2col() -> Callable | None:
    """The compiled ``deform_im2col(x, offset, mask, cols, kh, kw, sh, sw, ph, pw, dh, dw, r0, dg)``,
    or None (disabled, or it cannot be built here: see the module docstring)."""
    if native_disabled():
        return None
    try:
        # Importing the extension tooling logs a warning about CUDA on CPU-only machines: not ours to show.
        tooling_logger = logging.getLogger("torch.utils.cpp_extension")
        level = tooling_logger.level
        tooling_logger.setLevel(logging.ERROR)
        try:
            from torch.utils import cpp_extension
        finally:
            tooling_logger.setLevel(level)

        source = _SOURCE.read_bytes()
        key = hashlib.sha256(source + torch.__version__.encode() + _cpu_signature().encode()).hexdigest()[:12]
        name = f"srkit_deform_im2col_{key}"
        root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
        build_dir = Path(root) / name
        build_dir.mkdir(parents=True, exist_ok=True)
        if not any(build_dir.glob(f"{name}.*")):
            # Shown whatever the logging set-up: the first call pauses for the build.
            print("srkit: building the compiled deformable-sampling kernel for this CPU (once, about a minute)",
                  file=sys.stderr, flush=True)
        cflags, ldflags = _flags()
        module = cpp_extension.load(name=name, sources=[str(_SOURCE)], extra_cflags=cflags, extra_ldflags=ldflags,
                                    build_directory=str(build_dir), verbose=False)
        return module.deform_im2col
    except Exception as exc:  # no compiler / ninja, a failed build: the PyTorch path serves
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        logger.warning("srkit: compiled CPU kernel unavailable (%s); using the PyTorch path "
                       "(set SRKIT_NATIVE=0 to skip the build)", first)
        return None
