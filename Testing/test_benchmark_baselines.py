"""Baseline tuning and BM4D's noise spectrum (benchmarks/baselines.py): the tuner must end interior or say so."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from baselines import noise_psd, stabilise, tune, unstabilise  # noqa: E402


def test_tune_extends_the_grid_until_the_best_value_is_interior():
    result = tune(lambda value: (np.log(value) - np.log(40.0)) ** 2, [1.0, 2.0, 4.0])
    assert result.interior
    assert 20.0 < result.parameter < 80.0
    assert max(value for value, _ in result.tried) > result.parameter


def test_tune_extends_downwards_too():
    result = tune(lambda value: (np.log(value) - np.log(0.1)) ** 2, [1.0, 2.0, 4.0])
    assert result.interior and result.parameter == pytest.approx(0.1, rel=0.5)


def test_tune_reports_an_edge_optimum_at_its_limit():
    result = tune(lambda value: -value, [1.0, 2.0], limits=(0.5, 10.0))
    assert not result.interior
    assert result.parameter == 8.0  # 16 would pass the limit


def test_tune_refines_around_an_interior_best():
    result = tune(lambda value: abs(value - 3.0), [1.0, 2.0, 4.0, 8.0])
    tried = [value for value, _ in result.tried]
    assert np.sqrt(2.0 * 4.0) in tried and np.sqrt(4.0 * 2.0) in tried
    assert result.parameter == pytest.approx(np.sqrt(8.0))


def test_noise_psd_of_white_noise_is_flat_at_n_sigma_squared():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 2.0, (16, 16, 16))
    body = np.ones_like(noise, dtype=bool)
    psd = noise_psd(noise, body)
    assert psd.mean() == pytest.approx(noise.size * 4.0, rel=0.05)
    assert psd.std() / psd.mean() < 0.5


def test_noise_psd_of_smoothed_noise_is_low_pass():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    noise = gaussian_filter(rng.normal(0, 1.0, (16, 16, 16)), 1.5, mode="wrap")
    psd = noise_psd(noise, np.ones_like(noise, dtype=bool))
    assert psd[0, 0, 0] > 10 * psd[8, 8, 8]


def test_noise_psd_outside_the_body_does_not_count():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1.0, (16, 16, 16))
    body = np.zeros_like(noise, dtype=bool)
    body[4:12, 4:12, 4:12] = True
    louder = np.where(body, noise, 100 * noise)
    assert np.allclose(noise_psd(louder, body), noise_psd(noise, body))


def test_stabilisation_round_trips():
    image = np.array([0.0, 0.5, 3.0, 40.0])
    assert np.allclose(unstabilise(stabilise(image, 2.0), 2.0), image, atol=1e-12)
