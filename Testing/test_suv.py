"""SUVbw factor: hand-computed decay case, decay-correction modes, count images, DICOM tags, missing values."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from SPECTDenoiseLib.dicom import read_dicom_tags, write_dicom_series
from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.suv import SUVParameters, suv_factor, suv_parameters_from_dicom

INJECTION = datetime.datetime(2024, 5, 17, 9, 0, 0)
TC99M_HALF_LIFE_S = 21624.0


def _tc99m_case(**changes) -> SUVParameters:
    """75 kg, 370 MBq Tc-99m injected at 09:00, scan at 10:30 (5400 s later), Bq/ml values decay-corrected to START."""
    case = SUVParameters(
        weight_kg=75.0, injected_dose_mbq=370.0, injection_time=INJECTION,
        scan_time=INJECTION + datetime.timedelta(seconds=5400), half_life_s=TC99M_HALF_LIFE_S, units="BQML",
        decay_correction="START",
    )
    return dataclasses.replace(case, **changes)


def test_factor_matches_the_hand_computed_decay_case():
    # A_scan = 370e6 Bq · 2^(−5400 / 21624) = 370e6 · 0.841058 = 3.11192e8 Bq; factor = 75000 g / 3.11192e8 Bq
    assert suv_factor(_tc99m_case()) == pytest.approx(2.410091e-4, rel=1e-6)


def test_uncorrected_values_decay_like_start():
    assert suv_factor(_tc99m_case(decay_correction="NONE")) == suv_factor(_tc99m_case())


def test_values_corrected_to_injection_need_no_decay():
    assert suv_factor(_tc99m_case(decay_correction="ADMIN")) == pytest.approx(75000 / 370e6)


def test_count_images_are_scaled_by_the_calibration():
    counts = _tc99m_case(units="CNTS", calibration_bq_per_ml_per_count=12.5)
    assert suv_factor(counts) == pytest.approx(12.5 * suv_factor(_tc99m_case()))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"weight_kg": None}, "weight"),
        ({"injected_dose_mbq": None}, "injected activity"),
        ({"units": None}, "units"),
        ({"units": "CNTS"}, "calibration"),
        ({"half_life_s": None}, "half-life"),
        ({"injection_time": None}, "injection time"),
        ({"units": "PROPCPS"}, "PROPCPS"),
    ],
)
def test_missing_or_unusable_value_is_named(change, named):
    with pytest.raises(InputError, match=named):
        suv_factor(_tc99m_case(**change))


def test_injection_after_scan_is_refused():
    with pytest.raises(InputError, match="after the scan"):
        suv_factor(_tc99m_case(injection_time=INJECTION + datetime.timedelta(hours=3)))


def test_user_values_override_tags():
    merged = _tc99m_case().merged(SUVParameters(weight_kg=80.0, decay_correction="ADMIN"))
    assert (merged.weight_kg, merged.decay_correction, merged.injected_dose_mbq) == (80.0, "ADMIN", 370.0)


def test_parameters_from_a_written_dicom_series_give_the_hand_computed_factor(make_image, tmp_path):
    tags = {
        "PatientWeight": 75.0, "Units": "BQML", "DecayCorrection": "START",
        "SeriesDate": "20240517", "SeriesTime": "103000", "AcquisitionDate": "20240517", "AcquisitionTime": "103000",
        "RadiopharmaceuticalInformationSequence": [
            {"RadiopharmaceuticalStartTime": "090000", "RadionuclideTotalDose": 370e6,
             "RadionuclideHalfLife": TC99M_HALF_LIFE_S}
        ],
    }
    write_dicom_series(make_image(integer=True), tmp_path, "NM", tags=tags)
    params = suv_parameters_from_dicom(read_dicom_tags(tmp_path))
    assert params == _tc99m_case()
    assert suv_factor(params) == pytest.approx(2.410091e-4, rel=1e-6)


def test_injection_before_midnight_is_taken_from_the_previous_day():
    tags = {"SeriesDate": "20240518", "SeriesTime": "003000", "RadiopharmaceuticalStartTime": "233000"}
    params = suv_parameters_from_dicom(tags)
    assert params.scan_time - params.injection_time == datetime.timedelta(hours=1)


def test_earlier_acquisition_time_is_the_scan_start():
    tags = {"SeriesDate": "20240517", "SeriesTime": "120000", "AcquisitionDateTime": "20240517103000.5"}
    assert suv_parameters_from_dicom(tags).scan_time == datetime.datetime(2024, 5, 17, 10, 30, 0, 500000)
