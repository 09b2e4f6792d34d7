"""Variance calibration of diffusion models (benchmarks/calibrate_variance.py): the fit on errors of known
scale, the config it writes, what it refuses, and the data it collects from a real (tiny) diffusion model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibrate_variance import (  # noqa: E402
    collect,
    config_with_scale,
    fit_variance_scale,
    outside_body,
    outside_summary,
    writable_folder,
    write_scale,
)
from cases import Case  # noqa: E402
from methods import load_models  # noqa: E402
from model_fixtures import make_package  # noqa: E402

from SPECTDenoiseLib.errors import OutputError  # noqa: E402
from SPECTDenoiseLib.simulate import ScanProtocol  # noqa: E402

TINY_CASE = Case("iec-tiny", "iec", 8000001, "Tc99m-LEHR", 12.0,
                 ScanProtocol(total_counts=2e6, angles=24, iterations=2, subsets=4))


def errors_of_known_scale(k: float, noise, n: int = 400_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(predicted variance σ², errors k·σ·noise) with σ log-normal over voxels."""
    rng = np.random.default_rng(seed)
    sigma = rng.lognormal(0, 0.5, n)
    return sigma ** 2, k * sigma * noise(rng, n)


@pytest.mark.parametrize("k", [0.4, 1.0, 2.5])
def test_gaussian_errors_k_times_sigma_give_back_k(k):
    variance, error = errors_of_known_scale(k, lambda rng, n: rng.normal(size=n))
    fit = fit_variance_scale(variance, error)
    assert np.sqrt(fit["mse_fit"]["scale"]) == pytest.approx(k, rel=0.02)
    assert np.sqrt(fit["coverage_fit"]["scale"]) == pytest.approx(k * 1.96 / 2, rel=0.02)  # 95 % at 1.96 σ
    assert fit["chosen"] == "coverage" and fit["scale"] == fit["coverage_fit"]["scale"] and not fit["note"]
    assert fit["coverage_fit"]["coverage_2sigma_pct"] == pytest.approx(95.0, abs=0.1)
    assert fit["mse_fit"]["coverage_1sigma_pct"] == pytest.approx(68.3, abs=0.5)


def test_heavy_tailed_errors_are_fitted_with_a_note_that_no_scale_meets_both_targets():
    variance, error = errors_of_known_scale(1.0, lambda rng, n: rng.laplace(0, 1 / np.sqrt(2), n))
    fit = fit_variance_scale(variance, error)
    assert fit["mse_fit"]["scale"] == pytest.approx(1.0, rel=0.02)
    assert fit["coverage_fit"]["coverage_1sigma_pct"] > 75 and fit["mse_fit"]["coverage_1sigma_pct"] > 75
    assert fit["chosen"] == "coverage" and "no single scale" in fit["note"]
    assert fit_variance_scale(variance, error, "mse")["chosen"] == "mse"


def test_zero_variance_voxels_with_errors_are_never_covered():
    variance, error = np.array([0.0, 0.0, 1.0, 1.0]), np.array([0.0, 1.0, 0.5, -0.5])
    fit = fit_variance_scale(variance, error)
    assert np.isinf(fit["coverage_fit"]["scale"])  # one voxel in four can never be covered: 95 % is out of reach
    assert fit["chosen"] == "mse" and fit["scale"] == pytest.approx(np.mean(error ** 2) / 0.5)
    assert "zero variance" in fit["note"]


def test_write_scale_replaces_only_the_variance_scale(tmp_path):
    folder = make_package(tmp_path / "diffusion", "diffusion")
    before = json.loads((folder / "config.json").read_text())
    write_scale(folder, 2.5)
    after = json.loads((folder / "config.json").read_text())
    assert after["diffusion"]["variance_scale"] == 2.5
    after["diffusion"].pop("variance_scale")
    before["diffusion"].pop("variance_scale", None)
    assert after == before
    assert load_models([str(folder)])["diffusion"].model.config.diffusion["variance_scale"] == 2.5


def test_a_scale_the_config_refuses_leaves_the_file_alone(tmp_path):
    folder = make_package(tmp_path / "diffusion", "diffusion")
    before = (folder / "config.json").read_bytes()
    with pytest.raises(Exception, match="variance_scale"):
        write_scale(folder, -1.0)
    assert (folder / "config.json").read_bytes() == before
    assert config_with_scale(folder, 3.0)["diffusion"]["variance_scale"] == 3.0


def test_only_local_model_folders_are_written(tmp_path):
    assert writable_folder(str(tmp_path), tmp_path) == tmp_path
    with pytest.raises(OutputError, match="Hub model"):
        writable_folder("some-org/some-model", tmp_path)


def test_a_deterministic_model_is_refused_with_exit_code_4(tmp_path):
    folder = make_package(tmp_path / "unet", "unet25d")
    done = subprocess.run([sys.executable, str(BENCHMARKS / "calibrate_variance.py"), str(folder)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 4
    assert "deterministic" in done.stderr and "Traceback" not in done.stderr


def test_a_bare_model_spec_is_refused_with_exit_code_3(tmp_path):
    folder = make_package(tmp_path / "diffusion", "diffusion")
    before = (folder / "config.json").read_bytes()
    done = subprocess.run([sys.executable, str(BENCHMARKS / "calibrate_variance.py"), f"{folder}:bare", "--write"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 3
    assert "uptake guard" in done.stderr and "Traceback" not in done.stderr
    assert (folder / "config.json").read_bytes() == before


def test_collect_pools_the_body_voxels_of_every_draw_of_a_real_diffusion_model(tmp_path):
    model = load_models([str(make_package(tmp_path / "diffusion", "diffusion"))])["diffusion"].model
    variance, error, entries = collect(model, [TINY_CASE], draws=2, fraction=0.1, crop=True)
    assert [e["draw"] for e in entries] == [0, 1]
    assert variance.shape == error.shape == (sum(e["voxels"] for e in entries),)
    assert (variance >= 0).all() and np.isfinite(error).all() and variance.max() > 0
    assert 0 <= entries[0]["coverage_2sigma_pct"] <= 100


def test_the_air_around_the_body_is_measured_apart_and_summarised_after_the_fit():
    """A body in the middle of a volume: in the air, error 0.1 and variance 0.04 (σ 0.2): σ over-states the error
    twice there, and four times after a fitted factor of 4 (σ doubles)."""
    body = np.zeros((20, 20, 20), bool)
    body[5:15, 5:15, 5:15] = True
    error, variance = np.where(body, 1.0, 0.1), np.where(body, 1.0, 0.04)
    air = outside_body(variance, error, body, body_mean=10.0)
    further = ndimage.distance_transform_cdt(~body, metric="taxicab") > 3  # 3 voxels (6-connected) are neither
    assert air["voxels"] == further.sum()
    assert air["rms_error_pct"] == pytest.approx(1.0) and air["rms_sigma_pct"] == pytest.approx(2.0)
    summary = outside_summary([{"outside_body": air}, {"outside_body": {"voxels": 0}}], factor=4.0)
    assert summary["draws"] == 1 and summary["sigma_over_error_range"] == [4.0, 4.0]
    assert outside_body(variance, error, np.ones_like(body), 10.0) == {"voxels": 0}


def test_pooling_comparison_fits_each_sigma_and_pooling_helps_a_noisy_map_of_a_smooth_spread():
    """Errors drawn with a smooth true spread; the 'model's' map is that spread estimated from 4 samples per voxel
    (noisy): pooled over 1 voxel it ranks the errors better than unpooled, and σ = 0 is the plain fit."""
    from variance_pooling import compare

    rng = np.random.default_rng(3)
    shape = (16, 32, 32)
    truth_sd = ndimage.gaussian_filter(rng.lognormal(0.0, 0.8, shape), 2.0)
    reference = np.full(shape, 10.0)
    error = truth_sd * rng.standard_normal(shape)
    samples = truth_sd * rng.standard_normal((4, *shape))
    body = np.ones(shape, bool)
    draws = [((samples ** 2).mean(0), reference + error, reference, body)]
    rows = compare(draws, [0.0, 1.0])
    assert [r["sigma_voxels"] for r in rows] == [0.0, 1.0]
    plain_fit = fit_variance_scale(draws[0][0].ravel(), error.ravel())
    assert rows[0]["fitted_factor"] == pytest.approx(plain_fit["scale"])
    assert rows[1]["quotient_mean"] > rows[0]["quotient_mean"]


def test_ranking_reference_oracles_leave_the_ranked_draw_out_and_rank_a_spread_unrelated_to_brightness():
    """Draws whose error spread varies independently of the intensity: the leave-one-out MSE map ranks the errors
    far better than intensity (quotient > 1.5) and covers as an 11-draw variance estimate should; with a spread
    proportional to the intensity, intensity ranks better than the oracle (quotient < 0.9): the image carries the
    draw's own error, so its brightest voxels are partly those with the largest positive error. The map of draw d
    never uses draw d."""
    from ranking_reference import oracle_maps, quotients_per_draw

    rng = np.random.default_rng(5)
    voxels, draws = 40_000, 12
    noise_free = rng.uniform(5.0, 15.0, voxels)
    spread = rng.lognormal(0.0, 0.8, voxels)
    unrelated = noise_free + spread * rng.standard_normal((draws, voxels))
    rows = quotients_per_draw(unrelated, noise_free)
    assert len(rows) == draws
    assert set(rows[0]["oracle_mse_quotient_from_k_draws"]) == {"2", "3", "5", "11"}
    assert all(r["realised_error_quotient"] >= r["oracle_mse"]["quotient"] for r in rows)
    assert rows[0]["oracle_mse_quotient_from_k_draws"]["11"] == rows[0]["oracle_mse"]["quotient"]
    assert min(r["oracle_mse"]["quotient"] for r in rows) > 1.5
    # 2 σ of an 11-draw estimate covers as Student's t with 11 degrees of freedom: 92.9 %, not 95 %
    assert np.mean([r["oracle_mse"]["coverage_2sigma_pct"] for r in rows]) == pytest.approx(92.9, abs=1.0)
    proportional = noise_free + 0.2 * noise_free * rng.standard_normal((draws, voxels))
    quotients = [r["oracle_mse"]["quotient"] for r in quotients_per_draw(proportional, noise_free)]
    assert np.mean(quotients) < 0.9
    changed = unrelated.copy()
    changed[3] += 100.0
    assert np.array_equal(oracle_maps(changed, noise_free, 3)["oracle_mse"],
                          oracle_maps(unrelated, noise_free, 3)["oracle_mse"])
    assert not np.array_equal(oracle_maps(changed, noise_free, 2)["oracle_mse"],
                              oracle_maps(unrelated, noise_free, 2)["oracle_mse"])


def test_ranking_reference_extrapolates_linearly_in_one_over_the_draws():
    from ranking_reference import extrapolated

    assert extrapolated({k: 1.2 - 0.4 / k for k in (2, 3, 5, 9)}) == pytest.approx(1.2)


def test_ranking_reference_refuses_fewer_than_three_draws():
    from ranking_reference import quotients_per_draw

    from SPECTDenoiseLib.errors import InputError

    with pytest.raises(InputError, match="at least 3"):
        quotients_per_draw(np.ones((2, 10)), np.ones(10))


def sphere_scan(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(noisy input, smooth 'denoised' image, body mask) of a hot sphere in a warm cylinder, 24 × 32 × 32."""
    z, y, x = np.mgrid[:24, :32, :32]
    body = (y - 16) ** 2 + (x - 16) ** 2 < 14**2
    truth = np.where(body, 1.0, 0.0) + 4.0 * (((z - 12) ** 2 + (y - 16) ** 2 + (x - 20) ** 2) < 16)
    low = rng.poisson(truth * 20).astype(np.float64) / 20
    return low, ndimage.gaussian_filter(low, 1.5), body


def test_scan_features_name_every_column_and_do_not_change_with_the_units():
    from error_features import FEATURES, scan_features

    low, image, body = sphere_scan(np.random.default_rng(0))
    features = scan_features(low, image, body, (4.0, 4.0, 4.0))
    assert features.shape == (body.sum(), len(FEATURES)) and np.isfinite(features).all()
    assert np.allclose(scan_features(250 * low, 250 * image, body, (4.0, 4.0, 4.0)), features)
    depth = features[:, FEATURES.index("depth_mm")]
    assert depth.min() == 4.0 and depth.max() > 40
    ranks = features[:, FEATURES.index("image_rank")]
    assert ranks.min() == 0 and ranks.max() < 1
    hottest = np.argmax(image[body])
    assert ranks[hottest] == ranks.max()


def test_the_conditional_reference_learns_only_on_training_seed_cases():
    from cases import BENCHMARK_RUN_SEED, VALIDATION_RUN_SEED
    from conditional_reference import TRAINING_RUN_SEED, training_cases

    from SPECTDenoiseLib.dataset import SEED_STRIDE

    cases = training_cases(2, 1.5)
    families = [case.family for case in cases]
    assert {family: families.count(family) for family in set(families)} == {
        "iec": 2, "torso": 2, "brain": 1, "cardiac": 1, "mouse": 1}
    assert TRAINING_RUN_SEED not in (VALIDATION_RUN_SEED, BENCHMARK_RUN_SEED)
    first, end = TRAINING_RUN_SEED * SEED_STRIDE, (TRAINING_RUN_SEED + 1) * SEED_STRIDE
    assert all(first <= case.seed < end for case in cases)


def test_the_conditional_reference_learns_on_a_run_seed_no_shipped_model_trained_on():
    """Neither the shipped models' data (their cards: ``spectdenoise dataset ... --seed N``) nor the weights they
    started from (``cases.STARTING_WEIGHTS_SEEDS``) hold a scan of the run seed the trees learn on."""
    from cases import STARTING_WEIGHTS_SEEDS
    from conditional_reference import TRAINING_RUN_SEED
    from report import shipped_data_run_seeds

    from SPECTDenoiseLib.dataset import SEED_STRIDE

    used = set(shipped_data_run_seeds()) | {low // SEED_STRIDE for low, _ in STARTING_WEIGHTS_SEEDS.values()}
    assert {1, 2, 3, 4} <= used and TRAINING_RUN_SEED not in used


def test_the_conditional_reference_refuses_a_bad_option_in_one_sentence_and_writes_nothing(tmp_path):
    output = tmp_path / "reference.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "conditional_reference.py"), "spect-diffusion-refine",
                           "--training-cases", "0", "--output", str(output)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1 and "--training-cases" in done.stderr and "Traceback" not in done.stderr
    assert not output.exists()
