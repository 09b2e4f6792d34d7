"""Fit a diffusion model's variance scale on validation cases and, with ``--write``, store it in its config.

The sample variance of a diffusion model is an estimate of its squared error only up to a scale: few samples, an
imperfect network and errors the samples do not see (the deterministic estimate's own bias) all make it too small
or too large. This script runs the model on the first ``--cases`` in-distribution cases of the **validation**
sequence (run seed 8, case seeds 8 000 000 + i, never the benchmark's: see ``cases.py``; with ``--max-cost``, as
the quick mode, only cases whose reconstruction costs at most that many plain 4 mm IEC scans), ``--draws`` noise
draws each at ``--fraction`` of the counts, and pools (variance, error against the noise-free reconstruction)
over the body voxels (CT > −500 HU). Two scales c (the variance used is c × the model's current output) are fitted:

* ``coverage``: the smallest c that puts 95 % of the voxels within 2 σ (95th percentile of error² ÷ 4·variance);
* ``mse``: mean squared error = c · mean variance (right on average, whatever the shape of the errors).

``--method auto`` (default) takes the coverage fit when its 1 σ coverage lies in 60–75 %, else the MSE fit when
its coverage lies in 60–75 % (1 σ) and 90–98 % (2 σ), else the coverage fit (the MSE fit when over 5 % of the
voxels have zero variance and an error, so that no scale reaches 95 %) with a note that no single scale meets
both targets (the variance map's shape, not only its scale, is off). Both fits and their coverages are reported.
Each draw also records the RMS error and RMS σ in the air around the body (voxels more than 3 from it, which the
fit leaves out), and the result their ranges after the fit: how far the map over-states the error where the truth
is zero.
The coverage fit comes first because 2 σ is the range a reader takes from the map ("the truth lies within ± 2 σ");
the MSE fit is the fallback when the errors' tails make the coverage fit too wide for the 1 σ target.

The stored value is ``diffusion.variance_scale`` = the current scale (1.0 in a freshly trained model) × the
fitted c, since ``denoise`` already applies the current one. It holds for the model's default samples and steps.

Output: ``benchmarks/results/calibration_<model>.json`` with ``--write``, else ``calibration_check_<model>.json``
(a check of the stored scale, e.g. after an inference change, so the fit the scale came from stays): the fit,
n = cases × draws × voxels, case and noise seeds, threads, load, time; and, with ``--write``, the model folder's
``config.json`` (atomically; only for a model folder or a shipped catalogue model, never a Hub download).
Cost: the model's default sampling on cases × draws volumes plus their simulation; 2 × 2 at the default
``--max-cost 1.5`` (a brain and a torso case, about one 128³ volume per draw in all) is a few minutes for a model
that takes 1–2 min per 128³ volume (``--threads 2`` on an idle machine).

Usage::

    nice -n 10 python benchmarks/calibrate_variance.py MODEL [--cases 2] [--draws 2] [--write]

Exit codes as the CLI's (docs/ERRORS.md): 3 bad option, 4 model problem (deterministic model, a config that does
not accept the scale), 7 output problem.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import VALIDATION_RUN_SEED, Case, CaseScans, case_phantom, in_distribution_cases  # noqa: E402
from draw_cache import DrawCache  # noqa: E402
from methods import BARE, load_models, model_name, run_model, variance_scale  # noqa: E402
from probes import body_box  # noqa: E402
from quality import MODES, RESULTS, fraction_key, model_fingerprint  # noqa: E402
from run_timing import RunTiming  # noqa: E402
from stats import ONE_SIGMA_RANGE, TWO_SIGMA_RANGE, coverage, ct_body, uncertainty_agreement  # noqa: E402

from SPECTDenoiseLib.errors import InputError, ModelError, OutputError, SPECTDenoiseError  # noqa: E402
from SPECTDenoiseLib.hub import read_catalogue  # noqa: E402
from SPECTDenoiseLib.io import atomic_output  # noqa: E402
from SPECTDenoiseLib.models.config import ModelConfig  # noqa: E402
from SPECTDenoiseLib.phantoms import Phantom  # noqa: E402

TWO_SIGMA_TARGET = 0.95
CROP_MARGIN = 4
AIR_MARGIN = 3


def scaled_coverages(variance: np.ndarray, error: np.ndarray, scale: float) -> dict[str, float]:
    """1 σ and 2 σ coverage (%) of ``error`` by ``scale`` × ``variance`` (1-D arrays of the same voxels)."""
    return {"coverage_1sigma_pct": coverage(scale * variance, error, 1.0),
            "coverage_2sigma_pct": coverage(scale * variance, error, 2.0)}


def fit_variance_scale(variance: np.ndarray, error: np.ndarray, method: str = "auto") -> dict:
    """Fit the factor c by which ``variance`` (squared units) is multiplied to describe ``error`` (same units,
    1-D arrays of the same voxels): ``"coverage"`` (2 σ coverage 95 %), ``"mse"`` (mean error² = c · mean
    variance) or ``"auto"`` (the rule of the module docstring). Returns both fits with their coverages, the chosen
    method, its ``scale`` and a ``note``."""
    variance, squared = variance.astype(np.float64), error.astype(np.float64) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        needed = np.where(variance > 0, squared / (4 * variance), np.where(squared > 0, np.inf, 0.0))
    fits = {"coverage": float(np.quantile(needed, TWO_SIGMA_TARGET, method="higher")),
            "mse": float(squared.mean() / max(variance.mean(), np.finfo(float).tiny))}
    result = {f"{name}_fit": {"scale": scale, **(scaled_coverages(variance, error, scale) if np.isfinite(scale)
                                                 else {"coverage_1sigma_pct": 0.0, "coverage_2sigma_pct": 0.0})}
              for name, scale in fits.items()}

    def meets(name: str, both: bool) -> bool:
        fit = result[f"{name}_fit"]
        one = ONE_SIGMA_RANGE[0] <= fit["coverage_1sigma_pct"] <= ONE_SIGMA_RANGE[1]
        return one and (not both or TWO_SIGMA_RANGE[0] <= fit["coverage_2sigma_pct"] <= TWO_SIGMA_RANGE[1])

    note = ""
    if method != "auto":
        chosen = method
    elif meets("coverage", both=False):
        chosen = "coverage"
    elif meets("mse", both=True):
        chosen = "mse"
    else:
        chosen = "coverage" if np.isfinite(fits["coverage"]) else "mse"
        note = ("no single scale gives 1 sigma coverage in 60-75 % and 2 sigma coverage in 90-98 %: the shape of "
                "the variance map, not only its scale, is off")
        if chosen == "mse":
            note += " (over 5 % of the voxels have zero variance and an error: 95 % coverage is out of reach)"
    return {**result, "chosen": chosen, "scale": fits[chosen], "note": note}


def validation_cases(count: int, max_cost: float) -> list[Case]:
    """The first ``count`` in-distribution validation cases (the validation mode's families, in the training
    generator's order), each costing at most ``max_cost`` plain 4 mm IEC reconstructions."""
    cases = in_distribution_cases(MODES["validation"].quota, VALIDATION_RUN_SEED, max_cost)
    if len(cases) < count:
        raise InputError(f"Only {len(cases)} validation cases cost at most {max_cost} plain IEC scans; ask for "
                         "fewer --cases or raise --max-cost.")
    return cases[:count]


def validation_scans(cases: list[Case], fraction: float, draws: int,
                     cache_folder: Path | None = None) -> Iterator[tuple[Case, Phantom, CaseScans]]:
    """(case, phantom, scans at ``fraction`` with ``draws`` noise draws) for each of ``cases``, one at a time;
    with a ``cache_folder``, the scans are read from and written to a ``draw_cache`` there."""
    for case in cases:
        phantom = case_phantom(case)
        cache = DrawCache(cache_folder, case.record(), (fraction,)) if cache_folder is not None else None
        yield case, phantom, CaseScans(case, phantom, (fraction,), draws, cache=cache)


def outside_body(variance: np.ndarray, error: np.ndarray, body: np.ndarray, body_mean: float) -> dict:
    """RMS error and RMS σ (uncalibrated: the model's current scale) in the air around the body — voxels more
    than :data:`AIR_MARGIN` voxels from it, which the fit leaves out — in % of ``body_mean`` ([z, y, x] arrays)."""
    air = ~ndimage.binary_dilation(body, iterations=AIR_MARGIN)
    if not air.any():
        return {"voxels": 0}
    return {"voxels": int(air.sum()),
            "rms_error_pct": float(100 * np.sqrt(np.mean(error[air].astype(np.float64) ** 2)) / body_mean),
            "rms_sigma_pct": float(100 * np.sqrt(np.mean(variance[air].astype(np.float64))) / body_mean)}


def collect(model, cases: list[Case], draws: int, fraction: float, crop: bool) -> tuple[np.ndarray, np.ndarray,
                                                                                      list[dict]]:
    """(variance, error) of ``model`` over the body voxels of every case × draw, and one entry per draw (case,
    draw, voxels, seconds, the uncalibrated agreement of :func:`stats.uncertainty_agreement`). Noise draw d of case
    seed s uses ``default_rng([s, d])`` (as the benchmark), the model's sampling seed is d."""
    variances, errors, entries = [], [], []
    for case, phantom, scans in validation_scans(cases, fraction, draws):
        box = body_box(ct_body(phantom.ct), CROP_MARGIN) if crop else (slice(None),) * 3
        ct, noise_free = phantom.ct[box], scans.noise_free[box]
        body = ct_body(ct)
        for draw in range(draws):
            low = scans.draw(draw)[fraction][box]
            started = time.perf_counter()
            denoised, variance = run_model(model, low, ct, phantom.spacing_mm, seed=draw)
            seconds = round(time.perf_counter() - started, 1)
            variances.append(variance[body])
            errors.append(denoised[body] - noise_free[body])
            agreement = uncertainty_agreement(variance, denoised, noise_free, body)
            entries.append({"case": case.name, "draw": draw, "shape": list(body.shape), "voxels": int(body.sum()),
                            "seconds": seconds, **{k: v for k, v in agreement.items() if k != "reliability"},
                            "outside_body": outside_body(variance, denoised - noise_free, body,
                                                         float(noise_free[body].mean()))})
            print(f"  {case.name} draw {draw}: {seconds:.0f} s, 2 sigma coverage "
                  f"{agreement['coverage_2sigma_pct']:.1f} %", flush=True)
    return np.concatenate(variances), np.concatenate(errors), entries


def outside_summary(entries: list[dict], factor: float) -> dict:
    """Over the draws of ``entries`` with air around the body: the range of the RMS error and of the RMS σ after
    the fitted ``factor`` (in % of the body mean), and of σ ÷ error — how far the map, fitted in the body,
    over-states the error in the air, where the truth is zero."""
    measured = [e["outside_body"] for e in entries if e["outside_body"]["voxels"]]
    if not measured:
        return {"draws": 0}
    error = [m["rms_error_pct"] for m in measured]
    sigma = [m["rms_sigma_pct"] * np.sqrt(factor) for m in measured]
    ratio = [s / max(e, 1e-12) for s, e in zip(sigma, error)]
    return {"draws": len(measured), "margin_voxels": AIR_MARGIN,
            **{f"{name}_range": [round(float(min(v)), 4), round(float(max(v)), 4)]
               for name, v in (("rms_error_pct", error), ("rms_sigma_pct", sigma), ("sigma_over_error", ratio))}}


def writable_folder(spec: str, folder: Path) -> Path:
    """``folder`` when ``spec`` names a model folder or a shipped catalogue model; else OutputError (a Hub
    download's files are checked against their sha256 and must not change)."""
    entry = {e["id"]: e for e in read_catalogue()["models"]}.get(spec)
    if (entry is not None and "path" in entry) or (entry is None and Path(spec).expanduser().is_dir()):
        return folder
    raise OutputError(f"'{spec}' is a Hub model; copy its folder and calibrate the copy to store a variance "
                      "scale.")


def config_with_scale(folder: Path, scale: float) -> dict:
    """``folder``/config.json with ``diffusion.variance_scale`` set to ``scale``, validated (ModelError if this
    SPECTDenoise does not accept it)."""
    data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    data["diffusion"] = {**data["diffusion"], "variance_scale": scale}
    ModelConfig.from_dict(data)
    return data


def write_scale(folder: Path, scale: float) -> None:
    """Set ``diffusion.variance_scale`` in ``folder``/config.json to ``scale`` atomically (see
    :func:`config_with_scale`)."""
    data = config_with_scale(folder, scale)
    with atomic_output(folder / "config.json") as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def add_validation_arguments(parser: argparse.ArgumentParser, cases: int, draws: int = 2) -> None:
    """The model and validation-run options shared by the scripts that run a model on validation cases (this
    one, ``variance_pooling.py`` and ``ranking_reference.py``)."""
    parser.add_argument("model", help="catalogue id, model folder or NAME=FOLDER (a diffusion model, except "
                                      "for ranking_reference.py)")
    parser.add_argument("--cases", type=int, default=cases, help=f"validation cases (default {cases})")
    parser.add_argument("--draws", type=int, default=draws, help=f"noise draws per case (default {draws})")
    parser.add_argument("--fraction", type=float, default=0.1, help="count fraction (default 0.1)")
    parser.add_argument("--max-cost", type=float, default=1.5,
                        help="largest case cost in plain 4 mm IEC reconstructions (default 1.5, as --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")


def run_or_exit(program: str, run_function, args: argparse.Namespace) -> None:
    """``run_function(args)``; a SPECTDenoise error becomes one line on stderr and its exit code."""
    try:
        run_function(args)
    except SPECTDenoiseError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_validation_arguments(parser, cases=2)
    parser.add_argument("--crop", action="store_true",
                        help=f"crop each case to the body's bounding box + {CROP_MARGIN} voxels (cheaper)")
    parser.add_argument("--method", choices=("auto", "coverage", "mse"), default="auto")
    parser.add_argument("--output", help="result JSON (default benchmarks/results/calibration_<model>.json, "
                                         "without --write calibration_check_<model>.json)")
    parser.add_argument("--write", action="store_true", help="store the scale in the model's config.json")
    run_or_exit("calibrate_variance", run, parser.parse_args())


def run(args: argparse.Namespace) -> None:
    """Fit, report and (with ``--write``) store the variance scale as ``args`` ask."""
    if args.cases < 1 or args.draws < 1 or not 0 < args.fraction <= 1 or args.threads < 1:
        raise InputError("--cases, --draws and --threads must be at least 1 and --fraction in (0, 1].")
    if args.model.endswith(BARE):
        raise InputError(f"The variance scale is fitted for the model as it is used, with its uptake guard: "
                         f"name it without '{BARE}'.")
    torch.set_num_threads(args.threads)
    name, tested = next(iter(load_models([args.model]).items()))
    model = tested.model
    if model.config.kind != "diffusion":
        raise ModelError(f"Model '{name}' is deterministic: it gives no variance to calibrate.")
    spec = args.model.split("=", 1)[-1]
    folder = Path(model.folder)
    if args.write:  # refuse before the long run, not after it
        config_with_scale(writable_folder(spec, folder), variance_scale(model))
    cases = validation_cases(args.cases, args.max_cost)
    timing = RunTiming(args.threads)
    print(f"{name}: {len(cases)} validation cases x {args.draws} draws at {fraction_key(args.fraction)} counts",
          flush=True)
    variance, error, entries = collect(model, cases, args.draws, args.fraction, args.crop)
    fit = fit_variance_scale(variance, error, args.method)
    previous = variance_scale(model)
    new_scale = float(f"{previous * fit['scale']:.4g}")
    result = {
        "model": name, "folder": str(folder), "weights_sha256_12": model_fingerprint(model),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
        "previous_variance_scale": previous, "fitted_factor": fit["scale"], "variance_scale": new_scale,
        "written": args.write, "fit": fit, "before": scaled_coverages(variance, error, 1.0),
        "n": {"cases": len(cases), "draws": args.draws, "voxels": int(variance.size)},
        "fraction": args.fraction, "cropped": args.crop,
        "samples": model.config.diffusion["default_samples"], "steps": model.config.diffusion["default_steps"],
        "cases": [{"name": c.name, "seed": c.seed, "noise_seeds": [[c.seed, d] for d in range(args.draws)],
                   "sampling_seeds": list(range(args.draws))} for c in cases],
        "per_draw": entries,
        "outside_body_after_fit": outside_summary(entries, fit["scale"]),
        "timing": timing.finish(),
    }
    if args.write:
        write_scale(folder, new_scale)
    kind = "calibration_" if args.write else "calibration_check_"
    output = Path(args.output or RESULTS / f"{kind}{model_name(args.model)}.json")
    with atomic_output(output) as temporary:
        temporary.write_text(json.dumps(result, indent=1) + "\n")
    chosen = fit[f"{fit['chosen']}_fit"]
    print(f"variance scale {new_scale:.4g} ({fit['chosen']} fit, x{fit['scale']:.4g} of the current "
          f"{previous:.4g}): "
          f"1 sigma coverage {chosen['coverage_1sigma_pct']:.1f} %, 2 sigma {chosen['coverage_2sigma_pct']:.1f} % "
          f"on {variance.size} voxels; {'written to' if args.write else 'not written (use --write) to'} "
          f"{folder / 'config.json'}; result {output}" + (f"; note: {fit['note']}" if fit["note"] else ""))


if __name__ == "__main__":
    main()
