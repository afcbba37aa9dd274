"""Atomic output: renamed into place on success, nothing left behind on failure."""

from __future__ import annotations

import os
import stat

import pytest

from srkit.errors import OutputError
from srkit.io.atomic import TMP_PREFIX, atomic_path, atomic_write_text, check_output_path


def test_success_renames_with_normal_permissions(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "hello")
    assert target.read_text() == "hello"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failure_leaves_nothing_and_keeps_existing(tmp_path):
    target = tmp_path / "out.png"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.name.startswith(TMP_PREFIX) and tmp.suffix == ".png"
            tmp.write_text("partial")
            raise RuntimeError("encoder died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_check_output_path_errors(tmp_path):
    (tmp_path / "exists.png").write_text("x")
    with pytest.raises(OutputError, match="output exists"):
        check_output_path(tmp_path / "exists.png")
    assert check_output_path(tmp_path / "exists.png", overwrite=True).name == "exists.png"
    with pytest.raises(OutputError, match="output folder does not exist"):
        check_output_path(tmp_path / "missing" / "x.png")
