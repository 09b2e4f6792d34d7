"""Training a predict-and-refine model end to end: base from a U-Net package, frozen; EMA weights exported; resume;
the shipped settings file parses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_fixtures import TINY, phantom
from safetensors.torch import load_file
from test_train import _settings, _write_pairs

from SPECTDenoiseLib.errors import InputError, ModelError
from SPECTDenoiseLib.inference import denoise
from SPECTDenoiseLib.models.package import load_package
from SPECTDenoiseLib.train.loop import _initial_network, train
from SPECTDenoiseLib.train.settings import TrainSettings

REPOSITORY = Path(__file__).resolve().parents[1]
BASE = {"architecture": "unet2d", "arguments": {"channels": [4, 8], "norm": "batch"}, "context_slices": 1}
REFINE = {**TINY["refine"], "arguments": {**TINY["refine"]["arguments"], "base_norm": "batch"}}


def _quiet(message: str) -> None:
    return None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny U-Net trained a few steps, then a refiner trained on top of it with an EMA of its weights."""
    folder = tmp_path_factory.mktemp("refine")
    data = _write_pairs(folder / "pairs")
    base = train(_settings(folder / "base", data, BASE, steps=6, validate_every=6), log=_quiet)
    settings = _settings(folder, data, REFINE, steps=8, validate_every=4, base_model=str(base), ema_decay=0.9)
    return {"data": data, "base": base, "settings": settings, "package": train(settings, log=_quiet)}


def test_the_base_comes_from_the_unet_package_and_stays_frozen(trained):
    unet = load_file(trained["base"] / "model.safetensors")
    refined = load_file(trained["package"] / "model.safetensors")
    assert {f"base.{key}" for key in unet} == {key for key in refined if key.startswith("base.")}
    # Every tensor, BatchNorm running statistics included, is the U-Net's own.
    assert all(torch.equal(refined[f"base.{key}"], value) for key, value in unet.items())


def test_the_exported_refiner_is_the_weight_average(trained):
    run = Path(trained["settings"].run_dir)
    best = run / "best" if (run / "best").exists() else run / "last"
    exported = load_file(trained["package"] / "model.safetensors")
    assert all(torch.equal(exported[k], v) for k, v in load_file(best / "average.safetensors").items())
    raw = load_file(best / "model.safetensors")
    assert any(not torch.equal(exported[k], raw[k]) for k in raw if k.startswith("refiner."))
    assert json.loads((best / "state.json").read_text())["average_updates"] > 0


def test_the_trained_package_loads_denoises_and_has_a_diffusion_card(trained):
    model = load_package(trained["package"])
    assert model.config.kind == "diffusion" and model.config.architecture == "refine"
    result = denoise(phantom(shape_zyx=(6, 16, 16)), model, device="cpu", samples=2, steps=2, want_variance=True)
    assert result.variance is not None
    assert "v-prediction" in model.card and "EMA" in model.card and "mean squared spread" in model.card


def test_a_run_resumes_with_its_weight_average(trained, tmp_path):
    settings = trained["settings"]
    messages = []
    train(TrainSettings(**{**vars(settings), "steps": 12, "output": str(tmp_path / "more")}), log=messages.append)
    assert any("resumed" in m and "step 8" in m for m in messages)
    state = json.loads((Path(settings.run_dir) / "last" / "state.json").read_text())
    assert state["step"] == 12 and state["average_updates"] == 12


def test_a_base_model_of_another_shape_is_refused(trained, tmp_path):
    other = {**REFINE, "arguments": {**REFINE["arguments"], "base_channels": [8, 16]}}
    settings = _settings(tmp_path, trained["data"], other, steps=1, base_model=str(trained["base"]))
    with pytest.raises(ModelError, match="base_channels"):
        train(settings, log=_quiet)
    wrong_context = {**REFINE, "context_slices": 2}
    settings = _settings(tmp_path, trained["data"], wrong_context, steps=1, base_model=str(trained["base"]))
    with pytest.raises(ModelError, match="context_slices"):
        train(settings, log=_quiet)


def _write_settings(folder: Path, **values) -> Path:
    path = folder / "settings.json"
    path.write_text(json.dumps({"model": REFINE, "data": ["pairs"], "output": "out", "run_dir": "run",
                                "patch": [32, 32], **values}), encoding="utf-8")
    return path


def test_settings_check_base_model_and_ema_decay(tmp_path):
    with pytest.raises(InputError, match="'base_model' applies to diffusion models"):
        TrainSettings.load(_write_settings(tmp_path, model=BASE, base_model="spect-unet25d"))
    with pytest.raises(InputError, match="'base_model' applies"):
        TrainSettings.load(_write_settings(tmp_path, base_model="spect-unet25d", initial_weights="x"))
    with pytest.raises(InputError, match="ema_decay"):
        TrainSettings.load(_write_settings(tmp_path, ema_decay=1.0))
    loaded = TrainSettings.load(_write_settings(tmp_path, base_model="spect-unet25d", ema_decay=0.999))
    assert loaded.base_model == "spect-unet25d" and loaded.ema_decay == 0.999


def test_the_shipped_settings_start_from_the_default_model():
    settings = TrainSettings.load(REPOSITORY / "benchmarks" / "training" / "spect-diffusion-refine.json")
    config = settings.model_config
    assert config.architecture == "refine" and config.kind == "diffusion" and settings.ema_decay > 0
    assert settings.base_model == "spect-unet25d"
    network = _initial_network(settings, config)  # raises ModelError unless the default model fits the base
    default = load_file(REPOSITORY / "Resources" / "Models" / "spect-unet25d" / "model.safetensors")
    assert all(torch.equal(network.base.state_dict()[key], value) for key, value in default.items())
