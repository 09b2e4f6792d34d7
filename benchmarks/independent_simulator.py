"""Benchmark cases from an independent simulator: PyTomography projects and reconstructs, numpy counts.

The training data come from our own simulator (:mod:`SPECTDenoiseLib.simulate`); a model can learn that
simulator's quirks (its interpolation, its blur kernels, its OSEM) as well as the physics. Cases made here
share only the *object* and the *counting statistics* with the training data, so a model that merely learned our
projector's fingerprints shows it on them.

What differs from :func:`SPECTDenoiseLib.simulate.simulate_pair`
    * Projector: PyTomography's ``SPECTSystemMatrix`` (rotate-and-sum). The volume, padded by ≈ 21 % on each
      side, is rotated for every view with kornia's bilinear ``rotate`` (an image warp); ours resamples the axial
      plane with our own bilinear weights onto a camera-aligned grid of the unpadded size.
    * Back-projection: PyTomography rotates back with the inverse rotation, which is only approximately the
      transpose of its forward rotation; ours is the exact adjoint (``index_add_`` of the same weights).
    * Attenuation: PyTomography rotates the μ-map with each view and integrates it on the rotated, padded grid
      (``SPECTAttenuationTransform``; kept per view by :class:`CachedAttenuationTransform` for speed, same
      numbers); ours samples it on our own camera grid.
    * Collimator response: PyTomography's Gaussian model σ(d) = √((a·d + b)² + c²), with a = D / (L − 2/μ_Pb),
      b = D, c = intrinsic (all ÷ 2.355), applied as spatial-domain separable convolutions truncated at 3σ of
      the widest kernel. μ_Pb comes from PyTomography's own NIST lead table at the photopeak energy (≈ 4 % above
      our preset's value at 140 keV). The hole diameter D, hole length L, intrinsic FWHM and photopeak energy are
      our preset's (:func:`SPECTDenoiseLib.simulation.get_collimator`). Differences: PyTomography has no
      collimator-to-crystal gap (ours adds 10 mm: ≈ 4 % wider at 20 cm for Tc99m-LEHR) and it blurs in the
      spatial domain; ours multiplies by the exact Gaussian in the Fourier domain.
    * Reconstruction: PyTomography's ``OSEM`` with ``PoissonLogLikelihood``, modelling the same attenuation and
      PSF as its projector. It starts from 1 everywhere on the grid; ours
      (:class:`SPECTDenoiseLib.simulation.OSEM`) starts from the count-matched mean inside the inscribed
      cylinder and never updates voxels outside it. The subsets are alike (subset m holds views m, m + S, ...).
    * No scatter, no septal penetration, no post-filter: these cases are the plain 360° OSEM-RR protocol.

What is the same
    * The phantom (activity, μ-map in 1/mm at the photopeak, labels, spacing) and its ``total_counts``;
      the phantom generators are the training data's, so only the simulation chain is independent.
    * The camera: views evenly over 360° about the slice (z) axis, a circular orbit of radius
      :func:`SPECTDenoiseLib.simulate.orbit_radius_mm` (the same object outline decides it).
    * The counts: Poisson draws at ``total_counts`` (:func:`SPECTDenoiseLib.simulation.poisson_counts`) and
      binomial thinning of the projections to each fraction (:func:`SPECTDenoiseLib.simulation.thin_counts`).
    * The units: every reconstruction is divided by its acquisition's count scale × fraction, so the noise-free
      one approximates the activity in flat regions and all share the phantom's units.

Conventions: PyTomography holds objects as [x, y, z] in cm and projections as [view, r, z]; our arrays are
[z, y, x] in mm. :func:`to_pytomography` / :func:`from_pytomography` are the only place the axes are swapped
(a plain transpose, no flips); the tests check that an off-centre sphere is reconstructed where it is.

Cost (CPU, 2 threads; PyTomography loops over views and blurs with grouped 1D convolutions): one 4 × 8 OSEM
reconstruction takes about 33 CPU-seconds for a 56 × 64 × 64 grid with 60 views, 70 with 120 views, and about
50 for 56 × 96 × 96 with 60 views; ``settings`` records the measured seconds of every run.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.io import check_finite
from SPECTDenoiseLib.phantoms import Phantom
from SPECTDenoiseLib.simulate import check_fraction, orbit_radius_mm
from SPECTDenoiseLib.simulation import Collimator, get_collimator, poisson_counts, thin_counts
from SPECTDenoiseLib.simulation.collimators import FWHM_PER_SIGMA

# PyTomography prints a banner and installs a global "ignore every warning" filter when imported; keep both
# out of the caller's process.
try:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        import pytomography
        from pytomography.algorithms import OSEM
        from pytomography.likelihoods import PoissonLogLikelihood
        from pytomography.metadata.SPECT import SPECTObjectMeta, SPECTProjMeta, SPECTPSFMeta
        from pytomography.projectors.SPECT import SPECTSystemMatrix
        from pytomography.transforms.SPECT import SPECTAttenuationTransform, SPECTPSFTransform
        from pytomography.transforms.SPECT.attenuation import get_prob_of_detection_matrix
        from pytomography.utils import pad_object, rotate_detector_z
        from pytomography.utils.nist_data import get_mu_from_spectrum_interp
except ImportError:
    pytomography = None

MM_PER_CM = 10.0


def _require_pytomography() -> None:
    if pytomography is None:
        raise ImportError("The independent simulator needs PyTomography: pip install 'spectdenoise[benchmark]'.")


def to_pytomography(volume: np.ndarray) -> torch.Tensor:
    """Our [z, y, x] array as a PyTomography object [x, y, z] (float32, on PyTomography's device)."""
    _require_pytomography()
    array = np.ascontiguousarray(np.transpose(volume, (2, 1, 0)), dtype=np.float32)
    return torch.from_numpy(array).to(pytomography.device)


def from_pytomography(obj: torch.Tensor) -> np.ndarray:
    """A PyTomography object [x, y, z] as our float32 [z, y, x] array."""
    return np.ascontiguousarray(obj.detach().cpu().numpy().transpose(2, 1, 0), dtype=np.float32)


def lead_attenuation_per_cm(energy_kev: float) -> float:
    """Linear attenuation of lead (1/cm) at ``energy_kev`` from PyTomography's NIST table."""
    _require_pytomography()
    lead_table = Path(pytomography.__file__).parent / "data" / "NIST_attenuation_data" / "lead.csv"
    return float(get_mu_from_spectrum_interp(str(lead_table), energy_kev))


def psf_meta(collimator: Collimator) -> SPECTPSFMeta:
    """PyTomography's Gaussian collimator model parameterised with our preset's hole diameter, hole length,
    intrinsic FWHM and photopeak energy; σ(d) in cm at distance d (cm) from the collimator face."""
    mu_lead_per_cm = lead_attenuation_per_cm(collimator.energy_kev)
    diameter = collimator.hole_diameter_mm / MM_PER_CM
    length = collimator.hole_length_mm / MM_PER_CM
    slope = diameter / (length - 2.0 / mu_lead_per_cm) / FWHM_PER_SIGMA
    intercept = diameter / FWHM_PER_SIGMA
    intrinsic = collimator.intrinsic_fwhm_mm / MM_PER_CM / FWHM_PER_SIGMA
    return SPECTPSFMeta((slope, intercept, intrinsic),
                        sigma_fit=lambda r, a, b, c: np.sqrt((a * r + b) ** 2 + c**2))


class CachedAttenuationTransform(SPECTAttenuationTransform if pytomography else object):
    """PyTomography's attenuation transform, keeping each view's detection probabilities between calls.

    The stock transform rotates the μ-map and integrates it again for every view of every projection and
    back-projection (about a fifth of the CPU time of an OSEM iteration); this one calls the same PyTomography
    functions once per view and keeps the result within ``cache_mb`` of memory (views beyond are recomputed).
    """

    def __init__(self, attenuation_map: torch.Tensor, cache_mb: float = 512.0) -> None:
        super().__init__(attenuation_map)
        self._factors: dict[int, torch.Tensor] = {}
        self._cache_left = cache_mb * 2**20

    def _factor(self, ang_idx: torch.Tensor) -> torch.Tensor:
        key = int(ang_idx)
        if key in self._factors:
            return self._factors[key]
        rotated = rotate_detector_z(pad_object(self.attenuation_map), self.proj_meta.angles[ang_idx])
        factor = get_prob_of_detection_matrix(rotated, self.object_meta.dx)
        size = factor.numel() * factor.element_size()
        if size <= self._cache_left:
            self._factors[key] = factor
            self._cache_left -= size
        return factor

    @torch.no_grad()
    def forward(self, object_i: torch.Tensor, ang_idx: torch.Tensor) -> torch.Tensor:
        """Attenuate the padded object [x, y, z], rotated so that view ``ang_idx`` looks from +x."""
        return object_i * self._factor(ang_idx)

    backward = forward  # a diagonal operator is its own transpose


def system_matrix(shape: Sequence[int], spacing_mm: Sequence[float], mu_map: np.ndarray, collimator: Collimator,
                  angles_deg: Sequence[float], orbit_radius_mm: float) -> SPECTSystemMatrix:
    """PyTomography's SPECT system matrix (attenuation, then depth-dependent PSF) for a [z, y, x] grid.

    ``shape`` and ``spacing_mm`` are (z, y, x) and (dz, dy, dx) in mm with square axial slices; ``mu_map`` is
    [z, y, x] in 1/mm. Projections of the returned matrix are [view, r, z] with r along PyTomography's y.
    """
    _require_pytomography()
    nz, ny, nx = (int(n) for n in shape)
    dz, dy, dx = (float(s) / MM_PER_CM for s in spacing_mm)
    if ny != nx or abs(dy - dx) > 1e-3 * dx:
        raise InputError("The independent simulator needs square axial slices (same size and spacing in x and y).")
    object_meta = SPECTObjectMeta([dx, dy, dz], (nx, ny, nz))
    angles = np.asarray(angles_deg, dtype=np.float32)
    radii = np.full(len(angles), orbit_radius_mm / MM_PER_CM)
    proj_meta = SPECTProjMeta((ny, nz), [dy, dz], angles, radii=radii)
    attenuation = CachedAttenuationTransform(to_pytomography(np.asarray(mu_map) * MM_PER_CM))
    return SPECTSystemMatrix([attenuation, SPECTPSFTransform(psf_meta(collimator))], [], object_meta, proj_meta)


def simulate_independent(phantom: Phantom, fractions: Sequence[float], draws: int, seed: int, iterations: int = 4,
                         subsets: int = 8, angles: int = 120) -> dict:
    """Simulate and reconstruct ``phantom`` with PyTomography: noise-free, ``draws`` full-count and thinned scans.

    Parameters
    ----------
    phantom : activity and μ-map [z, y, x] (1/mm), spacing (dz, dy, dx) in mm with square axial slices;
        its ``collimator`` sets the PSF and its ``total_counts`` the expected full-count total.
    fractions : count fractions F in (0, 1] of the low-count scans (each thinned from the same full-count draw).
    draws : number of independent Poisson draws of the full-count projections.
    seed : seed of every Poisson and binomial draw (numpy).
    iterations, subsets, angles : OSEM settings and number of views over 360°.

    Returns
    -------
    dict with ``noise_free`` (reconstruction of the expected projections), ``full`` (list over draws),
    ``low`` ({F: list over draws}) — float32 [z, y, x] on the phantom's grid in activity units — and
    ``settings`` (what was simulated, count totals per scan and run times in seconds).
    """
    _require_pytomography()
    preset = get_collimator(phantom.collimator)
    activity = np.asarray(phantom.activity, dtype=np.float32)
    mu_map = np.asarray(phantom.mu_map, dtype=np.float32)
    if activity.ndim != 3 or mu_map.shape != activity.shape:
        raise InputError(f"The activity {activity.shape} and the attenuation map {mu_map.shape} "
                         "must share one 3D grid.")
    check_finite(activity, "The activity")
    check_finite(mu_map, "The attenuation map")
    activity = np.clip(activity, 0.0, None)
    if not activity.any():
        raise InputError("The activity is zero everywhere; nothing can be simulated.")
    fractions = [check_fraction(f) for f in fractions]
    if int(draws) < 1 or int(angles) < 2 or not 1 <= int(subsets) <= int(angles) or int(iterations) < 1:
        raise InputError(f"Need ≥ 1 draw, ≥ 2 angles, 1 ≤ subsets ≤ angles and ≥ 1 iteration "
                         f"(got {draws}, {angles}, {subsets}, {iterations}).")
    if not phantom.total_counts > 0:
        raise InputError(f"The total counts must be positive (got {phantom.total_counts}).")

    started = time.perf_counter()
    orbit = orbit_radius_mm((activity > 0.01 * activity.max()) | (mu_map > 0), phantom.spacing_mm)
    view_angles = np.linspace(0.0, 360.0, int(angles), endpoint=False)
    system = system_matrix(activity.shape, phantom.spacing_mm, mu_map, preset, view_angles, orbit)
    psf = system.obj2obj_transforms[1].psf_meta
    rng = np.random.default_rng(seed)
    with torch.inference_mode():
        expected = system.forward(to_pytomography(activity))
        scale = float(phantom.total_counts) / float(expected.sum())
        expected = expected * scale
        projection_s = time.perf_counter() - started
        likelihood = PoissonLogLikelihood(system, expected)
        recon_seconds = []

        def reconstruct(counts: torch.Tensor, fraction: float) -> np.ndarray:
            begin = time.perf_counter()
            likelihood.projections = counts
            image = OSEM(likelihood)(int(iterations), int(subsets))
            recon_seconds.append(time.perf_counter() - begin)
            return from_pytomography(image / (scale * fraction))

        noise_free = reconstruct(expected, 1.0)
        full, low = [], {f: [] for f in fractions}
        counts_full, counts_low = [], {f: [] for f in fractions}
        for _ in range(int(draws)):
            counts = poisson_counts(expected, rng)
            full.append(reconstruct(counts, 1.0))
            counts_full.append(float(counts.sum()))
            for f in fractions:
                thinned = thin_counts(counts, f, rng)
                low[f].append(reconstruct(thinned, f))
                counts_low[f].append(float(thinned.sum()))
    settings = {
        "simulator": f"pytomography {pytomography.__version__}", "collimator": preset.name,
        "iterations": int(iterations), "subsets": int(subsets), "angles": int(angles), "draws": int(draws),
        "fractions": fractions, "seed": int(seed), "total_counts": float(phantom.total_counts),
        "orbit_radius_mm": orbit, "psf_fwhm_mm_at_orbit": MM_PER_CM * FWHM_PER_SIGMA * float(
            psf.sigma_fit(orbit / MM_PER_CM, *psf.sigma_fit_params)),
        "count_scale": scale, "counts_full": counts_full, "counts_low": counts_low,
        "projection_s": projection_s, "reconstruction_s": recon_seconds,
        "total_s": time.perf_counter() - started, "threads": torch.get_num_threads(),
    }
    return {"noise_free": noise_free, "full": full, "low": low, "settings": settings}
