"""The real ``spectdenoise`` CLI (subprocess): info, metrics, and bad input → one sentence, exit code 3."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from SPECTDenoiseLib import metrics
from SPECTDenoiseLib.dicom import write_dicom_series
from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.io import image_to_array

SUV_TAGS = {
    "PatientWeight": 75.0, "Units": "BQML", "DecayCorrection": "ADMIN",
    "RadiopharmaceuticalInformationSequence": [{"RadionuclideTotalDose": 370e6, "RadionuclideHalfLife": 21624.0}],
}


@pytest.fixture
def phantom(tmp_path):
    """Reference and noisy image (32³, 4 mm) of a cylinder-ish body with a hot sphere; labels 1 (sphere), 2."""
    z, y, x = np.mgrid[:32, :32, :32]
    body = ((y - 16) / 13.0) ** 2 + ((x - 16) / 13.0) ** 2 < 1
    sphere = (z - 16) ** 2 + (y - 12) ** 2 + (x - 16) ** 2 < 16
    reference = np.where(body, 10.0, 0.0) + 30.0 * sphere
    image = reference + np.random.default_rng(0).normal(0, 1.0, reference.shape) * body
    labels = (sphere * 1 + ((z > 20) & (z < 24) & body & ~sphere) * 2).astype(np.uint8)
    paths = {}
    for name, array in (("reference.nrrd", reference), ("image.nii.gz", image), ("labels.nrrd", labels)):
        volume = sitk.GetImageFromArray(array.astype(np.uint8 if name == "labels.nrrd" else np.float32))
        volume.SetSpacing((4.0, 4.0, 4.0))
        sitk.WriteImage(volume, str(tmp_path / name))
        paths[name.split(".")[0]] = tmp_path / name
    return paths


def test_info_prints_geometry(run_cli, phantom):
    result = run_cli("info", phantom["reference"])
    assert result.returncode == 0, result.stderr
    assert "32 × 32 × 32" in result.stdout
    assert "Spacing (mm):    4, 4, 4" in result.stdout
    assert "not computable: SUV needs the patient weight" in result.stdout


def test_info_json_of_a_dicom_series_has_tags_and_the_suv_factor(run_cli, make_image, tmp_path):
    write_dicom_series(make_image(integer=True), tmp_path / "nm", "NM", tags=SUV_TAGS)
    result = run_cli("info", tmp_path / "nm", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dicom"]["Modality"] == "NM"
    assert report["size_xyz"] == [14, 12, 10]
    assert report["suv"]["factor"] == pytest.approx(75000 / 370e6)


def test_metrics_json_matches_the_library_and_has_a_record_per_label(run_cli, phantom):
    result = run_cli("metrics", phantom["image"], "--reference", phantom["reference"], "--labels", phantom["labels"],
                     "--json", "--weight", "70", "--dose", "500", "--units", "BQML", "--decay-correction", "ADMIN")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    reference = image_to_array(sitk.ReadImage(str(phantom["reference"])))
    image = image_to_array(sitk.ReadImage(str(phantom["image"])))
    body = metrics.body_mask(reference)
    assert report["quality"]["rmse"] == pytest.approx(metrics.rmse(image, reference, body))
    assert report["quality"]["ssim"] == pytest.approx(metrics.ssim(image, reference, body))
    assert [record["label"] for record in report["labels"]] == [1, 2]
    assert report["suv_factor"] == pytest.approx(70000 / 500e6)
    sphere = report["labels"][0]
    assert sphere["reference"]["mean"] == pytest.approx(40.0)
    assert sphere["reference_suv"]["mean"] == pytest.approx(40.0 * 70000 / 500e6)


def test_metrics_table_lists_the_mask_and_labels(run_cli, phantom):
    result = run_cli("metrics", phantom["image"], "--reference", phantom["reference"], "--labels", phantom["labels"])
    assert result.returncode == 0, result.stderr
    assert "PSNR" in result.stdout and "SSIM" in result.stdout
    assert [line.split()[0] for line in result.stdout.splitlines()[-3:]] == ["mask", "label", "label"]


def _two_d(tmp_path):
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkFloat32), str(path))
    return path


def _garbage(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(b"not a volume at all" * 20)
    return path


def _other_grid(tmp_path):
    path = tmp_path / "other.nrrd"
    sitk.WriteImage(sitk.Image(20, 20, 20, sitk.sitkUInt8), str(path))
    return path


@pytest.mark.parametrize(
    ("arguments", "sentence"),
    [
        (lambda p, t: ["info", t / "absent.nrrd"], "does not exist"),
        (lambda p, t: ["info", _garbage(t)], "not an image file that can be read"),
        (lambda p, t: ["info", _two_d(t)], "3D volume is needed"),
        (lambda p, t: ["metrics", p["image"], "--reference", p["reference"], "--labels", _other_grid(t)],
         "another geometry"),
        (lambda p, t: ["metrics", _other_grid(t), "--reference", p["reference"]], "not on the same voxel grid"),
    ],
    ids=["missing", "unreadable", "not-3d", "labels-other-geometry", "image-other-grid"],
)
def test_bad_input_gives_one_sentence_and_exit_code_3(run_cli, phantom, tmp_path, arguments, sentence):
    result = run_cli(*arguments(phantom, tmp_path))
    assert result.returncode == InputError.exit_code
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("spectdenoise: error:")
    assert sentence in result.stderr
