"""Residual U-Nets for slices (2D / 2.5D) and patches (3D), built on MONAI's ``UNet``.

The network learns a correction to the low-count SPECT: ``output = x[:, centre] + unet(x)``. With the 1x1
output layer started at zero an untrained network is the identity, so training starts from "no denoising".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import UNet
from torch import nn


class ResidualUNet(nn.Module):
    """U-Net predicting the full-count image as the centre SPECT channel plus a learned correction.

    Parameters
    ----------
    spatial_dims : 2 for slices [B, C, H, W] (axial [y, x]), 3 for patches [B, C, D, H, W] ([z, y, x]).
    in_channels : image channels, kind major (SPECT z-k..z+k, then CT z-k..z+k).
    centre_channel : index of the low-count SPECT channel the correction is added to.
    channels : feature maps per level; four levels (three 2x down-samplings) as in Aoki et al. 2025.
    num_res_units : residual units per level (MONAI ``UNet``).
    norm : MONAI normalisation name (``"instance"``, ``"batch"``, ...).
    dropout : dropout probability in every convolution block.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        centre_channel: int = 0,
        channels: Sequence[int] = (32, 64, 128, 256),
        num_res_units: int = 1,
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= centre_channel < in_channels:
            raise ValueError(f"centre_channel {centre_channel} is outside 0..{in_channels - 1}")
        if len(channels) < 2:
            raise ValueError("a U-Net needs at least two levels of channels")
        self.centre_channel = centre_channel
        self.unet = UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=channels[0],
            channels=tuple(channels),
            strides=(2,) * (len(channels) - 1),
            num_res_units=num_res_units,
            norm=norm,
            dropout=dropout,
        )
        self.head = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(channels[0], 1, kernel_size=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the denoised image [B, 1, ...] (normalised units) for input ``x`` [B, C, ...]."""
        centre = x[:, self.centre_channel : self.centre_channel + 1]
        return centre + self.head(self.unet(x))
