"""Model packages: a folder (or Hub repo) with ``config.json``, ``model.safetensors`` and a ``README.md`` card.

Weights are read only with safetensors (never pickle), so a package cannot run code; the network is built by
the registry from the config's architecture name. huggingface_hub's ``PyTorchModelHubMixin`` writes the same
file layout, but its ``config.json`` holds raw constructor arguments; ours is the validated ``ModelConfig``.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import ModelError, OutputError
from .config import ModelConfig
from .registry import build_network

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"


@dataclasses.dataclass
class LoadedModel:
    """A network ready for inference.

    Attributes
    ----------
    network : the network in eval mode on the requested device.
    config : the package's validated config.
    folder : the package folder (for Hub models, the snapshot folder in the HF cache).
    card : the model card (``README.md``) text, empty if the package has none.
    name : how the model was asked for (catalogue id, repo id or folder name).
    """

    network: nn.Module
    config: ModelConfig
    folder: Path
    card: str
    name: str


def save_package(network: nn.Module, config: ModelConfig, folder: str | Path, card_markdown: str) -> Path:
    """Write ``network``'s weights, ``config`` and the model card to ``folder`` atomically; return the folder.

    The files are written into a temporary sibling folder that is then renamed, so ``folder`` never holds a
    half-written package; an existing package at ``folder`` is replaced.
    """
    folder = Path(folder)
    config.validate()
    expected = set(build_network(config).state_dict())
    state = {key: value.detach().to("cpu").contiguous() for key, value in network.state_dict().items()}
    if set(state) != expected:
        raise ModelError(f"The network does not match architecture {config.architecture}; "
                         f"differing keys: {sorted(set(state) ^ expected)[:5]}.")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError as error:
        raise OutputError(f"Cannot create the model folder '{folder}': {error.strerror}.") from None
    try:
        config.save(staging / CONFIG_FILE)
        metadata = {"format": "pt", "architecture": config.architecture}
        save_file(state, str(staging / WEIGHTS_FILE), metadata=metadata)
        (staging / CARD_FILE).write_text(card_markdown, encoding="utf-8")
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            folder.rename(old / folder.name)
        staging.rename(folder)
        if old is not None:
            shutil.rmtree(old)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"Cannot write the model package to '{folder}': {error.strerror}.") from None
    return folder


def load_package(folder: str | Path, device: str | torch.device = "cpu", name: str | None = None) -> LoadedModel:
    """Read a model package and return its network in eval mode on ``device``.

    Raises ModelError with one sentence when the folder or a file is missing, the config is invalid, or the
    weights are unreadable, not finite or do not match the architecture (missing/unexpected keys, shapes).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"The model folder '{folder}' does not exist.")
    config = ModelConfig.load(folder / CONFIG_FILE)
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ModelError(f"The model package '{folder}' has no {WEIGHTS_FILE}.")
    try:
        weights = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"The weights file '{weights_path}' is corrupt or not safetensors ({error}).") from None
    network = build_network(config)
    _check_weights(network, weights, config.architecture)
    network.load_state_dict(weights, strict=True)
    card_path = folder / CARD_FILE
    card = card_path.read_text(encoding="utf-8", errors="replace") if card_path.is_file() else ""
    return LoadedModel(network=network.to(device).eval(), config=config, folder=folder, card=card,
                       name=name or folder.name)


def _check_weights(network: nn.Module, weights: dict[str, torch.Tensor], architecture: str) -> None:
    expected = network.state_dict()
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise ModelError(f"The weights do not match architecture {architecture}: missing keys {_few(missing)}.")
    unexpected = sorted(set(weights) - set(expected))
    if unexpected:
        raise ModelError(f"The weights do not match architecture {architecture}: "
                         f"unexpected keys {_few(unexpected)}.")
    for key, tensor in weights.items():
        if tensor.shape != expected[key].shape:
            raise ModelError(f"The weights do not match architecture {architecture}: '{key}' has shape "
                             f"{list(tensor.shape)}, the config needs {list(expected[key].shape)}.")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelError(f"The weights of architecture {architecture} hold NaN or infinite values in '{key}'.")


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
