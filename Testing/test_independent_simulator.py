"""The independent benchmark simulator (PyTomography): geometry, units, placement and counting statistics.

Runs only where PyTomography is installed (the ``benchmark`` extra); CI installs the ``test`` extra only.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy import ndimage

from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.phantoms import Phantom
from SPECTDenoiseLib.simulation import get_collimator

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pytomography") is None,
                                reason="PyTomography is not installed (it comes with the benchmark extra).")

from benchmarks.independent_simulator import (  # noqa: E402
    CachedAttenuationTransform,
    from_pytomography,
    simulate_independent,
    system_matrix,
    to_pytomography,
)

LEHR = get_collimator("Tc99m-LEHR")
SPHERE_CENTRE = (21, 13, 25)  # voxel (z, y, x): off-centre on every axis


def cylinder_phantom(shape: tuple[int, int, int] = (32, 40, 40),
                     spacing: tuple[float, float, float] = (5.0, 6.0, 6.0),
                     sphere_centre: tuple[int, int, int] = SPHERE_CENTRE) -> Phantom:
    """Water cylinder (radius 90 mm, activity 1) with a hot sphere (radius 16 mm, activity 6)."""
    z, y, x = np.indices(shape, dtype=float)
    centre = (shape[1] - 1) / 2
    body = (((y - centre) * spacing[1]) ** 2 + ((x - centre) * spacing[2]) ** 2 <= 90.0**2)
    body &= (z >= shape[0] // 8) & (z < shape[0] - shape[0] // 8)
    sphere = sum(((g - c) * s) ** 2 for g, c, s in zip((z, y, x), sphere_centre, spacing)) <= 16.0**2
    activity = np.where(sphere, 6.0, np.where(body, 1.0, 0.0)).astype(np.float32)
    mu_map = np.where(body, LEHR.mu_water_per_mm, 0.0).astype(np.float32)
    labels = (body.astype(np.int16) + sphere).astype(np.int16)
    return Phantom(activity, mu_map, np.zeros_like(activity), labels, {1: "background", 2: "sphere"}, spacing,
                   "cylinder", 0, LEHR.name, 2e6)


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return cylinder_phantom()


@pytest.fixture(scope="module")
def scans(phantom: Phantom) -> dict:
    return simulate_independent(phantom, [0.25], draws=2, seed=1, iterations=4, subsets=4, angles=24)


def test_axis_order_round_trips() -> None:
    volume = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    obj = to_pytomography(volume)
    assert tuple(obj.shape) == (4, 3, 2)
    assert obj[3, 1, 0] == volume[0, 1, 3]
    np.testing.assert_array_equal(from_pytomography(obj), volume)


def point_projection(point: tuple[int, int, int], mu_map: np.ndarray, angles: list[float],
                     spacing: tuple[float, float, float] = (3.0, 2.0, 2.0), orbit_mm: float = 200.0) -> np.ndarray:
    """PyTomography projections [view, r, z] of a unit point source at voxel ``point`` (z, y, x)."""
    activity = np.zeros(mu_map.shape, np.float32)
    activity[point] = 1.0
    matrix = system_matrix(mu_map.shape, spacing, mu_map, LEHR, angles, orbit_mm)
    return matrix.forward(to_pytomography(activity)).cpu().numpy()


def fwhm_mm(profile: np.ndarray, spacing_mm: float) -> float:
    """FWHM of a Gaussian with the profile's second moment."""
    position = np.arange(profile.size) * spacing_mm
    mean = (profile * position).sum() / profile.sum()
    return float(np.sqrt((profile * (position - mean) ** 2).sum() / profile.sum()) * 2.3548)


def test_point_source_is_attenuated_and_blurred_in_millimetres() -> None:
    """Centre of a water cylinder (radius 100 mm) seen from 200 mm: exp(−μ·100 mm) survives, and the blur is our
    preset's FWHM at 200 mm less the collimator-to-crystal gap PyTomography leaves out (a mm/cm slip is 10×)."""
    shape, spacing = (9, 129, 129), (3.0, 2.0, 2.0)
    _, y, x = np.indices(shape, dtype=float)
    water = np.where(((y - 64) * 2.0) ** 2 + ((x - 64) * 2.0) ** 2 <= 100.0**2, LEHR.mu_water_per_mm, 0.0)
    angles = [0.0, 90.0, 180.0, 270.0]
    attenuated = point_projection((4, 64, 64), water.astype(np.float32), angles)
    free = point_projection((4, 64, 64), np.zeros(shape, np.float32), angles)
    transmitted = attenuated.sum(axis=(1, 2)) / free.sum(axis=(1, 2))
    np.testing.assert_allclose(transmitted, np.exp(-LEHR.mu_water_per_mm * 100.0), rtol=0.05)
    for view in free:
        assert 0.9 < fwhm_mm(view.sum(axis=1), spacing[2]) / LEHR.fwhm_mm(200.0) < 1.0
        assert 0.9 < fwhm_mm(view.sum(axis=0), spacing[0]) / LEHR.fwhm_mm(200.0) < 1.0


def test_camera_rotates_about_the_slice_axis() -> None:
    """A point 20 voxels off the axis in y stays on its slice in every view and sweeps ±20 bins across the
    detector as the camera turns."""
    angles = [0.0, 45.0, 90.0, 180.0, 270.0]
    projections = point_projection((2, 84, 64), np.zeros((9, 129, 129), np.float32), angles)
    rows = projections.sum(axis=1).argmax(axis=1)
    bins = projections.sum(axis=2).argmax(axis=1)
    assert (rows == 2).all()
    assert bins.max() - bins.min() == 40
    assert sorted(abs(bins - 64)) == [0, 0, 14, 20, 20]


def test_cached_attenuation_is_pytomographys(phantom: Phantom) -> None:
    """Keeping the per-view detection probabilities changes no number of PyTomography's own transform."""
    from pytomography.transforms.SPECT import SPECTAttenuationTransform

    angles = [0.0, 30.0, 200.0]
    matrix = system_matrix(phantom.activity.shape, phantom.spacing_mm, phantom.mu_map, LEHR, angles, 150.0)
    assert isinstance(matrix.obj2obj_transforms[0], CachedAttenuationTransform)
    obj = to_pytomography(phantom.activity)

    def project_and_back() -> list[np.ndarray]:
        projections = matrix.forward(obj)
        return [projections.cpu().numpy(), matrix.backward(projections).cpu().numpy()]

    filling, cached = project_and_back(), project_and_back()
    stock = SPECTAttenuationTransform(matrix.obj2obj_transforms[0].attenuation_map)
    stock.configure(matrix.object_meta, matrix.proj_meta)
    matrix.obj2obj_transforms[0] = stock
    reference = project_and_back()
    for result in (filling, cached):
        np.testing.assert_array_equal(result[0], reference[0])
        np.testing.assert_array_equal(result[1], reference[1])


@pytest.mark.slow
def test_hot_sphere_is_reconstructed_where_it_is(phantom: Phantom, scans: dict) -> None:
    image = scans["noise_free"]
    assert image.shape == phantom.activity.shape and image.dtype == np.float32
    hot = np.where(image > 0.5 * image.max(), image, 0.0)
    centroid = [float((hot * g).sum() / hot.sum()) for g in np.indices(image.shape)]
    np.testing.assert_allclose(centroid, SPHERE_CENTRE, atol=1.0)


def uniform_region(phantom: Phantom) -> np.ndarray:
    """Inside the cylinder, three voxels from its edge and four from the sphere."""
    body, sphere = phantom.labels > 0, phantom.labels == 2
    return ndimage.binary_erosion(body, iterations=3) & ~ndimage.binary_dilation(sphere, iterations=4)


@pytest.mark.slow
def test_uniform_region_is_in_activity_units(phantom: Phantom, scans: dict) -> None:
    region = uniform_region(phantom)
    images = [scans["noise_free"], *scans["full"], *scans["low"][0.25]]
    for image in images:
        assert image[region].mean() == pytest.approx(1.0, rel=0.1)


@pytest.mark.slow
def test_draws_are_poisson_and_thinned(phantom: Phantom, scans: dict) -> None:
    settings = scans["settings"]
    full, low = scans["full"], scans["low"][0.25]
    assert len(full) == len(low) == 2
    assert not np.array_equal(full[0], full[1])
    np.testing.assert_allclose(settings["counts_full"], phantom.total_counts, rtol=5 * phantom.total_counts**-0.5)
    np.testing.assert_allclose(settings["counts_low"][0.25], 0.25 * np.array(settings["counts_full"]), rtol=0.01)
    region = uniform_region(phantom)
    noise_full = np.std([image[region] - scans["noise_free"][region] for image in full])
    noise_low = np.std([image[region] - scans["noise_free"][region] for image in low])
    assert 1.6 < noise_low / noise_full < 2.4  # ≈ √(1 / 0.25)


@pytest.mark.slow
def test_inputs_are_not_modified(phantom: Phantom, scans: dict) -> None:
    fresh = cylinder_phantom()
    np.testing.assert_array_equal(phantom.activity, fresh.activity)
    np.testing.assert_array_equal(phantom.mu_map, fresh.mu_map)


@pytest.mark.slow
def test_same_seed_same_scans() -> None:
    small = cylinder_phantom((16, 24, 24), (10.0, 10.0, 10.0), (8, 9, 14))
    first, second, other = (simulate_independent(small, [0.5], draws=1, seed=s, iterations=1, subsets=2, angles=8)
                            for s in (7, 7, 8))
    np.testing.assert_array_equal(first["low"][0.5][0], second["low"][0.5][0])
    assert not np.array_equal(first["low"][0.5][0], other["low"][0.5][0])


@pytest.mark.parametrize("change, message", [
    ({"fractions": [0.0]}, "fraction"),
    ({"fractions": [1.5]}, "fraction"),
    ({"draws": 0}, "draw"),
    ({"subsets": 9, "angles": 8}, "subsets"),
])
def test_bad_settings_are_refused(change: dict, message: str) -> None:
    options = {"fractions": [0.5], "draws": 1, "seed": 0, "angles": 8, **change}
    with pytest.raises(InputError, match=message):
        simulate_independent(cylinder_phantom((16, 24, 24), (10.0, 10.0, 10.0), (8, 9, 14)), **options)


def test_non_square_slices_are_refused() -> None:
    phantom = cylinder_phantom((16, 24, 24), (10.0, 10.0, 10.0), (8, 9, 14))
    phantom.activity, phantom.mu_map = phantom.activity[:, :20], phantom.mu_map[:, :20]
    with pytest.raises(InputError, match="square axial slices"):
        simulate_independent(phantom, [0.5], draws=1, seed=0, angles=8)
