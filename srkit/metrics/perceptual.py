"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric")
through the reference ``lpips`` package, an optional extra: ``pip install 'srkit[lpips]'``.

As MANA and most SR papers report it: ``net='alex'`` (LPIPS v0.1, AlexNet features with the learned
linear layers), on RGB frames scaled to [-1, 1], per frame between the model output (rounded to the
ground truth's integer type, as PSNR/SSIM) and the ground truth; lower is better. ``--crop-border``
applies as for PSNR/SSIM; ``--y-channel`` does not (LPIPS is defined on RGB).

The linear layers ship inside the ``lpips`` wheel; the AlexNet backbone is torchvision's ImageNet
checkpoint, which torch downloads on first use into ``TORCH_HOME/hub/checkpoints`` (TORCH_HOME defaults
to ``~/.cache/torch``). Offline, a missing checkpoint is a one-line :class:`~srkit.errors.SrkitError`
naming the file, where to put it and where to get it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from srkit.errors import SrkitError

INSTALL_HINT = "pip install 'srkit[lpips]'"
# torchvision's AlexNet ImageNet weights (AlexNet_Weights.IMAGENET1K_V1), the LPIPS 'alex' backbone.
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"


def hub_checkpoint_dir() -> Path:
    """Where torch caches downloaded weights: ``$TORCH_HOME/hub/checkpoints`` (torch.hub.get_dir())."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _import_lpips():
    try:
        import lpips  # optional dependency (srkit[lpips])
    except ImportError:
        raise SrkitError(f"--lpips needs the lpips package: {INSTALL_HINT}") from None
    return lpips


def check_available() -> None:
    """One-line error when the ``lpips`` package is not installed (cheap: no weights loaded)."""
    _import_lpips()


class LPIPS:
    """``LPIPS()(output, gt)``: the LPIPS distance of two RGB images (integer or float in [0, 1])."""

    def __init__(self, net: str = "alex", device: str | torch.device = "cpu"):
        lpips = _import_lpips()
        self.net_name, self.device = net, torch.device(device)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torchvision's 'pretrained' deprecation inside lpips
                model = lpips.LPIPS(net=net, verbose=False)
        except Exception as exc:  # noqa: BLE001 -- any download failure (URLError, OSError, RuntimeError...)
            target = hub_checkpoint_dir() / ALEXNET_FILE
            if net == "alex" and not target.is_file():
                why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise SrkitError(
                    f"--lpips: the AlexNet backbone weights {ALEXNET_FILE} are not in {target.parent} and could not be "
                    f"downloaded ({type(exc).__name__}: {why}); fetch {ALEXNET_URL} into that folder "
                    f"(TORCH_HOME/hub/checkpoints; set TORCH_HOME to use another cache)") from None
            raise SrkitError(f"--lpips: cannot build LPIPS({net}) ({type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None
        self.model = model.to(self.device).eval()

    @staticmethod
    def to_tensor(img: np.ndarray) -> torch.Tensor:
        """(H, W, 3) RGB, integer or float in [0, 1] -> (1, 3, H, W) float32 in [-1, 1]."""
        if np.issubdtype(img.dtype, np.integer):
            x = img.astype(np.float32) / float(np.iinfo(img.dtype).max)
        else:
            x = img.astype(np.float32)
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
        return t * 2.0 - 1.0

    @torch.no_grad()
    def __call__(self, output: np.ndarray, gt: np.ndarray, *, crop_border: int = 0) -> float:
        if output.shape != gt.shape:
            raise ValueError(f"LPIPS: shapes differ {output.shape} vs {gt.shape}")
        if output.ndim != 3 or output.shape[2] != 3:
            raise ValueError(f"LPIPS needs RGB images (H, W, 3), got {output.shape}")
        if crop_border:
            output = output[crop_border:-crop_border, crop_border:-crop_border]
            gt = gt[crop_border:-crop_border, crop_border:-crop_border]
        a, b = self.to_tensor(output).to(self.device), self.to_tensor(gt).to(self.device)
        return float(self.model(a, b).reshape(-1)[0])

