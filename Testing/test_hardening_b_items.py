"""Issue 12, item 13: a bad HF_ENDPOINT, an empty model name, catalogue entries without checksums, unknown
diffusion settings, name clashes in batch mode and --progress jsonl never printing plain lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPOSITORY
from model_fixtures import TINY, catalogue_with_diffusion, make_package, phantom

from SPECTDenoiseLib import hub
from SPECTDenoiseLib.errors import HubError, ModelError
from SPECTDenoiseLib.inference import denoise
from SPECTDenoiseLib.models.config import ModelConfig
from SPECTDenoiseLib.models.package import load_package

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SHA = "ab" * 32


def run_cli_with(environment: dict[str, str], *args) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess with extra environment variables."""
    return subprocess.run([sys.executable, "-m", "SPECTDenoiseLib", *map(str, args)], capture_output=True, text=True,
                          cwd=REPOSITORY, timeout=120, env={**os.environ, **environment}, check=False)


@pytest.mark.parametrize("endpoint", ["ftp://example.org", "huggingface.co", "file:///tmp/hub"])
def test_hf_endpoint_without_http_is_a_hub_error(endpoint, tmp_path):
    result = run_cli_with({"HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "0"},
                          "models", "download", f"org/name@{COMMIT}")
    assert result.returncode == HubError.exit_code, result.stderr
    assert "HF_ENDPOINT" in result.stderr and result.stderr.startswith("spectdenoise: error:")


@pytest.mark.parametrize("name", ["", "  "])
def test_empty_model_name_is_refused_not_read_as_the_current_folder(name):
    with pytest.raises(ModelError, match="model name is empty"):
        hub.resolve_model(name)


@pytest.mark.parametrize("checksums", [
    {},
    {"model.safetensors": SHA},
    {"config.json": SHA},
    {"config.json": "abc", "model.safetensors": SHA},
    {"config.json": SHA, "model.safetensors": SHA.upper()},
    {"config.json": SHA, "model.safetensors": SHA, "other.bin": SHA},
    ["config.json", "model.safetensors"],
])
def test_catalogue_hub_entry_needs_the_checksums_of_config_and_weights(tmp_path, checksums):
    catalogue = tmp_path / "Models.json"
    entry = {"id": "tiny", "repo_id": "org/tiny", "revision": COMMIT, "sha256": checksums}
    catalogue.write_text(json.dumps({"default": None, "models": [entry]}), encoding="utf-8")
    with pytest.raises(ModelError, match="sha256 checksums"):
        hub.read_catalogue(catalogue)


def test_catalogue_hub_entry_with_both_checksums_is_accepted(tmp_path):
    catalogue = tmp_path / "Models.json"
    entry = {"id": "tiny", "repo_id": "org/tiny", "revision": COMMIT,
             "sha256": {"config.json": SHA, "model.safetensors": SHA, "README.md": SHA}}
    catalogue.write_text(json.dumps({"default": None, "models": [entry]}), encoding="utf-8")
    assert hub.read_catalogue(catalogue)["models"] == [entry]


@pytest.mark.parametrize("extra", [{"sampler": "ddpm"}, {"eta": 0.5}])
def test_unknown_diffusion_settings_are_refused(extra):
    settings = {**TINY["refine"], "diffusion": {**TINY["refine"]["diffusion"], **extra}}
    with pytest.raises(ModelError, match="diffusion"):
        ModelConfig.from_dict(settings)


@pytest.mark.parametrize(("options", "named"), [({"samples": 3}, "samples"), ({"steps": 5}, "steps"),
                                                ({"samples": 3, "steps": 5}, "samples and steps")])
def test_samples_or_steps_for_a_deterministic_model_give_a_warning(tmp_path, options, named):
    model = load_package(make_package(tmp_path / "tiny", "unet2d"), name="tiny")
    messages = []
    denoise(phantom(), model, device="cpu", progress=lambda fraction, stage, message: messages.append(message),
            **options)
    assert any("deterministic" in message and f"the {named} asked for are ignored" in message for message in messages)


def test_diffusion_defaults_are_in_denoise_help_and_models_info(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECTDENOISE_CATALOGUE", str(catalogue_with_diffusion(tmp_path)))
    config = json.loads((tmp_path / "tiny-diffusion" / "config.json").read_text("utf-8"))
    defaults = f"{config['diffusion']['default_samples']} samples and {config['diffusion']['default_steps']} DDIM steps"
    assert defaults in " ".join(run_cli("denoise", "--help").stdout.split())
    info = run_cli("models", "info", "tiny-diffusion")
    assert info.returncode == 0 and f"diffusion: {defaults} by default" in info.stdout
