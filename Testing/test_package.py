"""Model packages: save and load round-trip, and every way a package can be broken gives one ModelError."""

from __future__ import annotations

import json

import pytest
import torch
from model_fixtures import TINY, tiny_network
from safetensors.torch import load_file, save_file

from SPECTDenoiseLib.errors import ModelError, OutputError
from SPECTDenoiseLib.models.config import ModelConfig
from SPECTDenoiseLib.models.package import load_package, save_package
from SPECTDenoiseLib.models.registry import build_network


def _save(tmp_path, name="unet2d"):
    network, config = tiny_network(TINY[name])
    return network.eval(), save_package(network, config, tmp_path / "model", f"# Tiny {name}\n")


@pytest.mark.parametrize("name", sorted(TINY))
def test_round_trip_gives_identical_outputs(tmp_path, name):
    network, folder = _save(tmp_path, name)
    loaded = load_package(folder)
    assert loaded.config == ModelConfig.from_dict(TINY[name])
    assert loaded.card == f"# Tiny {name}\n" and loaded.name == "model" and loaded.folder == folder
    assert not loaded.network.training
    spatial = (16, 16, 16) if loaded.config.sampling == "patches" else (32, 32)
    x = torch.rand(1, loaded.config.network_in_channels, *spatial)
    with torch.no_grad():
        args = (x[:, :1], x[:, 1:2], x, torch.tensor([5])) if name == "refine" else (x,)
        assert torch.equal(network(*args), loaded.network(*args))


def test_package_holds_exactly_the_three_files(tmp_path):
    _, folder = _save(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_saving_again_replaces_the_package(tmp_path):
    _save(tmp_path, "unet2d")
    _, folder = _save(tmp_path, "u2net")
    assert load_package(folder).config.architecture == "u2net"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_save_rejects_a_network_of_another_architecture(tmp_path):
    network = build_network(ModelConfig.from_dict(TINY["u2net"]))
    with pytest.raises(ModelError, match="does not match architecture unet2d"):
        save_package(network, ModelConfig.from_dict(TINY["unet2d"]), tmp_path / "model", "")
    assert not (tmp_path / "model").exists()


def test_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_package(tmp_path / "nowhere")


@pytest.mark.parametrize("file, message", [("config.json", "no config.json"),
                                           ("model.safetensors", "no model.safetensors")])
def test_missing_file(tmp_path, file, message):
    _, folder = _save(tmp_path)
    (folder / file).unlink()
    with pytest.raises(ModelError, match=message):
        load_package(folder)


def test_missing_card_is_allowed(tmp_path):
    _, folder = _save(tmp_path)
    (folder / "README.md").unlink()
    assert load_package(folder).card == ""


@pytest.mark.parametrize("change, message", [
    ({"architecture": "torch.nn.Linear"}, "unknown architecture"),
    ({"architecture": "unet3d"}, "needs sampling 'patches'"),
    ({"extra": 1}, "unknown keys"),
    ({"arguments": {"channels": [4, 8, 8, 16], "_target_": "os.system"}}, "does not take the arguments"),
    ({"context_slices": 2}, r"has shape \[4, 3, 3, 3\], the config needs \[4, 5, 3, 3\]"),
])
def test_tampered_config(tmp_path, change, message):
    _, folder = _save(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ModelError, match=message):
        load_package(folder)


def test_config_that_is_not_json(tmp_path):
    _, folder = _save(tmp_path)
    (folder / "config.json").write_text("{architecture: unet2d")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_package(folder)


def test_weights_with_a_missing_key(tmp_path):
    _, folder = _save(tmp_path)
    weights = load_file(folder / "model.safetensors")
    weights.pop("head.bias")
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(ModelError, match="do not match architecture unet2d: missing keys head.bias"):
        load_package(folder)


def test_weights_with_an_unexpected_key(tmp_path):
    _, folder = _save(tmp_path)
    weights = load_file(folder / "model.safetensors")
    weights["payload"] = torch.zeros(3)
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(ModelError, match="unexpected keys payload"):
        load_package(folder)


def test_weights_with_nan(tmp_path):
    _, folder = _save(tmp_path)
    weights = load_file(folder / "model.safetensors")
    weights["head.bias"] = torch.tensor([float("nan")])
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(ModelError, match="NaN or infinite values in 'head.bias'"):
        load_package(folder)


@pytest.mark.parametrize("content", [b"", b"not safetensors at all", None])
def test_corrupt_weights(tmp_path, content):
    _, folder = _save(tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:200] if content is None else content)
    with pytest.raises(ModelError, match="corrupt or not safetensors"):
        load_package(folder)


def test_pickled_weights_are_not_read(tmp_path):
    network, folder = _save(tmp_path)
    torch.save(network.state_dict(), folder / "model.safetensors")
    with pytest.raises(ModelError, match="corrupt or not safetensors"):
        load_package(folder)


@pytest.mark.parametrize("kind", ["data-folder", "file"])
def test_saving_never_replaces_something_that_is_not_a_model_package(tmp_path, kind):
    target = tmp_path / "pairs"
    if kind == "file":
        target.write_text("notes")
    else:
        (target / "case1").mkdir(parents=True)
        (target / "case1" / "full.nii.gz").write_bytes(b"data")
    network, config = tiny_network(TINY["unet2d"])
    with pytest.raises(OutputError, match="exists and is not a model package"):
        save_package(network, config, target, "# card\n")
    assert (target.read_text() == "notes") if kind == "file" else (target / "case1" / "full.nii.gz").exists()


@pytest.mark.parametrize("dtype", [torch.int32, torch.float16, torch.float64])
def test_weights_of_another_dtype_are_refused_not_cast(tmp_path, dtype):
    _, folder = _save(tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    save_file({key: value.to(dtype) if value.is_floating_point() else value for key, value in weights.items()},
              str(folder / "model.safetensors"))
    with pytest.raises(ModelError, match=r"the network needs F32\.$"):
        load_package(folder)
