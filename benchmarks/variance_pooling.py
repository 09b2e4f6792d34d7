"""Choose a diffusion model's ``variance_pooling_voxels`` on validation cases.

A few samples estimate each voxel's spread with a large error of its own (8 samples: about ± 50 %); averaging the
spread over a Gaussian neighbourhood trades that error for blur. This script runs the model once per validation
case × draw with no pooling (the validation cases of ``calibrate_variance.py``: run seed 8, never the benchmark's),
pools the unpooled map over each ``--sigmas`` (voxels) and reports, per σ: the scale ``calibrate_variance`` would
fit, the 1 σ / 2 σ coverage with it, and per draw the error-ranking quotient (variance ÷ intensity,
``stats.uncertainty_agreement``; a scale does not change it). It writes nothing into the model; set the chosen σ in
its ``config.json`` and run ``calibrate_variance.py --write`` after it.

Output: ``benchmarks/results/variance_pooling_<model>.json`` with n, seeds, threads, load and time.

Usage::

    nice -n 10 python benchmarks/variance_pooling.py MODEL [--cases 5] [--draws 2] [--sigmas 0 0.7 1 1.5 2 3]

Exit codes as the CLI's (docs/ERRORS.md): 3 bad option, 4 model problem (deterministic model), 7 output problem.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibrate_variance import (  # noqa: E402
    add_validation_arguments,
    fit_variance_scale,
    run_or_exit,
    validation_cases,
    validation_scans,
)
from methods import load_models, model_name, run_model  # noqa: E402
from quality import RESULTS, model_fingerprint  # noqa: E402
from run_timing import RunTiming  # noqa: E402
from stats import ct_body, uncertainty_agreement  # noqa: E402

from SPECTDenoiseLib.errors import InputError, ModelError  # noqa: E402
from SPECTDenoiseLib.io import atomic_output  # noqa: E402

UNPOOLED = {"variance_pooling_voxels": 0.0}


def unpooled(model):
    """``model`` with its variance pooling switched off (everything else, the scale included, as it is)."""
    return dataclasses.replace(model, config=dataclasses.replace(
        model.config, diffusion={**model.config.diffusion, **UNPOOLED}))


def compare(draws: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], sigmas: list[float]) -> list[dict]:
    """Per σ in ``sigmas``: the fitted scale, its coverages and the per-draw ranking quotients, from ``draws`` of
    (unpooled variance, denoised, noise-free, body) [z, y, x] arrays."""
    rows = []
    for sigma in sigmas:
        pooled = [ndimage.gaussian_filter(v, sigma, mode="nearest") if sigma > 0 else v for v, *_ in draws]
        variance = np.concatenate([p[body] for p, (_, _, _, body) in zip(pooled, draws)])
        error = np.concatenate([(d - r)[body] for _, d, r, body in draws])
        fit = fit_variance_scale(variance, error)
        quotients = [uncertainty_agreement(p, d, r, body)["error_ratio_quotient"]
                     for p, (_, d, r, body) in zip(pooled, draws)]
        chosen = fit[f"{fit['chosen']}_fit"]
        rows.append({"sigma_voxels": sigma, "fitted_factor": fit["scale"], "fit": fit["chosen"],
                     "coverage_1sigma_pct": chosen["coverage_1sigma_pct"],
                     "coverage_2sigma_pct": chosen["coverage_2sigma_pct"],
                     "quotient_per_draw": [round(q, 4) for q in quotients],
                     "quotient_mean": round(float(np.mean(quotients)), 4)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_validation_arguments(parser, cases=5)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.7, 1.0, 1.5, 2.0, 3.0],
                        help="pooling σ in voxels to compare (default 0 0.7 1 1.5 2 3)")
    parser.add_argument("--output", help="result JSON (default benchmarks/results/variance_pooling_<model>.json)")
    run_or_exit("variance_pooling", run, parser.parse_args())


def run(args: argparse.Namespace) -> None:
    """Run the comparison ``args`` ask for and write its result."""
    if args.cases < 1 or args.draws < 1 or args.threads < 1 or not 0 < args.fraction <= 1 \
            or any(s < 0 for s in args.sigmas):
        raise InputError("--cases, --draws and --threads must be at least 1, --fraction in (0, 1] and every "
                         "--sigmas value at least 0.")
    torch.set_num_threads(args.threads)
    name, tested = next(iter(load_models([args.model]).items()))
    if tested.model.config.kind != "diffusion":
        raise ModelError(f"Model '{name}' is deterministic: it gives no variance to pool.")
    model = unpooled(tested.model)
    cases = validation_cases(args.cases, args.max_cost)
    timing = RunTiming(args.threads)
    draws = []
    for case, phantom, scans in validation_scans(cases, args.fraction, args.draws):
        body = ct_body(phantom.ct)
        for draw in range(args.draws):
            denoised, variance = run_model(model, scans.draw(draw)[args.fraction], phantom.ct, phantom.spacing_mm,
                                           seed=draw)
            draws.append((variance, denoised, scans.noise_free, body))
            print(f"  {case.name} draw {draw} done", flush=True)
    rows = compare(draws, args.sigmas)
    result = {
        "model": name, "weights_sha256_12": model_fingerprint(tested.model),
        "variance_scale_in_the_maps": tested.model.config.diffusion["variance_scale"],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
        "n": {"cases": len(cases), "draws": args.draws}, "fraction": args.fraction,
        "cases": [{"name": c.name, "seed": c.seed, "noise_seeds": [[c.seed, d] for d in range(args.draws)],
                   "sampling_seeds": list(range(args.draws))} for c in cases],
        "sigmas": rows,
        "timing": timing.finish(),
    }
    output = Path(args.output or RESULTS / f"variance_pooling_{model_name(args.model)}.json")
    with atomic_output(output) as temporary:
        temporary.write_text(json.dumps(result, indent=1) + "\n")
    for row in rows:
        print(f"sigma {row['sigma_voxels']:g}: factor {row['fitted_factor']:.3g} ({row['fit']}), coverage "
              f"{row['coverage_1sigma_pct']:.1f} / {row['coverage_2sigma_pct']:.1f} %, ranking quotient mean "
              f"{row['quotient_mean']:.3f}")
    print(f"result {output}")


if __name__ == "__main__":
    main()
