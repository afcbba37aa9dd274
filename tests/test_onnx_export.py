"""ONNX export of a module built on ModulatedDeformConv2d, run in onnxruntime and compared to PyTorch.

The op is plain PyTorch plus ``grid_sample``, which ONNX has as ``GridSample`` since opset 16, so the
TorchScript exporter produces a graph with dynamic batch and spatial size.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from srkit.ops import ModulatedDeformConv2d

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


class OffsetPredictingDCN(nn.Module):
    """BasicSR's DCNv2Pack pattern: a conv predicts (dy, dx, mask) from the features themselves."""

    def __init__(self, channels: int = 8, out_channels: int = 6, dg: int = 2, modulated: bool = True,
                 offset_gain: float = 4.0):
        super().__init__()
        self.modulated = modulated
        self.offset_gain = offset_gain
        self.conv_offset = nn.Conv2d(channels, dg * 9 * (3 if modulated else 2), 3, 1, 1)
        self.dcn = ModulatedDeformConv2d(channels, out_channels, 3, padding=1, deformable_groups=dg)
        nn.init.normal_(self.conv_offset.weight, std=0.3)  # sizeable offsets, some outside the image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_offset(x)
        if not self.modulated:
            return self.dcn(x, out * self.offset_gain, None)
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        offset = torch.cat((o1, o2), dim=1) * self.offset_gain
        return self.dcn(x, offset, torch.sigmoid(mask))


def _export(model: nn.Module, example: torch.Tensor, path, opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=opset,
            input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}},
        )


@pytest.mark.parametrize("modulated", [True, False], ids=["dcnv2", "dcnv1"])
def test_onnx_export_matches_pytorch(tmp_path, modulated):
    torch.manual_seed(0)
    model = OffsetPredictingDCN(modulated=modulated).eval()
    path = tmp_path / "dcn.onnx"
    _export(model, torch.randn(1, 8, 12, 16), path, opset=16)
    onnx = pytest.importorskip("onnx")
    graph_ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "GridSample" in graph_ops

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # The exported size, then a different batch and an odd size: the graph must not bake in shapes.
    for shape in [(1, 8, 12, 16), (2, 8, 7, 9), (1, 8, 20, 5)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run(None, {"x": x.numpy()})[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


class MonitoredDCN(OffsetPredictingDCN):
    """DCNv2Pack-like module that also feeds an OffsetMonitor, as srkit's EDVR does."""

    def __init__(self):
        super().__init__()
        from srkit.ops import OffsetMonitor

        self.monitor = OffsetMonitor(threshold=1e-9)  # would warn on every eager call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_offset(x)
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        offset = torch.cat((o1, o2), dim=1) * self.offset_gain
        self.monitor.update(offset)
        return self.dcn(x, offset, torch.sigmoid(mask))


def test_offset_monitor_is_inert_during_export(tmp_path):
    torch.manual_seed(0)
    model = MonitoredDCN().eval()
    x = torch.randn(1, 8, 10, 12)
    with torch.no_grad():
        ref = model(x).numpy()
    calls = model.monitor.calls
    _export(model, x, tmp_path / "m.onnx", opset=16)
    assert model.monitor.calls == calls  # nothing read back (or baked in) while tracing
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], ref, atol=1e-4, rtol=0)
