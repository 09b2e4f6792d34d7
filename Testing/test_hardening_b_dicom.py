"""Damaged DICOM attributes: every one gives one sentence naming the attribute (InputError, exit 3), never a wrong
volume or a traceback. Values are written raw, as a broken exporter would, bypassing pydicom's validation."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.tag import Tag

from SPECTDenoiseLib.dicom import read_dicom_series, read_dicom_tags, write_dicom_series
from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.suv import suv_parameters_from_dicom


def set_raw(dataset: pydicom.Dataset, keyword: str, value: bytes) -> None:
    """Store ``value`` unparsed under ``keyword`` (with its dictionary VR), replacing what was there."""
    tag = Tag(tag_for_keyword(keyword))
    if tag in dataset:
        del dataset[tag]
    dataset._dict[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, True, True)


def geometry_holder(dataset: pydicom.Dataset) -> pydicom.Dataset:
    """Where position and orientation live: the NM detector item, or the slice itself."""
    detectors = dataset.get("DetectorInformationSequence")
    return detectors[0] if detectors else dataset


def damaged_series(make_image, folder, modality: str, damage) -> None:
    """Write a small series of ``modality`` into ``folder`` and apply ``damage(dataset)`` to every file."""
    for path in write_dicom_series(make_image(integer=True), folder, modality, tags={"PatientWeight": 70}):
        dataset = pydicom.dcmread(path)
        damage(dataset)
        dataset.save_as(path)


DAMAGES = {
    "PixelSpacing NaN": (lambda d: set_raw(d, "PixelSpacing", b"NaN\\2 "), "PixelSpacing"),
    "PixelSpacing zero": (lambda d: set_raw(d, "PixelSpacing", b"0\\2 "), "PixelSpacing"),
    "PixelSpacing negative": (lambda d: set_raw(d, "PixelSpacing", b"-2\\2"), "PixelSpacing"),
    "PixelSpacing text": (lambda d: set_raw(d, "PixelSpacing", b"ab\\2"), "PixelSpacing"),
    "PixelSpacing one value": (lambda d: set_raw(d, "PixelSpacing", b"2 "), "PixelSpacing"),
    "PixelSpacing subnormal": (lambda d: set_raw(d, "PixelSpacing", b"1e-320\\1e-320"), "PixelSpacing"),
    "position NaN": (lambda d: set_raw(geometry_holder(d), "ImagePositionPatient", b"nan\\0\\0 "),
                     "ImagePositionPatient"),
    "position text": (lambda d: set_raw(geometry_holder(d), "ImagePositionPatient", b"a\\0\\0 "),
                      "ImagePositionPatient"),
    "orientation text": (lambda d: set_raw(geometry_holder(d), "ImageOrientationPatient", b"a\\0\\0\\0\\1\\0 "),
                         "ImageOrientationPatient"),
    "RescaleSlope text": (lambda d: set_raw(d, "RescaleSlope", b"abc "), "RescaleSlope"),
    "RescaleSlope NaN": (lambda d: set_raw(d, "RescaleSlope", b"NaN "), "RescaleSlope"),
    "RescaleIntercept infinite": (lambda d: set_raw(d, "RescaleIntercept", b"inf "), "RescaleIntercept"),
    "no PixelData": (lambda d: d.__delattr__("PixelData"), "no pixel data"),
    "short PixelData": (lambda d: setattr(d, "PixelData", d.PixelData[:10]), "do not match"),
    "Rows of a wrong length": (lambda d: set_raw(d, "Rows", b"\x00"), "(0028,0010)"),
}
NM_DAMAGES = {
    "NumberOfFrames text": (lambda d: set_raw(d, "NumberOfFrames", b"many"), "NumberOfFrames"),
    "NumberOfFrames zero": (lambda d: set_raw(d, "NumberOfFrames", b"0 "), "NumberOfFrames"),
    "NumberOfFrames negative": (lambda d: set_raw(d, "NumberOfFrames", b"-3"), "NumberOfFrames"),
    "NumberOfFrames too many": (lambda d: set_raw(d, "NumberOfFrames", b"99"), "do not match"),
    "NumberOfFrames infinite": (lambda d: set_raw(d, "NumberOfFrames", b"inf "), "(0028,0008)"),
    "SpacingBetweenSlices NaN": (lambda d: set_raw(d, "SpacingBetweenSlices", b"nan "), "SpacingBetweenSlices"),
    "SpacingBetweenSlices text": (lambda d: set_raw(d, "SpacingBetweenSlices", b"x "), "SpacingBetweenSlices"),
    "SpacingBetweenSlices huge": (lambda d: set_raw(d, "SpacingBetweenSlices", b"1e300 "), "slice spacing"),
    "empty DetectorInformationSequence": (lambda d: setattr(d, "DetectorInformationSequence", []),
                                          "ImageOrientationPatient"),
}
CASES = ([pytest.param(modality, *damage, id=f"{modality} {name}") for name, damage in DAMAGES.items()
          for modality in ("NM", "PT")]
         + [pytest.param("NM", *damage, id=f"NM {name}") for name, damage in NM_DAMAGES.items()])


@pytest.mark.parametrize(("modality", "damage", "named"), CASES)
def test_damaged_attribute_is_one_sentence_naming_it(make_image, tmp_path, modality, damage, named):
    damaged_series(make_image, tmp_path, modality, damage)
    with pytest.raises(InputError, match=named.replace("(", r"\(").replace(")", r"\)")) as caught:
        read_dicom_series(tmp_path)
    assert "\n" not in str(caught.value) and str(caught.value).endswith(".")


def test_empty_sequences_are_read_as_absent(make_image, tmp_path):
    damaged_series(make_image, tmp_path, "PT",
                   lambda d: setattr(d, "RadiopharmaceuticalInformationSequence", []))
    assert "RadionuclideTotalDose" not in read_dicom_tags(tmp_path)
    assert np.isfinite(read_dicom_series(tmp_path).GetSpacing()).all()


@pytest.mark.parametrize("weight", [b"heavy", b"nan ", b"-70 "])
def test_unusable_patient_weight_is_named_for_suv(make_image, tmp_path, weight):
    damaged_series(make_image, tmp_path, "NM", lambda d: set_raw(d, "PatientWeight", weight))
    with pytest.raises(InputError, match="PatientWeight.*--weight"):
        suv_parameters_from_dicom(read_dicom_tags(tmp_path))


def test_info_on_a_damaged_series_exits_3_with_one_line(run_cli, make_image, tmp_path):
    damaged_series(make_image, tmp_path / "nm", "NM", lambda d: set_raw(d, "PixelSpacing", b"NaN\\2 "))
    result = run_cli("info", tmp_path / "nm")
    assert result.returncode == 3
    assert result.stderr.startswith("spectdenoise: error: ") and "PixelSpacing" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_pydicom_warnings_about_tolerated_values_are_not_printed(run_cli, make_image, tmp_path):
    damaged_series(make_image, tmp_path / "pt", "PT", lambda d: set_raw(d, "NumberOfFrames", b""))
    result = run_cli("info", tmp_path / "pt")
    assert result.returncode == 0 and result.stderr == ""
