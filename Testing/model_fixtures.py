"""Tiny models shared by the tests: configs of every architecture, random weights, saved packages, and the small
phantom they denoise. Plain functions and constants, imported by the test modules that need them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from SPECTDenoiseLib.hub import RESOURCES, read_catalogue
from SPECTDenoiseLib.models.config import ModelConfig
from SPECTDenoiseLib.models.package import LoadedModel, load_package, save_package
from SPECTDenoiseLib.models.registry import build_network

TINY = {
    "unet2d": {"architecture": "unet2d", "arguments": {"channels": [4, 8, 8, 16]}, "context_slices": 1},
    "unet3d": {"architecture": "unet3d", "arguments": {"channels": [4, 8, 8, 16]}, "sampling": "patches",
               "patch_size": [16, 16, 16]},
    "u2net": {"architecture": "u2net", "arguments": {"mid": 4, "width": 8}, "input_channels": ["spect", "ct"],
              "size_multiple": 32},
    "refine": {"architecture": "refine", "context_slices": 1, "kind": "diffusion",
               "arguments": {"base_channels": [4, 8], "channels": [8, 8], "norm_groups": 4},
               "diffusion": {"train_timesteps": 100, "schedule": "linear", "default_steps": 4,
                             "default_samples": 2, "variance_scale": 1.0}},
}
"""Config dicts of one tiny network per architecture (the 2D U-Net with one neighbouring slice each side)."""

FIXTURE_MODELS = {
    "unet2d": {**TINY["unet2d"], "context_slices": 0},
    "unet25d": TINY["unet2d"],
    "unet3d": TINY["unet3d"],
    "u2net": TINY["u2net"],
    "diffusion": TINY["refine"],
}
"""The packages :func:`make_package` saves, by name: 2D, 2.5D and 3D U-Nets, U²-Net with CT, predict-and-refine
diffusion."""


def diffusion_schedule(steps: int, samples: int) -> dict:
    """The ``diffusion`` settings of a diffusion model with 1000 training steps sampled in ``steps`` steps,
    ``samples`` times."""
    return {"train_timesteps": 1000, "schedule": "linear", "default_steps": steps, "default_samples": samples,
            "variance_scale": 1.0}


SLOW_DIFFUSION = diffusion_schedule(1000, 50)
"""Diffusion settings slow enough (tens of seconds) to kill or cancel a run while it samples."""


def perturb_weights(network: torch.nn.Module, seed: int = 0) -> None:
    """Add seeded Gaussian noise (σ 0.1) to every parameter, so an untrained identity network changes its input."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))


def tiny_network(settings: dict, perturb: bool = True) -> tuple[torch.nn.Module, ModelConfig]:
    """Build the network of config dict ``settings``; its weights are perturbed unless ``perturb`` is False."""
    config = ModelConfig.from_dict(settings)
    network = build_network(config)
    if perturb:
        perturb_weights(network)
    return network, config


def make_package(folder: Path, name: str, perturb: bool = True, readme: str | None = None, **overrides) -> Path:
    """Save the tiny model ``name`` of :data:`FIXTURE_MODELS` (config fields replaced by ``overrides``) into
    ``folder`` and return it; the model card is ``readme`` or a one-line title."""
    network, config = tiny_network({**FIXTURE_MODELS[name], **overrides}, perturb)
    return save_package(network, config, folder, readme or f"# Tiny {name} test model\n")


def load_tiny(folder: Path, name: str, perturb: bool = True, **overrides) -> LoadedModel:
    """Save the tiny model ``name`` (see :func:`make_package`) in ``folder / name`` and load it."""
    return load_package(make_package(folder / name, name, perturb, **overrides), name=name)


def phantom(shape_zyx=(12, 20, 22), seed=0, oblique=True) -> sitk.Image:
    """A blob of activity in a noisy body, anisotropic spacing, oblique direction."""
    rng = np.random.default_rng(seed)
    _, y, x = np.indices(shape_zyx, dtype=np.float32)
    centre = [(n - 1) / 2 for n in shape_zyx]
    body = ((y - centre[1]) / (0.4 * shape_zyx[1])) ** 2 + ((x - centre[2]) / (0.4 * shape_zyx[2])) ** 2 < 1
    values = np.where(body, 20.0, 0.0) + rng.poisson(5.0, shape_zyx) * body
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing((3.3, 3.3, 4.1))
    image.SetOrigin((-30.0, 12.5, 7.0))
    if oblique:
        image.SetDirection(sitk.VersorTransform((0.3, 0.2, 0.9), 0.35).GetMatrix())
    return image


def catalogue_with_diffusion(folder: Path) -> Path:
    """Write a copy of the shipped catalogue (absolute paths) that also lists ``tiny-diffusion``, the tiny
    diffusion package saved in ``folder``; return its path (for ``SPECTDENOISE_CATALOGUE``)."""
    shipped = read_catalogue(RESOURCES / "Models.json")
    models = [dict(entry, path=str(shipped["folder"] / entry["path"])) if "path" in entry else entry
              for entry in shipped["models"]]
    models.append({"id": "tiny-diffusion", "path": str(make_package(folder / "tiny-diffusion", "diffusion")),
                   "kind": "diffusion", "inputs": ["spect"], "description": "Tiny diffusion test model."})
    path = folder / "Models.json"
    path.write_text(json.dumps({"default": shipped["default"], "models": models}), encoding="utf-8")
    return path
