"""Training losses: L1 + α·(1 − SSIM) with an optional lesion-attention weight (Pan et al. 2022)."""

from __future__ import annotations

import torch
from monai.losses import SSIMLoss
from torch import nn

SSIM_DATA_RANGE = 4.0
"""SSIM dynamic range in normalised units (1 = mean body uptake): covers background to hot lesions."""


class DenoisingLoss(nn.Module):
    """``L1_w + ssim_weight · (1 − SSIM)`` on normalised images.

    The L1 term is weighted voxel-wise by ``1 + lesion_weight · mask`` and divided by the mean weight, so lesion
    voxels count ``1 + lesion_weight`` times as much without changing the loss scale (lesion attention).

    Parameters
    ----------
    spatial_dims : 2 for slices [B, 1, H, W], 3 for patches [B, 1, D, H, W].
    ssim_weight : α; Pan et al. use 0.5.
    lesion_weight : β; 0 disables lesion attention.
    """

    def __init__(self, spatial_dims: int, ssim_weight: float = 0.5, lesion_weight: float = 0.0) -> None:
        super().__init__()
        self.ssim_weight = ssim_weight
        self.lesion_weight = lesion_weight
        self.ssim = SSIMLoss(spatial_dims=spatial_dims, data_range=SSIM_DATA_RANGE, win_size=7)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Return the scalar loss for ``prediction`` and ``target`` (same shape) and an optional 0/1 ``mask``."""
        error = (prediction - target).abs()
        if mask is not None and self.lesion_weight > 0:
            weight = 1 + self.lesion_weight * mask
            l1 = (weight * error).sum() / weight.sum()
        else:
            l1 = error.mean()
        if self.ssim_weight == 0:
            return l1
        return l1 + self.ssim_weight * self.ssim(prediction.float(), target.float())
