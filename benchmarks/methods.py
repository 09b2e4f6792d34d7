"""The models under test: load them by catalogue id, folder or ``NAME=FOLDER`` (``:bare`` appended: the bare
network, without the uptake guard), and denoise arrays with them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SPECTDenoiseLib.hub import load_model, read_catalogue
from SPECTDenoiseLib.inference import denoise
from SPECTDenoiseLib.models.package import LoadedModel

BARE = ":bare"
"""Suffix of a model spec that runs the network without the uptake guard (``denoise(..., uptake_guard=False)``)."""


@dataclass(frozen=True)
class ModelUnderTest:
    """A loaded model and whether its output passes the uptake guard (as every front end's does by default)."""

    model: LoadedModel
    uptake_guard: bool = True

    def run(self, spect: np.ndarray, ct: np.ndarray, spacing_mm: tuple[float, float, float],
            seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        """:func:`run_model` with this model and guard setting."""
        return run_model(self.model, spect, ct, spacing_mm, seed, self.uptake_guard)

    def image(self, spect: np.ndarray, ct: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
        """The denoised image alone: for a diffusion model without sampling, which changes only its variance map
        (the image is its base's estimate after the guard), so probes and standard-count runs cost what its
        base's do."""
        return run_model(self.model, spect, ct, spacing_mm, uptake_guard=self.uptake_guard, variance=False)[0]


def model_name(spec: str) -> str:
    """Display name of a model spec: the part before ``=``, else a folder's name, else the catalogue id;
    `` (bare)`` appended for a ``…:bare`` spec."""
    if spec.endswith(BARE):
        return f"{model_name(spec[:-len(BARE)])} (bare)"
    if "=" in spec:
        return spec.split("=", 1)[0]
    return Path(spec).name if Path(spec).expanduser().is_dir() else spec


def default_specs(default_only: bool = False) -> list[str]:
    """Every shipped model (or only the catalogue default with ``default_only``), then the default model bare,
    so that every result set shows what the uptake guard changes."""
    catalogue = read_catalogue()
    default = catalogue["default"]
    shipped = [default] if default_only else [e["id"] for e in catalogue["models"] if "path" in e]
    return shipped + [default + BARE]


def load_models(specs: list[str] | None, default_only: bool = False) -> dict[str, ModelUnderTest]:
    """{name: model under test} for catalogue ids, model folders or ``NAME=FOLDER`` specs, each optionally
    followed by ``:bare``; without ``specs`` those of :func:`default_specs`."""
    models = {}
    for spec in specs or default_specs(default_only):
        bare = spec.endswith(BARE)
        location = spec[:-len(BARE)] if bare else spec
        models[model_name(spec)] = ModelUnderTest(load_model(location.split("=", 1)[-1], device="cpu"), not bare)
    return models


def variance_scale(model: LoadedModel) -> float:
    """The calibration factor a diffusion model's config applies to its sample variance
    (``diffusion.variance_scale``, fitted by ``calibrate_variance.py``)."""
    return float(model.config.diffusion["variance_scale"])


def image_on_grid(array: np.ndarray, spacing_mm: tuple[float, float, float]) -> sitk.Image:
    """A float32 image of ``array`` [z, y, x] with ``spacing_mm`` [z, y, x], origin 0, identity direction."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_mm)))
    return image


def run_model(model: LoadedModel, spect: np.ndarray, ct: np.ndarray, spacing_mm: tuple[float, float, float],
              seed: int = 0, uptake_guard: bool = True,
              variance: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(denoised, per-voxel variance or None) of ``spect`` [z, y, x]; ``ct`` (HU, same grid) is passed to models
    that take a CT channel; diffusion models return the variance of their samples unless ``variance`` is False;
    ``uptake_guard`` False runs the bare network."""
    diffusion = model.config.kind == "diffusion"
    result = denoise(image_on_grid(spect, spacing_mm), model,
                     ct=image_on_grid(ct, spacing_mm) if model.config.needs_ct else None, device="cpu", seed=seed,
                     want_variance=diffusion and variance, uptake_guard=uptake_guard)
    variance = sitk.GetArrayFromImage(result.variance) if result.variance is not None else None
    return sitk.GetArrayFromImage(result.denoised), variance
