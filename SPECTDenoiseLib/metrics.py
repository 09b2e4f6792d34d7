"""Image-quality and region metrics for SPECT, always computed inside a mask (body or ROI).

Arrays are numpy arrays indexed [z, y, x]; masks are boolean arrays of the same shape; spacings are in mm in the
same [z, y, x] order (use :func:`SPECTDenoiseLib.io.spacing_zyx`, not ``GetSpacing()``, which is [x, y, z]).
Image-quality metrics compare ``image`` (e.g. denoised low-count) against ``reference`` (e.g. full count):

* RMSE  = sqrt(mean((image − reference)²)) over the mask, in voxel units.
* NRMSE = RMSE / mean(reference in the mask) (normalised by the reference mean, not its range).
* PSNR  = 20·log10(peak / RMSE) dB with peak = max(reference in the mask), as Pan et al. 2022; ∞ if RMSE is 0.
* SSIM  = scikit-image's 3D ``structural_similarity`` (7×7×7 uniform window, K1 0.01, K2 0.03) with
  data range = max − min of the reference in the mask, computed on the mask's bounding box (plus the window's
  half-width) and averaged over the mask's voxels.

Region statistics follow PERCIST conventions: the peak is the highest mean inside a 1 cm³ sphere (radius 6.2 mm,
voxels whose centres lie inside) centred on any voxel of the region; the sphere itself may leave the region.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

from .errors import InputError

PEAK_RADIUS_MM = 6.2  # radius of a 1 cm³ sphere
SSIM_WINDOW = 7


@dataclass(frozen=True)
class RegionStatistics:
    """Statistics of a region's voxel values (times ``scale``, e.g. an SUV factor).

    Attributes
    ----------
    voxels : number of voxels in the region.
    volume_ml : region volume [ml].
    mean, max, min : of the voxel values.
    std : population standard deviation (ddof 0) of the voxel values.
    cov : coefficient of variation std / mean (NaN when the mean is 0).
    peak : highest mean in a 1 cm³ sphere centred on a voxel of the region (SUVpeak when scaled to SUV).
    """

    voxels: int
    volume_ml: float
    mean: float
    max: float
    min: float
    std: float
    cov: float
    peak: float

    def scaled(self, factor: float) -> RegionStatistics:
        """The same statistics for values multiplied by ``factor`` (e.g. an SUV factor); CoV is unchanged."""
        return dataclasses.replace(
            self, mean=self.mean * factor, max=self.max * factor, min=self.min * factor,
            std=self.std * abs(factor), peak=self.peak * factor,
        )

    def as_dict(self) -> dict[str, float]:
        """The statistics as a plain dict (for JSON and tables)."""
        return dataclasses.asdict(self)


def _check_pair(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if image.shape != reference.shape:
        raise InputError(f"The image {image.shape} and the reference {reference.shape} have different sizes [z, y, x].")
    return _check_mask(reference, mask)


def _check_mask(array: np.ndarray, mask: np.ndarray, name: str = "mask") -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != array.shape:
        raise InputError(f"The ROI {name} has size {mask.shape} but the image has {array.shape} [z, y, x].")
    if not mask.any():
        raise InputError(f"The ROI {name} contains no voxels.")
    return mask


def rmse(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """Root-mean-square difference between ``image`` and ``reference`` over ``mask`` (voxel units)."""
    mask = _check_pair(image, reference, mask)
    difference = image[mask].astype(np.float64) - reference[mask].astype(np.float64)
    return float(np.sqrt(np.mean(difference**2)))


def nrmse(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """RMSE over ``mask`` divided by the mean of ``reference`` in ``mask`` (dimensionless)."""
    mask = _check_pair(image, reference, mask)
    mean = float(np.mean(reference[mask], dtype=np.float64))
    if mean <= 0:
        raise InputError("NRMSE needs a reference with a positive mean in the mask.")
    return rmse(image, reference, mask) / mean


def psnr(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """Peak signal-to-noise ratio [dB] over ``mask``, peak = max of ``reference`` in ``mask``; ∞ when equal."""
    mask = _check_pair(image, reference, mask)
    peak = float(np.max(reference[mask]))
    if peak <= 0:
        raise InputError("PSNR needs a reference with positive values in the mask.")
    error = rmse(image, reference, mask)
    return math.inf if error == 0 else 20.0 * math.log10(peak / error)


def _bounding_box(mask: np.ndarray, margin: Sequence[int], minimum: int = 1) -> tuple[slice, ...]:
    """Slices of the mask's bounding box grown by ``margin`` voxels per axis and to ``minimum`` voxels, clipped."""
    box = []
    for axis, size in enumerate(mask.shape):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        occupied = np.flatnonzero(mask.any(axis=other))
        low, high = max(int(occupied[0]) - margin[axis], 0), min(int(occupied[-1]) + 1 + margin[axis], size)
        while high - low < minimum and (low > 0 or high < size):
            low, high = max(low - 1, 0), min(high + 1, size)
        box.append(slice(low, high))
    return tuple(box)


def ssim(image: np.ndarray, reference: np.ndarray, mask: np.ndarray, data_range: float | None = None) -> float:
    """Mean 3D SSIM over the voxels of ``mask`` (see the module docstring for window and data range).

    Parameters
    ----------
    image, reference : arrays [z, y, x] of the same shape; at least 7 voxels along each axis.
    mask : boolean ROI [z, y, x].
    data_range : value range for SSIM's constants; default max − min of ``reference`` in ``mask``.
    """
    from skimage.metrics import structural_similarity

    mask = _check_pair(image, reference, mask)
    if min(mask.shape) < SSIM_WINDOW:
        raise InputError(f"SSIM needs at least {SSIM_WINDOW} voxels along each axis; the image has {mask.shape}.")
    if data_range is None:
        data_range = float(np.max(reference[mask]) - np.min(reference[mask]))
    if data_range <= 0:
        raise InputError("SSIM needs a reference that is not constant in the mask (its data range is 0).")
    box = _bounding_box(mask, [SSIM_WINDOW // 2] * mask.ndim, SSIM_WINDOW)
    _, local = structural_similarity(
        reference[box].astype(np.float64), image[box].astype(np.float64), win_size=SSIM_WINDOW,
        data_range=data_range, full=True,
    )
    return float(np.mean(local[mask[box]]))


def sphere_kernel(spacing_mm: Sequence[float], radius_mm: float = PEAK_RADIUS_MM) -> np.ndarray:
    """Boolean ball [z, y, x] of the voxels whose centres lie within ``radius_mm`` of the centre voxel."""
    half = [math.floor(radius_mm / s) for s in spacing_mm]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing_mm)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2 + 1e-9


def _peak(array: np.ndarray, mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    kernel = sphere_kernel(spacing_mm).astype(np.float64)
    box = _bounding_box(mask, [k // 2 for k in kernel.shape])
    values = array[box].astype(np.float64)
    sums = signal.fftconvolve(values, kernel, mode="same")
    counts = signal.fftconvolve(np.ones_like(values), kernel, mode="same")  # fewer at the image border
    return float(np.max((sums / np.rint(counts))[mask[box]]))


def region_statistics(
    array: np.ndarray, mask: np.ndarray, spacing_mm: Sequence[float], scale: float = 1.0, name: str = "mask"
) -> RegionStatistics:
    """Statistics of ``array · scale`` inside ``mask``.

    Parameters
    ----------
    array : values [z, y, x] (e.g. Bq/ml or counts).
    mask : boolean region [z, y, x].
    spacing_mm : voxel spacing [z, y, x] in mm.
    scale : factor applied to every value (e.g. :func:`SPECTDenoiseLib.suv.suv_factor` for SUV).
    name : how the ROI is named in errors.

    Raises
    ------
    InputError
        If the mask is empty or its shape differs from the array's.
    """
    mask = _check_mask(array, mask, name)
    values = array[mask].astype(np.float64)
    mean, std = float(values.mean()), float(values.std())
    return RegionStatistics(
        voxels=int(values.size),
        volume_ml=float(values.size * np.prod(spacing_mm) / 1000.0),
        mean=mean,
        max=float(values.max()),
        min=float(values.min()),
        std=std,
        cov=std / mean if mean != 0 else math.nan,
        peak=_peak(array, mask, spacing_mm),
    ).scaled(scale)


def label_statistics(
    array: np.ndarray, labels: np.ndarray, spacing_mm: Sequence[float], scale: float = 1.0
) -> dict[int, RegionStatistics]:
    """:func:`region_statistics` for every positive label value of ``labels`` ([z, y, x] ints), in label order.

    Raises
    ------
    InputError
        If the label map's shape differs from the array's or it holds no positive label.
    """
    if labels.shape != array.shape:
        raise InputError(f"The label map has size {labels.shape} but the image has {array.shape} [z, y, x].")
    if not np.any(labels > 0):
        raise InputError("The label map holds no region (every voxel is 0); "
                         "give at least one region a value of 1 or more.")
    return {
        int(value): region_statistics(array, labels == value, spacing_mm, scale, name=f"label {int(value)}")
        for value in np.unique(labels)
        if value > 0
    }


def contrast_recovery(
    image: np.ndarray, sphere_mask: np.ndarray, background_mask: np.ndarray, true_ratio: float
) -> float:
    """NEMA NU 2 hot-sphere contrast recovery (C_s / C_b − 1) / (true_ratio − 1), as a fraction (1 = perfect).

    ``C_s`` and ``C_b`` are the mean values of ``image`` in the sphere and background masks; ``true_ratio`` is the
    true sphere-to-background activity-concentration ratio (e.g. 4 for an IEC phantom filled 4:1).
    """
    if true_ratio <= 1:
        raise InputError(f"The true sphere-to-background ratio must be above 1 for hot spheres (got {true_ratio}).")
    sphere = float(np.mean(image[_check_mask(image, sphere_mask, "sphere")], dtype=np.float64))
    background = float(np.mean(image[_check_mask(image, background_mask, "background")], dtype=np.float64))
    if background <= 0:
        raise InputError("Contrast recovery needs a positive mean in the background ROI.")
    return (sphere / background - 1.0) / (true_ratio - 1.0)


def body_mask(
    array: np.ndarray, fraction: float = 0.05, percentile: float = 99.0, smoothing_voxels: float = 1.0
) -> np.ndarray:
    """Boolean body mask [z, y, x] of a SPECT volume, so that empty air does not dilute metrics.

    The volume is smoothed (Gaussian, σ = ``smoothing_voxels``), thresholded at ``fraction`` of the
    ``percentile``-th percentile of its positive voxels, reduced to the largest connected component, and its
    holes are filled in 3D and in every axial slice (cold organs and lungs stay inside the body).

    Raises
    ------
    InputError
        If the volume has no positive values.
    """
    smoothed = ndimage.gaussian_filter(array.astype(np.float64), smoothing_voxels) if smoothing_voxels else array
    positive = smoothed[smoothed > 0]
    if positive.size == 0:
        raise InputError("The image has no positive values, so no body outline can be found.")
    mask = smoothed > fraction * float(np.percentile(positive, percentile))
    components, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        mask = components == int(np.argmax(sizes))
    mask = ndimage.binary_fill_holes(mask)
    for index in range(mask.shape[0]):
        mask[index] = ndimage.binary_fill_holes(mask[index])
    return mask


def image_quality(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """RMSE, NRMSE, PSNR [dB] and SSIM of ``image`` against ``reference`` in ``mask`` (see the module docstring)."""
    return {
        "rmse": rmse(image, reference, mask),
        "nrmse": nrmse(image, reference, mask),
        "psnr_db": psnr(image, reference, mask),
        "ssim": ssim(image, reference, mask),
    }
