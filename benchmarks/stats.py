"""Statistics of the quality benchmark: region values, errors over repeated noise draws, confidence intervals.

Pure functions over numpy arrays ([z, y, x] volumes, boolean masks of the same shape) and plain lists; no I/O.
Conventions: relative errors are in %, ``reference`` is the noise-free reconstruction unless said otherwise,
``truth`` is the phantom's activity. Confidence intervals are two-sided 95 % intervals.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage
from scipy.stats import spearmanr

LEVEL = 0.95
BODY_HU = -500.0
"""CT value (HU) above which a voxel counts as body: every benchmark measures in the voxels of :func:`ct_body`."""


def ct_body(ct: np.ndarray) -> np.ndarray:
    """The body mask of a CT volume [z, y, x]: voxels above :data:`BODY_HU`."""
    return ct > BODY_HU


def region_values(image: np.ndarray, regions: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """{region name: [mean, max]} of ``image`` inside each mask."""
    return {name: [float(image[mask].mean()), float(image[mask].max())] for name, mask in regions.items()}


def spatial_cov(image: np.ndarray, mask: np.ndarray) -> float:
    """Coefficient of variation (SD ÷ mean, in %) of the voxel values of ``image`` inside ``mask``."""
    values = image[mask].astype(np.float64)
    return float(100 * values.std() / values.mean())


def interior(mask: np.ndarray, voxels: int = 2) -> np.ndarray:
    """``mask`` eroded by ``voxels`` (drops voxels near its edges and near the holes other regions cut into it)."""
    return ndimage.binary_erosion(mask, iterations=voxels)


def relative_errors(values: Sequence[float], reference: float) -> np.ndarray:
    """100 · (values − reference) ÷ reference."""
    return 100 * (np.asarray(values, dtype=np.float64) - reference) / reference


def bootstrap_ci(groups: Sequence[Sequence[float]], statistic: Callable[[np.ndarray], float] = np.mean,
                 resamples: int = 2000, seed: int = 0, level: float = LEVEL) -> tuple[float, float, float]:
    """(estimate, lower, upper) of ``statistic`` over values that come in groups (cases, each with its draws).

    Two-stage bootstrap: resample the groups with replacement, then the values inside each chosen group, so
    both the case-to-case and the draw-to-draw variation widen the interval. With one group this is the plain
    bootstrap over its values.
    """
    arrays = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    estimate = float(statistic(np.concatenate(arrays)))
    rng = np.random.default_rng(seed)
    samples = np.empty(resamples)
    for index in range(resamples):
        chosen = rng.integers(len(arrays), size=len(arrays)) if len(arrays) > 1 else [0]
        samples[index] = statistic(np.concatenate([arrays[c][rng.integers(arrays[c].size, size=arrays[c].size)]
                                                   for c in chosen]))
    low, high = np.quantile(samples, [0.5 - level / 2, 0.5 + level / 2])
    return estimate, float(low), float(high)


def recovery_coefficient(measured: float, truth: float) -> float:
    """Measured ÷ true activity concentration (1 = full recovery)."""
    return measured / truth


def contrast_recovery(sphere: float, background: float, true_sphere: float, true_background: float) -> float:
    """NEMA NU 2 hot-sphere contrast recovery in %: (C_s ÷ C_b − 1) ÷ (A_s ÷ A_b − 1) · 100."""
    return 100 * (sphere / background - 1) / (true_sphere / true_background - 1)


class VoxelEnsemble:
    """Running per-voxel mean and variance of one method's outputs over noise draws (Welford)."""

    def __init__(self) -> None:
        self.count = 0
        self._mean: np.ndarray | None = None
        self._squares: np.ndarray | None = None

    def add(self, image: np.ndarray) -> None:
        """Add one draw's image."""
        image = image.astype(np.float64)
        if self._mean is None:
            self._mean, self._squares = np.zeros_like(image), np.zeros_like(image)
        self.count += 1
        delta = image - self._mean
        self._mean += delta / self.count
        self._squares += delta * (image - self._mean)

    def noise_pct(self, mask: np.ndarray | None = None) -> float:
        """Ensemble noise in ``mask`` (every voxel added when None): √(mean voxel variance over draws) ÷ mean voxel
        value, in % (NaN if < 2)."""
        if self.count < 2:
            return float("nan")
        mask = slice(None) if mask is None else mask
        variance = self._squares[mask] / (self.count - 1)
        return float(100 * np.sqrt(variance.mean()) / self._mean[mask].mean())

    def arrays(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(count, running mean, running sum of squared deviations), for saving; empty arrays before any draw."""
        if self._mean is None:
            return 0, np.zeros(0), np.zeros(0)
        return self.count, self._mean, self._squares

    @classmethod
    def from_arrays(cls, count: int, mean: np.ndarray, squares: np.ndarray) -> VoxelEnsemble:
        """The ensemble that :meth:`arrays` gave these values."""
        ensemble = cls()
        if count:
            ensemble.count, ensemble._mean, ensemble._squares = int(count), np.array(mean), np.array(squares)
        return ensemble


_SIZE = re.compile(r"_(\d+(?:\.\d+)?)mm$")


def region_kind(name: str, true_mean: float, true_background: float) -> tuple[str, float | None]:
    """(kind, diameter in mm or None) of a lesion label: ``sphere_17mm`` → ("hot sphere", 17.0); cold spheres
    (true mean below the background's) are "cold sphere"; ``hot_lesion_9mm`` → ("hot lesion", 9.0);
    ``caudate_left``/``putamen_right`` → "striatum"; ``defect_1`` → "defect"; ``tumour_core`` → "tumour core"."""
    size = _SIZE.search(name)
    diameter = float(size.group(1)) if size else None
    stem = _SIZE.sub("", name)
    stem = re.sub(r"_(\d+|left|right)$", "", stem)
    if stem in ("caudate", "putamen"):
        return "striatum", diameter
    if stem == "sphere":
        return ("hot sphere" if true_mean > true_background else "cold sphere"), diameter
    return stem.replace("_", " "), diameter


RELIABILITY_BINS = 10
TOP_FRACTION, BOTTOM_FRACTION = 0.1, 0.5
ONE_SIGMA_RANGE, TWO_SIGMA_RANGE = (60.0, 75.0), (90.0, 98.0)
"""Issue 11's target ranges of the 1 σ and 2 σ coverage, in % (calibrated Gaussian errors: 68 and 95 %)."""


def coverage(variance: np.ndarray, error: np.ndarray, k: float) -> float:
    """Fraction (in %) of voxels whose |``error``| ≤ ``k`` · √``variance`` (1-D arrays of the same voxels)."""
    return float(100 * np.mean(np.abs(error) <= k * np.sqrt(variance)))


def error_ranking_ratio(score: np.ndarray, error: np.ndarray) -> float:
    """Mean |``error``| of the 10 % voxels with the highest ``score`` ÷ that of the half with the lowest
    (1-D arrays of the same voxels; ties ranked in array order)."""
    order = np.argsort(score, kind="stable")
    top = order[-max(1, int(TOP_FRACTION * order.size)):]
    bottom = order[:max(1, int(BOTTOM_FRACTION * order.size))]
    return float(np.abs(error[top]).mean() / max(np.abs(error[bottom]).mean(), 1e-12))


def reliability_curve(variance: np.ndarray, error: np.ndarray, scale: float = 1.0,
                      bins: int = RELIABILITY_BINS) -> dict[str, list[float]]:
    """Voxels in ``bins`` equal-count bins of predicted σ = √``variance`` (lowest first); per bin the predicted
    RMS σ and the observed RMS ``error``, both ÷ ``scale``, to 4 significant digits (1-D arrays of the same
    voxels). A calibrated variance puts every bin on the diagonal."""
    chunks = np.array_split(np.argsort(variance, kind="stable"), bins)
    return {"sigma_rms": [float(f"{np.sqrt(variance[c].mean()) / scale:.4g}") for c in chunks],
            "error_rms": [float(f"{np.sqrt(np.mean(error[c] ** 2)) / scale:.4g}") for c in chunks]}


def uncertainty_agreement(variance: np.ndarray, denoised: np.ndarray, reference: np.ndarray,
                          body: np.ndarray) -> dict:
    """How well a per-voxel variance (squared image units) describes the error of ``denoised`` against
    ``reference`` inside ``body`` ([z, y, x] arrays):

    * ``coverage_1sigma_pct`` / ``coverage_2sigma_pct``: voxels within 1 σ / 2 σ of the reference, in %
      (68 % / 95 % for calibrated Gaussian errors);
    * ``error_ratio_variance``: mean |error| in the 10 % highest-variance voxels ÷ that in the lower half;
      ``error_ratio_intensity`` the same with voxels ranked by the denoised intensity (the baseline a reader gets
      from brightness alone), and ``error_ratio_quotient`` the first ÷ the second (above 1: the variance says more
      than brightness);
    * ``spearman_variance_vs_squared_error``;
    * ``reliability``: :func:`reliability_curve` in % of the reference's body mean.
    """
    v, error = variance[body].astype(np.float64), (denoised[body] - reference[body]).astype(np.float64)
    by_variance, by_intensity = error_ranking_ratio(v, error), error_ranking_ratio(denoised[body], error)
    return {"coverage_1sigma_pct": coverage(v, error, 1.0), "coverage_2sigma_pct": coverage(v, error, 2.0),
            "error_ratio_variance": by_variance, "error_ratio_intensity": by_intensity,
            "error_ratio_quotient": by_variance / by_intensity,
            "spearman_variance_vs_squared_error": float(spearmanr(v, error ** 2).statistic),
            "reliability": reliability_curve(v, error, float(reference[body].mean()) / 100)}
