"""Property-based fuzzing (hypothesis) of DICOM tag fields: any value a broken exporter may write into the
geometry, rescale, frame, pixel-format and SUV attributes of a real NM or PT series (or an empty sequence) gives
either a volume with finite, positive geometry or one InputError sentence, never another exception; SUV from
arbitrary tag values gives a finite positive factor or one sentence."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hardening_b_dicom import geometry_holder, set_raw

from SPECTDenoiseLib.dicom import read_dicom_series, read_dicom_tags, write_dicom_series
from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.suv import SUVParameters, suv_factor, suv_from_tags, suv_parameters_from_dicom

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NUMBER_WORDS = ["nan", "NaN", "inf", "-inf", "1e400", "-0", "0", "1", "-1", "2.5", "1e-320", "+3", " 4 ", "", "abc"]
numeric_text = st.lists(st.sampled_from(NUMBER_WORDS) | st.text("0123456789.-+eE nNaIif", max_size=8),
                        min_size=0, max_size=7).map("\\".join)
raw_values = numeric_text.map(str.encode) | st.binary(max_size=12)
FIELDS = ["PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "RescaleSlope", "RescaleIntercept",
          "NumberOfFrames", "SpacingBetweenSlices", "SliceThickness", "Rows", "Columns", "BitsAllocated",
          "PixelRepresentation", "SamplesPerPixel", "PatientWeight", "Units", "SeriesDate", "SeriesTime",
          "AcquisitionDateTime", "DecayCorrection"]
SEQUENCES = ["DetectorInformationSequence", "RadiopharmaceuticalInformationSequence",
             "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"]
damages = st.lists(st.tuples(st.sampled_from(FIELDS), raw_values) | st.sampled_from(SEQUENCES), min_size=1,
                   max_size=4)
SUV_TAGS = {"PatientWeight": 75.0, "Units": "BQML", "DecayCorrection": "START", "SeriesDate": "20240517",
            "SeriesTime": "103000", "RadiopharmaceuticalInformationSequence": [
                {"RadiopharmaceuticalStartTime": "090000", "RadionuclideTotalDose": 370e6,
                 "RadionuclideHalfLife": 21624.0}]}


@pytest.fixture(scope="module", params=["NM", "PT"])
def series(request, tmp_path_factory) -> dict[str, bytes]:
    """The files (name → bytes) of a small integer-valued series of the given modality with SUV tags."""
    values = np.random.default_rng(0).integers(0, 1000, (4, 5, 6)).astype(np.float32)
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(values)
    image.SetSpacing((2.0, 2.5, 3.0))
    folder = tmp_path_factory.mktemp(request.param)
    return {path.name: path.read_bytes() for path in write_dicom_series(image, folder, request.param, SUV_TAGS)}


def _damaged_copy(series: dict[str, bytes], damage: list, folder: Path) -> None:
    for name, data in series.items():
        (folder / name).write_bytes(data)
        dataset = pydicom.dcmread(folder / name)
        for item in damage:
            if isinstance(item, str):
                setattr(dataset, item, [])
            else:
                keyword, value = item
                holder = geometry_holder(dataset) if keyword.startswith("Image") else dataset
                set_raw(holder, keyword, value + b" " * (len(value) % 2))
        dataset.save_as(folder / name)


def _one_sentence(error: InputError) -> bool:
    text = str(error)
    return bool(text) and "\n" not in text and text.rstrip().endswith((".", ")"))


@FUZZ
@given(damage=damages)
def test_damaged_tags_give_a_sound_volume_or_one_sentence(series, damage):
    with tempfile.TemporaryDirectory() as folder:
        try:
            _damaged_copy(series, damage, Path(folder))
        except (ValueError, TypeError, OverflowError, pydicom.errors.BytesLengthException):
            return  # pydicom itself refuses to write this value: no file a reader could meet
        try:
            image = read_dicom_series(folder)
        except InputError as error:
            assert _one_sentence(error), str(error)
        else:
            assert all(math.isfinite(v) and v > 0 for v in image.GetSpacing())
            assert all(math.isfinite(v) for v in image.GetOrigin() + image.GetDirection())
        try:
            tags = read_dicom_tags(folder)
        except InputError as error:
            assert _one_sentence(error), str(error)
            return
        _, factor, reason = suv_from_tags(tags, SUVParameters())
        assert (factor is not None and math.isfinite(factor) and factor > 0) or (factor is None and reason)


tag_values = (st.none() | st.floats() | st.integers(-(2**70), 2**70) | st.text(max_size=20) | numeric_text
              | st.lists(st.text(max_size=8), max_size=3))
tag_dicts = st.dictionaries(st.sampled_from(["PatientWeight", "RadionuclideTotalDose", "RadionuclideHalfLife",
                                             "Units", "DecayCorrection", "SeriesDate", "SeriesTime",
                                             "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime",
                                             "RadiopharmaceuticalStartTime", "RadiopharmaceuticalStartDateTime"]),
                            tag_values, max_size=12)


@settings(max_examples=300, deadline=None)
@given(tags=tag_dicts)
def test_suv_from_arbitrary_tag_values_is_a_finite_factor_or_one_sentence(tags):
    try:
        params = suv_parameters_from_dicom(tags)
        factor = suv_factor(params)
    except InputError as error:
        assert _one_sentence(error), str(error)
    else:
        assert math.isfinite(factor) and factor > 0
