"""The training configuration file (``spectdenoise train --config FILE``): a JSON object of these fields."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..models.config import ModelConfig
from ..records import unknown_keys


@dataclasses.dataclass
class TrainSettings:
    """What to train, on which data, for how long, and where the result goes.

    Attributes
    ----------
    model : the model's ``config.json`` contents (architecture, arguments, channels, sampling ...).
    data : dataset folders (``manifest.json``) or folders of user pairs; paths relative to the settings file.
    output : model package folder written at the end (best validation weights).
    run_dir : checkpoints and the training log (resumed when present).
    patch : training window, [y, x] for slice models or [z, y, x] for patch models, in voxels.
    batch_size : samples per optimisation step (per process under torchrun).
    steps : optimisation steps.
    learning_rate : peak Adam learning rate (cosine decay to 5 % after a short warm-up).
    ssim_weight : α of L1 + α(1 − SSIM) (deterministic models).
    lesion_weight : β of the lesion-attention weight 1 + β·mask (0 = off).
    mean_weight : γ of the lesion mean-consistency loss term (0 = off).
    lesion_patch_fraction : share of training windows centred on a lesion voxel.
    scale_range : [low, high] of the log-uniform intensity-scale augmentation (input and target alike).
    validation_cases : cases held out from training for validation (the last ones of the sorted list).
    validate_every : steps between validations and checkpoints.
    seed : seeds sampling, noise and initial weights.
    name, description : for the model card.
    initial_weights : a model package whose weights start the run (fine-tuning).
    base_model : diffusion models (architecture ``refine``): a ``unet2d`` model package (name or folder, e.g. the
        default ``spect-unet25d``) whose weights become the frozen base estimate.
    ema_decay : decay of the exponential moving average of the weights that is validated and exported
        (e.g. 0.999; 0 = no average, the trained weights themselves).
    """

    model: dict[str, Any]
    data: list[str]
    output: str
    run_dir: str
    patch: list[int]
    batch_size: int = 16
    steps: int = 2000
    learning_rate: float = 1e-3
    ssim_weight: float = 0.5
    lesion_weight: float = 0.0
    mean_weight: float = 0.0
    lesion_patch_fraction: float = 0.0
    scale_range: list[float] = dataclasses.field(default_factory=lambda: [0.9, 1.1])
    validation_cases: int = 4
    validate_every: int = 100
    seed: int = 1
    name: str = "model"
    description: str = ""
    initial_weights: str | None = None
    base_model: str | None = None
    ema_decay: float = 0.0

    @property
    def model_config(self) -> ModelConfig:
        """The validated model config."""
        return ModelConfig.from_dict(self.model)

    @classmethod
    def load(cls, path: str | Path) -> TrainSettings:
        """Read a settings file; relative paths in it are taken relative to the file's folder."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"Training settings file '{path}' does not exist.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"Training settings file '{path}' is not a readable JSON file ({error}).") from None
        if not isinstance(data, dict):
            raise InputError(f"Training settings file '{path}' must hold a JSON object.")
        unknown = unknown_keys(data, cls)
        if unknown:
            raise InputError(f"Training settings file '{path}' has unknown keys {unknown}.")
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in data
                         and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if missing:
            raise InputError(f"Training settings file '{path}' is incomplete: it needs {missing}.")
        for key, value in data.items():
            if not _FIELD_CHECKS[key](value):
                raise InputError(f"Training settings file '{path}': '{key}' must be {_FIELD_RULES[key]}.")
        settings = cls(**data)
        base = path.parent
        settings.data = [str(base / d) for d in settings.data]
        settings.output = str(base / settings.output)
        settings.run_dir = str(base / settings.run_dir)
        if settings.initial_weights and not Path(settings.initial_weights).is_absolute() and (base / settings.initial_weights).exists():
            settings.initial_weights = str(base / settings.initial_weights)
        if (settings.base_model and not Path(settings.base_model).is_absolute()
                and (base / settings.base_model).exists()):
            settings.base_model = str(base / settings.base_model)
        config = ModelConfig.from_dict(settings.model)  # raises ModelError when the model section is invalid
        if settings.base_model and (config.kind != "diffusion" or settings.initial_weights):
            raise InputError(f"Training settings file '{path}': 'base_model' applies to diffusion models started "
                             "from scratch (without 'initial_weights', which already hold a base).")
        return settings


def _whole(low: int) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(low: float, strict: bool) -> Callable[[Any], bool]:
    return lambda value: (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                          and (value > low if strict else value >= low))


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


_FIELD_RULES = {
    "model": "an object (a model config.json)", "data": "a non-empty list of folder names",
    "output": "a folder name", "run_dir": "a folder name", "patch": "a list of 2 or 3 positive whole numbers",
    "batch_size": "a whole number of at least 1", "steps": "a whole number of at least 1",
    "learning_rate": "a number above 0", "ssim_weight": "a number of at least 0",
    "lesion_weight": "a number of at least 0", "mean_weight": "a number of at least 0",
    "lesion_patch_fraction": "a number from 0 to 1", "scale_range": "two numbers 0 < low ≤ high",
    "validation_cases": "a whole number of at least 0",
    "validate_every": "a whole number of at least 1", "seed": "a whole number of at least 0",
    "name": "a name", "description": "a string", "initial_weights": "a model name or folder, or null",
    "base_model": "a model name or folder, or null", "ema_decay": "a number from 0 to below 1",
}
_FIELD_CHECKS: dict[str, Callable[[Any], bool]] = {
    "model": lambda value: isinstance(value, dict),
    "data": lambda value: isinstance(value, list) and bool(value) and all(map(_text, value)),
    "output": _text, "run_dir": _text,
    "patch": lambda value: isinstance(value, list) and len(value) in (2, 3) and all(map(_whole(1), value)),
    "batch_size": _whole(1), "steps": _whole(1), "learning_rate": _number(0.0, strict=True),
    "ssim_weight": _number(0.0, strict=False), "lesion_weight": _number(0.0, strict=False),
    "mean_weight": _number(0.0, strict=False),
    "lesion_patch_fraction": lambda value: _number(0.0, strict=False)(value) and value <= 1,
    "scale_range": lambda value: (isinstance(value, list) and len(value) == 2 and all(map(_number(0.0, True), value))
                                  and value[0] <= value[1]),
    "validation_cases": _whole(0), "validate_every": _whole(1), "seed": _whole(0),
    "name": _text, "description": lambda value: isinstance(value, str),
    "initial_weights": lambda value: value is None or _text(value),
    "base_model": lambda value: value is None or _text(value),
    "ema_decay": lambda value: _number(0.0, strict=False)(value) and value < 1,
}
