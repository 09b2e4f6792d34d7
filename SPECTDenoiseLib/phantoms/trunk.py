"""Human trunk phantoms: Tc-99m MDP bone scan (``torso``) and Tc-99m sestamibi myocardial perfusion (``cardiac``).

Anatomy is placed along an axis z_a (mm above the pelvic floor, 0–600); the field of view is a random axial
window of it. Label table (both families): 1 soft_tissue, 2 lungs, 3 liver, 4 kidneys, 5 bladder, 6 spine,
7 ribs, 8 sternum, 9 pelvis, 10 femoral_heads, 11 myocardium, 12 blood_pool, 20+ lesions / perfusion defects
(named with their size, e.g. ``hot_lesion_14mm``, or ``defect_1``).
"""

from __future__ import annotations

import math

import numpy as np

from .base import Phantom, finish, grid_size
from .shapes import Canvas, cylinder, ellipsoid, intersection, ring, rotation, shell

BONES = (6, 7, 8, 9, 10)


def _trunk(canvas: Canvas, rng: np.random.Generator, z0: float, body: tuple[float, float],
           uptake: dict[str, float]) -> None:
    """Paint body, organs and skeleton. ``z0``: anatomical height (mm) at the volume centre; ``body``: half
    depth and half width (mm); ``uptake``: activity per structure relative to soft tissue."""
    ry, rx = body

    def at(z: float) -> float:
        return z - z0

    canvas.paint(cylinder((0, 0, 0), (ry, rx), 400), (0, 0, 0), 400, activity=0.8 * uptake["soft"], hu=-90.0,
                 label=1, name="soft_tissue")
    canvas.paint(cylinder((0, 0, 0), (ry - 12, rx - 15), 400), (0, 0, 0), 400, activity=uptake["soft"], hu=40.0)
    lung_z, lung_r = at(rng.uniform(440, 470)), rng.uniform(0.3, 0.4) * rx
    for side in (-1, 1):
        centre = (lung_z, -0.05 * ry, side * 0.45 * rx)
        canvas.paint(ellipsoid(centre, (rng.uniform(110, 140), 0.72 * ry, lung_r)), centre, 150,
                     activity=uptake["lung"], hu=-820.0, label=2, name="lungs")
    liver = (at(rng.uniform(330, 360)), -0.1 * ry, -0.4 * rx)
    canvas.paint(ellipsoid(liver, (70, 0.7 * ry, 0.5 * rx), rotation(rng.uniform(-15, 15))), liver, 140,
                 activity=uptake["liver"], hu=60.0, label=3, name="liver")
    for side in (-1, 1):
        kidney = (at(rng.uniform(270, 300)), 0.45 * ry, side * rng.uniform(55, 75))
        canvas.paint(ellipsoid(kidney, (rng.uniform(45, 60), 22, 28), rotation(side * 20, 0, side * 10)), kidney, 65,
                     activity=uptake["kidney"], hu=35.0, label=4, name="kidneys")
    bladder = (at(rng.uniform(60, 90)), -0.35 * ry, rng.uniform(-10, 10))
    size = rng.uniform(25, 45)
    canvas.paint(ellipsoid(bladder, (0.8 * size, size, 1.2 * size)), bladder, 60, activity=uptake["bladder"],
                 hu=10.0, label=5, name="bladder")
    spine_y, vertebra = 0.5 * ry, rng.uniform(16, 21)
    for z in np.arange(160.0, 600.0, 31.0):
        centre = (at(z), spine_y, 0.0)
        canvas.paint(cylinder(centre, (vertebra, vertebra * 1.1), 12.5), centre, 40, activity=uptake["bone"],
                     hu=300.0, label=6, name="spine")
        arch = (at(z), spine_y + vertebra + 14, 0.0)
        canvas.paint(ellipsoid(arch, (12, 14, 22)), arch, 30, activity=0.8 * uptake["bone"], hu=450.0, label=6)
    ribs = np.arange(330.0, 580.0, rng.uniform(20, 24))
    for index, z in enumerate(ribs):
        centre = (at(z), 0.05 * ry, 0.0)
        outer = (0.9 * ry, 0.92 * rx)
        arc = ring(centre, outer, 9.0, 5.0)
        front = -0.2 * ry if index < 7 else -0.5 * ry

        def rib(coords, arc=arc, front=front, centre=centre):
            sloped = coords.copy()
            sloped[0] = coords[0] - 0.25 * (coords[1] - spine_y)
            return np.maximum(arc(sloped), front - coords[1])

        canvas.paint(rib, centre, 1.1 * max(outer) + 40, activity=uptake["bone"] * 0.8, hu=500.0, label=7, name="ribs")
    sternum = (at(500), -ry + 14, 0.0)
    canvas.paint(ellipsoid(sternum, (80, 7, 16)), sternum, 85, activity=uptake["bone"], hu=400.0, label=8,
                 name="sternum")
    for side in (-1, 1):
        wing = (at(rng.uniform(160, 180)), 0.15 * ry, side * 0.55 * rx)
        plate = intersection(shell(ellipsoid(wing, (60, 40, 0.35 * rx)), 10.0),
                             lambda c, side=side: side * (0.3 * rx - side * c[2]))
        canvas.paint(plate, wing, 0.35 * rx + 70, activity=uptake["bone"], hu=450.0, label=9, name="pelvis")
        ischium = (at(60), -0.1 * ry, side * 45)
        canvas.paint(ellipsoid(ischium, (30, 18, 12)), ischium, 40, activity=uptake["bone"], hu=450.0, label=9)
        head = (at(45), 0.0, side * 0.6 * rx)
        canvas.paint(ellipsoid(head, (24, 24, 24)), head, 30, activity=uptake["bone"], hu=400.0, label=10,
                     name="femoral_heads")
    sacrum = (at(150), 0.6 * ry, 0.0)
    canvas.paint(ellipsoid(sacrum, (55, 15, 40), rotation(0, 25)), sacrum, 60, activity=uptake["bone"], hu=400.0,
                 label=9)


def _bone_lesions(canvas: Canvas, rng: np.random.Generator, bone_uptake: float, count: int) -> list[dict]:
    """Hot (80 %) or cold lytic lesions 6–30 mm centred on random bone voxels; returns their description.

    The CT keeps the bone's value: a lesion shows in the SPECT only, so a CT channel cannot give it away."""
    bone = np.argwhere(np.isin(canvas.labels, BONES))
    lesions = []
    for index in range(min(count, len(bone))):
        voxel = bone[rng.integers(len(bone))]
        grid = np.array([(v - (n - 1) / 2) * d for v, n, d in zip(voxel, canvas.shape, canvas.spacing_mm)])
        centre = tuple(canvas.pose.T @ (grid - np.asarray(canvas.shift_mm)))
        diameter = float(rng.uniform(6, 30))
        hot = rng.random() < 0.8
        contrast = float(rng.uniform(1.5, 6.0) if hot else rng.uniform(0.05, 0.4))
        radii = tuple(diameter / 2 * rng.uniform(0.8, 1.2, 3))
        name = f"{'hot' if hot else 'cold'}_lesion_{round(diameter)}mm"
        canvas.paint(ellipsoid(centre, radii), centre, max(radii) + 2, activity=contrast * bone_uptake,
                     label=20 + index, name=name)
        lesions.append({"name": name, "diameter_mm": diameter, "contrast_to_bone": contrast})
    return lesions


def torso(seed: int = 0, voxel_mm: float = 4.0, size: int | None = None, slices: int | None = None) -> Phantom:
    """Return a Tc-99m MDP bone-scan trunk phantom (random section from pelvis to shoulders, random lesions)."""
    rng = np.random.default_rng(seed)
    body = (float(rng.uniform(95, 130)), float(rng.uniform(150, 185)))
    size = size or grid_size(2 * body[1] + 30, voxel_mm)
    slices = slices or min(size, grid_size(320, voxel_mm, 4))
    pose = rotation(rng.uniform(-6, 6), rng.uniform(-3, 3))
    canvas = Canvas((slices, size, size), (voxel_mm,) * 3, pose, (0.0, rng.uniform(-10, 10), rng.uniform(-10, 10)))
    bone = float(rng.uniform(4, 10))
    uptake = {"soft": 1.0, "lung": 0.3, "liver": 1.0, "kidney": float(rng.uniform(2, 6)),
              "bladder": float(rng.uniform(15, 60)), "bone": bone}
    z0 = float(rng.uniform(0.5 * slices * voxel_mm, 600 - 0.45 * slices * voxel_mm))
    _trunk(canvas, rng, z0, body, uptake)
    lesions = _bone_lesions(canvas, rng, bone, int(rng.integers(1, 9)))
    return finish(canvas, "torso", seed, "Tc99m-LEHR", 3e6, centre_height_mm=z0, lesions=lesions)


def cardiac(seed: int = 0, voxel_mm: float = 4.0, size: int | None = None, slices: int | None = None) -> Phantom:
    """Return a Tc-99m sestamibi myocardial perfusion phantom: LV wall with 0–2 random perfusion defects."""
    rng = np.random.default_rng(seed)
    body = (float(rng.uniform(95, 125)), float(rng.uniform(145, 180)))
    size = size or grid_size(2 * body[1] + 30, voxel_mm)
    slices = slices or min(size, grid_size(200, voxel_mm, 4))
    pose = rotation(rng.uniform(-5, 5))
    canvas = Canvas((slices, size, size), (voxel_mm,) * 3, pose, (0.0, rng.uniform(-10, 10), rng.uniform(-10, 10)))
    myocardium = float(rng.uniform(8, 15))
    uptake = {"soft": 1.0, "lung": 0.4, "liver": float(rng.uniform(3, 9)), "kidney": float(rng.uniform(3, 6)),
              "bladder": 2.0, "bone": float(rng.uniform(0.6, 1.2))}
    z0 = float(rng.uniform(400, 440))
    _trunk(canvas, rng, z0, body, uptake)
    heart = (float(rng.uniform(-10, 25)), float(-0.3 * body[0] + rng.uniform(-10, 10)), float(rng.uniform(15, 40)))
    orientation = rotation(rng.uniform(-150, -120), rng.uniform(-35, -15))
    length, radius, wall = float(rng.uniform(40, 50)), float(rng.uniform(26, 33)), float(rng.uniform(8, 12))
    outer = ellipsoid(heart, (radius, radius, length), orientation)
    axis = orientation @ np.array([0.0, 0.0, 1.0])

    def basal_cut(coords: np.ndarray) -> np.ndarray:
        along = np.einsum("i,i...->...", axis.astype(np.float32), coords - np.asarray(heart, np.float32).reshape(3, 1, 1, 1))
        return along - 0.45 * length

    canvas.paint(intersection(outer, basal_cut), heart, length + 5, activity=1.5, hu=40.0, label=12, name="blood_pool")
    canvas.paint(intersection(shell(outer, wall), basal_cut), heart, length + 5, activity=myocardium, hu=40.0,
                 label=11, name="myocardium")
    defects = []
    for index in range(int(rng.integers(0, 3))):
        a = rng.uniform(0, 2 * math.pi)
        direction = orientation @ np.array([0.0, math.sin(a), math.cos(a)]) * radius * 0.9
        apex_shift = orientation @ np.array([0.0, 0.0, -rng.uniform(0, 0.6) * length])
        centre = tuple(np.asarray(heart) + direction + apex_shift)
        extent = float(rng.uniform(12, 28))
        severity = float(rng.uniform(0.2, 0.7))
        canvas.paint(intersection(shell(outer, wall), basal_cut, ellipsoid(centre, (extent,) * 3)), centre, extent + 4,
                     activity=severity * myocardium, label=20 + index, name=f"defect_{index + 1}")
        defects.append({"name": f"defect_{index + 1}", "size_mm": 2 * extent, "uptake_fraction": severity})
    return finish(canvas, "cardiac", seed, "Tc99m-LEHR", 1e6, defects=defects)
