"""The default model at the user level: the same scan presented differently (cropped to the body, shifted in the
field of view, in other units, with a hot bladder elsewhere) keeps its lesion means after denoising; the 3D model
too when cropped or shifted.

The scan is a small IEC phantom blurred to SPECT resolution with Poisson noise at a low count level (fast; the
network's dependence on where a lesion falls on its 8-voxel down-sampling grid shows on any scan)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from SPECTDenoiseLib.hub import load_model, read_catalogue
from SPECTDenoiseLib.inference import denoise
from SPECTDenoiseLib.phantoms import make_phantom
from SPECTDenoiseLib.tiling import AIR_MARGIN, slice_padding

SEED = 990_301
VOXEL_MM = 6.0
FWHM_MM = 12.0
COUNTS_PER_BACKGROUND_VOXEL = 30.0
TOLERANCE_PCT = 1.0


@pytest.fixture(scope="module")
def scan() -> dict:
    phantom = make_phantom("iec", seed=SEED, voxel_mm=VOXEL_MM)
    blurred = ndimage.gaussian_filter(phantom.activity, FWHM_MM / 2.355 / VOXEL_MM)
    body = phantom.ct > -500
    scale = COUNTS_PER_BACKGROUND_VOXEL / float(np.median(blurred[body]))
    low = np.random.default_rng(SEED).poisson(blurred * scale).astype(np.float32)
    spheres = {name: phantom.labels == value for value, name in phantom.label_names.items()
               if name.startswith("sphere") and (phantom.labels == value).sum() >= 8}
    return {"low": low, "body": body, "spheres": spheres}


@pytest.fixture(scope="module")
def model():
    return load_model(read_catalogue()["default"], device="cpu")


@pytest.fixture(scope="module")
def patch_model():
    """The shipped 3D model: MONAI's sliding windows, not slices."""
    return load_model("spect-unet3d", device="cpu")


def run(model, array: np.ndarray) -> np.ndarray:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing((VOXEL_MM,) * 3)
    return sitk.GetArrayFromImage(denoise(image, model, device="cpu").denoised)


def worst_shift_pct(plain: np.ndarray, other: np.ndarray, masks: dict[str, np.ndarray]) -> float:
    return max(abs(100 * (other[mask].mean() / plain[mask].mean() - 1)) for mask in masks.values())


def body_box(body: np.ndarray, margin: int) -> tuple[slice, slice, slice]:
    """All slices, and the body's in-plane bounding box grown by ``margin`` voxels."""
    rows, columns = (np.flatnonzero(body.any(axis=(0, axis))) for axis in (2, 1))
    return (slice(None), slice(max(rows[0] - margin, 0), rows[-1] + 1 + margin),
            slice(max(columns[0] - margin, 0), columns[-1] + 1 + margin))


@pytest.fixture(scope="module")
def plain(model, scan) -> np.ndarray:
    return run(model, scan["low"])


@pytest.mark.parametrize("margin", [0, 2])
def test_cropping_the_scan_to_the_body_keeps_the_lesion_means(model, scan, plain, margin):
    box = body_box(scan["body"], margin)
    cropped = run(model, scan["low"][box])
    assert worst_shift_pct(plain[box], cropped, {k: m[box] for k, m in scan["spheres"].items()}) < TOLERANCE_PCT


@pytest.mark.parametrize("rows, columns", [((3, 0), (5, 2)), ((6, 1), (1, 6))])
def test_moving_the_scan_in_the_field_of_view_keeps_the_lesion_means(model, scan, plain, rows, columns):
    moved = run(model, np.pad(scan["low"], ((0, 0), rows, columns)))
    back = moved[:, rows[0]:rows[0] + plain.shape[1], columns[0]:columns[0] + plain.shape[2]]
    assert worst_shift_pct(plain, back, scan["spheres"]) < TOLERANCE_PCT


@pytest.mark.parametrize("factor", [0.01, 0.1, 10.0, 1000.0])
def test_denoising_k_times_the_scan_gives_k_times_the_lesion_means(model, scan, plain, factor):
    assert worst_shift_pct(plain, run(model, scan["low"] * factor) / factor, scan["spheres"]) < TOLERANCE_PCT


def test_a_hot_bladder_far_from_the_lesions_keeps_their_means(model, scan, plain):
    body, low = scan["body"], scan["low"]
    lesions = np.any(list(scan["spheres"].values()), axis=0)
    far = body & (ndimage.distance_transform_edt(~lesions) > 6) & (ndimage.distance_transform_edt(body) > 3)
    z, y, x = np.argwhere(far)[np.argmax(ndimage.distance_transform_edt(~lesions)[far])]
    hot = low.copy()
    hot[z - 1:z + 2, y - 2:y + 3, x - 2:x + 3] += 40 * float(np.median(low[body]))
    assert worst_shift_pct(plain, run(model, hot), scan["spheres"]) < TOLERANCE_PCT


def test_slice_padding_follows_the_content_and_leaves_air_around_it():
    volume = np.zeros((4, 40, 30), dtype=np.float32)
    volume[:, 10:26, 3:21] = 5.0  # tissue centred on row 17.5, column 11.5
    (top, bottom), (left, right) = slice_padding(volume, 8)
    assert (40 + top + bottom) % 8 == 0 and (30 + left + right) % 8 == 0
    assert (top + 17) % 8 == 0 and (left + 11) % 8 == 0
    assert min(top + 10, bottom + 14, left + 3, right + 9) >= AIR_MARGIN
    shifted = np.pad(volume, ((0, 0), (5, 0), (3, 0)))[:, :40, :30]
    (shifted_top, _), (shifted_left, _) = slice_padding(shifted, 8)
    assert (shifted_top + 5 - top) % 8 == 0 and (shifted_left + 3 - left) % 8 == 0


@pytest.mark.parametrize("box_margin, rows, columns", [(0, (0, 0), (0, 0)), (None, (3, 0), (5, 2))])
def test_the_3d_model_keeps_the_lesion_means_of_a_cropped_or_moved_scan(patch_model, scan, box_margin, rows,
                                                                          columns):
    box = body_box(scan["body"], box_margin) if box_margin is not None else (slice(None),) * 3
    plain = run(patch_model, scan["low"])[box]
    moved = run(patch_model, np.pad(scan["low"][box], ((0, 0), rows, columns)))
    back = moved[:, rows[0]:rows[0] + plain.shape[1], columns[0]:columns[0] + plain.shape[2]]
    assert worst_shift_pct(plain, back, {k: m[box] for k, m in scan["spheres"].items()}) < TOLERANCE_PCT
