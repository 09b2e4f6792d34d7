"""Make the shipped sample in Resources/Samples: a simulated NEMA IEC phantom at full count and at 10 %.

Seed 990004 (8:1 spheres; never used for training, whose cases use seeds S·1 000 000 + i with small i).
Settings: 4 mm voxels, 96 × 96 × 64, Tc99m-LEHR, 4 M counts, scatter on, 120 views, OSEM 4 iterations × 8 subsets.
Run: ``python benchmarks/make_sample.py``.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk
import torch

from SPECTDenoiseLib.io import array_to_image, write_volume
from SPECTDenoiseLib.phantoms import make_phantom, phantom_images
from SPECTDenoiseLib.simulate import simulate_pair

SAMPLES = Path(__file__).resolve().parents[1] / "Resources" / "Samples"
SEED = 990004


def main() -> None:
    torch.set_num_threads(1)
    phantom = make_phantom("iec", seed=SEED, voxel_mm=4.0, size=96, slices=64)
    result = simulate_pair(phantom.activity, phantom.spacing_mm, phantom.mu_map, fractions=(0.1,),
                           total_counts=4e6, collimator="Tc99m-LEHR", iterations=4, subsets=8, angles=120,
                           scatter=True, seed=SEED)
    images = phantom_images(phantom)
    reference = images["activity"]
    SAMPLES.mkdir(parents=True, exist_ok=True)
    write_volume(array_to_image(result.full, reference), SAMPLES / "iec_full.nrrd")
    write_volume(array_to_image(result.low[0.1], reference), SAMPLES / "iec_low10.nrrd")
    write_volume(sitk.Cast(images["ct"], sitk.sitkInt16), SAMPLES / "iec_ct.nrrd")
    write_volume(images["labels"], SAMPLES / "iec_labels.nrrd")
    print(phantom.label_names, phantom.details, result.counts_full, result.counts_low)


if __name__ == "__main__":
    main()
