"""Partial-volume shape painting on a voxel grid, used by every phantom family.

Coordinates are millimetres in an *anatomical frame* centred on the volume (x → patient left, y → posterior,
z → superior, as LPS). A global rotation and shift of the whole object is applied once, so the families place
organs without caring about the patient's pose. Shapes return an occupancy in [0, 1] per voxel from an
approximate signed distance, which gives realistic partial-volume edges.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Vector = tuple[float, float, float]


def rotation(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """3×3 rotation acting on (z, y, x) vectors: yaw about z, pitch about x, roll about y (degrees)."""
    a, b, c = (math.radians(v) for v in (yaw_deg, pitch_deg, roll_deg))
    yaw = np.array([[1, 0, 0], [0, math.cos(a), math.sin(a)], [0, -math.sin(a), math.cos(a)]])
    pitch = np.array([[math.cos(b), math.sin(b), 0], [-math.sin(b), math.cos(b), 0], [0, 0, 1]])
    roll = np.array([[math.cos(c), 0, math.sin(c)], [0, 1, 0], [-math.sin(c), 0, math.cos(c)]])
    return yaw @ pitch @ roll


@dataclass
class Canvas:
    """Activity, CT (HU) and label volumes [z, y, x] being painted, with the grid geometry.

    ``pose`` rotates and ``shift_mm`` (z, y, x) moves the anatomical frame inside the volume.
    """

    shape: tuple[int, int, int]
    spacing_mm: Vector
    pose: np.ndarray = field(default_factory=lambda: np.eye(3))
    shift_mm: Vector = (0.0, 0.0, 0.0)
    air_hu: float = -1000.0

    def __post_init__(self) -> None:
        self.activity = np.zeros(self.shape, np.float32)
        self.ct = np.full(self.shape, self.air_hu, np.float32)
        self.labels = np.zeros(self.shape, np.int16)
        self.label_names: dict[int, str] = {}
        self.voxel_mm = float(np.mean(self.spacing_mm))

    def _region(self, centre: Vector, reach_mm: float) -> tuple[tuple[slice, ...], np.ndarray] | None:
        """Grid slices around ``centre`` (anatomical mm) and anatomical coordinates there, [3, z, y, x]."""
        grid_centre = self.pose @ np.asarray(centre, float) + np.asarray(self.shift_mm, float)
        slices = []
        for axis in range(3):
            mid = (self.shape[axis] - 1) / 2.0
            lo = math.floor((grid_centre[axis] - reach_mm) / self.spacing_mm[axis] + mid) - 1
            hi = math.ceil((grid_centre[axis] + reach_mm) / self.spacing_mm[axis] + mid) + 2
            lo, hi = max(lo, 0), min(hi, self.shape[axis])
            if lo >= hi:
                return None
            slices.append(slice(lo, hi))
        axes = [(np.arange(s.start, s.stop) - (n - 1) / 2.0) * d - o
                for s, n, d, o in zip(slices, self.shape, self.spacing_mm, self.shift_mm)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32)
        anatomical = np.einsum("ij,j...->i...", self.pose.T.astype(np.float32), grid)
        return tuple(slices), anatomical

    def paint(self, shape: Callable[[np.ndarray], np.ndarray], centre: Vector, reach_mm: float,
              activity: float | None = None, hu: float | None = None, label: int | None = None,
              name: str | None = None, add: bool = False) -> None:
        """Blend a shape into the volumes.

        ``shape`` maps anatomical coordinates [3, ...] to a signed distance (mm, negative inside); ``reach_mm``
        bounds the shape around ``centre``. ``activity``/``hu`` replace the values in proportion to the
        occupancy (``add=True`` adds the activity instead); voxels at least half inside get ``label``.
        """
        region = self._region(centre, reach_mm)
        if region is None:
            return
        slices, coords = region
        occupancy = np.clip(0.5 - shape(coords) / self.voxel_mm, 0.0, 1.0).astype(np.float32)
        if not occupancy.any():
            return
        if activity is not None:
            view = self.activity[slices]
            view[...] = view + occupancy * activity if add else view * (1 - occupancy) + occupancy * activity
        if hu is not None:
            view = self.ct[slices]
            view[...] = view * (1 - occupancy) + occupancy * hu
        if label is not None:
            self.labels[slices][occupancy >= 0.5] = label
            if name is not None:
                self.label_names[label] = name


def ellipsoid(centre: Vector, radii: Vector, orientation: np.ndarray | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Signed distance (approximate, mm) to an ellipsoid with ``radii`` (z, y, x) rotated by ``orientation``."""
    r = np.asarray(radii, np.float32).reshape(3, 1, 1, 1)
    turn = (np.eye(3) if orientation is None else orientation).T.astype(np.float32)

    def distance(coords: np.ndarray) -> np.ndarray:
        local = np.einsum("ij,j...->i...", turn, coords - np.asarray(centre, np.float32).reshape(3, 1, 1, 1))
        q = np.sqrt(np.sum((local / r) ** 2, axis=0))
        gradient = np.sqrt(np.sum(local**2 / r**4, axis=0)) / np.maximum(q, 1e-6)
        return (q - 1.0) / np.maximum(gradient, 1e-6)

    return distance


def cylinder(centre: Vector, radii_yx: tuple[float, float], half_length: float,
             orientation: np.ndarray | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Signed distance (mm) to an elliptic cylinder along local z with in-plane ``radii_yx``."""
    section = ellipsoid((0.0, 0.0, 0.0), (1e6, *radii_yx))
    turn = (np.eye(3) if orientation is None else orientation).T.astype(np.float32)

    def distance(coords: np.ndarray) -> np.ndarray:
        local = np.einsum("ij,j...->i...", turn, coords - np.asarray(centre, np.float32).reshape(3, 1, 1, 1))
        flat = np.concatenate([np.zeros_like(local[:1]), local[1:]])
        return np.maximum(section(flat), np.abs(local[0]) - half_length)

    return distance


def box(centre: Vector, half_sizes: Vector) -> Callable[[np.ndarray], np.ndarray]:
    """Signed distance (mm, Chebyshev-style) to an axis-aligned box with ``half_sizes`` (z, y, x)."""
    def distance(coords: np.ndarray) -> np.ndarray:
        local = np.abs(coords - np.asarray(centre, np.float32).reshape(3, 1, 1, 1))
        return np.max(local - np.asarray(half_sizes, np.float32).reshape(3, 1, 1, 1), axis=0)

    return distance


def union(*shapes: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Signed distance of the union of shapes."""
    return lambda coords: np.min([s(coords) for s in shapes], axis=0)


def intersection(*shapes: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Signed distance of the intersection of shapes."""
    return lambda coords: np.max([s(coords) for s in shapes], axis=0)


def shell(outer: Callable[[np.ndarray], np.ndarray], thickness: float) -> Callable[[np.ndarray], np.ndarray]:
    """Signed distance of a wall of ``thickness`` mm inside the surface of ``outer``."""
    return lambda coords: np.abs(outer(coords) + thickness / 2) - thickness / 2


def ring(centre: Vector, radii_yx: tuple[float, float], thickness: float, half_length: float
         ) -> Callable[[np.ndarray], np.ndarray]:
    """Signed distance (mm) to an elliptic ring (tube wall of ``thickness`` inside ``radii_yx``) along z."""
    section = ellipsoid((0.0, 0.0, 0.0), (1e6, *radii_yx))
    origin = np.asarray(centre, np.float32).reshape(3, 1, 1, 1)

    def distance(coords: np.ndarray) -> np.ndarray:
        local = coords - origin
        flat = np.concatenate([np.zeros_like(local[:1]), local[1:]])
        wall = np.abs(section(flat) + thickness / 2) - thickness / 2
        return np.maximum(wall, np.abs(local[0]) - half_length)

    return distance
