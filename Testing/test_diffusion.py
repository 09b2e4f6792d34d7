"""Predict-and-refine diffusion: the network, the scheduler, few-step sampling, the loss and inference with it.

The sampler is checked against an oracle refiner: for residuals drawn from N(μ, σ²) voxel-wise the best x0
estimate is known in closed form, so what 1, 2, ..., 10 DDIM steps must give is known too.
"""

from __future__ import annotations

import dataclasses

import pytest
import numpy as np
import torch
from scipy import ndimage
from model_fixtures import TINY, load_tiny, phantom
from torch import nn

from SPECTDenoiseLib.errors import ModelError
from SPECTDenoiseLib.inference import denoise, spread_around
from SPECTDenoiseLib.io import image_to_array
from SPECTDenoiseLib.models.config import ModelConfig
from SPECTDenoiseLib.models.diffusion import PredictAndRefine, make_scheduler, sample_residual, v_prediction_loss
from SPECTDenoiseLib.models.registry import build_network, expected_weights

MEAN, SPREAD = 0.3, 0.5


def _config(**diffusion) -> ModelConfig:
    return ModelConfig.from_dict(dict(TINY["refine"], diffusion={**TINY["refine"]["diffusion"], **diffusion}))


class GaussianOracle(nn.Module):
    """The exact v for residuals drawn voxel-wise from N(MEAN, SPREAD²): a perfectly trained refiner's output."""

    residual_scale = 1.0

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.alphas_cumprod = alphas_cumprod

    def forward(self, noisy, estimate, condition, timesteps):
        alpha = self.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        gain = alpha.sqrt() * SPREAD**2 / (alpha * SPREAD**2 + 1 - alpha)
        x0 = MEAN + gain * (noisy - alpha.sqrt() * MEAN)
        return (alpha.sqrt() * noisy - x0) / (1 - alpha).sqrt()


def _oracle_samples(steps: int, schedule: str = "squaredcos_cap_v2", seed: int = 0) -> torch.Tensor:
    scheduler = make_scheduler(_config(train_timesteps=1000, schedule=schedule))
    condition = torch.zeros(1, 3, 64, 64)
    return sample_residual(GaussianOracle(scheduler.alphas_cumprod), scheduler, condition[:, :1], condition, steps,
                           torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_sampling_starts_from_pure_noise_at_the_last_training_timestep(schedule):
    scheduler = make_scheduler(_config(train_timesteps=1000, schedule=schedule))
    assert scheduler.alphas_cumprod[-1] == 0  # zero terminal SNR: x_T carries nothing of x0
    for steps in (1, 2, 5, 10):
        scheduler.set_timesteps(steps)
        assert int(scheduler.timesteps[0]) == 999 and len(scheduler.timesteps) == steps
    scheduler.set_timesteps(10)
    assert scheduler.timesteps.tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]  # trailing
    assert scheduler.config.prediction_type == "v_prediction"


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_one_step_gives_exactly_the_mean_whatever_the_noise(schedule):
    for seed in (0, 1):
        torch.testing.assert_close(_oracle_samples(1, schedule, seed), torch.full((1, 1, 64, 64), MEAN),
                                   atol=1e-5, rtol=0)


def test_more_steps_give_samples_whose_spread_grows_towards_the_data():
    spreads = [float(_oracle_samples(steps).std()) for steps in (1, 2, 3, 5, 10)]
    assert spreads == sorted(spreads) and spreads[0] < 1e-5 and spreads[1] > 0.1
    ten = _oracle_samples(10)
    assert 0.8 * SPREAD < float(ten.std()) < SPREAD  # deterministic DDIM under-disperses at few steps
    assert abs(float(ten.mean()) - MEAN) < 0.03


def test_one_step_returns_minus_the_predicted_v_and_the_sample_is_seeded():
    network = build_network(_config()).eval()
    torch.nn.init.constant_(network.refiner.out[-1].conv.bias, 0.7)  # the refiner now predicts v = 0.7 everywhere
    condition = torch.rand(2, 3, 16, 16)
    estimate = network.estimate(condition)
    scheduler = make_scheduler(_config())
    steps_seen = []
    one = sample_residual(network, scheduler, estimate, condition, 1, torch.Generator().manual_seed(5),
                          on_step=lambda done, total: steps_seen.append((done, total)))
    # At ᾱ = 0, x0 = √ᾱ·x_t − √(1 − ᾱ)·v = −v, in units of residual_scale.
    torch.testing.assert_close(one, torch.full_like(one, -0.7 * network.residual_scale))
    assert steps_seen == [(1, 1)]
    first, again, other = (sample_residual(network, scheduler, estimate, condition, 4,
                                           torch.Generator().manual_seed(seed)) for seed in (7, 7, 8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    with pytest.raises(ModelError, match="between 1 and 100"):
        sample_residual(network, scheduler, estimate, condition, 101, torch.Generator())


def test_the_base_is_frozen_and_stays_in_eval_mode():
    network = build_network(_config())
    network.train()
    assert network.refiner.training and not network.base.training
    assert not any(p.requires_grad for p in network.base.parameters())
    assert all(p.requires_grad for p in network.refiner.parameters())
    weights = expected_weights(_config())
    assert any(k.startswith("base.unet.") for k in weights) and "base.head.weight" in weights
    assert any(k.startswith("refiner.") for k in weights)


def test_v_prediction_loss_trains_only_the_refiner_and_leaves_the_base_statistics_alone():
    torch.manual_seed(0)
    network = build_network(_config())
    network.train()
    statistics = {k: v.clone() for k, v in network.base.state_dict().items()}
    scheduler = make_scheduler(_config())
    condition = torch.rand(4, 3, 16, 16)
    target = condition[:, 1:2] + 0.1
    optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(30):
        loss = v_prediction_loss(network, scheduler, target, condition, torch.Generator().manual_seed(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is None for p in network.base.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in network.refiner.parameters())
    assert losses[-1] < 0.5 * losses[0]
    assert all(torch.equal(statistics[k], v) for k, v in network.base.state_dict().items())


def test_predict_and_refine_rejects_a_non_positive_residual_scale():
    with pytest.raises(ValueError, match="residual_scale"):
        PredictAndRefine(condition_channels=3, residual_scale=0.0)


@pytest.mark.parametrize(("changes", "problem"), [
    ({"variance_scale": 0.0}, "variance_scale"), ({"variance_scale": "1"}, "variance_scale"),
    ({"variance_pooling_voxels": -1.0}, "variance_pooling_voxels"),
    ({"variance_pooling_voxels": 100}, "variance_pooling_voxels"), ({"variance_pooling": 1.0}, "no others"),
    ({"schedule": "cosine"}, "schedule"), ({"schedule": "linear_beta"}, "schedule"),
])
def test_config_refuses_bad_diffusion_settings(changes, problem):
    with pytest.raises(ModelError, match=problem):
        _config(**changes)


def test_config_needs_a_variance_scale():
    settings = {k: v for k, v in TINY["refine"]["diffusion"].items() if k != "variance_scale"}
    with pytest.raises(ModelError, match="variance_scale"):
        ModelConfig.from_dict(dict(TINY["refine"], diffusion=settings))


def test_a_config_without_variance_pooling_pools_nothing():
    assert _config().diffusion_setting("variance_pooling_voxels") == 0.0
    assert _config(variance_pooling_voxels=1.5).diffusion_setting("variance_pooling_voxels") == 1.5


def test_pooling_makes_a_few_samples_spread_a_better_estimate_of_a_smooth_true_variance():
    """Residual samples with a known, slowly varying variance: 8 samples give each voxel's spread a ±50 % error;
    pooled over σ = 1 voxel it is several times closer to the truth, and the mean level is kept."""
    rng = np.random.default_rng(2)
    z = np.linspace(0.5, 2.0, 24, dtype=np.float32)[:, None, None]
    true_variance = np.broadcast_to(z, (24, 24, 24))
    residuals = rng.normal(0.0, np.sqrt(true_variance), (8, 24, 24, 24)).astype(np.float32)
    moments = np.stack([residuals.mean(0), (residuals ** 2).mean(0)])
    shift = np.zeros(true_variance.shape, np.float32)
    per_voxel, pooled = (spread_around(moments, shift, 1.0, pooling) for pooling in (0.0, 1.0))
    per_voxel_error = np.sqrt(np.mean((per_voxel / true_variance - 1) ** 2))
    pooled_error = np.sqrt(np.mean((pooled / true_variance - 1) ** 2))
    assert per_voxel_error > 0.4 and pooled_error < per_voxel_error / 3
    assert pooled.mean() == pytest.approx(per_voxel.mean(), rel=1e-3)


def test_the_model_pools_its_variance_map_over_its_variance_pooling_voxels(tmp_path):
    image, model = phantom(shape_zyx=(6, 16, 16)), load_tiny(tmp_path, "diffusion")
    pooling = dataclasses.replace(model, config=dataclasses.replace(
        model.config, diffusion={**model.config.diffusion, "variance_pooling_voxels": 1.0}))
    raw, pooled = (denoise(image, m, device="cpu", samples=3, steps=2, seed=5, want_variance=True)
                   for m in (model, pooling))
    np.testing.assert_array_equal(image_to_array(pooled.denoised), image_to_array(raw.denoised))
    expected = ndimage.gaussian_filter(image_to_array(raw.variance), 1.0, mode="nearest")
    np.testing.assert_allclose(image_to_array(pooled.variance), expected, rtol=1e-4,
                               atol=1e-6 * float(expected.max()))
    assert not np.allclose(image_to_array(pooled.variance), image_to_array(raw.variance))


def test_the_base_runs_once_per_batch_whatever_the_number_of_samples(tmp_path):
    model = load_tiny(tmp_path, "diffusion")
    calls = []
    model.network.base.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    refiner_calls = []
    model.network.refiner.register_forward_hook(lambda module, inputs, output: refiner_calls.append(1))
    image = phantom(shape_zyx=(6, 16, 16))
    denoise(image, model, device="cpu", samples=3, steps=2, want_variance=True)
    assert sum(calls) == 6 and len(calls) == 1  # one batch of 6 slices, once
    assert len(refiner_calls) == 3 * 2
    denoise(image, model, device="cpu", samples=3, steps=2)
    assert len(refiner_calls) == 3 * 2  # without a variance map nothing is sampled


def test_the_denoised_image_is_the_estimate_and_the_variance_the_spread_around_it(tmp_path):
    model, image = load_tiny(tmp_path, "diffusion"), phantom(shape_zyx=(6, 16, 16))
    runs = [denoise(image, model, device="cpu", samples=n, steps=2, seed=seed, want_variance=True, uptake_guard=False)
            for n, seed in ((2, 1), (4, 7))]
    bare = denoise(image, model, device="cpu", uptake_guard=False)
    for run in runs:  # the denoised image depends on neither the seed nor the number of samples
        np.testing.assert_array_equal(image_to_array(run.denoised), image_to_array(bare.denoised))
    assert not np.array_equal(image_to_array(runs[0].variance), image_to_array(runs[1].variance))
    # the spread around the estimate: at least the sample variance (it adds the squared shift of the samples' mean)
    assert float(image_to_array(runs[1].variance).mean()) > 0


def test_the_variance_is_the_samples_spread_around_the_image_returned():
    """The moments (mean r, mean r²) of residual samples r around the estimate and the uptake guard's shift give
    the mean squared distance of the samples from the guarded image, times the variance scale."""
    rng = np.random.default_rng(4)
    residuals = rng.normal(0.3, 1.0, (5, 3, 4, 4)).astype(np.float32)
    shift = rng.normal(0.0, 1.0, (3, 4, 4)).astype(np.float32)
    moments = np.stack([residuals.mean(0), (residuals ** 2).mean(0)])
    np.testing.assert_allclose(spread_around(moments, shift, 2.0), 2.0 * ((residuals - shift) ** 2).mean(0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(spread_around(moments, np.zeros_like(shift), 1.0), moments[1], rtol=1e-6)


def test_the_variance_map_is_the_spread_around_the_guarded_image_not_the_bare_estimate(tmp_path):
    """A refiner whose output layer is zero samples residual 0 in one step, so the samples are the bare estimate
    and their spread around the image returned is exactly the uptake guard's change, squared."""
    model = load_tiny(tmp_path, "diffusion")
    with torch.no_grad():
        for parameter in model.network.refiner.out.parameters():
            parameter.zero_()
    image = phantom(shape_zyx=(6, 24, 24))
    guarded, bare = (denoise(image, model, device="cpu", samples=2, steps=1, want_variance=True, uptake_guard=guard)
                     for guard in (True, False))
    assert image_to_array(bare.variance).max() == 0
    shift = image_to_array(guarded.denoised) - image_to_array(bare.denoised)
    positive = (image_to_array(guarded.denoised) > 0) & (image_to_array(bare.denoised) > 0)
    assert np.abs(shift[positive]).max() > 0
    scale = model.config.diffusion["variance_scale"]
    np.testing.assert_allclose(image_to_array(guarded.variance)[positive], scale * shift[positive] ** 2,
                               rtol=1e-3, atol=1e-6 * float((shift ** 2).max()))


def test_one_step_with_an_untrained_refiner_returns_the_estimate(tmp_path):
    # Untrained: the base is the identity (zero head) and the refiner predicts v = 0, so x0 = 0 from pure noise.
    model, image = load_tiny(tmp_path, "diffusion", perturb=False), phantom()
    result = denoise(image, model, device="cpu", samples=2, steps=1, seed=9, want_variance=True)
    torch.testing.assert_close(torch.from_numpy(image_to_array(result.denoised)),
                               torch.from_numpy(image_to_array(image)), rtol=1e-4, atol=1e-3)
    assert image_to_array(result.variance).max() == 0


def test_variance_scale_multiplies_the_sample_variance_only(tmp_path):
    image, model = phantom(shape_zyx=(6, 16, 16)), load_tiny(tmp_path, "diffusion")
    calibrated = dataclasses.replace(model, config=dataclasses.replace(
        model.config, diffusion={**model.config.diffusion, "variance_scale": 4.0}))
    raw, scaled = (denoise(image, m, device="cpu", samples=3, steps=2, want_variance=True)
                   for m in (model, calibrated))
    torch.testing.assert_close(torch.from_numpy(image_to_array(scaled.denoised)),
                               torch.from_numpy(image_to_array(raw.denoised)))
    torch.testing.assert_close(torch.from_numpy(image_to_array(scaled.variance)),
                               4 * torch.from_numpy(image_to_array(raw.variance)), rtol=1e-5, atol=1e-6)
    assert image_to_array(raw.variance).max() > 0


def test_the_refiner_samples_in_bfloat16_on_a_cpu_that_has_it_and_the_image_stays_float32(tmp_path):
    model, image = load_tiny(tmp_path, "diffusion"), phantom(shape_zyx=(6, 16, 16))
    dtypes = {}

    def recorder(name):
        def record(module, inputs, output) -> None:
            dtypes.setdefault(name, output.dtype)
        return record

    model.network.refiner.register_forward_hook(recorder("refiner"))
    model.network.base.register_forward_hook(recorder("base"))
    result = denoise(image, model, device="cpu", samples=2, steps=2, want_variance=True)
    from SPECTDenoiseLib.devices import native_cpu_bfloat16

    native = native_cpu_bfloat16()
    assert dtypes == {"base": torch.float32, "refiner": torch.bfloat16 if native else torch.float32}
    assert image_to_array(result.variance).dtype == np.float32
