"""Benchmark cases: which phantoms, which scan protocols, which seeds, and their repeated noise draws.

Seeds (a dataset case seed is run seed × 1 000 000 + case index, see :mod:`SPECTDenoiseLib.dataset`):

* Training: the shipped models trained on the run seeds their model cards' data lines name (``spectdenoise
  dataset ... --seed N``; ``report.shipped_data_run_seeds`` reads them for BENCHMARKS.md's Seeds section;
  ``benchmarks/training/*.json`` holds the settings). The weights the default model and ``spect-unet3d`` started
  from were trained on the data sets ``train_a`` (``--seed 1``: case seeds 1 000 000 … 1 000 054) and ``train_b``
  (``--seed 2``: 2 000 000 … 2 000 056) (:data:`STARTING_WEIGHTS_SEEDS`). The training loop holds out the last
  cases of each list for its own validation loss.
* Validation (model selection, e.g. choosing a fine-tuning stage or a checkpoint): run seed 8, case seeds
  8 000 000 + i (``quality.py --validation``). Use these, never the benchmark cases, to choose between models.
* Benchmark: run seed 9, case seeds 9 000 000 + i (in-distribution) and 9 001 000 + j (named protocol variants).
* Seeds 900 001 … 900 006 (the benchmark before issue 10) were used to select the default model's fine-tuning
  and are used by neither set.

In-distribution cases take their family, collimator, voxel size, phantom variation and scan protocol from
:func:`SPECTDenoiseLib.dataset.case_settings` with the benchmark run seed: the training generator itself, only
the seed differs. IEC cases keep the plain phantom (no texture, no added lesions, as a real IEC phantom), so
every sphere is measurable. Out-of-distribution cases (:data:`OOD_VARIANTS`) change one setting of a plain
protocol (OSEM with resolution recovery, 4 × 8, 120 views over 360°, no scatter), or of the phantom (its
background almost emptied), to a value the training data did not use, and say how. Noise draw d of a case
uses ``numpy.random.default_rng([case seed, d])``: one Poisson full-count acquisition, thinned binomially to
each count fraction (the training data's pairing).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from SPECTDenoiseLib.dataset import SEED_STRIDE, case_settings
from SPECTDenoiseLib.dataset import case_phantom as dataset_case_phantom
from SPECTDenoiseLib.phantoms import Phantom, make_phantom
from SPECTDenoiseLib.simulate import ScanProtocol, ScanSimulator
from SPECTDenoiseLib.train.data import lesion_labels

from draw_cache import DrawCache
from stats import interior, region_kind

STARTING_WEIGHTS_SEEDS = {"train_a": (1 * SEED_STRIDE, 1 * SEED_STRIDE + 54),
                          "train_b": (2 * SEED_STRIDE, 2 * SEED_STRIDE + 56)}
"""Case seed ranges of the data sets the starting weights of the default model and ``spect-unet3d`` trained on."""
VALIDATION_RUN_SEED = 8
BENCHMARK_RUN_SEED = 9
OOD_SEED_OFFSET = 1000
RETIRED_SEEDS = tuple(range(900001, 900007))
BACKGROUND_LABELS = ("background", "soft_tissue", "brain", "body")
MIN_REGION_VOXELS = 8


@dataclass(frozen=True)
class Case:
    """One benchmark case: a phantom, a protocol, the simulator that scans it, how it is out of distribution."""

    name: str
    family: str
    seed: int
    collimator: str
    voxel_mm: float
    protocol: ScanProtocol
    texture: float = 0.0
    extra_lesions: int = 0
    ood: str | None = None
    simulator: str = "ours"
    background_scale: float = 1.0

    def record(self) -> dict:
        """JSON-ready description."""
        return {**dataclasses.asdict(self), "protocol": dataclasses.asdict(self.protocol)}


def relative_cost(case: Case) -> float:
    """Reconstruction work of a case (voxels × iterations × views) relative to the plain 4 mm IEC protocol."""
    voxels = np.prod(make_phantom(case.family, seed=case.seed, voxel_mm=case.voxel_mm).activity.shape)
    iterations = 1 if case.protocol.reconstruction == "fbp" else case.protocol.iterations
    return float(voxels * iterations * case.protocol.angles / (56 * 96 * 96 * 4 * 120))


def in_distribution_cases(quota: dict[str, int], run_seed: int = BENCHMARK_RUN_SEED,
                          max_cost: float = float("inf")) -> list[Case]:
    """The first cases of each family ({family: count}) in the training generator's sequence for ``run_seed``,
    skipping those whose :func:`relative_cost` exceeds ``max_cost``."""
    remaining, cases, index = dict(quota), [], 0
    while any(remaining.values()):
        settings = case_settings(index, seed=run_seed)
        index += 1
        family = settings["family"]
        if remaining.get(family, 0) <= 0:
            continue
        plain = family == "iec"
        case = Case(f"{family}-{settings['seed']}", family, settings["seed"], settings["collimator"],
                    settings["voxel_mm"], ScanProtocol(**settings["protocol"]),
                    0.0 if plain else settings["texture"], 0 if plain else settings["extra_lesions"])
        if relative_cost(case) <= max_cost:
            remaining[family] -= 1
            cases.append(case)
    return cases


@dataclass(frozen=True)
class Variant:
    """A named protocol variant: base family, protocol changes, collimator/voxel overrides, the factor on the
    phantom's background activity, what is unusual."""

    name: str
    family: str
    changes: dict = field(default_factory=dict)
    collimator: str | None = None
    voxel_mm: float | None = None
    simulator: str = "ours"
    background_scale: float = 1.0
    note: str = ""


OOD_VARIANTS = (
    Variant("osem-no-rr", "iec", {"reconstruction": "osem"},
            note="OSEM without resolution recovery (training v1 never; v2 in 20 % of cases)"),
    Variant("fbp-butterworth-0.25", "iec", {"reconstruction": "fbp", "butterworth_cutoff": 0.25},
            note="FBP, Butterworth cutoff 0.25 Nyquist, order 5 (v1 never; v2 FBP only with cutoffs 0.3–0.8)"),
    Variant("osem-30x8", "iec", {"iterations": 30, "subsets": 8},
            note="30 iterations × 8 subsets (v1 ≤ 6 iterations; v2 ≤ 16)"),
    Variant("postfilter-16mm", "iec", {"postfilter_fwhm_mm": 16.0},
            note="16 mm Gaussian post-filter (v1 ≤ 10 mm; v2 ≤ 12 mm)"),
    Variant("window-scatter", "torso", {"scatter_fraction": 0.35, "scatter_correction": "window"},
            note="35 % scatter corrected from a noisy window estimate (v1 only exact correction; v2 in range)"),
    Variant("cardiac-180", "cardiac", {"arc_deg": 180.0, "start_deg": 315.0, "angles": 60},
            note="180° cardiac orbit, 60 views (v1 only 360°; v2 in half its cardiac cases)"),
    Variant("voxel-2mm", "iec", voxel_mm=2.0, note="IEC at 2 mm voxels (v1 IEC 3.3–5 mm; v2 3–6.8 mm)"),
    Variant("voxel-6.8mm", "iec", voxel_mm=6.8, note="IEC at 6.8 mm voxels (v1 ≤ 5 mm; v2 edge of its range)"),
    Variant("i123-penetration", "iec", {"penetration_fraction": 0.25}, collimator="I123-LEHR",
            note="I-123 LEHR with a 25 % septal-penetration tail the reconstruction ignores (v1 none; v2 ≤ 15 %)"),
    Variant("lu177-penetration", "torso", {"penetration_fraction": 0.25}, collimator="Lu177-MEGP",
            note="Lu-177 MEGP with a 25 % penetration tail the reconstruction ignores (v1 none; v2 ≤ 15 %)"),
    Variant("pytomography", "iec", simulator="pytomography",
            note="projected and reconstructed by PyTomography (independent simulator), plain protocol"),
    Variant("cold-background", "iec", background_scale=0.01,
            note="hot spheres in an almost empty background (vendor sphere-phantom scans); training v2 never; v3 "
                 "in a third of its IEC cases"),
)
"""Variant j has case seed run seed × 1 000 000 + 1000 + j: new variants go at the end, so the others keep
theirs."""


def ood_cases(names: tuple[str, ...] | None = None, run_seed: int = BENCHMARK_RUN_SEED) -> list[Case]:
    """The protocol-variant cases (all of :data:`OOD_VARIANTS`, or those in ``names``)."""
    cases = []
    for index, variant in enumerate(OOD_VARIANTS):
        if names is not None and variant.name not in names:
            continue
        seed = run_seed * SEED_STRIDE + OOD_SEED_OFFSET + index
        phantom = make_phantom(variant.family, seed=seed)
        protocol = dataclasses.replace(ScanProtocol(total_counts=phantom.total_counts), **variant.changes)
        cases.append(Case(f"ood-{variant.name}", variant.family, seed, variant.collimator or phantom.collimator,
                          variant.voxel_mm or phantom.spacing_mm[2], protocol, ood=variant.note,
                          simulator=variant.simulator, background_scale=variant.background_scale))
    return cases


def case_phantom(case: Case) -> Phantom:
    """The case's phantom with its variation and background scale, μ-map at its collimator's photopeak (as the
    dataset generator)."""
    return dataset_case_phantom(case.family, case.seed, case.voxel_mm, case.collimator, case.extra_lesions,
                                case.texture, np.random.default_rng(case.seed), case.background_scale)


def lesion_regions(phantom: Phantom) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """(masks, info) of the lesion-like labels with ≥ 8 voxels; info: kind, diameter_mm, voxels, truth_mean."""
    _, background = background_region(phantom)
    true_background = float(phantom.activity[background].mean())
    masks, info = {}, {}
    for value in lesion_labels(phantom.label_names):
        name = phantom.label_names[value]
        mask = phantom.labels == value
        if mask.sum() < MIN_REGION_VOXELS:
            continue
        truth = float(phantom.activity[mask].mean())
        kind, diameter = region_kind(name, truth, true_background)
        masks[name] = mask
        info[name] = {"kind": kind, "diameter_mm": diameter, "voxels": int(mask.sum()), "truth_mean": truth}
    return masks, info


def background_region(phantom: Phantom) -> tuple[str, np.ndarray]:
    """(name, mask) of the phantom's background tissue, eroded 2 voxels away from its edges and the lesions."""
    by_name = {name: value for value, name in phantom.label_names.items()}
    name = next(n for n in BACKGROUND_LABELS if n in by_name)
    return name, interior(phantom.labels == by_name[name])


class CaseScans:
    """Noise-free reconstruction and repeated noise draws of one case (a draw: {fraction: image}, 1.0 included);
    ``extra`` asks for one more draw (index ``draws``) for noise spectra. With a ``cache`` (``draw_cache``),
    images simulated before are read from it and new ones written to it; the simulator is set up only when an
    image is missing."""

    def __init__(self, case: Case, phantom: Phantom, fractions: tuple[float, ...], draws: int,
                 extra: bool = False, cache: DrawCache | None = None) -> None:
        self.case, self.phantom, self.fractions, self.draws = case, phantom, tuple(fractions), int(draws)
        self.cache, self._images, self._scanner = cache, None, None
        total = self.draws + int(extra)
        cached = cache.load_noise_free() if cache is not None else None
        if cached is not None and (case.simulator != "pytomography"
                                   or all(cache.has_draw(d) for d in range(total))):
            self.noise_free, self.settings = cached
            return
        if case.simulator == "pytomography":  # simulates every draw at once
            from independent_simulator import simulate_independent

            protocol = case.protocol
            result = simulate_independent(phantom, self.fractions, total, case.seed,
                                          iterations=protocol.iterations, subsets=protocol.subsets,
                                          angles=protocol.angles)
            self.noise_free, self.settings = result["noise_free"], result["settings"]
            self._images = [{1.0: full, **{f: result["low"][f][d] for f in self.fractions}}
                            for d, full in enumerate(result["full"])]
            if cache is not None:
                for index, images in enumerate(self._images):
                    cache.save_draw(index, images)
        else:
            self.noise_free, self.settings = self.scanner.noise_free(), self.scanner.settings()
        if cache is not None:
            cache.save_noise_free(self.noise_free, self.settings)

    @property
    def scanner(self) -> ScanSimulator:
        """The case's simulator (our projector), set up on first use."""
        if self._scanner is None:
            phantom = self.phantom
            self._scanner = ScanSimulator(phantom.activity, phantom.spacing_mm, phantom.mu_map,
                                          self.case.collimator, self.case.protocol)
        return self._scanner

    def draw(self, index: int) -> dict[float, np.ndarray]:
        """Noise draw ``index`` (0 … draws − 1; index ``draws`` is the extra draw for noise spectra)."""
        if self._images is not None:
            return self._images[index]
        if self.cache is not None and (cached := self.cache.load_draw(index)) is not None:
            return cached
        rng = np.random.default_rng([self.case.seed, index])
        full = self.scanner.acquire(rng, 1.0)
        images = {1.0: self.scanner.reconstruct(full)}
        for fraction in self.fractions:
            images[fraction] = self.scanner.reconstruct(self.scanner.thin(full, fraction, rng))
        if self.cache is not None:
            self.cache.save_draw(index, images)
        return images
