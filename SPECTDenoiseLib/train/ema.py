"""Exponential moving average (EMA) of a network's weights: the copy that is validated and exported.

Diffusion networks sample from what they learned at every noise level; averaging the weights over the last few
thousand steps removes the step-to-step jitter of the optimiser (Ho et al. 2020 and later diffusion models use
decays of 0.999–0.9999).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """An eval-mode copy of ``network`` whose floating-point weights and buffers follow it with ``decay``.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early averages are not
    dominated by the random initial weights. Integer buffers (e.g. BatchNorm's batch counter) are copied.
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError("the EMA decay must be between 0 and 1")
        self.network = copy.deepcopy(network).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        """Move the average towards ``network``'s current weights (call after each optimiser step)."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = network.state_dict()
        for name, average in self.network.state_dict().items():
            if average.is_floating_point():
                average.lerp_(current[name], 1 - decay)
            else:
                average.copy_(current[name])
