"""How volumes are fed to a network: intensity scale, CT scaling and 2.5D slice stacks.

Training and inference both call these functions, so a network always sees data prepared the same way.
Arrays are float32 numpy arrays indexed [z, y, x].
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import InputError
from .metrics import body_mask

CT_AIR_HU = -1000.0
CT_MAX_NORMALISED = 4.0


def intensity_scale(spect: np.ndarray, method: str) -> float:
    """Return the factor that the network's input is divided by (and its output multiplied by).

    Parameters
    ----------
    spect : [z, y, x] SPECT voxels in image units (counts, Bq/ml or SUV), negatives already clipped.
    method : ``ModelConfig.normalisation``: ``"robust_median"`` (see :func:`robust_tissue_level`; does not
        follow hot organs, bladders or injection sites), ``"body_mean"`` (mean inside ``metrics.body_mask``) or
        ``"percentile99"`` (99th percentile of the body voxels).

    Returns
    -------
    float
        A positive scale in image units.

    Raises
    ------
    InputError
        If the volume has no positive voxels (nothing to normalise).
    """
    if not np.any(spect > 0):
        raise InputError("The SPECT volume has no positive voxels; check that the right image was selected.")
    if method == "robust_median":
        return robust_tissue_level(spect)
    body = spect[body_mask(spect)]
    if method == "body_mean":
        scale = float(body.mean(dtype=np.float64))
    elif method == "percentile99":
        scale = float(np.percentile(body, 99))
    else:
        raise ValueError(f"unknown normalisation {method!r}")
    return scale


def robust_tissue_level(spect: np.ndarray, relative_threshold: float = 0.2, rounds: int = 6) -> float:
    """Median uptake of the tissue carrying activity, found without letting hot spots decide it.

    Starting from the voxels above 5 % of the 99th percentile of the (lightly smoothed) positive voxels, the
    level is re-estimated as the median of the voxels above ``relative_threshold`` × the current level, so a
    bladder, kidney or injection site that dominates the percentile only sets the first guess and the level
    settles on the bulk of the tissue. Every step is relative, so the level of ``k · spect`` is ``k`` times
    the level of ``spect`` (scale equivariance), whatever the units.

    Parameters
    ----------
    spect : [z, y, x] SPECT voxels in image units, with at least one positive voxel.
    relative_threshold : share of the level below which voxels count as background or air.
    rounds : re-estimations (the level converges within a few).
    """
    smoothed = ndimage.gaussian_filter(spect.astype(np.float32), 1.0)
    positive = smoothed[smoothed > 0]
    level = 0.05 * float(np.percentile(positive, 99)) / relative_threshold
    for _ in range(rounds):
        tissue = smoothed[smoothed > relative_threshold * level]
        if tissue.size == 0:
            break
        level = float(np.median(tissue))
    return level


def normalise_ct(hu: np.ndarray) -> np.ndarray:
    """Map CT Hounsfield units to network units: (HU + 1000) / 1000, clipped to [0, 4] (air 0, water 1).

    Parameters
    ----------
    hu : [z, y, x] CT in HU, already resampled onto the SPECT grid.
    """
    return np.clip((hu.astype(np.float32) - CT_AIR_HU) / 1000.0, 0.0, CT_MAX_NORMALISED).astype(np.float32)


def stack_slices(volumes: list[np.ndarray], centres: np.ndarray | list[int], context: int) -> np.ndarray:
    """Return 2.5D network inputs [batch, channels, y, x] for the axial slices ``centres``.

    Each item holds, for each volume in order (image kind major: SPECT first, then CT), the slices
    ``z - context .. z + context``; slices beyond the volume repeat the first or last slice (edge replication).

    Parameters
    ----------
    volumes : [z, y, x] arrays of equal shape, already normalised.
    centres : axial slice indices z.
    context : neighbouring slices on each side (``ModelConfig.context_slices``).
    """
    depth = volumes[0].shape[0]
    offsets = np.arange(-context, context + 1)
    indices = np.clip(np.asarray(centres)[:, None] + offsets[None, :], 0, depth - 1)
    return np.concatenate([volume[indices] for volume in volumes], axis=1).astype(np.float32, copy=False)
