"""Rotate-and-sum SPECT projector for a parallel-hole camera on a circular orbit, with its exact adjoint.

Geometry: the camera rotates about the z axis (the volume's slice axis). At view angle θ, voxel centres are
resampled (bilinear) onto a grid aligned with the camera: bins ``u`` along the detector row and depth ``t``
towards the camera, (x, y) = (u·cosθ − t·sinθ, u·sinθ + t·cosθ) around the in-plane centre. The collimator face
sits at t = −R (orbit radius R). Each depth plane is attenuated by exp(−∫μ) from that plane to the camera and
blurred in (z, u) by the collimator's Gaussian at its distance, then the planes are summed. The blur is applied
in the Fourier domain with zero padding of ≥ 3σ, so it is a symmetric linear operator; the adjoint reuses the
same kernels and scatters the bilinear weights back (``index_add_``), so ⟨Ax, y⟩ = ⟨x, Aᵀy⟩ to rounding.

Arrays: volumes [z, y, x] with y and x the same size and spacing; projections [angle, z, u].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputError
from .collimators import Collimator


def _fft_size(n: int) -> int:
    """Smallest size ≥ n whose only prime factors are 2, 3 and 5."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


class SPECTProjector:
    """Attenuated, depth-dependent-blur projector ``A`` and its adjoint ``Aᵀ`` (torch, float32, CPU or GPU).

    Parameters
    ----------
    shape : volume shape [z, y, x]; y must equal x.
    spacing_mm : voxel spacing (dz, dy, dx) in mm; dy must equal dx.
    collimator : detector response model.
    angles_deg : camera angles in degrees.
    orbit_radius_mm : distance from the rotation axis to the collimator face.
    mu_map : attenuation map [z, y, x] in 1/mm, or None for no attenuation.
    cache_mb : memory allowed for caching attenuation factors between calls.
    views_per_chunk : views processed together (bounds the working memory).
    blur_scale : the collimator FWHM is multiplied by this (0 = no resolution model, as OSEM without
        resolution recovery; 1.1 = a reconstruction that overestimates the blur).
    penetration : (fraction, FWHM in mm) of a broad septal-penetration tail added to the response (the tail
        keeps ``fraction`` of the counts of each depth plane), or None.
    """

    def __init__(self, shape: Sequence[int], spacing_mm: Sequence[float], collimator: Collimator,
                 angles_deg: Sequence[float], orbit_radius_mm: float, mu_map: np.ndarray | None = None,
                 device: str | torch.device = "cpu", cache_mb: float = 512.0, views_per_chunk: int = 8,
                 blur_scale: float = 1.0, penetration: tuple[float, float] | None = None) -> None:
        nz, ny, nx = (int(n) for n in shape)
        dz, dy, dx = (float(s) for s in spacing_mm)
        if ny != nx or abs(dy - dx) > 1e-3 * dx:
            raise InputError("The projector needs square axial slices (same size and spacing in x and y).")
        self.shape = (nz, ny, nx)
        self.spacing_mm = (dz, dy, dx)
        self.device = torch.device(device)
        self.angles_rad = torch.tensor(np.deg2rad(np.asarray(angles_deg, dtype=np.float64)), dtype=torch.float64)
        self.orbit_radius_mm = float(orbit_radius_mm)
        self.collimator = collimator
        self.views_per_chunk = max(1, int(views_per_chunk))
        centre = (nx - 1) / 2.0
        depth_mm = (np.arange(nx) - centre) * dx
        sigmas = float(blur_scale) * np.array([collimator.sigma_mm(self.orbit_radius_mm + t) for t in depth_mm])
        tail_fraction, tail_sigma = (0.0, 0.0) if penetration is None else (
            float(penetration[0]), float(penetration[1]) / (2.0 * math.sqrt(2.0 * math.log(2.0))))
        reach = max(float(sigmas.max()), tail_sigma if tail_fraction > 0 else 0.0)
        self.pad_u = _fft_size(nx + math.ceil(3 * reach / dx) + 1)
        self.pad_z = _fft_size(nz + math.ceil(3 * reach / dz) + 1)
        fu = np.fft.fftfreq(self.pad_u, d=dx)
        fz = np.fft.rfftfreq(self.pad_z, d=dz)
        freq2 = fu[:, None] ** 2 + fz[None, :] ** 2
        kernels = np.exp(-2.0 * math.pi**2 * sigmas[:, None, None] ** 2 * freq2[None])
        if tail_fraction > 0:
            tail = np.exp(-2.0 * math.pi**2 * tail_sigma**2 * freq2)
            kernels = (1.0 - tail_fraction) * kernels + tail_fraction * tail[None]
        self._kernels = torch.tensor(kernels, dtype=torch.float32, device=self.device)  # [depth, u, fz]
        self._mu = None if mu_map is None else torch.as_tensor(np.ascontiguousarray(mu_map, dtype=np.float32),
                                                                device=self.device)
        if self._mu is not None and tuple(self._mu.shape) != self.shape:
            raise InputError(f"The attenuation map has shape {tuple(self._mu.shape)}, the activity {self.shape}.")
        self._cache: dict[tuple[int, ...], torch.Tensor] = {}
        self._cache_left = cache_mb * 2**20

    @property
    def n_angles(self) -> int:
        """Number of camera angles."""
        return int(self.angles_rad.numel())

    def _rotation(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bilinear sampling of the axial plane for ``views``: flat voxel indices and weights, each [4, V·N·N]."""
        n = self.shape[2]
        centre = (n - 1) / 2.0
        theta = self.angles_rad[views][:, None, None]
        grid = torch.arange(n, dtype=torch.float64) - centre
        t, u = grid[None, :, None], grid[None, None, :]
        x = u * torch.cos(theta) - t * torch.sin(theta) + centre
        y = u * torch.sin(theta) + t * torch.cos(theta) + centre
        x0, y0 = torch.floor(x), torch.floor(y)
        fx, fy = x - x0, y - y0
        indices, weights = [], []
        for oy, ox, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
            xi, yi = x0 + ox, y0 + oy
            inside = (xi >= 0) & (xi <= n - 1) & (yi >= 0) & (yi <= n - 1)
            indices.append(torch.where(inside, yi * n + xi, 0).long().reshape(-1))
            weights.append(torch.where(inside, w, 0).float().reshape(-1))
        return torch.stack(indices).to(self.device), torch.stack(weights).to(self.device)

    def _rotate(self, columns: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor], views: int) -> torch.Tensor:
        """Resample volume columns [y·x, z] onto camera grids → [views, depth, u, z]."""
        indices, weights = rotation
        out = columns.index_select(0, indices[0]) * weights[0, :, None]
        for k in range(1, 4):
            out += columns.index_select(0, indices[k]) * weights[k, :, None]
        n = self.shape[2]
        return out.view(views, n, n, self.shape[0])

    def _attenuation(self, views: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor | None:
        """exp(−∫μ) from each voxel to the camera, [views, depth, u, z]; cached within the memory budget."""
        if self._mu is None:
            return None
        key = tuple(views.tolist())
        if key in self._cache:
            return self._cache[key]
        mu = self._rotate(self._mu.reshape(self.shape[0], -1).T.contiguous(), rotation, len(key))
        path = torch.cumsum(mu, dim=1) - 0.5 * mu
        factors = torch.exp(-path * self.spacing_mm[2])
        size = factors.numel() * factors.element_size()
        if size <= self._cache_left:
            self._cache[key] = factors
            self._cache_left -= size
        return factors

    def _chunks(self, views: Sequence[int] | torch.Tensor | None) -> list[torch.Tensor]:
        """View indices (all if None) split into groups of at most ``views_per_chunk``."""
        views = torch.arange(self.n_angles) if views is None else torch.as_tensor(views, dtype=torch.long).reshape(-1)
        return list(torch.split(views, self.views_per_chunk))

    def forward(self, volume: torch.Tensor, views: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Project ``volume`` [z, y, x] for the given view indices (all if None) → [views, z, u]."""
        columns = volume.reshape(self.shape[0], -1).T.contiguous()
        return torch.cat([self._forward_chunk(columns, chunk) for chunk in self._chunks(views)])

    def adjoint(self, projection: torch.Tensor, views: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Back-project ``projection`` [views, z, u] with the exact transpose of :meth:`forward` → [z, y, x]."""
        nz, _, n = self.shape
        columns = torch.zeros(n * n, nz, dtype=projection.dtype, device=projection.device)
        start = 0
        for chunk in self._chunks(views):
            self._adjoint_chunk(projection[start:start + len(chunk)], chunk, columns)
            start += len(chunk)
        return columns.T.reshape(nz, n, n).contiguous()

    def _forward_chunk(self, columns: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        nz, _, n = self.shape
        rotation = self._rotation(views)
        planes = self._rotate(columns, rotation, len(views))
        attenuation = self._attenuation(views, rotation)
        if attenuation is not None:
            planes = planes * attenuation
        spectrum = torch.fft.rfft2(planes, s=(self.pad_u, self.pad_z))
        summed = (spectrum * self._kernels).sum(dim=1)
        projection = torch.fft.irfft2(summed, s=(self.pad_u, self.pad_z))[:, :n, :nz]
        return projection.transpose(1, 2).contiguous()

    def _adjoint_chunk(self, projection: torch.Tensor, views: torch.Tensor, columns: torch.Tensor) -> None:
        nz, _, n = self.shape
        spectrum = torch.fft.rfft2(projection.transpose(1, 2), s=(self.pad_u, self.pad_z))
        planes = torch.fft.irfft2(spectrum[:, None] * self._kernels, s=(self.pad_u, self.pad_z))[..., :n, :nz]
        rotation = self._rotation(views)
        attenuation = self._attenuation(views, rotation)
        if attenuation is not None:
            planes = planes * attenuation
        flat = planes.reshape(-1, nz)
        indices, weights = rotation
        for k in range(4):
            columns.index_add_(0, indices[k], flat * weights[k, :, None])
