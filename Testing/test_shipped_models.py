"""Every model shipped in Resources/Models.json loads through `--model` and beats the unfiltered input.

The check case is a NEMA IEC phantom with a seed never used for training (training case seeds are run seed ×
1 000 000 + i, run seeds 1–4), simulated at 10 % counts and reconstructed exactly like its full-count reference;
NRMSE is taken in the body.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from SPECTDenoiseLib.hub import load_model, read_catalogue
from SPECTDenoiseLib.inference import denoise
from SPECTDenoiseLib.metrics import nrmse
from SPECTDenoiseLib.io import array_to_image
from SPECTDenoiseLib.phantoms import make_phantom, phantom_images
from SPECTDenoiseLib.simulate import simulate_pair

REPOSITORY = Path(__file__).resolve().parents[1]
SHIPPED = [entry["id"] for entry in read_catalogue()["models"] if "path" in entry]
CHECK_SEED = 990_101


@pytest.fixture(scope="module")
def held_out_case() -> dict:
    phantom = make_phantom("iec", seed=CHECK_SEED, voxel_mm=6.0)
    result = simulate_pair(phantom.activity, phantom.spacing_mm, phantom.mu_map, fractions=(0.1,),
                           total_counts=phantom.total_counts, collimator=phantom.collimator, seed=CHECK_SEED)
    ct = phantom_images(phantom)["ct"]
    return {"low": array_to_image(result.low[0.1], ct), "full": result.full, "ct": ct, "body": phantom.ct > -500}


def test_the_catalogue_has_a_shipped_default_model():
    catalogue = read_catalogue()
    assert catalogue["default"] in SHIPPED


@pytest.mark.slow
@pytest.mark.parametrize("model_id", SHIPPED)
def test_shipped_model_beats_the_unfiltered_input_on_a_held_out_phantom(model_id, held_out_case):
    model = load_model(model_id)
    result = denoise(held_out_case["low"], model, ct=held_out_case["ct"] if model.config.needs_ct else None,
                     device="cpu", samples=2, steps=None, seed=0)
    low = sitk.GetArrayFromImage(held_out_case["low"])
    denoised = sitk.GetArrayFromImage(result.denoised)
    before = nrmse(low, held_out_case["full"], held_out_case["body"])
    after = nrmse(denoised, held_out_case["full"], held_out_case["body"])
    assert after < 0.85 * before, f"{model_id}: NRMSE {after:.3f} vs input {before:.3f}"


def test_the_default_model_runs_through_the_cli_on_the_shipped_sample(tmp_path):
    sample = REPOSITORY / "Resources" / "Samples"
    result = subprocess.run(
        [sys.executable, "-m", "SPECTDenoiseLib", "denoise", str(sample / "iec_low10.nrrd"), "-o",
         str(tmp_path / "denoised.nrrd"), "--difference", str(tmp_path / "difference.nrrd"),
         "--reference", str(sample / "iec_full.nrrd")],
        capture_output=True, text=True, cwd=REPOSITORY, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if "NRMSE" in line}
    input_nrmse = float(lines["input"].split("NRMSE")[1].split()[0])
    denoised_nrmse = float(lines["denoised"].split("NRMSE")[1].split()[0])
    assert denoised_nrmse < input_nrmse
