"""What a run reports: a progress bar, a text log, a CSV of every scalar, TensorBoard scalars/images.

Only rank 0 logs (other ranks get a disabled logger). The CSV is long-form
(``iteration,tag,value,time``) so new tags never change its columns; on resume, rows past the resumed
iteration (written by the killed process after its last checkpoint) are dropped so the CSV tells one
consistent story.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from srkit.io.atomic import atomic_write_text
from srkit.train.config import LogConfig


class RunLogger:
    def __init__(self, run_dir: Path | None, cfg: LogConfig, *, enabled: bool, total_iters: int, start_iter: int = 0):
        self.enabled = enabled and run_dir is not None
        self.cfg = cfg
        self.run_dir = run_dir
        self._csv = None
        self._csv_writer: Any = None
        self._tb: Any = None
        self._bar: Any = None
        self._text = None
        if not self.enabled:
            return
        assert run_dir is not None
        run_dir.mkdir(parents=True, exist_ok=True)
        self._text = open(run_dir / "train.log", "a", encoding="utf-8")
        csv_path = run_dir / "scalars.csv"
        self._truncate_csv(csv_path, start_iter)
        new = not csv_path.exists()
        self._csv = open(csv_path, "a", newline="", encoding="utf-8")
        self._csv_writer = csv.writer(self._csv)
        if new:
            self._csv_writer.writerow(["iteration", "tag", "value", "time"])
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_iter + 1 if start_iter else None)
            except Exception as exc:  # noqa: BLE001 - TensorBoard is a convenience, never a reason to stop
                self.info(f"TensorBoard disabled ({type(exc).__name__}: {exc})")
        show = cfg.progress == "on" or (cfg.progress == "auto" and sys.stderr.isatty())
        if show:
            from tqdm import tqdm

            self._bar = tqdm(total=total_iters, initial=start_iter, unit="it", dynamic_ncols=True, file=sys.stderr)

    @staticmethod
    def _truncate_csv(path: Path, start_iter: int) -> None:
        if not path.exists():
            return
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        keep = [r for i, r in enumerate(rows) if i == 0 or (r and r[0].isdigit() and int(r[0]) <= start_iter)]
        if len(keep) != len(rows):
            import io

            buf = io.StringIO()
            csv.writer(buf).writerows(keep)
            atomic_write_text(path, buf.getvalue())

    # -- text ------------------------------------------------------------------------------------------

    def info(self, msg: str) -> None:
        """A line for the person watching (stderr) and the run's ``train.log``."""
        if not self.enabled:
            return
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}"
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)
        if self._text is not None:
            self._text.write(line + "\n")
            self._text.flush()

    def event(self, iteration: int, kind: str, msg: str) -> None:
        """Something that changed the run (rollback, stage change, resume): log, CSV and TensorBoard text."""
        self.info(msg)
        if not self.enabled:
            return
        self._write_row(iteration, f"event/{kind}", 1.0)
        if self._tb is not None:
            self._tb.add_text(f"events/{kind}", msg, iteration)

    # -- scalars and images ----------------------------------------------------------------------------

    def scalars(self, iteration: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        for tag, value in values.items():
            self._write_row(iteration, tag, value)
            if self._tb is not None and math.isfinite(value):
                self._tb.add_scalar(tag, value, iteration)
        self._csv.flush()

    def _write_row(self, iteration: int, tag: str, value: float) -> None:
        self._csv_writer.writerow([iteration, tag, f"{value:.8g}", f"{time.time():.3f}"])

    def image(self, iteration: int, tag: str, image: torch.Tensor) -> None:
        """``image`` (3, H, W) float in [0, 1]."""
        if self.enabled and self._tb is not None:
            self._tb.add_image(tag, image.clamp(0, 1).float().cpu(), iteration)

    def progress(self, iteration: int, postfix: Mapping[str, str] | None = None) -> None:
        if self._bar is not None:
            self._bar.n = iteration
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        for thing in (self._bar, self._tb, self._csv, self._text):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - closing must never mask the real outcome
                    pass
        self._bar = self._tb = self._csv = self._text = None


def side_by_side(lq: torch.Tensor, out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """LR (nearest-upsampled to GT size) | output | GT, each (3, H, W) -> (3, H, 3W)."""
    lq = torch.nn.functional.interpolate(lq[None].float(), size=gt.shape[-2:], mode="nearest")[0]
    return torch.cat([lq, out.float(), gt.float()], dim=-1).clamp(0, 1)
