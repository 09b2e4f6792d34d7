"""Ordered-subset expectation maximisation with the attenuated, resolution-modelling projector."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .projector import SPECTProjector


class OSEM:
    """OSEM for ``y ~ Poisson(A x + s)``; subset sensitivities Aₛᵀ1 are computed once and reused.

    Parameters
    ----------
    projector : system model A.
    subsets : number of ordered subsets (views ``k, k + subsets, ...`` form subset k).
    mask : [z, y, x] 0/1 tensor of voxels reconstructed (default: the cylinder inscribed in the axial FOV).
    """

    def __init__(self, projector: SPECTProjector, subsets: int, mask: torch.Tensor | None = None) -> None:
        if not 1 <= subsets <= projector.n_angles:
            raise ValueError(f"subsets must be between 1 and the number of angles ({projector.n_angles})")
        self.projector = projector
        self.subsets = [torch.arange(k, projector.n_angles, subsets) for k in range(subsets)]
        self.mask = cylinder_mask(projector.shape, projector.device) if mask is None else mask
        ones = torch.ones(projector.n_angles, projector.shape[0], projector.shape[2], device=projector.device)
        self.sensitivity = [projector.adjoint(ones[views], views) * self.mask for views in self.subsets]
        self._total_sensitivity = float(sum(s.sum() for s in self.sensitivity))

    def reconstruct(self, counts: torch.Tensor, iterations: int, additive: torch.Tensor | None = None,
                    progress: Callable[[float], None] | None = None) -> torch.Tensor:
        """Return the OSEM estimate [z, y, x] (counts per voxel in the units of A) after ``iterations``.

        ``counts`` are the measured projections [angle, z, u]; ``additive`` the expected scatter (same shape).
        """
        total = float(counts.sum())
        estimate = self.mask * (total / max(self._total_sensitivity, 1e-12))
        steps = iterations * len(self.subsets)
        for step in range(steps):
            k = step % len(self.subsets)
            views = self.subsets[k]
            expected = self.projector.forward(estimate, views)
            if additive is not None:
                expected = expected + additive[views]
            ratio = torch.where(expected > 1e-9, counts[views] / expected.clamp_min(1e-9), 0.0)
            update = self.projector.adjoint(ratio, views)
            sensitivity = self.sensitivity[k]
            estimate = torch.where(sensitivity > 1e-9, estimate * update / sensitivity.clamp_min(1e-9), 0.0)
            if progress is not None:
                progress((step + 1) / steps)
        return estimate


def cylinder_mask(shape: tuple[int, int, int], device: str | torch.device = "cpu") -> torch.Tensor:
    """1 inside the cylinder inscribed in the axial field of view ([z, y, x], y and x the same size), else 0."""
    nz, ny, nx = shape
    centre = (nx - 1) / 2.0
    grid = torch.arange(nx, dtype=torch.float32) - centre
    inside = (grid[:, None] ** 2 + grid[None, :] ** 2) <= (nx / 2.0 - 0.5) ** 2
    return inside.to(torch.float32)[None].expand(nz, ny, nx).contiguous().to(device)
