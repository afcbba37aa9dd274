"""Low-level tensor operations shared by the networks (pure PyTorch, no compiled extensions)."""

from srkit.ops.deform_conv import ModulatedDeformConv2d, OffsetMonitor, deform_conv2d

__all__ = ["ModulatedDeformConv2d", "OffsetMonitor", "deform_conv2d"]
