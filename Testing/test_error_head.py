"""The error head: a learned recalibration of a diffusion model's variance (features, network, fit, CLI)."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from model_fixtures import TINY, load_tiny, make_package, phantom
from scipy import ndimage

from SPECTDenoiseLib.errors import InputError, ModelError
from SPECTDenoiseLib.inference import denoise
from SPECTDenoiseLib.io import image_to_array, spacing_zyx
from SPECTDenoiseLib.models.error_head import FEATURES, ErrorHead, error_features
from SPECTDenoiseLib.models.package import load_package
from SPECTDenoiseLib.train.card import variance_lines
from SPECTDenoiseLib.train.error_head import fit_head, gaussian_nll

SPACING = (4.1, 3.3, 3.3)
HEAD = {"arguments": {**TINY["refine"]["arguments"], "error_head": [8]}}


def _scan(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A low-count input, a smoother 'denoised' image and a positive spread, [z, y, x] float32."""
    low = image_to_array(phantom(shape_zyx=(10, 24, 24), seed=seed))
    image = ndimage.gaussian_filter(low, 1.0)
    spread = (0.05 * image + 0.01) ** 2
    return low, image, spread.astype(np.float32)


@pytest.mark.parametrize("factor", [0.01, 1000.0])
def test_the_features_do_not_change_with_the_scans_units(factor):
    low, image, spread = _scan()
    features = error_features(low, image, spread, SPACING)
    assert features.shape == (low.size, len(FEATURES)) and np.isfinite(features).all()
    scaled = error_features(factor * low, factor * image, factor**2 * spread, SPACING)
    np.testing.assert_allclose(scaled, features, rtol=1e-3, atol=1e-4)


def test_the_heads_variance_is_in_the_scans_units_squared():
    torch.manual_seed(0)
    head = ErrorHead((8,)).eval()
    low, image, spread = _scan()
    variance = head.variance(low, image, spread, SPACING)
    assert variance.shape == low.shape and (variance > 0).all()
    scaled = head.variance(10 * low, 10 * image, 100 * spread, SPACING)
    np.testing.assert_allclose(scaled, 100 * variance, rtol=1e-3)


def test_fitting_learns_where_the_errors_are_large_and_beats_a_constant_variance():
    rng = np.random.default_rng(0)

    def draw(n):
        features = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
        log_variance = 1.5 * features[:, 0] - 0.5 * features[:, 3]
        squared_error = np.exp(log_variance) * rng.normal(size=n) ** 2
        return features, squared_error.astype(np.float32), log_variance

    training, held_out = draw(20_000), draw(5_000)
    torch.manual_seed(0)
    head = ErrorHead((16,))
    fit = fit_head(head, training[:2], held_out[:2], steps=1500, seed=0)
    with torch.no_grad():
        predicted = head(torch.from_numpy(held_out[0])).numpy()
    assert np.corrcoef(predicted, held_out[2])[0, 1] > 0.95
    constant = float(np.log(held_out[1].mean()))
    baseline = float(gaussian_nll(torch.full((5_000,), constant), torch.from_numpy(held_out[1])))
    assert fit["best_held_out_nll"] < baseline - 0.3


def test_a_model_with_an_error_head_returns_the_heads_variance_times_its_scale(tmp_path):
    model = load_tiny(tmp_path, "diffusion", **HEAD)
    model = dataclasses.replace(model, config=dataclasses.replace(
        model.config, diffusion={**model.config.diffusion, "variance_scale": 3.0}))
    headless = copy.deepcopy(model)
    headless.network.error_head = None
    image = phantom(shape_zyx=(6, 24, 24))
    with_head, without = (denoise(image, m, device="cpu", samples=3, steps=2, seed=4, want_variance=True)
                          for m in (model, headless))
    np.testing.assert_array_equal(image_to_array(with_head.denoised), image_to_array(without.denoised))
    low = np.maximum(image_to_array(image), 0)
    expected = 3.0 * model.network.error_head.variance(low, image_to_array(without.denoised),
                                                       image_to_array(without.variance) / 3.0,
                                                       spacing_zyx(image))
    np.testing.assert_allclose(image_to_array(with_head.variance), expected, rtol=2e-3)
    assert not np.allclose(image_to_array(with_head.variance), image_to_array(without.variance))


def test_the_head_and_its_feature_statistics_travel_in_the_weights_file(tmp_path):
    folder = make_package(tmp_path / "with-head", "diffusion", **HEAD)
    model = load_package(folder)
    assert {"error_head.feature_mean", "error_head.feature_sd"} <= set(model.network.state_dict())
    headless = make_package(tmp_path / "headless", "diffusion")
    (headless / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ModelError, match="error_head"):
        load_package(headless)


def _dataset(folder, cases: int = 3):
    """A dataset folder as ``spectdenoise dataset`` writes it: low_<fraction> and target volumes per case."""
    entries = []
    for index in range(cases):
        case = folder / f"case_{index:05d}"
        case.mkdir(parents=True)
        target = phantom(shape_zyx=(6, 20, 20), seed=index, oblique=False)
        smooth = sitk.SmoothingRecursiveGaussian(target, 3.0)
        sitk.WriteImage(smooth, str(case / "target.nii.gz"))
        for fraction in (0.1, 0.25):
            sitk.WriteImage(target, str(case / f"low_{fraction}.nii.gz"))
        entries.append({"id": case.name, "family": "iec"})
    (folder / "manifest.json").write_text(json.dumps({"version": 2, "cases": entries}))
    return folder


def test_train_error_head_writes_a_package_with_a_head_and_a_record(tmp_path, run_cli):
    model = make_package(tmp_path / "tiny-diffusion", "diffusion")
    data = _dataset(tmp_path / "data")
    log = tmp_path / "fit.json"
    result = run_cli("train-error-head", "--model", model, "--data", data, "-o", tmp_path / "out", "--hidden", "8",
                     "--steps", "100", "--log", log)
    assert result.returncode == 0, result.stderr[-2000:]
    trained = load_package(tmp_path / "out")
    assert trained.network.error_head is not None and trained.config.arguments["error_head"] == [8]
    assert trained.config.diffusion["variance_scale"] == 1.0
    assert "- Error head: per-voxel network 1 × 8 hidden" in trained.card
    record = json.loads(log.read_text())
    assert [case["case"] for case in record["cases"]] == [f"case_{i:05d}/low_0.1.nii.gz" for i in range(3)]
    assert record["held_out"] == ["case_00002/low_0.1.nii.gz"] and record["best_step"] > 0
    again = run_cli("train-error-head", "--model", tmp_path / "out", "--data", data, "-o", tmp_path / "out2")
    assert again.returncode == ModelError.exit_code and "without an error head" in again.stderr
    assert not (tmp_path / "out2").exists()


def test_train_error_head_refuses_a_deterministic_model_and_bad_options(tmp_path, run_cli):
    data = _dataset(tmp_path / "data", cases=2)
    unet = make_package(tmp_path / "unet", "unet2d")
    result = run_cli("train-error-head", "--model", unet, "--data", data, "-o", tmp_path / "out")
    assert result.returncode == ModelError.exit_code and "not a diffusion model" in result.stderr
    diffusion = make_package(tmp_path / "tiny-diffusion", "diffusion")
    result = run_cli("train-error-head", "--model", diffusion, "--data", data, "-o", tmp_path / "out",
                     "--hidden", "0")
    assert result.returncode == InputError.exit_code and "--hidden" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_card_of_a_model_with_an_error_head_says_its_variance_is_recalibrated_by_it(tmp_path):
    with_head, without = (load_package(make_package(tmp_path / name, "diffusion", **overrides)).config
                          for name, overrides in (("head", HEAD), ("plain", {})))
    (outputs, *_), (plain, *_) = variance_lines(with_head, "head"), variance_lines(without, "plain")
    assert "recalibrated voxel by voxel by an error head (a per-voxel network, hidden widths 8," in outputs
    assert "error head" not in plain
