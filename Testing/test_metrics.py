"""Masked image-quality metrics against numpy/scikit-image, region statistics, contrast recovery, body mask."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from SPECTDenoiseLib import metrics
from SPECTDenoiseLib.errors import InputError

SPACING = (4.0, 4.0, 4.0)


@pytest.fixture
def pair():
    """Reference (gamma noise, 16³) and a noisy image, plus a box mask."""
    rng = np.random.default_rng(3)
    reference = rng.gamma(4.0, 10.0, (16, 16, 16)).astype(np.float32)
    image = (reference + rng.normal(0, 5, reference.shape)).astype(np.float32)
    mask = np.zeros(reference.shape, bool)
    mask[3:12, 4:13, 2:10] = True
    return image, reference, mask


def test_rmse_nrmse_psnr_match_numpy_and_skimage_in_the_mask(pair):
    image, reference, mask = pair
    expected = np.sqrt(np.mean((image[mask].astype(float) - reference[mask]) ** 2))
    assert metrics.rmse(image, reference, mask) == pytest.approx(expected)
    assert metrics.nrmse(image, reference, mask) == pytest.approx(expected / reference[mask].mean(dtype=float))
    skimage_psnr = peak_signal_noise_ratio(
        reference[mask].astype(float), image[mask].astype(float), data_range=float(reference[mask].max())
    )
    assert metrics.psnr(image, reference, mask) == pytest.approx(skimage_psnr)


def test_ssim_in_an_interior_mask_equals_skimage_mean_ssim(pair):
    image, reference, _ = pair
    interior = np.zeros(reference.shape, bool)
    interior[3:-3, 3:-3, 3:-3] = True  # skimage averages its SSIM map without a 3-voxel border
    data_range = float(reference.max() - reference.min())
    expected = structural_similarity(reference.astype(float), image.astype(float), data_range=data_range)
    assert metrics.ssim(image, reference, interior, data_range=data_range) == pytest.approx(expected)


def test_ssim_in_a_small_roi_averages_the_full_ssim_map_there(pair):
    image, reference, mask = pair
    data_range = float(reference[mask].max() - reference[mask].min())
    _, full = structural_similarity(reference.astype(float), image.astype(float), data_range=data_range, full=True)
    assert metrics.ssim(image, reference, mask) == pytest.approx(full[mask].mean())


def test_region_statistics_match_numpy(pair):
    _, reference, mask = pair
    stats = metrics.region_statistics(reference, mask, (2.0, 3.0, 4.0))
    values = reference[mask].astype(float)
    assert stats.voxels == values.size
    assert stats.volume_ml == pytest.approx(values.size * 24.0 / 1000)
    assert (stats.mean, stats.max, stats.min, stats.std) == pytest.approx(
        (values.mean(), values.max(), values.min(), values.std())
    )
    assert stats.cov == pytest.approx(values.std() / values.mean())


def test_peak_of_a_single_hot_voxel_is_its_value_over_the_sphere_voxels():
    array = np.zeros((9, 9, 9), np.float32)
    array[4, 4, 4] = 19.0
    # 4 mm voxels: the 6.2 mm sphere holds the centre, 6 face and 12 edge neighbours (5.66 mm), not corners (6.93 mm)
    assert metrics.sphere_kernel(SPACING).sum() == 19
    assert metrics.region_statistics(array, array > 0, SPACING).peak == pytest.approx(1.0)


def test_peak_at_the_border_averages_only_voxels_inside_the_image():
    array = np.zeros((9, 9, 9), np.float32)
    array[0, 0, 0] = 7.0  # 7 sphere voxels are inside: centre, 3 neighbours, 3 edge neighbours
    assert metrics.region_statistics(array, array > 0, SPACING).peak == pytest.approx(1.0)


def test_label_statistics_has_one_record_per_positive_label(pair):
    _, reference, _ = pair
    labels = np.zeros(reference.shape, np.int32)
    labels[:4] = 2
    labels[10:] = 5
    stats = metrics.label_statistics(reference, labels, SPACING)
    assert list(stats) == [2, 5]
    assert stats[5].mean == pytest.approx(reference[10:].mean(dtype=float))


def test_contrast_recovery_is_one_for_the_true_ratio():
    image = np.full((8, 8, 8), 10.0)
    sphere = np.zeros(image.shape, bool)
    sphere[2:4, 2:4, 2:4] = True
    image[sphere] = 40.0
    assert metrics.contrast_recovery(image, sphere, ~sphere, 4.0) == pytest.approx(1.0)
    assert metrics.contrast_recovery(image, sphere, ~sphere, 7.0) == pytest.approx(0.5)


def test_contrast_recovery_needs_a_hot_ratio():
    image = np.ones((4, 4, 4))
    with pytest.raises(InputError, match="above 1"):
        metrics.contrast_recovery(image, image > 0, image > 0, 1.0)


def test_empty_roi_is_an_input_error(pair):
    image, reference, _ = pair
    with pytest.raises(InputError, match="The ROI mask contains no voxels"):
        metrics.rmse(image, reference, np.zeros(image.shape, bool))
    with pytest.raises(InputError, match="contains no voxels"):
        metrics.region_statistics(reference, np.zeros(image.shape, bool), SPACING)


def test_body_mask_keeps_cold_organs_and_drops_air_noise_and_outside_blobs():
    rng = np.random.default_rng(1)
    z, y, x = np.mgrid[:32, :40, :40]
    body = ((y - 20) / 14.0) ** 2 + ((x - 20) / 16.0) ** 2 < 1
    array = np.where(body, 10.0, 0.0) + rng.gamma(1.0, 0.05, body.shape)  # low-level noise in the air
    cold = ((z - 16) ** 2 + (y - 20) ** 2 + (x - 20) ** 2) < 25
    array[cold] = 0.0
    array[14:18, 14:18, 16:20] = 100.0  # hot lesion sets the percentile high
    array[2:4, 1:3, 1:3] = 10.0  # separate blob (e.g. a syringe) outside the body
    mask = metrics.body_mask(array)
    assert mask[cold].all()
    assert not mask[2:4, 1:3, 1:3].any()
    assert not mask[:, 0, :].any()
    assert mask[body].mean() > 0.99


def test_body_mask_of_an_empty_image_is_an_input_error():
    with pytest.raises(InputError, match="no positive values"):
        metrics.body_mask(np.zeros((8, 8, 8)))


volumes = arrays(np.float64, (5, 6, 7), elements=st.floats(0.0, 1e4, allow_nan=False, allow_subnormal=False))


@settings(max_examples=25, deadline=None)
@given(volumes, volumes)
def test_rmse_is_non_negative_and_symmetric(a, b):
    mask = np.ones(a.shape, bool)
    assert metrics.rmse(a, b, mask) >= 0
    assert metrics.rmse(a, b, mask) == pytest.approx(metrics.rmse(b, a, mask))


@settings(max_examples=25, deadline=None)
@given(volumes)
def test_psnr_of_identical_images_is_infinite(a):
    a[0, 0, 0] = 1.0  # a positive peak
    assert metrics.psnr(a, a.copy(), np.ones(a.shape, bool)) == math.inf


@settings(max_examples=25, deadline=None)
@given(volumes, st.floats(0.01, 100.0))
def test_region_statistics_scale_with_the_values(a, factor):
    mask = np.zeros(a.shape, bool)
    mask[1:4, 2:5, 1:6] = True
    plain = metrics.region_statistics(a, mask, (2.0, 3.0, 3.5))
    scaled = metrics.region_statistics(a * factor, mask, (2.0, 3.0, 3.5))
    assert scaled.mean == pytest.approx(plain.mean * factor, rel=1e-9, abs=1e-9)
    assert scaled.peak == pytest.approx(plain.peak * factor, rel=1e-6, abs=1e-6)
    assert scaled.max == pytest.approx(plain.max * factor)
    with_scale = metrics.region_statistics(a, mask, (2.0, 3.0, 3.5), scale=factor)
    assert (with_scale.mean, with_scale.peak) == pytest.approx((scaled.mean, scaled.peak), rel=1e-6, abs=1e-6)
