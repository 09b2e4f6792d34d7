"""The models under test: load them by catalogue id, folder or ``NAME=FOLDER``, and denoise arrays with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SPECTDenoiseLib.hub import load_model, read_catalogue
from SPECTDenoiseLib.inference import denoise
from SPECTDenoiseLib.models.package import LoadedModel


def model_name(spec: str) -> str:
    """Display name of a model spec: the part before ``=``, else a folder's name, else the catalogue id."""
    if "=" in spec:
        return spec.split("=", 1)[0]
    return Path(spec).name if Path(spec).expanduser().is_dir() else spec


def load_models(specs: list[str] | None, default_only: bool = False) -> dict[str, LoadedModel]:
    """{name: loaded model} for catalogue ids, model folders or ``NAME=FOLDER`` specs; without ``specs`` every
    shipped model (or only the catalogue default with ``default_only``)."""
    if not specs:
        catalogue = read_catalogue()
        specs = [catalogue["default"]] if default_only else [e["id"] for e in catalogue["models"] if "path" in e]
    return {model_name(spec): load_model(spec.split("=", 1)[-1], device="cpu") for spec in specs}


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
              seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """(denoised, per-voxel variance or None) of ``spect`` [z, y, x]; ``ct`` (HU, same grid) is passed to models
    that take a CT channel; diffusion models return the variance of their samples."""
    diffusion = model.config.kind == "diffusion"
    result = denoise(image_on_grid(spect, spacing_mm), model,
                     ct=image_on_grid(ct, spacing_mm) if model.config.needs_ct else None, device="cpu", seed=seed,
                     want_variance=diffusion)
    variance = sitk.GetArrayFromImage(result.variance) if result.variance is not None else None
    return sitk.GetArrayFromImage(result.denoised), variance
