"""Reading and writing SPECT/CT volumes with their geometry, atomically.

Conventions
-----------
* Volumes are ``SimpleITK.Image`` objects; their geometry (origin, spacing, direction) is in **LPS** millimetres,
  as ITK and DICOM store it. (3D Slicer's MRML scene is RAS: flip the sign of x and y when crossing over.)
* ``image_to_array`` returns a float32 numpy array indexed **[z, y, x]** (slice, row, column); ``array_to_image``
  takes the same order and copies the geometry from a reference image.
* Writers never leave a partial file: data go to a private staging folder in the destination folder, named
  ``.spectdenoise-partial-<host>-<pid>-*``, and are renamed over the destination (the data file of a
  ``.mhd``/``.nhdr`` header first, the header last). Only staging folders of dead processes on this computer
  are removed as leftovers, so concurrent runs into one folder never delete each other's files.
* Volume headers are read before the voxels: a volume over :func:`max_voxels` is refused without decoding it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError, OutputError

PARTIAL_PREFIX = ".spectdenoise-partial-"
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
DATA_FILE_SUFFIXES = {".mhd": (".zraw", ".raw"), ".nhdr": (".raw.gz", ".raw")}
"""Data files SimpleITK writes beside a header: ``name.mhd`` → ``name.zraw`` (compressed) or ``name.raw``."""
_DATA_FILE_LINE = re.compile(r"^(?:ElementDataFile\s*=|data ?file:)\s*(?P<name>\S[^\r\n]*?)\s*$",
                             re.IGNORECASE | re.MULTILINE)
_PARTIAL_OWNER = re.compile(re.escape(PARTIAL_PREFIX) + r"(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-")
MAX_VOXELS = 512**3
MAX_VOXELS_VARIABLE = "SPECTDENOISE_MAX_VOXELS"


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_volume(path: str | os.PathLike) -> sitk.Image:
    """Read a 3D volume from a file (NIfTI, NRRD, MHA, DICOM file) or a DICOM series folder.

    Parameters
    ----------
    path : path to a file SimpleITK can read, a folder holding one DICOM series, or a multi-frame DICOM file
        (DICOM goes through :func:`SPECTDenoiseLib.dicom.read_dicom_series`, which gets NM geometry right).

    Returns
    -------
    SimpleITK.Image
        A scalar 3D image with its original pixel type (float32 for DICOM, rescaled) and LPS geometry.

    Raises
    ------
    InputError
        If the path does not exist, cannot be read, is not a scalar 3D volume, or has more voxels than
        :func:`max_voxels` (checked from the file's header, before the voxels are decoded).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Input '{path}' does not exist.")
    if path.stat().st_size == 0 and path.is_file():
        raise InputError(f"Input '{path}' is an empty file.")
    dicom = path.is_dir() or _suffix(path) == ".dcm" or is_dicom_file(path)
    reader = sitk.ImageFileReader()
    if not dicom:
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as error:
            raise InputError(f"Input '{path}' is not an image file that can be read ({_first_line(error)}).") from None
        # a DICOM file without the "DICM" preamble (IM0001, ...), which GDCM knows by its SOP Class UID: NM
        # geometry, value mapping and the one-volume checks are ours (a NRRD may carry DICOM keys: its suffix says)
        dicom = _suffix(path) not in VOLUME_SUFFIXES and reader.HasMetaDataKey("0008|0016")
    if dicom:
        from .dicom import read_dicom_series

        image = read_dicom_series(path)
        check_voxel_count(image, f"Input '{path}'")
    else:
        _check_size(reader.GetSize(), reader.GetNumberOfComponents(), f"Input '{path}'")  # before decoding
        try:
            image = reader.Execute()
        except RuntimeError as error:
            raise InputError(f"Input '{path}' is not an image file that can be read ({_first_line(error)}).") from None
    return check_volume(image, str(path))


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` is a file starting with the DICOM preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def check_volume(image: sitk.Image, name: str = "input") -> sitk.Image:
    """Return ``image`` if it is a scalar 3D volume with at least two voxels per axis, else raise InputError.

    A 4D image whose last axis has length 1 is reduced to 3D.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name} has {image.GetNumberOfComponentsPerPixel()} components per voxel; a scalar volume is needed.")
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise InputError(f"{name} is {image.GetDimension()}D; a 3D volume is needed.")
    if min(image.GetSize()) < 2:
        raise InputError(f"{name} has size {image.GetSize()}; a 3D volume needs at least 2 voxels along each axis.")
    return image


def max_voxels() -> int:
    """The largest volume (voxels) that is denoised: ``$SPECTDENOISE_MAX_VOXELS`` or :data:`MAX_VOXELS` (512³).

    Inference keeps about ten float32 copies of the volume, so 512³ voxels need about 5 GB of memory.
    """
    value = os.environ.get(MAX_VOXELS_VARIABLE, "").strip()
    if not value:
        return MAX_VOXELS
    if not value.isdigit() or int(value) < 1:
        raise InputError(f"{MAX_VOXELS_VARIABLE} must be a positive whole number of voxels, not '{value}'.")
    return int(value)


def check_voxel_count(image: sitk.Image, name: str = "input") -> None:
    """Raise InputError if ``image`` has more voxels than :func:`max_voxels`, naming the limit."""
    _check_size(image.GetSize(), image.GetNumberOfComponentsPerPixel(), name)


def _check_size(size: tuple[int, ...], components: int, name: str) -> None:
    voxels, limit = int(np.prod(size, dtype=object)) * max(1, int(components)), max_voxels()
    if voxels > limit:
        raise InputError(f"{name} has {voxels:,} voxels, more than the limit of {limit:,} voxels "
                         f"({MAX_VOXELS_VARIABLE} changes it); crop or downsample it first.")


def check_finite(array: np.ndarray, name: str = "input") -> None:
    """Raise InputError if ``array`` holds NaN or infinite values."""
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InputError(f"{name} has {bad} NaN or infinite voxels; fix or mask them before processing.")


def image_to_array(image: sitk.Image, name: str = "The volume") -> np.ndarray:
    """Return the voxels of ``image`` as a float32 array indexed [z, y, x] (a copy).

    Raises InputError if finite voxels (of a float64 image) lie beyond the float32 range (±3.4e38).
    """
    values = sitk.GetArrayViewFromImage(image)
    with np.errstate(over="ignore"):
        array = values.astype(np.float32, copy=True)
    if values.dtype == np.float64:
        beyond = int(np.count_nonzero(np.isinf(array) & np.isfinite(values)))
        if beyond:
            raise InputError(f"{name} has {beyond} voxels beyond the float32 range (±3.4e38); rescale it first.")
    return array


def array_to_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Return a float32 image of ``array`` ([z, y, x]) carrying the geometry of ``reference``."""
    expected = tuple(reversed(reference.GetSize()))
    if array.shape != expected:
        raise ValueError(f"array shape {array.shape} does not match reference size [z, y, x] {expected}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.CopyInformation(reference)
    return image


def same_geometry(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-4) -> bool:
    """True when both images have the same size and (within ``tolerance`` mm) origin, spacing and direction."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance)
    )


def spacing_zyx(image: sitk.Image) -> tuple[float, float, float]:
    """Voxel spacing of ``image`` in mm in array order [z, y, x] (SimpleITK's ``GetSpacing`` is [x, y, z])."""
    x, y, z = image.GetSpacing()
    return float(z), float(y), float(x)


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned LPS bounding box (low corner, high corner; mm) of the voxels of ``image``, voxel edges included."""
    size = np.asarray(image.GetSize(), dtype=np.float64)
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in size], indexing="ij")).reshape(3, -1).T
    points = np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(c)) for c in corners])
    return points.min(axis=0), points.max(axis=0)


def resample_to_reference(
    moving: sitk.Image,
    reference: sitk.Image,
    default_value: float = -1000.0,
    interpolator: int = sitk.sitkLinear,
    moving_name: str = "CT",
    reference_name: str = "SPECT",
) -> sitk.Image:
    """Resample ``moving`` (e.g. a CT in HU) onto the grid of ``reference`` (e.g. the SPECT), in physical space.

    Both images must share a frame of reference (LPS mm, as in DICOM); no registration is done. Voxels of the
    reference grid outside ``moving`` get ``default_value`` (−1000 HU: air). Returns a float32 image with the
    reference's size, spacing, origin and direction.

    Raises
    ------
    InputError
        If the physical extents of the two images do not overlap.
    """
    moving_low, moving_high = physical_bounds(moving)
    reference_low, reference_high = physical_bounds(reference)
    if np.any(np.minimum(moving_high, reference_high) <= np.maximum(moving_low, reference_low)):
        raise InputError(
            f"The {moving_name} and the {reference_name} do not overlap in space; check that both come from the "
            "same study and share one frame of reference."
        )
    return sitk.Resample(
        sitk.Cast(moving, sitk.sitkFloat32), reference, sitk.Transform(), interpolator, float(default_value),
        sitk.sitkFloat32,
    )


def read_label_map(path: str | os.PathLike, reference: sitk.Image, name: str = "Label map") -> np.ndarray:
    """Read a label map (0 = background, positive integers = regions) drawn on the grid of ``reference``.

    Returns
    -------
    numpy.ndarray
        int32 labels indexed [z, y, x], aligned voxel by voxel with ``image_to_array(reference)``.

    Raises
    ------
    InputError
        If the file cannot be read, its geometry (size, spacing, origin, direction) differs from the
        reference, or it holds negative or non-integer values.
    """
    values = _read_on_grid(path, reference, name)
    labels = np.rint(values).astype(np.int64)
    if np.any(labels != values) or labels.min() < 0 or labels.max() > np.iinfo(np.int32).max:
        raise InputError(f"{name} '{path}' holds negative or non-integer values; a label map holds 0, 1, 2, ...")
    return labels.astype(np.int32)


def read_mask(path: str | os.PathLike, reference: sitk.Image, name: str = "Mask") -> np.ndarray:
    """Read a mask drawn on the grid of ``reference``: every non-zero voxel (negative or fractional too) is inside.

    Returns a boolean array indexed [z, y, x]. Raises InputError if the file cannot be read, lies on another
    grid, or holds NaN or infinite values.
    """
    values = _read_on_grid(path, reference, name)
    check_finite(values, f"{name} '{path}'")
    return values != 0


def _read_on_grid(path: str | os.PathLike, reference: sitk.Image, name: str) -> np.ndarray:
    image = read_volume(path)
    if not same_geometry(image, reference):
        raise InputError(
            f"{name} '{path}' has another geometry (size {image.GetSize()}, spacing "
            f"{tuple(round(v, 4) for v in image.GetSpacing())}) than the image (size {reference.GetSize()}, spacing "
            f"{tuple(round(v, 4) for v in reference.GetSpacing())}); export it on the image's grid."
        )
    return sitk.GetArrayFromImage(image)


def read_label_names(path: str | os.PathLike) -> dict[int, str]:
    """Names of the labels of the label map at ``path``, from the JSON file beside it with the same name
    (``NAME_labels.nrrd`` → ``NAME_labels.json``, as ``spectdenoise phantom`` writes them) holding
    ``{"label_names": {"1": "sphere_10mm", ...}}``; an empty dict when there is no such file or no names in it."""
    path = Path(path)
    stem = path.name[: len(path.name) - len(_suffix(path))] if _suffix(path) in VOLUME_SUFFIXES else path.name
    try:
        names = json.loads(path.with_name(stem + ".json").read_text(encoding="utf-8")).get("label_names")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return {}
    if not isinstance(names, dict):
        return {}
    return {int(key): str(value) for key, value in names.items() if str(key).isdigit()}


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path for writing ``path``; on success move what was written there onto ``path``, on any
    error (or cancel) delete it.

    The temporary path has the destination's name (so writers pick the right format and a ``.mhd``/``.nhdr``
    header names its data file by the final name) inside a staging folder from :func:`partial_folder`. Data files
    written beside the header are moved first and the header last, so a header never points at a missing file.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"Output folder '{folder}' does not exist or is not a folder.")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"Output folder '{folder}' is not writable.")
    if path.is_dir():
        raise OutputError(f"Output '{path}' is a folder; give a file name such as '{path / 'denoised.nrrd'}'.")
    with staged(folder, f"'{path}'") as staging:
        temporary = staging / path.name
        yield temporary
        for written in sorted(staging.iterdir(), key=lambda entry: entry == temporary):  # the header last
            os.replace(written, folder / written.name)


@contextlib.contextmanager
def staged(parent: str | os.PathLike, what: str) -> Iterator[Path]:
    """Yield a new :func:`partial_folder` in ``parent`` to write ``what`` into and move from; it is deleted with
    whatever is left in it when the block ends, also on an error or cancel. An OSError in the block becomes
    OutputError("Could not write WHAT: ...")."""
    staging = partial_folder(parent)
    try:
        yield staging
    except OSError as error:
        raise OutputError(f"Could not write {what}: {error.strerror or error}.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def partial_folder(parent: str | os.PathLike) -> Path:
    """Create and return a private staging folder in ``parent`` whose name records this process and computer
    (``.spectdenoise-partial-<host>-<pid>-*``), so :func:`remove_partial_outputs` knows when it is abandoned.

    Raises OutputError if it cannot be created.
    """
    try:
        return Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{_host_tag()}-{os.getpid()}-", dir=parent))
    except OSError as error:
        raise OutputError(f"Cannot write into the folder '{parent}': {error.strerror or error}.") from None


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_partial_outputs(folder: str | os.PathLike) -> list[Path]:
    """Delete the staging folders left in ``folder`` by killed writers; return what was removed.

    Only entries named by :func:`partial_folder` for this computer whose process no longer runs are removed:
    a running writer's files (another run into the same folder), anything written on another computer, and
    user files that merely look like partial names are kept. Entries that cannot be removed are skipped.
    """
    removed = []
    for leftover in Path(folder).glob(PARTIAL_PREFIX + "*"):
        owner = _PARTIAL_OWNER.match(leftover.name)
        if owner is None or owner["host"] != _host_tag() or _process_exists(int(owner["pid"])):
            continue
        try:
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        except OSError:
            continue
        removed.append(leftover)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # running as another user (or not a valid pid at all)
    return True


def volume_files(path: str | os.PathLike) -> list[Path]:
    """The files that make up the volume at ``path``: the path itself and, for a ``.mhd``/``.nhdr`` header, its
    data file (as named in an existing header, or every name SimpleITK may write for a new one)."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in DATA_FILE_SUFFIXES:
        return [path]
    named = _data_file_named_in(path) if path.is_file() else None
    if named is not None:
        return [path, named]
    stem = path.name[: len(path.name) - len(suffix)]
    return [path] + [path.with_name(stem + data) for data in DATA_FILE_SUFFIXES[suffix]]


def _data_file_named_in(header: Path) -> Path | None:
    try:
        with open(header, "rb") as handle:
            text = handle.read(1 << 16).decode("latin-1")
    except OSError:
        return None
    match = _DATA_FILE_LINE.search(text)
    if match is None or match["name"].split()[0].upper() in ("LOCAL", "LIST"):
        return None
    return header.parent / match["name"]


def remove_volume(path: str | os.PathLike) -> None:
    """Delete the volume written at ``path`` with its data file, if any (missing files are ignored)."""
    for file in volume_files(path):
        file.unlink(missing_ok=True)


def check_distinct_files(inputs: Mapping[str, str | os.PathLike | None],
                         outputs: Mapping[str, str | os.PathLike | None]) -> None:
    """Raise OutputError if an output would overwrite a file an input is read from, or two outputs share a file.

    ``inputs`` and ``outputs`` name each path by its role (``{"input": ..., "CT": ..., "reference": ...}``);
    None entries are ignored. Files are compared after resolving ``~`` and links (hard links included), and a
    ``.mhd``/``.nhdr`` volume counts with its data file. Nothing is read or written.
    """
    protected = {}
    for role, path in inputs.items():
        if path is not None:
            protected.update({_identity(file): (role, path) for file in volume_files(Path(path).expanduser())})
    claimed: dict[object, str] = {}
    for kind, path in outputs.items():
        if path is None:
            continue
        for file in volume_files(Path(path).expanduser()):
            key = _identity(file)
            if key in protected:
                role, source = protected[key]
                raise OutputError(f"The {kind} output '{path}' is an input (the {role} '{source}'); "
                                  "choose another file name.")
            if key in claimed and claimed[key] != kind:
                raise OutputError(f"The {kind} output '{path}' is used for two outputs (also the {claimed[key]} "
                                  "output); give each its own file name.")
            claimed[key] = kind


def _identity(path: Path) -> object:
    """The same key for two names of one file: (device, inode) when it exists, else the resolved path."""
    try:
        status = path.stat()
    except OSError:
        return path.resolve()
    return (status.st_dev, status.st_ino)


def write_volume(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``image`` to ``path`` (format from the suffix) atomically and return the path.

    Raises
    ------
    OutputError
        If the folder is missing or not writable, or the disk is full; no partial file is left behind.
    """
    path = Path(path)
    if _suffix(path) not in VOLUME_SUFFIXES or _suffix(path) == ".dcm":
        raise OutputError(
            f"Output '{path}' has an unsupported suffix; use one of .nrrd, .nii.gz, .nii, .mha, .mhd."
        )
    with atomic_output(path) as temporary:
        try:
            sitk.WriteImage(image, str(temporary), compress)
        except RuntimeError as error:
            raise OSError(_first_line(error)) from None
    return path


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
