"""Train a diffusion model's error head (``models.error_head``) and write the model with it as a new package.

The model runs as a user runs it (default samples and steps, uptake guard on) on the lowest-count scan of every
case of ``spectdenoise dataset`` folders; each run gives, per voxel, the head's features and the squared error of
the image returned against the case's noise-free target. The head learns the log of that squared error with a
Gaussian negative log-likelihood (σ² = exp(output) + a floor, so voxels of exactly zero error do not pull it to
−∞), on :data:`VOXELS_PER_CASE` voxels of each case — three quarters inside the body outline of the image, the
rest outside — with the last :data:`HELD_OUT_SHARE` of the cases held out: the weights of the step with the
lowest held-out loss are kept. The refiner and the base are not changed. ``variance_scale`` is reset to 1: fit
it afterwards on validation cases (``benchmarks/calibrate_variance.py MODEL --write``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..dataset import read_manifest
from ..errors import InputError, ModelError
from ..inference import denoise
from ..io import image_to_array, read_volume, spacing_zyx
from ..metrics import body_mask
from ..models.config import ModelConfig
from ..models.error_head import ErrorHead, error_features
from ..models.package import LoadedModel, save_package
from ..normalisation import robust_tissue_level

VOXELS_PER_CASE = 40_000
BODY_SHARE = 0.75
HELD_OUT_SHARE = 0.2
VARIANCE_FLOOR = 1e-6
"""Added to the head's variance (÷ level²) in the loss: about a 0.1 % error of the tissue level."""


@dataclass(frozen=True)
class CaseRun:
    """A dataset case's lowest-count scan run through the model: [z, y, x] arrays in the scan's units."""

    name: str
    low: np.ndarray
    image: np.ndarray
    spread: np.ndarray
    target: np.ndarray
    spacing_mm: tuple[float, float, float]
    seconds: float


def run_case(model: LoadedModel, case_folder: Path) -> CaseRun:
    """Denoise the lowest-count scan of ``case_folder`` (``low_<fraction>.nii.gz``, ``target.nii.gz``) with the
    head-less diffusion ``model`` as a user would (default sampling, uptake guard, seed 0): the input (negatives
    clipped), the image returned, the samples' spread around it before ``variance_scale`` and the noise-free
    target."""
    lows = sorted(case_folder.glob("low_*.nii.gz"), key=lambda path: float(path.name[4:-7]))
    if not lows or not (case_folder / "target.nii.gz").is_file():
        raise InputError(f"The case folder '{case_folder}' has no low_<fraction>.nii.gz and target.nii.gz.")
    spect = read_volume(lows[0])
    started = time.perf_counter()
    result = denoise(spect, model, want_variance=True, seed=0)
    return CaseRun(name=f"{case_folder.name}/{lows[0].name}", low=np.maximum(image_to_array(spect), 0.0),
                   image=image_to_array(result.denoised),
                   spread=image_to_array(result.variance) / np.float32(model.config.diffusion["variance_scale"]),
                   target=image_to_array(read_volume(case_folder / "target.nii.gz")),
                   spacing_mm=spacing_zyx(spect),
                   seconds=round(time.perf_counter() - started, 1))


def sample_voxels(run: CaseRun, rng: np.random.Generator,
                  voxels: int = VOXELS_PER_CASE) -> tuple[np.ndarray, np.ndarray]:
    """(features [n, F], squared error ÷ level² [n]) of ``voxels`` voxels of ``run``: :data:`BODY_SHARE` of them
    inside the image's body outline, the rest outside."""
    level = robust_tissue_level(run.image)
    squared_error = (((run.image.astype(np.float64) - run.target) / level) ** 2).ravel()
    inside = body_mask(run.image).ravel()
    body_count = min(int(round(BODY_SHARE * voxels)), int(inside.sum()))
    picks = np.concatenate([rng.choice(np.flatnonzero(inside), body_count, replace=False),
                            rng.choice(np.flatnonzero(~inside), min(voxels - body_count, int((~inside).sum())),
                                       replace=False)])
    features = error_features(run.low, run.image, run.spread, run.spacing_mm)
    return features[picks], squared_error[picks].astype(np.float32)


def gaussian_nll(log_variance: torch.Tensor, squared_error: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood (without its constant) of errors with the given squared values."""
    variance = torch.exp(log_variance) + VARIANCE_FLOOR
    return (torch.log(variance) + squared_error / variance).mean()


def fit_head(head: ErrorHead, training: tuple[np.ndarray, np.ndarray], held_out: tuple[np.ndarray, np.ndarray],
             steps: int, seed: int, batch_size: int = 4096, learning_rate: float = 3e-3) -> dict:
    """Fit ``head`` (in place) on (features, squared errors); keep the weights with the lowest held-out loss.
    Return the log: held-out loss every 100 steps and the best."""
    generator = torch.Generator().manual_seed(seed)
    features, targets = (torch.from_numpy(array) for array in training)
    check = tuple(torch.from_numpy(array) for array in held_out)
    head.feature_mean.copy_(features.mean(0))
    head.feature_sd.copy_(features.std(0).clamp_min(1e-6))
    optimiser = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, learning_rate, total_steps=steps)
    best = {"loss": math.inf, "step": 0, "state": None}
    log = []
    for step in range(1, steps + 1):
        head.train()
        pick = torch.randint(0, features.shape[0], (batch_size,), generator=generator)
        loss = gaussian_nll(head(features[pick]), targets[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 100 == 0 or step == steps:
            head.eval()
            with torch.no_grad():
                held = float(gaussian_nll(head(check[0]), check[1]))
            log.append({"step": step, "held_out_nll": round(held, 5)})
            if held < best["loss"]:
                best = {"loss": held, "step": step,
                        "state": {key: value.clone() for key, value in head.state_dict().items()}}
    head.load_state_dict(best["state"])
    head.eval()
    return {"log": log, "best_step": best["step"], "best_held_out_nll": round(best["loss"], 5)}


def train_error_head(model: LoadedModel, data: list[str], output: str, hidden: tuple[int, ...] = (32, 32),
                     steps: int = 3000, seed: int = 0,
                     report: Callable[[str], None] = print) -> tuple[Path, dict]:
    """Run ``model`` (a diffusion model without an error head) on every case of the ``data`` folders, fit an
    error head on them and write the model with it to ``output`` (variance scale reset to 1; the card gains an
    ``Error head`` training line). Return the package folder and the fit's record (cases, seconds, loss log)."""
    config = model.config
    if config.kind != "diffusion" or getattr(model.network, "error_head", "none") is not None:
        raise ModelError(f"Model '{model.name}' is not a diffusion model without an error head.")
    folders = [Path(folder) / entry["id"] for folder in data for entry in read_manifest(folder)["cases"]]
    if len(folders) < 2:
        raise InputError("Training an error head needs at least 2 dataset cases (one is held out).")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    gathered, runs = [], []
    for index, folder in enumerate(folders, start=1):
        run = run_case(model, folder)
        gathered.append(sample_voxels(run, rng))
        runs.append({"case": run.name, "shape": list(run.image.shape), "seconds": run.seconds})
        report(f"{index}/{len(folders)} {run.name}: {run.seconds:.0f} s")
    held = max(1, int(round(HELD_OUT_SHARE * len(folders))))
    split = len(folders) - held

    def stacked(part: list) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([item[0] for item in part]), np.concatenate([item[1] for item in part])

    torch.manual_seed(seed)
    head = ErrorHead(hidden)
    fit = fit_head(head, stacked(gathered[:split]), stacked(gathered[split:]), steps, seed)
    network = model.network.cpu()
    network.error_head = head
    arguments = {**config.arguments, "error_head": list(hidden)}
    new_config = ModelConfig.from_dict({**config.to_dict(), "arguments": arguments,
                                        "diffusion": {**config.diffusion, "variance_scale": 1.0}})
    minutes = (time.perf_counter() - started) / 60
    parameters = sum(p.numel() for p in head.parameters())
    names = ", ".join(sorted({Path(folder).name for folder in data}))
    line = (f"- Error head: per-voxel network {len(hidden)} × {hidden[0]} hidden (SiLU), {parameters:,} "
            f"parameters, Gaussian NLL on {VOXELS_PER_CASE:,} voxels of each of {split} cases (the lowest-count "
            f"scan of each; {held} more held out, best step {fit['best_step']} of {steps}) of {names}; "
            f"{minutes:.0f} min on {torch.get_num_threads()} CPU thread(s) in all (sampling the cases dominates)")
    folder = save_package(network, new_config, output, _card_with(model.card, line))
    record = {"model": model.name, "output": str(folder), "data": list(data), "hidden": list(hidden),
              "steps": steps, "seed": seed, "voxels_per_case": VOXELS_PER_CASE, "threads": torch.get_num_threads(),
              "minutes": round(minutes, 1), "cases": runs,
              "held_out": [item["case"] for item in runs[split:]], **fit}
    return folder, record


def _card_with(card: str, line: str) -> str:
    """The card with its ``- Error head:`` line replaced by (or, after the ``- Data:`` line, given) ``line``."""
    lines = [existing for existing in card.splitlines() if not existing.startswith("- Error head:")]
    at = next((index + 1 for index, existing in enumerate(lines) if existing.startswith("- Data:")), len(lines))
    return "\n".join([*lines[:at], line, *lines[at:]]) + "\n"
