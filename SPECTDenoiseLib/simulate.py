"""Full-count and low-count SPECT from an activity map: project, count, thin, reconstruct identically.

``simulate_pair`` works on arrays ([z, y, x], spacing in mm) and serves the training-data generator and the
teaching panel; ``simulate_low_count`` wraps it for SimpleITK images (the ``simulate`` command). The camera
rotates about the image z axis (axial slices are assumed); attenuation comes from a μ-map (from CT or a water
body); low-count data are made by binomial thinning of the *projections*, never by adding image noise.
Both reconstructions are divided by their acquisition's count scale, so they share the input's units.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from .errors import InputError
from .io import array_to_image, check_finite, check_volume, image_to_array, resample_to_reference
from .simulation import (
    OSEM,
    SPECTProjector,
    chang_factors,
    cylinder_mask,
    filtered_backprojection,
    get_collimator,
    hu_to_mu,
    poisson_counts,
    scatter_projections,
    thin_counts,
    water_body_mu,
)


@dataclass
class SimulationResult:
    """Reconstructions [z, y, x] in the units of the input activity, and what was simulated."""

    full: np.ndarray
    low: dict[float, np.ndarray]
    mu_map: np.ndarray
    counts_full: float
    counts_low: dict[float, float]
    settings: dict = field(default_factory=dict)
    noise_free: np.ndarray | None = None


def check_fraction(fraction: float) -> float:
    """Return ``fraction`` as a float if it lies in (0, 1], else raise InputError."""
    value = float(fraction)
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise InputError(f"The count fraction must be greater than 0 and at most 1 (got {fraction}).")
    return value


def orbit_radius_mm(support: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Circular orbit radius (mm) clearing the object: 1.2 × its largest axial radius plus a 20 mm (clinical)
    or 2 mm (small-animal, radius < 40 mm) margin. ``support`` is a [z, y, x] boolean mask."""
    _, ny, nx = support.shape
    footprint = support.any(axis=0)
    if not footprint.any():
        return 0.5 * max(ny * spacing_mm[1], nx * spacing_mm[2])
    y, x = np.nonzero(footprint)
    radius = float(np.sqrt(((y - (ny - 1) / 2) * spacing_mm[1]) ** 2 + ((x - (nx - 1) / 2) * spacing_mm[2]) ** 2).max())
    return 1.2 * radius + (20.0 if radius >= 40.0 else 2.0)


def _square_padding(shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
    _, ny, nx = shape
    n = max(ny, nx)
    return ((0, 0), ((n - ny) // 2, n - ny - (n - ny) // 2), ((n - nx) // 2, n - nx - (n - nx) // 2))


def _crop(volume: np.ndarray, padding: tuple[tuple[int, int], ...]) -> np.ndarray:
    return volume[tuple(slice(before, volume.shape[axis] - after) for axis, (before, after) in enumerate(padding))]


def reconstruct_acquisitions(projector: SPECTProjector, acquisitions: Sequence[tuple[float, torch.Tensor]],
                             iterations: int, subsets: int, scale: float = 1.0,
                             background: torch.Tensor | None = None, postfilter_fwhm_mm: float = 0.0,
                             progress: Callable[[float, str], None] | None = None) -> list[np.ndarray]:
    """Reconstruct every (fraction F, counts [angle, z, u]) pair with identical OSEM settings.

    Each estimate is divided by ``scale`` × F, so all images share the units of the full-count one (a low-count
    image is not 1/F darker); ``background`` is the expected full-count scatter, scaled by F for each
    acquisition. Returns float32 arrays [z, y, x] on the projector's grid, optionally Gaussian post-filtered.
    """
    report = progress or (lambda fraction, stage: None)
    osem = OSEM(projector, int(subsets))
    images = []
    for index, (fraction, counts) in enumerate(acquisitions):
        def step(done: float, index: int = index) -> None:
            report(0.1 + 0.9 * (index + done) / len(acquisitions), "reconstructing")

        additive = None if background is None else background * (scale * fraction)
        estimate = osem.reconstruct(counts, int(iterations), additive, step)
        images.append(_finished((estimate / (scale * fraction)).cpu().numpy(), postfilter_fwhm_mm,
                                projector.spacing_mm))
    return images


def _finished(image: np.ndarray, postfilter_fwhm_mm: float, spacing_mm: Sequence[float]) -> np.ndarray:
    """A reconstruction as written: Gaussian post-filtered (if FWHM > 0), negatives set to 0 (FFT blurs leave
    tiny ones), float32."""
    if postfilter_fwhm_mm > 0:
        image = ndimage.gaussian_filter(image, [postfilter_fwhm_mm / 2.355 / s for s in spacing_mm])
    return np.maximum(image, 0.0).astype(np.float32)


RECONSTRUCTIONS = ("osem-rr", "osem", "fbp")
MAX_TOTAL_COUNTS = 1e10
"""Far above any real acquisition; Poisson draws of larger expectations overflow."""
SCATTER_CORRECTIONS = ("exact", "window", "none")


@dataclass(frozen=True)
class ScanProtocol:
    """How a scan is acquired and reconstructed (lengths in mm, angles in degrees).

    Attributes
    ----------
    total_counts : expected counts in all full-count projections together (primary + scatter).
    angles, arc_deg, start_deg : number of views spread evenly over ``arc_deg`` (360 or 180) from ``start_deg``.
    reconstruction : ``"osem-rr"`` (OSEM with attenuation and resolution recovery), ``"osem"`` (attenuation only)
        or ``"fbp"`` (Butterworth-filtered back-projection with first-order Chang attenuation correction).
    iterations, subsets : OSEM settings.
    butterworth_cutoff, butterworth_order : FBP window (cutoff as a fraction of Nyquist).
    postfilter_fwhm_mm : Gaussian filter applied to every reconstruction (0 = none).
    scatter_fraction : share of the photopeak counts that is scatter (0 = none simulated).
    scatter_correction : ``"exact"`` (the expected scatter, an idealisation), ``"window"`` (estimate from a
        Poisson scatter window holding ``scatter_window_ratio`` × the photopeak scatter, as TEW/DEW) or ``"none"``.
    penetration_fraction, penetration_fwhm_mm : septal-penetration tail of the *simulated* collimator response;
        the reconstruction never models it (a deliberate system-model mismatch).
    recon_blur_scale : the reconstruction's resolution model uses the collimator FWHM × this.
    """

    total_counts: float = 3e6
    angles: int = 120
    arc_deg: float = 360.0
    start_deg: float = 0.0
    reconstruction: str = "osem-rr"
    iterations: int = 4
    subsets: int = 8
    butterworth_cutoff: float = 0.5
    butterworth_order: int = 5
    postfilter_fwhm_mm: float = 0.0
    scatter_fraction: float = 0.0
    scatter_correction: str = "exact"
    scatter_window_ratio: float = 0.25
    penetration_fraction: float = 0.0
    penetration_fwhm_mm: float = 60.0
    recon_blur_scale: float = 1.0

    def check(self) -> None:
        """Raise InputError naming the first setting out of range."""
        if not 0 < self.total_counts <= MAX_TOTAL_COUNTS:
            raise InputError(f"The total counts must be positive and at most {MAX_TOTAL_COUNTS:.0e} "
                             f"(got {self.total_counts}).")
        if self.angles < 2 or not 1 <= self.subsets <= self.angles or self.iterations < 1:
            raise InputError(f"Need ≥ 2 angles, 1 ≤ subsets ≤ angles and ≥ 1 iteration "
                             f"(got {self.angles}, {self.subsets}, {self.iterations}).")
        if self.reconstruction not in RECONSTRUCTIONS:
            raise InputError(f"Unknown reconstruction '{self.reconstruction}'; choose one of {', '.join(RECONSTRUCTIONS)}.")
        if self.scatter_correction not in SCATTER_CORRECTIONS:
            raise InputError(f"Unknown scatter correction '{self.scatter_correction}'; "
                             f"choose one of {', '.join(SCATTER_CORRECTIONS)}.")
        if self.arc_deg not in (180.0, 360.0):
            raise InputError(f"The orbit must cover 180 or 360 degrees (got {self.arc_deg}).")
        if not 0.0 <= self.scatter_fraction < 1.0 or not 0.0 <= self.penetration_fraction < 1.0:
            raise InputError("Scatter and penetration fractions must lie in [0, 1).")
        if not 0.0 < self.butterworth_cutoff <= 1.0 or self.scatter_window_ratio <= 0 or self.recon_blur_scale < 0:
            raise InputError("The Butterworth cutoff must lie in (0, 1], the window ratio and blur scale be positive.")


@dataclass
class Acquisition:
    """Measured projections [angle, z, u] of one noise draw at count fraction ``fraction`` of the full scan;
    ``window`` holds the scatter-window counts when the protocol corrects scatter from a window."""

    counts: torch.Tensor
    fraction: float
    window: torch.Tensor | None = None


class ScanSimulator:
    """One activity distribution scanned with one protocol: set up once, then any number of noise draws.

    The simulated system (attenuation, depth-dependent collimator blur, optional penetration tail and scatter)
    produces the expected projections; :meth:`acquire` draws Poisson counts, :meth:`thin` makes a lower-count
    scan of the same acquisition, :meth:`reconstruct` applies the protocol's reconstruction, and
    :meth:`noise_free` reconstructs the expected projections with the same settings (the noise-free reference).
    Images are [z, y, x] float32 in the units of ``activity``.
    """

    def __init__(self, activity: np.ndarray, spacing_mm: Sequence[float], mu_map: np.ndarray | None = None,
                 collimator: str = "Tc99m-LEHR", protocol: ScanProtocol = ScanProtocol(),
                 device: str = "cpu") -> None:
        protocol.check()
        preset = get_collimator(collimator)
        activity = np.asarray(activity, dtype=np.float32)
        if activity.ndim != 3:
            raise InputError(f"The activity is {activity.ndim}D; a 3D volume is needed.")
        check_finite(activity, "The activity")
        activity = np.clip(activity, 0.0, None)
        if not activity.any():
            raise InputError("The activity is zero everywhere; nothing can be simulated.")
        spacing = tuple(float(s) for s in spacing_mm)
        if mu_map is None:
            mu_map = water_body_mu(activity, spacing, preset)
        mu_map = np.asarray(mu_map, dtype=np.float32)
        if mu_map.shape != activity.shape:
            raise InputError(f"The attenuation map has shape {mu_map.shape}, the activity {activity.shape}.")
        check_finite(mu_map, "The attenuation map")
        self.protocol = protocol
        self.preset = preset
        self.mu_map = mu_map
        self.padding = _square_padding(activity.shape)
        # Project activity ÷ its maximum so float32 never overflows or underflows whatever the input's units;
        # images are multiplied back in ``reconstruct``.
        self.activity_unit = float(activity.max())  # finite and positive: checked above
        padded = np.pad(activity / self.activity_unit, self.padding)
        padded_mu = np.pad(mu_map, self.padding)
        self.orbit_radius_mm = orbit_radius_mm((padded > 0.01 * padded.max()) | (padded_mu > 0), spacing)
        view_angles = protocol.start_deg + np.linspace(0.0, protocol.arc_deg, int(protocol.angles), endpoint=False)

        def projector(mu: np.ndarray | None, blur_scale: float,
                      penetration: tuple[float, float] | None = None) -> SPECTProjector:
            return SPECTProjector(padded.shape, spacing, preset, view_angles, self.orbit_radius_mm, mu,
                                  device=device, blur_scale=blur_scale, penetration=penetration)

        penetration = ((protocol.penetration_fraction, protocol.penetration_fwhm_mm)
                       if protocol.penetration_fraction > 0 else None)
        simulation = projector(padded_mu, 1.0, penetration)
        if protocol.reconstruction == "fbp":
            self._plain = projector(None, 0.0)
            self._chang = chang_factors(projector(padded_mu, 0.0), self._plain)
            self._osem = None
        else:
            blur = protocol.recon_blur_scale if protocol.reconstruction == "osem-rr" else 0.0
            same = penetration is None and blur == 1.0
            self._osem = OSEM(simulation if same else projector(padded_mu, blur), int(protocol.subsets))
        with torch.inference_mode():
            primary = simulation.forward(torch.from_numpy(padded).to(simulation.device))
            scatter = scatter_projections(primary, protocol.scatter_fraction, (spacing[0], spacing[2]))
            self.count_scale = protocol.total_counts / float((primary + scatter).sum())
            self.expected = (primary + scatter) * self.count_scale
            self.expected_scatter = scatter * self.count_scale
        self.spacing_mm = spacing
        self._noise_free: np.ndarray | None = None

    @property
    def _uses_window(self) -> bool:
        return self.protocol.scatter_fraction > 0 and self.protocol.scatter_correction == "window"

    def acquire(self, rng: np.random.Generator, fraction: float = 1.0) -> Acquisition:
        """One Poisson draw of the scan at count fraction ``fraction`` (in (0, 1])."""
        fraction = check_fraction(fraction)
        window = (poisson_counts(self.expected_scatter * (self.protocol.scatter_window_ratio * fraction), rng)
                  if self._uses_window else None)
        return Acquisition(poisson_counts(self.expected * fraction, rng), fraction, window)

    def thin(self, acquisition: Acquisition, fraction: float, rng: np.random.Generator) -> Acquisition:
        """Binomial thinning of ``acquisition`` to ``fraction`` of the *full* scan's counts (photopeak and window)."""
        keep = check_fraction(fraction) / acquisition.fraction
        if keep > 1.0 + 1e-9:
            raise InputError(f"Cannot thin a {acquisition.fraction:g} acquisition up to {fraction:g}.")
        window = None if acquisition.window is None else thin_counts(acquisition.window, min(keep, 1.0), rng)
        return Acquisition(thin_counts(acquisition.counts, min(keep, 1.0), rng), fraction, window)

    def reconstruct(self, acquisition: Acquisition,
                    progress: Callable[[float], None] | None = None) -> np.ndarray:
        """Reconstruct ``acquisition`` with the protocol's method; the image is divided by count scale × F."""
        protocol = self.protocol
        scale = self.count_scale * acquisition.fraction
        if protocol.scatter_fraction <= 0 or protocol.scatter_correction == "none":
            additive = None
        elif protocol.scatter_correction == "window" and acquisition.window is not None:
            additive = acquisition.window / protocol.scatter_window_ratio
        else:
            additive = self.expected_scatter * acquisition.fraction
        with torch.inference_mode():
            if self._osem is None:
                counts = acquisition.counts if additive is None else acquisition.counts - additive
                estimate = filtered_backprojection(self._plain, counts, protocol.butterworth_cutoff,
                                                   protocol.butterworth_order, self._chang)
                estimate = estimate.clamp_min(0.0) * cylinder_mask(self._plain.shape, estimate.device)
            else:
                estimate = self._osem.reconstruct(acquisition.counts, int(protocol.iterations), additive, progress)
        image = (estimate.double() * (self.activity_unit / scale)).cpu().numpy()
        finished = _finished(image, protocol.postfilter_fwhm_mm, self.spacing_mm)
        return np.ascontiguousarray(_crop(finished, self.padding))

    def noise_free(self) -> np.ndarray:
        """Reconstruction of the expected full-count projections with the same settings (computed once)."""
        if self._noise_free is None:
            window = self.expected_scatter * self.protocol.scatter_window_ratio if self._uses_window else None
            self._noise_free = self.reconstruct(Acquisition(self.expected, 1.0, window))
        return self._noise_free

    def settings(self) -> dict:
        """The protocol and the derived geometry as a JSON-ready record."""
        return {"collimator": self.preset.name, **asdict(self.protocol),
                "orbit_radius_mm": round(self.orbit_radius_mm, 2)}


def simulate_pair(activity: np.ndarray, spacing_mm: Sequence[float], mu_map: np.ndarray | None = None,
                  fractions: Sequence[float] = (0.1,), total_counts: float = 3e6,
                  collimator: str = "Tc99m-LEHR", iterations: int = 4, subsets: int = 8, angles: int = 120,
                  scatter: bool | float = False, seed: int = 0, postfilter_fwhm_mm: float = 0.0,
                  device: str = "cpu", progress: Callable[[float, str], None] | None = None,
                  noise_free: bool = False, **protocol_options) -> SimulationResult:
    """Simulate a full-count SPECT acquisition of ``activity`` and low-count versions by thinning.

    Parameters
    ----------
    activity : activity concentration [z, y, x] (any unit; negative values are set to 0).
    spacing_mm : voxel spacing (dz, dy, dx) in mm; dy must equal dx.
    mu_map : attenuation [z, y, x] in 1/mm at the photopeak; None outlines a water body on ``activity``.
    fractions : count fractions F in (0, 1] of the low-count acquisitions.
    total_counts : expected counts in all full-count projections together (primary + scatter).
    collimator : preset name (see ``SPECTDenoiseLib.simulation.PRESETS``).
    iterations, subsets, angles : OSEM settings and number of views.
    scatter : False, True (the preset's scatter fraction) or a scatter fraction in [0, 1).
    seed : seed of the Poisson and binomial draws.
    postfilter_fwhm_mm : Gaussian filter applied to every reconstruction (0 = none).
    noise_free : also reconstruct the expected projections (``SimulationResult.noise_free``).
    protocol_options : further :class:`ScanProtocol` fields (reconstruction, arc_deg, scatter_correction, ...).

    Returns
    -------
    SimulationResult with ``full`` and ``low[F]`` reconstructed with identical settings, in activity units.
    """
    preset = get_collimator(collimator)
    fractions = [check_fraction(f) for f in fractions]
    scatter_fraction = preset.scatter_fraction if scatter is True else float(scatter or 0.0)
    protocol = ScanProtocol(total_counts=float(total_counts), angles=int(angles), iterations=int(iterations),
                            subsets=int(subsets), postfilter_fwhm_mm=float(postfilter_fwhm_mm),
                            scatter_fraction=scatter_fraction, **protocol_options)
    report = progress or (lambda fraction, stage: None)
    report(0.0, "projecting")
    scan = ScanSimulator(activity, spacing_mm, mu_map, preset.name, protocol, device)
    rng = np.random.default_rng(seed)
    full = scan.acquire(rng)
    acquisitions = [full] + [scan.thin(full, f, rng) for f in fractions]
    report(0.1, "reconstructing")
    images = []
    for index, acquisition in enumerate(acquisitions):
        def step(done: float, index: int = index) -> None:
            report(0.1 + 0.9 * (index + done) / len(acquisitions), "reconstructing")

        images.append(scan.reconstruct(acquisition, step))
    settings = {**scan.settings(), "seed": int(seed), "scatter_fraction": scatter_fraction}
    return SimulationResult(
        full=images[0], low=dict(zip(fractions, images[1:])), mu_map=scan.mu_map,
        counts_full=float(full.counts.sum()), counts_low={f: float(a.counts.sum()) for f, a in zip(fractions, acquisitions[1:])},
        settings=settings, noise_free=scan.noise_free() if noise_free else None,
    )


def simulate_low_count(image: sitk.Image, fraction: float, ct: sitk.Image | None = None,
                       total_counts: float = 3e6, collimator: str = "Tc99m-LEHR", seed: int = 0,
                       **options) -> tuple[sitk.Image, sitk.Image]:
    """Return (low-count, re-reconstructed full-count) versions of a full-count SPECT ``image``.

    The image is taken as the activity; ``ct`` (HU, any grid overlapping it) is resampled onto it for the μ-map,
    otherwise a water body is outlined. Both outputs keep the input's geometry and units, float32. Other
    keyword ``options`` go to :func:`simulate_pair` (iterations, subsets, angles, scatter, ...).
    """
    fraction = check_fraction(fraction)
    preset = get_collimator(collimator)
    image = check_volume(image, "The input")
    activity = image_to_array(image)
    check_finite(activity, "The input")
    spacing = tuple(reversed(image.GetSpacing()))
    mu_map = None
    if ct is not None:
        ct_array = image_to_array(resample_to_reference(check_volume(ct, "The CT"), image, default_value=-1000.0))
        mu_map = hu_to_mu(ct_array, preset)
    result = simulate_pair(activity, spacing, mu_map, fractions=(fraction,), total_counts=total_counts,
                           collimator=preset.name, seed=seed, **options)
    return array_to_image(result.low[fraction], image), array_to_image(result.full, image)


def simulate_low_count_projections(path: str, fraction: float, ct: sitk.Image | None = None,
                                   collimator: str = "Tc99m-LEHR", seed: int = 0, energy_window: int | None = None,
                                   iterations: int = 4, subsets: int = 8,
                                   progress: Callable[[float, str], None] | None = None) -> tuple[sitk.Image, sitk.Image]:
    """Return (low-count, full-count) reconstructions of the measured projections in a DICOM NM TOMO file.

    The measured counts are thinned binomially to ``fraction`` and both data sets are reconstructed with the same
    OSEM settings (see :func:`SPECTDenoiseLib.projections.thin_and_reconstruct`); ``ct`` (HU) is resampled onto
    the reconstruction grid for the μ-map, otherwise a water body is outlined. Units: counts per voxel of the
    full acquisition (the low image is divided by F). ``progress(fraction, stage)`` is called as work proceeds.
    """
    from .projections import projection_geometry, read_nm_projections, thin_and_reconstruct

    fraction = check_fraction(fraction)
    preset = get_collimator(collimator)
    projections = read_nm_projections(path, energy_window)
    mu_map = None
    if ct is not None:
        grid = projection_geometry(projections)
        ct_array = image_to_array(resample_to_reference(check_volume(ct, "The CT"), grid, default_value=-1000.0))
        mu_map = hu_to_mu(ct_array, preset)
    full, low, _ = thin_and_reconstruct(projections, (fraction,), preset.name, iterations, subsets, seed, mu_map,
                                        progress=progress)
    return low[fraction], full
