"""DICOM: series written and read back with geometry, format equality, multi-frame NM, several series, tags."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset

from SPECTDenoiseLib.dicom import read_dicom_series, read_dicom_tags, write_dicom_series
from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.io import image_to_array, read_volume, same_geometry, write_volume


@pytest.mark.parametrize("modality", ["NM", "PT", "CT"])
def test_series_written_and_read_back_keeps_values_and_geometry(make_image, tmp_path, modality):
    image = make_image(integer=True)
    write_dicom_series(image, tmp_path / "series", modality)
    back = read_dicom_series(tmp_path / "series")
    assert same_geometry(back, image, tolerance=1e-5)
    np.testing.assert_array_equal(image_to_array(back), image_to_array(image))


@pytest.mark.parametrize("modality", ["NM", "PT"])
def test_float_values_survive_within_half_a_rescale_step(make_image, tmp_path, modality):
    image = make_image()
    write_dicom_series(image, tmp_path, modality)
    original = image_to_array(image)
    step = (original.max() - original.min()) / 65535
    np.testing.assert_allclose(image_to_array(read_dicom_series(tmp_path)), original, atol=step * 0.51 + 1e-4)


def test_nifti_nrrd_and_dicom_give_the_same_volume(make_image, tmp_path):
    image = make_image(integer=True)
    write_volume(image, tmp_path / "v.nii.gz")
    write_volume(image, tmp_path / "v.nrrd")
    write_dicom_series(image, tmp_path / "dicom", "PT")
    volumes = [read_volume(tmp_path / name) for name in ("v.nii.gz", "v.nrrd", "dicom")]
    for other in volumes[1:]:
        assert same_geometry(other, volumes[0], tolerance=1e-5)
        np.testing.assert_array_equal(image_to_array(other), image_to_array(volumes[0]))


def test_multi_frame_nm_file_reads_as_a_volume_through_read_volume(make_image, tmp_path):
    image = make_image(integer=True)
    (path,) = write_dicom_series(image, tmp_path, "NM")
    back = read_volume(path)
    assert pydicom.dcmread(path).NumberOfFrames == image.GetSize()[2]
    assert same_geometry(back, image, tolerance=1e-5)


def test_left_handed_direction_keeps_every_voxel_in_place(make_image, tmp_path):
    image = make_image(integer=True, oblique=False)
    image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))
    back = read_dicom_series(write_dicom_series(image, tmp_path, "NM")[0])
    on_original_grid = sitk.Resample(back, image, sitk.Transform(), sitk.sitkNearestNeighbor, -1.0)
    np.testing.assert_array_equal(image_to_array(on_original_grid), image_to_array(image))


def test_enhanced_multi_frame_uses_per_frame_positions_and_rescale(make_image, tmp_path):
    image = make_image(integer=True, oblique=False)
    (path,) = write_dicom_series(image, tmp_path, "NM")
    dataset = pydicom.dcmread(path)
    del dataset.DetectorInformationSequence
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = dataset.PixelSpacing
    dataset.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for index in range(dataset.NumberOfFrames):
        frame = Dataset()
        frame.PlanePositionSequence = [Dataset()]
        frame.PlanePositionSequence[0].ImagePositionPatient = list(image.TransformIndexToPhysicalPoint((0, 0, index)))
        frame.PixelValueTransformationSequence = [Dataset()]
        frame.PixelValueTransformationSequence[0].RescaleSlope = index + 1
        frame.PixelValueTransformationSequence[0].RescaleIntercept = 0
        frames.append(frame)
    dataset.PerFrameFunctionalGroupsSequence = frames[::-1]  # frames stored in reverse: order comes from positions
    dataset.PixelData = np.ascontiguousarray(dataset.pixel_array[::-1]).tobytes()
    dataset.save_as(path)
    back = read_dicom_series(path)
    assert same_geometry(back, image, tolerance=1e-5)
    stored = image_to_array(image) - float(dataset.RescaleIntercept)
    np.testing.assert_allclose(image_to_array(back), stored * np.arange(1, stored.shape[0] + 1)[:, None, None])


def test_nm_projections_are_refused(make_image, tmp_path):
    (path,) = write_dicom_series(make_image(integer=True), tmp_path, "NM")
    dataset = pydicom.dcmread(path)
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "TOMO", "EMISSION"]
    dataset.save_as(path)
    with pytest.raises(InputError, match="not a reconstructed tomographic volume"):
        read_dicom_series(path)


def test_folder_with_two_series_lists_them_and_reads_the_chosen_one(make_image, tmp_path):
    write_dicom_series(make_image(integer=True, seed=1), tmp_path, "CT", tags={"SeriesDescription": "low dose CT"})
    wanted = make_image(integer=True, seed=2)
    (path,) = write_dicom_series(wanted, tmp_path, "NM")
    with pytest.raises(InputError, match="holds 2 DICOM series.*low dose CT"):
        read_dicom_series(tmp_path)
    chosen = read_dicom_series(tmp_path, series_uid=pydicom.dcmread(path).SeriesInstanceUID)
    np.testing.assert_array_equal(image_to_array(chosen), image_to_array(wanted))


def test_folder_without_dicom_is_an_input_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="no readable DICOM"):
        read_volume(tmp_path)


def test_tags_include_radiopharmaceutical_fields(make_image, tmp_path):
    radiopharmaceutical = {
        "RadiopharmaceuticalStartTime": "091500",
        "RadionuclideTotalDose": 740e6,
        "RadionuclideHalfLife": 21624.0,
        "RadionuclideCodeSequence": [{"CodeValue": "C-163A8", "CodingSchemeDesignator": "SRT",
                                      "CodeMeaning": "^99m^Technetium"}],
    }
    tags = {"PatientWeight": 72.5, "Units": "BQML", "RadiopharmaceuticalInformationSequence": [radiopharmaceutical]}
    write_dicom_series(make_image(integer=True), tmp_path, "NM", tags=tags)
    read = read_dicom_tags(tmp_path)
    assert read["Modality"] == "NM"
    assert read["PatientWeight"] == 72.5
    assert read["RadionuclideTotalDose"] == 740e6
    assert read["RadiopharmaceuticalStartTime"] == "091500"
    assert read["Radionuclide"] == "^99m^Technetium"
