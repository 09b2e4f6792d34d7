"""Physics of the SPECT simulator: matched projector pair, attenuation, counts, thinning, OSEM noise and bias."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.io import same_geometry
from SPECTDenoiseLib.simulate import simulate_low_count, simulate_pair
from SPECTDenoiseLib.simulation import (
    PRESETS,
    SPECTProjector,
    get_collimator,
    hu_to_mu,
    thin_counts,
    water_body_mu,
)

SPACING = (4.0, 4.0, 4.0)


def cylinder(shape=(16, 40, 40), radius_mm=64.0, value=1.0) -> np.ndarray:
    """Uniform cylinder along z, [z, y, x]."""
    _, ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    inside = ((y - (ny - 1) / 2) ** 2 + (x - (nx - 1) / 2) ** 2) * SPACING[1] ** 2 <= radius_mm**2
    return np.broadcast_to(inside * value, shape).astype(np.float32).copy()


def test_adjoint_matches_forward_to_1e_3():
    rng = np.random.default_rng(0)
    shape = (12, 24, 24)
    projector = SPECTProjector(shape, SPACING, PRESETS["Tc99m-LEHR"], np.linspace(0, 360, 10, endpoint=False),
                               150.0, cylinder(shape, 40.0, 0.015))
    x = torch.from_numpy(rng.random(shape, dtype=np.float32))
    y = torch.from_numpy(rng.random((10, 12, 24), dtype=np.float32))
    left = float((projector.forward(x).double() * y.double()).sum())
    right = float((x.double() * projector.adjoint(y).double()).sum())
    assert abs(left - right) <= 1e-3 * abs(left)


def test_attenuation_lowers_central_counts_more_than_edge_counts():
    shape = (8, 40, 40)
    activity = torch.from_numpy(cylinder(shape))
    angles = [0.0]
    plain = SPECTProjector(shape, SPACING, PRESETS["Tc99m-LEHR"], angles, 200.0).forward(activity)
    attenuated = SPECTProjector(shape, SPACING, PRESETS["Tc99m-LEHR"], angles, 200.0,
                                cylinder(shape, value=0.0154)).forward(activity)
    ratio = (attenuated / plain.clamp_min(1e-6))[0, 4]
    assert ratio[20] < 0.5
    assert ratio[20] < 0.8 * ratio[6]
    assert float(attenuated.sum()) < float(plain.sum())


def test_lehr_resolution_at_10_cm_is_clinical():
    assert 7.0 <= PRESETS["Tc99m-LEHR"].fwhm_mm(100.0) <= 8.0
    assert PRESETS["Lu177-MEGP"].fwhm_mm(100.0) > PRESETS["I123-LEGP"].fwhm_mm(100.0) > PRESETS["I123-LEHR"].fwhm_mm(100.0)


def test_unknown_collimator_is_an_input_error():
    with pytest.raises(InputError, match="Unknown collimator"):
        get_collimator("Tc99m-XYZ")


def test_hu_to_mu_is_bilinear_through_air_water_and_bone():
    preset = PRESETS["Tc99m-LEHR"]
    mu = hu_to_mu(np.array([-1000.0, -500.0, 0.0, 1000.0]), preset)
    np.testing.assert_allclose(mu, [0.0, preset.mu_water_per_mm / 2, preset.mu_water_per_mm, preset.mu_bone_per_mm],
                               rtol=1e-5, atol=1e-7)


def test_water_body_mu_outlines_the_body():
    activity = cylinder((8, 40, 40), 50.0)
    mu = water_body_mu(activity, SPACING, PRESETS["Tc99m-LEHR"])
    assert mu[4, 20, 20] == pytest.approx(PRESETS["Tc99m-LEHR"].mu_water_per_mm)
    assert mu[4, 0, 0] == 0.0


def test_thinning_keeps_each_count_with_probability_fraction():
    counts = torch.full((100_000,), 20.0)
    thinned = thin_counts(counts, 0.25, np.random.default_rng(1))
    assert torch.all(thinned <= counts)
    assert float(thinned.mean()) == pytest.approx(5.0, rel=0.02)


@pytest.fixture(scope="module")
def uniform_result():
    torch.set_num_threads(1)
    return simulate_pair(cylinder(), SPACING, cylinder(value=0.0154), fractions=(0.5, 0.25), total_counts=1e6,
                         iterations=3, subsets=6, angles=48, seed=3)


def test_counts_scale_with_fraction(uniform_result):
    for fraction, counts in uniform_result.counts_low.items():
        assert counts / uniform_result.counts_full == pytest.approx(fraction, rel=0.02)


def test_mean_activity_is_kept_within_10_percent(uniform_result):
    core = cylinder(radius_mm=48.0) > 0
    for image in (uniform_result.full, *uniform_result.low.values()):
        assert float(image[core].mean()) == pytest.approx(1.0, rel=0.10)


def test_background_cov_grows_as_inverse_square_root_of_fraction(uniform_result):
    core = cylinder(radius_mm=48.0) > 0
    core[:3], core[-3:] = False, False

    def cov(image):
        return float(image[core].std() / image[core].mean())

    for fraction, image in uniform_result.low.items():
        assert cov(image) / cov(uniform_result.full) == pytest.approx((1 / fraction) ** 0.5, rel=0.25)


def test_fraction_outside_unit_interval_is_an_input_error():
    with pytest.raises(InputError, match="fraction"):
        simulate_pair(cylinder(), SPACING, fractions=(0.0,))


def test_nan_activity_is_an_input_error():
    activity = cylinder()
    activity[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        simulate_pair(activity, SPACING)


def test_simulate_low_count_keeps_input_geometry_and_uses_ct():
    image = sitk.GetImageFromArray(cylinder((8, 30, 36), 40.0) * 5.0)
    image.SetSpacing((4.0, 4.0, 5.0))
    image.SetOrigin((-70.0, -60.0, 12.0))
    ct = sitk.GetImageFromArray(np.where(cylinder((10, 40, 40), 40.0) > 0, 0.0, -1000.0).astype(np.float32))
    ct.SetSpacing((3.5, 3.5, 4.0))
    ct.SetOrigin((-70.0, -70.0, 10.0))
    low, full = simulate_low_count(image, 0.2, ct=ct, total_counts=5e5, iterations=2, subsets=4, angles=24)
    assert same_geometry(low, image) and same_geometry(full, image)
    assert low.GetPixelID() == sitk.sitkFloat32
    assert sitk.GetArrayFromImage(low)[4, 15, 18] == pytest.approx(5.0, rel=0.5)
