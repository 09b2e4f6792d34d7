"""Model resolution: catalogue, folders and Hub repos served by Testing/hub_server.py on 127.0.0.1, no internet."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys

import pytest
from hub_server import HubServer
from model_fixtures import make_package

from SPECTDenoiseLib import hub
from SPECTDenoiseLib.errors import HubError, ModelError
from SPECTDenoiseLib.models.config import ModelConfig


def _package(folder, description):
    return make_package(folder, "unet25d", perturb=False, readme=f"# {description}\n", description=description)


@pytest.fixture()
def server(tmp_path, monkeypatch):
    """A hub with org/tiny (two commits: v1, then v2 on main), an empty cache and an empty catalogue."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    _write_catalogue(tmp_path, monkeypatch, {"default": None, "models": []})
    with HubServer() as hub_server:
        hub_server.v1 = hub_server.add_repo("org/tiny", _package(tmp_path / "v1", "version one"))
        hub_server.v2 = hub_server.add_repo("org/tiny", _package(tmp_path / "v2", "version two"))
        monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
        yield hub_server


def _write_catalogue(tmp_path, monkeypatch, catalogue):
    path = tmp_path / "Models.json"
    path.write_text(json.dumps(catalogue))
    monkeypatch.setenv("SPECTDENOISE_CATALOGUE", str(path))


def _closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "SPECTDenoiseLib", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120, check=False)


def test_download_by_repo_id_follows_main(server):
    folder = hub.resolve_model("org/tiny")
    assert folder.name == server.v2
    assert ModelConfig.load(folder / "config.json").description == "version two"


def test_download_by_pinned_revision(server):
    loaded = hub.load_model(f"org/tiny@{server.v1}")
    assert loaded.config.description == "version one"
    assert loaded.card == "# version one\n" and loaded.name == f"org/tiny@{server.v1}"


def test_only_package_files_are_requested(server):
    hub.resolve_model(f"org/tiny@{server.v1}")
    files = {path.rsplit("/", 1)[-1] for method, path in server.requests
             if method == "GET" and "/resolve/" in path}
    assert files == {"config.json", "model.safetensors", "README.md"}


def test_offline_subprocess_loads_from_the_cache(server):
    hub.resolve_model("org/tiny")
    hub.resolve_model(f"org/tiny@{server.v1}")
    code = ("from SPECTDenoiseLib.hub import load_model; import sys; "
            "print(load_model(sys.argv[1]).config.description, load_model(sys.argv[2]).config.description)")
    result = subprocess.run([sys.executable, "-c", code, "org/tiny", f"org/tiny@{server.v1}"], text=True,
                            capture_output=True, timeout=120, check=False,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": _closed_port_url()})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["version", "two", "version", "one"]


def test_unreachable_hub_falls_back_to_the_cache(server, monkeypatch):
    cached = hub.resolve_model(f"org/tiny@{server.v1}")
    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())
    assert hub.resolve_model(f"org/tiny@{server.v1}") == cached


def test_offline_and_not_cached(server, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="not in the Hugging Face cache and SPECTDenoise is offline"):
        hub.resolve_model("org/tiny")


def test_unreachable_hub_and_not_cached(server, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())
    with pytest.raises(HubError, match="cannot be reached and the model 'org/tiny@main' is not in the cache"):
        hub.resolve_model("org/tiny")


def test_unknown_repository(server):
    with pytest.raises(HubError, match="repository 'org/missing' was not found"):
        hub.resolve_model("org/missing")


@pytest.mark.parametrize("revision", ["v9", "0" * 40])
def test_unknown_revision(server, revision):
    with pytest.raises(HubError, match=f"Revision '{revision}' of the model repository 'org/tiny' was not found"):
        hub.resolve_model(f"org/tiny@{revision}")


def test_catalogue_hub_entry_is_checked_against_its_checksums(server, tmp_path, monkeypatch):
    v1 = tmp_path / "v1"
    checksums = {name: _sha256(v1 / name) for name in ("config.json", "model.safetensors")}
    entry = {"id": "tiny", "repo_id": "org/tiny", "revision": server.v1, "sha256": checksums}
    _write_catalogue(tmp_path, monkeypatch, {"default": "tiny", "models": [entry]})
    assert hub.load_model(None).config.description == "version one"


def test_catalogue_checksum_mismatch(server, tmp_path, monkeypatch):
    entry = {"id": "tiny", "repo_id": "org/tiny", "revision": server.v1,
             "sha256": {"config.json": _sha256(tmp_path / "v1" / "config.json"),
                        "model.safetensors": _sha256(tmp_path / "v2" / "model.safetensors")}}
    _write_catalogue(tmp_path, monkeypatch, {"default": None, "models": [entry]})
    with pytest.raises(HubError, match="model.safetensors of 'org/tiny@.*' does not match its checksum"):
        hub.resolve_model("tiny")


def test_catalogue_hub_entries_must_be_pinned(tmp_path, monkeypatch):
    entry = {"id": "tiny", "repo_id": "org/tiny", "revision": "main", "sha256": {}}
    _write_catalogue(tmp_path, monkeypatch, {"default": None, "models": [entry]})
    with pytest.raises(ModelError, match="40-character 'revision'"):
        hub.resolve_model("tiny")


def test_shipped_entry_resolves_relative_to_the_catalogue(tmp_path, monkeypatch):
    _package(tmp_path / "Models" / "tiny", "shipped")
    _write_catalogue(tmp_path, monkeypatch, {"default": "tiny", "models": [{"id": "tiny", "path": "Models/tiny"}]})
    assert hub.resolve_model(None) == tmp_path / "Models" / "tiny"
    assert hub.list_models()[0] == {"id": "tiny", "source": "shipped", "default": True, "available": True,
                                    "description": ""}


def test_missing_shipped_model(tmp_path, monkeypatch):
    _write_catalogue(tmp_path, monkeypatch, {"default": "tiny", "models": [{"id": "tiny", "path": "Models/tiny"}]})
    with pytest.raises(ModelError, match="shipped model 'tiny' is missing"):
        hub.resolve_model(None)


def test_no_default_model_yet(tmp_path, monkeypatch):
    _write_catalogue(tmp_path, monkeypatch, {"default": None, "models": []})
    with pytest.raises(ModelError, match="No default model is installed yet"):
        hub.resolve_model(None)


def test_the_repository_catalogue_is_valid(monkeypatch):
    monkeypatch.delenv("SPECTDENOISE_CATALOGUE", raising=False)
    assert isinstance(hub.read_catalogue()["models"], list)


def test_local_folder(tmp_path):
    assert hub.resolve_model(str(_package(tmp_path / "mine", "local"))) == tmp_path / "mine"


def test_unknown_name(tmp_path, monkeypatch):
    _write_catalogue(tmp_path, monkeypatch, {"default": None, "models": []})
    with pytest.raises(ModelError, match="Unknown model 'no such model'"):
        hub.resolve_model("no such model")


def test_cli_download_then_list_shows_the_cached_model(server):
    result = _cli("models", "download", f"org/tiny@{server.v1}", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["folder"].endswith(server.v1)
    listed = json.loads(_cli("models", "list", "--json").stdout)
    assert [row["id"] for row in listed] == [f"org/tiny@{server.v1}"]


def test_cli_info_prints_config_and_card(server):
    result = _cli("models", "info", f"org/tiny@{server.v2}")
    assert result.returncode == 0, result.stderr
    assert "unet2d (deterministic)" in result.stdout and "# version two" in result.stdout


def test_cli_download_of_unknown_repository_exits_with_the_hub_code(server):
    result = _cli("models", "download", "org/missing")
    assert result.returncode == HubError.exit_code
    assert result.stderr.strip() == (f"spectdenoise: error: The model repository 'org/missing' was not found on "
                                     f"{server.url}; check the name (org/name) and your access rights.")
