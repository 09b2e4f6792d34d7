"""The training loop: sample, optimise, validate, checkpoint, resume and export a model package.

Runs as one process or under ``torchrun`` (DistributedDataParallel; ``gloo`` on CPU, ``nccl`` on CUDA): every
process draws its own samples (seed + rank), gradients are averaged by DDP, rank 0 validates, checkpoints and
exports. A run resumes from ``run_dir/last`` when it exists.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import ModelError
from ..models.config import ModelConfig
from ..models.diffusion import make_scheduler, v_prediction_loss
from ..models.package import save_package
from ..models.registry import build_network
from .card import model_card
from .checkpoint import load_checkpoint, save_checkpoint
from .data import Batch, CaseCache, PatchSampler, find_cases
from .ema import WeightAverage
from .losses import DenoisingLoss
from .settings import TrainSettings

VALIDATION_BATCHES = 4
WARMUP_STEPS = 50


def train(settings: TrainSettings, log: Callable[[str], None] = print) -> Path:
    """Train the model ``settings`` describes and write its package to ``settings.output``; return that path."""
    rank, world, device = _init_distributed()
    try:
        return _train(settings, rank, world, device, log if rank == 0 else (lambda message: None))
    finally:
        if world > 1:
            dist.destroy_process_group()


def _train(settings: TrainSettings, rank: int, world: int, device: torch.device, log: Callable[[str], None]) -> Path:
    config = settings.model_config
    torch.manual_seed(settings.seed)
    cases = sorted((case for folder in settings.data for case in find_cases(folder)), key=lambda c: c.name)
    held_out = min(settings.validation_cases, max(0, len(cases) - 1))
    training, validation = cases[: len(cases) - held_out], cases[len(cases) - held_out:]
    network = _initial_network(settings, config).to(device)
    model: nn.Module = DistributedDataParallel(network) if world > 1 else network
    # Frozen parts (a diffusion model's base) stay out of the optimiser.
    optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=settings.learning_rate)
    average = WeightAverage(network, settings.ema_decay) if settings.ema_decay else None
    evaluated = average.network if average is not None else network  # what is validated and exported
    run_dir = Path(settings.run_dir)
    step, best = 0, math.inf
    if (run_dir / "last").exists():
        state = load_checkpoint(run_dir / "last", network, optimizer, average)
        step, best = int(state["step"]), float(state["best"])
        log(f"resumed from {run_dir / 'last'} at step {step}")
    objective = _objective(config, settings, device)
    # Every training case stays in memory (a few MB each): re-reading compressed files per sample would dominate.
    sampler = PatchSampler(CaseCache(training, config.needs_ct, capacity=len(training)), config, tuple(settings.patch),
                           seed=settings.seed * 7919 + rank * 104729 + step, scale_range=tuple(settings.scale_range),
                           lesion_fraction=settings.lesion_patch_fraction)
    validation_batches = _validation_batches(validation, config, settings)
    generator = torch.Generator(device="cpu").manual_seed(settings.seed + rank + step)
    log(f"training {config.architecture} ({_parameters(network):,} parameters) on {len(training)} cases, "
        f"validating on {len(validation)}, {world} process(es) on {device}")
    started = time.monotonic()
    run_dir.mkdir(parents=True, exist_ok=True)
    while step < settings.steps:
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, settings)
        loss = objective(model, sampler.batch(settings.batch_size), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        if average is not None:
            average.update(network)
        step += 1
        if step % settings.validate_every == 0 or step == settings.steps:
            if rank == 0:
                score = _validate(evaluated, objective, validation_batches) if validation_batches else loss.item()
                improved = score < best
                best = min(best, score)
                state = {"step": step, "best": best, "validation": score, "train_loss": loss.item()}
                if improved:
                    save_checkpoint(run_dir / "best", network, optimizer, state, average)
                save_checkpoint(run_dir / "last", network, optimizer, state, average)
                _append_log(run_dir, dict(state, seconds=round(time.monotonic() - started, 1)))
                log(f"step {step}/{settings.steps}  loss {loss.item():.4f}  validation {score:.4f}"
                    f"{'  (best)' if improved else ''}  {time.monotonic() - started:.0f} s")
            if world > 1:
                dist.barrier()
    output = Path(settings.output)
    if rank == 0:
        best_weights = run_dir / "best" if (run_dir / "best").exists() else run_dir / "last"
        load_checkpoint(best_weights, network, optimizer, average)
        card = model_card(settings, config, evaluated, best, _read_log(run_dir))
        save_package(evaluated, config, output, card)
        log(f"wrote model package {output}")
    return output


def _init_distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), device


def _initial_network(settings: TrainSettings, config: ModelConfig) -> nn.Module:
    from ..hub import load_model

    if not settings.initial_weights:
        network = build_network(config)
        if settings.base_model:
            _load_base(network, load_model(settings.base_model), config)
        return network

    start = load_model(settings.initial_weights)
    network_fields = ("architecture", "arguments", "input_channels", "sampling", "context_slices", "patch_size", "kind")
    if any(getattr(start.config, name) != getattr(config, name) for name in network_fields):
        raise ModelError(f"The starting model '{settings.initial_weights}' has another network than the run "
                         f"(compare {', '.join(network_fields)}).")
    return start.network


def _load_base(network: nn.Module, base, config: ModelConfig) -> None:
    """Copy the weights of the ``unet2d`` package ``base`` (a ``LoadedModel``) into ``network.base``."""
    facts = ("input_channels", "context_slices", "normalisation")
    if base.config.architecture != "unet2d" or any(getattr(base.config, f) != getattr(config, f) for f in facts):
        raise ModelError(f"The base model '{base.name}' must be a unet2d with the run's {', '.join(facts)}.")
    try:
        network.base.load_state_dict(base.network.state_dict())
    except RuntimeError:
        raise ModelError(f"The base model '{base.name}' has other layers than the run's base_channels, "
                         "base_num_res_units and base_norm.") from None


def _objective(config: ModelConfig, settings: TrainSettings, device: torch.device):
    """Return ``loss(model, batch, generator)`` for the model's kind."""
    if config.kind == "diffusion":
        scheduler = make_scheduler(config)

        def diffusion_loss(model: nn.Module, batch: Batch, generator: torch.Generator) -> torch.Tensor:
            inputs, targets = (torch.from_numpy(a).to(device) for a in (batch.inputs, batch.targets))
            network = model.module if isinstance(model, DistributedDataParallel) else model
            return v_prediction_loss(network, scheduler, targets, inputs, generator, forward=model)

        return diffusion_loss
    criterion = DenoisingLoss(3 if config.sampling == "patches" else 2, settings.ssim_weight,
                              settings.lesion_weight, settings.mean_weight).to(device)

    def denoising_loss(model: nn.Module, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        inputs, targets, masks = (torch.from_numpy(a).to(device) for a in (batch.inputs, batch.targets, batch.masks))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            prediction = model(inputs)
        # A deeply supervised network returns its outputs as channels (fused first): each gets the full loss and
        # the losses add with equal weights (Pan et al., eq. 1).
        outputs = prediction.float().split(1, dim=1)
        return sum(criterion(output, targets, masks) for output in outputs)

    return denoising_loss


def _validation_batches(cases, config: ModelConfig, settings: TrainSettings) -> list[Batch]:
    if not cases:
        return []
    sampler = PatchSampler(CaseCache(cases, config.needs_ct), config, tuple(settings.patch), seed=20261122,
                           lesion_fraction=settings.lesion_patch_fraction)
    return [sampler.batch(settings.batch_size) for _ in range(VALIDATION_BATCHES)]


def _validate(network: nn.Module, objective, batches: list[Batch]) -> float:
    """Mean loss over fixed held-out batches (fixed noise for diffusion models)."""
    network.eval()
    generator = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        losses = [float(objective(network, batch, generator)) for batch in batches]
    return float(np.mean(losses))


def _learning_rate(step: int, settings: TrainSettings) -> float:
    if step < WARMUP_STEPS:
        return settings.learning_rate * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, settings.steps - WARMUP_STEPS)
    return settings.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def _append_log(run_dir: Path, record: dict) -> None:
    with open(run_dir / "log.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _read_log(run_dir: Path) -> list[dict]:
    path = run_dir / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

