"""Networks and their registry: every architecture builds from a config and maps slices/patches to one channel."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_fixtures import TINY, perturb_weights

from SPECTDenoiseLib.errors import ModelError
from SPECTDenoiseLib.models.config import ModelConfig
from SPECTDenoiseLib.models.diffusion import leading_timesteps, make_scheduler, noise_prediction_loss, sample_ddim
from SPECTDenoiseLib.models.registry import ARCHITECTURES, build_network
from SPECTDenoiseLib.models.u2net import U2Net


def test_registry_lists_the_four_architectures():
    assert {"unet2d", "unet3d", "u2net", "ddpm"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("name", ["unet2d", "unet3d", "u2net"])
def test_untrained_deterministic_network_returns_the_centre_spect_channel(name):
    config = ModelConfig.from_dict(TINY[name])
    network = build_network(config).eval()
    spatial = (16, 16, 16) if config.sampling == "patches" else (32, 32)
    x = torch.rand(2, config.network_in_channels, *spatial)
    with torch.no_grad():
        y = network(x)
    assert y.shape == (2, 1, *spatial)
    assert torch.equal(y, x[:, config.context_slices : config.context_slices + 1])


@pytest.mark.parametrize("name", ["unet2d", "unet3d", "u2net"])
def test_trained_deterministic_network_changes_the_input(name):
    config = ModelConfig.from_dict(TINY[name])
    network = build_network(config).eval()
    perturb_weights(network)
    spatial = (16, 16, 16) if config.sampling == "patches" else (24, 40)
    x = torch.rand(1, config.network_in_channels, *spatial)
    with torch.no_grad():
        y = network(x)
    assert y.shape == (1, 1, *spatial)
    assert not torch.allclose(y, x[:, config.context_slices : config.context_slices + 1])


def test_u2net_handles_slice_sizes_not_a_multiple_of_32():
    network = U2Net(in_channels=2, mid=2, width=4).eval()
    with torch.no_grad():
        fused, sides = network.forward_with_sides(torch.rand(1, 2, 37, 50))
    assert fused.shape == (1, 1, 37, 50)
    assert len(sides) == 6 and all(side.shape == (1, 1, 37, 50) for side in sides)


def test_u2net_default_lite_width_is_small():
    parameters = sum(p.numel() for p in U2Net(in_channels=2).parameters())
    assert 0.5e6 < parameters < 2e6


def test_ddim_sampling_is_seeded_and_reports_each_step():
    config = ModelConfig.from_dict(TINY["ddpm"])
    network = build_network(config).eval()
    perturb_weights(network)
    scheduler = make_scheduler(config)
    condition = torch.rand(2, config.network_in_channels, 16, 16)
    steps_seen = []
    first = sample_ddim(network, scheduler, condition, 4, torch.Generator().manual_seed(7),
                        on_step=lambda done, total: steps_seen.append((done, total)))
    again = sample_ddim(network, scheduler, condition, 4, torch.Generator().manual_seed(7))
    other = sample_ddim(network, scheduler, condition, 4, torch.Generator().manual_seed(8))
    assert first.shape == (2, 1, 16, 16)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert steps_seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_ddim_steps_land_on_the_timesteps_the_scheduler_steps_back_to():
    timesteps = leading_timesteps(1000, 10)
    assert timesteps.tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert all(int(a) - 1000 // 10 == int(b) for a, b in zip(timesteps[:-1], timesteps[1:]))


def test_ddim_sampling_stays_bounded_under_the_cosine_schedule():
    config = ModelConfig.from_dict(dict(TINY["ddpm"], diffusion={"train_timesteps": 1000, "schedule": "cosine",
                                                                  "default_steps": 10, "default_samples": 2}))
    network = build_network(config).eval()
    for parameter in network.parameters():  # an untrained network that predicts no noise at all
        torch.nn.init.zeros_(parameter)
    condition = torch.rand(2, config.network_in_channels, 16, 16)
    sample = sample_ddim(network, make_scheduler(config), condition, 10, torch.Generator().manual_seed(0))
    # The first step divides by √ᾱ of the first timestep: ≈ 0.15 with leading spacing, ≈ 5e-5 at t = 999.
    assert (sample - condition[:, :1]).abs().max() < 50


def test_ddim_rejects_more_steps_than_training_timesteps():
    config = ModelConfig.from_dict(TINY["ddpm"])
    network = build_network(config).eval()
    with pytest.raises(ModelError, match="between 1 and 100"):
        sample_ddim(network, make_scheduler(config), torch.rand(1, 3, 16, 16), 101, torch.Generator())


def test_noise_prediction_loss_trains_the_network():
    torch.manual_seed(0)
    config = ModelConfig.from_dict(TINY["ddpm"])
    network = build_network(config)
    scheduler = make_scheduler(config)
    condition = torch.rand(4, 3, 16, 16)
    target = condition[:, 1:2] + 0.1
    loss = noise_prediction_loss(network, scheduler, target, condition, torch.Generator().manual_seed(1))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in network.parameters())


def test_build_rejects_arguments_the_constructor_does_not_take():
    config = ModelConfig.from_dict({**TINY["unet2d"], "arguments": {"channels": [4, 8], "module": "os.system"}})
    with pytest.raises(ModelError, match=r"does not take the arguments \['module'\]"):
        build_network(config)


def test_build_rejects_channel_counts_in_arguments():
    config = ModelConfig.from_dict({**TINY["unet2d"], "arguments": {"in_channels": 5}})
    with pytest.raises(ModelError, match="in_channels"):
        build_network(config)


def test_build_rejects_an_architecture_used_with_the_wrong_sampling():
    config = ModelConfig.from_dict({**TINY["unet3d"], "architecture": "unet2d"})
    with pytest.raises(ModelError, match="needs sampling 'slices'"):
        build_network(config)


def test_build_turns_bad_argument_values_into_model_errors():
    config = ModelConfig.from_dict({**TINY["u2net"], "arguments": {"mid": -3}})
    with pytest.raises(ModelError, match="cannot be built"):
        build_network(config)


def test_config_rejects_unknown_architecture_and_class_paths():
    for name in ("resnet", "torch.nn.Linear", "SPECTDenoiseLib.models.unet.ResidualUNet"):
        with pytest.raises(ModelError, match="unknown architecture"):
            ModelConfig.from_dict({**TINY["unet2d"], "architecture": name})


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 600) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_fields = st.sampled_from(["architecture", "arguments", "input_channels", "sampling", "context_slices",
                           "patch_size",
                           "size_multiple", "normalisation", "kind", "diffusion", "voxel_mm_range",
                           "count_fractions", "tracers", "description", "__class__", "code"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(sorted(TINY)), changes=st.dictionaries(_fields, _json, max_size=4),
       removed=st.lists(_fields, max_size=2))
def test_fuzzed_configs_give_a_config_or_a_model_error(base, changes, removed):
    data = {**TINY[base], **changes}
    for key in removed:
        data.pop(key, None)
    try:
        config = ModelConfig.from_dict(data)
    except ModelError as error:
        assert str(error).endswith(".")
        return
    assert isinstance(config, ModelConfig)
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@settings(max_examples=100, deadline=None)
@given(data=_json)
def test_fuzzed_json_values_give_a_config_or_a_model_error(data):
    try:
        assert isinstance(ModelConfig.from_dict(data), ModelConfig)
    except ModelError:
        pass
