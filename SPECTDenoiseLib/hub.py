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

Publishing and finding: :func:`push_model` uploads a package with ``HfApi.create_repo`` / ``upload_folder`` and
returns the commit to pin; :func:`search_models` lists Hub models tagged :data:`PROJECT_TAG` with
``HfApi.list_models``. Both need a Hub-standard card (:func:`card_metadata`), refuse to run offline, and bound
every request by :func:`hub_timeout` seconds (``SPECTDENOISE_HUB_TIMEOUT``), so an unreachable Hub is one
sentence (exit 5), never a hang.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
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
PROJECT_TAG = "spectdenoise"  # every SPECTDenoise model on the Hub carries it; search filters on it
CARD_TAGS = (PROJECT_TAG, "spect", "denoising", "3d-slicer", "medical-imaging")  # plus the tracers, lower case
LIBRARY_NAME = "spectdenoise"
LICENSE = "apache-2.0"
VARIANCE_MEASURED = "- Variance measured"  # a diffusion card's lines of measured coverage (train/card.py writes them)
TIMEOUT_VARIABLE = "SPECTDENOISE_HUB_TIMEOUT"
DEFAULT_TIMEOUT_S = 20.0
_REPO_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


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
    """Describe a model: its folder, validated config, model card and the card's Hub metadata (empty when the
    card has none), downloading it if needed."""
    from .models.config import ModelConfig

    folder = resolve_model(model)
    card_path = folder / "README.md"
    try:
        metadata = card_metadata(folder)
    except ModelError:
        metadata = {}
    return {"id": model if model is not None else read_catalogue()["default"], "folder": str(folder),
            "config": ModelConfig.load(folder / "config.json").to_dict(), "metadata": metadata,
            "card": card_path.read_text(encoding="utf-8", errors="replace") if card_path.is_file() else ""}


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, from the environment at call time (as huggingface_hub defines it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def hub_endpoint() -> str:
    """The Hub address: ``$HF_ENDPOINT`` (read now) or https://huggingface.co; HubError if it is not http(s)."""
    endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", endpoint):
        raise HubError(f"HF_ENDPOINT '{endpoint}' is not an http:// or https:// address; fix or unset it.")
    return endpoint


def hub_timeout() -> float:
    """Seconds each Hub request of :func:`push_model` and :func:`search_models` may take (connect or read):
    ``$SPECTDENOISE_HUB_TIMEOUT`` or 20."""
    value = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 3600:
        raise HubError(f"{TIMEOUT_VARIABLE} must be a number of seconds between 0 and 3600, not '{value}'.")
    return seconds


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
    endpoint = hub_endpoint()
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


def card_metadata(folder: str | Path) -> dict[str, Any]:
    """The Hub metadata of the model card ``folder/README.md`` as plain values (``license``, ``library_name``,
    ``tags``, ``training_data``, ``model-index``, ...).

    Raises ModelError when there is no card, its YAML is invalid, or it lacks a licence, ``library_name`` or
    the :data:`PROJECT_TAG` tag (``spectdenoise models card FOLDER`` writes them).
    """
    import yaml
    from huggingface_hub import ModelCard

    _quiet_hub_logging()
    path = Path(folder) / "README.md"
    fix = f"regenerate it with: spectdenoise models card {folder}"
    try:
        card = ModelCard(path.read_text(encoding="utf-8"), ignore_metadata_errors=False)
    except FileNotFoundError:
        raise ModelError(f"The model package '{folder}' has no model card (README.md); {fix}.") from None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(f"The model card '{path}' has invalid Hub metadata ({reason}); {fix}.") from None
    data = card.data.to_dict()
    missing = [key for key in ("license", "library_name") if not data.get(key)]
    if PROJECT_TAG not in (data.get("tags") or []):
        missing.append(f"the tag '{PROJECT_TAG}'")
    if missing:
        raise ModelError(f"The model card '{path}' lacks Hub metadata: {', '.join(missing)}; {fix}.")
    return data


def variance_measured(folder: str | Path) -> list[str]:
    """The :data:`VARIANCE_MEASURED` lines of the model card ``folder/README.md`` without their ``- ``: how well the
    model's variance map met its calibration on the benchmark (none when the card is missing or has none)."""
    try:
        text = (Path(folder) / "README.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [line[2:] for line in text.splitlines() if line.startswith(VARIANCE_MEASURED)]


def push_model(folder: str | Path, repo_id: str, *, revision: str = "main", private: bool = False,
               token_env: str = "HF_TOKEN") -> dict[str, str]:
    """Upload the model package in ``folder`` to the Hub repo ``repo_id`` (created if needed) on branch
    ``revision`` (created from main if needed) with the token in the environment variable ``token_env``.

    The package must load (config, weights) and carry a Hub-standard card (:func:`card_metadata`); only the
    package files are uploaded, in one commit whose message names the training data.

    Returns
    -------
    dict
        ``repo_id``, ``revision``, ``commit`` (40 hex: pin it as ``--model repo_id@commit``), ``pin`` and ``url``.

    Raises
    ------
    ModelError
        Invalid repo id, package or card.
    HubError
        No token, offline, Hub unreachable or too slow, token refused (401) or without write access (403).
    """
    from huggingface_hub import HfApi

    from .models.package import load_package

    folder = Path(folder)
    if not _REPO_NAME.match(repo_id):
        raise ModelError(f"'{repo_id}' is not a Hugging Face repo id; use ORG/NAME (letters, digits, '-', '_', "
                         "'.').")
    load_package(folder)
    metadata = card_metadata(folder)
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise HubError(f"No Hugging Face token in the environment variable {token_env}; create a write token at "
                       "https://huggingface.co/settings/tokens and set it (or name another variable with "
                       "--token-env).")
    endpoint = _online_endpoint("pushing a model")
    data = str(metadata.get("training_data") or "unspecified data")
    name = str(metadata.get("model_name") or folder.name)
    api = HfApi(endpoint=endpoint, token=token)
    with _hub_errors(endpoint, repo_id, token_env):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                                 allow_patterns=list(PACKAGE_FILES),
                                 commit_message=f"Upload {name}, trained on {data}"[:200],
                                 commit_description=f"SPECTDenoise model package {name}. Training data: {data}")
    return {"repo_id": repo_id, "revision": revision, "commit": info.oid, "pin": f"{repo_id}@{info.oid}",
            "url": str(info.commit_url)}


def search_models(text: str | None = None, tags: tuple[str, ...] | list[str] = (), limit: int = 50,
                  ) -> list[dict[str, Any]]:
    """SPECTDenoise models on the Hub: those tagged :data:`PROJECT_TAG` and every tag of ``tags`` (e.g. a
    tracer, ``tc-99m``), whose id contains ``text``, newest first, at most ``limit``.

    Returns plain records (JSON-ready, for the CLI and background processes such as the Slicer panel's
    *Add from Hub*): ``id``, ``revision`` (the latest commit of main: pin it as ``pin`` = ``id@revision``),
    ``last_modified`` (ISO 8601), ``downloads``, ``likes``, ``tags``, and from the card's metadata ``inputs``,
    ``kind``, ``tracers``, ``license`` (None when absent). Raises HubError offline or when the Hub cannot be
    reached within :func:`hub_timeout` seconds (``list_models`` retries with back-off and sets no timeout of its
    own, so the whole call runs in a daemon thread that is abandoned at the deadline; run searches in a
    background process, as the CLI and the Slicer panel do, where that thread ends with the process).
    """
    from huggingface_hub import HfApi

    endpoint = _online_endpoint("searching the Hub")
    api = HfApi(endpoint=endpoint)
    expand = ["sha", "lastModified", "tags", "downloads", "likes", "cardData"]
    with _hub_errors(endpoint, None, None):  # list_models sends timeout=None and retries: bound the whole call
        found = _within(hub_timeout(), lambda: list(api.list_models(
            filter=[PROJECT_TAG, *tags], search=text or None, limit=limit, sort="last_modified", expand=expand)))
    records = []
    for info in found:
        card = info.card_data.to_dict() if info.card_data is not None else {}
        records.append({
            "id": info.id, "revision": info.sha, "pin": f"{info.id}@{info.sha}",
            "last_modified": info.last_modified.isoformat() if info.last_modified else None,
            "downloads": info.downloads, "likes": info.likes, "tags": list(info.tags or []),
            **{key: card.get(key) for key in ("inputs", "kind", "tracers", "license")},
        })
    return records


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """Return ``call()``, run in a daemon thread; raise TimeoutError if it takes more than ``seconds``."""
    outcome: queue.Queue = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            outcome.put((True, call()))
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            outcome.put((False, error))

    threading.Thread(target=run, name="hub-call", daemon=True).start()
    try:
        succeeded, value = outcome.get(timeout=seconds)
    except queue.Empty:
        raise TimeoutError(f"no answer within {seconds:g} s") from None
    if succeeded:
        return value
    raise value


def _quiet_hub_logging() -> None:
    """Silence huggingface_hub's warnings (retries, cards without metadata): a failure stays one sentence."""
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()


def _online_endpoint(action: str) -> str:
    """The endpoint, after refusing offline mode (and checking :func:`hub_timeout`)."""
    _quiet_hub_logging()
    if _env_offline():
        raise HubError(f"SPECTDenoise is offline (HF_HUB_OFFLINE is set), and {action} needs the Hugging Face "
                       "Hub; unset HF_HUB_OFFLINE and connect.")
    hub_timeout()
    return hub_endpoint()


@contextlib.contextmanager
def _hub_errors(endpoint: str, repo_id: str | None, token_env: str | None) -> Iterator[None]:
    """Make :func:`hub_timeout` the default timeout of huggingface_hub's shared HTTP client (restored afterwards;
    ``create_repo``, preupload and commit use it) and turn errors into one HubError (or ModelError for a card the
    Hub refuses)."""
    import httpx2
    from huggingface_hub import get_session
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    session = get_session()
    previous, session.timeout = session.timeout, hub_timeout()
    try:
        yield
    except OfflineModeIsEnabled:
        raise HubError("huggingface_hub is in offline mode (HF_HUB_OFFLINE); unset it and connect.") from None
    except (httpx2.TimeoutException, TimeoutError):
        raise HubError(f"The Hugging Face Hub at {endpoint} cannot be reached or did not answer within "
                       f"{hub_timeout():g} s; check the network connection, or raise "
                       f"{TIMEOUT_VARIABLE}.") from None
    except httpx2.TransportError:
        raise HubError(f"The Hugging Face Hub at {endpoint} cannot be reached; check the network "
                       "connection.") from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            raise HubError(f"The Hugging Face Hub at {endpoint} refused the token in {token_env or 'HF_TOKEN'} "
                           "(HTTP 401); check that it is valid.") from None
        if status == 403 and repo_id:
            raise HubError(f"The token in {token_env} may not write to '{repo_id}' (HTTP 403); use a write token "
                           f"of a member of '{repo_id.split('/')[0]}', or push under your own name.") from None
        server = error.server_message.splitlines()[0] if error.server_message else f"HTTP {status}"
        raise HubError(f"The Hugging Face Hub at {endpoint} refused the request ({server}).") from None
    except ValueError as error:
        if "Invalid metadata in README.md" not in str(error):
            raise
        raise ModelError(f"The Hub refused the model card's metadata ({' '.join(str(error).split())}).") from None
    finally:
        session.timeout = previous
