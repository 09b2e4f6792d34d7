"""Conditional DDPM for SPECT denoising: network, scheduler and sampler, each replaceable (as in diffusers).

Choices:

* **Slices, 2.5D-conditioned.** The network is MONAI's 2D ``DiffusionModelUNet``; its input is
  ``concat([x_t (1 channel), condition])`` where the condition holds the low-count SPECT slices z-k..z+k (and CT)
  in the kind-major order of ``ModelConfig``. 2D keeps CPU sampling in seconds per step for a 64³ volume.
* **The diffusion variable is the residual** ``x0 = (full_count - low_count_centre) / residual_scale`` in
  normalised units, not the image. The residual is near zero mean and small, so a few DDIM steps (10–20)
  suffice and an untrained network gives ≈ the input rather than noise.
* **Epsilon prediction, MONAI ``DDIMScheduler``** (no clipping: residuals are not bounded to [-1, 1]). The same
  scheduler adds noise in training (``add_noise`` uses the training schedule) and steps in sampling.
* **Deterministic DDIM (eta = 0)**: the only randomness is the starting noise drawn from the caller's
  ``torch.Generator``, so a seed fixes the sample; N seeds/draws give the mean and per-voxel variance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler
from torch import nn

from ..errors import ModelError
from .config import ModelConfig

SCHEDULES = ("linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine")


class ConditionalNoisePredictor(nn.Module):
    """Noise-prediction network for the residual diffusion variable.

    Parameters
    ----------
    condition_channels : image channels of the condition (low-count SPECT slices, then CT).
    centre_channel : index, within the condition, of the low-count SPECT slice the residual is added to.
    channels : feature maps per level of MONAI's ``DiffusionModelUNet`` (each a multiple of ``norm_groups``).
    num_res_blocks : residual blocks per level.
    attention_levels : self-attention per level (slow on CPU; off by default).
    norm_groups : group-norm groups.
    residual_scale : the diffusion variable is ``(target - centre) / residual_scale`` (normalised units).
    """

    def __init__(
        self,
        condition_channels: int,
        centre_channel: int = 0,
        channels: Sequence[int] = (16, 32, 32),
        num_res_blocks: int = 1,
        attention_levels: Sequence[bool] | None = None,
        norm_groups: int = 8,
        residual_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0 <= centre_channel < condition_channels:
            raise ValueError(f"centre_channel {centre_channel} is outside 0..{condition_channels - 1}")
        if not residual_scale > 0:
            raise ValueError("residual_scale must be positive")
        self.centre_channel = centre_channel
        self.residual_scale = float(residual_scale)
        self.unet = DiffusionModelUNet(
            spatial_dims=2,
            in_channels=1 + condition_channels,
            out_channels=1,
            channels=tuple(channels),
            attention_levels=tuple(attention_levels) if attention_levels is not None else (False,) * len(channels),
            num_res_blocks=num_res_blocks,
            norm_num_groups=norm_groups,
        )

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Predict the noise [B, 1, H, W] in ``x = concat([x_t, condition])`` [B, 1 + C, H, W] at ``timesteps``
        [B]."""
        return self.unet(x, timesteps)

    def centre(self, condition: torch.Tensor) -> torch.Tensor:
        """The low-count SPECT slice [B, 1, H, W] that the residual is relative to."""
        return condition[:, self.centre_channel : self.centre_channel + 1]


def make_scheduler(config: ModelConfig) -> DDIMScheduler:
    """Build the DDIM scheduler described by ``config.diffusion`` (train_timesteps, schedule)."""
    settings = config.diffusion or {}
    schedule = settings.get("schedule")
    if schedule not in SCHEDULES:
        raise ModelError(f"The model's diffusion schedule {schedule!r} is not one of {list(SCHEDULES)}.")
    return DDIMScheduler(
        num_train_timesteps=int(settings["train_timesteps"]),
        schedule=schedule,
        clip_sample=False,
        prediction_type="epsilon",
    )


def sample_ddim(
    network: ConditionalNoisePredictor,
    scheduler: DDIMScheduler,
    condition: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Draw one denoised sample per batch item with deterministic DDIM.

    Parameters
    ----------
    network : the conditional noise predictor (eval mode; gradients are not tracked here).
    scheduler : from :func:`make_scheduler`; its inference timesteps are set to ``steps``.
    condition : [B, C, H, W] normalised low-count SPECT (and CT) channels, kind major.
    steps : number of DDIM steps (1 ≤ steps ≤ train_timesteps).
    generator : seeds the starting noise (may live on the CPU while ``condition`` is on a GPU).
    on_step : called as ``on_step(done, steps)`` after each step, e.g. for progress or cancellation.

    Returns
    -------
    [B, 1, H, W] denoised image in normalised units (low-count centre + sampled residual).
    """
    if not 1 <= steps <= scheduler.num_train_timesteps:
        raise ModelError(f"The number of diffusion steps must be between 1 and {scheduler.num_train_timesteps}.")
    scheduler.set_timesteps(steps, device=condition.device)
    scheduler.timesteps = leading_timesteps(scheduler.num_train_timesteps, steps, condition.device)
    shape = (condition.shape[0], 1, *condition.shape[2:])
    sample = torch.randn(shape, generator=generator, device=generator.device).to(condition.device, condition.dtype)
    with torch.no_grad():
        for done, t in enumerate(scheduler.timesteps, start=1):
            timesteps = torch.full((shape[0],), int(t), device=condition.device, dtype=torch.long)
            noise = network(torch.cat([sample, condition], dim=1), timesteps)
            sample, _ = scheduler.step(noise.to(sample.dtype), int(t), sample)
            if on_step is not None:
                on_step(done, steps)
    return network.centre(condition) + network.residual_scale * sample


def leading_timesteps(train_timesteps: int, steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """DDIM timesteps ``(steps-1)·r, …, r, 0`` with ``r = train_timesteps // steps`` ("leading" spacing).

    MONAI's ``DDIMScheduler.set_timesteps`` spaces steps by ``linspace(T-1, 0)`` while its ``step`` goes back by
    ``T // steps``: the two disagree, and the first step at t = T-1 divides by √ᾱ ≈ 5e-5 under the cosine
    schedule, which blows the sample up. With leading spacing every step lands on the timestep the next one uses
    and sampling starts where ᾱ still carries signal (as in the DDIM paper).
    """
    ratio = train_timesteps // steps
    return (torch.arange(steps, device=device) * ratio).flip(0).long()


def noise_prediction_loss(
    network: ConditionalNoisePredictor,
    scheduler: DDIMScheduler,
    target: torch.Tensor,
    condition: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Mean squared error of the predicted noise at random timesteps (the DDPM training objective).

    ``target`` [B, 1, H, W] is the normalised full-count slice, ``condition`` [B, C, H, W] the normalised
    low-count (and CT) channels; noise and timesteps come from ``generator``.
    """
    residual = (target - network.centre(condition)) / network.residual_scale
    noise = torch.randn(residual.shape, generator=generator, device=generator.device).to(residual)
    timesteps = torch.randint(0, scheduler.num_train_timesteps, (residual.shape[0],), generator=generator,
                              device=generator.device).to(residual.device)
    noisy = scheduler.add_noise(residual, noise, timesteps)
    return F.mse_loss(network(torch.cat([noisy, condition], dim=1), timesteps), noise)
