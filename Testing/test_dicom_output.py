"""Results as DICOM: derived series of the input's study, read back by our reader, SimpleITK and pydicom, SUV kept,
valid for dciodvfy, and written by ``spectdenoise denoise`` for single studies and batches."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from model_fixtures import make_package, phantom

from SPECTDenoiseLib.dicom import quantise, read_dicom_series, read_dicom_tags, write_dicom_series
from SPECTDenoiseLib.dicom_output import write_derived_series
from SPECTDenoiseLib.errors import OutputError
from SPECTDenoiseLib.io import image_to_array, read_volume, same_geometry
from SPECTDenoiseLib.suv import suv_factor, suv_parameters_from_dicom

DCIODVFY = shutil.which("dciodvfy")
needs_dciodvfy = pytest.mark.skipif(
    DCIODVFY is None,
    reason="dciodvfy (Debian package dicom3tools) is not installed; .ci/run installs it where apt-get works")


def _code(value: str, meaning: str) -> list[dict]:
    return [{"CodeValue": value, "CodingSchemeDesignator": "SCT", "CodeMeaning": meaning}]


SCANNER_TAGS = {
    "PatientName": "Phantom^Test", "PatientID": "PH-001", "PatientBirthDate": "19600101", "PatientSex": "O",
    "PatientWeight": 72.5, "PatientSize": 1.75, "ReferringPhysicianName": "", "StudyID": "1",
    "AccessionNumber": "A1", "StudyDate": "20260105", "StudyTime": "100000", "SeriesDate": "20260105",
    "SeriesTime": "103000", "AcquisitionDate": "20260105", "AcquisitionTime": "103000", "SeriesNumber": 3,
    "SeriesDescription": "SPECT 10 % counts", "Manufacturer": "Phantom Works", "PositionReferenceIndicator": "",
    "BodyPartExamined": "CHEST",
    "PatientOrientationCodeSequence": _code("102538003", "recumbent"),
    "PatientGantryRelationshipCodeSequence": _code("126830007", "headfirst"),
    "RadiopharmaceuticalInformationSequence": [{
        "RadiopharmaceuticalStartTime": "090000", "RadionuclideTotalDose": 740e6, "RadionuclideHalfLife": 21624.0,
        "RadionuclideCodeSequence": _code("44588005", "Technetium Tc^99m^")}],
    "Units": "BQML", "CorrectedImage": ["ATTN", "DECY"], "DecayCorrection": "START",
}
MODALITY_TAGS = {
    "NM": {"NumberOfEnergyWindows": 1, "NumberOfDetectors": 1, "NumberOfRotations": 1, "CountsAccumulated": 10**6,
           "InstanceNumber": 1, "EnergyWindowInformationSequence": [{"EnergyWindowRangeSequence": [
               {"EnergyWindowLowerLimit": 126.0, "EnergyWindowUpperLimit": 154.0}]}],
           "RotationInformationSequence": [{"StartAngle": 0.0, "AngularStep": 3.0, "RotationDirection": "CW",
                                            "ScanArc": 360.0, "ActualFrameDuration": 20000,
                                            "NumberOfFramesInRotation": 120}]},
    "PT": {"CountsSource": "EMISSION", "SeriesType": ["STATIC", "IMAGE"], "CollimatorType": "NONE",
           "FrameReferenceTime": 0.0, "ActualFrameDuration": 600000, "RandomsCorrectionMethod": "NONE",
           "AttenuationCorrectionMethod": "CT", "ReconstructionMethod": "OSEM", "DecayFactor": 1.0,
           "DoseCalibrationFactor": 1.0},
}


def write_scanner_series(image: sitk.Image, folder: Path, modality: str) -> Path:
    """Write ``image`` as an NM (one multi-frame file) or PT (one file per slice) series carrying everything the
    IOD requires, as a scanner would, plus a private vendor attribute; return the folder."""
    tags = {**SCANNER_TAGS, **MODALITY_TAGS[modality]}
    if modality == "PT":
        tags["NumberOfSlices"] = image.GetSize()[2]
    files = write_dicom_series(image, folder, modality, tags=tags)
    for index, path in enumerate(files):
        dataset = pydicom.dcmread(path)
        if modality == "NM":
            dataset.DetectorInformationSequence[0].CollimatorType = "PARA"
        else:
            dataset.ImageIndex = index + 1
        dataset.private_block(0x0009, "PHANTOM WORKS", create=True).add_new(0x01, "LO", "vendor secret")
        dataset.save_as(path)
    return folder


@pytest.fixture(params=["NM", "PT"])
def study(request, tmp_path):
    """A scanner-like DICOM series (NM multi-frame or PT slices, oblique) and a float result on its grid."""
    source = write_scanner_series(phantom(), tmp_path / "input", request.param)
    grid = read_volume(source)
    rng = np.random.default_rng(1)
    result = sitk.GetImageFromArray(image_to_array(grid) * 0.9 + rng.uniform(0.0, 1.0, grid.GetSize()[::-1]))
    result.CopyInformation(grid)
    return source, result


def _files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def _sitk_read(folder: Path) -> sitk.Image:
    files = _files(folder)
    if len(files) == 1:
        return sitk.ReadImage(str(files[0]))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _pydicom_read(folder: Path) -> np.ndarray:
    """Rescaled values in our reader's slice order (position along the normal), with pydicom alone."""
    datasets = [pydicom.dcmread(path) for path in _files(folder)]
    if len(datasets) == 1:
        dataset = datasets[0]
        return dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    orientation = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    datasets.sort(key=lambda d: np.asarray(d.ImagePositionPatient, dtype=float) @ normal)
    return np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets])


def test_every_reader_gets_the_same_volume_within_half_a_rescale_step(study, tmp_path):
    source, result = study
    folder = write_derived_series(result, tmp_path / "denoised", source, kind="denoised", model="spect-unet25d")
    ours = read_dicom_series(folder)
    theirs = _sitk_read(folder)
    assert same_geometry(ours, result, tolerance=1e-4) and same_geometry(theirs, result, tolerance=1e-4)
    values = image_to_array(ours)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(theirs).astype(np.float32), values)
    np.testing.assert_array_equal(_pydicom_read(folder).astype(np.float32), values)
    peak = float(np.abs(image_to_array(result)).max())
    assert np.abs(values - image_to_array(result)).max() <= peak / 131070 * 1.001


def test_output_is_a_derived_series_of_the_input_study(study, tmp_path):
    source, result = study
    folder = write_derived_series(result, tmp_path / "denoised", source, kind="denoised", model="spect-unet25d")
    inputs = {pydicom.dcmread(path).SOPInstanceUID: pydicom.dcmread(path) for path in _files(source)}
    first_input = next(iter(inputs.values()))
    outputs = [pydicom.dcmread(path) for path in _files(folder)]
    assert len(outputs) == len(inputs)
    for output in outputs:
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "StudyDate",
                        "AccessionNumber", "FrameOfReferenceUID", "Modality", "SOPClassUID", "Manufacturer"):
            assert output[keyword].value == first_input[keyword].value, keyword
        assert output.SeriesInstanceUID != first_input.SeriesInstanceUID
        assert output.SOPInstanceUID not in inputs
        assert list(output.ImageType[:2]) == ["DERIVED", "PRIMARY"]
        assert output.SeriesDescription == "denoised (spect-unet25d)"
        assert output.SeriesNumber == 301
        assert "SPECTDenoise" in output.DerivationDescription and "spect-unet25d" in output.DerivationDescription
        (referenced,) = output.SourceImageSequence
        template = inputs[referenced.ReferencedSOPInstanceUID]
        assert template.get("ImagePositionPatient") == output.get("ImagePositionPatient")
        assert referenced.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
        assert output.ReferencedSeriesSequence[0].SeriesInstanceUID == first_input.SeriesInstanceUID
        assert (0x0009, 0x0010) not in output and (0x0009, 0x1001) not in output
    assert len({output.SeriesInstanceUID for output in outputs}) == 1
    assert len({output.SOPInstanceUID for output in outputs}) == len(outputs)


def test_suv_from_the_output_equals_suv_from_the_input(study, tmp_path):
    source, result = study
    folder = write_derived_series(result, tmp_path / "denoised", source, kind="denoised", model="m")
    before, after = read_dicom_tags(source), read_dicom_tags(folder)
    assert after["Units"] == "BQML"
    assert suv_factor(suv_parameters_from_dicom(after)) == suv_factor(suv_parameters_from_dicom(before))


def test_difference_is_signed_and_variance_has_no_suv_units(study, tmp_path):
    source, result = study
    difference = image_to_array(result) - 10.0
    image = sitk.GetImageFromArray(difference)
    image.CopyInformation(result)
    folder = write_derived_series(image, tmp_path / "difference", source, kind="difference", model="m")
    assert pydicom.dcmread(_files(folder)[0]).PixelRepresentation == 1
    step = np.abs(difference).max() / 32767
    np.testing.assert_allclose(image_to_array(read_dicom_series(folder)), difference, atol=step * 0.501)
    variance = write_derived_series(result, tmp_path / "variance", source, kind="variance", model="m")
    dataset = pydicom.dcmread(_files(variance)[0])
    assert (dataset.Units, dataset.SeriesDescription) == ("NONE", "variance (m; BQML^2)")
    assert dataset.SeriesNumber == 303


@needs_dciodvfy
@pytest.mark.parametrize("kind", ["denoised", "difference", "variance"])
def test_dciodvfy_finds_no_error_in_the_input_or_the_outputs(study, tmp_path, kind):
    source, result = study
    folder = write_derived_series(result - 5.0, tmp_path / kind, source, kind=kind, model="spect-unet25d")
    for path in (_files(source)[0], *_files(folder)):
        report = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60, check=False)
        errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path}: {errors}"


@pytest.mark.parametrize("signed", [False, True])
def test_quantisation_error_is_within_half_a_step_of_the_largest_magnitude(signed):
    values = np.random.default_rng(0).gamma(2.0, 50.0, 5000) - (100.0 if signed else 0.0)
    stored, slope = quantise(values)
    assert stored.dtype == (np.int16 if signed else np.uint16)
    bound = np.abs(values).max() / (65534 if signed else 131070)
    assert np.abs(stored * slope - values).max() <= bound * 1.0001


def test_whole_numbers_are_stored_exactly():
    values = np.array([-1000.0, 0.0, 3071.0])
    stored, slope = quantise(values)
    assert slope == 1.0 and np.array_equal(stored, values)


def test_non_dicom_input_cannot_make_a_series(tmp_path):
    source = tmp_path / "spect.nrrd"
    sitk.WriteImage(phantom(), str(source))
    with pytest.raises(OutputError, match="names a DICOM series folder, which needs a DICOM input"):
        write_derived_series(phantom(), tmp_path / "out", source, kind="denoised", model="m")


def test_ct_input_is_refused(tmp_path):
    source = tmp_path / "ct"
    write_dicom_series(phantom(), source, "CT")
    with pytest.raises(OutputError, match="written for NM and PT inputs; .* is CT DICOM"):
        write_derived_series(read_volume(source), tmp_path / "out", source, kind="denoised", model="m")


def test_a_folder_holding_files_is_not_written_into(study, tmp_path):
    source, result = study
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.dcm").write_bytes(b"x")
    with pytest.raises(OutputError, match="already exists and is not empty"):
        write_derived_series(result, tmp_path / "out", source, kind="denoised", model="m")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.dcm"]


def test_a_result_on_another_grid_is_refused_and_leaves_nothing(study, tmp_path):
    source, _ = study
    with pytest.raises(OutputError, match="not on the grid of the DICOM input"):
        write_derived_series(phantom((6, 20, 22)), tmp_path / "out", source, kind="denoised", model="m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input"]


@pytest.mark.slow
def test_cli_writes_dicom_for_a_dicom_input_and_a_folder_output(tmp_path, run_cli):
    source = write_scanner_series(phantom(), tmp_path / "input", "NM")
    model = make_package(tmp_path / "unet", "unet2d")
    result = run_cli("denoise", source, "-o", tmp_path / "denoised", "--difference", tmp_path / "difference",
                     "--model", model)
    assert result.returncode == 0, result.stderr
    as_file = run_cli("denoise", source, "-o", tmp_path / "denoised.nrrd", "--model", model)
    assert as_file.returncode == 0, as_file.stderr
    expected = image_to_array(read_volume(tmp_path / "denoised.nrrd"))
    back = read_volume(tmp_path / "denoised")
    np.testing.assert_allclose(image_to_array(back), expected, atol=np.abs(expected).max() / 131070 * 1.001)
    description = pydicom.dcmread(_files(tmp_path / "difference")[0]).SeriesDescription
    assert description == f"difference ({model.name})"


@pytest.mark.slow
def test_cli_batch_writes_one_derived_series_per_dicom_study(tmp_path, run_cli):
    studies = tmp_path / "studies"
    for name, modality, seed in (("anna", "NM", 0), ("ben", "PT", 1)):
        write_scanner_series(phantom(seed=seed), studies / name, modality)
    sitk.WriteImage(phantom(seed=2), str(studies / "carl.nii.gz"))
    model = make_package(tmp_path / "unet", "unet2d")
    result = run_cli("denoise", studies, "-o", tmp_path / "out", "--model", model, "--jobs", "1")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["anna", "ben", "carl.nii.gz"]
    for name in ("anna", "ben"):
        inputs, outputs = read_dicom_tags(studies / name), read_dicom_tags(tmp_path / "out" / name)
        assert outputs["StudyInstanceUID"] == inputs["StudyInstanceUID"]
        assert outputs["SeriesInstanceUID"] != inputs["SeriesInstanceUID"]


@pytest.mark.parametrize("output, message", [
    ("out", "names a DICOM series folder, which needs a DICOM input"),
    ("out.dcm", "DICOM output is written as a series folder"),
])
def test_cli_refuses_dicom_output_it_cannot_write(tmp_path, run_cli, output, message):
    source = tmp_path / "spect.nrrd"
    sitk.WriteImage(phantom(), str(source))
    result = run_cli("denoise", source, "-o", tmp_path / output, "--model", "no-model-needed")
    assert result.returncode == OutputError.exit_code
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spect.nrrd"]


def test_cli_format_dicom_needs_folder_names(tmp_path, run_cli):
    source = write_scanner_series(phantom(), tmp_path / "input", "NM")
    result = run_cli("denoise", source, "-o", tmp_path / "out.nrrd", "--format", "dicom")
    assert result.returncode == OutputError.exit_code
    assert "With --format dicom, -o needs a folder name without a suffix" in result.stderr


@pytest.mark.parametrize("output_format, expected", [
    ("auto", ["anna", "carl.nii.gz", "dora"]), ("dicom", ["anna", "carl", "dora"]),
    ("nrrd", ["anna.nrrd", "carl.nrrd", "dora.nrrd"]),
])
def test_batch_output_names_follow_the_format(tmp_path, output_format, expected):
    from SPECTDenoiseLib.commands.denoise import find_studies, output_name

    write_scanner_series(phantom(), tmp_path / "anna", "PT")
    sitk.WriteImage(phantom(), str(tmp_path / "carl.nii.gz"))
    write_dicom_series(phantom(), tmp_path / "multi", "NM")
    (tmp_path / "multi" / "NM000001.dcm").rename(tmp_path / "dora.dcm")
    (tmp_path / "multi").rmdir()
    studies = find_studies(tmp_path)
    assert sorted(output_name(study, name, output_format) for name, study in studies.items()) == expected


def test_a_dicom_series_folder_is_one_study_not_a_batch(tmp_path):
    from SPECTDenoiseLib.commands.denoise import is_batch

    series = write_scanner_series(phantom(), tmp_path / "series", "PT")
    assert not is_batch(series, tmp_path / "out")
    assert is_batch(tmp_path, tmp_path / "out")


def test_a_series_folder_inside_the_input_folder_is_refused(study):
    source, result = study
    with pytest.raises(OutputError, match="lies inside the input series folder"):
        write_derived_series(result, source / "denoised", source, kind="denoised", model="m")
