"""Real-world DICOM variants of reconstructed SPECT, built attribute by attribute with pydicom as vendors write
them, saved with dcmwrite and read through the reader the CLI uses (``read_volume``): each is read with the right
geometry and values, or refused with one sentence (exit 3), never silently mis-oriented or mis-scaled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from SPECTDenoiseLib.dicom import dicom_tags_or_empty, read_dicom_tags
from SPECTDenoiseLib.dicom_output import write_derived_series
from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.io import image_to_array, read_volume, same_geometry
from SPECTDenoiseLib.projections import read_nm_projections

SLICES, ROWS, COLUMNS = 6, 5, 4
ORIGIN = (-120.0, -110.0, 40.0)  # LPS mm of the first voxel of the first frame
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def stored_values(frames: int = SLICES) -> np.ndarray:
    """Distinct uint16 values, so that any re-ordering or flip of frames, rows or columns shows."""
    return np.arange(frames * ROWS * COLUMNS, dtype=np.uint16).reshape(frames, ROWS, COLUMNS) * 7 + 3


def base(modality: str, sop_class: str, values: np.ndarray) -> Dataset:
    """A dataset with the patient/study/series attributes and ``values`` as 16-bit unsigned pixel data."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality, ds.PatientName, ds.PatientID = modality, "Vendor^Variant", "VV1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "1.2.3.4", "1.2.3.4.5", "1.2.3.4.6"
    ds.Rows, ds.Columns = values.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(values, dtype="<u2").tobytes()
    return ds


def nm_recon(values: np.ndarray | None = None, spacing: float = 4.42, image_type: str = "RECON TOMO",
             geometry_in_detector: bool = True, **attributes) -> Dataset:
    """A GE Xeleris / Siemens Symbia style multi-frame NM reconstruction (NM Multi-frame, Detector and
    Reconstruction modules): position and orientation in the Detector Information Sequence."""
    values = stored_values() if values is None else values
    ds = base("NM", "1.2.840.10008.5.1.4.1.1.20", values)
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", image_type, "EMISSION"]
    ds.NumberOfFrames = values.shape[0]
    ds.FrameIncrementPointer = [0x00540080]
    ds.SliceVector = list(range(1, values.shape[0] + 1))
    ds.NumberOfSlices = values.shape[0]
    ds.PixelSpacing = [4.42, 4.42]
    ds.SpacingBetweenSlices = spacing
    ds.SliceThickness = abs(spacing)
    detector = Dataset()
    detector.ZoomFactor = [1.0, 1.0]
    geometry = detector if geometry_in_detector else ds
    geometry.ImagePositionPatient = list(ORIGIN)
    geometry.ImageOrientationPatient = AXIAL
    ds.DetectorInformationSequence = [detector]
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def mapping(unit_code: str, slope: float, intercept: float = 0.0) -> Dataset:
    """A Real World Value Mapping item in the UCUM unit ``unit_code``."""
    item, units = Dataset(), Dataset()
    units.CodeValue, units.CodingSchemeDesignator, units.CodeMeaning = unit_code, "UCUM", unit_code
    item.MeasurementUnitsCodeSequence = [units]
    item.RealWorldValueFirstValueMapped, item.RealWorldValueLastValueMapped = 0, 65535
    item.RealWorldValueSlope, item.RealWorldValueIntercept = slope, intercept
    item.LUTExplanation, item.LUTLabel = unit_code, unit_code
    return item


def voxel_centre(image, index: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(image.TransformIndexToPhysicalPoint(index))


def test_negative_spacing_between_slices_stacks_slices_towards_the_feet(tmp_path):
    # GE writes a negative SpacingBetweenSlices; PS3.3 C.8.4.15: the slices lie in front of the first one
    image = read_volume(save(nm_recon(spacing=-4.42), tmp_path / "ge.dcm"))
    np.testing.assert_allclose(voxel_centre(image, (0, 0, 0)), ORIGIN)
    np.testing.assert_allclose(voxel_centre(image, (0, 0, SLICES - 1)), np.add(ORIGIN, (0, 0, -4.42 * (SLICES - 1))))
    np.testing.assert_array_equal(image_to_array(image), stored_values())


def test_geometry_at_the_top_level_beside_a_detector_item_without_it(tmp_path):
    # Philips / Hermes style: the Detector Information item carries only detector data, the plane is top-level
    image = read_volume(save(nm_recon(geometry_in_detector=False), tmp_path / "nm.dcm"))
    np.testing.assert_allclose(voxel_centre(image, (0, 0, SLICES - 1)), np.add(ORIGIN, (0, 0, 4.42 * (SLICES - 1))))


def test_anisotropic_pixel_spacing_is_row_then_column(tmp_path):
    image = read_volume(save(nm_recon(PixelSpacing=[3.0, 2.0]), tmp_path / "nm.dcm"))
    assert image.GetSpacing() == pytest.approx((2.0, 3.0, 4.42))


def test_slice_vector_puts_frames_in_slice_order(tmp_path):
    values = stored_values()
    ds = nm_recon(values[::-1].copy(), SliceVector=list(range(SLICES, 0, -1)))
    np.testing.assert_array_equal(image_to_array(read_volume(save(ds, tmp_path / "nm.dcm"))), values)


def test_slice_vector_that_is_not_a_numbering_is_refused(tmp_path):
    with pytest.raises(InputError, match="SliceVector"):
        read_volume(save(nm_recon(SliceVector=[1] * SLICES), tmp_path / "nm.dcm"))


def test_gated_reconstruction_with_time_slots_is_refused(tmp_path):
    values = stored_values(2 * SLICES)
    ds = nm_recon(values, image_type="RECON GATED TOMO", NumberOfTimeSlots=2,
                  FrameIncrementPointer=[0x00540070, 0x00540080], TimeSlotVector=[1] * SLICES + [2] * SLICES,
                  SliceVector=list(range(1, SLICES + 1)) * 2, NumberOfSlices=SLICES)
    with pytest.raises(InputError, match="2 gated time slots"):
        read_volume(save(ds, tmp_path / "gated.dcm"))


def test_reconstruction_of_two_energy_windows_in_one_file_is_refused(tmp_path):
    ds = nm_recon(stored_values(2 * SLICES), EnergyWindowVector=[1] * SLICES + [2] * SLICES,
                  SliceVector=list(range(1, SLICES + 1)) * 2, NumberOfSlices=SLICES)
    with pytest.raises(InputError, match="2 energy windows"):
        read_volume(save(ds, tmp_path / "windows.dcm"))


def test_more_frames_than_slices_is_refused(tmp_path):
    ds = nm_recon(stored_values(2 * SLICES), NumberOfSlices=SLICES)
    del ds.SliceVector
    with pytest.raises(InputError, match="NumberOfSlices"):
        read_volume(save(ds, tmp_path / "nm.dcm"))


def test_gated_reconstruction_is_exit_3_with_one_line(run_cli, tmp_path):
    ds = nm_recon(stored_values(2 * SLICES), TimeSlotVector=[1] * SLICES + [2] * SLICES,
                  SliceVector=list(range(1, SLICES + 1)) * 2)
    result = run_cli("info", save(ds, tmp_path / "gated.dcm"))
    assert result.returncode == 3
    assert len(result.stderr.strip().splitlines()) == 1 and "time slots" in result.stderr


def test_xspect_quant_bq_per_ml_mapping_scales_the_values_and_names_the_units(tmp_path):
    # Siemens xSPECT Quant: no Modality LUT in the NM IOD; the Real World Value Mapping gives Bq/ml
    ds = nm_recon(RealWorldValueMappingSequence=[mapping("{counts}", 1.0), mapping("Bq/ml", 0.37, 2.0)])
    path = save(ds, tmp_path / "xspect.dcm")
    np.testing.assert_allclose(image_to_array(read_volume(path)), stored_values() * 0.37 + 2.0, rtol=1e-6)
    assert read_dicom_tags(path)["Units"] == "BQML"


def test_hermes_counts_mapping_scales_the_values(tmp_path):
    ds = nm_recon(RealWorldValueMappingSequence=[mapping("{counts}", 0.01)])
    path = save(ds, tmp_path / "hermes.dcm")
    np.testing.assert_allclose(image_to_array(read_volume(path)), stored_values() * 0.01, rtol=1e-6)
    assert read_dicom_tags(path)["Units"] == "CNTS"


def test_rescale_to_bq_per_ml_is_preferred_to_a_counts_mapping(tmp_path):
    ds = nm_recon(RealWorldValueMappingSequence=[mapping("{counts}", 1.0)], RescaleSlope=0.25, Units="BQML")
    path = save(ds, tmp_path / "nm.dcm")
    np.testing.assert_allclose(image_to_array(read_volume(path)), stored_values() * 0.25, rtol=1e-6)
    assert read_dicom_tags(path)["Units"] == "BQML"


def test_lookup_table_mapping_to_bq_per_ml_is_refused(tmp_path):
    item = mapping("Bq/ml", 1.0)
    del item.RealWorldValueSlope, item.RealWorldValueIntercept
    item.RealWorldValueLastValueMapped, item.RealWorldValueLUTData = 255, [0.5] * 256
    with pytest.raises(InputError, match="lookup table"):
        read_volume(save(nm_recon(RealWorldValueMappingSequence=[item]), tmp_path / "nm.dcm"))


def test_mapping_to_other_units_is_not_applied(tmp_path):
    ds = nm_recon(RealWorldValueMappingSequence=[mapping("{SUVbw}g/ml", 0.001)], RescaleSlope=2.0, Units="BQML")
    path = save(ds, tmp_path / "suv.dcm")
    np.testing.assert_array_equal(image_to_array(read_volume(path)), stored_values() * 2.0)
    assert read_dicom_tags(path)["Units"] == "BQML"


def test_two_bq_per_ml_mappings_that_disagree_are_refused(tmp_path):
    ds = nm_recon(RealWorldValueMappingSequence=[mapping("Bq/ml", 0.3), mapping("Bq/ml", 0.4)])
    with pytest.raises(InputError, match="two different ways"):
        read_volume(save(ds, tmp_path / "nm.dcm"))


def pt_slices(folder: Path, slopes: list[float]) -> None:
    """Quantitative SPECT exported as PT (one file per slice, Units BQML, a RescaleSlope per slice); the files are
    written in reverse order and carry a PET mapping to SUV, which is not applied."""
    for index in reversed(range(SLICES)):
        ds = base("PT", "1.2.840.10008.5.1.4.1.1.128", stored_values()[index])
        ds.ImageType, ds.Units, ds.SeriesType = ["ORIGINAL", "PRIMARY"], "BQML", ["STATIC", "IMAGE"]
        ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], ORIGIN[2] + 4.42 * index]
        ds.ImageOrientationPatient, ds.PixelSpacing = AXIAL, [4.42, 4.42]
        ds.RescaleSlope, ds.RescaleIntercept = slopes[index], 0.0
        ds.RealWorldValueMappingSequence = [mapping("{SUVbw}g/ml", 1e-4)]
        save(ds, folder / f"slice{index}.dcm")


def test_spect_exported_as_pt_reads_with_per_slice_rescale(tmp_path):
    slopes = [0.5 + index for index in range(SLICES)]
    pt_slices(tmp_path / "pt", slopes)
    image = read_volume(tmp_path / "pt")
    np.testing.assert_allclose(image_to_array(image), stored_values() * np.array(slopes)[:, None, None], rtol=1e-6)
    np.testing.assert_allclose(voxel_centre(image, (0, 0, 0)), ORIGIN)
    assert read_dicom_tags(tmp_path / "pt")["Units"] == "BQML"


def test_single_frame_nm_slices_take_their_plane_from_the_detector_item(tmp_path):
    # one NM RECON TOMO file per slice, as some workstations export: each slice's position in its detector item
    single_frame_nm_series(tmp_path / "nm")
    image = read_volume(tmp_path / "nm")
    np.testing.assert_array_equal(image_to_array(image), stored_values())
    np.testing.assert_allclose(voxel_centre(image, (0, 0, SLICES - 1)), np.add(ORIGIN, (0, 0, 4.42 * (SLICES - 1))))


def test_single_frame_nm_planar_images_are_refused(tmp_path):
    for index in range(2):
        save(nm_recon(stored_values()[index:index + 1], image_type="STATIC", NumberOfSlices=1, SliceVector=[1]),
             tmp_path / "planar" / f"{index}.dcm")
    with pytest.raises(InputError, match="not a reconstructed tomographic volume"):
        read_volume(tmp_path / "planar")


def test_rle_compressed_reconstruction_reads(tmp_path):
    ds = nm_recon()
    ds.compress(RLELossless, stored_values())
    np.testing.assert_array_equal(image_to_array(read_volume(save(ds, tmp_path / "rle.dcm"))), stored_values())


NO_JPEG_LS = pytest.mark.skipif(get_decoder(JPEGLSLossless).is_available, reason="a JPEG-LS decoder is installed")


def jpeg_ls(ds: Dataset) -> Dataset:
    """``ds`` with its frames encapsulated under JPEG-LS, for which no decoder is installed here."""
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(16)] * int(ds.get("NumberOfFrames", 1)))
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    return ds


@NO_JPEG_LS
def test_compressed_file_without_a_decoder_names_what_to_install(run_cli, tmp_path):
    result = run_cli("info", save(jpeg_ls(nm_recon()), tmp_path / "jls.dcm"))
    assert result.returncode == 3
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no decoder is installed" in result.stderr and "pyjpegls" in result.stderr


def gated_projections(path: Path) -> np.ndarray:
    """NM GATED TOMO projections: 4 views × 2 time slots (one detector, CC); return the ungated views."""
    views, slots = 4, 2
    values = stored_values(views * slots)
    ds = base("NM", "1.2.840.10008.5.1.4.1.1.20", values)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "GATED TOMO", "EMISSION"]
    ds.NumberOfFrames = views * slots
    ds.FrameIncrementPointer = [0x00540050, 0x00540060, 0x00540070, 0x00540090]
    ds.RotationVector, ds.RRIntervalVector = [1] * views * slots, [1] * views * slots
    ds.TimeSlotVector = np.repeat(np.arange(1, slots + 1), views).tolist()
    ds.AngularViewVector = list(range(1, views + 1)) * slots
    ds.PixelSpacing = [4.42, 4.42]
    rotation = Dataset()
    rotation.StartAngle, rotation.AngularStep, rotation.RotationDirection = 0.0, 90.0, "CC"
    ds.RotationInformationSequence = [rotation]
    save(ds, path)
    return values[:views].astype(float) + values[views:]


def test_gated_projections_sum_their_time_slots(tmp_path):
    expected = gated_projections(tmp_path / "gated.dcm")
    projections = read_nm_projections(tmp_path / "gated.dcm")
    np.testing.assert_allclose(projections.dicom_angles_deg, [0.0, 270.0, 180.0, 90.0])
    np.testing.assert_array_equal(projections.counts, expected[[0, 3, 2, 1]])


@NO_JPEG_LS
def test_compressed_projections_without_a_decoder_are_one_sentence(tmp_path):
    gated_projections(tmp_path / "gated.dcm")
    ds = jpeg_ls(pydicom.dcmread(tmp_path / "gated.dcm"))
    with pytest.raises(InputError, match="no decoder is installed"):
        read_nm_projections(save(ds, tmp_path / "jls.dcm"))


def single_frame_nm_series(folder: Path) -> None:
    """One NM RECON TOMO file per slice, each slice's position in its detector item."""
    for index in range(SLICES):
        ds = nm_recon(stored_values()[index:index + 1], NumberOfSlices=1, SliceVector=[1])
        ds.DetectorInformationSequence[0].ImagePositionPatient = [ORIGIN[0], ORIGIN[1], ORIGIN[2] + 4.42 * index]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        save(ds, folder / f"{SLICES - index}.dcm")


VARIANT_INPUTS = {
    "xSPECT Bq/ml mapping": lambda folder: save(nm_recon(
        RealWorldValueMappingSequence=[mapping("Bq/ml", 0.37)]), folder / "nm.dcm"),
    "reversed SliceVector": lambda folder: save(nm_recon(
        stored_values()[::-1].copy(), SliceVector=list(range(SLICES, 0, -1))), folder / "nm.dcm"),
    "single-frame NM slices": single_frame_nm_series,
}


@pytest.mark.parametrize("variant", VARIANT_INPUTS)
def test_derived_dicom_series_of_a_variant_reads_back_as_written(tmp_path, variant):
    VARIANT_INPUTS[variant](tmp_path / "input")
    image = read_volume(tmp_path / "input")
    write_derived_series(image, tmp_path / "output", tmp_path / "input", kind="denoised", model="test-model")
    back = read_volume(tmp_path / "output")
    assert same_geometry(back, image, tolerance=1e-4)
    values = image_to_array(image)
    np.testing.assert_allclose(image_to_array(back), values, atol=values.max() / 65535)  # half a 16-bit step
    assert read_dicom_tags(tmp_path / "output").get("Units") == read_dicom_tags(tmp_path / "input").get("Units")


def test_one_slice_of_a_pt_series_asks_for_its_folder(tmp_path):
    pt_slices(tmp_path / "pt", [1.0] * SLICES)
    with pytest.raises(InputError, match="give the folder"):
        read_volume(tmp_path / "pt" / "slice0.dcm")


def test_negative_slice_thickness_without_spacing_is_refused(tmp_path):
    ds = nm_recon(SliceThickness=-4.42)
    del ds.SpacingBetweenSlices
    with pytest.raises(InputError, match="negative SliceThickness"):
        read_volume(save(ds, tmp_path / "nm.dcm"))


def test_slice_thickness_stands_in_for_a_missing_spacing(tmp_path):
    ds = nm_recon(spacing=3.3)
    del ds.SpacingBetweenSlices
    assert read_volume(save(ds, tmp_path / "nm.dcm")).GetSpacing()[2] == pytest.approx(3.3)


def test_nm_without_a_reconstruction_image_type_names_its_image_type(tmp_path):
    ds = nm_recon(ImageType=["DERIVED", "SECONDARY"])
    with pytest.raises(InputError, match=r"ImageType DERIVED\\SECONDARY, without RECON TOMO"):
        read_volume(save(ds, tmp_path / "nm.dcm"))


def test_folder_of_series_folders_says_sub_folders_are_not_searched(tmp_path):
    save(nm_recon(), tmp_path / "study" / "series1" / "nm.dcm")
    with pytest.raises(InputError, match="sub-folders are not searched"):
        read_volume(tmp_path / "study")


def test_two_energy_window_series_in_one_folder_are_listed(tmp_path):
    for window, uid in (("EM", "1.2.3.4.5.1"), ("SC", "1.2.3.4.5.2")):
        save(nm_recon(SeriesInstanceUID=uid, SeriesDescription=f"SPECT {window}"), tmp_path / f"{window}.dcm")
    with pytest.raises(InputError, match="2 DICOM series; only one can be read.*SPECT EM.*SPECT SC"):
        read_volume(tmp_path)


def test_dynamic_pt_frames_at_one_position_are_refused(tmp_path):
    pt_slices(tmp_path / "frame1", [1.0] * SLICES)
    pt_slices(tmp_path / "frame2", [1.0] * SLICES)
    for path in (tmp_path / "frame2").iterdir():
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        save(ds, tmp_path / "frame1" / f"2-{path.name}")
    with pytest.raises(InputError, match="same position .dynamic or gated frames"):
        read_volume(tmp_path / "frame1")


def test_projections_with_a_broken_pixel_spacing_are_one_sentence(tmp_path):
    gated_projections(tmp_path / "gated.dcm")
    ds = pydicom.dcmread(tmp_path / "gated.dcm")
    ds.PixelSpacing = [0.0, 4.42]
    with pytest.raises(InputError, match="PixelSpacing"):
        read_nm_projections(save(ds, tmp_path / "zero.dcm"))


def test_file_without_the_preamble_is_read_by_our_reader(tmp_path):
    # older exporters write the data set alone (no "DICM" preamble) under names like IM0001: GDCM would read this
    # xSPECT file without its Bq/ml mapping, and a gated one as one tall volume
    ds = nm_recon(RealWorldValueMappingSequence=[mapping("Bq/ml", 0.37)])
    del ds.file_meta
    pydicom.dcmwrite(tmp_path / "IM0001", ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert (tmp_path / "IM0001").read_bytes()[128:132] != b"DICM"
    np.testing.assert_allclose(image_to_array(read_volume(tmp_path / "IM0001")), stored_values() * 0.37, rtol=1e-6)
    assert dicom_tags_or_empty(tmp_path / "IM0001")["Units"] == "BQML"
    gated = nm_recon(stored_values(2 * SLICES), TimeSlotVector=[1] * SLICES + [2] * SLICES,
                     SliceVector=list(range(1, SLICES + 1)) * 2)
    del gated.file_meta
    pydicom.dcmwrite(tmp_path / "IM0002", gated, implicit_vr=True, little_endian=True, enforce_file_format=False)
    with pytest.raises(InputError, match="2 gated time slots"):
        read_volume(tmp_path / "IM0002")


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_other_uncompressed_transfer_syntaxes_read_alike(tmp_path, syntax):
    ds = nm_recon(spacing=-4.42)
    ds.file_meta.TransferSyntaxUID = syntax
    image = read_volume(save(ds, tmp_path / "nm.dcm"))
    np.testing.assert_array_equal(image_to_array(image), stored_values())
    assert image.GetDirection()[8] == -1.0
