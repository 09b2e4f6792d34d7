"""Find model packages: catalogue names, local folders and Hugging Face Hub repos (``org/name[@revision]``).

Hub repos are fetched with ``huggingface_hub.snapshot_download`` into the standard HF cache. Environment is read
at *call* time, not at import: ``HF_ENDPOINT`` (passed as ``endpoint``), ``HF_HUB_OFFLINE`` (passed as
``local_files_only``) and ``HF_HUB_CACHE`` / ``HF_HOME`` (passed as ``cache_dir``), so a process may change them
after importing huggingface_hub. Offline, or when the hub cannot be reached, only the cache is used.
Catalogue hub entries are always pinned to a commit and their files' sha256 are checked on every resolve.

The catalogue is ``Resources/Models.json`` (``SPECTDENOISE_CATALOGUE`` names another)::

    {"default": "<id>" | null,
     "models": [{"id": "...", "path": "Models/<folder>", "description": "..."},
                {"id": "...", "repo_id": "org/name", "revision": "<40 hex>",
                 "sha256": {"config.json": "...", "model.safetensors": "..."}, "description": "..."}]}

Entries may carry more keys for the GUI and error messages (e.g. ``"kind": "diffusion"``); they are kept as is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import HubError, ModelError

if TYPE_CHECKING:
    from .models.package import LoadedModel

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

RESOURCES = Path(__file__).resolve().parent.parent / "Resources"
PACKAGE_FILES = ("config.json", "model.safetensors", "README.md")
DEFAULT_ENDPOINT = "https://huggingface.co"
_REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHECKED_FILES = ("config.json", "model.safetensors")  # a catalogue hub entry must give the sha256 of each


def catalogue_path() -> Path:
    """The catalogue in use: ``$SPECTDENOISE_CATALOGUE`` or ``Resources/Models.json``."""
    return Path(os.environ.get("SPECTDENOISE_CATALOGUE") or RESOURCES / "Models.json")


def read_catalogue(path: Path | None = None) -> dict[str, Any]:
    """Read and check the catalogue; return ``{"default": id | None, "models": [entry, ...], "folder": Path}``
    where ``folder`` is the catalogue's folder, which shipped ``path`` entries are relative to."""
    path = path or catalogue_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"The model catalogue '{path}' cannot be read ({error}).") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str)
                                               for m in models):
        raise ModelError(f"The model catalogue '{path}' must hold a 'models' list of entries with an 'id'.")
    for entry in models:
        hub = "repo_id" in entry
        checksums = entry.get("sha256")
        if hub == ("path" in entry) or (hub and not (
                _COMMIT.match(str(entry.get("revision"))) and isinstance(checksums, dict)
                and set(checksums) >= set(CHECKED_FILES) and set(checksums) <= set(PACKAGE_FILES)
                and all(isinstance(value, str) and _SHA256.match(value) for value in checksums.values()))):
            raise ModelError(f"The catalogue entry '{entry['id']}' needs either a 'path' or a 'repo_id' with a "
                             "40-character 'revision' and the sha256 checksums (64 hexadecimal digits) of "
                             f"{' and '.join(CHECKED_FILES)}.")
    ids = [m["id"] for m in models]
    default = data.get("default")
    if len(set(ids)) != len(ids) or (default is not None and default not in ids):
        raise ModelError(f"The model catalogue '{path}' repeats an id or names an unknown default.")
    return {"default": default, "models": models, "folder": path.parent}


def resolve_model(model: str | None, offline: bool | None = None, catalogue: Path | None = None) -> Path:
    """Return the local folder of a model package, downloading it from the hub if needed.

    ``model`` is None (the catalogue default), a catalogue id, an existing folder, or ``org/name[@revision]``
    (a folder of that name wins). ``offline`` None means: offline when ``HF_HUB_OFFLINE`` is set.
    """
    entries = read_catalogue(catalogue)
    if model is None:
        if entries["default"] is None:
            raise ModelError("No default model is installed yet; pass --model with a catalogue name, a Hugging "
                             "Face repo id (org/name[@revision]) or a model folder.")
        model = entries["default"]
    if not model.strip():
        raise ModelError("The model name is empty; give a catalogue name, a model folder or a Hugging Face repo id "
                         "(org/name[@revision]), or leave the option out for the default model.")
    by_id = {entry["id"]: entry for entry in entries["models"]}
    if model in by_id:
        entry = by_id[model]
        if "path" in entry:
            folder = entries["folder"] / entry["path"]
            if not folder.is_dir():
                raise ModelError(f"The shipped model '{model}' is missing from '{folder}'; "
                                 "reinstall SPECTDenoise.")
            return folder
        folder = _snapshot(entry["repo_id"], entry["revision"], offline)
        _verify(folder, entry["sha256"], f"{entry['repo_id']}@{entry['revision']}")
        return folder
    if Path(model).expanduser().is_dir():
        return Path(model).expanduser()
    match = _REPO_ID.match(model)
    if match is None:
        known = ", ".join(by_id) or "none installed"
        raise ModelError(f"Unknown model '{model}': not a catalogue name ({known}), "
                         "an existing folder, or a Hugging Face repo id org/name[@revision].")
    return _snapshot(match["repo"], match["revision"] or "main", offline)


def load_model(model: str | None, device: str = "cpu", offline: bool | None = None) -> LoadedModel:
    """Resolve ``model`` (see :func:`resolve_model`) and load its package onto ``device``."""
    from .models.package import load_package

    name = model if model is not None else read_catalogue()["default"]
    return load_package(resolve_model(model, offline), device=device, name=name)


def download_model(model: str, revision: str | None = None) -> Path:
    """Fetch a catalogue id or ``org/name[@revision]`` (``revision`` overrides ``@``) into the cache."""
    if revision is not None:
        model = f"{model.split('@', 1)[0]}@{revision}"
    return resolve_model(model)


def list_models() -> list[dict[str, Any]]:
    """Catalogue entries and cached hub models not in the catalogue, each a dict with ``id``, ``source``
    (``shipped``/``hub``/``cache``), ``default``, ``available`` (usable without a download), ``description``."""
    entries = read_catalogue()
    rows = []
    for entry in entries["models"]:
        if "path" in entry:
            available = (entries["folder"] / entry["path"]).is_dir()
        else:
            available = _cached_folder(entry["repo_id"], entry["revision"]) is not None
        rows.append({"id": entry["id"], "source": "shipped" if "path" in entry else "hub",
                     "default": entry["id"] == entries["default"], "available": available,
                     "description": entry.get("description", "")})
    known = {(e["repo_id"], e["revision"]) for e in entries["models"] if "repo_id" in e}
    for repo_id, commit in _cached_snapshots():
        if (repo_id, commit) not in known:
            rows.append({"id": f"{repo_id}@{commit}", "source": "cache", "default": False, "available": True,
                         "description": ""})
    return rows


def model_info(model: str | None) -> dict[str, Any]:
    """Describe a model: its folder, validated config and model card (downloads it if needed)."""
    from .models.config import ModelConfig

    folder = resolve_model(model)
    card_path = folder / "README.md"
    return {"id": model if model is not None else read_catalogue()["default"], "folder": str(folder),
            "config": ModelConfig.load(folder / "config.json").to_dict(),
            "card": card_path.read_text(encoding="utf-8", errors="replace") if card_path.is_file() else ""}


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, from the environment at call time (as huggingface_hub defines it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def _env_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _snapshot(repo_id: str, revision: str, offline: bool | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = _env_offline() if offline is None else offline
    endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", endpoint):
        raise HubError(f"HF_ENDPOINT '{endpoint}' is not an http:// or https:// address; fix or unset it.")
    name = f"{repo_id}@{revision}"
    try:
        folder = snapshot_download(repo_id, revision=revision, endpoint=endpoint, cache_dir=hf_cache_dir(),
                                   local_files_only=offline, allow_patterns=list(PACKAGE_FILES))
    except RepositoryNotFoundError:
        raise HubError(f"The model repository '{repo_id}' was not found on {endpoint}; check the name "
                       "(org/name) and your access rights.") from None
    except RevisionNotFoundError:
        raise HubError(f"Revision '{revision}' of the model repository '{repo_id}' was not found on "
                       f"{endpoint}.") from None
    except LocalEntryNotFoundError:
        if offline:
            raise HubError(f"The model '{name}' is not in the Hugging Face cache and SPECTDenoise is offline; "
                           "connect once (or unset HF_HUB_OFFLINE) to download it.") from None
        raise HubError(f"The Hugging Face Hub at {endpoint} cannot be reached and the model '{name}' is not in "
                       "the cache; check the network connection.") from None
    except HFValidationError:
        raise ModelError(f"'{name}' is not a valid Hugging Face repo id (org/name[@revision]).") from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "no"
        raise HubError(f"The Hugging Face Hub at {endpoint} refused to send '{name}' (HTTP {status}).") from None
    except OSError as error:
        raise HubError(f"The model '{name}' cannot be stored in the cache '{hf_cache_dir()}' "
                       f"({error.strerror or error}).") from None
    return Path(folder)


def _verify(folder: Path, checksums: dict[str, str], name: str) -> None:
    for file, expected in checksums.items():
        path = folder / file
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        if digest != expected:
            raise HubError(f"The downloaded file {file} of '{name}' does not match its checksum in the catalogue; "
                           "it may be corrupt or tampered with: delete it from the Hugging Face cache "
                           "(hf cache delete) and download it again.")


def _repo_folder(repo_id: str) -> Path:
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def _cached_folder(repo_id: str, revision: str) -> Path | None:
    folder = _repo_folder(repo_id) / "snapshots" / revision
    return folder if _is_package(folder) else None


def _cached_snapshots() -> list[tuple[str, str]]:
    found = []
    for repo in sorted(hf_cache_dir().glob("models--*--*")):
        repo_id = repo.name[len("models--"):].replace("--", "/", 1)
        found += [(repo_id, s.name) for s in sorted((repo / "snapshots").glob("*")) if _is_package(s)]
    return found


def _is_package(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
