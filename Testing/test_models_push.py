"""Publishing and finding models: ``models push`` / ``search`` / ``card`` with the real huggingface_hub client
against Testing/hub_server.py on 127.0.0.1, Hub-standard cards, and one sentence for each failure."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hub_server import HubServer
from model_fixtures import make_package, phantom

from SPECTDenoiseLib import hub
from SPECTDenoiseLib.errors import HubError, ModelError
from SPECTDenoiseLib.models.config import ModelConfig
from SPECTDenoiseLib.train.card import BENCHMARK_RESULTS, card_metadata, refresh_card, with_metadata

TOKEN = "hf_test_write_token"
REPOSITORY = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPOSITORY / "Resources" / "Models").iterdir())


def hub_package(folder: Path, name: str = "tiny", tracers: tuple[str, ...] = ("Tc-99m",)) -> Path:
    """A tiny 2.5D U-Net package whose card carries the Hub metadata the card generator writes."""
    make_package(folder, "unet25d", tracers=list(tracers))
    config = ModelConfig.load(folder / "config.json")
    body = f"# {name}\n\nA tiny test model.\n\n## Training\n- Data: 3 test pairs\n"
    (folder / "README.md").write_text(with_metadata(body, card_metadata(name, config, "3 test pairs")))
    return folder


@pytest.fixture()
def server(tmp_path, monkeypatch):
    """A hub accepting TOKEN for the namespace 'org', an empty cache, the token in HF_TOKEN."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HubServer(tokens={TOKEN: "org"}) as hub_server:
        monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
        yield hub_server


def _cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "SPECTDenoiseLib", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=REPOSITORY, timeout=180, check=False)


def _one_sentence(result, code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("spectdenoise: error: ") and text in line, line


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.slow
def test_pushed_model_is_found_downloaded_byte_identical_and_denoises_like_the_folder(server, tmp_path):
    package = hub_package(tmp_path / "tiny")
    pushed = _cli("models", "push", package, "org/tiny", "--json")
    assert pushed.returncode == 0, pushed.stderr
    commit = json.loads(pushed.stdout)["commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and server.refs["org/tiny"]["main"] == commit
    assert server.messages[commit].startswith("Upload tiny, trained on 3 test pairs")

    found = json.loads(_cli("models", "search", "--json").stdout)
    assert [(row["id"], row["revision"], row["pin"]) for row in found] == [
        ("org/tiny", commit, f"org/tiny@{commit}")]

    downloaded = json.loads(_cli("models", "download", f"org/tiny@{commit}", "--json").stdout)["folder"]
    for name in ("config.json", "model.safetensors", "README.md"):
        assert (Path(downloaded) / name).read_bytes() == (package / name).read_bytes(), name

    sitk.WriteImage(phantom(), str(tmp_path / "spect.nrrd"))
    for model, output in ((package, "local.nrrd"), (f"org/tiny@{commit}", "hub.nrrd")):
        result = _cli("denoise", tmp_path / "spect.nrrd", "-o", tmp_path / output, "--model", model)
        assert result.returncode == 0, result.stderr
    local, pinned = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name)))
                     for name in ("local.nrrd", "hub.nrrd"))
    np.testing.assert_array_equal(local, pinned)


def test_push_prints_the_commit_to_pin(server, tmp_path):
    result = _cli("models", "push", hub_package(tmp_path / "tiny"), "org/tiny")
    assert result.returncode == 0, result.stderr
    commit = server.refs["org/tiny"]["main"]
    assert f"commit {commit}" in result.stdout and f"--model org/tiny@{commit}" in result.stdout


def test_push_to_an_existing_repo_adds_a_commit_and_the_old_one_stays_pinned(server, tmp_path):
    first = hub.push_model(hub_package(tmp_path / "v1", tracers=("Tc-99m",)), "org/tiny")
    second = hub.push_model(hub_package(tmp_path / "v2", tracers=("Lu-177",)), "org/tiny")
    assert first["commit"] != second["commit"] and server.refs["org/tiny"]["main"] == second["commit"]
    old = hub.resolve_model(first["pin"])
    assert list(ModelConfig.load(old / "config.json").tracers) == ["Tc-99m"]


def test_push_to_a_new_branch_leaves_main_alone(server, tmp_path):
    hub.push_model(hub_package(tmp_path / "v1"), "org/tiny")
    main = server.refs["org/tiny"]["main"]
    pushed = hub.push_model(hub_package(tmp_path / "v2", tracers=("I-123",)), "org/tiny", revision="dev")
    assert server.refs["org/tiny"] == {"main": main, "dev": pushed["commit"]}


def test_private_push_creates_a_private_repo_that_search_does_not_list(server, tmp_path):
    hub.push_model(hub_package(tmp_path / "tiny"), "org/secret", private=True)
    assert server.private == {"org/secret"}
    assert hub.search_models() == []


def test_search_filters_by_project_tag_tracer_tag_and_text(server, tmp_path):
    hub.push_model(hub_package(tmp_path / "a", tracers=("Tc-99m",)), "org/bone-tc")
    hub.push_model(hub_package(tmp_path / "b", tracers=("Lu-177",)), "org/therapy-lu")
    stranger = make_package(tmp_path / "c", "unet25d")  # a card without the project's tag
    server.add_repo("org/other", stranger)
    assert sorted(row["id"] for row in hub.search_models()) == ["org/bone-tc", "org/therapy-lu"]
    assert [row["id"] for row in hub.search_models(tags=["lu-177"])] == ["org/therapy-lu"]
    (row,) = hub.search_models("bone")
    assert (row["inputs"], row["kind"], row["tracers"], row["license"]) == (["spect"], "deterministic", ["Tc-99m"],
                                                                           "apache-2.0")


def test_push_without_a_token_is_one_sentence_and_sends_nothing(server, tmp_path):
    result = _cli("models", "push", hub_package(tmp_path / "tiny"), "org/tiny", "--token-env", "MY_HUB_TOKEN")
    _one_sentence(result, HubError.exit_code, "No Hugging Face token in the environment variable MY_HUB_TOKEN")
    assert server.requests == []


def test_refused_token(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(HubError, match="refused the token in HF_TOKEN \\(HTTP 401\\)"):
        hub.push_model(hub_package(tmp_path / "tiny"), "org/tiny")


def test_repo_of_another_namespace(server, tmp_path):
    server.add_repo("someone/tiny", hub_package(tmp_path / "theirs"))
    with pytest.raises(HubError, match="may not write to 'someone/tiny' \\(HTTP 403\\)"):
        hub.push_model(hub_package(tmp_path / "tiny"), "someone/tiny")
    assert len(server.repos["someone/tiny"]) == 1


def test_push_to_an_unreachable_hub(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())
    with pytest.raises(HubError, match="cannot be reached; check the network connection"):
        hub.push_model(hub_package(tmp_path / "tiny"), "org/tiny")


@pytest.mark.parametrize("action", ["search", "push"])
def test_a_hub_that_never_answers_times_out_instead_of_hanging(tmp_path, action):
    command = ["models", "search"]
    if action == "push":
        command = ["models", "push", hub_package(tmp_path / "tiny"), "org/tiny"]
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        result = _cli(*command, HF_ENDPOINT=f"http://127.0.0.1:{silent.getsockname()[1]}", HF_TOKEN=TOKEN,
                      SPECTDENOISE_HUB_TIMEOUT="2", HF_HUB_OFFLINE="")
    _one_sentence(result, HubError.exit_code, "cannot be reached or did not answer within 2 s")
    assert time.monotonic() - started < 60


def test_search_offline_is_one_sentence_with_exit_5():
    result = _cli("models", "search", "bone", HF_HUB_OFFLINE="1")
    _one_sentence(result, HubError.exit_code, "SPECTDenoise is offline (HF_HUB_OFFLINE is set)")


def test_search_with_the_hub_down_is_one_sentence_with_exit_5():
    result = _cli("models", "search", HF_ENDPOINT=_closed_port_url(), HF_HUB_OFFLINE="",
                  SPECTDENOISE_HUB_TIMEOUT="2")
    _one_sentence(result, HubError.exit_code, "cannot be reached")


def test_card_without_hub_metadata_is_refused_before_any_request(server, tmp_path):
    package = make_package(tmp_path / "tiny", "unet25d")
    result = _cli("models", "push", package, "org/tiny")
    _one_sentence(result, ModelError.exit_code,
                  "lacks Hub metadata: license, library_name, the tag 'spectdenoise'")
    assert server.requests == []


def test_card_with_invalid_yaml_is_refused(server, tmp_path):
    package = hub_package(tmp_path / "tiny")
    (package / "README.md").write_text("---\nlicense: [apache-2.0\n---\n# tiny\n")
    with pytest.raises(ModelError, match="invalid Hub metadata .*regenerate it with: spectdenoise models card"):
        hub.push_model(package, "org/tiny")


@pytest.mark.parametrize("repo_id", ["tiny", "org/", "org/ti ny", "../org/tiny"])
def test_bad_repo_id(server, tmp_path, repo_id):
    with pytest.raises(ModelError, match="is not a Hugging Face repo id; use ORG/NAME"):
        hub.push_model(hub_package(tmp_path / "tiny"), repo_id)


def test_broken_package_is_not_pushed(server, tmp_path):
    package = hub_package(tmp_path / "tiny")
    (package / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="has no model.safetensors"):
        hub.push_model(package, "org/tiny")
    assert server.requests == []


def test_card_refresh_keeps_the_body_and_adds_the_benchmark_results(tmp_path):
    package = hub_package(tmp_path / "spect-unet25d", name="spect-unet25d")
    body = (package / "README.md").read_text().split("---\n", 2)[2]
    refresh_card(package, BENCHMARK_RESULTS)
    text = (package / "README.md").read_text()
    assert text.endswith(body)
    metadata = hub.card_metadata(package)
    entries = [(r["dataset"]["config"], m["type"])
               for r in metadata["model-index"][0]["results"] for m in r["metrics"]]
    assert len(entries) == len(set(entries))  # each mode and count level its own result, never merged
    results = {(r["dataset"]["config"], m["type"]): m["value"]
               for r in metadata["model-index"][0]["results"] for m in r["metrics"]}
    quick = _quick_summary("spect-unet25d")  # what BENCHMARKS.md's quick table shows for it at 10 %
    assert (results[("quick-10pct-counts", "nrmse")], results[("quick-10pct-counts", "psnr")],
            results[("quick-10pct-counts", "ssim")]) == (round(quick["nrmse"], 3), round(quick["psnr_db"], 1),
                                                         round(quick["ssim"], 3))


@pytest.mark.parametrize("folder", SHIPPED, ids=[folder.name for folder in SHIPPED])
def test_shipped_cards_carry_hub_metadata_and_their_benchmark_results(folder):
    metadata = hub.card_metadata(folder)
    assert {"spect", "denoising", "3d-slicer", "medical-imaging", "spectdenoise"} <= set(metadata["tags"])
    assert {tracer.lower() for tracer in ModelConfig.load(folder / "config.json").tracers} <= set(metadata["tags"])
    assert metadata["license"] == "apache-2.0" and metadata["training_data"]
    assert metadata["model-index"][0]["name"] == folder.name and metadata["model-index"][0]["results"]


def test_info_shows_the_hub_metadata():
    result = _cli("models", "info", "spect-unet25d")
    assert result.returncode == 0, result.stderr
    assert "hub metadata: licence apache-2.0, library spectdenoise" in result.stdout
    assert ("benchmark: SPECTDenoise benchmark (quick), noise-free reference (2 cases, 20 noise draws, 10 % counts): "
            f"nrmse {round(_quick_summary('spect-unet25d')['nrmse'], 3)}") in result.stdout


def _quick_summary(model: str) -> dict:
    """The quick benchmark's summary of ``model`` at 10 % counts (benchmarks/results/summary_quick.json)."""
    return json.loads((BENCHMARK_RESULTS / "summary_quick.json").read_text())["methods"][model]["0.1"]
