"""``spectdenoise denoise`` edges: --progress jsonl prints only JSON (the --reference comparison and its errors
too), batch mode refuses two studies of one name and names the study in every warning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from model_fixtures import make_package, phantom


def reject_constant(name: str) -> None:
    raise AssertionError(f"invalid JSON constant {name}")


@pytest.fixture
def study(tmp_path):
    """A small phantom, a noisier 'full-count' reference on its grid, one on another grid, and a tiny model."""
    low, full, other = tmp_path / "low.nrrd", tmp_path / "full.nrrd", tmp_path / "other.nrrd"
    image = phantom()
    sitk.WriteImage(image, str(low))
    sitk.WriteImage(phantom(seed=3), str(full))
    sitk.WriteImage(phantom((12, 20, 24)), str(other))
    return {"low": low, "full": full, "other": other, "model": make_package(tmp_path / "unet", "unet2d")}


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line, parse_constant=reject_constant) for line in stdout.splitlines()]


def test_jsonl_with_a_reference_puts_the_comparison_into_done(run_cli, study, tmp_path):
    result = run_cli("denoise", study["low"], "-o", tmp_path / "out.nrrd", "--model", study["model"],
                     "--reference", study["full"], "--progress", "jsonl")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert events[-1]["event"] == "done"
    comparison = events[-1]["comparison"]
    assert comparison["body_voxels"] > 0 and set(comparison["input"]) == {"rmse", "nrmse", "psnr_db", "ssim"}
    assert comparison["denoised"]["rmse"] > 0


@pytest.mark.parametrize("bad", ["other", "absent"])
def test_jsonl_reports_a_bad_reference_as_an_error_event(run_cli, study, tmp_path, bad):
    reference = study["other"] if bad == "other" else tmp_path / "absent.nrrd"
    result = run_cli("denoise", study["low"], "-o", tmp_path / "out.nrrd", "--model", study["model"],
                     "--reference", reference, "--progress", "jsonl")
    assert result.returncode == 3
    assert [event["event"] for event in json_lines(result.stdout)] == ["error"]
    assert json_lines(result.stdout)[0]["exit_code"] == 3 and result.stderr == ""


def test_human_output_still_prints_the_comparison(run_cli, study, tmp_path):
    result = run_cli("denoise", study["low"], "-o", tmp_path / "out.nrrd", "--model", study["model"],
                     "--reference", study["full"])
    assert result.returncode == 0, result.stderr
    assert "Against the reference 'full.nrrd' in the body" in result.stdout
    assert [line.split()[0] for line in result.stdout.splitlines() if "NRMSE" in line] == ["input", "denoised"]


def test_batch_refuses_two_studies_of_one_name(run_cli, study, tmp_path):
    folder = tmp_path / "studies"
    folder.mkdir()
    image = sitk.ReadImage(str(study["low"]))
    sitk.WriteImage(image, str(folder / "a.nrrd"))
    sitk.WriteImage(image, str(folder / "a.nii.gz"))
    result = run_cli("denoise", folder, "-o", tmp_path / "out", "--model", study["model"])
    assert result.returncode == 3
    assert "'a.nii.gz' and 'a.nrrd'" in result.stderr and "study 'a'" in result.stderr
    assert not list((tmp_path / "out").glob("*.nrrd")) + list((tmp_path / "out").glob("*.nii.gz"))


def test_batch_warnings_name_their_study(run_cli, study, tmp_path):
    folder = tmp_path / "studies"
    folder.mkdir()
    values = sitk.GetArrayFromImage(sitk.ReadImage(str(study["low"])))
    values[0, 0, :3] = -1.0
    negative = sitk.GetImageFromArray(values.astype(np.float32))
    negative.CopyInformation(sitk.ReadImage(str(study["low"])))
    sitk.WriteImage(negative, str(folder / "undershoot.nrrd"))
    sitk.WriteImage(sitk.ReadImage(str(study["low"])), str(folder / "clean.nrrd"))
    result = run_cli("denoise", folder, "-o", tmp_path / "out", "--model", study["model"], "--jobs", "1")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "negative voxels" in line]
    assert warnings == ["[undershoot] 3 negative voxels of the SPECT were set to 0 before denoising."]


def test_batch_jsonl_reports_a_name_clash_as_an_error_event(run_cli, study, tmp_path):
    folder = tmp_path / "studies"
    folder.mkdir()
    for name in ("a.nrrd", "a.mha"):
        sitk.WriteImage(sitk.ReadImage(str(study["low"])), str(folder / name))
    result = run_cli("denoise", folder, "-o", tmp_path / "out", "--model", study["model"], "--progress", "jsonl")
    assert result.returncode == 3 and result.stderr == ""
    assert [(event["event"], event["exit_code"]) for event in json_lines(result.stdout)] == [("error", 3)]
