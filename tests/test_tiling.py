"""Tile plans, seam blending, memory parsing and peak-memory measurement (srkit.infer.tiling)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from srkit.errors import ConfigError
from srkit.infer import tiling


@pytest.mark.parametrize("n,tile,overlap,scale,align", [(100, 32, 8, 1, 1), (97, 40, 16, 4, 4), (64, 16, 8, 2, 4),
                                                        (33, 16, 0, 3, 1), (50, 64, 16, 4, 4)])
def test_axis_weights_partition_unity_and_cover_context(n, tile, overlap, scale, align):
    segs = tiling.plan_axis(n, tile, overlap, scale=scale, align=align)
    total = np.zeros(n * scale)
    for s in segs:
        assert 0 <= s.start < s.stop <= n
        assert s.start % align == 0
        assert s.weight.shape == ((s.stop - s.start) * scale,)
        total[s.start * scale: s.stop * scale] += s.weight
        # Every output pixel a tile contributes to has >= overlap/2 input pixels of real context before the
        # crop edge (except at the image border, where the whole frame has no more context either).
        used = np.nonzero(s.weight > 0)[0] / scale + s.start  # input coordinate of used output pixels
        if s.start > 0:
            assert used.min() - s.start >= overlap / 2 - 1.0 / scale
        if s.stop < n:
            assert s.stop - (used.max() + 1.0 / scale) >= overlap / 2 - 1.0 / scale
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    if tile >= n:
        assert len(segs) == 1
    else:
        assert len(segs) == int(np.ceil(n / tile))


def test_weights_ramp_smoothly_without_jumps():
    segs = tiling.plan_axis(128, 48, 16, scale=4, align=4)
    for s in segs:
        assert np.abs(np.diff(s.weight)).max() < 0.05  # 64 output px of ramp: no visible step


def test_blending_reproduces_a_position_independent_operator_exactly():
    # For an operator without context (bilinear x2 of a crop is not: it uses neighbours; nearest is),
    # blending tiles must reproduce the untiled result exactly: weights sum to one.
    torch.manual_seed(0)
    img = torch.rand(1, 3, 37, 53)
    ref = F.interpolate(img, scale_factor=2, mode="nearest")
    plan = tiling.plan_tiles(37, 53, 16, 8, scale=2, align=1)
    assert len(plan) > 4
    out = torch.zeros_like(ref)
    for t in plan.tiles:
        crop = img[:, :, t.y.start:t.y.stop, t.x.start:t.x.stop]
        up = F.interpolate(crop, scale_factor=2, mode="nearest")
        w = torch.from_numpy(t.y.weight)[:, None] * torch.from_numpy(t.x.weight)[None, :]
        out[:, :, t.y.start * 2:t.y.stop * 2, t.x.start * 2:t.x.stop * 2] += up * w
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_plan_rejects_bad_sizes():
    with pytest.raises(ConfigError, match="too small"):
        tiling.plan_tiles(100, 100, 4, 2)
    with pytest.raises(ConfigError, match="overlap"):
        tiling.plan_tiles(100, 100, 12, 16)
    with pytest.raises(ConfigError, match="overlap must be"):
        tiling.plan_tiles(100, 100, 32, -1)
    assert len(tiling.plan_tiles(30, 40, None, 16)) == 1


@pytest.mark.parametrize("text,expected", [("4GB", 4 * 2**30), ("512MB", 512 * 2**20), ("1.5g", int(1.5 * 2**30)),
                                           ("2000", 2000), (123456, 123456), ("64 KiB", 65536), (None, None)])
def test_parse_memory(text, expected):
    assert tiling.parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["lots", "4XB", "-1GB", "0", 0])
def test_parse_memory_errors(bad):
    with pytest.raises(ConfigError):
        tiling.parse_memory(bad)


def test_measure_peak_bytes_counts_live_storages_once():
    mib = 2**20

    def fn():
        a = torch.empty(mib // 4)  # 1 MiB
        b = torch.empty(2 * mib // 4)  # 2 MiB, while a is alive -> peak 3 MiB
        v = a.view(-1)  # a view: no new storage
        del a, b, v
        c = torch.empty(mib // 4)  # 1 MiB after freeing: peak stays 3 MiB
        c.add_(1)  # in-place: same storage
        return c

    peak = tiling.measure_peak_bytes(fn)
    assert 3 * mib <= peak < 3 * mib + 4096


def test_tile_size_for_budget_fits_and_errors():
    side = tiling.tile_size_for_budget(100 * 2**20, 4000.0, 10 * 2**20, 16, align=4)
    assert side % 4 == 0
    assert 10 * 2**20 + 4000 * (side + 32) ** 2 <= 100 * 2**20
    assert 10 * 2**20 + 4000 * (side + 4 + 32) ** 2 > 100 * 2**20  # largest aligned size that fits
    with pytest.raises(ConfigError, match="too small"):
        tiling.tile_size_for_budget(2**20, 4000.0, 0, 16)
    with pytest.raises(ConfigError, match="too small"):
        tiling.tile_size_for_budget(2**20, 4000.0, 2 * 2**20, 16)


def test_lmdb_map_size_uses_the_same_size_reader():
    """``srkit data pack --map-size`` and ``--max-memory`` read sizes alike; bad ones are argparse errors."""
    import argparse

    from srkit.commands.data_pack import parse_size

    for text in ("64M", "1GiB", "1Gi", "65536", "64 KiB"):
        assert parse_size(text) == tiling.parse_memory(text)
    for bad in ("lots", "0", "4XB"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)
