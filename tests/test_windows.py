"""Temporal window indices: hand-written expectations, the BasicSR rule, short clips, strides."""

from __future__ import annotations

import itertools

import pytest

from srkit.data.windows import PADDING_MODES, strided_window, window_fits, window_indices
from srkit.errors import ConfigError


def _basicsr_rule(center: int, length: int, num_frames: int, mode: str) -> list[int]:
    """Independent restatement of EDVR's ``index_generation`` (valid for num_frames <= length)."""
    last, half = length - 1, num_frames // 2
    table = {
        "replicate": (lambda i: 0, lambda i: last),
        "reflection": (lambda i: -i, lambda i: 2 * last - i),
        "reflection_circle": (lambda i: center + half - i, lambda i: center - half - (i - last)),
        "circle": (lambda i: num_frames + i, lambda i: i - num_frames),
    }
    low, high = table[mode]
    return [low(i) if i < 0 else high(i) if i > last else i for i in range(center - half, center + half + 1)]


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("replicate", [0, 0, 0, 1, 2]),
        ("reflection", [2, 1, 0, 1, 2]),
        ("reflection_circle", [4, 3, 0, 1, 2]),
        ("circle", [3, 4, 0, 1, 2]),
    ],
)
def test_start_of_clip(mode, expected):
    assert window_indices(0, 5, 10, mode) == expected


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("replicate", [7, 8, 9, 9, 9]),
        ("reflection", [7, 8, 9, 8, 7]),
        ("reflection_circle", [7, 8, 9, 6, 5]),
        ("circle", [7, 8, 9, 5, 6]),
    ],
)
def test_end_of_clip(mode, expected):
    assert window_indices(9, 5, 10, mode) == expected


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("replicate", [0, 0, 0, 1, 2, 3, 4]),
        ("reflection", [2, 1, 0, 1, 2, 3, 4]),
        ("reflection_circle", [6, 5, 0, 1, 2, 3, 4]),
        ("circle", [5, 6, 0, 1, 2, 3, 4]),
    ],
)
def test_seven_frames_one_from_start(mode, expected):
    assert window_indices(1, 7, 10, mode) == expected


def test_interior_window_is_plain_neighbourhood():
    for mode in PADDING_MODES:
        assert window_indices(5, 7, 12, mode) == [2, 3, 4, 5, 6, 7, 8]


def test_matches_basicsr_rule_everywhere_it_is_defined():
    for mode, length, nf in itertools.product(PADDING_MODES, range(1, 12), (1, 3, 5, 7)):
        if nf > length:
            continue
        for c in range(length):
            assert window_indices(c, nf, length, mode) == _basicsr_rule(c, length, nf, mode), (mode, length, nf, c)


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("replicate", [0, 0, 0, 0, 1, 2, 2]),
        ("reflection", [1, 2, 1, 0, 1, 2, 1]),
        ("reflection_circle", [2, 1, 0, 0, 1, 2, 0]),
        ("circle", [1, 2, 0, 0, 1, 2, 2]),
    ],
)
def test_clip_shorter_than_window(mode, expected):
    assert window_indices(0, 7, 3, mode) == expected


def test_short_clips_always_in_range_with_centre_in_middle():
    for mode, length, nf in itertools.product(PADDING_MODES, range(1, 6), (1, 3, 5, 7, 9, 15)):
        for c in range(length):
            idx = window_indices(c, nf, length, mode)
            assert len(idx) == nf and idx[nf // 2] == c
            assert all(0 <= i < length for i in idx), (mode, length, nf, c, idx)


def test_single_frame_clip():
    assert window_indices(0, 5, 1, "reflection_circle") == [0] * 5


def test_strided_window():
    assert strided_window(10, 5, 20, 3) == [4, 7, 10, 13, 16]
    # Border: padding applied on the sub-sampled clip 1, 4, 7, ..., 19 keeps the spacing of 3.
    assert strided_window(1, 5, 20, 3, "reflection_circle") == [13, 10, 1, 4, 7]
    assert strided_window(4, 5, 20, 1) == window_indices(4, 5, 20)
    assert window_fits(6, 5, 20, 3) and not window_fits(5, 5, 20, 3)
    assert window_fits(13, 5, 20, 3) and not window_fits(14, 5, 20, 3)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="odd"):
        window_indices(0, 4, 10)
    with pytest.raises(ConfigError, match="padding mode"):
        window_indices(0, 5, 10, "zeros")
    with pytest.raises(ValueError):
        window_indices(10, 5, 10)
