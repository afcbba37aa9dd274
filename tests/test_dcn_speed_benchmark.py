"""benchmarks/dcn_speed.py runs end to end on a tiny size and its srkit rows agree with torchvision."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "dcn_speed.py"


@pytest.mark.parametrize("layout", [[], ["--channels-last"]], ids=["nchw", "channels_last"])
def test_dcn_speed_runs_and_agrees_with_torchvision(layout) -> None:
    pytest.importorskip("torchvision")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--size", "1", "8", "12", "16", "--out-channels", "8",
                           "--deformable-groups", "2", "--repeats", "1", "--threads", "1", *layout],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for name in ("srkit fp32", "srkit bf16-autocast", "torchvision fp32"):
        assert re.search(rf"forward  {name}\s+[0-9.]+ ms", out), out
    m = re.search(r"max \|srkit - torchvision\|: fp32 ([0-9.e+-]+), bf16-autocast ([0-9.e+-]+)", out)
    assert m and float(m.group(1)) < 1e-4 and float(m.group(2)) < 0.1, out
    if "compiled im2col: yes" in out:  # the PyTorch path is timed beside the compiled kernel
        assert re.search(r"compiled im2col vs PyTorch path: [0-9.]+x fp32, [0-9.]+x bf16-autocast", out), out
