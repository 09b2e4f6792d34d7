"""DICOM volumes: read a series (CT, PT, NM incl. single-file multi-frame NM tomograms), its tags, and write one.

Geometry is computed here from the DICOM attributes with pydicom, not left to a generic reader: slices are
ordered along the slice normal (row direction × column direction), the origin is the position of the first
slice, spacing is (PixelSpacing column, PixelSpacing row, distance between slice positions) and the direction
columns are (row direction, column direction, normal), all in LPS millimetres as DICOM stores them. Voxel values
are the stored values mapped through RescaleSlope/RescaleIntercept of each slice or frame, or for NM through
its Real World Value Mapping in Bq/ml or counts (:func:`value_mapping`). NM position and orientation come from
the Detector Information Sequence, else the top level; a multi-frame NM file must hold one volume (one energy
window, detector, phase, time slot, ...), its frames put in Slice Vector order.
Arrays are indexed [z, y, x] (frame or slice, row, column).
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import struct
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from .errors import InputError, OutputError
from .io import VOLUME_SUFFIXES, is_dicom_file

SOP_CLASSES = {
    "NM": "1.2.840.10008.5.1.4.1.1.20",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
    "CT": "1.2.840.10008.5.1.4.1.1.2",
}
TAG_KEYWORDS = (
    "Modality", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID", "SeriesDescription",
    "Manufacturer", "ManufacturerModelName", "ImageType", "Units", "PatientWeight", "PatientSize", "PatientSex",
    "StudyDate", "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime",
    "DecayCorrection", "CorrectedImage", "DecayFactor", "DoseCalibrationFactor", "RescaleType",
)
RADIOPHARMACEUTICAL_KEYWORDS = (
    "Radiopharmaceutical", "RadiopharmaceuticalStartTime", "RadiopharmaceuticalStartDateTime",
    "RadionuclideTotalDose", "RadionuclideHalfLife", "RadionuclidePositronFraction",
)
# NM Multi-frame Module (DICOM PS3.3 C.8.4.8): these vectors label each frame with its energy window, detector,
# phase, rotation, R-R interval, time slot, view or time slice; a reconstructed volume has one value in each, and
# its Slice Vector gives each frame's slice number.
FRAME_VECTORS = {
    "EnergyWindowVector": "energy windows", "DetectorVector": "detectors", "PhaseVector": "phases",
    "RotationVector": "rotations", "RRIntervalVector": "R-R intervals", "TimeSlotVector": "gated time slots",
    "AngularViewVector": "angular views", "TimeSliceVector": "time slices",
}
# Real World Value Mapping units (UCUM code values) that name what the Units attribute (0054,1001) calls BQML and
# CNTS; an NM mapping in other units (e.g. SUV in g/ml) is not applied.
REAL_WORLD_UNITS = {"Bq/ml": "BQML", "{counts}": "CNTS"}
SLICE_SPACING_TOLERANCE = 0.01  # relative variation of slice distances tolerated in one series
SPACING_RANGE_MM = (1e-4, 1e4)  # a voxel spacing outside 0.1 µm .. 10 m is a broken value, not a scanner's


@dataclass(frozen=True)
class _SeriesFile:
    path: Path
    header: Dataset


def _scan(path: Path) -> dict[str, list[_SeriesFile]]:
    """Group the DICOM files at ``path`` (a file or a folder, not recursive) by SeriesInstanceUID. In a folder,
    files with the DICOM preamble or a .dcm suffix count; a file given by name is read also without the
    preamble (older exporters write the data set alone)."""
    named = path.is_file()
    candidates = [path] if named else sorted(p for p in path.iterdir() if p.is_file())
    series: dict[str, list[_SeriesFile]] = {}
    for candidate in candidates:
        if not named and not is_dicom_file(candidate) and candidate.suffix.lower() != ".dcm":
            continue
        try:
            header = pydicom.dcmread(candidate, stop_before_pixels=True, force=named)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError, struct.error):
            continue
        if "Rows" not in header:
            continue
        uid = str(header.get("SeriesInstanceUID", "unknown"))
        series.setdefault(uid, []).append(_SeriesFile(candidate, header))
    return series


def _select_series(path: Path, series_uid: str | None) -> list[_SeriesFile]:
    series = _scan(path)
    if not series:
        below = " (sub-folders are not searched: give the folder of one series)" if path.is_dir() and any(
            entry.is_dir() for entry in path.iterdir()) else ""
        raise InputError(f"'{path}' holds no readable DICOM image files{below}.")
    if series_uid is not None:
        if series_uid not in series:
            raise InputError(f"'{path}' holds no DICOM series with SeriesInstanceUID {series_uid}.")
        return series[series_uid]
    if len(series) > 1:
        listing = "; ".join(
            f"{uid} ({files[0].header.get('Modality', '?')}, "
            f"'{files[0].header.get('SeriesDescription', '')}', {len(files)} files)"
            for uid, files in series.items()
        )
        raise InputError(f"'{path}' holds {len(series)} DICOM series; only one can be read, so keep one series per folder: {listing}.")
    return next(iter(series.values()))


def _floats(value: Any, count: int, name: str, where: Path, spacing: bool = False) -> np.ndarray:
    """The ``count`` finite numbers (spacings in :data:`SPACING_RANGE_MM` if ``spacing``) of a DICOM value, else
    InputError naming it."""
    try:
        numbers = np.asarray([float(v) for v in _items(value)], dtype=np.float64) if value is not None else np.empty(0)
    except (TypeError, ValueError):
        numbers = np.empty(0)
    if numbers.size != count or not np.all(np.isfinite(numbers)) or (spacing and not _spacings_sound(numbers)):
        held = "is missing" if value is None else f"holds {_shown(value)}"
        raise InputError(f"DICOM file '{where}' lacks a valid {name} (it {held}); its geometry cannot be determined.")
    return numbers


def _spacings_sound(spacings: np.ndarray) -> bool:
    return bool(np.all((spacings >= SPACING_RANGE_MM[0]) & (spacings <= SPACING_RANGE_MM[1])))


def _number(dataset: Dataset, keyword: str, where: Path, default: float) -> float:
    """The finite number in ``keyword`` of ``dataset``, ``default`` when it is absent or empty, else InputError."""
    value = dataset.get(keyword)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise InputError(f"DICOM file '{where}' has an invalid {keyword} ({_shown(value)}); it must be a number.")
    return number


def _items(value: Any) -> list:
    """The values of a DICOM multi-value, or a single value as a list of one."""
    return list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]


def _shown(value: Any) -> str:
    """A DICOM value as a short printable text for a message (backslash between values, at most 80 characters)."""
    text = "\\".join(str(v) for v in _items(value))[:80]
    return "".join(c if c.isprintable() else "?" for c in text) or "an empty value"


def _frame_count(dataset: Dataset, where: Path) -> int:
    frames = _number(dataset, "NumberOfFrames", where, 1.0)
    if frames < 1 or frames != int(frames):
        raise InputError(f"DICOM file '{where}' has an invalid NumberOfFrames ({_shown(dataset.NumberOfFrames)}); "
                         "it must be a whole number of at least 1.")
    return int(frames)


def _rescale(dataset: Dataset, where: Path) -> tuple[float, float]:
    return (_number(dataset, "RescaleSlope", where, 1.0) or 1.0), _number(dataset, "RescaleIntercept", where, 0.0)


def value_mapping(dataset: Dataset, where: Path) -> tuple[float, float]:
    """``(slope, intercept)`` mapping the stored values of ``dataset`` (read from ``where``) to the values read:
    an NM file's Real World Value Mapping (see :func:`_real_world`) when it has a usable one, else
    RescaleSlope/RescaleIntercept."""
    mapping = _real_world(dataset, where)
    return mapping[:2] if mapping is not None else _rescale(dataset, where)


def value_units(dataset: Dataset, where: str | os.PathLike = "the DICOM input") -> str | None:
    """The units of the values read from ``dataset`` (read from ``where``): its NM Real World Value Mapping's
    (BQML or CNTS, see :func:`_real_world`), else its Units attribute; None when neither states them."""
    mapping = _real_world(dataset, Path(where))
    return mapping[2] if mapping is not None else (str(dataset.get("Units") or "") or None)


def _real_world(dataset: Dataset, where: Path) -> tuple[float, float, str] | None:
    """The linear Real World Value Mapping of an NM file in Bq/ml or {counts}, as (slope, intercept, BQML or
    CNTS); None for other modalities, other units (an SUV in g/ml), none, or a mapping to counts in a file whose
    RescaleSlope/Intercept already give Bq/ml (Units BQML): Bq/ml is preferred either way.

    The NM IOD has no Modality LUT (PS3.3 A.5.3), so NM vendors state the scale of the stored values in the Real
    World Value Mapping Sequence (PS3.3 C.7.6.16.2.11) instead: Hermes maps 16-bit values to {counts} there
    (STIR issue #1123), quantitative reconstructions (e.g. Siemens xSPECT Quant) to Bq/ml. PET's rescale is
    defined by its IOD (with Units), so a PET file's mapping (which may give SUV) is not used. Two mappings to one
    unit that disagree are an InputError.
    """
    if dataset.get("Modality") != "NM":
        return None
    mappings: dict[str, tuple[float, float]] = {}
    for item in dataset.get("RealWorldValueMappingSequence") or []:
        code = _first_item(item, "MeasurementUnitsCodeSequence")
        unit = REAL_WORLD_UNITS.get(str(code.get("CodeValue", "")).strip() if code is not None else "")
        if unit is not None and item.get("RealWorldValueSlope") is None:
            raise InputError(f"DICOM file '{where}' maps its values to {unit} through a lookup table (Real World "
                             "Value Mapping Sequence), which is not supported; export it with a linear scale.")
        if unit is not None:
            found = (_number(item, "RealWorldValueSlope", where, 1.0), _number(item, "RealWorldValueIntercept", where, 0.0))
            if mappings.get(unit, found) != found:
                raise InputError(f"DICOM file '{where}' maps its values to {unit} in two different ways (Real World "
                                 "Value Mapping Sequence); which one holds is unknown.")
            mappings[unit] = found
    unit = next((u for u in ("BQML", "CNTS") if u in mappings), None)
    if unit is None or (unit == "CNTS" and str(dataset.get("Units", "")).upper() == "BQML"):
        return None
    return (*mappings[unit], unit)


def _first_item(dataset: Dataset, sequence: str) -> Dataset | None:
    """The first item of the sequence ``sequence`` of ``dataset``; None when it is absent or empty."""
    return dataset[sequence][0] if sequence in dataset and len(dataset[sequence].value) else None


def _pixels(path: Path) -> np.ndarray:
    dataset = pydicom.dcmread(path, force=True)  # a file _scan has accepted
    if "TransferSyntaxUID" not in dataset.file_meta:  # a data set without File Meta is uncompressed, encoded as read
        implicit, little = dataset.original_encoding
        dataset.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                               ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return decode_pixels(dataset, path)


def decode_pixels(dataset: Dataset, where: Path) -> np.ndarray:
    """The stored pixel values of ``dataset`` read from ``where``; InputError when there are none, they do not
    match the image attributes, or no installed decoder reads the file's compressed transfer syntax."""
    if not any(keyword in dataset for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputError(f"DICOM file '{where}' has no pixel data (it may hold only a report or a header).")
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    try:
        return np.asarray(dataset.pixel_array)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError, TypeError) as error:
        if syntax is None or syntax in pydicom.uid.UncompressedTransferSyntaxes or _decodable(syntax):
            reason = " ".join(str(error).split())[:200]
            raise InputError(f"DICOM file '{where}' has pixel data that do not match its Rows, Columns, BitsAllocated "
                             f"and NumberOfFrames, or cannot be decompressed ({reason}); the file is damaged.") from None
        raise InputError(
            f"DICOM file '{where}' is compressed as {getattr(syntax, 'name', syntax)}, for which no decoder is "
            f"installed; install {_decoder_packages(syntax)} (pip), or decompress it first (e.g. gdcmconv --raw)."
        ) from None


def _decodable(syntax: str) -> bool:
    try:
        return bool(get_decoder(syntax).is_available)
    except (NotImplementedError, ValueError):
        return False


def _decoder_packages(syntax: str) -> str:
    """The packages pydicom names for decoding ``syntax`` (``pylibjpeg>=2.0 and pyjpegls`` or ``gdcm``)."""
    try:
        needs = [entry.split(" - requires ", 1)[-1].removeprefix("numpy and ") for entry in get_decoder(syntax).missing_dependencies]
    except (NotImplementedError, ValueError):
        needs = []
    return " or ".join(needs) or "a decoder for it"


def _image(array: np.ndarray, origin: np.ndarray, spacing: np.ndarray, direction: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return image


def _orientation(orientation: Any, where: Path) -> np.ndarray:
    """Return the 3×3 direction matrix whose columns are row direction, column direction and slice normal."""
    values = _floats(orientation, 6, "ImageOrientationPatient", where)
    row, column = values[:3], values[3:]
    normal = np.cross(row, column)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise InputError(f"DICOM file '{where}' has an invalid ImageOrientationPatient {list(values)}.")
    return np.stack([row, column, normal], axis=1)


def _plane(dataset: Dataset, keyword: str) -> Any:
    """ImagePositionPatient or ImageOrientationPatient of a file: from the first Detector Information Sequence
    item, where the NM Detector Module puts them for RECON TOMO (PS3.3 C.8.4.11), else from the top level, where
    PET, CT and some NM exporters put them."""
    detector = _first_item(dataset, "DetectorInformationSequence")
    value = detector.get(keyword) if detector is not None else None
    return dataset.get(keyword) if value is None or value == "" else value


def _check_reconstructed(dataset: Dataset, where: Path) -> None:
    """InputError unless ``dataset`` is a volume slice: NM needs RECON TOMO or RECON GATED TOMO in ImageType
    (PS3.3 C.8.4.9.1.1); STATIC, DYNAMIC, GATED, WHOLE BODY, TOMO and GATED TOMO are acquisitions."""
    image_type = [str(v).upper() for v in _items(dataset.get("ImageType") or [])]
    if dataset.get("Modality") == "NM" and not any("RECON" in v for v in image_type):
        raise InputError(
            f"DICOM file '{where}' is NM of ImageType {_shown(image_type or '')}, without RECON TOMO: projections "
            "or planar images, not a reconstructed tomographic volume; reconstruct it first."
        )


def _slice_spacing(positions: np.ndarray, normal: np.ndarray, where: Path) -> float:
    distances = np.diff(positions @ normal)
    if np.any(distances <= 0):
        raise InputError(f"DICOM series '{where}' has two slices at the same position (dynamic or gated frames, "
                         "or two acquisitions in one series?); only a single volume can be read.")
    spacing = float(np.mean(distances))
    if np.max(np.abs(distances - spacing)) > SLICE_SPACING_TOLERANCE * spacing:
        raise InputError(f"DICOM series '{where}' has unevenly spaced slices (missing slices?); it cannot be read as one volume.")
    if not _spacings_sound(np.array([spacing])):
        raise InputError(f"DICOM series '{where}' has slices {spacing:.3g} mm apart; its positions are broken.")
    return spacing


def _read_single_frames(files: list[_SeriesFile], where: Path) -> sitk.Image:
    first = files[0].header
    _check_reconstructed(first, files[0].path)
    direction = _orientation(_plane(first, "ImageOrientationPatient"), files[0].path)
    positions = np.stack([_floats(_plane(f.header, "ImagePositionPatient"), 3, "ImagePositionPatient", f.path)
                          for f in files])
    order = np.argsort(positions @ direction[:, 2])
    files, positions = [files[i] for i in order], positions[order]
    if len(files) < 2:
        raise InputError(f"DICOM series '{where}' has a single 2D slice; a 3D volume is needed (give the folder "
                         "holding all slices of the series).")
    spacing_z = _slice_spacing(positions, direction[:, 2], where)
    pixel_spacing = _floats(first.get("PixelSpacing"), 2, "PixelSpacing", files[0].path, spacing=True)
    slices = []
    for item in files:
        slope, intercept = value_mapping(item.header, item.path)
        slices.append(_pixels(item.path).astype(np.float64) * slope + intercept)
    if len({s.shape for s in slices}) != 1:
        raise InputError(f"DICOM series '{where}' mixes slices of different sizes; it is not one volume.")
    spacing = np.array([pixel_spacing[1], pixel_spacing[0], spacing_z])
    return _image(np.stack(slices), positions[0], spacing, direction)


def _frame_item(dataset: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The first item of functional group ``sequence`` for ``frame``: per-frame first, then shared."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        if groups in dataset and len(dataset[groups].value) > index:
            item = _first_item(dataset[groups][index], sequence)
            if item is not None:
                return item
    return None


def _read_multi_frame(file: _SeriesFile) -> sitk.Image:
    path, dataset = file.path, file.header
    frames = _frame_count(dataset, path)
    pixels = _pixels(path).astype(np.float64)
    if pixels.shape[:1] != (frames,) or pixels.ndim != 3:
        raise InputError(f"DICOM file '{path}' holds pixel data of shape {pixels.shape}, not {frames} grey-value "
                         "frames; colour or damaged images cannot be read as a volume.")
    if "PerFrameFunctionalGroupsSequence" in dataset:
        return _read_enhanced(dataset, pixels, path)
    _check_reconstructed(dataset, path)
    pixels = pixels[_slice_order(dataset, frames, path)]
    direction = _orientation(_plane(dataset, "ImageOrientationPatient"), path)
    origin = _floats(_plane(dataset, "ImagePositionPatient"), 3, "ImagePositionPatient", path)
    step = _number(dataset, "SpacingBetweenSlices", path, 0.0)
    if step == 0:  # a thickness has no sign: only SpacingBetweenSlices says which way the slices run
        step = _number(dataset, "SliceThickness", path, 0.0)
        if step < 0:
            raise InputError(f"DICOM file '{path}' has a negative SliceThickness ({step:g}) and no "
                             "SpacingBetweenSlices; the direction in which its slices run is unknown.")
    if step == 0:
        raise InputError(f"DICOM file '{path}' has neither SpacingBetweenSlices nor SliceThickness; slice spacing is unknown.")
    if not _spacings_sound(np.array([abs(step)])):
        raise InputError(f"DICOM file '{path}' has a slice spacing of {step:.3g} mm; it is broken.")
    if step < 0:  # NM Reconstruction Module (PS3.3 C.8.4.15): negative spacing stacks the slices in front of the
        direction[:, 2] *= -1  # first, against row × column (GE writes it; dcm2niix issue #885, OHIF issue #4352)
    pixel_spacing = _floats(dataset.get("PixelSpacing"), 2, "PixelSpacing", path, spacing=True)
    slope, intercept = value_mapping(dataset, path)
    spacing = np.array([pixel_spacing[1], pixel_spacing[0], abs(step)])
    return _image(pixels * slope + intercept, origin, spacing, direction)


def _frame_vector(dataset: Dataset, keyword: str, frames: int, where: Path) -> list[int] | None:
    """The values of the frame vector ``keyword`` (one per frame), None when absent; InputError when its length
    is not the number of frames."""
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    labels = [int(v) for v in _items(value)]
    if len(labels) != frames:
        raise InputError(f"DICOM file '{where}' has a {keyword} of {len(labels)} values for {frames} frames; "
                         "its frames cannot be told apart.")
    return labels


def _slice_order(dataset: Dataset, frames: int, where: Path) -> np.ndarray:
    """Frame indices of a multi-frame NM reconstruction in slice order (Slice Vector, else as stored).

    InputError when the file holds more than one volume: several energy windows, detectors, phases, gated time
    slots, ... (a frame vector with several values) or more frames than NumberOfSlices.
    """
    for keyword, what in FRAME_VECTORS.items():
        labels = _frame_vector(dataset, keyword, frames, where)
        if labels is not None and len(set(labels)) > 1:
            raise InputError(f"DICOM file '{where}' holds {len(set(labels))} {what} ({keyword}) in one NM "
                             "reconstruction; only a single volume can be read, so export one as a series of its own.")
    slices = _number(dataset, "NumberOfSlices", where, float(frames))
    if slices != frames:
        raise InputError(f"DICOM file '{where}' holds {frames} frames but NumberOfSlices {slices:g}: several volumes "
                         "(gated time slots or energy windows?) in one file; only a single volume can be read.")
    order = _frame_vector(dataset, "SliceVector", frames, where)
    if order is None:
        return np.arange(frames)
    if sorted(order) != list(range(1, frames + 1)):
        raise InputError(f"DICOM file '{where}' has a SliceVector that does not number its {frames} frames 1 to "
                         f"{frames}; the slice order is unknown.")
    return np.argsort(order)


def _read_enhanced(dataset: Dataset, pixels: np.ndarray, path: Path) -> sitk.Image:
    frames = pixels.shape[0]
    orientation = _frame_item(dataset, 0, "PlaneOrientationSequence")
    direction = _orientation(orientation.get("ImageOrientationPatient") if orientation else None, path)
    positions, volume = [], []
    for frame in range(frames):
        plane = _frame_item(dataset, frame, "PlanePositionSequence")
        positions.append(_floats(plane.get("ImagePositionPatient") if plane else None, 3, "ImagePositionPatient", path))
        transform = _frame_item(dataset, frame, "PixelValueTransformationSequence")
        slope, intercept = _rescale(transform if transform is not None else dataset, path)
        volume.append(pixels[frame] * slope + intercept)
    positions_array = np.stack(positions)
    order = np.argsort(positions_array @ direction[:, 2])
    positions_array = positions_array[order]
    measures = _frame_item(dataset, 0, "PixelMeasuresSequence")
    pixel_spacing = _floats(measures.get("PixelSpacing") if measures else None, 2, "PixelSpacing", path, spacing=True)
    spacing = np.array([pixel_spacing[1], pixel_spacing[0], _slice_spacing(positions_array, direction[:, 2], path)])
    return _image(np.stack(volume)[order], positions_array[0], spacing, direction)


def read_dicom_series(path: str | os.PathLike, series_uid: str | None = None) -> sitk.Image:
    """Read one DICOM series (CT, PT or NM) from a folder, or a single (multi-frame) DICOM file, as a 3D volume.

    Parameters
    ----------
    path : a folder holding the files of one series (other files are ignored), or one multi-frame DICOM file
        (NM "RECON TOMO" or an enhanced multi-frame image).
    series_uid : SeriesInstanceUID to read when the folder holds several series.

    Returns
    -------
    SimpleITK.Image
        float32 volume ([z, y, x] = slice/frame, row, column) with rescaled values and LPS geometry.

    Raises
    ------
    InputError
        If there is no series, several series and no ``series_uid``, inconsistent slices, projections instead
        of a reconstructed volume, missing geometry attributes or undecodable pixel data.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Input '{path}' does not exist.")
    with _reading(path):
        files = _select_series(path, series_uid)
        if _frame_count(files[0].header, files[0].path) > 1:
            if len(files) > 1:
                raise InputError(
                    f"DICOM series in '{path}' has {len(files)} multi-frame files (energy windows, gated or dynamic "
                    "data?); "
                    "only one volume per series can be read."
                )
            return _read_multi_frame(files[0])
        return _read_single_frames(files, path)


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Read DICOM values without pydicom's warnings about invalid ones (the values used are checked here), and
    turn an error raised inside pydicom while it decodes an attribute (a value of the wrong length, ``inf`` in an
    integer string, ...) into an InputError; errors raised by this module's own code pass unchanged."""
    mode = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    except (pydicom.errors.BytesLengthException, ValueError, TypeError, OverflowError, KeyError) as error:
        frames = traceback.extract_tb(error.__traceback__)
        if not frames or f"{os.sep}pydicom{os.sep}" not in frames[-1].filename:
            raise
        raise InputError(f"A DICOM file in '{path}' has a damaged attribute{_failed_tag(error)} that cannot be "
                         f"decoded ({type(error).__name__}); the file cannot be read.") from None
    finally:
        pydicom.config.settings.reading_validation_mode = mode


def _failed_tag(error: BaseException) -> str:
    """`` PatientWeight (0010,1030)``: the attribute pydicom was decoding when ``error`` was raised, or ""."""
    tag, frame = None, error.__traceback__
    while frame is not None:
        found = frame.tb_frame.f_locals.get("tag")
        tag = found if isinstance(found, pydicom.tag.BaseTag) else tag
        frame = frame.tb_next
    if tag is None:
        return ""
    return f" {pydicom.datadict.keyword_for_tag(tag) or 'private'} ({tag.group:04X},{tag.element:04X})"


def _plain(value: Any) -> Any:
    if isinstance(value, pydicom.multival.MultiValue):
        return [_plain(v) for v in value]
    if isinstance(value, (pydicom.valuerep.DSfloat, pydicom.valuerep.DSdecimal, float)):
        return float(value)
    if isinstance(value, (pydicom.valuerep.IS, int)):
        return int(value)
    return None if value is None or value == "" else str(value)


def read_dicom_tags(path: str | os.PathLike, series_uid: str | None = None) -> dict[str, Any]:
    """Return the tags SUV and ``info`` need from a DICOM file or a one-series folder, as plain Python values.

    Keys are DICOM keywords (``Modality``, ``Units`` (for NM, the units of the Real World Value Mapping the
    volume is read with, when there is one), ``PatientWeight`` [kg], ``SeriesDate``/``SeriesTime``,
    ``AcquisitionDate``/``AcquisitionTime``/``AcquisitionDateTime``, ``DecayCorrection``, ``CorrectedImage``,
    ...) plus the radiopharmaceutical fields (``RadionuclideTotalDose`` [Bq], ``RadionuclideHalfLife`` [s],
    ``RadiopharmaceuticalStartTime``/``RadiopharmaceuticalStartDateTime``, ``Radiopharmaceutical``,
    ``Radionuclide``: code meaning). Absent tags are absent from the dict. Files of one series share these tags,
    so the first file of the series is read.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Input '{path}' does not exist.")
    with _reading(path):
        first = _select_series(path, series_uid)[0]
        header = first.header
        tags = {k: _plain(header.get(k)) for k in TAG_KEYWORDS if header.get(k) not in (None, "")}
        units = value_units(header, first.path)
        if units is not None:
            tags["Units"] = units
        info = _first_item(header, "RadiopharmaceuticalInformationSequence")
        if info is not None:
            tags.update({k: _plain(info.get(k)) for k in RADIOPHARMACEUTICAL_KEYWORDS if info.get(k) not in (None, "")})
            code = _first_item(info, "RadionuclideCodeSequence")
            if code is not None:
                tags["Radionuclide"] = str(code.get("CodeMeaning", ""))
    return tags


def dicom_tags_or_empty(path: str | os.PathLike) -> dict[str, Any]:
    """:func:`read_dicom_tags` of a DICOM file or folder (a file without the preamble too, as
    :func:`~SPECTDenoiseLib.io.read_volume` reads it); an empty dict for other formats (NIfTI, NRRD, ...)."""
    path = Path(path)
    if path.is_file() and not is_dicom_file(path) and not path.name.lower().endswith(VOLUME_SUFFIXES):
        with _reading(path):
            return read_dicom_tags(path) if _scan(path) else {}
    return read_dicom_tags(path) if path.is_dir() or is_dicom_file(path) else {}


def _ds(value: float) -> DSfloat:
    return DSfloat(float(value), auto_format=True)


def quantise(values: np.ndarray) -> tuple[np.ndarray, float]:
    """Map real values to 16-bit stored values with RescaleIntercept 0; return ``(stored, slope)``.

    Stored values are uint16 when no value is negative, else int16 (set PixelRepresentation from the dtype).
    Whole numbers that fit are stored exactly (slope 1). Otherwise slope = max|value| / 65535 (unsigned) or
    max|value| / 32767 (signed), rounded to the DS string written to the file, so every value read back lies
    within half a step of the original: at most max|value| / 131070 (unsigned) or max|value| / 65534 (signed),
    i.e. 0.0008 % or 0.0015 % of the largest magnitude. The intercept is 0 because PET images require it.
    """
    values = np.asarray(values, dtype=np.float64)
    signed = bool(values.min() < 0)
    top = 32767 if signed else 65535
    peak = float(np.abs(values).max())
    exact = peak <= top and bool(np.all(values == np.rint(values)))
    slope = 1.0 if exact or peak == 0 else float(str(_ds(peak / top)))
    stored = np.clip(np.rint(values / slope), -top if signed else 0, top)
    return stored.astype(np.int16 if signed else np.uint16), slope


def set_pixels(dataset: Dataset, stored: np.ndarray, slope: float) -> None:
    """Set 16-bit pixel data from :func:`quantise` output, with its pixel representation and rescale."""
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelRepresentation = int(stored.dtype == np.int16)
    dataset.RescaleSlope, dataset.RescaleIntercept = _ds(slope), _ds(0.0)
    dataset.PixelData = np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<")).tobytes()
    dataset["PixelData"].VR = "OW"


def _base_dataset(modality: str, image: sitk.Image, tags: dict[str, Any], series_uid: str, frame_uid: str,
                  study_uid: str, rows: int, columns: int) -> Dataset:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = SOP_CLASSES[modality]
    dataset.Modality = modality
    dataset.StudyInstanceUID = study_uid
    dataset.SeriesInstanceUID = series_uid
    dataset.FrameOfReferenceUID = frame_uid
    dataset.PatientName = "Anonymous"
    dataset.PatientID = "SPECTDenoise"
    dataset.SeriesNumber = 1
    today = datetime.datetime.now()
    dataset.StudyDate = dataset.SeriesDate = today.strftime("%Y%m%d")
    dataset.StudyTime = dataset.SeriesTime = today.strftime("%H%M%S")
    dataset.Rows, dataset.Columns = rows, columns
    spacing = image.GetSpacing()
    dataset.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
    dataset.SliceThickness = _ds(spacing[2])
    _set_tags(dataset, tags)
    return dataset


def _set_tags(dataset: Dataset, tags: dict[str, Any]) -> None:
    """Set DICOM keywords on ``dataset``; a list of dicts becomes a sequence (nested ones too)."""
    for keyword, value in tags.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = []
            for entry in value:
                item = Dataset()
                _set_tags(item, entry)
                items.append(item)
            value = items
        setattr(dataset, keyword, value)


def write_dicom_series(image: sitk.Image, folder: str | os.PathLike, modality: str = "NM",
                       tags: dict[str, Any] | None = None) -> list[Path]:
    """Write a 3D ``image`` as a new DICOM series into ``folder`` (created if missing) and return the files.

    ``NM`` writes one multi-frame NM "RECON TOMO" file; ``PT`` and ``CT`` write one file per slice. Values are
    stored as 16-bit integers with a RescaleSlope (per slice for PT/CT, per file for NM; see :func:`quantise`):
    whole numbers that fit are kept exactly, other data to within half a slope step. Geometry (LPS origin,
    spacing, direction) is kept exactly as long as the direction is a right-handed rotation. ``tags`` maps DICOM
    keywords to values (a list of dicts becomes a sequence), e.g. ``PatientWeight``, ``Units`` or
    ``RadiopharmaceuticalInformationSequence``; they override the defaults.
    """
    modality = modality.upper()
    if modality not in SOP_CLASSES:
        raise OutputError(f"DICOM modality '{modality}' is not supported for writing; use NM, PT or CT.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    origin, spacing = np.asarray(image.GetOrigin()), np.asarray(image.GetSpacing())
    if np.linalg.det(direction) < 0:  # DICOM slices run along row × column: reverse them, same physical volume
        origin = origin + (array.shape[0] - 1) * spacing[2] * direction[:, 2]
        array, direction = array[::-1], direction * np.array([1.0, 1.0, -1.0])
    orientation = [_ds(v) for v in np.concatenate([direction[:, 0], direction[:, 1]])]
    tags = dict(tags or {})
    series_uid, frame_uid, study_uid = generate_uid(), generate_uid(), tags.pop("StudyInstanceUID", generate_uid())
    frames, rows, columns = array.shape
    written = []
    if modality == "NM":
        dataset = _base_dataset(modality, image, tags, series_uid, frame_uid, study_uid, rows, columns)
        stored, slope = quantise(array)
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
        dataset.NumberOfFrames = frames
        dataset.NumberOfSlices = frames
        dataset.SliceVector = list(range(1, frames + 1))
        dataset.FrameIncrementPointer = pydicom.tag.Tag("SliceVector")
        dataset.SpacingBetweenSlices = _ds(spacing[2])
        detector = Dataset()
        detector.ImagePositionPatient = [_ds(v) for v in origin]
        detector.ImageOrientationPatient = orientation
        dataset.DetectorInformationSequence = [detector]
        set_pixels(dataset, stored, slope)
        batches = [(dataset, "NM000001.dcm")]
    else:
        batches = []
        for index in range(frames):
            dataset = _base_dataset(modality, image, tags, series_uid, frame_uid, study_uid, rows, columns)
            stored, slope = quantise(array[index])
            dataset.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            dataset.InstanceNumber = index + 1
            dataset.ImagePositionPatient = [_ds(v) for v in origin + index * spacing[2] * direction[:, 2]]
            dataset.ImageOrientationPatient = orientation
            set_pixels(dataset, stored, slope)
            batches.append((dataset, f"{modality}{index + 1:06d}.dcm"))
    for dataset, name in batches:
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        target = folder / name
        try:
            dataset.save_as(target, enforce_file_format=True)
        except OSError as error:
            raise OutputError(f"Could not write DICOM file '{target}': {error.strerror or error}.") from None
        written.append(target)
    return written
