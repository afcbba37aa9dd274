"""benchmarks/temporal_probe.py: exact-motion windows and the window-vs-repeated-centre scores."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from srkit.errors import InputError
from srkit.models import create_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def temporal_probe():
    spec = importlib.util.spec_from_file_location("temporal_probe", ROOT / "benchmarks" / "temporal_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pan_windows_move_by_exactly_their_speed(temporal_probe) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    views = temporal_probe.pan_window(frame, 5, (3, -2), top=20, left=30, height=16, width=20)
    for t, view in enumerate(views):
        k = t - 2
        np.testing.assert_array_equal(view, frame[20 - 2 * k: 36 - 2 * k, 30 + 3 * k: 50 + 3 * k])
    with pytest.raises(InputError, match="leaves the 80x60 frame"):
        temporal_probe.pan_window(frame, 5, (16, 0), top=20, left=30, height=16, width=20)


def test_a_static_window_scores_the_same_as_the_repeated_centre(temporal_probe) -> None:
    torch.manual_seed(0)
    model = create_model("edvr-m", **tiny_overrides("edvr", num_frame=3, deformable_groups=1)).eval()
    yy, xx = np.mgrid[0:64, 0:96]
    frame = np.stack([(128 + 100 * np.sin(xx / 3.0 + c) * np.cos(yy / 5.0)) for c in range(3)], -1).astype(np.uint8)
    still, moving = temporal_probe.probe(model, frame, [(0, 0), (4, 1)], top=8, left=8, height=32, width=48,
                                         border=4)
    assert still[0] == pytest.approx(still[1], abs=1e-9) and np.isfinite(still[0])
    alone = temporal_probe.probe(model, frame, [(4, 1)], top=8, left=8, height=32, width=48, border=4)[0]
    assert moving[1] == pytest.approx(still[1], abs=1e-9)  # the repeated centre is the same view
    assert moving == alone  # and computed once per frame, whatever the speeds asked with it
    assert moving[0] != pytest.approx(moving[1], abs=1e-6)  # the neighbours do reach the output
