"""The panel's model list and model-card line, from local files only, and the Hub download job.

Everything here runs on Slicer's GUI thread, so it reads only small local files: the catalogue, the shipped
models' ``config.json`` and the list of the Hugging Face cache. It never touches the network, never hashes
weights and never imports torch; a download runs in the background as a :class:`ModelDownload` job.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import slicer

from SPECTDenoiseLib import hub
from SPECTDenoiseLib.errors import InputError

from .runner import Step

HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """One entry of the model list: ``id`` for the worker, ``label`` for the combo box, ``summary`` (model card),
    ``variance``: whether the model gives a variance map (None: not known before it runs)."""

    id: str
    label: str
    summary: str
    variance: bool | None = None


def model_choices() -> list[ModelChoice]:
    """The shipped models, the catalogue's Hub models and the Hub models in the cache, with their summaries (for
    a shipped diffusion model with its card's measured variance coverage, ``hub.variance_measured``)."""
    catalogue = hub.read_catalogue()
    entries = {entry["id"]: entry for entry in catalogue["models"]}
    choices = []
    for row in hub.list_models():
        label = row["id"] + (" (default)" if row["default"] else "") + ("" if row["available"] else " ↓")
        entry = entries.get(row["id"])
        if entry is None:
            choices.append(ModelChoice(row["id"], label, "Downloaded from the Hugging Face Hub; its model card is "
                                                         "checked when it runs."))
            continue
        try:
            facts = _facts(entry, catalogue["folder"])
        except (OSError, ValueError) as error:
            why = f"The shipped model '{row['id']}' cannot be read ({error}); reinstall SPECTDenoise."
            choices.append(ModelChoice(row["id"], label, why))
            continue
        inputs = facts.get("input_channels") or facts.get("inputs") or ["spect"]
        fractions = ", ".join(f"{100 * f:g}%" for f in facts.get("count_fractions", ())) or "not stated"
        variance = facts.get("kind") == "diffusion"
        description = row["description"] or facts.get("description", "")
        shipped = catalogue["folder"] / entry["path"] if "path" in entry else None
        measured = hub.variance_measured(shipped) if variance and shipped is not None else []
        summary = (f"{description}\nTrained for count fractions: {fractions}; "
                   f"needs CT: {'yes' if 'ct' in inputs else 'no'}; variance: {'yes' if variance else 'no'}."
                   + ("" if row["available"] else " Downloaded from the Hub on first use.")
                   + "".join(f"\n{line}" for line in measured))
        choices.append(ModelChoice(row["id"], label, summary, variance))
    return choices


def _facts(entry: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The catalogue entry, completed by the shipped model's config.json (a small local file)."""
    facts = dict(entry)
    if "path" in entry:
        facts.update(json.loads((folder / entry["path"] / "config.json").read_text(encoding="utf-8")))
    return facts


def gives_variance(model_id: str) -> bool | None:
    """Whether ``model_id`` ("" = the default model; a listed model or a local model folder) gives a variance map;
    None when that is known only at run time."""
    model_id = model_id or hub.read_catalogue()["default"] or ""
    listed = next((choice.variance for choice in model_choices() if choice.id == model_id), None)
    config = Path(model_id).expanduser() / "config.json"
    if listed is None and config.is_file():
        try:
            return _facts({"path": "."}, config.parent).get("kind") == "diffusion"
        except (OSError, ValueError):
            return None
    return listed


def hub_model_id(repo: str, revision: str = "") -> str:
    """``org/name@revision`` (or ``org/name``) from the panel's fields; raise InputError for a malformed repo id."""
    repo, revision = repo.strip(), revision.strip()
    if not HUB_REPO.match(repo) or any(c.isspace() for c in revision):
        raise InputError("Enter a Hub repository id such as organisation/model-name (and, ideally, a commit as "
                         "the revision).")
    return f"{repo}@{revision}" if revision else repo


@dataclasses.dataclass(frozen=True)
class ModelDownload:
    """Download ``model_id`` (``org/name[@revision]``) into the Hugging Face cache (a
    :class:`~SPECTDenoiseLogic.runner.Job` with one step and no nodes to import)."""

    model_id: str

    def write_inputs(self, folder: Path) -> list[Step]:
        """The one step: ``python -m SPECTDenoiseLib --events jsonl models download ID``."""
        return [Step(["-m", "SPECTDenoiseLib", "--events", "jsonl", "models", "download", self.model_id],
                     f"Downloading {self.model_id} in the background…")]

    def import_outputs(self, scene: slicer.vtkMRMLScene, folder: Path) -> tuple[dict[str, slicer.vtkMRMLNode], str]:
        """Nothing to import; the note names the model."""
        return {}, f" (downloaded {self.model_id})"


def describe(choices: list[ModelChoice], model_id: str) -> str:
    """The summary of ``model_id`` among ``choices`` (a Hub id not in the list: a note that it is not cached)."""
    for choice in choices:
        if choice.id == model_id:
            return choice.summary
    return f"'{model_id}' is not in the model list; download it with Add from Hub."

