"""Robustness probes: the same scan presented differently must give the same lesion means after denoising.

Each probe changes the presentation of one low-count scan, not the patient: other units (× 0.01 … × 1000, the
output is divided back), a hot bladder or injection site added far from the lesions (a smooth blob in the image,
subtracted again from the output: an ideal denoiser returns its plain output plus the blob, so what is left is the
model's own change), an air margin around the volume, the volume cropped to the body. The probe denoises the
changed scan, undoes the change (divide, subtract, crop back) and reports how far each lesion's mean moved against
the plainly denoised scan, in %.

The air margin goes only where the scan shows air: on each side whose outermost slice holds no body voxel. A body
cut by the field of view (a torso whose ends are the scan's first and last slices) continues beyond it, so air
there would be another object — a body ending abruptly — not the same scan in a larger field of view; probes
version 1 padded every side and so moved lesions in a cut end slice by up to 13.8 % for the 2.5D default model
and 10.2 % for the 3D one (validation case cardiac-8000003; 14.6 % and 10.9 % without the uptake guard). Where no
side shows air, the probe is not run.

Version 3 sizes the hot spot to the body: up to 40 mm, blurred by a quarter of its diameter, and small enough that
the blur stays a blur-width away from every lesion. Version 2's fixed 40 mm blob blurred 10 mm reached a mouse's
lesions (it added 91 % of the tumour's own activity in mouse-9000021), and its change was reported gross of the
blob, so those cells measured the input's change rather than the model's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

UNIT_FACTORS = (0.01, 0.1, 10.0, 1000.0)
AIR_HU = -1000.0
PROBES_VERSION = 3
"""Version of the probe definitions, part of the benchmark's configuration (what each changed: PROBE_CHANGES)."""
PROBE_CHANGES = {
    2: "the air margin goes only where the scan shows air (version 1 padded every side, also beyond a body cut by "
       "the field of view).",
    3: "the hot spot is sized to the body and reported net of the blob (version 2's fixed 40 mm blob blurred "
       "10 mm reached a mouse's lesions, and its cells included the blob's own addition).",
}
"""What each probes version changed, for reports that show results made with an earlier one."""

Denoiser = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (spect [z, y, x], ct HU [z, y, x]) -> denoised


def hot_spot(body: np.ndarray, avoid: np.ndarray, spacing_mm: tuple[float, float, float], level: float,
             largest_diameter_mm: float = 40.0) -> np.ndarray:
    """A smooth hot blob like a full bladder or an injection site: a sphere at ``level`` blurred by a Gaussian of
    FWHM a quarter of its diameter, zero elsewhere. The sphere lies inside the body, and its edge stays one FWHM
    away from ``avoid`` (the lesions), so the blur barely reaches them; its diameter is the largest that allows
    both, up to ``largest_diameter_mm``, centred where that is reached, farthest from ``avoid`` among ties."""
    depth = ndimage.distance_transform_edt(body, sampling=spacing_mm)
    distance = ndimage.distance_transform_edt(~avoid, sampling=spacing_mm)
    # radius r inside the body: r ≤ depth; edge + FWHM (= r / 2) clear of the lesions: 1.5 r ≤ distance
    reachable = np.minimum(np.minimum(2 * depth, 4 * distance / 3), largest_diameter_mm)
    diameter_mm = float(reachable.max())
    centre = np.unravel_index(int(np.argmax(np.where(reachable >= diameter_mm, distance, -1.0))), body.shape)
    grid = np.indices(body.shape, dtype=np.float32)
    radius2 = sum(((grid[a] - centre[a]) * spacing_mm[a]) ** 2 for a in range(3))
    sphere = (radius2 <= (diameter_mm / 2) ** 2).astype(np.float32) * level
    return ndimage.gaussian_filter(sphere, [diameter_mm / 4 / 2.355 / s for s in spacing_mm]).astype(np.float32)


def body_box(body: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Slices of ``body``'s bounding box grown by ``margin`` voxels (clipped to the volume)."""
    box = []
    for axis in range(body.ndim):
        occupied = np.flatnonzero(body.any(axis=tuple(a for a in range(body.ndim) if a != axis)))
        box.append(slice(max(int(occupied[0]) - margin, 0), min(int(occupied[-1]) + 1 + margin, body.shape[axis])))
    return tuple(box)


def air_margin_padding(body: np.ndarray, margin: int) -> tuple[tuple[int, int], ...]:
    """(before, after) padding of each axis of ``body``: ``margin`` on each side whose outermost slice holds no
    body voxel, else 0."""
    padding = []
    for axis in range(body.ndim):
        ends = np.take(body, [0, body.shape[axis] - 1], axis=axis)
        padding.append(tuple(0 if np.take(ends, side, axis=axis).any() else margin for side in (0, 1)))
    return tuple(padding)


def mean_shifts(plain: np.ndarray, probed: np.ndarray, regions: dict[str, np.ndarray]) -> dict[str, float]:
    """{region: 100 · (mean of ``probed`` − mean of ``plain``) ÷ mean of ``plain``}."""
    return {name: float(100 * (probed[mask].mean() - plain[mask].mean()) / plain[mask].mean())
            for name, mask in regions.items()}


def run_probes(denoiser: Denoiser, image: np.ndarray, ct: np.ndarray, body: np.ndarray,
               regions: dict[str, np.ndarray], spacing_mm: tuple[float, float, float],
               air_margin: int = 16) -> dict[str, dict[str, float]]:
    """Denoise ``image`` plainly and under every probe; return {probe: {region: mean shift in %}}."""
    plain = denoiser(image, ct)
    lesions = np.any(list(regions.values()), axis=0)
    level = 20.0 * float(image[body].mean())
    blob = hot_spot(body, lesions, spacing_mm, level)
    pad = air_margin_padding(body, air_margin)
    inner = tuple(slice(before, before + n) for (before, _), n in zip(pad, image.shape))
    box = body_box(body)
    cropped_regions = {name: mask[box] for name, mask in regions.items()}
    probes: dict[str, dict[str, float]] = {}
    for factor in UNIT_FACTORS:
        probes[f"units x{factor:g}"] = mean_shifts(plain, denoiser(image * factor, ct) / factor, regions)
    probes["hot spot added"] = mean_shifts(plain, denoiser(image + blob, ct) - blob, regions)
    if any(any(sides) for sides in pad):
        probes[f"air margin {air_margin} voxels"] = mean_shifts(
            plain, denoiser(np.pad(image, pad), np.pad(ct, pad, constant_values=AIR_HU))[inner], regions)
    probes["cropped to body"] = mean_shifts(plain[box], denoiser(image[box], ct[box]), cropped_regions)
    return probes
