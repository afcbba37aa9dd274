"""The shipped weights reproduce their model card (docs/MODELS.md) on the first frames of the validation clips."""

from __future__ import annotations

from pathlib import Path

import pytest

from srkit.eval import EvalOptions, evaluate

# docs/MODELS.md, "few frames" rows: (family folder, clip, frames) -> (bicubic PSNR-Y, model PSNR-Y)
EDVR_S_CARD = {
    ("set8", "snowboard", 3): (26.114, 26.943),
    ("davis", "bus", 3): (27.450, 30.275),
}


def _psnr_y(model: str, root: Path, clip: str, frames: int, tmp_path: Path) -> float:
    subset = tmp_path / f"{clip}.txt"
    subset.write_text(clip + "\n")
    opts = EvalOptions(data=str(root), layout="folders", subset=str(subset), frames=frames, y_channel=True,
                       ssim=False, quiet=True, model=model, device="cpu")
    return evaluate(opts).scores.mean("psnr")


@pytest.mark.shared_data
@pytest.mark.parametrize("where", sorted(EDVR_S_CARD))
def test_edvr_s_reproduces_its_model_card(shared_data: Path, tmp_path: Path, where) -> None:
    folder, clip, frames = where
    bicubic, card = EDVR_S_CARD[where]
    root = shared_data / "video_hr" / folder
    assert _psnr_y("bicubic", root, clip, frames, tmp_path) == pytest.approx(bicubic, abs=0.01)
    assert _psnr_y("edvr-s", root, clip, frames, tmp_path) == pytest.approx(card, abs=0.05)
