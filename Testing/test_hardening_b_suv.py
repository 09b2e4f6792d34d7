"""SUV on hostile values: decay underflow, time zones, non-finite numbers from options or tags, and strict JSON."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.records import strict_json
from SPECTDenoiseLib.suv import SUVParameters, suv_factor, suv_from_tags, suv_parameters_from_dicom

INJECTION = datetime.datetime(2024, 5, 17, 9, 0, 0)
CASE = SUVParameters(weight_kg=75.0, injected_dose_mbq=370.0, injection_time=INJECTION,
                     scan_time=INJECTION + datetime.timedelta(seconds=5400), half_life_s=21624.0, units="BQML",
                     decay_correction="START")
HAND_COMPUTED = 2.410091e-4  # test_suv.py: 75 kg, 370 MBq Tc-99m, scan 5400 s after the injection


def reject_constant(name: str) -> None:
    raise AssertionError(f"invalid JSON constant {name}")


def test_scan_many_half_lives_later_is_refused_not_divided_by_zero():
    years_later = dataclasses.replace(CASE, scan_time=INJECTION + datetime.timedelta(days=3650))
    with pytest.raises(InputError, match="half-lives"):
        suv_factor(years_later)


def test_a_zone_on_only_one_time_is_refused():
    zoned = dataclasses.replace(CASE, injection_time=INJECTION.replace(tzinfo=datetime.timezone.utc))
    with pytest.raises(InputError, match="time zone"):
        suv_factor(zoned)


def test_times_in_two_zones_are_compared_in_absolute_time():
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    zoned = dataclasses.replace(CASE, injection_time=INJECTION.replace(tzinfo=plus_two),  # 07:00 UTC
                                scan_time=datetime.datetime(2024, 5, 17, 8, 30, tzinfo=datetime.timezone.utc))
    assert suv_factor(zoned) == pytest.approx(HAND_COMPUTED, rel=1e-6)


@pytest.mark.parametrize("field", ["weight_kg", "injected_dose_mbq", "half_life_s", "calibration_bq_per_ml_per_count"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_non_finite_or_negative_numbers_are_refused(field, value):
    case = dataclasses.replace(CASE, **{"units": "CNTS", "calibration_bq_per_ml_per_count": 2.0, field: value})
    with pytest.raises(InputError, match="positive"):
        suv_factor(case)


def test_a_factor_that_overflows_is_refused():
    with pytest.raises(InputError, match="not a usable number"):
        suv_factor(dataclasses.replace(CASE, injected_dose_mbq=1e-320))


@pytest.mark.parametrize("option", ["--weight", "--dose", "--half-life", "--calibration"])
@pytest.mark.parametrize("value", ["nan", "inf", "-70", "0"])
def test_non_finite_or_non_positive_option_is_a_usage_error(run_cli, option, value):
    result = run_cli("info", "Resources/Samples/iec_low10.nrrd", option, value)
    assert result.returncode == 2
    assert result.stderr.startswith("spectdenoise: error:") and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("tags", "named"), [
    ({"PatientWeight": "heavy"}, "PatientWeight"),
    ({"PatientWeight": math.nan}, "PatientWeight"),
    ({"RadionuclideTotalDose": -5.0}, "RadionuclideTotalDose"),
    ({"RadionuclideHalfLife": math.inf}, "RadionuclideHalfLife"),
])
def test_unusable_tag_is_named_unless_the_user_gives_the_value(tags, named):
    with pytest.raises(InputError, match=named):
        suv_parameters_from_dicom(tags)
    given = SUVParameters(weight_kg=70.0, injected_dose_mbq=300.0, half_life_s=21624.0)
    assert suv_parameters_from_dicom(tags, given) == given
    _, factor, reason = suv_from_tags(tags, SUVParameters())
    assert factor is None and named in reason


@pytest.mark.parametrize("time", ["103000.abc", "10:30", "1", "zz"])
def test_malformed_times_are_unknown(time):
    assert suv_parameters_from_dicom({"SeriesDate": "20240517", "SeriesTime": time}).scan_time in (
        None, datetime.datetime(2024, 5, 17, 1, 0), datetime.datetime(2024, 5, 17, 10, 0))


def test_strict_json_writes_null_for_nan_and_infinities():
    text = strict_json({"cov": math.nan, "psnr": [math.inf, -math.inf, 1.5], "nested": {"x": np.float64("nan")}})
    assert json.loads(text, parse_constant=reject_constant) == {"cov": None, "psnr": [None, None, 1.5],
                                                                 "nested": {"x": None}}


def test_metrics_json_has_no_nan_for_a_region_with_zero_mean(run_cli, tmp_path):
    reference = np.zeros((12, 12, 12), np.float32)
    reference[2:10, 2:10, 2:10] = 10.0
    image = reference.copy()
    labels = np.zeros_like(reference)
    labels[4:6, 4:6, 4:6] = 1
    image[4:6, 4:6, 4:6] = 0.0  # CoV of label 1 in the image is 0 / 0
    paths = {}
    for name, array in (("image", image), ("reference", reference), ("labels", labels)):
        paths[name] = tmp_path / f"{name}.nrrd"
        sitk.WriteImage(sitk.GetImageFromArray(array), str(paths[name]))
    result = run_cli("metrics", paths["image"], "--reference", paths["reference"], "--labels", paths["labels"],
                     "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout, parse_constant=reject_constant)
    assert report["labels"][0]["image"]["cov"] is None


def test_info_json_has_no_nan_for_a_nan_weight_tag(run_cli, make_image, tmp_path):
    from SPECTDenoiseLib.dicom import write_dicom_series

    write_dicom_series(make_image(integer=True), tmp_path / "nm", "NM", tags={"PatientWeight": "NaN"})
    result = run_cli("info", tmp_path / "nm", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout, parse_constant=reject_constant)
    assert report["dicom"]["PatientWeight"] is None and "PatientWeight" in report["suv"]["missing"]


@pytest.mark.parametrize(("times", "sentence"), [
    (["--injection-time", "2024-05-17T09:00+02:00", "--scan-time", "2024-05-17T10:30"], "time zone"),
    (["--injection-time", "1900-01-01T09:00", "--scan-time", "2024-05-17T10:30"], "half-lives"),
])
def test_info_explains_unusable_times_instead_of_failing(run_cli, times, sentence):
    result = run_cli("info", "Resources/Samples/iec_low10.nrrd", "--weight", "70", "--dose", "300", "--units", "BQML",
                     "--half-life", "21624", *times)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "SUV factor:      not computable: " in result.stdout and sentence in result.stdout
