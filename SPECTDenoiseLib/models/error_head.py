"""A learned recalibration of a diffusion model's variance: per-voxel log error variance from the scan's features.

The spread of sampled refinements alone ranks voxels by error no better than brightness does (issue 11): it
follows the refiner's idea of the noise, not the error of the image returned. The error head is a small per-voxel
network that maps features of the scan in hand — the low-count input at several scales, the denoised image, what
denoising removed (the method noise) and the samples' spread — to the log of the expected squared error of the
image. It is trained with a Gaussian negative log-likelihood on simulated training-seed scans
(``SPECTDenoiseLib.train.error_head``) and stored in the diffusion model's weights (``error_head.*``); the model's
``variance_scale``, fitted afterwards on validation scans, calibrates its output.

Every feature is unit-free: image-unit quantities are divided by the tissue level of the denoised image
(``normalisation.robust_tissue_level``, scale-equivariant), squared ones by its square, so the head sees the same
numbers for counts, Bq/mL or SUV, and for any normalisation a model uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ..metrics import body_mask
from ..normalisation import robust_tissue_level

FEATURES = (
    "image", "input_smoothed_1", "input_smoothed_2", "input_smoothed_4", "input_local_sd_2",
    "image_minus_input_2", "image_gradient_1", "image_contrast_4", "method_noise_rms_2", "method_noise_mean_2",
    "spread_sd", "spread_sd_smoothed_2", "depth_cm", "image_rank", "method_noise_rms_2_rank", "spread_sd_rank",
    "scan_method_noise", "scan_spread_sd",
)
"""Columns of :func:`error_features`: a suffix n is a Gaussian σ of n voxels; ``method_noise`` is input − image;
``spread_sd`` the square root of the samples' mean squared spread around the image; image-unit values ÷ the
image's tissue level. The body is ``metrics.body_mask`` of the image: ``depth_cm`` is a voxel's distance to its
edge, ``*_rank`` its rank among the body's voxels (0–1; 0 outside), ``scan_*`` the RMS of a quantity over it (one
value per scan)."""
CHUNK_VOXELS = 1 << 18
"""Voxels per pass of the head (its activations stay a few MB)."""


def _smoothed(volume: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(volume.astype(np.float32), sigma, mode="nearest")


def _signed_log(values: np.ndarray) -> np.ndarray:
    """sign · log(1 + |x|): keeps small values linear and tames the hot lesions' and organs' range."""
    return np.sign(values) * np.log1p(np.abs(values))


def _ranks(values: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Each body voxel's rank among the body's ``values`` (0–1), 0 outside the body."""
    ranks = np.zeros(values.shape, dtype=np.float32)
    inside = values[body]
    ranks[body] = np.argsort(np.argsort(inside, kind="stable"), kind="stable") / max(inside.size, 1)
    return ranks


def error_features(low: np.ndarray, image: np.ndarray, spread: np.ndarray,
                   spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """The :data:`FEATURES` of every voxel, [voxel, feature] float32 (C order over [z, y, x]), each as
    sign · log(1 + |x|).

    ``low`` is the low-count input (negatives clipped), ``image`` the denoised image returned and ``spread`` the
    samples' mean squared distance from it (before any variance scale), all [z, y, x] in one set of units
    (``spread`` in those units squared) on a grid of ``spacing_mm`` (z, y, x). Raises InputError (from the tissue
    level) when ``image`` has no positive voxel."""
    level = robust_tissue_level(image)
    low = low.astype(np.float32) / np.float32(level)
    image = image.astype(np.float32) / np.float32(level)
    spread_sd = np.sqrt(np.maximum(spread, 0.0)).astype(np.float32) / np.float32(level)
    method_noise = low - image
    input_2 = _smoothed(low, 2)
    noise_rms_2 = np.sqrt(_smoothed(method_noise**2, 2))
    body = body_mask(image)
    columns = [
        image, _smoothed(low, 1), input_2, _smoothed(low, 4),
        np.sqrt(np.maximum(_smoothed(low**2, 2) - input_2**2, 0.0)),
        image - input_2,
        ndimage.gaussian_gradient_magnitude(image, 1.0, mode="nearest"),
        image / np.maximum(_smoothed(image, 4), 1e-3),
        noise_rms_2, _smoothed(method_noise, 2),
        spread_sd, _smoothed(spread_sd, 2),
        ndimage.distance_transform_edt(body, sampling=spacing_mm) / 10.0,
        _ranks(image, body), _ranks(noise_rms_2, body), _ranks(spread_sd, body),
    ]
    scan = [float(np.sqrt(np.mean(method_noise[body].astype(np.float64) ** 2))),
            float(np.sqrt(np.mean(spread_sd[body].astype(np.float64) ** 2)))]
    matrix = np.empty((image.size, len(FEATURES)), dtype=np.float32)  # filled a column at a time: one copy
    for index, column in enumerate(columns):
        matrix[:, index] = _signed_log(column.ravel())
    matrix[:, len(columns):] = _signed_log(np.asarray(scan, dtype=np.float32))
    return matrix


class ErrorHead(nn.Module):
    """Per-voxel network: standardised :func:`error_features` → log of the expected squared error ÷ level².

    Parameters
    ----------
    hidden : widths of the hidden layers (SiLU between them).

    The features' training mean and SD are buffers (``feature_mean``, ``feature_sd``), saved with the weights.
    """

    def __init__(self, hidden: Sequence[int]) -> None:
        super().__init__()
        widths = [len(FEATURES), *hidden]
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.SiLU()]
        layers.append(nn.Linear(widths[-1], 1))
        self.layers = nn.Sequential(*layers)
        self.register_buffer("feature_mean", torch.zeros(len(FEATURES)))
        self.register_buffer("feature_sd", torch.ones(len(FEATURES)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Log error variance ÷ level² [N] for ``features`` [N, F] (:func:`error_features`)."""
        return self.layers((features - self.feature_mean) / self.feature_sd).squeeze(-1)

    def variance(self, low: np.ndarray, image: np.ndarray, spread: np.ndarray,
                 spacing_mm: tuple[float, float, float]) -> np.ndarray:
        """The expected squared error [z, y, x] of ``image`` in its units squared (arguments as
        :func:`error_features`), run in chunks on the head's device."""
        level = robust_tissue_level(image)
        features = error_features(low, image, spread, spacing_mm)
        device = self.feature_mean.device
        log_variance = np.empty(features.shape[0], dtype=np.float32)
        with torch.no_grad():
            for start in range(0, features.shape[0], CHUNK_VOXELS):
                chunk = torch.from_numpy(features[start:start + CHUNK_VOXELS]).to(device)
                log_variance[start:start + CHUNK_VOXELS] = self(chunk).float().cpu().numpy()
        return (np.exp(log_variance, dtype=np.float64) * level**2).astype(np.float32).reshape(image.shape)
