"""Predict-and-refine diffusion for SPECT denoising: a deterministic estimate plus sampled residuals.

Choices (after Whang et al. 2022, "Deblurring via stochastic refinement", and Lin et al. 2024, "Common diffusion
noise schedules and sample steps are flawed"):

* **Predict, then refine.** ``PredictAndRefine.base`` is a 2.5D residual U-Net (the architecture of the default
  model, frozen while the refiner trains) giving the estimate ``base(condition)``. The diffusion variable is the
  residual ``r = (target - estimate) / residual_scale`` in normalised units, so the mean of the samples is the
  estimate plus the mean residual: as good as the U-Net by construction, better where the refiner learns.
* **The refiner** is MONAI's 2D ``DiffusionModelUNet`` (small, no attention: seconds per step on a CPU) whose input
  is ``concat([r_t, estimate, condition])``, condition being the low-count SPECT slices z-k..z+k (and CT).
* **v-prediction, zero terminal SNR, trailing timesteps**, with diffusers' ``DDIMScheduler`` (deterministic,
  eta = 0). The first sampling step is always t = T-1 where ᾱ = 0: the input is pure noise and the x0 the
  network predicts there is the minimum-MSE mean, so ``steps = 1`` returns that mean and 2–10 steps give samples.
  ``set_alpha_to_one`` makes the last step return the predicted x0 without added noise.
* Schedulers stay apart from networks (as in diffusers): :func:`make_scheduler` builds one from
  ``config.diffusion``; the same scheduler adds noise in training and steps in sampling. The only randomness of a
  sample is the starting noise drawn from the caller's ``torch.Generator``, so a seed fixes the sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from ..devices import channels_last
from ..errors import ModelError
from .config import ModelConfig
from .unet import ResidualUNet

if TYPE_CHECKING:
    from diffusers import DDIMScheduler


class PredictAndRefine(nn.Module):
    """A frozen deterministic estimate (``base``) and a diffusion network (``refiner``) for its residual.

    Parameters
    ----------
    condition_channels : image channels of the condition (low-count SPECT slices, then CT), kind major.
    centre_channel : index, within the condition, of the low-count SPECT slice being denoised.
    base_channels, base_num_res_units, base_norm : the ``ResidualUNet`` (2D) of the estimate; the default model
        ``spect-unet25d`` has (32, 64, 128, 256), 1 and ``"batch"``.
    channels : feature maps per level of the refiner (MONAI ``DiffusionModelUNet``; multiples of ``norm_groups``).
    num_res_blocks : residual blocks per refiner level.
    norm_groups : group-norm groups of the refiner.
    residual_scale : the diffusion variable is ``(target - estimate) / residual_scale`` (normalised units); about
        the spread of the estimate's error, so the variable has unit scale.
    """

    def __init__(
        self,
        condition_channels: int,
        centre_channel: int = 0,
        base_channels: Sequence[int] = (32, 64, 128, 256),
        base_num_res_units: int = 1,
        base_norm: str = "batch",
        channels: Sequence[int] = (16, 32, 64),
        num_res_blocks: int = 1,
        norm_groups: int = 8,
        residual_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not residual_scale > 0:
            raise ValueError("residual_scale must be positive")
        self.residual_scale = float(residual_scale)
        self.base = ResidualUNet(2, condition_channels, centre_channel, base_channels, base_num_res_units,
                                 base_norm)
        self.base.requires_grad_(False)
        self.refiner = DiffusionModelUNet(
            spatial_dims=2,
            in_channels=2 + condition_channels,
            out_channels=1,
            channels=tuple(channels),
            attention_levels=(False,) * len(channels),
            num_res_blocks=num_res_blocks,
            norm_num_groups=norm_groups,
            use_flash_attention=True,  # the middle block's attention through torch's fused kernel (CPU and GPU)
        )

    def train(self, mode: bool = True) -> PredictAndRefine:
        """Set the refiner's mode; the base always stays in eval mode (frozen, BatchNorm running statistics)."""
        super().train(mode)
        self.base.train(False)
        return self

    def estimate(self, condition: torch.Tensor) -> torch.Tensor:
        """The deterministic estimate [B, 1, H, W] (normalised units) for ``condition`` [B, C, H, W]."""
        with torch.no_grad():
            return self.base(condition)

    def forward(self, noisy: torch.Tensor, estimate: torch.Tensor, condition: torch.Tensor,
                timesteps: torch.Tensor) -> torch.Tensor:
        """Predict v [B, 1, H, W] for the noisy residual ``noisy`` [B, 1, H, W] at ``timesteps`` [B], given the
        ``estimate`` [B, 1, H, W] and the ``condition`` [B, C, H, W]."""
        return self.refiner(channels_last(torch.cat([noisy, estimate, condition], dim=1)), timesteps)


def make_scheduler(config: ModelConfig) -> DDIMScheduler:
    """Build the DDIM scheduler of ``config.diffusion`` (``train_timesteps``, ``schedule``): v-prediction, betas
    rescaled to zero terminal SNR, trailing timesteps, no clipping (residuals are not bounded to [-1, 1])."""
    from diffusers import DDIMScheduler  # imported here: only diffusion models pay its import time

    settings = config.diffusion or {}
    return DDIMScheduler(
        num_train_timesteps=int(settings["train_timesteps"]),
        beta_schedule=settings["schedule"],
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        clip_sample=False,
        set_alpha_to_one=True,
    )


def sample_residual(
    network: PredictAndRefine,
    scheduler: DDIMScheduler,
    estimate: torch.Tensor,
    condition: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Draw one residual per batch item with deterministic DDIM and return it in normalised units.

    Parameters
    ----------
    network : the predict-and-refine network (eval mode; gradients are not tracked here).
    scheduler : from :func:`make_scheduler`; its inference timesteps are set to ``steps``.
    estimate : [B, 1, H, W] the base's estimate for ``condition`` (computed once, shared by every sample).
    condition : [B, C, H, W] normalised low-count SPECT (and CT) channels, kind major.
    steps : number of DDIM steps (1 ≤ steps ≤ train_timesteps); 1 gives the minimum-MSE mean residual.
    generator : seeds the starting noise (may live on the CPU while ``condition`` is on a GPU).
    on_step : called as ``on_step(done, steps)`` after each step, e.g. for progress or cancellation.

    Returns
    -------
    [B, 1, H, W] float32 residual ``residual_scale · r``: the sample is ``estimate + residual``.
    """
    if not 1 <= steps <= scheduler.config.num_train_timesteps:
        raise ModelError(f"The number of diffusion steps must be between 1 and "
                         f"{scheduler.config.num_train_timesteps}.")
    scheduler.set_timesteps(steps, device=condition.device)
    shape = (condition.shape[0], 1, *condition.shape[2:])
    sample = torch.randn(shape, generator=generator, device=generator.device).to(condition.device, torch.float32)
    with torch.no_grad():
        for done, t in enumerate(scheduler.timesteps, start=1):
            timesteps = torch.full((shape[0],), int(t), device=condition.device, dtype=torch.long)
            velocity = network(sample.to(condition.dtype), estimate, condition, timesteps).float()
            sample = scheduler.step(velocity, int(t), sample, eta=0.0, return_dict=False)[0]
            if on_step is not None:
                on_step(done, steps)
    return network.residual_scale * sample


def v_prediction_loss(
    network: PredictAndRefine,
    scheduler: DDIMScheduler,
    target: torch.Tensor,
    condition: torch.Tensor,
    generator: torch.Generator,
    forward: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean squared error of the predicted v of the residual at random timesteps (the refiner's objective).

    ``target`` [B, 1, H, W] is the normalised noise-free slice, ``condition`` [B, C, H, W] the normalised
    low-count (and CT) channels; noise and timesteps come from ``generator``. The estimate comes from the frozen
    base without gradients. ``forward`` calls the refiner (e.g. through DistributedDataParallel; default
    ``network``).
    """
    estimate = network.estimate(condition)
    residual = (target - estimate) / network.residual_scale
    noise = torch.randn(residual.shape, generator=generator, device=generator.device).to(residual)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (residual.shape[0],), generator=generator,
                              device=generator.device).to(residual.device)
    noisy = scheduler.add_noise(residual, noise, timesteps)
    velocity = scheduler.get_velocity(residual, noise, timesteps)
    return F.mse_loss((forward or network)(noisy, estimate, condition, timesteps).float(), velocity)
