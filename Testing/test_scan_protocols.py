"""Scan protocols of the simulator: noise-free references, FBP, scatter windows, penetration, half orbits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.simulate import ScanProtocol, ScanSimulator, simulate_pair

SPACING = (4.0, 4.0, 4.0)
SHAPE = (12, 40, 40)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def cylinder(value: float = 1.0, radius: float = 14.0) -> np.ndarray:
    _, ny, nx = SHAPE
    y, x = np.ogrid[:ny, :nx]
    disc = (y - (ny - 1) / 2) ** 2 + (x - (nx - 1) / 2) ** 2 <= radius**2
    return np.where(disc[None], value, 0.0).astype(np.float32) * np.ones(SHAPE, np.float32)


def centre_mean(image: np.ndarray) -> float:
    return float(image[3:-3, 14:26, 14:26].mean())


def scan(mu: float = 0.0, **options) -> ScanSimulator:
    protocol = ScanProtocol(total_counts=2e6, angles=48, subsets=4, **options)
    return ScanSimulator(cylinder(), SPACING, cylinder(mu), "Tc99m-LEHR", protocol)


@pytest.mark.parametrize("options", [{}, {"reconstruction": "osem"}, {"reconstruction": "fbp"},
                                     {"arc_deg": 180.0}, {"mu": 0.0154}, {"mu": 0.0154, "reconstruction": "fbp"}],
                         ids=["osem-rr", "osem", "fbp", "half-orbit", "attenuated", "fbp-chang"])
def test_noise_free_reconstruction_recovers_a_uniform_cylinder(options):
    options = dict(options)
    simulator = scan(options.pop("mu", 0.0), **options)
    tolerance = 0.2 if options.get("reconstruction") == "fbp" and simulator.mu_map.any() else 0.1
    assert centre_mean(simulator.noise_free()) == pytest.approx(1.0, rel=tolerance)


def test_noise_free_is_deterministic_and_low_count_draws_scatter_around_it():
    simulator = scan()
    reference = simulator.noise_free()
    assert simulator.noise_free() is reference
    draws = [simulator.reconstruct(simulator.acquire(np.random.default_rng(seed), 0.1)) for seed in range(2)]
    assert not np.allclose(draws[0], draws[1])
    for draw in draws:
        assert centre_mean(draw) == pytest.approx(centre_mean(reference), rel=0.05)


def test_uncorrected_scatter_raises_the_image_and_a_window_estimate_corrects_it():
    means = {}
    for correction in ("exact", "window", "none"):
        simulator = scan(scatter_fraction=0.3, scatter_correction=correction)
        means[correction] = centre_mean(simulator.reconstruct(simulator.acquire(np.random.default_rng(0))))
    assert means["none"] > 1.1 * means["exact"]
    assert means["window"] == pytest.approx(means["exact"], rel=0.05)


def test_window_counts_are_thinned_with_the_photopeak():
    simulator = scan(scatter_fraction=0.3, scatter_correction="window")
    full = simulator.acquire(np.random.default_rng(0))
    low = simulator.thin(full, 0.25, np.random.default_rng(1))
    assert low.window is not None and float(low.window.sum()) == pytest.approx(0.25 * float(full.window.sum()), rel=0.05)
    with pytest.raises(InputError):
        simulator.thin(low, 0.5, np.random.default_rng(2))


def test_penetration_tails_spread_counts_outside_the_object_in_the_projections():
    plain, tailed = scan(), scan(penetration_fraction=0.15, penetration_fwhm_mm=80.0)
    outside = (slice(None), slice(None), slice(0, 4))
    assert float(tailed.expected[outside].sum()) > 3 * float(plain.expected[outside].sum())


@pytest.mark.parametrize("change", [{"reconstruction": "mlem"}, {"scatter_correction": "guess"}, {"arc_deg": 90.0},
                                    {"subsets": 0}, {"butterworth_cutoff": 0.0}, {"penetration_fraction": 1.0}])
def test_bad_protocols_are_refused_in_one_sentence(change):
    with pytest.raises(InputError) as error:
        ScanSimulator(cylinder(), SPACING, None, "Tc99m-LEHR", ScanProtocol(**change))
    assert str(error.value).count(".") >= 1 and "\n" not in str(error.value)


def test_simulate_pair_returns_the_noise_free_reference_on_request():
    result = simulate_pair(cylinder(), SPACING, fractions=(0.5,), total_counts=5e5, angles=24, subsets=4,
                           noise_free=True, reconstruction="osem")
    assert result.noise_free is not None and result.noise_free.shape == SHAPE
    assert result.settings["reconstruction"] == "osem"
    assert simulate_pair(cylinder(), SPACING, fractions=(0.5,), total_counts=5e5, angles=24,
                         subsets=4).noise_free is None


@pytest.mark.parametrize("factor", [1e-40, 1e36])
def test_any_units_of_activity_give_the_same_image_in_those_units(factor):
    reference = scan().noise_free()
    protocol = ScanProtocol(total_counts=2e6, angles=48, subsets=4)
    scaled = ScanSimulator(cylinder(factor), SPACING, cylinder(0.0), "Tc99m-LEHR", protocol).noise_free()
    assert np.isfinite(scaled).all()
    np.testing.assert_allclose(scaled / factor, reference, rtol=1e-3, atol=1e-4)


def test_absurd_total_counts_are_refused():
    with pytest.raises(InputError, match="at most"):
        ScanSimulator(cylinder(), SPACING, None, "Tc99m-LEHR", ScanProtocol(total_counts=1e30))
