"""U²-Net for SPECT (+ CT) slices, after Qin et al. 2020 as used for fast bone SPECT/CT by Pan et al. 2022.

Two nested U shapes: every stage is a residual U-block (RSU-L, a small U-Net of height L whose output is added
to its input convolution). The outer U has six encoder stages (RSU-7, 6, 5, 4, then two dilated RSU-4F) and
five decoder stages; each decoder stage and the bottom give a side output, the six side outputs are fused by a
1x1 convolution and a long skip adds the low-count SPECT slice (residual learning). MONAI has no U²-Net.

Deep supervision (Pan et al., eq. 1) follows MONAI's ``DynUNet``: built with ``deep_supervision=True`` and in
training mode, the network returns the fused output and the six side outputs stacked as channels [B, 7, H, W]
(fused first) so the loss can supervise each; in evaluation mode it always returns the fused output alone.

Widths are two numbers (``mid`` inside the RSU blocks, ``width`` between stages), the same at every stage as
in the original "U²-Net lite" (mid 16, width 64); tests use tiny widths. Any slice size works: poolings use
``ceil_mode`` and every up-sampling goes to the skip's exact size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ConvNormAct(nn.Sequential):
    """3x3 convolution (optionally dilated), group norm with one group, ReLU.

    One group normalises over channels and space, so the 1x1 deepest maps of small slices stay defined and the
    result does not depend on the batch.
    """

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation),
            nn.GroupNorm(1, out_channels),
            nn.ReLU(inplace=True),
        )


def _upsample_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=reference.shape[2:], mode="bilinear", align_corners=False)


class ResidualUBlock(nn.Module):
    """RSU-L: input convolution, a U-Net of ``height`` levels on it, output = input convolution + U-Net.

    With ``dilated`` (RSU-4F) the inner U keeps the resolution and grows the dilation (1, 2, 4, 8) instead of
    pooling, for the low-resolution stages where more down-sampling would lose context.
    """

    def __init__(self, height: int, in_channels: int, mid: int, out_channels: int, dilated: bool = False) -> None:
        super().__init__()
        self.dilated = dilated
        self.input_conv = _ConvNormAct(in_channels, out_channels)
        dilations = [2**level if dilated else 1 for level in range(height)]
        self.encoders = nn.ModuleList(
            [_ConvNormAct(out_channels if level == 0 else mid, mid, dilations[level])
             for level in range(height - 1)]
        )
        self.bottom = _ConvNormAct(mid, mid, dilations[-1] if dilated else 2)
        self.decoders = nn.ModuleList(
            [_ConvNormAct(2 * mid, out_channels if level == 0 else mid, dilations[level])
             for level in range(height - 1)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map [B, in, H, W] to [B, out, H, W]."""
        start = self.input_conv(x)
        skips = []
        h = start
        for level, encoder in enumerate(self.encoders):
            if level > 0 and not self.dilated:
                h = F.max_pool2d(h, 2, ceil_mode=True)
            h = encoder(h)
            skips.append(h)
        h = self.bottom(h)
        for level in reversed(range(len(self.decoders))):
            skip = skips[level]
            if h.shape[2:] != skip.shape[2:]:
                h = _upsample_to(h, skip)
            h = self.decoders[level](torch.cat([h, skip], dim=1))
        return h + start


class U2Net(nn.Module):
    """U²-Net denoiser for 2D slices: [B, C, H, W] (kind-major SPECT then CT channels) → [B, 1, H, W].

    Parameters
    ----------
    in_channels : image channels (SPECT z-k..z+k, then CT z-k..z+k).
    centre_channel : index of the low-count SPECT slice added back by the long skip.
    mid : channels inside each RSU block (16 in U²-Net lite).
    width : channels between stages (64 in U²-Net lite).
    deep_supervision : in training mode, also return the side outputs (see the module docstring).
    """

    HEIGHTS = (7, 6, 5, 4, 4, 4)

    def __init__(self, in_channels: int, centre_channel: int = 0, mid: int = 16, width: int = 64,
                 deep_supervision: bool = False) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        if not 0 <= centre_channel < in_channels:
            raise ValueError(f"centre_channel {centre_channel} is outside 0..{in_channels - 1}")
        self.centre_channel = centre_channel
        stages = len(self.HEIGHTS)
        self.encoders = nn.ModuleList(
            [ResidualUBlock(height, in_channels if i == 0 else width, mid, width, dilated=i >= stages - 2)
             for i, height in enumerate(self.HEIGHTS)]
        )
        self.decoders = nn.ModuleList(
            [ResidualUBlock(height, 2 * width, mid, width, dilated=i >= stages - 2)
             for i, height in enumerate(self.HEIGHTS[:-1])]
        )
        self.sides = nn.ModuleList([nn.Conv2d(width, 1, 3, padding=1) for _ in self.HEIGHTS])
        self.fuse = nn.Conv2d(stages, 1, 1)
        nn.init.zeros_(self.fuse.weight)
        nn.init.zeros_(self.fuse.bias)

    def _fused_and_sides(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The fused output and the six side outputs (finest first), each [B, 1, H, W] with the long skip added."""
        skips = []
        h = x
        for i, encoder in enumerate(self.encoders):
            if i > 0:
                h = F.max_pool2d(h, 2, ceil_mode=True)
            h = encoder(h)
            skips.append(h)
        features = [h]
        for i in reversed(range(len(self.decoders))):
            h = self.decoders[i](torch.cat([_upsample_to(h, skips[i]), skips[i]], dim=1))
            features.append(h)
        features.reverse()
        sides = [_upsample_to(side(f), x) for side, f in zip(self.sides, features)]
        centre = x[:, self.centre_channel : self.centre_channel + 1]
        fused = centre + self.fuse(torch.cat(sides, dim=1))
        return fused, [centre + side for side in sides]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the denoised slice [B, 1, H, W] in normalised units ([B, 7, H, W] with the side outputs when
        training with deep supervision)."""
        fused, sides = self._fused_and_sides(x)
        if self.training and self.deep_supervision:
            return torch.cat([fused, *sides], dim=1)
        return fused
