"""The model card (``README.md`` of a model package) written at the end of training."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from torch import nn

from ..models.config import ModelConfig
from .settings import TrainSettings

REPOSITORY = Path(__file__).resolve().parents[2]


def model_card(settings: TrainSettings, config: ModelConfig, network: nn.Module, best_validation: float,
               log: list[dict]) -> str:
    """Return the Markdown model card: what the model is for, how it was trained and how to retrain it."""
    parameters = sum(p.numel() for p in network.parameters())
    seconds = _training_seconds(log)
    lines = [
        f"# {settings.name}",
        "",
        settings.description or config.description,
        "",
        "## Model",
        f"- Architecture: `{config.architecture}` ({parameters:,} parameters), kind: {config.kind}, "
        f"sampling: {config.sampling}" + (f" (2.5D, ±{config.context_slices} slices)" if config.context_slices else ""),
        f"- Inputs: {', '.join(config.input_channels)}; intensity normalisation: {config.normalisation}",
        f"- Trained voxel sizes: {config.voxel_mm_range[0]}–{config.voxel_mm_range[1]} mm; count fractions: "
        f"{', '.join(f'{f:g}' for f in config.count_fractions) or 'user data'}; tracers: "
        f"{', '.join(config.tracers) or 'unspecified'}",
        "",
        "## Training",
        f"- Data: {_describe_data(settings.data)}",
        "- Loss: " + ("DDPM noise prediction (epsilon, MSE)" if config.kind == "diffusion" else
                       f"L1 + {settings.ssim_weight:g}·(1 − SSIM), lesion attention β = {settings.lesion_weight:g}"),
        f"- {settings.steps} steps, batch {settings.batch_size}, patch {settings.patch}, Adam lr "
        f"{settings.learning_rate:g} (cosine), seed {settings.seed}; {seconds / 60:.0f} min on {_where()}",
        f"- Best validation loss (held-out cases): {best_validation:.4f}",
        f"- Reproduce: {_reproduce(settings)} in the SPECTDenoise repository after making the data above (the data "
        "runs stopped at the case counts given); on a GPU raise `steps`, `batch_size` and the network width.",
        "",
        "## Evaluation",
        "See `BENCHMARKS.md` in the SPECTDenoise repository for RMSE/PSNR/SSIM and SUV bias on held-out simulated "
        "cases at 10–50 % counts against Gaussian, TV, NLM and BM4D filters.",
        "",
        "## Limits",
        "- Trained on simulated SPECT (analytic phantoms, parallel-hole collimators, OSEM). Real scans differ in "
        "scatter, reconstruction and anatomy: check denoised numbers against the input in the difference map.",
        "- Not a medical device; for research and teaching.",
        "",
        "## Licence",
        "Apache-2.0, as SPECTDenoise.",
        "",
    ]
    return "\n".join(lines)


def _reproduce(settings: TrainSettings) -> str:
    """The command that repeats this run: ``train`` with its settings file, or ``finetune`` with its options."""
    if not settings.initial_weights:
        shipped = Path("benchmarks", "training", f"{settings.name}.json")
        return (f"`spectdenoise train --config {shipped}`" if (REPOSITORY / shipped).is_file()
                else "`spectdenoise train --config SETTINGS.json` with the settings above")
    start = _shown(settings.initial_weights) if Path(settings.initial_weights).is_dir() else settings.initial_weights
    return (f"`spectdenoise finetune --model {start} --data {' '.join(map(_shown, settings.data))} -o OUTPUT "
            f"--steps {settings.steps} --learning-rate {settings.learning_rate:g} --batch-size {settings.batch_size} "
            f"--lesion-weight {settings.lesion_weight:g} --validation-cases {settings.validation_cases} "
            f"--seed {settings.seed}`")


def _training_seconds(log: list[dict]) -> float:
    """Total training time over resumed segments (each segment's clock restarts at 0)."""
    total, previous = 0.0, 0.0
    for record in log:
        if record["seconds"] < previous:
            total += previous
        previous = record["seconds"]
    return total + previous


def _shown(folder: str) -> str:
    """``folder`` relative to the repository when it lies inside it (the card's commands run there), else as given."""
    try:
        return str(Path(folder).resolve().relative_to(REPOSITORY))
    except ValueError:
        return folder


def _describe_data(folders: list[str]) -> str:
    descriptions = []
    for folder in folders:
        manifest = Path(folder) / "manifest.json"
        if not manifest.exists():
            descriptions.append(f"user pairs in '{Path(folder).name}'")
            continue
        cases = json.loads(manifest.read_text(encoding="utf-8"))["cases"]
        families = Counter(case.get("family", "?") for case in cases)
        collimators = sorted({case.get("collimator", "?") for case in cases})
        fractions = sorted({float(f) for case in cases for f in case.get("low", {})})
        voxels = [case["voxel_mm"] for case in cases if case.get("voxel_mm")]
        run_seeds = sorted({case["seed"] // 1_000_000 for case in cases if "seed" in case})
        descriptions.append(
            f"'{Path(folder).name}': {len(cases)} simulated cases "
            f"({', '.join(f'{n} {k}' for k, n in sorted(families.items()))}; made by `spectdenoise dataset -o "
            f"{_shown(folder)} --n {len(cases)} --seed {', '.join(map(str, run_seeds))}`); collimators "
            f"{', '.join(collimators)}; count fractions {', '.join(f'{f:g}' for f in fractions)}; voxel sizes "
            f"{min(voxels):g}–{max(voxels):g} mm"
        )
    return "; ".join(descriptions)


def _where() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    return f"{device}, Python {sys.version.split()[0]}, torch {torch.__version__}"
