"""Paired training data: phantoms simulated at full count and at several thinned count levels.

Layout of ``DIR``::

    manifest.json          {"version": 1, "cases": [{"id": "case_00012", "family": "torso", ...}, ...]}
    case_00012/full.nii.gz low_0.1.nii.gz low_0.25.nii.gz ... ct.nii.gz labels.nii.gz activity.nii.gz

Paths in the manifest are relative to ``DIR``. Case ``i`` of a run with seed ``S`` uses phantom/noise seed
``S·1 000 000 + i`` and draws its family, collimator, voxel size, counts, fractions, scatter and OSEM settings
from that seed, so a run can be resumed (finished cases are skipped) and reproduced. One case is held in memory
at a time; the manifest is rewritten atomically after each case.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, OutputError
from .io import array_to_image, atomic_output, write_volume
from .phantoms import make_phantom, phantom_images
from .simulate import simulate_pair
from .simulation import get_collimator, hu_to_mu

MANIFEST_VERSION = 1
SEED_STRIDE = 1_000_000
FRACTION_LADDER = (0.05, 0.1, 0.15, 0.2, 0.25, 0.33, 0.5)


@dataclass(frozen=True)
class FamilyPlan:
    """Ranges a family's cases are drawn from: share of cases, voxel size (mm), collimators, total counts."""

    weight: float
    voxel_mm: tuple[float, float]
    collimators: tuple[str, ...]
    counts: tuple[float, float]


PLANS: dict[str, FamilyPlan] = {
    "torso": FamilyPlan(0.3, (3.6, 5.0), ("Tc99m-LEHR", "Tc99m-LEHR", "Lu177-MEGP"), (1.5e6, 5e6)),
    "iec": FamilyPlan(0.2, (3.3, 5.0), ("Tc99m-LEHR", "I123-LEHR", "I123-LEGP", "Lu177-MEGP"), (1e6, 6e6)),
    "brain": FamilyPlan(0.2, (2.3, 3.5), ("I123-LEHR", "I123-LEGP"), (0.8e6, 2.5e6)),
    "cardiac": FamilyPlan(0.2, (3.5, 5.0), ("Tc99m-LEHR",), (0.5e6, 1.5e6)),
    "mouse": FamilyPlan(0.1, (0.4, 0.5), ("Tc99m-uSPECT",), (3e6, 15e6)),
}


def case_settings(index: int, seed: int = 0, plans: dict[str, FamilyPlan] | None = None) -> dict:
    """The simulation settings of case ``index`` in a run seeded ``seed`` (deterministic for given ``plans``)."""
    plans = PLANS if plans is None else plans
    case_seed = seed * SEED_STRIDE + index
    rng = np.random.default_rng([case_seed, 7])
    names = list(plans)
    weights = np.array([plans[n].weight for n in names])
    family = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    plan = plans[family]
    low, high = plan.counts
    angles = int(rng.choice([60, 64, 96, 120]))
    return {
        "id": f"case_{index:05d}",
        "family": family,
        "collimator": str(rng.choice(plan.collimators)),
        "voxel_mm": round(float(rng.uniform(*plan.voxel_mm)), 2),
        "seed": case_seed,
        "scatter": bool(rng.random() < 0.5),
        "iterations": int(rng.integers(2, 7)),
        "subsets": int(rng.choice([4, 6, 8, 10, 12])),
        "angles": angles,
        "total_counts": float(round(math.exp(rng.uniform(math.log(low), math.log(high))), -3)),
        "postfilter_fwhm_mm": float(round(rng.uniform(4, 10), 1)) if rng.random() < 0.25 else 0.0,
        "fractions": sorted(float(f) for f in rng.choice(FRACTION_LADDER, 3, replace=False)),
    }


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
    paths = [entry["full"], entry["ct"], entry["labels"], *entry["low"].values()]
    return all((out_dir / p).exists() for p in paths)


def simulate_case(settings: dict, out_dir: str | os.PathLike) -> dict:
    """Simulate one case described by ``settings`` (see :func:`case_settings`), write its volumes under
    ``out_dir/<id>/`` and return its manifest entry."""
    out_dir = Path(out_dir)
    case_dir = out_dir / settings["id"]
    case_dir.mkdir(parents=True, exist_ok=True)
    phantom = make_phantom(settings["family"], seed=settings["seed"], voxel_mm=settings["voxel_mm"])
    mu_map = hu_to_mu(phantom.ct, get_collimator(settings["collimator"]))
    result = simulate_pair(
        phantom.activity, phantom.spacing_mm, mu_map, fractions=settings["fractions"],
        total_counts=settings["total_counts"], collimator=settings["collimator"], iterations=settings["iterations"],
        subsets=settings["subsets"], angles=settings["angles"], scatter=settings["scatter"], seed=settings["seed"],
        postfilter_fwhm_mm=settings["postfilter_fwhm_mm"],
    )
    images = phantom_images(phantom)
    reference = images["activity"]
    files = {"full": f"{settings['id']}/full.nii.gz", "ct": f"{settings['id']}/ct.nii.gz",
             "labels": f"{settings['id']}/labels.nii.gz", "activity": f"{settings['id']}/activity.nii.gz"}
    write_volume(array_to_image(result.full, reference), out_dir / files["full"])
    write_volume(images["ct"], out_dir / files["ct"])
    write_volume(images["labels"], out_dir / files["labels"])
    write_volume(reference, out_dir / files["activity"])
    low = {}
    for fraction, image in result.low.items():
        low[fraction_key(fraction)] = f"{settings['id']}/low_{fraction_key(fraction)}.nii.gz"
        write_volume(array_to_image(image, reference), out_dir / low[fraction_key(fraction)])
    entry = {key: value for key, value in settings.items() if key != "fractions"}
    entry.update(files)
    entry.update({"low": low, "label_names": {str(k): v for k, v in phantom.label_names.items()},
                  "counts_full": result.counts_full, "orbit_radius_mm": round(result.settings["orbit_radius_mm"], 1),
                  "shape_zyx": list(phantom.activity.shape)})
    return entry


def generate_dataset(out_dir: str | os.PathLike, n: int, seed: int = 0,
                     progress: Callable[[int, int, str, bool], None] | None = None,
                     plans: dict[str, FamilyPlan] | None = None) -> dict:
    """Write cases ``0 … n−1`` of the run seeded ``seed`` to ``out_dir``, skipping finished ones.

    ``progress(done, n, case_id, skipped)`` is called after each case; ``plans`` replaces :data:`PLANS`
    (e.g. coarser voxels for a quick run). Returns the manifest.
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
