"""Per-voxel features of a denoised scan from which its error can be predicted without knowing the truth.

``benchmarks/conditional_reference.py`` learns, on cases of a run seed no model trained on, a map from these
features to each voxel's |error| against the noise-free reconstruction, and asks how well that map ranks the voxels
of validation scans by error: a reference for issue 11's ranking target that, unlike an expected-error map
estimated over other noise draws, is conditioned on the scan in hand (its input, its image and the noise they
show), as a posterior variance is. Every feature is computed from the low-count input and the denoised image
alone, divided by the image's body mean where it carries image units, so the features do not change with the
scan's units.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FEATURES = (
    "image", "input_smoothed_1", "input_smoothed_2", "input_smoothed_4", "input_local_sd_2",
    "image_minus_input_2", "image_gradient_1", "image_contrast_4", "method_noise_rms_2", "method_noise_mean_2",
    "depth_mm", "image_rank", "input_smoothed_2_rank", "method_noise_rms_2_rank", "scan_method_noise",
)
"""Names of the columns of :func:`scan_features`: a suffix n is a Gaussian σ of n voxels; image units ÷ the body
mean of the image; ``depth_mm`` the distance to the body's edge; ``*_rank`` the voxel's rank among the body's
voxels (0–1); ``scan_method_noise`` the RMS of input − image over the body (one value per scan)."""


def _smoothed(volume: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(volume.astype(np.float64), sigma)


def _ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values, kind="stable"), kind="stable") / values.size


def scan_features(low: np.ndarray, image: np.ndarray, body: np.ndarray,
                  spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """The :data:`FEATURES` of every ``body`` voxel, [voxel, feature] float64, of the denoised ``image`` of the
    low-count scan ``low`` ([z, y, x], same units; ``body`` a boolean mask with a positive image mean)."""
    mean = float(image[body].mean(dtype=np.float64))
    method_noise = low.astype(np.float64) - image
    input_2 = _smoothed(low, 2)
    noise_rms_2 = np.sqrt(_smoothed(method_noise**2, 2))
    columns = [
        image / mean, _smoothed(low, 1) / mean, input_2 / mean, _smoothed(low, 4) / mean,
        np.sqrt(np.maximum(_smoothed(low.astype(np.float64) ** 2, 2) - input_2**2, 0.0)) / mean,
        (image - input_2) / mean,
        ndimage.gaussian_gradient_magnitude(image.astype(np.float64), 1) / mean,
        image / np.maximum(_smoothed(image, 4), 1e-6 * mean),
        noise_rms_2 / mean, _smoothed(method_noise, 2) / mean,
        ndimage.distance_transform_edt(body, sampling=spacing_mm),
    ]
    matrix = np.stack([column[body] for column in columns], axis=1)
    ranked = ("image", "input_smoothed_2", "method_noise_rms_2")
    ranks = [_ranks(matrix[:, FEATURES.index(name)]) for name in ranked]
    scan_noise = np.full(matrix.shape[0], np.sqrt(np.mean(method_noise[body] ** 2)) / mean)
    return np.column_stack([matrix, *ranks, scan_noise])
