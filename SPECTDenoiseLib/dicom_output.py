"""Results as DICOM: each output (denoised, difference, variance) becomes a derived series of the input's study.

An output path that does not end in a volume suffix (.nrrd, .nii.gz, .nii, .mha, .mhd) names a folder for a
DICOM series; it needs a DICOM NM or PT input, whose files are the templates. Every output file is a copy of
the input file at the same position (single-frame series) or of the input file (multi-frame NM) with:

* patient, study, frame of reference, equipment, acquisition and SUV attributes (Units, PatientWeight,
  RadiopharmaceuticalInformationSequence, SeriesDate/SeriesTime, AcquisitionDate/AcquisitionTime,
  DecayCorrection, ...) kept, so SUV computed from the output equals SUV from the input (SeriesDate/Time are
  the scan's, not the output's creation: ContentDate/Time and InstanceCreationDate/Time say when it was made);
* a new SeriesInstanceUID and SOPInstanceUIDs, SeriesNumber = input's × 100 + 1/2/3, ImageType
  ``DERIVED\\PRIMARY`` (+ ``RECON TOMO\\EMISSION`` for NM: the NM and PET IODs allow only PRIMARY as value 2,
  so ``SECONDARY`` would fail validation), SeriesDescription ``"<kind> (<model>)"``, DerivationDescription,
  SourceImageSequence (the input file, purpose "source image for image processing operation") and
  ReferencedSeriesSequence (the input series);
* pixel data as 16-bit integers with RescaleIntercept 0 (:func:`SPECTDenoiseLib.dicom.quantise`): values are
  kept within half a rescale step, at most 0.0008 % (unsigned) or 0.0015 % (signed, e.g. differences) of the
  largest magnitude in the slice (PT, per file) or volume (NM, one slope per file);
* the variance in squared input units, which DICOM cannot name: its Units is ``NONE`` and its
  SeriesDescription gives the unit.

Private attributes and those the new pixel values would falsify (window, LUTs, real-world value mapping, pixel
extremes, padding, icons, overlays) are dropped. Enhanced multi-frame inputs are not used as templates.
The series is written into a temporary sibling folder that is renamed to the output folder, so the folder
never holds a partial series.
"""

from __future__ import annotations

import copy
import datetime
import os
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from . import __version__
from .dicom import _items, _plane, _select_series, quantise, set_pixels, value_units
from .errors import OutputError
from .io import VOLUME_SUFFIXES, _current_umask, is_dicom_file, partial_folder, remove_volume, write_volume

OUTPUT_KINDS = ("denoised", "difference", "variance")
MODALITIES = ("NM", "PT")
DROPPED = (
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "SmallestImagePixelValue", "LargestImagePixelValue",
    "SmallestPixelValueInSeries", "LargestPixelValueInSeries", "PixelPaddingValue", "PixelPaddingRangeLimit",
    "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTFunction", "VOILUTSequence",
    "ModalityLUTSequence", "RealWorldValueMappingSequence", "IconImageSequence", "PlanarConfiguration",
    "DerivationCodeSequence", "SourceImageSequence", "ReferencedSeriesSequence",
    "StudiesContainingOtherReferencedInstancesSequence", "SourceImageEvidenceSequence", "RescaleType",
)
# Type 2 attributes of the patient, study, series, equipment and frame-of-reference modules: present, maybe empty.
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyDate",
         "StudyTime", "StudyID", "AccessionNumber", "PositionReferenceIndicator", "Manufacturer")
SOURCE_IMAGE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")
DESCRIPTION_CHARACTERS = 64  # LO


def is_series_folder(path: str | os.PathLike) -> bool:
    """True when an output ``path`` names a DICOM series folder: its name has no volume or DICOM file suffix."""
    name = Path(path).name.lower()
    return not any(name.endswith(suffix) for suffix in VOLUME_SUFFIXES)


def is_dicom_input(path: str | os.PathLike) -> bool:
    """True when ``path`` is a DICOM file or a folder (the readers take a folder as one DICOM series)."""
    path = Path(path)
    return path.is_dir() or is_dicom_file(path) or path.name.lower().endswith(".dcm")


def check_output(path: str | os.PathLike, source: str | os.PathLike) -> None:
    """Raise OutputError if ``path`` cannot take an output of ``source``: a file needs a writable volume suffix;
    a series folder (no suffix) needs a DICOM input and must be new or empty and outside the input's folder."""
    path = Path(path)
    if path.name.lower().endswith(".dcm"):
        raise OutputError(f"DICOM output is written as a series folder: name a folder without a suffix instead of "
                          f"'{path}', or end the name in .nrrd, .nii.gz, .nii, .mha or .mhd to write a file.")
    if not is_series_folder(path):
        return
    if not is_dicom_input(source):
        raise OutputError(f"Output '{path}' has no volume suffix, so it names a DICOM series folder, which needs "
                          "a DICOM input; end it in .nrrd, .nii.gz, .nii, .mha or .mhd to write a file.")
    source = Path(source).expanduser().resolve()
    if source.is_dir() and source in path.expanduser().resolve().parents:
        raise OutputError(f"The DICOM output folder '{path}' lies inside the input series folder; choose a folder "
                          "outside it, so that the input stays unchanged.")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise OutputError(f"The DICOM output folder '{path}' already exists and is not empty; choose a new folder "
                          "so that series are not mixed.")


def write_output(image: sitk.Image, path: str | os.PathLike, *, kind: str, source: str | os.PathLike,
                 model: str) -> Path:
    """Write one output: a volume file when ``path`` has a volume suffix, else a derived DICOM series of
    ``source`` (see :func:`write_derived_series`). Return the path."""
    if is_series_folder(path):
        return write_derived_series(image, path, source, kind=kind, model=model)
    return write_volume(image, path)


def remove_output(path: str | os.PathLike) -> None:
    """Delete an output written by :func:`write_output` (a file, or a series folder with its files)."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        remove_volume(path)


def write_derived_series(image: sitk.Image, folder: str | os.PathLike, source: str | os.PathLike, *, kind: str,
                         model: str) -> Path:
    """Write ``image`` (on the grid of the DICOM series ``source``) as a derived series of its study into
    ``folder`` (created; it must be new or empty) and return the folder.

    Parameters
    ----------
    image : float volume with the geometry ``read_volume(source)`` returned, e.g. the denoised image.
    folder : the new series folder.
    source : the DICOM input: a folder holding one NM or PT series, or a multi-frame NM file.
    kind : ``denoised``, ``difference`` or ``variance`` (description, series number and units).
    model : the model's name, shown in SeriesDescription and DerivationDescription.

    Raises
    ------
    OutputError
        If the input is not NM/PT DICOM, is an enhanced multi-frame file, does not match ``image``'s grid, the
        folder holds files, or the files cannot be written.
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"kind must be one of {OUTPUT_KINDS}, not {kind!r}")
    folder, source = Path(folder), Path(source)
    check_output(folder, source)
    templates = _templates(source, image)
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    series = _series_attributes(templates[0], kind, model)
    if len(templates) == 1 and int(templates[0].get("NumberOfFrames", 1) or 1) > 1:
        datasets = [_derived(templates[0], array, series)]
    else:
        datasets = [_derived(template, array[index], series) for index, template in enumerate(templates)]
    _write_folder(datasets, folder)
    return folder


def _templates(source: Path, image: sitk.Image) -> list[Dataset]:
    """The input's files, in the slice order of the volume read from it, after checking they fit ``image``."""
    files = _select_series(source, None)
    header = files[0].header
    modality = str(header.get("Modality", ""))
    if modality not in MODALITIES:
        raise OutputError(f"DICOM output is written for NM and PT inputs; '{source}' is {modality or 'unknown'} "
                          "DICOM, so write the result as a file (.nrrd, .nii.gz).")
    if "PerFrameFunctionalGroupsSequence" in header:
        raise OutputError(f"'{source}' is an enhanced multi-frame DICOM image, which SPECTDenoise does not use as "
                          "a template for DICOM output; write the result as a file (.nrrd, .nii.gz).")
    size = image.GetSize()
    if len(files) == 1 and int(header.get("NumberOfFrames", 1) or 1) > 1:
        matches = int(header.NumberOfFrames) == size[2]
        ordered = [header]
    else:
        normal = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)[:, 2]
        positions = [np.asarray([float(v) for v in _plane(f.header, "ImagePositionPatient")]) for f in files]
        order = np.argsort([position @ normal for position in positions])
        ordered = [files[i].header for i in order]
        matches = len(files) == size[2] and np.allclose(positions[order[0]], image.GetOrigin(), atol=1e-3)
    if not matches or (int(header.Rows), int(header.Columns)) != (size[1], size[0]):
        raise OutputError(f"The result is not on the grid of the DICOM input '{source}' (size {size}); DICOM "
                          "output needs the input's own grid.")
    return ordered


def _series_attributes(template: Dataset, kind: str, model: str) -> dict:
    """Attributes shared by every file of the new series."""
    number = int(template.get("SeriesNumber") or 0)
    units = value_units(template) or ""
    label = Path(model).name if Path(model).is_dir() else model  # a local model folder: its name, not its path
    description = f"{kind} ({label})" if kind != "variance" or not units else f"variance ({label}; {units}^2)"
    now = datetime.datetime.now()
    index = OUTPUT_KINDS.index(kind) + 1
    return {
        "SeriesInstanceUID": generate_uid(),
        "SeriesNumber": number * 100 + index if 0 < number < 20_000_000 else index,  # IS holds up to 2^31 - 1
        "SeriesDescription": description[:DESCRIPTION_CHARACTERS],
        "DerivationDescription": (f"{kind.capitalize()} image from deep-learning denoising of low-count SPECT by "
                                  f"SPECTDenoise {__version__} with model {model}; research use, not a medical "
                                  "device.")[:1024],
        "ContentDate": now.strftime("%Y%m%d"), "ContentTime": now.strftime("%H%M%S"),
        "InstanceCreationDate": now.strftime("%Y%m%d"), "InstanceCreationTime": now.strftime("%H%M%S"),
        "Units": "NONE" if kind == "variance" else units,
    }


def _derived(header: Dataset, values: np.ndarray, series: dict) -> Dataset:
    """A copy of the input file's header holding ``values`` ([frame,] row, column) as a derived image."""
    dataset = copy.deepcopy(header)
    dataset.remove_private_tags()
    for keyword in DROPPED:
        if keyword in dataset:
            delattr(dataset, keyword)
    for tag in [element.tag for element in dataset if 0x6000 <= element.tag.group <= 0x60FF]:  # overlays
        del dataset[tag]
    for keyword in TYPE2:
        if keyword not in dataset:
            setattr(dataset, keyword, "")
    for keyword, value in series.items():
        if keyword != "Units" or "Units" in dataset or value:
            setattr(dataset, keyword, value)
    image_type = [str(v) for v in dataset.get("ImageType", [])]
    dataset.ImageType = ["DERIVED", "PRIMARY", *image_type[2:]]
    if "InstanceNumber" not in dataset:
        dataset.InstanceNumber = 1
    dataset.SourceImageSequence = [_reference(header.SOPClassUID, header.SOPInstanceUID, purpose=True)]
    referenced = Dataset()
    referenced.SeriesInstanceUID = header.SeriesInstanceUID
    referenced.ReferencedInstanceSequence = [_reference(header.SOPClassUID, header.SOPInstanceUID)]
    dataset.ReferencedSeriesSequence = [referenced]
    stored, slope = quantise(values)
    set_pixels(dataset, stored, slope)
    if "SliceVector" in dataset:  # the reader put the frames in slice order
        dataset.SliceVector = list(range(1, len(_items(dataset.SliceVector)) + 1))
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset


def _reference(sop_class: str, sop_instance: str, purpose: bool = False) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
    if purpose:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = SOURCE_IMAGE_PURPOSE
        item.PurposeOfReferenceCodeSequence = [code]
    return item


def _write_folder(datasets: list[Dataset], folder: Path) -> None:
    """Write the files into a temporary sibling folder, then rename it to ``folder`` (an empty one is replaced)."""
    parent = folder.parent if str(folder.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"Output folder '{parent}' does not exist or is not a folder.")
    staging = partial_folder(parent)
    try:
        os.chmod(staging, 0o777 & ~_current_umask())  # mkdtemp makes 0700; outputs get the usual permissions
        width = max(4, len(str(len(datasets))))
        for index, dataset in enumerate(datasets, start=1):
            dataset.save_as(staging / f"{dataset.Modality}{index:0{width}d}.dcm", enforce_file_format=True)
        if folder.is_dir():
            folder.rmdir()
        staging.rename(folder)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"Could not write the DICOM series '{folder}': {error.strerror or error}.") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

