"""Shipped models at the user level: the same scan presented differently keeps its lesion means after denoising.
Every shipped deterministic model (and so the diffusion model's image, which is the default model's) follows the
scan's units (× 0.01 … × 1000) and ignores a hot bladder elsewhere; the default and the 3D model also keep them when
the scan is cropped to the body or shifted in the field of view.

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
DETERMINISTIC = [entry["id"] for entry in read_catalogue()["models"]
                 if "path" in entry and entry["kind"] == "deterministic"]


@pytest.fixture(scope="module")
def scan() -> dict:
    phantom = make_phantom("iec", seed=SEED, voxel_mm=VOXEL_MM)
    blurred = ndimage.gaussian_filter(phantom.activity, FWHM_MM / 2.355 / VOXEL_MM)
    body = phantom.ct > -500
    scale = COUNTS_PER_BACKGROUND_VOXEL / float(np.median(blurred[body]))
    low = np.random.default_rng(SEED).poisson(blurred * scale).astype(np.float32)
    spheres = {name: phantom.labels == value for value, name in phantom.label_names.items()
               if name.startswith("sphere") and (phantom.labels == value).sum() >= 8}
    return {"low": low, "body": body, "spheres": spheres, "ct": phantom.ct.astype(np.float32)}


@pytest.fixture(scope="module")
def model():
    return load_model(read_catalogue()["default"], device="cpu")


@pytest.fixture(scope="module")
def patch_model():
    """The shipped 3D model: MONAI's sliding windows, not slices."""
    return load_model("spect-unet3d", device="cpu")


@pytest.fixture(scope="module", params=DETERMINISTIC)
def any_model(request):
    """Each shipped deterministic model in turn."""
    return load_model(request.param, device="cpu")


def run(model, array: np.ndarray, ct: np.ndarray | None = None) -> np.ndarray:
    """Denoise ``array`` with ``model`` (with the CT ``ct`` of the same grid when the model needs one)."""
    image = _image(array)
    ct_image = _image(ct) if model.config.needs_ct else None
    return sitk.GetArrayFromImage(denoise(image, model, ct=ct_image, device="cpu").denoised)


def _image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing((VOXEL_MM,) * 3)
    return image


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


@pytest.fixture(scope="module")
def any_plain(any_model, scan) -> np.ndarray:
    return run(any_model, scan["low"], scan["ct"])


@pytest.mark.parametrize("factor", [0.01, 0.1, 10.0, 1000.0])
def test_denoising_k_times_the_scan_gives_k_times_the_lesion_means(any_model, scan, any_plain, factor):
    scaled = run(any_model, scan["low"] * factor, scan["ct"]) / factor
    assert worst_shift_pct(any_plain, scaled, scan["spheres"]) < TOLERANCE_PCT


def test_a_hot_bladder_far_from_the_lesions_keeps_their_means(any_model, scan, any_plain):
    body, low = scan["body"], scan["low"]
    lesions = np.any(list(scan["spheres"].values()), axis=0)
    far = body & (ndimage.distance_transform_edt(~lesions) > 6) & (ndimage.distance_transform_edt(body) > 3)
    z, y, x = np.argwhere(far)[np.argmax(ndimage.distance_transform_edt(~lesions)[far])]
    hot = low.copy()
    hot[z - 1:z + 2, y - 2:y + 3, x - 2:x + 3] += 40 * float(np.median(low[body]))
    assert worst_shift_pct(any_plain, run(any_model, hot, scan["ct"]), scan["spheres"]) < TOLERANCE_PCT


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


def test_an_air_margin_around_the_whole_scan_keeps_the_lesion_means(any_model, scan, any_plain):
    """16 voxels of air on every side, axially too (a reconstruction with a larger field of view)."""
    margin = ((AIR_MARGIN, AIR_MARGIN),) * 3
    padded = run(any_model, np.pad(scan["low"], margin), np.pad(scan["ct"], margin, constant_values=-1000.0))
    back = padded[tuple(slice(AIR_MARGIN, AIR_MARGIN + n) for n in scan["low"].shape)]
    assert worst_shift_pct(any_plain, back, scan["spheres"]) < TOLERANCE_PCT
