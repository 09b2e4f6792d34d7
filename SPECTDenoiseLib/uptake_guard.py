"""Uptake guard: give back to the denoised image any structure the denoiser removed that is not noise.

A denoiser that lowers a lesion's uptake is dangerous however low its RMSE. The guard looks at what the
denoiser took away, the *method noise* ``input − denoised`` (Buades et al. 2005): where denoising removed only
noise, the method noise smoothed over a lesion-sized neighbourhood is close to zero; where it removed (or
added) a lesion, the smoothed method noise is a blob far larger than the noise can explain. Such regions are
given back the input's values, so a lesion's mean there is the input's own.

How "larger than the noise can explain" is judged, without knowing the scanner:

1. the method noise is clipped at ``CLIP_SD`` local noise SDs (so a single-voxel speckle spike of a low-count
   OSEM image weighs like an ordinary noise voxel) and band-passed with differences of Gaussians of ``s·sigma``
   and ``SURROUND × s·sigma`` voxels for each scale ``s`` in ``SCALES`` (blob detectors matched to lesions of a
   few voxels and of twice that; offsets over whole organs, such as a denoiser correcting low-count OSEM's
   positive bias, are left out);
2. the noise SD of every map is estimated locally, from the RMS over a shell of voxels around each voxel (radii
   ``SHELL`` × the scale) that leaves out its own neighbourhood (the cell-averaging detector of radar), so
   neither the lesion under test nor a hot organ elsewhere sets it;
3. a voxel's significance is ``z = |band-passed method noise| / its local noise SD``; the input's weight rises
   from 0 at ``z_low`` to 1 at ``z_high`` (the larger of the scales' weights) and is spread over the blob's
   neighbourhood (grey dilation);
4. output = denoised + weight × method noise, where the method noise given back is capped at ``SPIKE_RATIO``
   times its local (Gaussian) mean, so a lesion is given back whole while isolated speckle is not.

5. finally (:func:`restore_coarse_counts`), the method noise smoothed at ``COARSE_SIGMA_MM`` (far coarser than any
   lesion) is added back: counts summed over organ-sized regions are well measured even at low counts, so the
   denoiser may move counts between neighbouring voxels but not create or destroy them over a region; this keeps
   the body's total counts where the input has them.

The constants were chosen on validation cases only (seeds 8 000 000+, never the benchmark's; see BENCHMARKS.md).
Everything is relative (z is a ratio of two maps in the same units), so the guard commutes with a change of units:
``guard(k·x, k·d) = k·guard(x, d)``. Arrays are float32 [z, y, x] in the same units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SIGMA_VOXELS = 1.0
Z_LOW = 4.0
Z_HIGH = 6.0
SHELL = (2, 4)
SCALES = (1, 2)
SPREAD_VOXELS = 3
SURROUND = 3.0
CLIP_SD = 6.0
SPIKE_RATIO = 2.0
COARSE_SIGMA_MM = 45.0


@dataclass(frozen=True)
class GuardResult:
    """The guarded image and what the guard did.

    image : denoised image with significant removed structure given back.
    weight : per-voxel weight in [0, 1] of the input in ``image`` (0: the denoised value, 1: the input's).
    """

    image: np.ndarray
    weight: np.ndarray

    @property
    def restored_fraction(self) -> float:
        """Share of the voxels given back (weight-weighted), 0–1."""
        return float(self.weight.mean()) if self.weight.size else 0.0


def guard_uptake(noisy: np.ndarray, denoised: np.ndarray, sigma: float = SIGMA_VOXELS, z_low: float = Z_LOW,
                 z_high: float = Z_HIGH) -> GuardResult:
    """Give back the input where denoising removed (or added) structure beyond the noise; see the module text.

    Parameters
    ----------
    noisy : the denoiser's input [z, y, x] (negatives already clipped), any units.
    denoised : the denoiser's output, same shape and units.
    sigma : Gaussian smoothing of the method noise, in voxels.
    z_low, z_high : significance at which the input's weight starts to rise and reaches 1.
    """
    if noisy.shape != denoised.shape:
        raise ValueError(f"shapes differ: {noisy.shape} and {denoised.shape}")
    if not 0 < z_low < z_high:
        raise ValueError("need 0 < z_low < z_high")
    removed = noisy.astype(np.float32) - denoised.astype(np.float32)
    bound = CLIP_SD * local_noise_sd(removed)
    clipped = np.clip(removed, -bound, bound)
    weight = np.zeros_like(removed)
    for scale in SCALES:
        band = ndimage.gaussian_filter(clipped, scale * sigma) - ndimage.gaussian_filter(clipped, SURROUND * scale * sigma)
        significance = np.abs(band) / local_noise_sd(band, *(scale * r for r in SHELL))
        weight = np.maximum(weight, np.clip((significance - z_low) / (z_high - z_low), 0.0, 1.0))
    weight = ndimage.grey_dilation(weight, size=(SPREAD_VOXELS,) * weight.ndim).astype(np.float32)
    spread = np.abs(ndimage.gaussian_filter(removed, sigma))
    given_back = np.clip(removed, -SPIKE_RATIO * spread, SPIKE_RATIO * spread)
    return GuardResult(image=(denoised + weight * given_back).astype(np.float32), weight=weight)


def restore_coarse_counts(noisy: np.ndarray, denoised: np.ndarray, spacing_mm: tuple[float, float, float],
                          sigma_mm: float = COARSE_SIGMA_MM) -> np.ndarray:
    """Add back to ``denoised`` the method noise ``noisy − denoised`` smoothed with a Gaussian of ``sigma_mm``.

    What a denoiser removed at scales far above a lesion's (a shift of counts between organs, a change of the total)
    is not noise: the input measures it well. On validation scans (σ = 45 mm) this kept the body's total within the
    input's own distance from the noise-free total at no cost in NRMSE (benchmarks/training/experiments/README.md).

    Parameters
    ----------
    noisy, denoised : [z, y, x] the denoiser's input and output, same units.
    spacing_mm : voxel size [z, y, x] in mm.
    sigma_mm : Gaussian SD in mm.
    """
    removed = noisy.astype(np.float32) - denoised.astype(np.float32)
    # Reflecting edges keep the volume's total exactly: nothing smoothed away leaves the field of view.
    coarse = ndimage.gaussian_filter(removed, [sigma_mm / s for s in spacing_mm], mode="reflect")
    return (denoised + coarse).astype(np.float32)


def guard_settings() -> dict[str, float | tuple[float, ...]]:
    """The guard's constants by name (benchmarks store them with their results, so a changed guard is re-run)."""
    return {name: value for name, value in globals().items() if name.isupper()}


def local_noise_sd(values: np.ndarray, inner: int = SHELL[0], outer: int = SHELL[1]) -> np.ndarray:
    """Per-voxel noise SD of ``values`` (zero-mean noise plus rare structure) from a shell around each voxel.

    The RMS of ``values`` over the cube of half-width ``outer`` voxels minus the cube of half-width ``inner``
    (the voxel's own neighbourhood, where a lesion under test would sit, is left out, as in the cell-averaging
    constant-false-alarm-rate detectors of radar), floored at 1e-3 × the RMS of the whole volume.
    """
    squares = values.astype(np.float64) ** 2
    sizes = 2 * inner + 1, 2 * outer + 1
    small, big = (ndimage.uniform_filter(squares, size, mode="nearest") * size**values.ndim for size in sizes)
    power = np.maximum(big - small, 0.0) / (sizes[1] ** values.ndim - sizes[0] ** values.ndim)
    floor = 1e-6 * float(squares.mean()) + np.finfo(np.float32).tiny
    return np.sqrt(np.maximum(power, floor)).astype(np.float32)

