"""DICOM NM TOMO projections: reading (frame order, angles), thinning and reconstruction, and the CLI path.

The synthetic files hold the projections of a hot point source computed analytically from the DICOM convention
(detector angle φ from the anterior, counter-clockwise seen from the feet; columns towards the patient's left in
the anterior view), independently of our projector, so a reconstruction at the right place checks the angle and
direction mapping end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.projections import read_nm_projections, thin_and_reconstruct

torch.set_num_threads(1)

N, SPACING, VIEWS, TOP_Z = 32, 4.0, 32, 62.0
SOURCE = (30.0, -20.0, 14.0)  # LPS mm: patient's left, anterior, above the centre


def dicom_angles(direction: str) -> tuple[np.ndarray, np.ndarray]:
    """(detector, φ) of each frame: two detectors in H mode, 16 views each, 11.25° steps."""
    sign = 1.0 if direction == "CC" else -1.0
    step = 360.0 / VIEWS
    detectors = np.repeat([1, 2], VIEWS // 2)
    views = np.tile(np.arange(VIEWS // 2), 2)
    return detectors, (np.where(detectors == 1, 0.0, 180.0) + sign * step * views) % 360.0


def point_projection(phi_deg: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts [row, column] of the source seen by a detector at DICOM angle φ (σ = 4 mm blur)."""
    phi = np.deg2rad(phi_deg)
    u = SOURCE[0] * np.cos(phi) - SOURCE[1] * np.sin(phi)
    columns = (np.arange(N) - (N - 1) / 2) * SPACING
    rows_z = TOP_Z - np.arange(N) * SPACING
    blob = np.exp(-((columns[None] - u) ** 2 + (rows_z[:, None] - SOURCE[2]) ** 2) / (2 * 4.0**2))
    return rng.poisson(400.0 * blob + 2.0)


def write_nm(path, direction: str = "CC", image_type: str = "TOMO", modality: str = "NM", windows: int = 1) -> None:
    rng = np.random.default_rng(1)
    detectors, phis = dicom_angles(direction)
    frames = np.concatenate([np.stack([point_projection(p, rng) for p in phis])] * windows).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.20"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ImageType = modality, ["ORIGINAL", "PRIMARY", image_type, "EMISSION"]
    ds.Rows = ds.Columns = N
    ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [SPACING, SPACING]
    ds.FrameIncrementPointer = [0x00540010, 0x00540020, 0x00540050, 0x00540090]
    ds.EnergyWindowVector = np.repeat(np.arange(1, windows + 1), VIEWS).tolist()
    ds.DetectorVector = np.tile(detectors, windows).tolist()
    ds.RotationVector = [1] * frames.shape[0]
    ds.AngularViewVector = np.tile(np.tile(np.arange(1, VIEWS // 2 + 1), 2), windows).tolist()
    rotation = Dataset()
    rotation.StartAngle, rotation.AngularStep, rotation.RotationDirection = 0.0, 360.0 / VIEWS, direction
    rotation.NumberOfFramesInRotation, rotation.ScanArc = VIEWS // 2, 180.0
    ds.RotationInformationSequence = [rotation]
    ds.DetectorInformationSequence = []
    for start in (0.0, 180.0):
        detector = Dataset()
        detector.StartAngle = start
        detector.RadialPosition = [150.0] * (VIEWS // 2)
        detector.ImagePositionPatient = [-62.0, -62.0, TOP_Z]
        ds.DetectorInformationSequence.append(detector)
    ds.EnergyWindowInformationSequence = []
    for name, low, high in (("EM", 126.0, 154.0), ("SC", 108.0, 126.0))[:windows]:
        window, band = Dataset(), Dataset()
        band.EnergyWindowLowerLimit, band.EnergyWindowUpperLimit = low, high
        window.EnergyWindowName, window.EnergyWindowRangeSequence = name, [band]
        ds.EnergyWindowInformationSequence.append(window)
    ds.PixelData = frames.tobytes()
    ds.save_as(path, enforce_file_format=True)


def hottest_point(image: sitk.Image) -> np.ndarray:
    index = np.unravel_index(np.argmax(sitk.GetArrayViewFromImage(image)), image.GetSize()[::-1])
    return np.array(image.TransformIndexToPhysicalPoint([int(i) for i in index[::-1]]))


def test_reading_sorts_views_by_projector_angle_and_keeps_their_frames(tmp_path):
    path = tmp_path / "cw.dcm"
    write_nm(path, "CW")
    projections = read_nm_projections(path)
    assert projections.counts.shape == (VIEWS, N, N)
    assert np.allclose(projections.angles_deg, np.arange(VIEWS) * 360.0 / VIEWS)
    assert np.allclose(projections.dicom_angles_deg, (-projections.angles_deg) % 360.0)
    assert projections.detectors == 2 and projections.orbit_radius_mm == pytest.approx(150.0)
    assert projections.energy_window == "EM (126–154 keV)"
    columns = (np.arange(N) - (N - 1) / 2) * SPACING
    blobs = np.clip(projections.counts - 10.0, 0, None).sum(axis=1)  # above the flat background of 2 per pixel
    centroid = (blobs * columns).sum(axis=1) / blobs.sum(axis=1)
    phi = np.deg2rad(projections.dicom_angles_deg)
    expected = SOURCE[0] * np.cos(phi) - SOURCE[1] * np.sin(phi)
    assert np.abs(centroid - expected).max() < 4.0  # each view's blob is where its DICOM angle puts it


@pytest.mark.parametrize("direction", ["CC", "CW"])
def test_reconstruction_puts_an_off_centre_source_in_place(tmp_path, direction):
    path = tmp_path / f"{direction}.dcm"
    write_nm(path, direction)
    full, _, _ = thin_and_reconstruct(read_nm_projections(path), (0.5,), iterations=2, subsets=4)
    assert np.linalg.norm(hottest_point(full) - np.array(SOURCE)) < 6.0


def test_thinning_scales_counts_by_the_fraction_and_keeps_image_units(tmp_path):
    path = tmp_path / "cc.dcm"
    write_nm(path)
    full, low, info = thin_and_reconstruct(read_nm_projections(path), (0.25,), iterations=1, subsets=4, seed=3)
    assert info["counts_low"][0.25] / info["counts_full"] == pytest.approx(0.25, rel=0.03)
    full_sum, low_sum = (float(sitk.GetArrayViewFromImage(i).sum()) for i in (full, low[0.25]))
    assert low_sum == pytest.approx(full_sum, rel=0.1)


def test_several_windows_need_a_choice(tmp_path):
    path = tmp_path / "two.dcm"
    write_nm(path, windows=2)
    with pytest.raises(InputError, match="--energy-window"):
        read_nm_projections(path)
    assert read_nm_projections(path, energy_window=2).energy_window.startswith("SC")


def spectdenoise(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "SPECTDenoiseLib", *args], capture_output=True, text=True,
                          timeout=300, env=env, check=False)


def test_simulate_command_thins_and_reconstructs_a_projection_file(tmp_path):
    path, low, full = tmp_path / "proj.dcm", tmp_path / "low.nrrd", tmp_path / "full.nrrd"
    write_nm(path)
    result = spectdenoise("simulate", str(path), "-o", str(low), "--fraction", "0.25", "--full-output", str(full),
                          "--iterations", "1", "--subsets", "4")
    assert result.returncode == 0, result.stderr
    low_image, full_image = sitk.ReadImage(str(low)), sitk.ReadImage(str(full))
    assert low_image.GetSize() == (N, N, N) and low_image.GetSpacing() == (SPACING,) * 3
    assert np.linalg.norm(hottest_point(full_image) - np.array(SOURCE)) < 6.0


@pytest.mark.parametrize("kind", ["recon", "ct"])
def test_reconstructions_and_ct_files_are_refused_in_one_sentence(tmp_path, kind):
    path = tmp_path / f"{kind}.dcm"
    write_nm(path, image_type="RECON TOMO") if kind == "recon" else write_nm(path, modality="CT")
    result = spectdenoise("simulate", str(path), "-o", str(tmp_path / "out.nrrd"), "--fraction", "0.5")
    assert result.returncode == 3, result.stderr
    message = result.stderr.strip()
    assert "Traceback" not in message and len(message.splitlines()) == 1
    if kind == "recon":
        assert "RECON TOMO" in message and "spectdenoise simulate" in message
    with pytest.raises(InputError):
        read_nm_projections(path)
    assert pydicom.dcmread(path).Modality == ("NM" if kind == "recon" else "CT")
