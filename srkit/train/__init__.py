"""Training: typed configs, the trainer and its parts (schedules, losses, EMA, checkpoints, guard).

Import the pieces from their modules (``srkit.train.config``, ``srkit.train.trainer`` ...); this
package imports nothing heavy by itself.
"""

from __future__ import annotations

from srkit.utils.lazy import lazy_exports

_EXPORTS = {"load_config": "srkit.train.config", "train": "srkit.train.trainer"}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
