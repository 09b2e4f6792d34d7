"""Attenuation maps (1/mm at the photopeak): bilinear conversion from CT numbers, or a water body from SPECT."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .collimators import Collimator

HU_CORTICAL_BONE = 1000.0


def hu_to_mu(ct_hu: np.ndarray, collimator: Collimator) -> np.ndarray:
    """Convert CT numbers (HU, [z, y, x]) to linear attenuation (1/mm) at the collimator's photopeak.

    Bilinear model: air–water mixture below 0 HU (μ = μ_water·(1 + HU/1000)), water–bone mixture above
    (reaching cortical bone's μ at 1000 HU). Values are clipped at 0 and at 3000 HU.
    """
    hu = np.clip(np.asarray(ct_hu, dtype=np.float32), -1000.0, 3000.0)
    water, bone = collimator.mu_water_per_mm, collimator.mu_bone_per_mm
    mu = np.where(hu <= 0, water * (1.0 + hu / 1000.0), water + hu * (bone - water) / HU_CORTICAL_BONE)
    return mu.astype(np.float32)


def water_body_mu(activity: np.ndarray, spacing_mm: tuple[float, float, float], collimator: Collimator,
                  threshold: float = 0.05) -> np.ndarray:
    """μ-map (1/mm) of a water body outlined on a SPECT image ([z, y, x]) when no CT is available.

    The image is smoothed with a 10 mm FWHM Gaussian, thresholded at ``threshold`` × its 99.5th percentile,
    and each axial slice's holes are filled; voxels inside get μ of water, the rest 0.
    """
    sigma = [10.0 / 2.355 / s for s in spacing_mm]
    smooth = ndimage.gaussian_filter(np.asarray(activity, dtype=np.float32), sigma)
    top = float(np.percentile(smooth, 99.5))
    if top <= 0:
        return np.zeros_like(smooth)
    body = smooth > threshold * top
    body = np.stack([ndimage.binary_fill_holes(plane) for plane in body])
    return np.where(body, collimator.mu_water_per_mm, 0.0).astype(np.float32)
