"""Filtered back-projection with a Butterworth-windowed ramp filter and first-order Chang attenuation correction.

Clinical FBP (e.g. DaT SPECT) is the reconstruction most unlike OSEM with resolution recovery: no resolution
model, linear, and noise shaped by the filter window instead of by the iteration count. Geometry and array order
follow :class:`~SPECTDenoiseLib.simulation.projector.SPECTProjector` (projections [angle, z, u]).
"""

from __future__ import annotations

import math

import torch

from .projector import SPECTProjector


def butterworth_ramp(n: int, spacing_mm: float, cutoff: float, order: int) -> torch.Tensor:
    """Frequency response |f| · 1 / (1 + (f / f_c)^(2·order)) for an ``n``-point FFT along the detector row.

    ``cutoff`` is f_c as a fraction of the Nyquist frequency 1 / (2 · spacing); ``f`` is in cycles per mm.
    """
    frequencies = torch.fft.rfftfreq(n, d=spacing_mm).to(torch.float32)
    nyquist = 0.5 / spacing_mm
    window = 1.0 / (1.0 + (frequencies / (cutoff * nyquist)) ** (2 * int(order)))
    return frequencies * window


def filtered_backprojection(plain: SPECTProjector, counts: torch.Tensor, cutoff: float = 0.5, order: int = 5,
                            chang: torch.Tensor | None = None) -> torch.Tensor:
    """Reconstruct [z, y, x] from ``counts`` [angle, z, u] over a 180° or 360° arc.

    Parameters
    ----------
    plain : projector without resolution model and attenuation (``blur_scale=0``, ``mu_map=None``): its adjoint
        is the pure back-projection.
    counts : projections (scatter already subtracted if it is to be corrected).
    cutoff, order : Butterworth window (cutoff as a fraction of Nyquist).
    chang : first-order Chang correction factors [z, y, x] (see :func:`chang_factors`), or None.

    Returns the image in the units of the projector (counts per voxel, as OSEM's estimate). Each line is measured
    once over 180° and twice over 360°, so the back-projection weight is π / (number of views) in both cases.
    """
    n = counts.shape[-1]
    du = plain.spacing_mm[2]
    padded = 2 ** math.ceil(math.log2(2 * n))
    response = butterworth_ramp(padded, du, cutoff, order).to(counts.device)
    filtered = torch.fft.irfft(torch.fft.rfft(counts, n=padded) * response, n=padded)[..., :n] * du
    image = plain.adjoint(filtered) * (math.pi / plain.n_angles)
    if chang is not None:
        image = image * chang
    return image


def chang_factors(attenuated_plain: SPECTProjector, plain: SPECTProjector, floor: float = 0.05) -> torch.Tensor:
    """First-order Chang correction 1 / mean over views of exp(−∫μ) for every voxel, [z, y, x].

    ``attenuated_plain`` is the projector with the μ-map and no resolution model, ``plain`` the same without μ.
    The mean attenuation is clamped at ``floor`` so voxels outside the field of view stay finite.
    """
    ones = torch.ones(plain.n_angles, plain.shape[0], plain.shape[2], device=plain.device)
    reached = plain.adjoint(ones)
    attenuated = attenuated_plain.adjoint(ones)
    mean = torch.where(reached > 1e-6, attenuated / reached.clamp_min(1e-6), 1.0)
    return 1.0 / mean.clamp_min(floor)
