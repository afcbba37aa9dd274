"""Images and frame folders: natural ordering, bit depth, grayscale and alpha, atomic writes.

Arrays are HWC RGB(A) ``numpy`` arrays as decoded (``uint8`` or ``uint16``); :func:`to_float` and
:func:`from_float` convert to and from float32 in [0, 1] with MATLAB-style rounding.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from srkit.errors import InputError
from srkit.io.atomic import atomic_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# OpenCV refuses to decode images above this many pixels (its default, CV_IO_MAX_IMAGE_PIXELS, can be
# raised with the OPENCV_IO_MAX_IMAGE_PIXELS environment variable, read when OpenCV starts).
MAX_IMAGE_PIXELS = int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", 1 << 30))
_PIL_LOCK = threading.Lock()


def natural_key(name: str | os.PathLike) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    text = os.fspath(name)
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", text)]


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, in natural order (hidden and temporary files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder" if folder.exists() else "no such folder", folder)
    files = [p for p in folder.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


@dataclass
class Image:
    """A decoded image: ``rgb`` is HxWx3 (or HxWx1 for grayscale), ``alpha`` HxW or None."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None

    @property
    def max_value(self) -> int:
        return 65535 if self.rgb.dtype == np.uint16 else 255

    @property
    def grayscale(self) -> bool:
        return self.rgb.shape[2] == 1


def header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from the image header without decoding, or None when Pillow cannot tell."""
    try:
        from PIL import Image as PILImage  # header-only read; Pillow comes with matplotlib
    except ImportError:  # pragma: no cover
        return None
    with _PIL_LOCK:  # Pillow's bomb limit is global: switched off (we judge sizes here) for this read only
        limit, PILImage.MAX_IMAGE_PIXELS = PILImage.MAX_IMAGE_PIXELS, None
        try:
            with PILImage.open(path) as im:
                return int(im.size[0]), int(im.size[1])
        except Exception:  # noqa: BLE001 - a format Pillow does not know, or a broken header
            return None
        finally:
            PILImage.MAX_IMAGE_PIXELS = limit


def check_pixel_limit(path: Path, size: tuple[int, int] | None) -> None:
    """Raise :class:`InputError` naming ``path`` when a ``size`` (width, height) image exceeds MAX_IMAGE_PIXELS."""
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        w, h = size
        raise InputError(f"image is {w}x{h} ({w * h / 1e6:.0f} megapixels), above the limit of {MAX_IMAGE_PIXELS} "
                         f"pixels ({MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; OPENCV_IO_MAX_IMAGE_PIXELS raises it)",
                         path)


def read_image(path: str | os.PathLike) -> Image:
    """Decode an image file keeping its bit depth, grayscale-ness and alpha channel."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path)
    if not path.is_file():
        raise InputError("not a file", path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", path) from None
    if data.size == 0:
        raise InputError("empty file", path)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        # OpenCV's refusal of a too large image is an assertion text: say which file and what the limit is.
        check_pixel_limit(path, header_size(path))
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "cv2.error"
        raise InputError(f"not a readable image (OpenCV: {reason[:160]})", path) from None
    if img is None:
        raise InputError("not a readable image (corrupt, truncated or unknown format)", path)
    if img.dtype not in (np.uint8, np.uint16):
        # e.g. 32-bit float TIFF: keep values, scale to 16 bits.
        img = np.clip(img.astype(np.float64), 0, 1) * 65535 + 0.5
        img = img.astype(np.uint16)
    if img.ndim == 2:
        return Image(img[:, :, None])
    if img.shape[2] == 4:
        return Image(cv2.cvtColor(img, cv2.COLOR_BGRA2RGB), img[:, :, 3].copy())
    if img.shape[2] == 2:  # gray + alpha
        return Image(img[:, :, :1].copy(), img[:, :, 1].copy())
    return Image(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image as HxWx3 RGB (grayscale replicated, alpha dropped), dtype as stored."""
    img = read_image(path).rgb
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8/uint16 -> float32 in [0, 1]."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    return img.astype(np.float32, copy=False)


def from_float(img: np.ndarray, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """float in [0, 1] -> uint8/uint16, clipped and rounded half away from zero (as MATLAB's im2uint8)."""
    peak = 65535.0 if np.dtype(dtype) == np.uint16 else 255.0
    return np.floor(np.clip(img, 0.0, 1.0) * peak + 0.5).astype(dtype)


def encode_image(rgb: np.ndarray, suffix: str, alpha: np.ndarray | None = None, *, png_compression: int = 3,
                 jpeg_quality: int = 95) -> bytes:
    """Encode an HWC RGB (or HWx1 gray) array, optionally with alpha, to ``suffix``'s format."""
    if rgb.ndim == 2:
        rgb = rgb[:, :, None]
    if rgb.shape[2] == 1:
        bgr = rgb[:, :, 0] if alpha is None else np.dstack([rgb[:, :, 0]] * 3)
        if alpha is not None:
            bgr = np.dstack([bgr, alpha])
    else:
        bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
        if alpha is not None:
            bgr = np.dstack([bgr, alpha.astype(bgr.dtype)])
    suffix = suffix.lower()
    params: list[int] = []
    if suffix == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
    elif suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
        if bgr.dtype != np.uint8:
            bgr = (bgr.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    ok, buf = cv2.imencode(suffix, np.ascontiguousarray(bgr), params)
    if not ok:
        raise InputError(f"cannot encode image as {suffix}")
    return buf.tobytes()


def write_image(path: str | os.PathLike, rgb: np.ndarray, alpha: np.ndarray | None = None, **kwargs) -> None:
    """Write atomically (temporary name, then rename). The format follows the extension."""
    path = Path(path)
    data = encode_image(rgb, path.suffix, alpha, **kwargs)
    with atomic_path(path, fsync=False) as tmp:
        tmp.write_bytes(data)
