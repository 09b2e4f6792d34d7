"""Standardised uptake value (SUVbw): the factor that turns voxel values into SUV, with decay correction.

    SUV = C · w / A_ref,   C = activity concentration [Bq/ml] = value · k (k = 1 for BQML images, the
    calibration factor in Bq/ml per count for CNTS images), w = body weight [g] (1 g ≈ 1 ml of tissue),
    A_ref = injected activity [Bq] decayed to the time the image values refer to:
        DecayCorrection ADMIN  → values refer to the injection time: A_ref = A_inj
        DecayCorrection START  → values refer to the scan start:     A_ref = A_inj · 2^(−(t_scan − t_inj) / T½)
        DecayCorrection NONE   → values are the activity during the scan, taken at its start (as START).
A missing DecayCorrection tag (common for NM) is read as NONE. The scan time is the earlier of
SeriesDate/Time and AcquisitionDate/Time (a series re-created later keeps the true acquisition time).
Times are the scanner's local time (a DICOM time-zone offset is ignored); times given with a zone are compared
with each other, never with local ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
from dataclasses import dataclass
from typing import Any

from .errors import InputError

UNITS = ("BQML", "CNTS")
DECAY_CORRECTIONS = ("START", "ADMIN", "NONE")
MAX_HALF_LIVES = 30  # a scan later than this after the injection leaves < 1e-9 of the activity: the times are wrong


@dataclass(frozen=True)
class SUVParameters:
    """What the SUVbw factor needs; ``None`` means unknown.

    Attributes
    ----------
    weight_kg : patient weight [kg].
    injected_dose_mbq : injected activity at ``injection_time`` [MBq].
    injection_time, scan_time : injection and scan start (naive datetimes in the scanner's local time, or both
        with a time zone).
    half_life_s : radionuclide half-life [s].
    units : voxel units, ``"BQML"`` (activity concentration) or ``"CNTS"`` (counts, needs the calibration).
    calibration_bq_per_ml_per_count : Bq/ml per count, for count images.
    decay_correction : ``"START"``, ``"ADMIN"`` or ``"NONE"`` (see the module docstring).
    """

    weight_kg: float | None = None
    injected_dose_mbq: float | None = None
    injection_time: datetime.datetime | None = None
    scan_time: datetime.datetime | None = None
    half_life_s: float | None = None
    units: str | None = None
    calibration_bq_per_ml_per_count: float | None = None
    decay_correction: str | None = None

    def merged(self, overrides: SUVParameters) -> SUVParameters:
        """Return these parameters with every known (non-``None``) value of ``overrides`` taking precedence."""
        known = {f.name: getattr(overrides, f.name) for f in dataclasses.fields(overrides)}
        return dataclasses.replace(self, **{k: v for k, v in known.items() if v is not None})


def parse_dicom_datetime(date: str | None, time: str | None) -> datetime.datetime | None:
    """Combine a DICOM DA (``YYYYMMDD``) and TM (``HHMMSS.FFFFFF``, parts optional) into a datetime, or None."""
    if not (isinstance(date, str) and isinstance(time, str) and date and time):
        return None
    time = time.strip()
    whole, _, fraction = time.partition(".")
    whole = whole.ljust(6, "0")
    if fraction and not fraction.isdigit():
        return None
    try:
        moment = datetime.datetime.strptime(date.strip() + whole[:6], "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return moment + datetime.timedelta(seconds=float("0." + fraction) if fraction else 0.0)


def _parse_dicom_dt(value: str | None) -> datetime.datetime | None:
    """Parse a DICOM DT (``YYYYMMDDHHMMSS.FFFFFF``, an optional ``&ZZXX`` offset ignored), or None."""
    if not isinstance(value, str) or len(value.strip()) < 8:
        return None
    text = value.strip().split("+")[0].split("-")[0]
    return parse_dicom_datetime(text[:8], text[8:] or "000000")


def suv_parameters_from_dicom(tags: dict[str, Any], overrides: SUVParameters | None = None) -> SUVParameters:
    """Build :class:`SUVParameters` from the tags of :func:`SPECTDenoiseLib.dicom.read_dicom_tags`.

    RadionuclideTotalDose [Bq] becomes MBq; the injection time is RadiopharmaceuticalStartDateTime or, without
    it, RadiopharmaceuticalStartTime on the series date (one day earlier if that would follow the scan). Known
    values of ``overrides`` (the user's) take precedence, and the tags they replace are not read.

    Raises
    ------
    InputError
        If a numeric tag that is read holds text, NaN, an infinity or a negative value (0 means unknown).
    """
    given = overrides or SUVParameters()

    def number(keyword: str, field: str, option: str) -> float | None:
        value = tags.get(keyword)
        if getattr(given, field) is not None or value in (None, "", 0):
            return None
        try:
            parsed = float(value)
        except (TypeError, ValueError):
            parsed = math.nan
        if not (math.isfinite(parsed) and parsed > 0):
            raise InputError(f"The DICOM tag {keyword} holds {str(value)[:40]!r}, not a positive number; correct it "
                             f"or give the value with {option}.")
        return parsed

    series = parse_dicom_datetime(tags.get("SeriesDate"), tags.get("SeriesTime"))
    acquisition = _parse_dicom_dt(tags.get("AcquisitionDateTime")) or parse_dicom_datetime(
        tags.get("AcquisitionDate") or tags.get("SeriesDate"), tags.get("AcquisitionTime")
    )
    known_times = [t for t in (series, acquisition) if t is not None]
    scan = min(known_times) if known_times else None
    injection = _parse_dicom_dt(tags.get("RadiopharmaceuticalStartDateTime"))
    if injection is None and scan is not None:
        injection = parse_dicom_datetime(scan.strftime("%Y%m%d"), tags.get("RadiopharmaceuticalStartTime"))
        if injection is not None and injection > scan:
            injection -= datetime.timedelta(days=1)
    dose = number("RadionuclideTotalDose", "injected_dose_mbq", "--dose")
    units = tags.get("Units")
    correction = tags.get("DecayCorrection")
    return SUVParameters(
        weight_kg=number("PatientWeight", "weight_kg", "--weight"),
        injected_dose_mbq=dose / 1e6 if dose else None,
        injection_time=injection,
        scan_time=scan,
        half_life_s=number("RadionuclideHalfLife", "half_life_s", "--half-life"),
        units=str(units).upper() if units else None,
        decay_correction=str(correction).upper() if correction else None,
    ).merged(given)


def _require(value: Any, sentence: str) -> Any:
    if value is None:
        raise InputError(sentence)
    return value


def _positive(value: float, what: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"SUV needs a positive {what} (got {value}).")
    return value


def suv_factor(params: SUVParameters) -> float:
    """Return the factor (SUVbw per voxel unit) that turns voxel values into SUVbw: ``suv = value · factor``.

    Raises
    ------
    InputError
        Naming the first missing or invalid value (weight, dose, units, calibration, times, half-life).
    """
    weight = _positive(_require(params.weight_kg, "SUV needs the patient weight; give it in kg (--weight)."),
                       "patient weight in kg")
    dose = _positive(_require(params.injected_dose_mbq, "SUV needs the injected activity; give it in MBq (--dose)."),
                     "injected activity in MBq")
    units = _require(params.units, "SUV needs the voxel units (BQML or CNTS, --units); the image does not state them.")
    if units not in UNITS:
        raise InputError(f"Voxel units '{units}' cannot be converted to SUV; only BQML and CNTS can.")
    calibration = 1.0
    if units == "CNTS":
        calibration = _positive(_require(
            params.calibration_bq_per_ml_per_count,
            "SUV of a count image needs the camera calibration factor in Bq/ml per count (--calibration).",
        ), "calibration factor in Bq/ml per count")
    correction = params.decay_correction or "NONE"
    if correction not in DECAY_CORRECTIONS:
        raise InputError(f"DecayCorrection '{correction}' is unknown; it must be one of {', '.join(DECAY_CORRECTIONS)}.")
    decay = 1.0
    if correction != "ADMIN":
        injection = _require(params.injection_time, "SUV needs the injection time (--injection-time).")
        scan = _require(params.scan_time, "SUV needs the scan start time (--scan-time).")
        half_life = _positive(_require(params.half_life_s, "SUV needs the radionuclide half-life in seconds "
                                       "(--half-life)."), "radionuclide half-life in seconds")
        if (injection.tzinfo is None) != (scan.tzinfo is None):
            raise InputError(f"Only one of the injection time {injection} and the scan start {scan} has a time "
                             "zone; give both with a zone or both in the scanner's local time.")
        elapsed = (scan - injection).total_seconds()
        if elapsed < 0:
            raise InputError(f"The injection time {injection} is after the scan start {scan}; check both times.")
        if elapsed > MAX_HALF_LIVES * half_life:
            raise InputError(f"The scan starts {elapsed / half_life:.3g} half-lives ({half_life:g} s) after the "
                             f"injection, more than {MAX_HALF_LIVES}; check the injection and scan times and the "
                             "half-life.")
        decay = math.pow(2.0, -elapsed / half_life)
    factor = weight * 1000.0 * calibration / (dose * 1e6 * decay)
    if not (math.isfinite(factor) and factor > 0):
        raise InputError(f"The SUV factor of {weight:g} kg, {dose:g} MBq and calibration {calibration:g} is not a "
                         "usable number; check these values.")
    return factor


def suv_from_tags(tags: dict[str, Any], overrides: SUVParameters) -> tuple[SUVParameters, float | None, str | None]:
    """The SUV parameters of DICOM ``tags`` completed by the user's ``overrides``, with the SUV factor, or with
    None and the sentence saying why the factor cannot be computed (a missing value or an unusable tag)."""
    try:
        params = suv_parameters_from_dicom(tags, overrides)
    except InputError as error:
        return overrides, None, str(error)
    try:
        return params, suv_factor(params), None
    except InputError as error:
        return params, None, str(error)


def _datetime_argument(text: str) -> datetime.datetime:
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date and time like 2024-05-17T09:30") from None


def _positive_argument(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive number")
    return value


def add_suv_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that override DICOM SUV tags (``--weight``, ``--dose``, ...) to a sub-command parser."""
    group = parser.add_argument_group("SUV (override or complete the DICOM tags)")
    group.add_argument("--weight", type=_positive_argument, metavar="KG", help="patient weight in kg")
    group.add_argument("--dose", type=_positive_argument, metavar="MBQ", help="injected activity in MBq at the injection time")
    group.add_argument("--injection-time", type=_datetime_argument, metavar="ISO", help="e.g. 2024-05-17T09:30")
    group.add_argument("--scan-time", type=_datetime_argument, metavar="ISO", help="scan start, e.g. 2024-05-17T13:05")
    group.add_argument("--half-life", type=_positive_argument, metavar="S", help="radionuclide half-life in seconds")
    group.add_argument("--units", choices=UNITS, type=str.upper, help="voxel units")
    group.add_argument("--calibration", type=_positive_argument, metavar="BQML_PER_COUNT", help="Bq/ml per count (CNTS images)")
    group.add_argument("--decay-correction", choices=DECAY_CORRECTIONS, type=str.upper,
                       help="time the voxel values are decay-corrected to")


def suv_parameters_from_arguments(args: argparse.Namespace) -> SUVParameters:
    """The :class:`SUVParameters` given by the options of :func:`add_suv_arguments` (unset ones are None)."""
    return SUVParameters(
        weight_kg=args.weight, injected_dose_mbq=args.dose, injection_time=args.injection_time,
        scan_time=args.scan_time, half_life_s=args.half_life, units=args.units,
        calibration_bq_per_ml_per_count=args.calibration, decay_correction=args.decay_correction,
    )
