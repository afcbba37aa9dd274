"""benchmarks/upscale_speed.py runs end to end (it broke once when EDVRConfig gained a field the
BasicSR-structured reference did not take) and its numbers are what they claim."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "upscale_speed.py"


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--size", "16x24", "--threads", "1", *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_side_by_side_run_matches_the_reference() -> None:
    pytest.importorskip("torchvision")
    out = _run("--frames", "3", "--no-bf16")
    m = re.search(r"srkit fp32 vs reference: max \|diff\| ([0-9.e+-]+)", out)
    assert m, out
    assert float(m.group(1)) <= 1e-4
    assert re.search(r"^reference\s+[0-9.]+\s+1\.00", out, re.M), out


def test_profile_groups_the_decode_time() -> None:
    out = _run("--frames", "3", "--profile", "fp32")
    rows = dict(re.findall(r"^(convolution|deformable sampling|DCN GEMM)\s+[0-9.]+\s+([0-9.]+)%", out, re.M))
    assert set(rows) == {"convolution", "deformable sampling", "DCN GEMM"}, out
    shares = [float(v) for v in re.findall(r"^[a-z/ A-Z]+?\s+[0-9.]+\s+([0-9.]+)%$", out.split("\n\nop")[0], re.M)]
    assert abs(sum(shares) - 100.0) < 1.0, out  # the groups partition the profiled time


def test_op_groups() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("upscale_speed_mod", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.op_group("aten::mkldnn_convolution") == "convolution"
    assert mod.op_group("mkldnn::_convolution_pointwise") == "convolution"  # srkit.ops.fused_conv
    assert mod.op_group("mkldnn::_convolution_pointwise.binary") == "convolution"
    assert mod.op_group("aten::grid_sampler_2d") == "deformable sampling"
    assert mod.op_group("srkit::deform_im2col") == "deformable sampling"  # the compiled kernel's record_function
    assert mod.op_group("aten::copy_") == "dtype/layout copies"
    assert mod.op_group("aten::add_") == "elementwise"
    assert mod.op_group("aten::addmm") == "DCN GEMM"  # not "elementwise" by its aten::add prefix
    assert mod.op_group("aten::conv2d") == "other"  # a wrapper: its self time is not the convolution
