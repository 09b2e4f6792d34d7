"""Training losses: L1 + α·(1 − SSIM) with lesion attention and lesion mean consistency (after Pan et al. 2022)."""

from __future__ import annotations

import torch
from monai.losses import SSIMLoss
from torch import nn

SSIM_DATA_RANGE = 4.0
"""SSIM dynamic range in normalised units (1 = tissue level): covers background to hot lesions."""

HOT, COLD = 1, 2
"""Mask values of hot and cold lesion voxels (see :mod:`SPECTDenoiseLib.train.data`)."""


class DenoisingLoss(nn.Module):
    """``L1_w + ssim_weight · (1 − SSIM) + mean_weight · lesion mean error`` on normalised images.

    * L1 is weighted voxel-wise by ``1 + lesion_weight · [mask > 0]`` and divided by the mean weight, so lesion
      voxels count ``1 + lesion_weight`` times as much without changing the loss scale (lesion attention).
    * The lesion mean error is, for each sample and each of the hot and cold masks present, the absolute error of
      the mean inside the mask relative to the target's mean there: it asks the network to keep uptake (SUVmean)
      rather than only voxel values.

    Parameters
    ----------
    spatial_dims : 2 for slices [B, 1, H, W], 3 for patches [B, 1, D, H, W].
    ssim_weight : α; Pan et al. use 0.5.
    lesion_weight : β; 0 disables lesion attention (Pan et al. use about 100).
    mean_weight : γ of the lesion mean-consistency term; 0 disables it.
    """

    def __init__(self, spatial_dims: int, ssim_weight: float = 0.5, lesion_weight: float = 0.0,
                 mean_weight: float = 0.0) -> None:
        super().__init__()
        self.ssim_weight = ssim_weight
        self.lesion_weight = lesion_weight
        self.mean_weight = mean_weight
        self.ssim = SSIMLoss(spatial_dims=spatial_dims, data_range=SSIM_DATA_RANGE, win_size=7)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Return the scalar loss for ``prediction`` and ``target`` (same shape) and an optional ``mask`` holding
        0 (no lesion), HOT or COLD per voxel."""
        error = (prediction - target).abs()
        if mask is not None and self.lesion_weight > 0:
            weight = 1 + self.lesion_weight * (mask > 0).float()
            loss = (weight * error).sum() / weight.sum()
        else:
            loss = error.mean()
        if self.ssim_weight > 0:
            loss = loss + self.ssim_weight * self.ssim(prediction.float(), target.float())
        if mask is not None and self.mean_weight > 0:
            loss = loss + self.mean_weight * lesion_mean_error(prediction, target, mask)
        return loss


def lesion_mean_error(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over samples and lesion kinds present of |mean(prediction) − mean(target)| / mean(target) inside the
    kind's mask; 0 when no sample holds a lesion voxel. Tensors [B, 1, ...]."""
    dims = tuple(range(1, prediction.dim()))
    terms = []
    for kind in (HOT, COLD):
        inside = (mask == kind).float()
        voxels = inside.sum(dim=dims)
        present = voxels > 0
        if present.any():
            target_sum = (target * inside).sum(dim=dims)
            difference = ((prediction - target) * inside).sum(dim=dims)
            relative = difference.abs() / target_sum.clamp_min(1e-3 * voxels.clamp_min(1))
            terms.append(relative[present])
    if not terms:
        return prediction.sum() * 0.0
    return torch.cat(terms).mean()
