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
from SPECTDenoiseLib.models.registry import ARCHITECTURES, build_network
from SPECTDenoiseLib.models.u2net import U2Net


def test_registry_lists_the_four_architectures():
    assert {"unet2d", "unet3d", "u2net", "refine"} <= set(ARCHITECTURES)


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
        assert network(torch.rand(1, 2, 37, 50)).shape == (1, 1, 37, 50)


def test_u2net_deep_supervision_returns_side_outputs_only_in_training():
    network = U2Net(in_channels=2, mid=2, width=4, deep_supervision=True)
    perturb_weights(network)
    x = torch.rand(1, 2, 37, 50)
    with torch.no_grad():
        stacked = network.train()(x)
        fused = network.eval()(x)
    assert stacked.shape == (1, 7, 37, 50)
    assert fused.shape == (1, 1, 37, 50)
    # Group norm does not depend on the mode, so the fused channel is the evaluation output.
    torch.testing.assert_close(stacked[:, :1], fused)
    assert not torch.allclose(stacked[:, 1:2], fused)


def test_u2net_default_lite_width_is_small():
    parameters = sum(p.numel() for p in U2Net(in_channels=2).parameters())
    assert 0.5e6 < parameters < 2e6


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
