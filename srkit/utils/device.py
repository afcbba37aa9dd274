"""Device and precision selection shared by inference, evaluation and training.

Importable without PyTorch (torch is imported inside the functions): the command line takes
:data:`PRECISIONS` for its choices before any heavy import.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

from srkit.errors import ConfigError

if TYPE_CHECKING:
    import torch

# autocast precisions (names of torch dtypes)
PRECISIONS: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def select_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device that is absent is an error."""
    import torch

    if isinstance(name, torch.device):
        return name
    name = name.lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' requested but MPS is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None


def is_channels_last(t: torch.Tensor) -> bool:
    """Whether ``t`` is laid out NHWC (and not also plain contiguous, as 1-channel or 1x1 maps are)."""
    import torch

    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def autocast(device: torch.device, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` (``fp32`` is a no-op)."""
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r} (use {', '.join(PRECISIONS)})")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type == "cpu":
        # CPU fp16 autocast exists but is slow and lossy on most CPUs; bf16 is the CPU choice.
        return torch.autocast("cpu", dtype=torch.float16)
    return torch.autocast(device.type, dtype=getattr(torch, PRECISIONS[precision]))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set the intra-op thread count (``None`` leaves it alone)."""
    import torch

    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); None when PyTorch cannot tell."""
    import torch

    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:  # older PyTorch
        return None


def cpu_summary() -> str:
    """One line naming the CPU, its core count and what matters for speed (for benchmarks and model cards)."""
    import torch

    import os
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    native = cpu_has_native_bf16()
    bf16 = {True: "native bf16", False: "no native bf16", None: "bf16 support unknown"}[native]
    amx = getattr(getattr(torch, "cpu", None), "_is_amx_tile_supported", lambda: False)()
    return (f"{name}, {os.cpu_count()} cores, PyTorch {torch.__version__.split('+')[0]} "
            f"({torch.backends.cpu.get_cpu_capability()}), {bf16}{' (AMX)' if amx else ''}")
