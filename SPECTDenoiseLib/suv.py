"""Standardised uptake value (SUVbw): the factor that turns voxel values into SUV, with decay correction.

    SUV = C · w / A_ref,   C = activity concentration [Bq/ml] = value · k (k = 1 for BQML images, the
    calibration factor in Bq/ml per count for CNTS images), w = body weight [g] (1 g ≈ 1 ml of tissue),
    A_ref = injected activity [Bq] decayed to the time the image values refer to:
        DecayCorrection ADMIN  → values refer to the injection time: A_ref = A_inj
        DecayCorrection START  → values refer to the scan start:     A_ref = A_inj · 2^(−(t_scan − t_inj) / T½)
        DecayCorrection NONE   → values are the activity during the scan, taken at its start (as START).
A missing DecayCorrection tag (common for NM) is read as NONE. The scan time is the earlier of
SeriesDate/Time and AcquisitionDate/Time (a series re-created later keeps the true acquisition time).
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


@dataclass(frozen=True)
class SUVParameters:
    """What the SUVbw factor needs; ``None`` means unknown.

    Attributes
    ----------
    weight_kg : patient weight [kg].
    injected_dose_mbq : injected activity at ``injection_time`` [MBq].
    injection_time, scan_time : injection and scan start (naive datetimes in the scanner's local time).
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
    if not date or not time:
        return None
    time = time.strip()
    whole, _, fraction = time.partition(".")
    whole = whole.ljust(6, "0")
    try:
        moment = datetime.datetime.strptime(date.strip() + whole[:6], "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return moment + datetime.timedelta(seconds=float("0." + fraction) if fraction else 0.0)


def _parse_dicom_dt(value: str | None) -> datetime.datetime | None:
    """Parse a DICOM DT (``YYYYMMDDHHMMSS.FFFFFF``, an optional ``&ZZXX`` offset ignored), or None."""
    if not value or len(value.strip()) < 8:
        return None
    text = value.strip().split("+")[0].split("-")[0]
    return parse_dicom_datetime(text[:8], text[8:] or "000000")


def suv_parameters_from_dicom(tags: dict[str, Any]) -> SUVParameters:
    """Build :class:`SUVParameters` from the tags of :func:`SPECTDenoiseLib.dicom.read_dicom_tags`.

    RadionuclideTotalDose [Bq] becomes MBq; the injection time is RadiopharmaceuticalStartDateTime or, without
    it, RadiopharmaceuticalStartTime on the series date (one day earlier if that would follow the scan).
    """
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
    dose = tags.get("RadionuclideTotalDose")
    units = tags.get("Units")
    correction = tags.get("DecayCorrection")
    return SUVParameters(
        weight_kg=float(tags["PatientWeight"]) if tags.get("PatientWeight") else None,
        injected_dose_mbq=float(dose) / 1e6 if dose else None,
        injection_time=injection,
        scan_time=scan,
        half_life_s=float(tags["RadionuclideHalfLife"]) if tags.get("RadionuclideHalfLife") else None,
        units=str(units).upper() if units else None,
        decay_correction=str(correction).upper() if correction else None,
    )


def _require(value: Any, sentence: str) -> Any:
    if value is None:
        raise InputError(sentence)
    return value


def suv_factor(params: SUVParameters) -> float:
    """Return the factor (SUVbw per voxel unit) that turns voxel values into SUVbw: ``suv = value · factor``.

    Raises
    ------
    InputError
        Naming the first missing or invalid value (weight, dose, units, calibration, times, half-life).
    """
    weight = _require(params.weight_kg, "SUV needs the patient weight; give it in kg (--weight).")
    dose = _require(params.injected_dose_mbq, "SUV needs the injected activity; give it in MBq (--dose).")
    if weight <= 0 or dose <= 0:
        raise InputError(f"SUV needs a positive weight and injected activity (got {weight} kg, {dose} MBq).")
    units = _require(params.units, "SUV needs the voxel units (BQML or CNTS, --units); the image does not state them.")
    if units not in UNITS:
        raise InputError(f"Voxel units '{units}' cannot be converted to SUV; only BQML and CNTS can.")
    calibration = 1.0
    if units == "CNTS":
        calibration = _require(
            params.calibration_bq_per_ml_per_count,
            "SUV of a count image needs the camera calibration factor in Bq/ml per count (--calibration).",
        )
    correction = params.decay_correction or "NONE"
    if correction not in DECAY_CORRECTIONS:
        raise InputError(f"DecayCorrection '{correction}' is unknown; it must be one of {', '.join(DECAY_CORRECTIONS)}.")
    decay = 1.0
    if correction != "ADMIN":
        injection = _require(params.injection_time, "SUV needs the injection time (--injection-time).")
        scan = _require(params.scan_time, "SUV needs the scan start time (--scan-time).")
        half_life = _require(params.half_life_s, "SUV needs the radionuclide half-life in seconds (--half-life).")
        elapsed = (scan - injection).total_seconds()
        if half_life <= 0:
            raise InputError(f"The radionuclide half-life must be positive (got {half_life} s).")
        if elapsed < 0:
            raise InputError(f"The injection time {injection} is after the scan start {scan}; check both times.")
        decay = math.pow(2.0, -elapsed / half_life)
    return weight * 1000.0 * calibration / (dose * 1e6 * decay)


def try_suv_factor(params: SUVParameters) -> tuple[float | None, str | None]:
    """(factor, None) when SUV can be computed, else (None, the sentence naming what is missing)."""
    try:
        return suv_factor(params), None
    except InputError as error:
        return None, str(error)


def _datetime_argument(text: str) -> datetime.datetime:
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date and time like 2024-05-17T09:30") from None


def add_suv_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that override DICOM SUV tags (``--weight``, ``--dose``, ...) to a sub-command parser."""
    group = parser.add_argument_group("SUV (override or complete the DICOM tags)")
    group.add_argument("--weight", type=float, metavar="KG", help="patient weight in kg")
    group.add_argument("--dose", type=float, metavar="MBQ", help="injected activity in MBq at the injection time")
    group.add_argument("--injection-time", type=_datetime_argument, metavar="ISO", help="e.g. 2024-05-17T09:30")
    group.add_argument("--scan-time", type=_datetime_argument, metavar="ISO", help="scan start, e.g. 2024-05-17T13:05")
    group.add_argument("--half-life", type=float, metavar="S", help="radionuclide half-life in seconds")
    group.add_argument("--units", choices=UNITS, type=str.upper, help="voxel units")
    group.add_argument("--calibration", type=float, metavar="BQML_PER_COUNT", help="Bq/ml per count (CNTS images)")
    group.add_argument("--decay-correction", choices=DECAY_CORRECTIONS, type=str.upper,
                       help="time the voxel values are decay-corrected to")


def suv_parameters_from_arguments(args: argparse.Namespace) -> SUVParameters:
    """The :class:`SUVParameters` given by the options of :func:`add_suv_arguments` (unset ones are None)."""
    return SUVParameters(
        weight_kg=args.weight, injected_dose_mbq=args.dose, injection_time=args.injection_time,
        scan_time=args.scan_time, half_life_s=args.half_life, units=args.units,
        calibration_bq_per_ml_per_count=args.calibration, decay_correction=args.decay_correction,
    )
