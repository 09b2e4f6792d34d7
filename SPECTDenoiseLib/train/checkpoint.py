"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder holds ``model.safetensors`` (network weights), ``optimizer.safetensors`` (optimizer tensors,
keys ``"<param index>/<name>"``), ``average.safetensors`` when the run keeps an EMA of the weights, and
``state.json`` (step, optimizer hyper-parameters, sampler RNG state, EMA update count, best validation score).
It is written to a temporary folder and renamed, so a killed run never leaves a half checkpoint.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .ema import WeightAverage

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
AVERAGE_FILE = "average.safetensors"
STATE_FILE = "state.json"


def save_checkpoint(folder: str | Path, network: nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], average: WeightAverage | None = None) -> Path:
    """Write a checkpoint of ``network``, ``optimizer``, the weight ``average`` (if any) and the JSON-ready
    ``state`` to ``folder`` atomically."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=folder.parent))
    try:
        _save_weights(network, temporary / MODEL_FILE)
        if average is not None:
            _save_weights(average.network, temporary / AVERAGE_FILE)
            state = dict(state, average_updates=average.updates)
        optimizer_state = optimizer.state_dict()
        tensors, scalars = {}, {}
        for index, values in optimizer_state["state"].items():
            for name, value in values.items():
                if torch.is_tensor(value):
                    tensors[f"{index}/{name}"] = value.detach().contiguous().cpu()
                else:
                    scalars[f"{index}/{name}"] = value
        save_file(tensors, temporary / OPTIMIZER_FILE)
        payload = dict(state, optimizer_groups=optimizer_state["param_groups"], optimizer_scalars=scalars)
        (temporary / STATE_FILE).write_text(json.dumps(payload, indent=1), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        temporary.rename(folder)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder


def load_checkpoint(folder: str | Path, network: nn.Module, optimizer: torch.optim.Optimizer,
                    average: WeightAverage | None = None) -> dict[str, Any]:
    """Restore ``network``, ``optimizer`` and the weight ``average`` (if any) from ``folder`` in place and return
    the saved ``state``."""
    folder = Path(folder)
    network.load_state_dict(load_file(folder / MODEL_FILE))
    payload = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    if average is not None:
        average.network.load_state_dict(load_file(folder / AVERAGE_FILE))
        average.updates = int(payload.pop("average_updates"))
    per_parameter: dict[int, dict[str, Any]] = {}
    for key, value in load_file(folder / OPTIMIZER_FILE).items():
        index, name = key.split("/", 1)
        per_parameter.setdefault(int(index), {})[name] = value
    for key, value in payload.pop("optimizer_scalars").items():
        index, name = key.split("/", 1)
        per_parameter.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_parameter, "param_groups": payload.pop("optimizer_groups")})
    return payload


def _save_weights(network: nn.Module, path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in network.state_dict().items()}, path)
