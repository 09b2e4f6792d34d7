"""Paired training data: phantoms scanned with randomised protocols, low-count scans and their noise-free target.

Layout of ``DIR``::

    manifest.json          {"version": 2, "cases": [{"id": "case_00012", "family": "torso", ...}, ...]}
    case_00012/target.nii.gz low_0.1.nii.gz low_0.25.nii.gz ct.nii.gz labels.nii.gz activity.nii.gz

``target`` is the *noise-free* reconstruction (the expected projections reconstructed with the case's own
settings), so a network learns the image rather than the noise of a full-count scan. Paths in the manifest are
relative to ``DIR``. Case ``i`` of a run with seed ``S`` uses phantom/noise seed ``S·1 000 000 + i`` and draws
everything from that seed, so a run can be resumed (finished cases are skipped) and reproduced.

Domain randomisation, so our simulator is not the only world a model knows: voxel size, collimator, counts,
textured uptake, 2–8 extra small hot lesions (4–20 mm, contrast 2–40) in every family, reconstruction (OSEM with
or without resolution recovery, 2–16 iterations, FBP with a Butterworth window, post-filters), scatter corrected
exactly, from a noisy window or not at all, 180° orbits for cardiac cases, collimator penetration tails that the
reconstruction does not model, and a reconstruction resolution model 15 % off the simulated one. CT values never
depend on lesions. One case is held in memory at a time; the manifest is rewritten atomically after each case.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, OutputError
from .io import array_to_image, atomic_output, write_volume
from .phantoms import Phantom, make_phantom, phantom_images
from .phantoms.variation import with_background_scale, with_hot_lesions, with_texture
from .simulate import ScanProtocol, ScanSimulator
from .simulation import get_collimator, hu_to_mu

MANIFEST_VERSION = 2
SEED_STRIDE = 1_000_000
FRACTION_LADDER = (0.05, 0.1, 0.15, 0.2, 0.25, 0.33, 0.5)
COLD_BACKGROUND_SHARE = 1 / 3


@dataclass(frozen=True)
class FamilyPlan:
    """Ranges a family's cases are drawn from: share of cases, voxel size (mm), collimators, total counts."""

    weight: float
    voxel_mm: tuple[float, float]
    collimators: tuple[str, ...]
    counts: tuple[float, float]


PLANS: dict[str, FamilyPlan] = {
    "torso": FamilyPlan(0.3, (3.0, 6.8), ("Tc99m-LEHR", "Tc99m-LEHR", "Lu177-MEGP"), (1.0e6, 5e6)),
    "iec": FamilyPlan(0.2, (3.0, 6.8), ("Tc99m-LEHR", "I123-LEHR", "I123-LEGP", "Lu177-MEGP"), (0.7e6, 6e6)),
    "brain": FamilyPlan(0.2, (1.9, 3.5), ("I123-LEHR", "I123-LEGP"), (0.5e6, 2.5e6)),
    "cardiac": FamilyPlan(0.2, (3.5, 6.8), ("Tc99m-LEHR",), (0.4e6, 1.5e6)),
    "mouse": FamilyPlan(0.1, (0.4, 0.6), ("Tc99m-uSPECT",), (2e6, 15e6)),
}


def family_plans(families: list[str]) -> dict[str, FamilyPlan]:
    """:data:`PLANS` restricted to ``families`` (InputError naming an unknown one)."""
    unknown = sorted(set(families) - set(PLANS))
    if unknown:
        raise InputError(f"Unknown phantom families {unknown}; choose from {sorted(PLANS)}.")
    return {name: plan for name, plan in PLANS.items() if name in families}


def case_settings(index: int, seed: int = 0, plans: dict[str, FamilyPlan] | None = None) -> dict:
    """The simulation settings of case ``index`` in a run seeded ``seed`` (deterministic for given ``plans``):
    family, phantom variation and a :class:`~SPECTDenoiseLib.simulate.ScanProtocol` (``"protocol"``)."""
    plans = PLANS if plans is None else plans
    case_seed = seed * SEED_STRIDE + index
    rng = np.random.default_rng([case_seed, 7])
    names = list(plans)
    weights = np.array([plans[n].weight for n in names])
    family = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    plan = plans[family]
    collimator = str(rng.choice(plan.collimators))
    low, high = plan.counts
    reconstruction = str(rng.choice(["osem-rr", "osem-rr", "osem-rr", "osem", "fbp"]))
    angles = int(rng.choice([60, 64, 96, 120]))
    scatter = rng.random() < 0.6
    medium_energy = get_collimator(collimator).isotope in ("I-123", "Lu-177")
    protocol = {
        "total_counts": float(round(math.exp(rng.uniform(math.log(low), math.log(high))), -3)),
        "angles": angles,
        "arc_deg": 180.0 if family == "cardiac" and rng.random() < 0.5 else 360.0,
        "start_deg": float(round(rng.uniform(0, 360), 1)),
        "reconstruction": reconstruction,
        "iterations": int(round(math.exp(rng.uniform(math.log(2), math.log(16))))),
        "subsets": int(rng.choice([4, 6, 8, 10, 12])),
        "butterworth_cutoff": float(round(rng.uniform(0.3, 0.8), 2)),
        "butterworth_order": int(rng.choice([5, 8, 10])),
        "postfilter_fwhm_mm": float(round(rng.uniform(4, 12), 1)) if rng.random() < 0.3 else 0.0,
        "scatter_fraction": float(round(rng.uniform(0.15, 0.4), 2)) if scatter else 0.0,
        "scatter_correction": str(rng.choice(["exact", "window", "window", "none"])) if scatter else "exact",
        "penetration_fraction": float(round(rng.uniform(0.03, 0.15), 3)) if medium_energy and rng.random() < 0.7 else 0.0,
        "penetration_fwhm_mm": float(round(rng.uniform(40, 90))),
        "recon_blur_scale": float(round(rng.uniform(0.85, 1.15), 2)),
    }
    return {
        "id": f"case_{index:05d}",
        "family": family,
        "collimator": collimator,
        "voxel_mm": round(float(math.exp(rng.uniform(*np.log(plan.voxel_mm)))), 2),
        "seed": case_seed,
        "texture": float(round(rng.uniform(0.0, 0.3), 2)),
        "extra_lesions": int(rng.integers(2, 9)),
        "protocol": protocol,
        "fractions": sorted(float(f) for f in rng.choice(FRACTION_LADDER, 2, replace=False)),
        # drawn last, so that the cases of earlier runs keep every other setting
        "background_scale": _background_scale(family, rng),
    }


def _background_scale(family: str, rng: np.random.Generator) -> float:
    """A third of the IEC cases get an almost empty background (× 0.003–0.1: hot spheres with nothing around them,
    as vendors' sphere-phantom scans); every other case keeps its background (1.0)."""
    if family != "iec" or rng.random() >= COLD_BACKGROUND_SHARE:
        return 1.0
    return float(round(math.exp(rng.uniform(math.log(0.003), math.log(0.1))), 4))


def fraction_key(fraction: float) -> str:
    """Manifest key of a count fraction, e.g. 0.1 → "0.1"."""
    return f"{fraction:g}"


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """Return the manifest of ``out_dir`` (an empty one if there is none yet)."""
    path = Path(out_dir) / "manifest.json"
    if not path.exists():
        return {"version": MANIFEST_VERSION, "cases": []}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"The dataset manifest '{path}' cannot be read ({error}); move it away to start over.") from None
    if manifest.get("version") != MANIFEST_VERSION:
        raise InputError(f"The dataset manifest '{path}' has version {manifest.get('version')}; expected {MANIFEST_VERSION}.")
    return manifest


def _write_manifest(out_dir: Path, manifest: dict) -> None:
    with atomic_output(out_dir / "manifest.json") as temporary:
        temporary.write_text(json.dumps(manifest, indent=1))


def _complete(out_dir: Path, entry: dict) -> bool:
    paths = [entry["target"], entry["ct"], entry["labels"], *entry["low"].values()]
    return all((out_dir / p).exists() for p in paths)


def case_phantom(family: str, seed: int, voxel_mm: float, collimator: str, extra_lesions: int, texture: float,
                 rng: np.random.Generator, background_scale: float = 1.0) -> Phantom:
    """A case's phantom: the family's phantom for ``seed``, ``extra_lesions`` added hot lesions and a ``texture``
    (0 = none) drawn from ``rng``, its background's activity × ``background_scale``, with its μ-map and
    collimator set to ``collimator``'s."""
    phantom = make_phantom(family, seed=seed, voxel_mm=voxel_mm)
    if extra_lesions:
        phantom = with_hot_lesions(phantom, rng, extra_lesions)
    phantom = with_background_scale(phantom, background_scale)
    if texture > 0:
        phantom = with_texture(phantom, rng, texture)
    return dataclasses.replace(phantom, collimator=collimator,
                               mu_map=hu_to_mu(phantom.ct, get_collimator(collimator)))


def simulate_case(settings: dict, out_dir: str | os.PathLike) -> dict:
    """Simulate one case described by ``settings`` (see :func:`case_settings`), write its volumes under
    ``out_dir/<id>/`` and return its manifest entry."""
    out_dir = Path(out_dir)
    case_dir = out_dir / settings["id"]
    case_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(settings["seed"])
    phantom = case_phantom(settings["family"], settings["seed"], settings["voxel_mm"], settings["collimator"],
                           settings["extra_lesions"], settings["texture"], rng,
                           settings.get("background_scale", 1.0))
    scan = ScanSimulator(phantom.activity, phantom.spacing_mm, phantom.mu_map, settings["collimator"],
                         ScanProtocol(**settings["protocol"]))
    images = phantom_images(phantom)
    reference = images["activity"]
    files = {"target": f"{settings['id']}/target.nii.gz", "ct": f"{settings['id']}/ct.nii.gz",
             "labels": f"{settings['id']}/labels.nii.gz", "activity": f"{settings['id']}/activity.nii.gz"}
    write_volume(array_to_image(scan.noise_free(), reference), out_dir / files["target"])
    write_volume(images["ct"], out_dir / files["ct"])
    write_volume(images["labels"], out_dir / files["labels"])
    write_volume(reference, out_dir / files["activity"])
    low = {}
    for fraction in settings["fractions"]:
        low[fraction_key(fraction)] = f"{settings['id']}/low_{fraction_key(fraction)}.nii.gz"
        image = scan.reconstruct(scan.acquire(rng, fraction))
        write_volume(array_to_image(image, reference), out_dir / low[fraction_key(fraction)])
    entry = {key: value for key, value in settings.items() if key != "fractions"}
    entry.update(files)
    entry.update({"low": low, "label_names": {str(k): v for k, v in phantom.label_names.items()},
                  "orbit_radius_mm": round(scan.orbit_radius_mm, 1), "shape_zyx": list(phantom.activity.shape)})
    return entry


def generate_dataset(out_dir: str | os.PathLike, n: int, seed: int = 0,
                     progress: Callable[[int, int, str, bool], None] | None = None,
                     plans: dict[str, FamilyPlan] | None = None) -> dict:
    """Write cases ``0 … n−1`` of the run seeded ``seed`` to ``out_dir``, skipping finished ones.

    ``progress(done, n, case_id, skipped)`` is called after each case; ``plans`` replaces :data:`PLANS`
    (e.g. coarser voxels for a quick run, or only some families: :func:`family_plans`). Returns the manifest.
    """
    if n < 1:
        raise InputError(f"The number of cases must be at least 1 (got {n}).")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"Cannot create the dataset folder '{out_dir}': {error.strerror or error}.") from None
    manifest = read_manifest(out_dir)
    entries = {entry["id"]: entry for entry in manifest["cases"]}
    for index in range(n):
        settings = case_settings(index, seed, plans)
        existing = entries.get(settings["id"])
        skipped = existing is not None and existing["seed"] == settings["seed"] and _complete(out_dir, existing)
        if not skipped:
            entries[settings["id"]] = simulate_case(settings, out_dir)
            manifest["cases"] = [entries[key] for key in sorted(entries)]
            _write_manifest(out_dir, manifest)
        if progress is not None:
            progress(index + 1, n, settings["id"], skipped)
    return manifest
