"""The default model at the user level: results follow the units of the scan, and a hot organ elsewhere in the
field of view does not move lesion means (both broke quantification on real scans)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SPECTDenoiseLib.hub import load_model, read_catalogue
from SPECTDenoiseLib.inference import denoise
from SPECTDenoiseLib.io import array_to_image
from SPECTDenoiseLib.phantoms import make_phantom, phantom_images
from SPECTDenoiseLib.simulate import simulate_pair

CHECK_SEED = 990_202


@pytest.fixture(scope="module")
def case() -> dict:
    phantom = make_phantom("iec", seed=CHECK_SEED, voxel_mm=6.0)
    result = simulate_pair(phantom.activity, phantom.spacing_mm, phantom.mu_map, fractions=(0.1,),
                           total_counts=phantom.total_counts, collimator=phantom.collimator, seed=CHECK_SEED,
                           angles=60, subsets=6)
    spheres = {name: phantom.labels == value for value, name in phantom.label_names.items()
               if name.startswith("sphere") and (phantom.labels == value).sum() >= 8}
    return {"low": result.low[0.1], "grid": phantom_images(phantom)["ct"], "spheres": spheres,
            "body": phantom.ct > -500}


@pytest.fixture(scope="module")
def model():
    return load_model(read_catalogue()["default"])


def run(model, array: np.ndarray, grid: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(denoise(array_to_image(array, grid), model, device="cpu").denoised)


@pytest.mark.slow
@pytest.mark.parametrize("factor", [0.01, 1000.0])
def test_denoising_k_times_the_scan_gives_k_times_the_result(model, case, factor):
    plain = run(model, case["low"], case["grid"])
    scaled = run(model, case["low"] * factor, case["grid"]) / factor
    body = case["body"]
    assert np.sqrt(np.mean((scaled[body] - plain[body]) ** 2)) <= 0.01 * np.sqrt(np.mean(plain[body] ** 2))


@pytest.mark.slow
def test_a_hot_bladder_elsewhere_does_not_move_the_sphere_means(model, case):
    low = case["low"]
    with_bladder = low.copy()
    level = float(np.median(low[case["body"]]))
    sphere_z = np.mean([np.argwhere(mask)[:, 0].mean() for mask in case["spheres"].values()])
    body_z = np.flatnonzero(case["body"].any(axis=(1, 2)))
    z = int(body_z[2] if abs(body_z[2] - sphere_z) > abs(body_z[-3] - sphere_z) else body_z[-3])
    y, x = (int(round(c)) for c in np.argwhere(case["body"][z]).mean(axis=0))
    with_bladder[z - 1:z + 2, y - 3:y + 3, x - 3:x + 3] = 60 * level  # far from the spheres, 60× the background
    plain, hot = run(model, low, case["grid"]), run(model, with_bladder, case["grid"])
    for name, mask in case["spheres"].items():
        assert hot[mask].mean() == pytest.approx(plain[mask].mean(), rel=0.03), name
