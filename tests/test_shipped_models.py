"""The shipped weights reproduce their model cards (docs/MODELS.md) on the first frames of the validation clips."""

from __future__ import annotations

from pathlib import Path

import pytest

from srkit.eval import EvalOptions, evaluate

# docs/MODELS.md, "few frames" rows: (model, family folder, clip, frames, SRMD blur/noise or None for BI)
#   -> (MATLAB bicubic PSNR-Y, model PSNR-Y)
CARDS = {
    ("edvr-s", "set8", "snowboard", 3, None): (26.114, 26.975),
    ("edvr-s", "davis", "bus", 3, None): (27.450, 30.641),
    ("udvd-s-x4", "set8", "snowboard", 3, (1.6, 15.0)): (24.486, 25.333),
    ("udvd-s-x4", "davis", "bus", 3, (1.6, 15.0)): (25.256, 27.318),
    ("mana-s", "set8", "snowboard", 3, None): (26.114, 27.037),
    ("mana-s", "davis", "bus", 3, None): (27.450, 31.169),
}


def _psnr_y(model: str, root: Path, clip: str, frames: int, srmd: tuple[float, float] | None, tmp_path: Path) -> float:
    subset = tmp_path / f"{clip}.txt"
    subset.write_text(clip + "\n")
    degradation = dict(degradation="SRMD", blur=srmd[0], noise=srmd[1]) if srmd else {}
    opts = EvalOptions(data=str(root), layout="folders", subset=str(subset), frames=frames, y_channel=True,
                       ssim=False, quiet=True, model=model, device="cpu", **degradation)
    return evaluate(opts).scores.mean("psnr")


@pytest.mark.shared_data
@pytest.mark.parametrize("card", sorted(CARDS, key=str), ids=lambda c: "-".join(map(str, c)))
def test_shipped_model_reproduces_its_model_card(shared_data: Path, tmp_path: Path, card) -> None:
    model, folder, clip, frames, srmd = card
    bicubic, expected = CARDS[card]
    root = shared_data / "video_hr" / folder
    assert _psnr_y("bicubic", root, clip, frames, srmd, tmp_path) == pytest.approx(bicubic, abs=0.01)
    assert _psnr_y(model, root, clip, frames, srmd, tmp_path) == pytest.approx(expected, abs=0.05)
