"""Measured SPECT projections from a DICOM NM TOMO file: read, thin binomially, reconstruct (the papers' method).

Angle convention (DICOM → our projector)
----------------------------------------
DICOM gives each detector's Start Angle φ₀ (0° = detector at the patient's anterior), the Angular Step Δ > 0
and the Rotation Direction; as in PyTomography (``pytomography.io.SPECT.dicom``) the angle of view k is
φ = φ₀ + kΔ for CC and φ = φ₀ − kΔ for CW, so φ grows counter-clockwise as seen from the patient's feet
(for a head-first supine patient: anterior 0°, patient's right 90°, posterior 180°, patient's left 270°).
:class:`~SPECTDenoiseLib.simulation.SPECTProjector` puts the camera at (x, y) = (R·sinθ, −R·cosθ) in LPS, so
θ grows clockwise from the anterior (patient's left at 90°). Hence **θ = (−φ) mod 360**. The projection
column u increases towards the patient's left in the anterior view (the usual display of an anterior planar
image) and turns rigidly with the detector, as our projector's u axis does, so columns are kept as stored.
Rows run from head (row 0) to feet; the projector's z axis runs the other way (LPS z towards the head), so
:func:`thin_and_reconstruct` flips the rows. Centre-of-rotation offsets, tilt and non-circular orbits are not
modelled (the orbit radius is the mean Radial Position).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError


@dataclass
class NMProjections:
    """Measured projections of one energy window.

    counts : [angle, row, column] float32 counts, rows from head to feet, views sorted by ``angles_deg``.
    angles_deg : our projector's camera angles θ (degrees, ascending); ``dicom_angles_deg`` the DICOM φ.
    pixel_spacing_mm : (row, column) spacing in mm.
    orbit_radius_mm : mean distance from the rotation axis to the collimator face.
    detectors : number of detectors that contributed views.
    energy_window : the window used, e.g. "EM (126–154 keV)".
    first_row_z_mm : LPS z of row 0 from the detector's Image Position (Patient), or None if absent.
    orbit_assumed : True when no Radial Position was stored and the default orbit was used.
    """

    counts: np.ndarray
    angles_deg: np.ndarray
    dicom_angles_deg: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    orbit_radius_mm: float
    detectors: int
    energy_window: str
    first_row_z_mm: float | None = None
    orbit_assumed: bool = False


def is_nm_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a single DICOM file whose Modality is NM (projections or a reconstruction)."""
    from .io import is_dicom_file

    path = Path(path)
    if not path.is_file() or not is_dicom_file(path):
        return False
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except Exception:  # noqa: BLE001 - an unreadable file is simply not an NM file here
        return False
    return str(header.get("Modality", "")).upper() == "NM"


def _vector(dataset, keyword: str, frames: int) -> np.ndarray:
    """A frame-index vector (1-based), or all ones when the header omits it."""
    values = dataset.get(keyword)
    if values is None:
        return np.ones(frames, dtype=int)
    values = np.atleast_1d(np.asarray(values, dtype=int))
    if values.size != frames:
        raise InputError(f"The NM file's {keyword} has {values.size} entries for {frames} frames; it is inconsistent.")
    return values


def _item(sequence, index: int):
    return sequence[index] if sequence is not None and 0 <= index < len(sequence) else None


def _window_label(item) -> str:
    if item is None:
        return "window 1"
    name = str(item.get("EnergyWindowName", "") or "window")
    ranges = item.get("EnergyWindowRangeSequence")
    if ranges:
        low, high = ranges[0].get("EnergyWindowLowerLimit"), ranges[0].get("EnergyWindowUpperLimit")
        if low is not None and high is not None:
            return f"{name} ({float(low):g}–{float(high):g} keV)"
    return name


def read_nm_projections(path: str | os.PathLike, energy_window: int | None = None) -> NMProjections:
    """Read the projections of a DICOM NM TOMO (acquisition) file.

    Frames are windows × detectors × rotations × views, labelled by Energy Window / Detector / Rotation /
    Angular View Vector (Frame Increment Pointer names those present; a missing vector means one value); the
    frames of one view in several time slots or R-R intervals (GATED TOMO) are summed into the ungated view.
    Counts are the stored values mapped as :func:`SPECTDenoiseLib.dicom.value_mapping` maps them.
    ``energy_window`` is the 1-based window to use; None takes the only window and refuses to guess between
    several (scanners put the photopeak first, so 1 is usually the right choice). See the module docstring for
    the angle convention. Orbit radius: the mean Radial Position of the detectors (or rotations); without one,
    half the transaxial field of view is assumed (camera face at the edge of the field of view).

    Raises
    ------
    InputError
        Not DICOM NM, a reconstruction (RECON TOMO), not tomographic, no rotation information, or an ambiguous
        or unknown energy window.
    """
    import pydicom

    from .dicom import _floats, decode_pixels, value_mapping

    path = Path(path)
    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # noqa: BLE001 - pydicom raises many types for bad files
        raise InputError(f"Input '{path}' is not a readable DICOM file ({error}).") from None
    modality = str(dataset.get("Modality", "")).upper()
    if modality != "NM":
        raise InputError(f"Input '{path}' is a {modality or 'non-NM'} DICOM file, not nuclear-medicine (NM) "
                         "projections; give a SPECT acquisition file or a reconstructed volume.")
    image_type = [str(v).upper() for v in (dataset.get("ImageType") or [])]
    if any("RECON" in v for v in image_type):
        raise InputError(f"Input '{path}' is a reconstructed SPECT volume (RECON TOMO), not projections; export it "
                         "as a volume (NRRD, NIfTI or a DICOM series folder) and run `spectdenoise simulate` on that.")
    if not any(v in ("TOMO", "GATED TOMO") for v in image_type):
        kind = "/".join(image_type) or "unknown"
        raise InputError(f"Input '{path}' is an NM file of type {kind}, not a "
                         "tomographic (TOMO) acquisition.")
    rotations = dataset.get("RotationInformationSequence")
    if not rotations:
        raise InputError(f"Input '{path}' has no Rotation Information Sequence, so the projection angles are unknown.")
    pixels = np.asarray(decode_pixels(dataset, path), dtype=np.float64)
    if pixels.ndim == 2:
        pixels = pixels[None]
    frames = pixels.shape[0]
    slope, intercept = value_mapping(dataset, path)
    pixels = pixels * slope + intercept

    windows = _vector(dataset, "EnergyWindowVector", frames)
    detectors = _vector(dataset, "DetectorVector", frames)
    rotation_of = _vector(dataset, "RotationVector", frames)
    views = dataset.get("AngularViewVector")
    if views is None:
        views = np.zeros(frames, dtype=int)
        for key in set(zip(windows, detectors, rotation_of)):
            members = np.flatnonzero((windows == key[0]) & (detectors == key[1]) & (rotation_of == key[2]))
            views[members] = np.arange(1, members.size + 1)
    else:
        views = _vector(dataset, "AngularViewVector", frames)

    window_items = dataset.get("EnergyWindowInformationSequence")
    present = sorted(set(windows.tolist()))
    if energy_window is None:
        if len(present) > 1:
            labels = ", ".join(f"{w}: {_window_label(_item(window_items, w - 1))}" for w in present)
            raise InputError(f"Input '{path}' holds {len(present)} energy windows ({labels}); choose one with "
                             "--energy-window N (1 is usually the photopeak).")
        energy_window = present[0]
    if energy_window not in present:
        raise InputError(f"Energy window {energy_window} is not in '{path}' (it has {present}).")
    keep = windows == energy_window

    detector_items = dataset.get("DetectorInformationSequence")
    angles = np.zeros(frames)
    for frame in np.flatnonzero(keep):
        rotation = _item(rotations, rotation_of[frame] - 1) or rotations[0]
        detector = _item(detector_items, detectors[frame] - 1)
        start = detector.get("StartAngle") if detector is not None else None
        start = float(rotation.get("StartAngle", 0.0) if start is None else start)
        step = float(rotation.get("AngularStep", 0.0) or 0.0)
        if step <= 0 or "RotationDirection" not in rotation:
            raise InputError(f"Input '{path}' lacks the Angular Step or Rotation Direction, so the projection angles "
                             "are unknown.")
        sign = 1.0 if str(rotation.RotationDirection).upper() in ("CC", "CCW") else -1.0
        angles[frame] = (start + sign * step * (views[frame] - 1)) % 360.0
    for items in (detector_items or [], rotations):
        radii = [r for item in items if item.get("RadialPosition") is not None
                 for r in np.atleast_1d(np.asarray(item.RadialPosition, dtype=float))]
        if radii:
            break

    row_mm, column_mm = _floats(dataset.get("PixelSpacing"), 2, "PixelSpacing", path, spacing=True)
    columns = pixels.shape[2]
    orbit_assumed = not radii
    orbit = 0.5 * columns * column_mm if orbit_assumed else float(np.mean(radii))

    # GATED TOMO: one view's frames in several time slots or R-R intervals add up to the ungated view
    views_of = np.stack([detectors, rotation_of, views], axis=1)[keep]
    _, first, view_of = np.unique(views_of, axis=0, return_index=True, return_inverse=True)
    counts = np.zeros((first.size, *pixels.shape[1:]))
    np.add.at(counts, view_of.ravel(), pixels[keep])
    dicom_angles = angles[keep][first]
    ours = (-dicom_angles) % 360.0
    order = np.argsort(ours, kind="stable")
    position = _item(detector_items, 0)
    position = None if position is None else position.get("ImagePositionPatient")
    return NMProjections(
        counts=counts[order].astype(np.float32), angles_deg=ours[order], dicom_angles_deg=dicom_angles[order],
        pixel_spacing_mm=(row_mm, column_mm), orbit_radius_mm=orbit,
        detectors=len(set(detectors[keep].tolist())),
        energy_window=_window_label(_item(window_items, energy_window - 1)),
        first_row_z_mm=None if position is None else float(position[2]), orbit_assumed=orbit_assumed,
    )


def projection_geometry(projections: NMProjections):
    """The reconstruction grid as an empty SimpleITK image: columns × columns × rows voxels.

    Voxel spacing is (column, column, row) mm; axes are LPS with identity direction (a head-first supine
    patient is assumed); x and y are centred on the rotation axis, which is taken to be x = y = 0; z runs from
    the last row (feet) to row 0 (head), whose z comes from the detector's Image Position (Patient) when stored,
    else the slab is centred on z = 0.
    """
    import SimpleITK as sitk

    _, rows, columns = projections.counts.shape
    row_mm, column_mm = projections.pixel_spacing_mm
    top = projections.first_row_z_mm if projections.first_row_z_mm is not None else 0.5 * (rows - 1) * row_mm
    image = sitk.Image(columns, columns, rows, sitk.sitkFloat32)
    image.SetSpacing((column_mm, column_mm, row_mm))
    half = 0.5 * (columns - 1) * column_mm
    image.SetOrigin((-half, -half, top - (rows - 1) * row_mm))
    return image


def thin_and_reconstruct(projections: NMProjections, fractions: Sequence[float], collimator: str = "Tc99m-LEHR",
                         iterations: int = 4, subsets: int = 8, seed: int = 0, mu_map: np.ndarray | None = None,
                         postfilter_fwhm_mm: float = 0.0, device: str = "cpu",
                         progress: Callable[[float, str], None] | None = None):
    """Thin the measured counts to each fraction F and reconstruct full and thinned data identically.

    Parameters
    ----------
    projections : from :func:`read_nm_projections`.
    fractions : count fractions F in (0, 1]; each is thinned independently from the measured counts.
    collimator : preset for the resolution model and the water μ.
    iterations, subsets : OSEM settings (subsets ≤ number of views).
    seed : seed of the binomial draws.
    mu_map : attenuation [z, y, x] (1/mm) on :func:`projection_geometry`'s grid; None outlines a water body on a
        first reconstruction without attenuation (as ``simulate_pair`` does without a CT).

    Returns
    -------
    (full, {F: low}, info): SimpleITK float32 images on :func:`projection_geometry`'s grid, in counts per voxel of
    the full acquisition (low images divided by F); ``info`` holds counts_full, counts_low, orbit_radius_mm,
    angles and the energy window.
    """
    import torch

    from .io import array_to_image, check_finite
    from .simulate import check_fraction, reconstruct_acquisitions
    from .simulation import SPECTProjector, get_collimator, thin_counts, water_body_mu

    preset = get_collimator(collimator)
    fractions = [check_fraction(f) for f in fractions]
    counts = np.ascontiguousarray(projections.counts[:, ::-1, :], dtype=np.float32)
    check_finite(counts, "The projections")
    if counts.min() < 0 or not counts.any():
        raise InputError("The projections have negative values or no counts; they are not measured counts.")
    views = counts.shape[0]
    if not 1 <= subsets <= views or iterations < 1:
        raise InputError(f"Need 1 ≤ subsets ≤ {views} views and ≥ 1 iteration (got {subsets}, {iterations}).")
    reference = projection_geometry(projections)
    spacing = tuple(reversed(reference.GetSpacing()))
    shape = tuple(reversed(reference.GetSize()))
    measured = torch.from_numpy(np.rint(counts))
    rng = np.random.default_rng(seed)
    report = progress or (lambda fraction, stage: None)

    def projector(mu: np.ndarray | None) -> SPECTProjector:
        return SPECTProjector(shape, spacing, preset, projections.angles_deg, projections.orbit_radius_mm, mu,
                              device=device)

    with torch.inference_mode():
        acquisitions = [(1.0, measured)] + [(f, thin_counts(measured, f, rng)) for f in fractions]
        if mu_map is None:
            report(0.0, "outlining the body")
            first = reconstruct_acquisitions(projector(None), acquisitions[:1], iterations, subsets)[0]
            mu_map = water_body_mu(first, spacing, preset)
        mu_map = np.asarray(mu_map, dtype=np.float32)
        if mu_map.shape != shape:
            raise InputError(f"The attenuation map has shape {mu_map.shape}, the reconstruction grid {shape}.")
        images = reconstruct_acquisitions(projector(mu_map), acquisitions, iterations, subsets,
                                          postfilter_fwhm_mm=postfilter_fwhm_mm, progress=report)
    info = {
        "counts_full": float(measured.sum()), "counts_low": {f: float(c.sum()) for f, c in acquisitions[1:]},
        "orbit_radius_mm": projections.orbit_radius_mm, "orbit_assumed": projections.orbit_assumed,
        "angles_deg": projections.angles_deg.tolist(), "energy_window": projections.energy_window,
        "collimator": preset.name, "iterations": int(iterations), "subsets": int(subsets), "seed": int(seed),
    }
    full = array_to_image(images[0], reference)
    return full, {f: array_to_image(image, reference) for f, image in zip(fractions, images[1:])}, info
