"""References for the error-ranking quotient: how well a map of each voxel's expected error, estimated on other
noise draws, ranks voxels by error, and the most any map can reach.

Issue 11 asks a diffusion model's variance to rank voxels by |error| at least 1.25 × as well as the denoised
intensity does (``stats.uncertainty_agreement``: mean |error| in the top-decile voxels ÷ the lower half, by the map
÷ by intensity). This script measures what the best possible map reaches on the same model's image, so that the
quotient a model's variance gets can be read against what is attainable. A model's image is deterministic (a
diffusion model's is its base's estimate; its samples make only the variance map), so on ``--draws`` independent
noise draws of each validation case (run seed 8, never the benchmark's; the cases of ``calibrate_variance.py``)
the image is computed once per draw, and for each draw d two oracle maps are built from the **other** draws
(leave-one-out, so the map never sees the error it ranks):

* ``oracle_mse``: each voxel's mean squared error against the noise-free reconstruction over the other draws —
  the expected squared error at that voxel, bias included: what a perfect map of "how wrong is this voxel" holds,
  knowable only in simulation;
* ``oracle_spread``: each voxel's variance of the image over the other draws (bias left out) — what a sampler that
  reproduced the noise exactly would report.

Per draw and map: the ranking quotient against intensity and the 1 σ / 2 σ coverage of the draw's error; and,
as the bound no map can pass, the quotient of ranking by the draw's own |error| (``realised_error``). The
oracle MSE map estimates each voxel's expected squared error — what a perfectly calibrated variance describes.
Intensity is a strong rival because the image carries the draw's own error: its brightest voxels are partly those
whose error this time is large and positive. The leave-one-out map from ``draws`` − 1 draws carries sampling noise
of its own (in theory ± √(2 / (draws − 1)) per voxel), which lowers its quotient; it is therefore also built from
the first 2, 3 and 5 other draws and its quotient extrapolated linearly in 1 / k (k: other draws used) to
infinitely many — a low estimate when, as measured, the gain per draw falls off slower than 1 / k. (The metric
compares mean |error|, so for maps that do not depend on the draw a per-voxel expected |error| would rank a little
differently from the expected squared error.)

Output: ``benchmarks/results/ranking_reference_<model>.json`` with n, seeds, threads, load and time.

Usage::

    nice -n 10 python benchmarks/ranking_reference.py MODEL [--cases 5] [--draws 10]

Exit codes as the CLI's (docs/ERRORS.md): 3 bad option, 4 model problem, 7 output problem.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibrate_variance import add_validation_arguments, run_or_exit, validation_cases, validation_scans  # noqa: E402
from methods import load_models, model_name  # noqa: E402
from quality import RESULTS, model_fingerprint  # noqa: E402
from run_timing import RunTiming  # noqa: E402
from stats import coverage, ct_body, error_ranking_ratio  # noqa: E402

from SPECTDenoiseLib.errors import InputError  # noqa: E402
from SPECTDenoiseLib.io import atomic_output  # noqa: E402

ORACLES = ("oracle_mse", "oracle_spread")
SUBSET_SIZES = (2, 3, 5)
"""Besides all other draws, the oracle MSE map is also built from the first k of them for each k here, so that
its quotient can be extrapolated to infinitely many draws (:func:`extrapolated`)."""


def other_draws(images: np.ndarray, left_out: int, others: int | None = None) -> np.ndarray:
    """The first ``others`` (default all) rows of ``images`` [draw, voxel] other than ``left_out``, as float64."""
    return np.delete(images, left_out, axis=0)[:others].astype(np.float64)


def oracle_mse(rest: np.ndarray, noise_free: np.ndarray) -> np.ndarray:
    """Each voxel's mean squared error against ``noise_free`` [voxel] over the draws ``rest`` [draw, voxel]."""
    return np.mean((rest - noise_free) ** 2, axis=0)


def oracle_maps(images: np.ndarray, noise_free: np.ndarray, left_out: int) -> dict[str, np.ndarray]:
    """The two oracle maps of the module docstring for draw ``left_out``, from ``images`` [draw, voxel] (the
    model's image of every draw over the body voxels) and ``noise_free`` [voxel], over all other draws."""
    rest = other_draws(images, left_out)
    return {"oracle_mse": oracle_mse(rest, noise_free), "oracle_spread": np.var(rest, axis=0, ddof=1)}


def quotients_per_draw(images: np.ndarray, noise_free: np.ndarray) -> list[dict]:
    """Per draw of ``images`` [draw, voxel] (at least 3 draws): the error-ranking ratio by intensity; the quotient
    of ranking by the draw's own |error| (the most any map reaches); per oracle map its ratio, its quotient (÷ the
    intensity's) and the coverage of the draw's error by it; and the oracle MSE map's quotient from the first k
    other draws for each k of :data:`SUBSET_SIZES` below the number of other draws."""
    if images.shape[0] < 3:
        raise InputError("The leave-one-out oracle needs at least 3 noise draws per case.")
    sizes = [k for k in SUBSET_SIZES if k < images.shape[0] - 1]
    rows = []
    for draw, image in enumerate(images):
        error = image.astype(np.float64) - noise_free
        by_intensity = error_ranking_ratio(image, error)
        row = {"draw": draw, "error_ratio_intensity": round(by_intensity, 4),
               "realised_error_quotient": round(error_ranking_ratio(np.abs(error), error) / by_intensity, 4)}
        for name, score in oracle_maps(images, noise_free, draw).items():
            ratio = error_ranking_ratio(score, error)
            row[name] = {"error_ratio": round(ratio, 4), "quotient": round(ratio / by_intensity, 4),
                         "coverage_1sigma_pct": round(coverage(score, error, 1.0), 2),
                         "coverage_2sigma_pct": round(coverage(score, error, 2.0), 2)}
        row["oracle_mse_quotient_from_k_draws"] = {
            str(k): round(error_ranking_ratio(oracle_mse(other_draws(images, draw, k), noise_free), error)
                          / by_intensity, 4) for k in sizes}
        row["oracle_mse_quotient_from_k_draws"][str(images.shape[0] - 1)] = row["oracle_mse"]["quotient"]
        rows.append(row)
    return rows


def extrapolated(quotient_by_k: dict[int, float]) -> float:
    """The quotient at infinitely many draws: the intercept of a least-squares line through (1/k, quotient)."""
    k = np.array(sorted(quotient_by_k), dtype=float)
    _, intercept = np.polyfit(1 / k, [quotient_by_k[int(x)] for x in k], 1)
    return float(intercept)


def summary(per_case: list[dict]) -> dict:
    """Per oracle: mean, min and max of the quotient over every case × draw, and the per-case means; for the
    oracle MSE map also the mean quotient per number of draws it was built from and its extrapolation; mean and
    range of the realised-error bound."""
    result = {}
    for name in ORACLES:
        by_case = {c["name"]: [d[name]["quotient"] for d in c["draws"]] for c in per_case}
        values = [q for quotients in by_case.values() for q in quotients]
        result[name] = {"quotient_mean": round(float(np.mean(values)), 4),
                        "quotient_range": [round(float(min(values)), 4), round(float(max(values)), 4)],
                        "per_case_mean": {case: round(float(np.mean(q)), 4) for case, q in by_case.items()}}
    realised = [d["realised_error_quotient"] for c in per_case for d in c["draws"]]
    result["realised_error"] = {"quotient_mean": round(float(np.mean(realised)), 4),
                                "quotient_range": [round(float(min(realised)), 4), round(float(max(realised)), 4)]}
    draws = [d["oracle_mse_quotient_from_k_draws"] for c in per_case for d in c["draws"]]
    by_k = {int(k): float(np.mean([d[k] for d in draws])) for k in draws[0]}
    result["oracle_mse"]["quotient_mean_from_k_draws"] = {str(k): round(q, 4) for k, q in sorted(by_k.items())}
    if len(by_k) > 1:
        result["oracle_mse"]["quotient_extrapolated_to_infinite_draws"] = round(extrapolated(by_k), 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_validation_arguments(parser, cases=5, draws=10)
    parser.add_argument("--output", help="result JSON (default benchmarks/results/ranking_reference_<model>.json)")
    run_or_exit("ranking_reference", run, parser.parse_args())


def run(args: argparse.Namespace) -> None:
    """Measure the references ``args`` ask for and write their result."""
    if args.cases < 1 or args.draws < 3 or args.threads < 1 or not 0 < args.fraction <= 1:
        raise InputError("--cases and --threads must be at least 1, --draws at least 3 and --fraction in (0, 1].")
    torch.set_num_threads(args.threads)
    name, tested = next(iter(load_models([args.model]).items()))
    cases = validation_cases(args.cases, args.max_cost)
    timing = RunTiming(args.threads)
    per_case = []
    for case, phantom, scans in validation_scans(cases, args.fraction, args.draws):
        body = ct_body(phantom.ct)
        images = np.stack([tested.image(scans.draw(d)[args.fraction], phantom.ct, phantom.spacing_mm)[body]
                           for d in range(args.draws)])
        per_case.append({"name": case.name, "seed": case.seed, "voxels": int(body.sum()),
                         "noise_seeds": [[case.seed, d] for d in range(args.draws)],
                         "draws": quotients_per_draw(images, scans.noise_free[body].astype(np.float64))})
        print(f"  {case.name}: {args.draws} draws done", flush=True)
    result = {
        "model": name, "weights_sha256_12": model_fingerprint(tested.model), "uptake_guard": tested.uptake_guard,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
        "n": {"cases": len(cases), "draws": args.draws}, "fraction": args.fraction,
        "summary": summary(per_case), "cases": per_case, "timing": timing.finish(),
    }
    output = Path(args.output or RESULTS / f"ranking_reference_{model_name(args.model)}.json")
    with atomic_output(output) as temporary:
        temporary.write_text(json.dumps(result, indent=1) + "\n")
    for oracle, values in result["summary"].items():
        print(f"{oracle}: ranking quotient mean {values['quotient_mean']:.3f}, range "
              f"{values['quotient_range'][0]:.3f}-{values['quotient_range'][1]:.3f}"
              + (f", extrapolated to infinite draws {values['quotient_extrapolated_to_infinite_draws']:.3f}"
                 if "quotient_extrapolated_to_infinite_draws" in values else ""))
    print(f"result {output}")


if __name__ == "__main__":
    main()
