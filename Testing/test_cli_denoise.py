"""``spectdenoise denoise`` end to end in real subprocesses: every architecture, options, errors, batch mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from model_fixtures import FIXTURE_MODELS, make_package, phantom

from SPECTDenoiseLib.hub import load_model
from SPECTDenoiseLib.inference import denoise
from SPECTDenoiseLib.io import image_to_array, same_geometry
from SPECTDenoiseLib.models.package import load_package

SHAPE = (64, 64, 64)


@pytest.fixture(scope="module")
def volume_64(tmp_path_factory) -> Path:
    """A 64³ phantom with anisotropic spacing and an oblique direction, and its CT."""
    folder = tmp_path_factory.mktemp("study")
    sitk.WriteImage(phantom(SHAPE), str(folder / "spect.nrrd"))
    sitk.WriteImage(sitk.Cast(phantom(SHAPE, seed=1) * 20 - 1000, sitk.sitkInt16), str(folder / "ct.nrrd"))
    return folder / "spect.nrrd"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIXTURE_MODELS))
def test_every_architecture_denoises_a_64_cube_through_the_cli(tmp_path, run_cli, volume_64, name):
    model = make_package(tmp_path / name, name)
    output, variance = tmp_path / "denoised.nii.gz", tmp_path / "variance.nrrd"
    extra = ["--ct", volume_64.parent / "ct.nrrd"] if name == "u2net" else []
    extra += ["--variance", variance, "--steps", "2"] if name == "diffusion" else []
    result = run_cli("denoise", volume_64, "-o", output, "--model", model, "--device", "cpu", *extra)
    assert result.returncode == 0, result.stderr
    source = sitk.ReadImage(str(volume_64))
    assert same_geometry(sitk.ReadImage(str(output)), source)
    if name == "diffusion":
        assert same_geometry(sitk.ReadImage(str(variance)), source)
    assert f"denoised: {output}" in result.stdout


def test_jsonl_progress_prints_the_worker_events(tmp_path, run_cli):
    small = tmp_path / "small.nrrd"
    sitk.WriteImage(phantom(), str(small))
    model = make_package(tmp_path / "unet", "unet2d")
    result = run_cli("denoise", small, "-o", tmp_path / "out.nrrd", "--model", model, "--progress", "jsonl")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0
    assert events[0]["event"] == "progress" and events[-1]["event"] == "done"
    assert events[-1]["outputs"] == {"denoised": str(tmp_path / "out.nrrd")}


def test_seed_reaches_the_sampler_and_fixes_the_variance(tmp_path, run_cli):
    """The seed fixes the diffusion samples, hence the variance map (the denoised image is the estimate)."""
    small = tmp_path / "small.nrrd"
    sitk.WriteImage(phantom(), str(small))
    folder = make_package(tmp_path / "diffusion", "diffusion")
    assert run_cli("denoise", small, "-o", tmp_path / "out.nrrd", "--variance", tmp_path / "variance.nrrd",
                   "--model", folder, "--seed", "5").returncode == 0
    model = load_package(folder)
    same, other = (image_to_array(denoise(phantom(), model, device="cpu", seed=seed, want_variance=True).variance)
                   for seed in (5, 6))
    written = image_to_array(sitk.ReadImage(str(tmp_path / "variance.nrrd")))
    # The CLI process may use another number of torch threads than this one, which reorders float sums: the same
    # seed agrees to float rounding, another seed differs by orders of magnitude more.
    np.testing.assert_allclose(written, same, rtol=1e-4, atol=1e-4 * float(same.max()))
    assert np.abs(written - other).max() > 100 * np.abs(written - same).max()


def test_absent_device_exits_with_the_device_code(tmp_path, run_cli, volume_64):
    model = make_package(tmp_path / "unet", "unet2d")
    result = run_cli("denoise", volume_64, "-o", tmp_path / "out.nrrd", "--model", model, "--device", "cuda:7")
    assert result.returncode == 6
    assert "cuda:7" in result.stderr and "Traceback" not in result.stderr


def test_variance_from_a_deterministic_model_exits_with_the_model_code(tmp_path, run_cli, volume_64):
    model = make_package(tmp_path / "unet", "unet2d")
    result = run_cli("denoise", volume_64, "-o", tmp_path / "out.nrrd", "--model", model,
                     "--variance", tmp_path / "variance.nrrd")
    assert result.returncode == 4
    assert "diffusion" in result.stderr
    assert not (tmp_path / "out.nrrd").exists()


@pytest.mark.slow
def test_batch_mode_denoises_every_study_and_reports_the_failed_one(tmp_path, run_cli):
    studies = tmp_path / "studies"
    (studies / "dicom-series").mkdir(parents=True)
    sitk.WriteImage(phantom(), str(studies / "a.nii.gz"))
    sitk.WriteImage(phantom(seed=2), str(studies / "b.mha"))
    (studies / "broken.nrrd").write_text("not an image", encoding="utf-8")
    model = make_package(tmp_path / "unet", "unet2d")
    result = run_cli("denoise", studies, "-o", tmp_path / "out", "--model", model,
                     "--difference", tmp_path / "diff", "--jobs", "2")
    assert result.returncode == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "b.mha"]
    assert sorted(p.name for p in (tmp_path / "diff").iterdir()) == ["a.nii.gz", "b.mha"]
    assert "[failed] broken:" in result.stderr and "[failed] dicom-series:" in result.stderr
    assert "2 of 4 studies denoised" in result.stderr


@pytest.mark.slow
def test_no_uptake_guard_returns_the_bare_network_and_the_default_the_guarded_one(tmp_path, run_cli):
    """A hot 2-voxel-wide blob in an almost empty, noisy volume: the default model changes it beyond the noise,
    so the guarded and bare outputs differ; the CLI's default and --no-uptake-guard give exactly the library's."""
    rng = np.random.default_rng(4)
    array = np.full((24, 48, 48), 0.05, np.float32)
    array[6:18, 8:40, 8:40] = 1.0
    array[11:13, 23:25, 23:25] = 40.0
    array = rng.poisson(array * 50).astype(np.float32) / 50
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((4.0, 4.0, 4.0))
    path = tmp_path / "blob.nrrd"
    sitk.WriteImage(image, str(path))
    outputs = {}
    for guard, flags in ((True, []), (False, ["--no-uptake-guard"])):
        out = tmp_path / f"guard_{guard}.nrrd"
        assert run_cli("denoise", path, "-o", out, "--device", "cpu", *flags).returncode == 0
        outputs[guard] = image_to_array(sitk.ReadImage(str(out)))
        library = image_to_array(denoise(image, load_model(None), device="cpu", uptake_guard=guard).denoised)
        np.testing.assert_allclose(outputs[guard], library, rtol=1e-5, atol=1e-6)
    assert not np.allclose(outputs[True], outputs[False])
