"""Training: typed configs, the trainer and its parts (schedules, losses, EMA, checkpoints, guard).

Import the pieces from their modules (``srkit.train.config``, ``srkit.train.trainer`` ...); this
package imports nothing heavy by itself.
"""

from __future__ import annotations

__all__ = ["load_config", "train"]


def __getattr__(name: str):
    if name == "load_config":
        from srkit.train.config import load_config

        return load_config
    if name == "train":
        from srkit.train.trainer import train

        return train
    raise AttributeError(f"module 'srkit.train' has no attribute {name!r}")
