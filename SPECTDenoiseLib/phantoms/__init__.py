"""Digital SPECT/CT phantoms: NEMA IEC body, bone-scan torso, DaT brain, cardiac perfusion, small-animal mouse.

Every family is a function ``family(seed=0, voxel_mm=..., size=None, slices=None) -> Phantom`` that is
deterministic for a seed and varies shape, size, position and contrast between seeds. Arrays are [z, y, x];
``size`` is the axial matrix (y = x), ``slices`` the number of slices (defaults fit the object).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .base import Phantom
from .brain import brain
from .iec import iec
from .mouse import mouse
from .trunk import cardiac, torso

FAMILIES: dict[str, Callable[..., Phantom]] = {
    "iec": iec, "torso": torso, "brain": brain, "cardiac": cardiac, "mouse": mouse,
}


def make_phantom(name: str, seed: int = 0, voxel_mm: float | None = None, size: int | None = None,
                 slices: int | None = None) -> Phantom:
    """Build the phantom family ``name`` (InputError if unknown or if the grid arguments are not positive)."""
    if name not in FAMILIES:
        raise InputError(f"Unknown phantom '{name}'; choose one of {', '.join(FAMILIES)}.")
    for label, value in (("voxel size", voxel_mm), ("size", size), ("slices", slices)):
        if value is not None and not value > 0:
            raise InputError(f"The phantom {label} must be positive (got {value}).")
    options = {"seed": int(seed), "size": size, "slices": slices}
    if voxel_mm is not None:
        options["voxel_mm"] = float(voxel_mm)
    return FAMILIES[name](**options)


def phantom_images(phantom: Phantom) -> dict[str, sitk.Image]:
    """The phantom's volumes as images centred on the origin (LPS, identity direction): activity, ct, mu, labels."""
    def image(array: np.ndarray) -> sitk.Image:
        result = sitk.GetImageFromArray(array)
        spacing = tuple(reversed(phantom.spacing_mm))
        result.SetSpacing(spacing)
        result.SetOrigin(tuple(-(n - 1) / 2 * s for n, s in zip(reversed(array.shape), spacing)))
        return result

    return {"activity": image(phantom.activity), "ct": image(phantom.ct), "mu": image(phantom.mu_map),
            "labels": image(phantom.labels)}


__all__ = ["FAMILIES", "Phantom", "brain", "cardiac", "iec", "make_phantom", "mouse", "phantom_images", "torso"]
