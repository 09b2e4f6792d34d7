"""NEMA IEC body phantom (NEMA NU 2 / IEC 61675-1): six spheres on a 57.2 mm ring around a lung insert.

Label table: 1 background, 2 lung_insert, 3–8 sphere_10mm … sphere_37mm, 9 wall (PMMA).
Random per seed: sphere-to-background ratio (4:1 or 8:1 half the time, else 2–12), occasional cold spheres,
ring rotation, axial position, a small pose change and background level.
"""

from __future__ import annotations

import math

import numpy as np

from .base import Phantom, finish, grid_size
from .shapes import Canvas, box, cylinder, ellipsoid, intersection, rotation, union

SPHERE_DIAMETERS_MM = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
RING_RADIUS_MM = 57.2


def _body(offset: float):
    """D-shaped IEC body section (interior 294 × 224 mm) grown by ``offset`` mm; y = 0 at the ring centre."""
    top = cylinder((0, 0, 0), (147 + offset, 147 + offset), 90 + offset)
    clip = box((0, -500, 0), (90 + offset, 500, 500))
    bottom = box((0, 33.5, 0), (90 + offset, 43.5 + offset, 147 + offset))
    return union(intersection(top, clip), bottom)


def iec(seed: int = 0, voxel_mm: float = 4.0, size: int | None = None, slices: int | None = None) -> Phantom:
    """Return a NEMA IEC body phantom filled with Tc-99m (background ≈ 1 kBq/mL × a random level)."""
    rng = np.random.default_rng(seed)
    size = size or grid_size(370, voxel_mm)
    slices = slices or grid_size(220, voxel_mm, 4)
    pose = rotation(rng.uniform(-8, 8))
    shift = (rng.uniform(-10, 10), 35.0 + rng.uniform(-10, 10), rng.uniform(-10, 10))
    canvas = Canvas((slices, size, size), (voxel_mm,) * 3, pose, shift)
    level = float(rng.uniform(0.5, 2.0))
    ratio = float(rng.choice([4.0, 8.0])) if rng.random() < 0.5 else float(rng.uniform(2, 12))
    canvas.paint(_body(3.0), (0, 0, 0), 200, activity=0.0, hu=120.0, label=9, name="wall")
    canvas.paint(_body(0.0), (0, 0, 0), 200, activity=level, hu=0.0, label=1, name="background")
    canvas.paint(cylinder((0, 0, 0), (25.5, 25.5), 90), (0, 0, 0), 95, activity=0.05 * level, hu=-750.0,
                 label=2, name="lung_insert")
    sphere_z = float(rng.uniform(-25, 25))
    start = float(rng.uniform(0, 2 * math.pi))
    contrasts = []
    for index, diameter in enumerate(SPHERE_DIAMETERS_MM):
        angle = start + index * math.pi / 3
        centre = (sphere_z, RING_RADIUS_MM * math.sin(angle), RING_RADIUS_MM * math.cos(angle))
        contrast = 0.0 if rng.random() < 0.1 else ratio
        contrasts.append(contrast)
        canvas.paint(ellipsoid(centre, (diameter / 2,) * 3), centre, diameter, activity=contrast * level, hu=10.0,
                     label=3 + index, name=f"sphere_{int(diameter)}mm")
    return finish(canvas, "iec", seed, "Tc99m-LEHR", 4e6, sphere_to_background=contrasts)
