"""The Phantom record and helpers shared by the phantom families."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..simulation.collimators import get_collimator
from ..simulation.mumap import hu_to_mu
from .shapes import Canvas


@dataclass
class Phantom:
    """A digital SPECT/CT phantom; every volume is [z, y, x] on the same grid.

    Attributes
    ----------
    activity : float32 activity concentration (kBq/mL, arbitrary scale; soft-tissue or background ≈ 1).
    mu_map : float32 attenuation (1/mm) at the photopeak of ``collimator``.
    ct : float32 CT numbers (HU).
    labels : int16 label map, 0 = outside; names in ``label_names``.
    label_names : label value → name (e.g. ``{3: "sphere_37mm"}``).
    spacing_mm : voxel spacing (dz, dy, dx) in mm.
    name : family name.
    seed : seed that produced it.
    collimator : default collimator preset for this family.
    total_counts : typical total counts of a full-count acquisition of this family.
    """

    activity: np.ndarray
    mu_map: np.ndarray
    ct: np.ndarray
    labels: np.ndarray
    label_names: dict[int, str]
    spacing_mm: tuple[float, float, float]
    name: str
    seed: int
    collimator: str
    total_counts: float
    details: dict = field(default_factory=dict)


def grid_size(extent_mm: float, voxel_mm: float, multiple: int = 8) -> int:
    """Smallest multiple of ``multiple`` voxels covering ``extent_mm``."""
    return int(multiple * math.ceil(extent_mm / voxel_mm / multiple))


def finish(canvas: Canvas, name: str, seed: int, collimator: str, total_counts: float, **details) -> Phantom:
    """Turn a painted canvas into a Phantom (μ-map from the CT at the collimator's photopeak)."""
    preset = get_collimator(collimator)
    activity = np.clip(canvas.activity, 0.0, None).astype(np.float32)
    return Phantom(
        activity=activity, mu_map=hu_to_mu(canvas.ct, preset), ct=canvas.ct.astype(np.float32),
        labels=canvas.labels, label_names=dict(sorted(canvas.label_names.items())),
        spacing_mm=tuple(float(s) for s in canvas.spacing_mm), name=name, seed=int(seed), collimator=preset.name,
        total_counts=float(total_counts), details=details,
    )
