"""Condition maps: what a non-blind model (UDVD) is told of how its input was degraded.

The maps are SRMD's (:func:`srkit.data.degrade.degradation_maps`): :data:`CONDITION_CHANNELS` per LR
pixel, the 15-D PCA code of the blur kernel, then the noise level ``sigma / 255``. The degradation
registry (:data:`srkit.data.degrade.DEGRADATIONS`) says which degradations produce them: the samples
of those carry their own maps (``DegradedSample.maps``). For any other input the maps are built here
from the blur and noise the user gives (:func:`udvd_condition`, :func:`udvd_condition_field`), or
from what the degradation's name implies (:func:`assumed_condition`).

The kernel codes are projections on a PCA basis, which every function here takes as ``pca_basis``:
None / ``"srkit"`` (srkit's shipped basis, what srkit's own models are trained with), ``"srmd"`` (SRMD's
procedure) or a MATLAB ``.mat`` file of SRMD / KAIR (:func:`srkit.data.degrade.load_pca_basis`). A model
must be given the codes of the basis it was trained with.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Union

import numpy as np

from srkit.data import degrade
from srkit.errors import ConfigError, InputError

__all__ = [
    "CONDITION_CHANNELS",
    "DEFAULT_BLUR",
    "assumed_blur",
    "assumed_condition",
    "check_noise",
    "degradations_for",
    "udvd_condition",
    "udvd_condition_field",
]

# A PCA basis option: a name ("srkit", "srmd"), a .mat / .npy file, an array, or None (srkit's).
PcaBasis = Union[str, os.PathLike, np.ndarray, None]

# 15 PCA coefficients of the blur kernel + 1 noise level.
CONDITION_CHANNELS = degrade.PCA_DIM + 1
# What is assumed when a conditioned model is given no blur (and the degradation fixes none): SRMD's
# smallest x4 kernel width, i.e. no blur beyond the bicubic downscaling (the BI and DN degradations).
DEFAULT_BLUR = degrade.DEFAULT_BLUR


def degradations_for(condition: str) -> tuple[str, ...]:
    """Names of the registered degradations whose samples carry the maps that a model conditioned on
    ``condition`` (its ``ModelSpec.condition``) takes."""
    return tuple(name for name, entry in degrade.DEGRADATIONS.items() if entry.condition == condition)


def assumed_blur(degradation: str, scale: int) -> float:
    """The Gaussian width (HR pixels) to describe when none is given: the one the degradation's defaults
    fix at ``scale`` (BD: ``0.4 * scale``), else :data:`DEFAULT_BLUR` (no blur, a random one, or a
    degradation known by name only, e.g. REDS ``blur_bicubic``)."""
    entry = degrade.DEGRADATIONS.get(degradation.upper())
    width = None if entry is None else entry.blur_width
    return DEFAULT_BLUR if width is None else width(scale)


def assumed_condition(degradation: str, scale: int, *, blur: float | None = None,
                      noise: float = 0.0, pca_basis: PcaBasis = None) -> Callable[[int, int], np.ndarray]:
    """``(h, w) -> maps`` for inputs whose degradation is known by name (LR frames from disk): an
    isotropic Gaussian of width ``blur`` (default :func:`assumed_blur`) and noise ``noise`` (0-255),
    its kernel coded on ``pca_basis``.

    Nothing is range-checked here: the caller has validated its options.
    """
    sigma = blur if blur is not None else assumed_blur(degradation, scale)
    code = degrade.kernel_to_code(degrade.gaussian_kernel(degrade.KERNEL_SIZE, sigma), pca_basis)
    return lambda h, w: degrade.degradation_maps(code, noise, h, w)


def _load_kernel(kernel: np.ndarray | str | os.PathLike) -> np.ndarray:
    if isinstance(kernel, (str, os.PathLike)):
        path = Path(kernel)
        if not path.is_file():
            raise InputError("no such kernel file" if not path.exists() else "kernel is not a file", path)
        try:
            kernel = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"not a readable .npy kernel ({exc})", path) from None
        where: Path | None = path
    else:
        where = None
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
        raise InputError(f"blur kernel must be a square 2-D array of odd size, got shape {k.shape}", where)
    if not np.all(np.isfinite(k)) or k.sum() <= 0:
        raise InputError("blur kernel must be finite with a positive sum", where)
    # A blur kernel preserves brightness: normalise so users may give unnormalised kernels.
    return (k / k.sum()).astype(np.float32)


def udvd_condition(
    height: int,
    width: int,
    *,
    blur: float | None = None,
    blur2: float | None = None,
    angle: float = 0.0,
    noise: float | np.ndarray = 0.0,
    kernel: np.ndarray | str | os.PathLike | None = None,
    pca_basis: PcaBasis = None,
) -> np.ndarray:
    """Degradation maps ``(16, height, width)`` float32 for an LR image of that size.

    Args:
        blur: Gaussian blur width (standard deviation, HR pixels) -- the paper's kernel width.
        blur2: second width for an anisotropic Gaussian (``None``: isotropic).
        angle: rotation of the anisotropic Gaussian in degrees (counter-clockwise).
        noise: AWGN level in 0-255 units; a scalar, or an ``(height, width)`` array for spatially
            variant noise.
        kernel: an explicit blur kernel (odd square array, or a ``.npy`` file) instead of ``blur``.
        pca_basis: the basis of the kernel codes (None: srkit's; ``"srmd"``; a ``.mat`` file of SRMD/KAIR).

    Use :func:`udvd_condition_field` for a blur kernel that varies per pixel. Give the result to the
    model as ``torch.from_numpy(maps)[None]``.
    """
    if kernel is not None:
        if blur is not None or blur2 is not None:
            raise ConfigError("give either a blur width or a kernel, not both")
        k = _load_kernel(kernel)
    else:
        if blur is None:
            raise ConfigError("UDVD needs the blur of the input: a width (--blur SIGMA) "
                              "or a kernel (--kernel FILE.npy)")
        for name, value in (("blur", blur), ("blur2", blur2)):
            if value is not None:
                degrade.check_blur_width(value, name)
        if not math.isfinite(angle):
            raise ConfigError(f"angle must be a finite number of degrees, got {angle}")
        k = degrade.gaussian_kernel(degrade.KERNEL_SIZE, float(blur), None if blur2 is None else float(blur2),
                                    math.radians(angle))
    check_noise(noise, height, width)
    basis = degrade.load_pca_basis(pca_basis)  # a bad basis option fails as itself, not as the kernel
    try:
        code = degrade.kernel_to_code(k, basis)
    except ValueError as exc:
        # Name the .npy file when the kernel came from one (the CLI's --kernel).
        where = Path(kernel) if isinstance(kernel, (str, os.PathLike)) else None
        raise InputError(f"blur kernel cannot be encoded: {exc}", where) from None
    return degrade.degradation_maps(code, noise, height, width)


def udvd_condition_field(kernels: np.ndarray, noise: float | np.ndarray = 0.0, *,
                         pca_basis: PcaBasis = None) -> np.ndarray:
    """Maps ``(16, h, w)`` for a spatially variant blur: ``kernels`` is ``(h, w, k, k)``, one per LR pixel.

    ``noise`` is a scalar or an ``(h, w)`` array (0-255 units); ``pca_basis`` the basis of the codes.
    This is the condition that matches :func:`srkit.data.degrade.spatially_variant_degrade`.
    """
    field = np.asarray(kernels, dtype=np.float32)
    if field.ndim != 4 or field.shape[2] != field.shape[3] or field.shape[2] % 2 == 0:
        raise ValueError(f"kernel field must be (h, w, k, k) with odd k, got shape {field.shape}")
    h, w, k, _ = field.shape
    check_noise(noise, h, w)
    basis = degrade.load_pca_basis(pca_basis)
    if k <= degrade.KERNEL_SIZE:
        # One projection for all pixels: pad every kernel to 15x15 (centred), then codes = P @ vec(k).
        m = (degrade.KERNEL_SIZE - k) // 2
        padded = np.pad(field, ((0, 0), (0, 0), (m, m), (m, m)))
        codes = np.einsum("pk,hwk->phw", basis, padded.reshape(h, w, -1), optimize=True)
    else:
        codes = np.stack([degrade.kernel_to_code(field[a, b], basis) for a in range(h) for b in range(w)], axis=1)
        codes = codes.reshape(degrade.PCA_DIM, h, w)
    return degrade.degradation_maps(np.ascontiguousarray(codes, dtype=np.float32), noise, h, w)


def _describe(arr: np.ndarray) -> str:
    if arr.ndim == 0:
        return f"{float(arr):g}"
    return f"a map with values in [{float(np.nanmin(arr)):g}, {float(np.nanmax(arr)):g}]"


def check_noise(noise: float | np.ndarray, height: int, width: int) -> None:
    """Refuse a noise level (0-255 units; a number or a ``(height, width)`` map) the maps cannot hold."""
    arr = np.asarray(noise, dtype=np.float64)
    if arr.ndim not in (0, 2) or (arr.ndim == 2 and arr.shape != (height, width)):
        raise ConfigError(f"noise must be a number or a ({height}, {width}) map, got shape {arr.shape}")
    # 0-255 units: a level above 255 is a unit mistake (e.g. a variance), not a noisier image.
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr > 255):
        raise ConfigError(f"noise level must be in 0..255 (0-255 units), got {_describe(arr)}")
