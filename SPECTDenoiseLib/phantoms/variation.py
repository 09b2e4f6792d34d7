"""Variation added to any phantom for training data: textured uptake, many small hot lesions, an emptied background.

Real organs are not uniform and real patients carry lesions in every organ, not only where a phantom family
puts them. Both functions keep the CT unchanged, so the CT channel never gives a lesion away, and return a new
:class:`~SPECTDenoiseLib.phantoms.base.Phantom` (arrays [z, y, x]).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from .base import Phantom

LUNG_HU = -500.0


def with_texture(phantom: Phantom, rng: np.random.Generator, strength: float = 0.15,
                 correlation_mm: float = 15.0) -> Phantom:
    """Multiply the activity by a smooth log-normal field (relative SD ≈ ``strength``, correlation length
    ``correlation_mm``); the mean activity of each label stays the same on average."""
    sigma = [correlation_mm / s for s in phantom.spacing_mm]
    field = ndimage.gaussian_filter(rng.standard_normal(phantom.activity.shape).astype(np.float32), sigma)
    field *= strength / max(float(field.std()), 1e-12)
    activity = phantom.activity * np.exp(field - 0.5 * strength**2)
    return dataclasses.replace(phantom, activity=activity.astype(np.float32))


def with_hot_lesions(phantom: Phantom, rng: np.random.Generator, count: int,
                     diameter_mm: tuple[float, float] = (4.0, 20.0),
                     contrast: tuple[float, float] = (2.0, 40.0)) -> Phantom:
    """Add ``count`` hot spheres (diameter and contrast log-uniform in the given ranges) centred on random
    non-lung body voxels with activity; contrast is relative to the activity at the centre. Each gets its own
    label named ``hot_lesion_<d>mm``; the CT is not touched."""
    activity = phantom.activity.copy()
    labels = phantom.labels.copy()
    names = dict(phantom.label_names)
    candidates = np.argwhere((phantom.ct > LUNG_HU) & (phantom.activity > 0.2 * np.median(
        phantom.activity[phantom.activity > 0])))
    if len(candidates) == 0:
        return phantom
    spacing = np.asarray(phantom.spacing_mm)
    next_label = int(max(names, default=0)) + 1
    for _ in range(int(count)):
        centre = candidates[rng.integers(len(candidates))]
        diameter = float(np.exp(rng.uniform(*np.log(diameter_mm))))
        ratio = float(np.exp(rng.uniform(*np.log(contrast))))
        radius = diameter / 2
        reach = np.ceil(radius / spacing + 1).astype(int)
        lower = np.maximum(centre - reach, 0)
        upper = np.minimum(centre + reach + 1, activity.shape)
        window = tuple(slice(a, b) for a, b in zip(lower, upper))
        grids = np.meshgrid(*[(np.arange(a, b) - c) * s for a, b, c, s in zip(lower, upper, centre, spacing)],
                            indexing="ij")
        distance = np.sqrt(sum(g**2 for g in grids))
        occupancy = np.clip(0.5 - (distance - radius) / spacing.min(), 0.0, 1.0).astype(np.float32)
        value = ratio * float(phantom.activity[tuple(centre)])
        view = activity[window]
        view[...] = view * (1 - occupancy) + occupancy * value
        labels[window][occupancy >= 0.5] = next_label
        names[next_label] = f"hot_lesion_{round(diameter)}mm"
        next_label += 1
    return dataclasses.replace(phantom, activity=activity, labels=labels, label_names=names)


def with_background_scale(phantom: Phantom, factor: float, label: str = "background") -> Phantom:
    """Multiply the activity of the region named ``label`` by ``factor`` (e.g. 0.01: hot spheres in an almost
    empty phantom, as in vendors' sphere-phantom acquisitions); other regions, lesions included, keep theirs."""
    values = [value for value, name in phantom.label_names.items() if name == label]
    if not values or factor == 1.0:
        return phantom
    region = np.isin(phantom.labels, values)
    activity = np.where(region, phantom.activity * np.float32(factor), phantom.activity)
    return dataclasses.replace(phantom, activity=activity.astype(np.float32))
