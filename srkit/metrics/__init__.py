"""Image quality metrics as the super-resolution literature computes them (see :mod:`.quality`)."""

from srkit.metrics.quality import (
    ClipScores,
    VideoScores,
    psnr,
    psnr_torch,
    rgb_to_y,
    rgb_to_y_torch,
    ssim,
    ssim_torch,
)

__all__ = ["psnr", "ssim", "psnr_torch", "ssim_torch", "rgb_to_y", "rgb_to_y_torch", "ClipScores", "VideoScores"]
