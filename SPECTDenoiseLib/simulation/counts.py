"""Counting statistics: Poisson acquisition at a chosen total, binomial thinning, projection-domain scatter."""

from __future__ import annotations

import math

import numpy as np
import torch


def scatter_projections(primary: torch.Tensor, scatter_fraction: float, spacing_mm: tuple[float, float],
                        fwhm_mm: float = 60.0) -> torch.Tensor:
    """Expected scatter counts [angle, z, u]: a broad Gaussian blur of the primary, scaled so that scatter makes
    up ``scatter_fraction`` of all counts in the photopeak window. ``spacing_mm`` is (dz, du)."""
    if scatter_fraction <= 0:
        return torch.zeros_like(primary)
    sigma = fwhm_mm / 2.355
    blurred = primary
    for axis, step in ((1, spacing_mm[0]), (2, spacing_mm[1])):
        radius = math.ceil(3 * sigma / step)
        offsets = torch.arange(-radius, radius + 1, dtype=primary.dtype, device=primary.device) * step
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        kernel = kernel / kernel.sum()
        moved = blurred.movedim(axis, -1)
        shape = moved.shape
        flat = torch.nn.functional.conv1d(moved.reshape(-1, 1, shape[-1]), kernel[None, None], padding=radius)
        blurred = flat.reshape(shape).movedim(-1, axis)
    scale = scatter_fraction / (1.0 - scatter_fraction) * float(primary.sum()) / max(float(blurred.sum()), 1e-12)
    return blurred * scale


def poisson_counts(expected: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Draw Poisson counts with the given expected values (any shape) as a float32 tensor."""
    lam = expected.detach().cpu().numpy().astype(np.float64)
    return torch.from_numpy(rng.poisson(np.clip(lam, 0, None)).astype(np.float32)).to(expected.device)


def thin_counts(counts: torch.Tensor, fraction: float, rng: np.random.Generator) -> torch.Tensor:
    """Keep each count independently with probability ``fraction`` (binomial thinning of measured projections)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = counts.detach().cpu().numpy().astype(np.int64)
    return torch.from_numpy(rng.binomial(n, fraction).astype(np.float32)).to(counts.device)
