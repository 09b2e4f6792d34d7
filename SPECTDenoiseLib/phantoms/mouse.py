"""Mouse phantom at small-animal SPECT scale (sub-millimetre voxels), Tc-99m bone or tumour-seeking tracer.

Label table: 1 body, 2 lungs, 3 liver, 4 kidneys, 5 bladder, 6 spine, 7 ribs, 8 heart, 9 tumour,
10 tumour_core (necrotic). Tracer pattern chosen per seed: "bone" (MDP-like) or "tumour" (sestamibi-like).
"""

from __future__ import annotations

import numpy as np

from .base import Phantom, finish, grid_size
from .shapes import Canvas, cylinder, ellipsoid, ring, rotation


def mouse(seed: int = 0, voxel_mm: float = 0.4, size: int | None = None, slices: int | None = None) -> Phantom:
    """Return a mouse trunk phantom (soft tissue ≈ 1); z runs from the pelvis (−) to the neck (+)."""
    rng = np.random.default_rng(seed)
    ry, rx = float(rng.uniform(9, 11)), float(rng.uniform(11, 14))
    size = size or grid_size(2 * rx + 8, voxel_mm)
    slices = slices or min(size, grid_size(40, voxel_mm, 4))
    canvas = Canvas((slices, size, size), (voxel_mm,) * 3, rotation(rng.uniform(-10, 10), rng.uniform(-4, 4)),
                    (rng.uniform(-3, 3), rng.uniform(-1, 1), rng.uniform(-1, 1)))
    bone_tracer = bool(rng.random() < 0.5)
    u = ({"soft": 1.0, "lung": 0.3, "liver": 1.0, "kidney": 4.0, "bladder": 30.0, "bone": 8.0, "heart": 1.0}
         if bone_tracer else
         {"soft": 1.0, "lung": 0.5, "liver": 5.0, "kidney": 6.0, "bladder": 8.0, "bone": 0.8, "heart": 4.0})
    canvas.paint(cylinder((0, 0, 0), (ry, rx), 45), (0, 0, 0), 50, activity=u["soft"], hu=20.0, label=1, name="body")
    for side in (-1, 1):
        lung = (20.0, -1.0, side * 0.45 * rx)
        canvas.paint(ellipsoid(lung, (9, 0.65 * ry, 0.35 * rx)), lung, 12, activity=u["lung"], hu=-700.0, label=2,
                     name="lungs")
    heart = (17.0, -3.0, 1.5)
    canvas.paint(ellipsoid(heart, (4.5, 3.5, 3.5)), heart, 6, activity=u["heart"], hu=40.0, label=8, name="heart")
    liver = (8.0, -1.0, -2.0)
    canvas.paint(ellipsoid(liver, (5, 0.7 * ry, 0.8 * rx)), liver, 14, activity=u["liver"], hu=60.0, label=3,
                 name="liver")
    for side in (-1, 1):
        kidney = (float(rng.uniform(-2, 2)), 0.45 * ry, side * 4.5)
        canvas.paint(ellipsoid(kidney, (4.5, 2.5, 2.2)), kidney, 6, activity=u["kidney"], hu=35.0, label=4,
                     name="kidneys")
    bladder = (-22.0, -0.4 * ry, 0.0)
    scale = float(rng.uniform(0.7, 1.3))
    canvas.paint(ellipsoid(bladder, (3.5 * scale, 3.0 * scale, 3.0 * scale)), bladder, 6, activity=u["bladder"],
                 hu=10.0, label=5, name="bladder")
    for z in np.arange(-28.0, 40.0, 2.4):
        vertebra = (float(z), 0.65 * ry, 0.0)
        canvas.paint(cylinder(vertebra, (1.3, 1.5), 0.9), vertebra, 3, activity=u["bone"], hu=600.0, label=6,
                     name="spine")
    for z in np.arange(10.0, 30.0, 2.0):
        canvas.paint(ring((float(z), 0.0, 0.0), (0.9 * ry, 0.9 * rx), 0.4, 0.3), (float(z), 0.0, 0.0), rx + 1,
                     activity=0.8 * u["bone"], hu=500.0, label=7, name="ribs")
    tumour = (float(rng.uniform(-15, 10)), float(rng.uniform(-0.4, 0.2) * ry), float(rng.choice([-1, 1]) * (rx - 1)))
    radius = float(rng.uniform(1.5, 4.5))
    contrast = float(rng.uniform(1.5, 4) if bone_tracer else rng.uniform(3, 10))
    canvas.paint(ellipsoid(tumour, (radius, radius, radius)), tumour, radius + 1, activity=contrast, hu=40.0, label=9,
                 name="tumour")
    if radius > 3 and rng.random() < 0.5:
        canvas.paint(ellipsoid(tumour, (radius / 2,) * 3), tumour, radius, activity=0.3, label=10, name="tumour_core")
    return finish(canvas, "mouse", seed, "Tc99m-uSPECT", 8e6, tracer="bone" if bone_tracer else "tumour",
                  tumour_diameter_mm=2 * radius, tumour_contrast=contrast)
