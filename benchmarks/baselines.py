"""Classical denoising baselines for the quality benchmark, each at its very best (oracle tuning per volume).

Every filter is tuned per volume against the noise-free reconstruction (body NRMSE): a log-spaced starting grid is
extended outwards while the best value sits on its edge (until it is interior or a hard limit is reached, which
is reported), then refined once around the best value. Beating these baselines is therefore a fair claim: no
real user can tune a filter against the noise-free image.

* Gaussian: isotropic 3D Gaussian, FWHM in mm.
* TV: Chambolle total variation (scikit-image), weight relative to the image's body mean.
* NLM: scikit-image non-local means in 3D, ``h`` relative to the noise estimated from the body's high-pass
  residual.
* BM4D: the ``bm4d`` package (correlated-noise BM4D) after a square-root variance stabilisation, given the
  *coloured* noise power spectrum of the stabilised image, scaled by the tuned ``strength``. The spectrum comes
  from one extra, independent noise draw of the same scan (its difference from the noise-free reconstruction):
  possible only in simulation, and generous to BM4D (:func:`noise_psd`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

from SPECTDenoiseLib.metrics import nrmse

FWHM_TO_SIGMA = 1 / (2 * np.sqrt(2 * np.log(2)))
PSEUDO_COUNTS = 10.0  # body mean of the image scaled before the square-root stabilisation


def gaussian(image: np.ndarray, spacing_mm: tuple[float, float, float], fwhm_mm: float) -> np.ndarray:
    """3D Gaussian filter of ``fwhm_mm`` on a [z, y, x] image with ``spacing_mm`` [z, y, x]."""
    sigma = [fwhm_mm * FWHM_TO_SIGMA / s for s in spacing_mm]
    return gaussian_filter(image, sigma).astype(np.float32)


def total_variation(image: np.ndarray, body: np.ndarray, weight: float) -> np.ndarray:
    """Chambolle TV with ``weight`` relative to the body mean (the image is scaled to body mean 1 and back)."""
    scale = float(image[body].mean())
    return (denoise_tv_chambolle(image / scale, weight=weight) * scale).astype(np.float32)


def body_noise(image: np.ndarray, body: np.ndarray) -> float:
    """Noise standard deviation from the body's high-pass residual (air excluded; cf. docs/ARCHITECTURE.md §7)."""
    residual = image - gaussian_filter(image, 1.0)
    return float(np.std(residual[body]) * 1.6)


def non_local_means(image: np.ndarray, body: np.ndarray, h_factor: float) -> np.ndarray:
    """3D non-local means with ``h = h_factor × noise``, 5³ patches, 11³ search window. The noise variance is not
    subtracted from patch distances (scikit-image's ``sigma``): that correction assumes white noise, and OSEM noise
    is correlated, so ``h`` alone sets the smoothing."""
    sigma = body_noise(image, body)
    return denoise_nl_means(image, patch_size=5, patch_distance=5, h=h_factor * sigma, fast_mode=True
                            ).astype(np.float32)


def stabilise(image: np.ndarray, scale: float) -> np.ndarray:
    """Square-root (Anscombe-form) stabilisation of ``image`` × ``scale`` (negative values count as 0)."""
    return 2 * np.sqrt(np.clip(image, 0, None) * scale + 3 / 8)


def unstabilise(stabilised: np.ndarray, scale: float) -> np.ndarray:
    """Algebraic inverse of :func:`stabilise` (clipped at 0)."""
    return np.clip((np.clip(stabilised, 0, None) / 2) ** 2 - 3 / 8, 0, None) / scale


def noise_psd(noise: np.ndarray, body: np.ndarray, smoothing: int = 3) -> np.ndarray:
    """Power spectrum of a noise realisation inside ``body``, in the ``bm4d`` convention (white noise of SD σ
    has PSD = N · σ² everywhere, N = voxels): |FFT(noise · body)|² × N ÷ (body voxels), smoothed over
    ``smoothing``³ neighbouring frequencies (circularly) to tame the periodogram's own scatter."""
    windowed = np.where(body, noise, 0.0)
    power = np.abs(np.fft.fftn(windowed)) ** 2 * (noise.size / max(int(body.sum()), 1))
    return uniform_filter(power, smoothing, mode="wrap")


def stabilised_psd(image: np.ndarray, body: np.ndarray, other_draw: np.ndarray,
                   noise_free: np.ndarray) -> np.ndarray:
    """Noise PSD of ``image`` after :func:`stabilise`, from an independent draw of the same scan minus its
    noise-free reconstruction, both stabilised with ``image``'s scale."""
    scale = PSEUDO_COUNTS / float(image[body].mean())
    return noise_psd(stabilise(other_draw, scale) - stabilise(noise_free, scale), body)


def bm4d_coloured(image: np.ndarray, body: np.ndarray, psd: np.ndarray, strength: float) -> np.ndarray:
    """BM4D of the stabilised image given the stabilised noise ``psd`` (:func:`stabilised_psd`) × strength²."""
    import bm4d

    if not hasattr(np, "trapz"):  # bm4d 4.2.5 fits its thresholds to a PSD with numpy.trapz, gone in numpy 2.4
        np.trapz = np.trapezoid
    scale = PSEUDO_COUNTS / float(image[body].mean())
    filtered = bm4d.bm4d(stabilise(image, scale), strength**2 * psd)
    return unstabilise(filtered, scale).astype(np.float32)


@dataclass
class Tuning:
    """Result of :func:`tune`: best parameter, whether it is interior to the values tried, every (value, score)."""

    parameter: float
    score: float
    interior: bool
    tried: list[tuple[float, float]] = field(default_factory=list)


def tune(score: Callable[[float], float], grid: list[float], ratio: float = 2.0,
         limits: tuple[float, float] = (0.0, math.inf), max_extensions: int = 6, refine: bool = True) -> Tuning:
    """Minimise ``score(parameter)`` on a positive, increasing ``grid`` of at least 2 values.

    While the best value is the smallest or largest tried, the grid is extended by one value beyond it (× or ÷
    ``ratio``), at most ``max_extensions`` times and never outside ``limits``; ``interior`` tells whether the
    best value ended with a tried value on each side. With ``refine``, the geometric midpoints next to an interior
    best are tried too.
    """
    tried: dict[float, float] = {}

    def evaluate(value: float) -> None:
        if value not in tried:
            tried[value] = float(score(value))

    for value in grid:
        evaluate(value)
    for _ in range(max_extensions):
        values = sorted(tried)
        best = min(values, key=tried.get)
        if best == values[0] and best / ratio > limits[0]:
            evaluate(best / ratio)
        elif best == values[-1] and best * ratio < limits[1]:
            evaluate(best * ratio)
        else:
            break
    values = sorted(tried)
    best = min(values, key=tried.get)
    inside = values[0] < best < values[-1]
    if refine and inside:
        position = values.index(best)
        for neighbour in (values[position - 1], values[position + 1]):
            evaluate(math.sqrt(best * neighbour))
    best = min(tried, key=tried.get)
    return Tuning(best, tried[best], inside, sorted(tried.items()))


GRIDS = {
    "gaussian": [4.0, 8.0, 16.0],
    "tv": [0.05, 0.2, 0.8],
    "nlm": [0.2, 0.4, 0.8],
    "bm4d": [0.5, 1.0, 2.0],
}
LIMITS = {"gaussian": (0.5, 80.0), "tv": (1e-3, 50.0), "nlm": (0.05, 20.0), "bm4d": (0.05, 20.0)}
SLOW = ("nlm", "bm4d")


def run_baselines(image: np.ndarray, reference: np.ndarray, body: np.ndarray,
                  spacing_mm: tuple[float, float, float], names: tuple[str, ...] = ("gaussian", "tv"),
                  psd_noise: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, tuple[np.ndarray, Tuning]]:
    """Return {name: (best output, tuning)} for each baseline in ``names``, tuned against ``reference``.

    ``psd_noise`` = (independent noise draw, noise-free reconstruction) is needed for "bm4d".
    """
    filters: dict[str, Callable[[float], np.ndarray]] = {
        "gaussian": lambda f: gaussian(image, spacing_mm, f),
        "tv": lambda w: total_variation(image, body, w),
        "nlm": lambda h: non_local_means(image, body, h),
    }
    if "bm4d" in names:
        psd = stabilised_psd(image, body, *psd_noise)
        filters["bm4d"] = lambda s: bm4d_coloured(image, body, psd, s)
    results = {}
    for name in names:
        best: dict = {"error": math.inf}

        def score(value: float, name: str = name, best: dict = best) -> float:
            output = filters[name](value)
            error = nrmse(output, reference, body)
            if error < best["error"]:
                best.update(error=error, output=output)
            return error

        tuning = tune(score, GRIDS[name], limits=LIMITS[name])
        results[name] = (best["output"], tuning)
    return results
