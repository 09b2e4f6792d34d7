"""I-123 ioflupane (DaTscan) brain phantom: striatal binding with variable uptake, asymmetry and head pose.

Label table: 1 scalp, 2 skull, 3 brain, 4 ventricles, 5 caudate_left, 6 caudate_right, 7 putamen_left,
8 putamen_right. Specific binding ratio of the caudate 1.5–8 (normal ≈ 4–8, Parkinsonian lower), putamen
relative to caudate 0.25–1 with a posterior gradient, one side scaled by 0.5–1 (asymmetry).
"""

from __future__ import annotations

import numpy as np

from .base import Phantom, finish, grid_size
from .shapes import Canvas, ellipsoid, rotation, shell


def brain(seed: int = 0, voxel_mm: float = 2.5, size: int | None = None, slices: int | None = None) -> Phantom:
    """Return a DaT brain phantom (brain background ≈ 1)."""
    rng = np.random.default_rng(seed)
    size = size or grid_size(230, voxel_mm)
    slices = slices or min(size, grid_size(210, voxel_mm, 4))
    pose = rotation(rng.uniform(-8, 8), rng.uniform(-12, 12), rng.uniform(-5, 5))
    canvas = Canvas((slices, size, size), (voxel_mm,) * 3, pose,
                    (rng.uniform(-8, 8), rng.uniform(-8, 8), rng.uniform(-8, 8)))
    head = (float(rng.uniform(85, 98)), float(rng.uniform(88, 100)), float(rng.uniform(70, 80)))
    outer = ellipsoid((0, 0, 0), head)
    canvas.paint(outer, (0, 0, 0), 110, activity=float(rng.uniform(0.4, 0.9)), hu=30.0, label=1, name="scalp")
    skull = ellipsoid((0, 0, 0), tuple(r - 5 for r in head))
    canvas.paint(shell(skull, float(rng.uniform(5, 8))), (0, 0, 0), 110, activity=0.3, hu=900.0, label=2, name="skull")
    canvas.paint(ellipsoid((0, 0, 0), tuple(r - 12 for r in head)), (0, 0, 0), 110, activity=1.0, hu=35.0,
                 label=3, name="brain")
    for side in (-1, 1):
        ventricle = (5.0, -5.0, side * 8.0)
        canvas.paint(ellipsoid(ventricle, (10, 25, 5), rotation(side * 10)), ventricle, 30, activity=0.3, hu=8.0,
                     label=4, name="ventricles")
    caudate_sbr = float(rng.uniform(1.5, 8.0))
    putamen_ratio = float(rng.uniform(0.25, 1.0))
    weak_side = int(rng.choice([-1, 1]))
    asymmetry = float(rng.uniform(0.5, 1.0))
    uptakes = {}
    for side, side_name in ((1, "left"), (-1, "right")):
        factor = asymmetry if side == weak_side else 1.0
        caudate = (2.0, -14.0 + rng.uniform(-3, 3), side * rng.uniform(12, 16))
        value = 1.0 + caudate_sbr * factor
        canvas.paint(ellipsoid(caudate, (11, 9, 5.5), rotation(side * 15)), caudate, 18, activity=value,
                     label=5 if side == 1 else 6, name=f"caudate_{side_name}")
        putamen = (-2.0, 4.0 + rng.uniform(-3, 3), side * rng.uniform(23, 27))
        anterior = 1.0 + caudate_sbr * factor * putamen_ratio ** 0.5
        posterior = 1.0 + caudate_sbr * factor * putamen_ratio
        for part, (offset, value_part) in enumerate(((-6.0, anterior), (6.0, posterior))):
            centre = (putamen[0], putamen[1] + offset, putamen[2] + side * 0.3 * offset)
            canvas.paint(ellipsoid(centre, (9, 8, 5), rotation(side * 20)), centre, 14, activity=value_part,
                         label=7 if side == 1 else 8, name=f"putamen_{side_name}")
        uptakes[side_name] = {"caudate": value, "putamen_anterior": anterior, "putamen_posterior": posterior}
    return finish(canvas, "brain", seed, "I123-LEHR", 1.5e6, uptake=uptakes)
