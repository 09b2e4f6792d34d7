"""Training for quantitative fidelity: robust intensity scale, lesion-mean loss, lesion-centred windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SPECTDenoiseLib.normalisation import intensity_scale
from SPECTDenoiseLib.phantoms import make_phantom
from SPECTDenoiseLib.train.losses import COLD, HOT, DenoisingLoss, lesion_mean_error


@pytest.fixture(scope="module")
def torso():
    return make_phantom("torso", seed=7, voxel_mm=6.0).activity


@pytest.mark.parametrize("factor", [0.01, 0.37, 1000.0])
def test_robust_scale_follows_the_units_exactly(torso, factor):
    assert intensity_scale(torso * factor, "robust_median") == pytest.approx(
        factor * intensity_scale(torso, "robust_median"), rel=1e-5)


def test_robust_scale_ignores_a_hot_bladder_that_moves_the_body_mean(torso):
    hot = torso.copy()
    z, y, x = (n // 2 for n in hot.shape)
    hot[z - 3:z + 3, y - 3:y + 3, x - 3:x + 3] = 80 * np.median(torso[torso > 0])
    robust = intensity_scale(hot, "robust_median") / intensity_scale(torso, "robust_median")
    mean = intensity_scale(hot, "body_mean") / intensity_scale(torso, "body_mean")
    assert abs(robust - 1) < 0.03 and abs(mean - 1) > 2 * abs(robust - 1)


def test_robust_scale_ignores_an_air_margin(torso):
    padded = np.pad(torso, 12)
    assert intensity_scale(padded, "robust_median") == pytest.approx(intensity_scale(torso, "robust_median"), rel=0.02)


def masks_and_images():
    target = torch.ones(2, 1, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, 0, 2:4, 2:4] = HOT
    mask[1, 0, 5:7, 5:7] = COLD
    return target, mask


def test_lesion_mean_error_is_zero_for_a_perfect_prediction_and_relative_otherwise():
    target, mask = masks_and_images()
    assert float(lesion_mean_error(target, target, mask)) == 0.0
    prediction = target.clone()
    prediction[0, 0, 2:4, 2:4] = 0.5  # the hot lesion loses half of its mean
    assert float(lesion_mean_error(prediction, target, mask)) == pytest.approx(0.25)  # mean of 0.5 (hot) and 0 (cold)


def test_lesion_mean_error_ignores_noise_that_keeps_the_mean():
    target, mask = masks_and_images()
    prediction = target.clone()
    prediction[0, 0, 2, 2:4] = 1.5
    prediction[0, 0, 3, 2:4] = 0.5
    assert float(lesion_mean_error(prediction, target, mask)) == pytest.approx(0.0, abs=1e-6)


def test_denoising_loss_adds_the_mean_term_only_when_weighted():
    target, mask = masks_and_images()
    prediction = target.clone()
    prediction[0, 0, 2:4, 2:4] = 0.5
    plain = DenoisingLoss(2, ssim_weight=0.0)(prediction, target, mask)
    weighted = DenoisingLoss(2, ssim_weight=0.0, mean_weight=2.0)(prediction, target, mask)
    assert float(weighted - plain) == pytest.approx(0.5)
