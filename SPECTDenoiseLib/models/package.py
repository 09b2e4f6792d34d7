"""Model packages: a folder (or Hub repo) with ``config.json``, ``model.safetensors`` and a ``README.md`` card.

Weights are read only with safetensors (never pickle), so a package cannot run code; the network is built by
the registry from the config's architecture name. huggingface_hub's ``PyTorchModelHubMixin`` writes the same
file layout, but its ``config.json`` holds raw constructor arguments; ours is the validated ``ModelConfig``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import ModelError, OutputError
from ..hub import PACKAGE_FILES
from .config import ModelConfig
from .registry import build_network, expected_weights

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
MAX_HEADER_BYTES = 1 << 24
"""Largest safetensors header read (16 MB; the shipped models' headers are a few kB)."""
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                      torch.uint8: "U8", torch.bool: "BOOL"}
"""How safetensors names each torch dtype in its header."""


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
    half-written package; an existing package at ``folder`` (or an empty folder) is replaced, any other folder
    or file is refused with OutputError, so a mistyped ``-o`` never deletes data.
    """
    folder = Path(folder)
    if folder.exists() and not (folder.is_dir() and {entry.name for entry in folder.iterdir()} <= {*PACKAGE_FILES}):
        raise OutputError(f"'{folder}' exists and is not a model package; give a new folder name for the model.")
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

    Untrusted packages cost little to refuse: the config is validated against bounds and the weights file's
    header (tensor names, shapes and dtypes) is compared with the network the config describes, built without
    memory on torch's ``meta`` device, *before* any weights are read or the network is built.

    Raises ModelError with one sentence when the folder or a file is missing, the config is invalid or too
    large, or the weights are unreadable, not finite or do not match the architecture (keys, shapes, dtypes).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"The model folder '{folder}' does not exist.")
    config = ModelConfig.load(folder / CONFIG_FILE)
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ModelError(f"The model package '{folder}' has no {WEIGHTS_FILE}.")
    _check_weights(read_weights_header(weights_path), expected_weights(config), config.architecture)
    try:
        weights = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"The weights file '{weights_path}' is corrupt or not safetensors ({error}).") from None
    for key, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelError(f"The weights of architecture {config.architecture} hold NaN or infinite values in "
                             f"'{key}'.")
    network = build_network(config)
    network.load_state_dict(weights, strict=True)
    card_path = folder / CARD_FILE
    card = card_path.read_text(encoding="utf-8", errors="replace") if card_path.is_file() else ""
    return LoadedModel(network=network.to(device).eval(), config=config, folder=folder, card=card,
                       name=name or folder.name)


def read_weights_header(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Return name → (safetensors dtype such as ``"F32"``, shape) from the header of a ``.safetensors`` file,
    reading at most :data:`MAX_HEADER_BYTES` and no tensor data. Raises ModelError if the header is malformed."""
    path = Path(path)

    def corrupt(problem: str) -> ModelError:
        return ModelError(f"The weights file '{path}' is corrupt or not safetensors ({problem}).")

    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            length = int.from_bytes(prefix, "little")
            if len(prefix) < 8 or not 2 <= length <= min(MAX_HEADER_BYTES, path.stat().st_size - 8):
                raise corrupt("no valid header length")
            header = json.loads(handle.read(length))
    except OSError as error:
        raise ModelError(f"The weights file '{path}' cannot be read ({error.strerror or error}).") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise corrupt("the header is not JSON") from None
    if not isinstance(header, dict):
        raise corrupt("the header is not a JSON object")
    tensors = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str) and isinstance(entry.get("shape"), list)
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in entry["shape"])):
            raise corrupt(f"tensor '{key}' has no valid dtype and shape")
        tensors[key] = (entry["dtype"], tuple(entry["shape"]))
    return tensors


def _check_weights(found: dict[str, tuple[str, tuple[int, ...]]],
                   expected: dict[str, tuple[torch.dtype, tuple[int, ...]]], architecture: str) -> None:
    missing = sorted(set(expected) - set(found))
    if missing:
        raise ModelError(f"The weights do not match architecture {architecture}: missing keys {_few(missing)}.")
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise ModelError(f"The weights do not match architecture {architecture}: "
                         f"unexpected keys {_few(unexpected)}.")
    for key, (dtype, shape) in found.items():
        wanted_dtype, wanted_shape = expected[key]
        if shape != wanted_shape:
            raise ModelError(f"The weights do not match architecture {architecture}: '{key}' has shape "
                             f"{list(shape)}, the config needs {list(wanted_shape)}.")
        if dtype != SAFETENSORS_DTYPES.get(wanted_dtype):
            raise ModelError(f"The weights do not match architecture {architecture}: '{key}' is {dtype}, the "
                             f"network needs {SAFETENSORS_DTYPES.get(wanted_dtype, wanted_dtype)}.")


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
