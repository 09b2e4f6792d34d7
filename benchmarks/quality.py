"""Quality benchmark: shipped models against the low-count input and classical filters on held-out phantoms.

Held-out cases are simulated with seeds ≥ 900000 (training data uses seeds below 100000): for each phantom family
a full-count acquisition and low-count ones at 10 %, 1/7, 25 % and 50 % counts, all reconstructed with the same
OSEM settings (the papers' protocol). Every method is compared with the full-count reconstruction inside the body
(CT > −500 HU): RMSE, NRMSE (÷ reference mean), PSNR (peak = reference max in the body, Pan et al.), SSIM (3D).
For IEC spheres and other lesion labels: % bias of the region mean and max against the full-count image.
Classical filters (Gaussian, TV, NLM, BM4D with Anscombe) get their best parameter per volume (oracle tuning).
For diffusion models: Spearman correlation between per-voxel variance and squared error in the body, and the
ratio of mean squared error in the 10 % highest-variance voxels to the rest.

NLM and BM4D take minutes per volume on 2 CPU cores, so they run only at the count levels of ``--slow-fractions``
(default 10 %, the level of the targets).

Results: benchmarks/results/quality*.json (``--cases`` and ``--output`` split the work over processes); then
``python benchmarks/report.py`` merges them into BENCHMARKS.md with plots.
Usage: python benchmarks/quality.py [--cases iec-900001 ...] [--models ID ...] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.stats import spearmanr

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import run_baselines

from SPECTDenoiseLib.hub import load_model, read_catalogue
from SPECTDenoiseLib.inference import denoise
from SPECTDenoiseLib.metrics import image_quality
from SPECTDenoiseLib.io import array_to_image
from SPECTDenoiseLib.phantoms import make_phantom, phantom_images
from SPECTDenoiseLib.simulate import simulate_pair
from SPECTDenoiseLib.train.data import lesion_labels

FRACTIONS = (0.1, 1 / 7, 0.25, 0.5)
CASES = (("iec", 900001), ("torso", 900002), ("brain", 900003), ("cardiac", 900004), ("torso", 900005),
         ("iec", 900006))
RESULTS = REPOSITORY / "benchmarks" / "results"


def simulate_case(family: str, seed: int) -> dict:
    """Phantom and its full- and low-count reconstructions (arrays [z, y, x])."""
    phantom = make_phantom(family, seed=seed)
    result = simulate_pair(phantom.activity, phantom.spacing_mm, phantom.mu_map, fractions=FRACTIONS,
                           total_counts=phantom.total_counts, collimator=phantom.collimator, seed=seed)
    return {"phantom": phantom, "full": result.full, "low": result.low}


def lesion_regions(phantom) -> dict[str, np.ndarray]:
    """Masks of the phantom's lesion-like labels (spheres, lesions, striata, defects) with ≥ 8 voxels."""
    regions = {phantom.label_names[value]: phantom.labels == value for value in lesion_labels(phantom.label_names)}
    return {name: mask for name, mask in regions.items() if mask.sum() >= 8}


def region_bias(image: np.ndarray, reference: np.ndarray, regions: dict[str, np.ndarray]) -> dict[str, dict]:
    """% bias of region mean and max of ``image`` against ``reference``."""
    out = {}
    for name, mask in regions.items():
        ref_mean, ref_max = float(reference[mask].mean()), float(reference[mask].max())
        out[name] = {
            "mean_bias_pct": 100 * (float(image[mask].mean()) - ref_mean) / ref_mean,
            "max_bias_pct": 100 * (float(image[mask].max()) - ref_max) / ref_max,
            "voxels": int(mask.sum()),
        }
    return out


def uncertainty_agreement(variance: np.ndarray, error: np.ndarray, body: np.ndarray) -> dict[str, float]:
    """How well the per-voxel variance predicts the squared error inside the body."""
    v, e = variance[body], error[body] ** 2
    top = v >= np.quantile(v, 0.9)
    return {"spearman_variance_vs_squared_error": float(spearmanr(v, e).statistic),
            "squared_error_ratio_top10pct_variance": float(e[top].mean() / max(e[~top].mean(), 1e-12))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", help="family-seed names (default: all of CASES)")
    parser.add_argument("--models", nargs="*", help="catalogue ids (default: every shipped model)")
    parser.add_argument("--slow-fractions", nargs="*", type=float, default=[0.1],
                        help="count levels at which NLM and BM4D run (default 0.1)")
    parser.add_argument("--no-baselines", action="store_true",
                        help="models only (e.g. to add a model to results that already hold the baselines)")
    parser.add_argument("--output", default=str(RESULTS / "quality.json"))
    args = parser.parse_args()
    catalogue = read_catalogue()
    model_ids = args.models or [entry["id"] for entry in catalogue["models"] if "path" in entry]
    models = {model_id: load_model(model_id) for model_id in model_ids}
    cases = [c for c in CASES if args.cases is None or f"{c[0]}-{c[1]}" in args.cases]
    fractions = FRACTIONS
    records = []
    for family, seed in cases:
        started = time.perf_counter()
        case = simulate_case(family, seed)
        phantom = case["phantom"]
        body = phantom.ct > -500
        regions = lesion_regions(phantom)
        reference = case["full"]
        spacing = phantom.spacing_mm
        ct_image = phantom_images(phantom)["ct"]
        for fraction in fractions:
            low = case["low"][fraction]
            outputs: dict[str, tuple[np.ndarray, dict]] = {"input": (low, {})}
            slow = any(abs(fraction - f) < 1e-6 for f in args.slow_fractions)
            baselines = ({} if args.no_baselines
                         else run_baselines(low, reference, body, spacing, include_slow=slow))
            for name, (output, parameter) in baselines.items():
                outputs[name] = (output, {"parameter": parameter})
            for model_id, model in models.items():
                t0 = time.perf_counter()
                result = denoise(array_to_image(low, ct_image), model,
                                 ct=ct_image if model.config.needs_ct else None, device="cpu", seed=0,
                                 want_variance=model.config.kind == "diffusion")
                denoised = sitk.GetArrayFromImage(result.denoised)
                extra = {"seconds": round(time.perf_counter() - t0, 2)}
                if result.variance is not None:
                    variance = sitk.GetArrayFromImage(result.variance)
                    extra.update(uncertainty_agreement(variance, denoised - reference, body))
                outputs[model_id] = (denoised, extra)
            for method, (output, extra) in outputs.items():
                records.append({"case": f"{family}-{seed}", "family": family, "fraction": round(fraction, 4),
                                "method": method, **image_quality(output, reference, body),
                                "regions": region_bias(output, reference, regions), **extra})
            best = min((r for r in records[-len(outputs):]), key=lambda r: r["nrmse"])
            print(f"{family}-{seed} F={fraction:.3f}: " + ", ".join(
                f"{r['method']} {r['nrmse']:.3f}" for r in records[-len(outputs):]) + f"  best {best['method']}",
                flush=True)
        print(f"  case done in {time.perf_counter() - started:.0f} s", flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"fractions": list(fractions), "cases": [f"{f}-{s}" for f, s in cases],
                                             "models": model_ids, "records": records}, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
