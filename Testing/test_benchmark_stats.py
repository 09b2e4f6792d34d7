"""Statistics of the quality benchmark (benchmarks/stats.py): small arrays, known answers."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from stats import (  # noqa: E402
    VoxelEnsemble,
    bootstrap_ci,
    contrast_recovery,
    coverage,
    error_ranking_ratio,
    recovery_coefficient,
    region_kind,
    region_values,
    reliability_curve,
    spatial_cov,
    uncertainty_agreement,
)


def test_region_values_are_mean_and_max_inside_each_mask():
    image = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    mask = np.zeros_like(image, dtype=bool)
    mask[0] = True
    assert region_values(image, {"a": mask}) == {"a": [1.5, 3.0]}


def test_spatial_cov_is_sd_over_mean_in_percent():
    image = np.array([[[1.0, 3.0]]])
    assert spatial_cov(image, np.ones_like(image, dtype=bool)) == pytest.approx(50.0)


def test_bootstrap_interval_covers_the_estimate_and_widens_with_case_spread():
    rng = np.random.default_rng(1)
    tight = [rng.normal(0, 1, 10) for _ in range(4)]
    spread = [g + offset for g, offset in zip(tight, (-5, -2, 2, 5))]
    estimate, low, high = bootstrap_ci(tight)
    assert low < estimate < high
    _, spread_low, spread_high = bootstrap_ci(spread)
    assert spread_high - spread_low > 2 * (high - low)


def test_recovery_coefficient_is_measured_over_true():
    assert recovery_coefficient(3.0, 4.0) == pytest.approx(0.75)


def test_contrast_recovery_is_100_for_a_perfect_image_and_0_for_a_flat_one():
    assert contrast_recovery(8.0, 1.0, 8.0, 1.0) == pytest.approx(100.0)
    assert contrast_recovery(1.0, 1.0, 8.0, 1.0) == pytest.approx(0.0)


def test_voxel_ensemble_noise_matches_numpy_over_draws():
    rng = np.random.default_rng(0)
    draws = [10 + rng.normal(0, 1, (3, 4, 5)) for _ in range(6)]
    ensemble = VoxelEnsemble()
    for image in draws:
        ensemble.add(image)
    mask = np.ones((3, 4, 5), dtype=bool)
    stack = np.stack(draws)
    expected = 100 * np.sqrt(stack.var(axis=0, ddof=1).mean()) / stack.mean()
    assert ensemble.noise_pct(mask) == pytest.approx(expected)


def test_one_draw_has_no_ensemble_noise():
    ensemble = VoxelEnsemble()
    ensemble.add(np.ones((2, 2, 2)))
    assert np.isnan(ensemble.noise_pct(np.ones((2, 2, 2), dtype=bool)))


@pytest.mark.parametrize(("name", "truth", "expected"), [
    ("sphere_17mm", 4.0, ("hot sphere", 17.0)),
    ("sphere_22mm", 0.0, ("cold sphere", 22.0)),
    ("hot_lesion_9mm", 5.0, ("hot lesion", 9.0)),
    ("caudate_left", 3.0, ("striatum", None)),
    ("putamen_right", 3.0, ("striatum", None)),
    ("defect_1", 0.3, ("defect", None)),
    ("tumour_core", 9.0, ("tumour core", None)),
])
def test_region_kind_groups_labels_by_what_they_are(name, truth, expected):
    assert region_kind(name, truth, true_background=1.0) == expected


def test_coverage_counts_errors_within_k_sigma():
    variance, error = np.full(4, 4.0), np.array([0.5, -1.9, 2.5, -4.1])
    assert coverage(variance, error, 1.0) == pytest.approx(50.0)
    assert coverage(variance, error, 2.0) == pytest.approx(75.0)


def test_error_ranking_ratio_is_top_decile_over_bottom_half_of_mean_absolute_error():
    score = np.arange(1000.0)
    error = -score  # |error| grows with the score
    expected = np.mean(np.arange(900, 1000)) / np.mean(np.arange(500))
    assert error_ranking_ratio(score, error) == pytest.approx(expected)
    assert error_ranking_ratio(-score, error) < 1


def test_reliability_curve_of_a_calibrated_variance_lies_on_the_diagonal():
    rng = np.random.default_rng(0)
    sigma = rng.lognormal(0, 1, 200_000)
    curve = reliability_curve(sigma ** 2, sigma * rng.normal(size=sigma.size), scale=2.0)
    assert len(curve["sigma_rms"]) == 10 and curve["sigma_rms"] == sorted(curve["sigma_rms"])
    np.testing.assert_allclose(curve["error_rms"], curve["sigma_rms"], rtol=0.05)


def test_uncertainty_agreement_of_a_calibrated_variance_against_uninformative_intensity():
    rng = np.random.default_rng(1)
    shape = (20, 50, 50)
    reference = np.full(shape, 10.0)
    sigma = rng.lognormal(0, 0.7, shape)
    denoised = reference + sigma * rng.normal(size=shape)
    body = np.zeros(shape, dtype=bool)
    body[:, 5:45, 5:45] = True
    result = uncertainty_agreement(sigma ** 2, denoised, reference, body)
    assert result["coverage_1sigma_pct"] == pytest.approx(68.3, abs=1.0)
    assert result["coverage_2sigma_pct"] == pytest.approx(95.4, abs=0.6)
    assert result["error_ratio_variance"] > 3 and result["error_ratio_quotient"] > 1.5
    assert result["error_ratio_quotient"] == pytest.approx(
        result["error_ratio_variance"] / result["error_ratio_intensity"])
    assert result["spearman_variance_vs_squared_error"] > 0.3
    assert result["reliability"]["sigma_rms"][-1] > 10  # in % of the reference body mean (10)


def test_uncertainty_agreement_says_when_the_variance_ranks_no_better_than_intensity():
    rng = np.random.default_rng(2)
    shape = (20, 40, 40)
    reference = rng.uniform(1, 20, shape)
    denoised = reference + 0.1 * reference * rng.normal(size=shape)  # error grows with brightness
    body = np.ones(shape, dtype=bool)
    result = uncertainty_agreement(rng.uniform(0.5, 2, shape), denoised, reference, body)  # variance: noise
    assert result["error_ratio_intensity"] > 2
    assert result["error_ratio_quotient"] < 0.6
