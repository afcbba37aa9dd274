"""Low-level tensor operations shared by the networks (PyTorch; srkit.ops.native adds an optional compiled CPU kernel)."""

from srkit.ops.deform_conv import ModulatedDeformConv2d, OffsetMonitor, deform_conv2d

__all__ = ["ModulatedDeformConv2d", "OffsetMonitor", "deform_conv2d"]
from srkit.ops.dynamic_conv import dynamic_conv2d, dynamic_upsample_conv2d, identity_kernels  # noqa: E402,F401
from srkit.ops.attention import gaussian_nonlocal_attention  # noqa: E402,F401
