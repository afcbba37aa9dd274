"""Byte sizes written by people (``--max-memory 4GB``, ``--map-size 64M``)."""

from __future__ import annotations

import re

from srkit.errors import ConfigError

# Binary units throughout: memory budgets and LMDB map sizes are powers of two in practice.
_UNITS = {prefix + suffix: 1024 ** power
          for power, prefix in enumerate(["", "K", "M", "G", "T"])
          for suffix in ("", "B", "I", "IB")
          if prefix or suffix in ("", "B")}


def parse_byte_size(value: str | int | float) -> int:
    """``"4GB"``, ``"512M"``, ``"1.5GiB"``, ``"64 KiB"`` or a byte count -> bytes (positive)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        size = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m.group(2).upper() not in _UNITS:
            raise ConfigError(f"cannot read size {value!r} (examples: 4GB, 512MB, 2000000000)")
        size = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if size <= 0:
        raise ConfigError(f"size must be positive, got {value!r}")
    return int(size)
