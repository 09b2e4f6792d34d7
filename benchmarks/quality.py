"""Quality benchmark: models and oracle-tuned classical filters on repeated noise draws of simulated scans.

For every case (see ``cases.py`` for the phantoms, protocols and seeds) the simulator gives the noise-free
reconstruction (expected projections, same reconstruction) and ``draws`` independent full-count acquisitions,
each thinned to the count fractions. Every method denoises every low-count draw; we record, per draw:

* NRMSE, PSNR, SSIM in the body (CT > −500 HU) against the noise-free reconstruction (the main reference) and
  against the same draw's full-count reconstruction (the reference of earlier benchmarks and of the papers);
* the body total (sum of the voxel values in the same body mask; every image of a case has the same voxels, so
  this is the total activity up to one factor), also of the noise-free reconstruction, for issue 14's target
  "body-total counts no further from the full-count total than the input's";
* mean and max of every lesion region (spheres, lesions, striata, defects, tumours) and the background's
  mean and CoV, from which ``report.py`` derives bias and SD against the noise-free values, recovery against
  the phantom's truth and confidence intervals;
* for classical filters the tuned parameter and whether it was interior to the values tried; for diffusion
  models how well the sample variance describes the error (coverage, reliability curve, error ranking against
  the intensity baseline: ``stats.uncertainty_agreement``).

Per method and count level, the ensemble noise over draws (voxel SD ÷ mean in the background) is recorded too;
the first draw of each in-distribution case also runs the robustness probes (``probes.py``) for every model.
**Standard-count lesion preservation** (issue 14: denoising must not remove a lesion from a standard-count scan
either): on the first draw of every case each model also denoises the full-count reconstruction, and the record
keeps, per hot lesion region, the denoised mean ÷ the full-count scan's own mean (target: within ±5 %).
Probes and standard-count runs need only the denoised image, so a diffusion model runs them without sampling (its
image does not depend on the samples, which make only its variance map).

Models are named by catalogue id, folder or ``NAME=FOLDER``; ``SPEC:bare`` runs the same network without the
uptake guard (``denoise(..., uptake_guard=False)``) under the name ``NAME (bare)``, and the modes run the default
model bare beside the shipped ones, so every table shows what the guard changes.

Modes (the count of cases × draws for each table is written next to every number in BENCHMARKS.md):

* ``--quick``: 2 in-distribution cases (the first IEC and torso of the benchmark sequence whose reconstruction
  costs at most 1.5 × a plain 4 mm IEC scan) × 10 draws at 10 % counts, 5 protocol variants × 3 draws, Gaussian
  and TV, the catalogue's default model with and without its uptake guard; within 15 minutes with ``--jobs 2``
  on 2 cores (BENCHMARKS.md quotes the timed run, ``--timing-file``). A diffusion model named with ``--models``
  runs on the first 2 draws of the in-distribution cases and the first draw of the variants, without probes (a
  few minutes more for a model that takes 1–2 min per 128³ volume); name the default model too (``--models
  spect-unet25d spect-unet25d:bare ID``) to keep it in the tables.
* full (default): 8 in-distribution cases × 10 draws at 10, 14, 25 and 50 % counts, all 12 protocol variants ×
  10 draws at 10 %, all four classical filters (NLM and BM4D on the first 3 draws at 10 %), every shipped model
  and the default model bare (diffusion models on the first 3 draws at 10 %); hours, best in the background.
* ``--validation``: the full mode's in-distribution design on the validation seeds (model selection only).

Each case's result is written as soon as it is done (``benchmarks/results/<mode>/<case>.json``, atomically); a
rerun skips cases whose file holds the same configuration, so a killed run resumes and partial runs are usable;
within a case, each finished draw is checkpointed (``checkpoint.py``) and a killed case resumes after its last one.
Simulated scans are cached on disk (``draw_cache.py``, ``<results>/.draws``, git-ignored), so a run that only
re-runs models reads them instead of simulating again.
The configuration includes :data:`RECORD_VERSION`, raised whenever a record gains a field, so files written
before that are run again. When only models changed (new weights, another uptake guard, a model added or
dropped), a rerun keeps the rows of everything that did not change — input, full count, classical filters,
unchanged models — and runs only the changed models on the same draws (the simulator is deterministic per seed),
so retraining one model costs that model's time, not the whole benchmark's. ``--rerun NAME ...`` runs named
methods again although their configuration is unchanged (after a change to inference code that keeps the
weights, which the fingerprint cannot see).

Usage::

    python benchmarks/quality.py --quick --jobs 2 [--models ID|FOLDER|NAME=FOLDER[:bare] ...]
    nice -n 10 python benchmarks/quality.py --jobs 2   # full mode
    nice -n 10 python benchmarks/quality.py --jobs 2 --rerun spect-unet3d   # one model again, rows of others kept
    python benchmarks/report.py                         # BENCHMARKS.md and plots from all result files
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import SLOW, run_baselines  # noqa: E402
from cases import (  # noqa: E402
    BENCHMARK_RUN_SEED,
    VALIDATION_RUN_SEED,
    Case,
    CaseScans,
    background_region,
    case_phantom,
    in_distribution_cases,
    lesion_regions,
    ood_cases,
    relative_cost,
)
from checkpoint import checkpoint_path, discard_checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from draw_cache import CACHE_FOLDER, DrawCache  # noqa: E402
from methods import ModelUnderTest, load_models, variance_scale  # noqa: E402
from probes import PROBES_VERSION, mean_shifts, run_probes  # noqa: E402
from run_timing import RunTiming  # noqa: E402
from stats import VoxelEnsemble, ct_body, region_values, spatial_cov, uncertainty_agreement  # noqa: E402

from SPECTDenoiseLib.io import atomic_output  # noqa: E402
from SPECTDenoiseLib.metrics import image_quality  # noqa: E402
from SPECTDenoiseLib.uptake_guard import guard_settings  # noqa: E402

RESULTS = REPOSITORY / "benchmarks" / "results"
PROBE_FRACTION = 0.1
FULL_COUNT = "full-count"
RECORD_VERSION = 2
"""Version of the per-case record; part of the configuration (2: body totals)."""


@dataclass(frozen=True)
class Mode:
    """What one benchmark mode runs."""

    quota: dict[str, int]
    ood: tuple[str, ...] | None
    fractions: tuple[float, ...]
    draws: int
    ood_draws: int
    baselines: tuple[str, ...]
    slow_draws: int = 0
    diffusion_draws: int = 3
    ood_diffusion_draws: int = 3
    diffusion_probes: bool = True
    default_only: bool = False
    run_seed: int = BENCHMARK_RUN_SEED
    ood_fractions: tuple[float, ...] = (0.1,)
    slow_fractions: tuple[float, ...] = (0.1,)
    max_cost: float = float("inf")


MODES = {
    "quick": Mode({"iec": 1, "torso": 1},
                  ("osem-no-rr", "fbp-butterworth-0.25", "window-scatter", "pytomography", "cold-background"),
                  (0.1,), draws=10, ood_draws=3, baselines=("gaussian", "tv"), diffusion_draws=2,
                  ood_diffusion_draws=1, diffusion_probes=False, default_only=True, max_cost=1.5),
    "full": Mode({"iec": 3, "torso": 2, "brain": 1, "cardiac": 1, "mouse": 1}, None, (0.1, 1 / 7, 0.25, 0.5),
                 draws=10, ood_draws=10, baselines=("gaussian", "tv", "nlm", "bm4d"), slow_draws=3),
    "validation": Mode({"iec": 2, "torso": 2, "brain": 1, "cardiac": 1, "mouse": 1}, (), (0.1, 0.25), draws=10,
                       ood_draws=0, baselines=("gaussian", "tv"), run_seed=VALIDATION_RUN_SEED),
}


def fraction_key(fraction: float) -> str:
    """Result key of a count fraction: 0.1 → "0.1", 1/7 → "0.1429", 1.0 → "1"."""
    return f"{fraction:.4g}"


def model_fingerprint(model) -> str:
    """First 12 hex digits of the sha256 of the model's weights (identifies the model in result files)."""
    return hashlib.sha256((Path(model.folder) / "model.safetensors").read_bytes()).hexdigest()[:12]


def tested_fingerprint(tested: ModelUnderTest) -> str:
    """:func:`model_fingerprint`, followed by " bare" when the model runs without its uptake guard."""
    return model_fingerprint(tested.model) + ("" if tested.uptake_guard else " bare")


def standard_count_ratios(tested: ModelUnderTest, full: np.ndarray, ct: np.ndarray,
                          spacing: tuple[float, float, float], regions: dict[str, np.ndarray]) -> dict[str, float]:
    """{region: mean of the denoised full-count scan ÷ the full-count scan's own mean} (lesion preservation on a
    standard-count scan)."""
    shifts = mean_shifts(full, tested.image(full, ct, spacing), regions)
    return {name: 1 + shift / 100 for name, shift in shifts.items()}


def body_total(image: np.ndarray, body: np.ndarray) -> float:
    """Sum of ``image`` over the ``body`` mask (float64), in image units × voxels."""
    return float(image[body].sum(dtype=np.float64))


def draw_entry(output: np.ndarray, noise_free: np.ndarray, full: np.ndarray | None, body: np.ndarray,
               regions: dict[str, np.ndarray], background: np.ndarray) -> dict:
    """Everything recorded for one method's output on one draw."""
    entry = {"vs_noise_free": image_quality(output, noise_free, body), "body_total": body_total(output, body)}
    if full is not None:
        entry["vs_full"] = image_quality(output, full, body)
    entry["regions"] = region_values(output, regions)
    entry["background"] = [float(output[background].mean()), spatial_cov(output, background)]
    return entry


def run_case(case: Case, mode: Mode, models: dict, config: dict, probes: bool, kept: dict | None = None,
             checkpoint: Path | None = None, cache_folder: Path | None = None) -> dict:
    """Simulate one case, run every method on every draw; return the case's result record.

    ``kept`` (from :func:`kept_rows`) holds rows of an earlier run of this case that still hold: those methods
    are not run again and their rows, probes, standard-count ratios and run timings (``earlier_runs``) are copied
    into the record; a model whose probes were not kept runs them again (on the first draw, which alone is
    simulated when nothing else runs).

    With a ``checkpoint`` path, what the finished draws gathered is saved there after each draw, and a checkpoint
    left there by a killed run of the same case under the same identity is resumed after its last draw
    (``checkpoint.py``); the caller removes it once the record is written. With a ``cache_folder``, simulated
    scans are read from and written to a ``draw_cache.DrawCache`` there.
    """
    kept = kept or nothing_kept()
    clock = RunTiming(torch.get_num_threads())
    phantom = case_phantom(case)
    regions, info = lesion_regions(phantom)
    background_name, background = background_region(phantom)
    body = ct_body(phantom.ct)
    spacing = phantom.spacing_mm
    fractions = mode.ood_fractions if case.ood else mode.fractions
    draws = mode.ood_draws if case.ood else mode.draws
    slow = tuple(name for name in mode.baselines if name in SLOW)
    extra_draw = bool(slow and mode.slow_draws)
    cache = DrawCache(cache_folder, case.record(), fractions) if cache_folder is not None else None
    scans = CaseScans(case, phantom, fractions, draws, extra_draw, cache)
    noise_free = scans.noise_free
    for name, values in region_values(noise_free, regions).items():
        info[name]["noise_free"] = values
    record = {
        "case": case.record(), "config": config, "simulation": scans.settings,
        "shape": list(phantom.activity.shape), "spacing_mm": list(spacing),
        "fractions": [fraction_key(f) for f in fractions], "draws": draws, "regions": info,
        "body": {"voxels": int(body.sum()), "noise_free_total": body_total(noise_free, body)},
        "background": {"name": background_name, "voxels": int(background.sum()),
                       "truth_mean": float(phantom.activity[background].mean()),
                       "noise_free": [float(noise_free[background].mean()), spatial_cov(noise_free, background)]},
        "methods": defaultdict(lambda: defaultdict(lambda: {"draws": []})), "probes": dict(kept["probes"]),
        "standard_count": dict(kept["standard_count"]), "kept_from_earlier_run": sorted(kept["methods"]),
        "earlier_runs": kept["runs"],
    }
    record["methods"].update(kept["methods"])
    hot = {name: mask for name, mask in regions.items() if not info[name]["kind"].startswith("cold")}
    probe_fraction = next((f for f in fractions if abs(f - PROBE_FRACTION) < 1e-6), None)
    probed = {name: tested for name, tested in models.items()
              if probes and not case.ood and hot and probe_fraction is not None and name not in record["probes"]
              and (mode.diffusion_probes or tested.model.config.kind != "diffusion")}
    models = {name: tested for name, tested in models.items() if name not in kept["methods"]}
    ensembles: dict[tuple[str, str], VoxelEnsemble] = defaultdict(VoxelEnsemble)  # background voxels only
    extra = scans.draw(draws) if extra_draw and "bm4d" not in kept["methods"] else None
    diffusion_draws = mode.ood_diffusion_draws if case.ood else mode.diffusion_draws
    # the draws anything still to run needs (a diffusion model alone: its few; probes alone: the first)
    needed = [1] + [draws for name in (FULL_COUNT, "input") if name not in kept["methods"]]
    needed += [mode.slow_draws if name in SLOW else draws
               for name in mode.baselines if name not in kept["methods"]]
    needed += [diffusion_draws if tested.model.config.kind == "diffusion" else draws for tested in models.values()]

    def add(method: str, key: str, output: np.ndarray, full: np.ndarray | None, details: dict) -> None:
        if method in kept["methods"]:
            return
        entry = draw_entry(output, noise_free, full, body, regions, background)
        record["methods"][method][key]["draws"].append({"draw": draw, **entry, **details})
        ensembles[(method, key)].add(output[background])

    identity = {"config": config, "case": case.record(), "kept": sorted(kept["methods"]),
                "models": sorted(models), "probed": sorted(probed), "draws": draws}
    earlier_time = {"wall_s": 0.0, "cpu_s": 0.0, "load_before": [round(x, 2) for x in clock.load_before],
                    "resumed_after_draws": []}
    first_draw = 0
    if checkpoint is not None and (resumed := load_checkpoint(checkpoint, identity)):
        state, saved_ensembles = resumed
        first_draw = state["draws_done"]
        ensembles.update(saved_ensembles)
        for method, rows in state["methods"].items():
            for key, row in rows.items():
                record["methods"][method][key].update(row)
        for name in ("probes", "standard_count"):
            record[name].update(state[name])
        earlier_time = state["time"]
        earlier_time["resumed_after_draws"].append(first_draw)
        print(f"  {case.name}: resumed after draw {first_draw} of {draws}", flush=True)

    def elapsed() -> dict:
        """Wall and CPU time of this case so far, added to those of the runs it resumes."""
        now = clock.elapsed()
        return {**earlier_time, **{key: round(earlier_time[key] + now[key], 1) for key in now}}

    for draw in range(first_draw, min(max(needed), draws)):
        images = scans.draw(draw)
        full = images[1.0]
        add(FULL_COUNT, fraction_key(1.0), full, None, {})
        if draw == 0 and hot:
            record["standard_count"].update({name: standard_count_ratios(tested, full, phantom.ct, spacing, hot)
                                             for name, tested in models.items()})
        for fraction in fractions:
            key, low = fraction_key(fraction), images[fraction]
            add("input", key, low, full, {})
            slow_level = any(abs(fraction - f) < 1e-6 for f in mode.slow_fractions)
            names = tuple(n for n in mode.baselines if n not in kept["methods"]
                          and (n not in SLOW or (draw < mode.slow_draws and slow_level)))
            psd_noise = (extra[fraction], noise_free) if extra is not None and fraction in extra else None
            for name, (output, tuning) in run_baselines(low, noise_free, body, spacing, names, psd_noise).items():
                add(name, key, output, full, {"parameter": tuning.parameter, "interior": tuning.interior,
                                              "tried": tuning.tried})
            for model_name, tested in models.items():
                diffusion = tested.model.config.kind == "diffusion"
                if diffusion and (draw >= diffusion_draws or not slow_level):
                    continue
                t0 = time.perf_counter()
                denoised, variance = tested.run(low, phantom.ct, spacing, seed=draw)
                details = {"seconds": round(time.perf_counter() - t0, 2)}
                if variance is not None:
                    details.update(uncertainty_agreement(variance, denoised, noise_free, body))
                add(model_name, key, denoised, full, details)
        if draw == 0:
            for model_name, tested in probed.items():
                record["probes"][model_name] = run_probes(
                    lambda spect, ct, tested=tested: tested.image(spect, ct, spacing),
                    images[probe_fraction], phantom.ct, body, hot, spacing)
        if checkpoint is not None:
            gathered = {method: rows for method, rows in record["methods"].items()
                        if method not in kept["methods"]}
            save_checkpoint(checkpoint, identity,
                            {"draws_done": draw + 1, "methods": gathered, "probes": record["probes"],
                             "standard_count": record["standard_count"], "time": elapsed()}, ensembles)
        print(f"  {case.name} draw {draw + 1}/{draws} done ({clock.elapsed()['wall_s']:.0f} s)", flush=True)
    for (method, key), ensemble in ensembles.items():
        noise = ensemble.noise_pct()  # NaN for a single draw: stored as null (strict JSON)
        record["methods"][method][key]["ensemble_noise_pct"] = noise if np.isfinite(noise) else None
    record["timing"] = {**clock.finish(), **elapsed()}  # the load before the first of its runs
    if not record["timing"]["resumed_after_draws"]:
        del record["timing"]["resumed_after_draws"]
    record["methods"] = json.loads(json.dumps(record["methods"]))
    return record


def run_config(mode_name: str, mode: Mode, models: dict[str, ModelUnderTest], probes: bool) -> dict:
    """The configuration stored in every record of a run (as JSON gives it back): record version, mode, model
    fingerprints, the uptake guard's constants, diffusion variance scales (and, in runs with a diffusion model,
    their variance pooling), whether probes run and their version."""
    config = {"mode": mode_name, "record_version": RECORD_VERSION, **dataclasses.asdict(mode),
              "models": {name: tested_fingerprint(tested) for name, tested in models.items()},
              "uptake_guard": guard_settings(),
              "variance_scales": {name: variance_scale(tested.model) for name, tested in models.items()
                                  if tested.model.config.kind == "diffusion"},
              "probes": probes, "probes_version": PROBES_VERSION if probes else None}
    if config["variance_scales"]:  # only runs with a diffusion model: the others' identities stay as they were
        config["variance_pooling"] = {name: tested.model.config.diffusion_setting("variance_pooling_voxels")
                                      for name, tested in models.items()
                                      if tested.model.config.kind == "diffusion"}
    return json.loads(json.dumps(config))


def done_earlier(path: Path, config: dict) -> bool:
    """Whether the record at ``path`` exists and was made with ``config`` (so the case need not run again)."""
    return path.exists() and json.loads(path.read_text()).get("config") == config


MODEL_SETTINGS = ("models", "uptake_guard", "variance_scales", "variance_pooling")
"""Configuration keys that concern only the models: when nothing else differs, an earlier record's other rows
hold."""
PROBE_SETTINGS = ("probes_version",)
"""Configuration keys that concern only the robustness probes: when they differ, rows are kept, probes re-run."""


def nothing_kept() -> dict:
    """What :func:`kept_rows` returns when no earlier row holds (and :func:`run_case` assumes without one)."""
    return {"methods": {}, "probes": {}, "standard_count": {}, "runs": []}


def kept_rows(earlier: dict, config: dict, rerun: set[str] = frozenset()) -> dict:
    """The rows of ``earlier`` (a record of the same case) that a run with ``config`` would reproduce.

    Nothing is kept unless the configurations agree on everything but :data:`MODEL_SETTINGS` and
    :data:`PROBE_SETTINGS`. Then the input, the full count and the classical filters are kept, and every model
    of ``config`` whose fingerprint is the earlier one's, whose uptake guard constants (unless it runs bare) and
    diffusion variance scale and pooling are too, and whose rows the record holds; their probes only when the
    probe settings agree too. Methods named in ``rerun`` are never kept. Returns {"methods", "probes",
    "standard_count"} for :func:`run_case`.
    """
    old = earlier.get("config", {})
    ignored = MODEL_SETTINGS + PROBE_SETTINGS
    if {k: v for k, v in old.items() if k not in ignored} != {k: v for k, v in config.items() if k not in ignored}:
        return nothing_kept()
    same_probes = all(old.get(key) == config.get(key) for key in PROBE_SETTINGS)
    models, old_models = config.get("models", {}), old.get("models", {})

    def unchanged(name: str) -> bool:
        fingerprint = models[name]
        return (old_models.get(name) == fingerprint
                and (fingerprint.endswith(" bare") or old.get("uptake_guard") == config.get("uptake_guard"))
                and all(old.get(key, {}).get(name) == config.get(key, {}).get(name)
                        for key in ("variance_scales", "variance_pooling")))

    names = {name for name in earlier.get("methods", {}) if name not in old_models}
    names |= {name for name in models if unchanged(name)}
    names = {name for name in names if name in earlier.get("methods", {}) and name not in rerun}
    return {"methods": {name: earlier["methods"][name] for name in names},
            "runs": [*earlier.get("earlier_runs", []), earlier["timing"]] if names else [],
            "probes": {name: value for name, value in earlier.get("probes", {}).items()
                       if name in names and same_probes},
            "standard_count": {name: value for name, value in earlier.get("standard_count", {}).items()
                               if name in names}}


def refreshed(earlier: dict, kept: dict, config: dict, mode: Mode, probes: bool) -> dict | None:
    """``earlier`` under ``config`` when a run would only copy it: every method of the run is among the ``kept``
    rows and no probes are due (a protocol variant, or probes off); else None."""
    due = {FULL_COUNT, "input", *mode.baselines, *config.get("models", {})}
    if not due <= set(kept["methods"]) or (probes and not earlier["case"].get("ood")):
        return None
    return {**earlier, "config": config, "methods": kept["methods"], "probes": kept["probes"],
            "standard_count": kept["standard_count"], "kept_from_earlier_run": sorted(kept["methods"])}


def select_cases(mode: Mode, names: list[str] | None) -> list[Case]:
    """The mode's cases, optionally only those named: in-distribution first, cheapest first (so that a partial
    run holds as many cases as possible)."""
    cases = sorted(in_distribution_cases(mode.quota, mode.run_seed, mode.max_cost), key=relative_cost)
    if mode.ood != ():
        cases += ood_cases(mode.ood, mode.run_seed)
    return [case for case in cases if names is None or case.name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true",
                       help="the development check (within 15 min on 2 cores with --jobs 2; timed in "
                            "BENCHMARKS.md)")
    group.add_argument("--validation", action="store_true", help="validation seeds, for model selection only")
    parser.add_argument("--models", nargs="*", help="catalogue ids, model folders or NAME=FOLDER, each with "
                        "':bare' appended to run it without the uptake guard (default: the default model with "
                        "--quick, else every shipped model; both times also the default model bare)")
    parser.add_argument("--cases", nargs="*", help="only these case names (see the result file names)")
    parser.add_argument("--draws", type=int, help="noise draws per case (overrides the mode's; for trials)")
    parser.add_argument("--no-probes", action="store_true", help="skip the robustness probes")
    parser.add_argument("--rerun", nargs="*", default=[], metavar="NAME",
                        help="methods (models by their table name, filters by name) to run again even where their "
                             "configuration is unchanged, e.g. after an inference-code change")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process (default 1: on a busy machine torch's thread pool spins, "
                             "2 threads ran OSEM 20 times slower than 1 under a load of 14 on 2 cores)")
    parser.add_argument("--jobs", type=int, default=1, help="cases run in parallel processes (default 1)")
    parser.add_argument("--output-dir", help="folder of the per-case JSON files (default results/<mode>)")
    parser.add_argument("--timing-file", help="also write this run's wall and CPU time, jobs, threads and load "
                                              "to this JSON file (e.g. to measure a complete run from scratch)")
    args = parser.parse_args()
    timing = RunTiming(args.threads)
    mode_name = "quick" if args.quick else "validation" if args.validation else "full"
    mode = MODES[mode_name]
    if args.draws:
        mode = dataclasses.replace(mode, draws=args.draws, ood_draws=min(args.draws, mode.ood_draws))
    models = load_models(args.models, default_only=mode.default_only)
    output_dir = Path(args.output_dir or RESULTS / mode_name)
    output_dir.mkdir(parents=True, exist_ok=True)
    config = run_config(mode_name, mode, models, not args.no_probes)
    cases = select_cases(mode, args.cases)
    print(f"{mode_name}: {len(cases)} cases, models {', '.join(models)}; results in {output_dir}", flush=True)
    todo, skipped = [], []
    for case in cases:
        path = output_dir / f"{case.name}.json"
        if done_earlier(path, config) and not args.rerun:
            print(f"{case.name}: done earlier, kept", flush=True)
        elif case.simulator == "pytomography" and not independent_simulator_available(case):
            skipped.append(case.name)
        else:
            earlier = json.loads(path.read_text()) if path.exists() else None
            kept = kept_rows(earlier, config, set(args.rerun)) if earlier else None
            if kept and (record := refreshed(earlier, kept, config, mode, not args.no_probes)):
                with atomic_output(path) as temporary:
                    temporary.write_text(json.dumps(record, indent=1) + "\n")
                print(f"{case.name}: every row kept, configuration brought up to date", flush=True)
                continue
            if kept and kept["methods"]:
                print(f"{case.name}: keeping the earlier rows of {', '.join(sorted(kept['methods']))}", flush=True)
            todo.append((case, kept))
    specs = args.models
    with ProcessPoolExecutor(max_workers=args.jobs, initializer=torch.set_num_threads,
                             initargs=(args.threads,)) as pool:
        futures = {pool.submit(run_and_write, case, mode, specs, config, not args.no_probes,
                               output_dir / f"{case.name}.json", kept): case for case, kept in todo}
        failed = []
        for future, case in futures.items():
            try:
                future.result()
            except Exception as error:  # one failed case must not lose the others; the exit code tells
                print(f"{case.name}: FAILED ({type(error).__name__}: {error})", flush=True)
                failed.append(case.name)
    if args.timing_file:
        ran = [case.name for case, _ in todo]
        write_run_timing(Path(args.timing_file), timing, mode_name, args.jobs, models, ran,
                         [c.name for c in cases if c.name not in ran and c.name not in skipped], skipped, failed)
    if failed:
        sys.exit(f"{len(failed)} case(s) failed: {', '.join(failed)}")


def write_run_timing(path: Path, timing: RunTiming, mode_name: str, jobs: int, models: dict, ran: list[str],
                     kept: list[str], skipped: list[str], failed: list[str]) -> None:
    """Write a run's timing (:class:`RunTiming`: wall, CPU of this process and its pool, threads, load) with its
    command, mode, jobs, models and the cases it ran, kept from earlier runs, skipped (no independent simulator)
    or lost, to ``path`` atomically."""
    record = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "mode": mode_name, "jobs": jobs, "models": list(models), "cases_run": ran, "cases_kept": kept,
              "cases_skipped": skipped, "cases_failed": failed, **timing.finish()}
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(record, indent=1) + "\n")


def independent_simulator_available(case: Case) -> bool:
    """Whether ``benchmarks/independent_simulator.py`` imports (else say that ``case`` is skipped)."""
    try:
        import independent_simulator  # noqa: F401
    except ImportError as error:
        print(f"{case.name}: skipped, the independent simulator cannot be imported ({error})", flush=True)
        return False
    return True


def run_and_write(case: Case, mode: Mode, specs: list[str] | None, config: dict, probes: bool, path: Path,
                  kept: dict | None = None) -> None:
    """Run one case in this process (keeping the ``kept`` rows of an earlier run) and write its record to
    ``path`` atomically."""
    print(f"{case.name}: {case.ood or 'in distribution'}", flush=True)
    checkpoint = checkpoint_path(path.parent, case.name)
    record = run_case(case, mode, load_models(specs, default_only=mode.default_only), config, probes, kept,
                      checkpoint, path.parent / CACHE_FOLDER)
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(record, indent=1) + "\n")
    discard_checkpoint(checkpoint)
    print(f"{case.name}: written in {record['timing']['wall_s']:.0f} s", flush=True)

if __name__ == "__main__":
    main()
