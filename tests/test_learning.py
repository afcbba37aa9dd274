"""srkit's training pipeline learns: a small EDVR fitted to one clip beats bicubic on that clip.

The clip is made from the photograph the demo uses (matplotlib's sample data: present wherever srkit
is installed), so this test needs no shared data. Before EDVR got a variance-preserving init, the same
run stayed on the bilinear upsampling it starts from (below bicubic); see
``benchmarks/learning_check.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _learning_check_module():
    spec = importlib.util.spec_from_file_location("learning_check", ROOT / "benchmarks" / "learning_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_small_edvr_fitted_to_one_clip_beats_bicubic_on_it(tmp_path: Path) -> None:
    from srkit.demo import pan_clip, sample_photo
    from srkit.io.images import read_rgb, write_image

    clip = tmp_path / "clips" / "pan"
    clip.mkdir(parents=True)
    # A 256x256 region of the photograph (face and cap: detail everywhere), panned over 8 frames.
    photo = read_rgb(sample_photo())[60:330, 120:390]
    for i, frame in enumerate(pan_clip(photo, 8)):
        write_image(clip / f"{i:05d}.png", frame)
    check = _learning_check_module()
    result = check.learning_check(clip.parent, ["pan"], clip.parent, "pan", iters=600, val_frames=4,
                                  workdir=tmp_path, model="edvr-m", overrides=check.TINY_EDVR, gt_size=128,
                                  batch_size=4, lr=4e-4)
    assert result["model"] > result["bicubic"] + 0.1, result
