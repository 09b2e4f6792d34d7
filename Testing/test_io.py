"""Volume I/O: round trips keep arrays and geometry, bad files give InputError, CT→SPECT resampling, label maps."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.io import (
    image_to_array,
    read_label_map,
    read_volume,
    resample_to_reference,
    same_geometry,
    spacing_zyx,
    write_volume,
)


@pytest.mark.parametrize("name", ["volume.nii.gz", "volume.nrrd", "volume.mha"])
def test_write_then_read_keeps_array_and_geometry(make_image, tmp_path, name):
    image = make_image()
    path = write_volume(image, tmp_path / name)
    back = read_volume(path)
    assert same_geometry(back, image, tolerance=1e-5)
    np.testing.assert_array_equal(image_to_array(back), image_to_array(image))


def test_spacing_zyx_reverses_simpleitk_order(make_image):
    assert spacing_zyx(make_image(spacing_xyz=(2.0, 2.5, 3.0))) == (3.0, 2.5, 2.0)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "absent.nrrd")


def test_unreadable_file_is_an_input_error(tmp_path):
    path = tmp_path / "broken.nrrd"
    path.write_bytes(b"this is not an image" * 10)
    with pytest.raises(InputError, match="cannot be read|not an image"):
        read_volume(path)


def test_2d_image_is_an_input_error(write_image):
    path = write_image(sitk.Image(8, 8, sitk.sitkFloat32), "slice.nrrd")
    with pytest.raises(InputError, match="2D; a 3D volume is needed"):
        read_volume(path)


def _linear_ct(reference: sitk.Image) -> sitk.Image:
    """A CT (coarser, larger, axis-aligned grid) whose HU are 2·x + 3·y − z of the LPS position in mm."""
    ct = sitk.Image(40, 40, 40, sitk.sitkFloat32)
    ct.SetSpacing((1.5, 1.5, 1.5))
    low = np.min([reference.TransformIndexToPhysicalPoint(c) for c in [(0, 0, 0), (13, 11, 9)]], axis=0)
    ct.SetOrigin(tuple(low - 8.0))
    points = np.array(
        [ct.TransformIndexToPhysicalPoint((i, j, k)) for k in range(40) for j in range(40) for i in range(40)]
    )
    values = (2 * points[:, 0] + 3 * points[:, 1] - points[:, 2]).reshape(40, 40, 40)
    result = sitk.GetImageFromArray(values.astype(np.float32))
    result.CopyInformation(ct)
    return result


def test_resample_to_reference_puts_ct_on_the_spect_grid(make_image):
    spect = make_image()
    resampled = resample_to_reference(_linear_ct(spect), spect)
    assert same_geometry(resampled, spect)
    index = (5, 6, 4)
    x, y, z = resampled.TransformIndexToPhysicalPoint(index)
    assert resampled[index] == pytest.approx(2 * x + 3 * y - z, abs=1e-2)  # linear interpolation is exact here


def test_resample_to_reference_fills_outside_with_air(make_image):
    spect = make_image(shape_zyx=(10, 12, 14))
    ct = sitk.Image(4, 4, 4, sitk.sitkInt16) + 40
    ct.SetOrigin(spect.GetOrigin())
    ct.SetDirection(spect.GetDirection())
    ct.SetSpacing(spect.GetSpacing())
    array = image_to_array(resample_to_reference(ct, spect))
    assert array[0, 0, 0] == pytest.approx(40.0)
    assert array[-1, -1, -1] == -1000.0


def test_resample_without_overlap_is_an_input_error(make_image):
    spect = make_image()
    ct = make_image(origin_xyz=(900.0, 900.0, 900.0), oblique=False)
    with pytest.raises(InputError, match="do not overlap"):
        resample_to_reference(ct, spect)


def test_label_map_on_the_reference_grid_reads_as_int32(make_image, write_image):
    reference = make_image()
    labels = sitk.Cast(sitk.GetImageFromArray((image_to_array(reference) > 100).astype(np.uint8) * 3), sitk.sitkUInt8)
    labels.CopyInformation(reference)
    array = read_label_map(write_image(labels, "labels.nrrd"), reference)
    assert array.dtype == np.int32
    np.testing.assert_array_equal(array, sitk.GetArrayFromImage(labels))


def test_label_map_of_another_geometry_is_an_input_error(make_image, write_image):
    reference = make_image()
    other = sitk.Image(reference.GetSize(), sitk.sitkUInt8)
    with pytest.raises(InputError, match="another geometry"):
        read_label_map(write_image(other, "labels.nrrd"), reference)


def test_label_map_with_fractions_is_an_input_error(make_image, write_image):
    reference = make_image()
    with pytest.raises(InputError, match="non-integer"):
        read_label_map(write_image(reference, "not-labels.nrrd"), reference)
