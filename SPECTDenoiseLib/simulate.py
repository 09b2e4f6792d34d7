"""Full-count and low-count SPECT from an activity map: project, count, thin, reconstruct identically.

``simulate_pair`` works on arrays ([z, y, x], spacing in mm) and serves the training-data generator and the
teaching panel; ``simulate_low_count`` wraps it for SimpleITK images (the ``simulate`` command). The camera
rotates about the image z axis (axial slices are assumed); attenuation comes from a μ-map (from CT or a water
body); low-count data are made by binomial thinning of the *projections*, never by adding image noise.
Both reconstructions are divided by their acquisition's count scale, so they share the input's units.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from .errors import InputError
from .io import array_to_image, check_finite, check_volume, image_to_array, resample_to_reference
from .simulation import (
    OSEM,
    SPECTProjector,
    get_collimator,
    hu_to_mu,
    poisson_counts,
    scatter_projections,
    thin_counts,
    water_body_mu,
)


@dataclass
class SimulationResult:
    """Reconstructions [z, y, x] in the units of the input activity, and what was simulated."""

    full: np.ndarray
    low: dict[float, np.ndarray]
    mu_map: np.ndarray
    counts_full: float
    counts_low: dict[float, float]
    settings: dict = field(default_factory=dict)


def check_fraction(fraction: float) -> float:
    """Return ``fraction`` as a float if it lies in (0, 1], else raise InputError."""
    value = float(fraction)
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise InputError(f"The count fraction must be greater than 0 and at most 1 (got {fraction}).")
    return value


def orbit_radius_mm(support: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Circular orbit radius (mm) clearing the object: 1.2 × its largest axial radius plus a 20 mm (clinical)
    or 2 mm (small-animal, radius < 40 mm) margin. ``support`` is a [z, y, x] boolean mask."""
    _, ny, nx = support.shape
    footprint = support.any(axis=0)
    if not footprint.any():
        return 0.5 * max(ny * spacing_mm[1], nx * spacing_mm[2])
    y, x = np.nonzero(footprint)
    radius = float(np.sqrt(((y - (ny - 1) / 2) * spacing_mm[1]) ** 2 + ((x - (nx - 1) / 2) * spacing_mm[2]) ** 2).max())
    return 1.2 * radius + (20.0 if radius >= 40.0 else 2.0)


def _square_padding(shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
    _, ny, nx = shape
    n = max(ny, nx)
    return ((0, 0), ((n - ny) // 2, n - ny - (n - ny) // 2), ((n - nx) // 2, n - nx - (n - nx) // 2))


def _crop(volume: np.ndarray, padding: tuple[tuple[int, int], ...]) -> np.ndarray:
    return volume[tuple(slice(before, volume.shape[axis] - after) for axis, (before, after) in enumerate(padding))]


def reconstruct_acquisitions(projector: SPECTProjector, acquisitions: Sequence[tuple[float, torch.Tensor]],
                             iterations: int, subsets: int, scale: float = 1.0,
                             background: torch.Tensor | None = None, postfilter_fwhm_mm: float = 0.0,
                             progress: Callable[[float, str], None] | None = None) -> list[np.ndarray]:
    """Reconstruct every (fraction F, counts [angle, z, u]) pair with identical OSEM settings.

    Each estimate is divided by ``scale`` × F, so all images share the units of the full-count one (a low-count
    image is not 1/F darker); ``background`` is the expected full-count scatter, scaled by F for each
    acquisition. Returns float32 arrays [z, y, x] on the projector's grid, optionally Gaussian post-filtered.
    """
    report = progress or (lambda fraction, stage: None)
    osem = OSEM(projector, int(subsets))
    images = []
    for index, (fraction, counts) in enumerate(acquisitions):
        def step(done: float, index: int = index) -> None:
            report(0.1 + 0.9 * (index + done) / len(acquisitions), "reconstructing")

        additive = None if background is None else background * (scale * fraction)
        estimate = osem.reconstruct(counts, int(iterations), additive, step)
        image = (estimate / (scale * fraction)).cpu().numpy()
        if postfilter_fwhm_mm > 0:
            image = ndimage.gaussian_filter(image, [postfilter_fwhm_mm / 2.355 / s for s in projector.spacing_mm])
        images.append(np.maximum(image, 0.0).astype(np.float32))  # FFT blurs leave tiny negative values
    return images


def simulate_pair(activity: np.ndarray, spacing_mm: Sequence[float], mu_map: np.ndarray | None = None,
                  fractions: Sequence[float] = (0.1,), total_counts: float = 3e6,
                  collimator: str = "Tc99m-LEHR", iterations: int = 4, subsets: int = 8, angles: int = 120,
                  scatter: bool | float = False, seed: int = 0, postfilter_fwhm_mm: float = 0.0,
                  device: str = "cpu", progress: Callable[[float, str], None] | None = None) -> SimulationResult:
    """Simulate a full-count SPECT acquisition of ``activity`` and low-count versions by thinning.

    Parameters
    ----------
    activity : activity concentration [z, y, x] (any unit; negative values are set to 0).
    spacing_mm : voxel spacing (dz, dy, dx) in mm; dy must equal dx.
    mu_map : attenuation [z, y, x] in 1/mm at the photopeak; None outlines a water body on ``activity``.
    fractions : count fractions F in (0, 1] of the low-count acquisitions.
    total_counts : expected counts in all full-count projections together (primary + scatter).
    collimator : preset name (see ``SPECTDenoiseLib.simulation.PRESETS``).
    iterations, subsets, angles : OSEM settings and number of views over 360°.
    scatter : False, True (the preset's scatter fraction) or a scatter fraction in [0, 1).
    seed : seed of the Poisson and binomial draws.
    postfilter_fwhm_mm : Gaussian filter applied to every reconstruction (0 = none).

    Returns
    -------
    SimulationResult with ``full`` and ``low[F]`` reconstructed with identical settings, in activity units.
    """
    preset = get_collimator(collimator)
    activity = np.asarray(activity, dtype=np.float32)
    if activity.ndim != 3:
        raise InputError(f"The activity is {activity.ndim}D; a 3D volume is needed.")
    check_finite(activity, "The activity")
    fractions = [check_fraction(f) for f in fractions]
    if not total_counts > 0:
        raise InputError(f"The total counts must be positive (got {total_counts}).")
    if angles < 2 or not 1 <= subsets <= angles or iterations < 1:
        raise InputError(f"Need ≥ 2 angles, 1 ≤ subsets ≤ angles and ≥ 1 iteration (got {angles}, {subsets}, {iterations}).")
    activity = np.clip(activity, 0.0, None)
    if not activity.any():
        raise InputError("The activity is zero everywhere; nothing can be simulated.")
    spacing = tuple(float(s) for s in spacing_mm)
    if mu_map is None:
        mu_map = water_body_mu(activity, spacing, preset)
    mu_map = np.asarray(mu_map, dtype=np.float32)
    if mu_map.shape != activity.shape:
        raise InputError(f"The attenuation map has shape {mu_map.shape}, the activity {activity.shape}.")
    check_finite(mu_map, "The attenuation map")
    scatter_fraction = preset.scatter_fraction if scatter is True else float(scatter or 0.0)
    report = progress or (lambda fraction, stage: None)

    padding = _square_padding(activity.shape)
    padded = np.pad(activity, padding)
    padded_mu = np.pad(mu_map, padding)
    orbit = orbit_radius_mm((padded > 0.01 * padded.max()) | (padded_mu > 0), spacing)
    view_angles = np.linspace(0.0, 360.0, int(angles), endpoint=False)
    projector = SPECTProjector(padded.shape, spacing, preset, view_angles, orbit, padded_mu, device=device)
    rng = np.random.default_rng(seed)
    with torch.inference_mode():
        report(0.0, "projecting")
        primary = projector.forward(torch.from_numpy(padded).to(projector.device))
        background = scatter_projections(primary, scatter_fraction, (spacing[0], spacing[2]))
        scale = total_counts / float((primary + background).sum())
        full_counts = poisson_counts((primary + background) * scale, rng)
        acquisitions = [(1.0, full_counts)] + [(f, thin_counts(full_counts, f, rng)) for f in fractions]
        report(0.05, "sensitivity")
        images = [_crop(image, padding) for image in reconstruct_acquisitions(
            projector, acquisitions, iterations, subsets, scale, background, postfilter_fwhm_mm, report)]
    settings = {
        "collimator": preset.name, "iterations": int(iterations), "subsets": int(subsets), "angles": int(angles),
        "scatter_fraction": scatter_fraction, "total_counts": float(total_counts), "seed": int(seed),
        "orbit_radius_mm": orbit, "postfilter_fwhm_mm": float(postfilter_fwhm_mm),
    }
    return SimulationResult(
        full=images[0], low=dict(zip(fractions, images[1:])), mu_map=mu_map,
        counts_full=float(full_counts.sum()), counts_low={f: float(c.sum()) for f, c in acquisitions[1:]},
        settings=settings,
    )


def simulate_low_count(image: sitk.Image, fraction: float, ct: sitk.Image | None = None,
                       total_counts: float = 3e6, collimator: str = "Tc99m-LEHR", seed: int = 0,
                       **options) -> tuple[sitk.Image, sitk.Image]:
    """Return (low-count, re-reconstructed full-count) versions of a full-count SPECT ``image``.

    The image is taken as the activity; ``ct`` (HU, any grid overlapping it) is resampled onto it for the μ-map,
    otherwise a water body is outlined. Both outputs keep the input's geometry and units, float32. Other
    keyword ``options`` go to :func:`simulate_pair` (iterations, subsets, angles, scatter, ...).
    """
    fraction = check_fraction(fraction)
    preset = get_collimator(collimator)
    image = check_volume(image, "The input")
    activity = image_to_array(image)
    check_finite(activity, "The input")
    spacing = tuple(reversed(image.GetSpacing()))
    mu_map = None
    if ct is not None:
        ct_array = image_to_array(resample_to_reference(check_volume(ct, "The CT"), image, default_value=-1000.0))
        mu_map = hu_to_mu(ct_array, preset)
    result = simulate_pair(activity, spacing, mu_map, fractions=(fraction,), total_counts=total_counts,
                           collimator=preset.name, seed=seed, **options)
    return array_to_image(result.low[fraction], image), array_to_image(result.full, image)


def simulate_low_count_projections(path: str, fraction: float, ct: sitk.Image | None = None,
                                   collimator: str = "Tc99m-LEHR", seed: int = 0, energy_window: int | None = None,
                                   iterations: int = 4, subsets: int = 8,
                                   progress: Callable[[float, str], None] | None = None) -> tuple[sitk.Image, sitk.Image]:
    """Return (low-count, full-count) reconstructions of the measured projections in a DICOM NM TOMO file.

    The measured counts are thinned binomially to ``fraction`` and both data sets are reconstructed with the same
    OSEM settings (see :func:`SPECTDenoiseLib.projections.thin_and_reconstruct`); ``ct`` (HU) is resampled onto
    the reconstruction grid for the μ-map, otherwise a water body is outlined. Units: counts per voxel of the
    full acquisition (the low image is divided by F). ``progress(fraction, stage)`` is called as work proceeds.
    """
    from .projections import projection_geometry, read_nm_projections, thin_and_reconstruct

    fraction = check_fraction(fraction)
    preset = get_collimator(collimator)
    projections = read_nm_projections(path, energy_window)
    mu_map = None
    if ct is not None:
        grid = projection_geometry(projections)
        ct_array = image_to_array(resample_to_reference(check_volume(ct, "The CT"), grid, default_value=-1000.0))
        mu_map = hu_to_mu(ct_array, preset)
    full, low, _ = thin_and_reconstruct(projections, (fraction,), preset.name, iterations, subsets, seed, mu_map,
                                        progress=progress)
    return low[fraction], full
