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

from torch import nn

from ..errors import ModelError
from .config import ModelConfig
from .diffusion import ConditionalNoisePredictor
from .u2net import U2Net
from .unet import ResidualUNet

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "unet2d": partial(ResidualUNet, 2),
    "unet3d": partial(ResidualUNet, 3),
    "u2net": U2Net,
    "ddpm": ConditionalNoisePredictor,
}

# (sampling, kind) each architecture is made for.
_ROLES = {
    "unet2d": ("slices", "deterministic"),
    "unet3d": ("patches", "deterministic"),
    "u2net": ("slices", "deterministic"),
    "ddpm": ("slices", "diffusion"),
}
_DERIVED = {"in_channels", "condition_channels", "centre_channel", "spatial_dims"}


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
    channels_key = "condition_channels" if kind == "diffusion" else "in_channels"
    arguments = {channels_key: config.network_in_channels, "centre_channel": config.context_slices}
    try:
        return factory(**arguments, **config.arguments)
    except Exception as error:  # noqa: BLE001 - any constructor complaint about user-supplied arguments
        raise ModelError(f"Architecture {name} cannot be built from the config's arguments: {error}.") from None
