"""The only way a network is made from a ``config.json``: an architecture name mapped to a known constructor.

``config.arguments`` are that constructor's keyword arguments (widths, depths, ...). The channel facts follow
from the rest of the config and are supplied here, never read from ``arguments``: ``in_channels`` (or
``condition_channels``) is ``config.network_in_channels`` and ``centre_channel`` is ``config.context_slices``
(the low-count SPECT slice z in the kind-major channel order). Nothing outside this table can be built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from ..errors import ModelError
from .config import ModelConfig
from .diffusion import PredictAndRefine
from .u2net import U2Net
from .unet import ResidualUNet

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "unet2d": partial(ResidualUNet, 2),
    "unet3d": partial(ResidualUNet, 3),
    "u2net": U2Net,
    "refine": PredictAndRefine,
}

# (sampling, kind) each architecture is made for.
_ROLES = {
    "unet2d": ("slices", "deterministic"),
    "unet3d": ("patches", "deterministic"),
    "u2net": ("slices", "deterministic"),
    "refine": ("slices", "diffusion"),
}
_DERIVED = {"in_channels", "condition_channels", "centre_channel", "spatial_dims"}

ARGUMENT_RANGES = {
    "channels": (1, 1024),
    "base_channels": (1, 1024),
    "num_res_units": (0, 8),
    "base_num_res_units": (0, 8),
    "num_res_blocks": (1, 8),
    "norm_groups": (1, 256),
    "mid": (1, 512),
    "width": (1, 1024),
    "dropout": (0.0, 0.9),
    "residual_scale": (1e-3, 1e3),
}
"""Smallest and largest value of each numeric constructor argument (each item, for lists); ``config.json`` is
untrusted, so these bound the time and memory of building a network before anything is built."""
MAX_LEVELS = 8
"""Longest list argument (U-Net levels)."""
MAX_PARAMETERS = 50_000_000
"""Largest network accepted (200 MB of float32 weights); the shipped models have about one million."""


def build_network(config: ModelConfig) -> nn.Module:
    """Instantiate the network ``config`` describes (random weights, train mode).

    Raises ModelError when the architecture is unknown, does not fit the config's sampling or kind, or the
    arguments are not accepted by its constructor.
    """
    name = config.architecture
    if name not in ARCHITECTURES:
        raise ModelError(f"The model's architecture {name!r} is unknown; known: {sorted(ARCHITECTURES)}.")
    sampling, kind = _ROLES[name]
    if (config.sampling, config.kind) != (sampling, kind):
        raise ModelError(f"Architecture {name} needs sampling '{sampling}' and kind '{kind}', "
                         f"but the config says '{config.sampling}' and '{config.kind}'.")
    factory = ARCHITECTURES[name]
    accepted = set(inspect.signature(factory).parameters) - _DERIVED
    unknown = sorted(set(config.arguments) - accepted)
    if unknown:
        raise ModelError(f"Architecture {name} does not take the arguments {unknown}; "
                         f"it takes {sorted(accepted)}.")
    for key, value in config.arguments.items():
        _check_argument(name, key, value)
    channels_key = "condition_channels" if kind == "diffusion" else "in_channels"
    arguments = {channels_key: config.network_in_channels, "centre_channel": config.context_slices}
    try:
        return factory(**arguments, **config.arguments)
    except Exception as error:  # noqa: BLE001 - any constructor complaint about user-supplied arguments
        raise ModelError(f"Architecture {name} cannot be built from the config's arguments: {error}.") from None


def expected_weights(config: ModelConfig) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """Name → (dtype, shape) of every tensor the network of ``config`` holds, found without allocating it
    (built on torch's ``meta`` device).

    Raises ModelError as :func:`build_network` does, or when the network has more than :data:`MAX_PARAMETERS`.
    """
    with torch.device("meta"):
        network = build_network(config)
    parameters = sum(parameter.numel() for parameter in network.parameters())
    if parameters > MAX_PARAMETERS:
        raise ModelError(f"The model's config.json describes a network of {parameters:,} parameters, more than the "
                         f"{MAX_PARAMETERS:,} SPECTDenoise accepts; its 'arguments' are too large.")
    return {key: (tensor.dtype, tuple(tensor.shape)) for key, tensor in network.state_dict().items()}


def _check_argument(architecture: str, key: str, value: object) -> None:
    items = value if isinstance(value, (list, tuple)) else [value]
    problem = f"'{key}' has {len(items)} items, more than {MAX_LEVELS}" if len(items) > MAX_LEVELS else None
    if problem is None and key in ARGUMENT_RANGES:
        low, high = ARGUMENT_RANGES[key]
        if not all(isinstance(item, (int, float)) and not isinstance(item, bool) and low <= item <= high
                   for item in items):
            problem = f"'{key}' must be {'numbers' if items is value else 'a number'} from {low} to {high}"
    if problem is not None:
        raise ModelError(f"Architecture {architecture} cannot be built from the config's arguments: {problem}.")
