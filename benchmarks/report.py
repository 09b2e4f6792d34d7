"""Write BENCHMARKS.md and its plots from benchmarks/results/{full,quick,validation}/*.json and speed_*.json.

Every number is printed with its n (cases × draws) and the conditions it was measured under; intervals are 95 %
two-stage bootstrap intervals over cases and their draws (``stats.bootstrap_ci``).

Usage: python benchmarks/report.py
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import (  # noqa: E402
    BENCHMARK_RUN_SEED,
    OOD_VARIANTS,
    RETIRED_SEEDS,
    STARTING_WEIGHTS_SEEDS,
    VALIDATION_RUN_SEED,
)
from probes import PROBE_CHANGES, PROBES_VERSION  # noqa: E402
from stats import (  # noqa: E402
    BODY_HU,
    ONE_SIGMA_RANGE,
    TWO_SIGMA_RANGE,
    bootstrap_ci,
    contrast_recovery,
    recovery_coefficient,
    relative_errors,
)

RESULTS = REPOSITORY / "benchmarks" / "results"
IMAGES = REPOSITORY / "docs" / "images"
CLASSICAL = ("gaussian", "tv", "nlm", "bm4d")
FULL = "full-count"
BODY_RULE = f"CT > {BODY_HU:.0f} HU".replace("-", "−")
"""The benchmark's body mask in words (``stats.ct_body``), with a typographic minus."""
SECTIONS = (("full", "Full benchmark"), ("quick", "Quick check (`--quick`)"),
            ("validation", "Validation cases (for model selection only)"))


def load(mode: str) -> list[dict]:
    """Every case record of a mode, in-distribution cases first."""
    records = [json.loads(path.read_text()) for path in sorted((RESULTS / mode).glob("*.json"))]
    return sorted(records, key=lambda r: (r["case"]["ood"] is not None, r["case"]["name"]))


def methods_of(records: list[dict]) -> list[str]:
    """Methods in display order: input, classical filters, then models in the order the configuration names them
    (a rerun that adds one model does not reorder the tables)."""
    seen = list(dict.fromkeys(m for r in records for m in r["methods"] if m != FULL))
    named = list(dict.fromkeys(m for r in records for m in r.get("config", {}).get("models", {})))
    models = sorted((m for m in seen if m not in ("input", *CLASSICAL)),
                    key=lambda m: named.index(m) if m in named else len(named))
    return [m for m in ("input", *CLASSICAL) if m in seen] + models


def percent(key: str) -> str:
    return f"{100 * float(key):.0f} %"


def cell(estimate: float, low: float, high: float, digits: int = 3) -> str:
    return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def draws_of(record: dict, method: str, key: str) -> list[dict]:
    """The draw entries of ``method`` at count level ``key`` in one case record (none if it did not run)."""
    return record["methods"].get(method, {}).get(key, {}).get("draws", [])


def per_case(records: list[dict], method: str, key: str, value) -> list[list[float]]:
    """Groups (one per case) of ``value(draw entry, record)`` over the draws of ``method`` at ``key``."""
    groups = []
    for record in records:
        draws = draws_of(record, method, key)
        values = [v for v in (value(d, record) for d in draws) if v is not None]
        if values:
            groups.append(values)
    return groups


def n_label(groups: list[list[float]]) -> str:
    sizes = sorted({len(g) for g in groups})
    draws = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
    return f"{len(groups)}×{draws}"


def quality_table(records: list[dict], methods: list[str], keys: list[str], reference: str) -> list[str]:
    """Rows: methods; columns: count levels; cells NRMSE [CI] / PSNR / SSIM against ``reference``."""
    header = " | ".join(f"{percent(k)}: NRMSE [95 % CI] / PSNR dB / SSIM (n)" for k in keys)
    lines = [f"| method | {header} |", "|---|" + "---|" * len(keys)]
    rows = [(FULL, ["1"] * len(keys))] if reference == "vs_noise_free" else []
    for method, columns in rows + [(m, keys) for m in methods]:
        cells = []
        for key in columns:
            nrmse = per_case(records, method, key, lambda d, _r: d.get(reference, {}).get("nrmse"))
            if not nrmse:
                cells.append("–")
                continue
            psnr, ssim = (np.mean(np.concatenate(per_case(records, method, key,
                                                          lambda d, _r, m=m: d[reference][m])))
                          for m in ("psnr_db", "ssim"))
            cells.append(f"{cell(*bootstrap_ci(nrmse))} / {psnr:.1f} / {ssim:.3f} ({n_label(nrmse)})")
        label = f"{FULL} (100 % counts, same draws)" if method == FULL else method
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def fidelity_ratio(entry: dict, record: dict) -> float:
    """NRMSE(a method's draw entry vs noise-free) ÷ NRMSE(that draw's full-count scan vs noise-free)."""
    full = record["methods"][FULL]["1"]["draws"][entry["draw"]]
    return entry["vs_noise_free"]["nrmse"] / full["vs_noise_free"]["nrmse"]


def fidelity_table(records: list[dict], methods: list[str], keys: list[str]) -> list[str]:
    """Per draw: :func:`fidelity_ratio`; cells: mean [95 % CI] (n)."""
    lines = ["| method | " + " | ".join(f"{percent(k)} (n)" for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for method in methods:
        cells = []
        for key in keys:
            groups = per_case(records, method, key, fidelity_ratio)
            cells.append(f"{cell(*bootstrap_ci(groups), 2)} ({n_label(groups)})" if groups else "–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def region_groups(records: list[dict], method: str, key: str, select, measure: int, against: str) -> dict:
    """{group label: [per-case lists of per-draw values]} for lesion regions chosen by ``select(info)`` → label.

    ``measure`` 0 = mean, 1 = max. ``against``: "noise_free" → % error against the noise-free value; "truth" →
    recovery coefficient (value ÷ true mean); "contrast" → NEMA contrast recovery in % against the same image's
    background mean (regions whose true contrast to the background is within 20 % of 1 are left out).
    """
    out = defaultdict(list)
    for record in records:
        draws = draws_of(record, method, key)
        if not draws:
            continue
        true_background = record["background"]["truth_mean"]
        for name, info in record["regions"].items():
            label = select(info)
            if label is None:
                continue
            values = [d["regions"][name][measure] for d in draws]
            if against == "truth":
                out[label].append([recovery_coefficient(v, info["truth_mean"]) for v in values])
            elif against == "contrast":
                if abs(info["truth_mean"] / true_background - 1) >= 0.2:
                    out[label].append([contrast_recovery(v, d["background"][0], info["truth_mean"],
                                                         true_background) for v, d in zip(values, draws)])
            else:
                out[label].append(list(relative_errors(values, info["noise_free"][measure])))
    return out


def region_table(records: list[dict], methods: list[str], key: str, select, order: list, measure: int,
                 title: str) -> list[str]:
    """Rows: region groups; columns: methods; cells: bias vs noise-free [CI], SD over draws, (n)."""
    lines = [f"{title}", "", "| region | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for label in order:
        cells = []
        for method in methods:
            groups = region_groups(records, method, key, select, measure, "noise_free").get(label)
            if not groups:
                cells.append("–")
                continue
            estimate, low, high = bootstrap_ci(groups)
            spread = [np.var(g, ddof=1) for g in groups if len(g) > 1]
            sd = float(np.sqrt(np.mean(spread))) if spread else np.nan
            cells.append(f"{estimate:+.1f} [{low:+.1f}, {high:+.1f}], SD {sd:.1f} ({n_label(groups)})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def recovery_table(records: list[dict], methods: list[str], key: str, select, order: list) -> list[str]:
    """Rows: region groups; columns: noise-free and methods; cells: RCmean / RCmax / NEMA contrast recovery %."""
    columns = ["noise-free reconstruction", *methods]
    lines = ["| region | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for label in order:
        nf = [[recovery_coefficient(info["noise_free"][m], info["truth_mean"]) for m in (0, 1)]
              + [contrast_recovery(info["noise_free"][0], r["background"]["noise_free"][0], info["truth_mean"],
                                   r["background"]["truth_mean"])]
              for r in records for info in r["regions"].values() if select(info) == label]
        cells = ["{:.2f} / {:.2f} / {:.0f} %".format(*np.mean(nf, axis=0)) if nf else "–"]
        for method in methods:
            groups = [region_groups(records, method, key, select, m, against)
                      .get(label) for m, against in ((0, "truth"), (1, "truth"), (0, "contrast"))]
            if not groups[0]:
                cells.append("–")
                continue
            contrast = f"{np.mean(np.concatenate(groups[2])):.0f} %" if groups[2] else "–"
            cells.append(f"{np.mean(np.concatenate(groups[0])):.2f} / {np.mean(np.concatenate(groups[1])):.2f} / "
                         f"{contrast} ({n_label(groups[0])})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def hot_sphere(info: dict) -> str | None:
    return f"{info['diameter_mm']:.0f} mm" if info["kind"] == "hot sphere" else None


def lesion_kind(info: dict) -> str | None:
    return None if info["kind"] == "hot sphere" else info["kind"]


PRESERVATION_TOLERANCE = 0.05
"""Issue 14's target: a hot lesion's mean after denoising a standard-count scan within ±5 % of the scan's own."""


def preservation_ratios(records: list[dict]) -> dict[str, dict[str, list[tuple[float, str]]]]:
    """{model: {"all" | sphere diameter | lesion kind: [(denoised ÷ input mean, "case region"), ...]}} from the
    standard-count runs of every record (records without them add nothing)."""
    ratios = defaultdict(lambda: defaultdict(list))
    for record in records:
        for model, by_region in record.get("standard_count", {}).items():
            for name, ratio in by_region.items():
                entry = (ratio, f"{record['case']['name']} {name}")
                ratios[model]["all"].append(entry)
                ratios[model][hot_sphere(record["regions"][name]) or record["regions"][name]["kind"]].append(entry)
    return ratios


def within_tolerance_pct(entries: list[tuple[float, str]]) -> float:
    """Share (in %) of the regions whose ratio is within ±:data:`PRESERVATION_TOLERANCE` of 1."""
    return 100 * float(np.mean([abs(ratio - 1) <= PRESERVATION_TOLERANCE for ratio, _ in entries]))


def preservation_cases(records: list[dict], model: str) -> int:
    """How many records hold standard-count runs of ``model``."""
    return len({r["case"]["name"] for r in records if model in r.get("standard_count", {})})


def preservation_cell(entries: list[tuple[float, str]], cases: int) -> str:
    """Lowest ratio (where) / share within ±5 % (n regions in ``cases`` cases)."""
    worst, where = min(entries)
    return f"{worst:.2f} ({where}) / {within_tolerance_pct(entries):.0f} % ({len(entries)} in {cases})"


def preservation_table(records: list[dict]) -> list[str]:
    """Rows: models; columns: all hot lesion regions (naming the worst), then per sphere diameter and lesion kind;
    cells: lowest denoised ÷ input mean / share within ±5 % (n regions)."""
    ratios = preservation_ratios(records)
    if not ratios:
        return []
    present = {label for by_label in ratios.values() for label in by_label} - {"all"}
    spheres = [f"{d} mm" for d in (10, 13, 17, 22, 28, 37) if f"{d} mm" in present]
    labels = spheres + sorted(present - set(spheres))
    lines = ["| model | all hot regions: lowest ratio (where) / within ±5 % (n in cases) | "
             + " | ".join(f"{'hot sphere ' if label in spheres else ''}{label}" for label in labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for model, by_label in ratios.items():
        cells = [preservation_cell(by_label["all"], preservation_cases(records, model))]
        cells += [f"{min(by_label[label])[0]:.2f} / {within_tolerance_pct(by_label[label]):.0f} % "
                  f"({len(by_label[label])})" if by_label.get(label) else "–" for label in labels]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


TARGET_KEY = "0.1"
"""Issue 14's targets are set at 10 % counts."""
LARGE_LESION_MM = 17.0
BIAS_TOLERANCE_PCT = 5.0
FIDELITY_LIMITS = (1.0, 1.2)
"""Fidelity ratio targets: in distribution, out of distribution."""
CLASSICAL_FACTOR = 0.8
NOT_MEASURED = "not measured in this mode"
NOT_RECORDED = "not recorded (result files older than body totals)"


@dataclass(frozen=True)
class Target:
    """One cell of the targets table: ``value``, the number the verdict rests on (None when not measured), how
    it reads, n, and whether the target is met (None: not measured)."""

    value: float | None
    text: str
    n: str = ""
    met: bool | None = None

    def markdown(self) -> str:
        """"text (n): met" or "… not met"; only the text when not measured."""
        if self.met is None:
            return self.text
        return f"{self.text}{f' ({self.n})' if self.n else ''}: {'met' if self.met else 'not met'}"


def in_distribution(records: list[dict]) -> list[dict]:
    """The in-distribution case records."""
    return [r for r in records if r["case"]["ood"] is None]


def out_of_distribution(records: list[dict]) -> list[dict]:
    """The out-of-distribution case records (protocol variants, ``ood-*``)."""
    return [r for r in records if r["case"]["ood"] is not None]


def standard_count_target(records: list[dict], model: str) -> Target:
    """a: every hot region's mean after denoising the full-count scan within ±5 % of that scan's own."""
    entries = preservation_ratios(records).get(model, {}).get("all")
    if not entries:
        return Target(None, NOT_MEASURED)
    return Target(min(entries)[0], preservation_cell(entries, preservation_cases(records, model)),
                  met=within_tolerance_pct(entries) == 100)


def hot_diameter(info: dict) -> str | None:
    """"17 mm" for a hot region with a diameter (spheres and lesions); None for cold or shapeless regions."""
    if info["kind"].startswith("cold") or info.get("diameter_mm") is None:
        return None
    return f"{info['diameter_mm']:g} mm"


def mean_biases(records: list[dict], method: str) -> dict[str, tuple[float, str]]:
    """{diameter label: (mean bias of the hot regions' means vs noise-free in %, n)} at 10 % counts, pooled over
    cases and draws (the estimate of :func:`region_table`)."""
    groups = region_groups(records, method, TARGET_KEY, hot_diameter, 0, "noise_free")
    return {label: (float(np.mean(np.concatenate(g))), n_label(g)) for label, g in groups.items()}


def millimetres(label: str) -> float:
    """17.0 for the label "17 mm"."""
    return float(label.split()[0])


def large_lesion_target(records: list[dict], model: str) -> Target:
    """b: |mean bias| ≤ 5 % for every diameter ≥ 17 mm (in-distribution cases)."""
    biases = {label: value for label, value in mean_biases(in_distribution(records), model).items()
              if millimetres(label) >= LARGE_LESION_MM}
    if not biases:
        return Target(None, NOT_MEASURED)
    label, (bias, n) = max(biases.items(), key=lambda item: abs(item[1][0]))
    return Target(bias, f"worst {bias:+.1f} % at {label}", n,
                  all(abs(b) <= BIAS_TOLERANCE_PCT for b, _ in biases.values()))


def small_lesion_target(records: list[dict], model: str) -> Target:
    """c: mean bias within the input's own ± 5 percentage points for every diameter < 17 mm (in-distribution)."""
    inside = in_distribution(records)
    own = mean_biases(inside, "input")
    excess = {label: (bias - own[label][0], bias, n) for label, (bias, n) in mean_biases(inside, model).items()
              if millimetres(label) < LARGE_LESION_MM and label in own}
    if not excess:
        return Target(None, NOT_MEASURED)
    label, (difference, bias, n) = max(excess.items(), key=lambda item: abs(item[1][0]))
    return Target(difference, f"worst {difference:+.1f} pp at {label}: {bias:+.1f} % vs input "
                  f"{own[label][0]:+.1f} %", n, all(abs(d) <= BIAS_TOLERANCE_PCT for d, _, _ in excess.values()))


def body_total_distances(entry: dict, record: dict) -> tuple[float, float] | None:
    """(|output total − full-count total|, |input total − full-count total|) of one draw at 10 % counts, in % of
    the full-count total; None when the record has no body totals."""
    full = record["methods"][FULL]["1"]["draws"][entry["draw"]].get("body_total")
    low = record["methods"]["input"][TARGET_KEY]["draws"][entry["draw"]].get("body_total")
    if full is None or low is None or "body_total" not in entry:
        return None
    return 100 * abs(entry["body_total"] - full) / full, 100 * abs(low - full) / full


def body_total_target(records: list[dict], model: str) -> Target:
    """d: per case, mean over draws of the output's distance to the full-count total ≤ the input's; the text
    names the case with the worst ratio and the one farthest from the full-count total (a ratio alone hides it)."""
    cases = {r["case"]["name"]: g[0] for r in records
             if (g := per_case([r], model, TARGET_KEY, body_total_distances))}
    if not cases:
        ran = any(draws_of(r, model, TARGET_KEY) for r in records)
        return Target(None, NOT_RECORDED if ran else NOT_MEASURED)
    means = {case: np.mean(pairs, axis=0) for case, pairs in cases.items()}
    ratios = {case: mine / max(own, 1e-12) for case, (mine, own) in means.items()}
    case, farthest = max(ratios, key=ratios.get), max(means, key=lambda c: means[c][0])
    mine, own = means[case]
    return Target(ratios[case], f"worst {ratios[case]:.2f}× the input's distance in {case} ({mine:.2f} % vs "
                  f"{own:.2f} %); farthest from the full-count total {means[farthest][0]:.2f} % in {farthest} "
                  f"(input {means[farthest][1]:.2f} %)", n_label(list(cases.values())),
                  all(m <= o for m, o in means.values()))


def fidelity_in_distribution_target(records: list[dict], model: str) -> Target:
    """e: mean fidelity ratio over in-distribution cases and draws ≤ 1.0 (as the fidelity table)."""
    groups = per_case(in_distribution(records), model, TARGET_KEY, fidelity_ratio)
    if not groups:
        return Target(None, NOT_MEASURED)
    estimate, low, high = bootstrap_ci(groups)
    return Target(estimate, cell(estimate, low, high, 2), n_label(groups), estimate <= FIDELITY_LIMITS[0])


def worst_case_target(groups: dict[str, list[float]], limit: float) -> Target:
    """Worst (highest) per-case mean of ``groups`` ({case: per-draw values}) and the median over cases; met
    when the worst is ≤ ``limit``."""
    if not groups:
        return Target(None, NOT_MEASURED)
    means = {case: float(np.mean(values)) for case, values in groups.items()}
    case = max(means, key=means.get)
    return Target(means[case], f"worst {means[case]:.2f} in {case}, median {np.median(list(means.values())):.2f}",
                  n_label(list(groups.values())), means[case] <= limit)


def fidelity_out_of_distribution_target(records: list[dict], model: str) -> Target:
    """e: every out-of-distribution case's mean fidelity ratio ≤ 1.2."""
    groups = {r["case"]["name"]: g[0] for r in out_of_distribution(records)
              if (g := per_case([r], model, TARGET_KEY, fidelity_ratio))}
    return worst_case_target(groups, FIDELITY_LIMITS[1])


def classical_nrmse_ratios(record: dict, model: str) -> list[float]:
    """Per draw at 10 % counts: the model's NRMSE vs noise-free ÷ the lowest of the classical filters' (each
    oracle-tuned), on the draws where every filter of the case ran."""
    def nrmse(method: str) -> dict[int, float]:
        return {d["draw"]: d["vs_noise_free"]["nrmse"] for d in draws_of(record, method, TARGET_KEY)}

    filters = [by_draw for name in CLASSICAL if (by_draw := nrmse(name))]
    return [value / min(f[draw] for f in filters) for draw, value in nrmse(model).items()
            if filters and all(draw in f for f in filters)]


def classical_target(records: list[dict], model: str) -> Target:
    """f: every out-of-distribution case's mean NRMSE ratio to the best classical filter ≤ 0.8."""
    groups = {r["case"]["name"]: ratios for r in out_of_distribution(records)
              if (ratios := classical_nrmse_ratios(r, model))}
    return worst_case_target(groups, CLASSICAL_FACTOR)


TARGETS = (
    ("standard_count", "a. standard counts: lowest ratio (where) / within ±5 % (regions in cases)",
     standard_count_target),
    ("bias_large", "b. ≥ 17 mm: worst mean bias (±5 %)", large_lesion_target),
    ("bias_small", "c. < 17 mm: worst bias minus the input's (±5 pp)", small_lesion_target),
    ("body_total", "d. body total: worst distance to full count ÷ input's (≤ 1)", body_total_target),
    ("fidelity_in_distribution", "e. fidelity ratio in distribution [95 % CI] (≤ 1.0)",
     fidelity_in_distribution_target),
    ("fidelity_out_of_distribution", "e. fidelity ratio out of distribution (≤ 1.2 in every case)",
     fidelity_out_of_distribution_target),
    ("nrmse_vs_classical", "f. NRMSE ÷ best classical filter out of distribution (≤ 0.8 in every case)",
     classical_target),
)
"""(summary key, column header, measure(records, model) → Target) of each of issue 14's targets."""


def target_models(records: list[dict]) -> list[str]:
    """Every model (not the input or a classical filter) that ran or has standard-count runs, in display order."""
    models = [m for m in methods_of(records) if m not in ("input", *CLASSICAL)]
    return models + [m for m in preservation_ratios(records) if m not in models]


def target_results(records: list[dict]) -> dict[str, dict[str, Target]]:
    """{model: {summary key: Target}} for every model of the result set."""
    return {model: {key: measure(records, model) for key, _, measure in TARGETS}
            for model in target_models(records)}


def targets_table(records: list[dict]) -> list[str]:
    """Rows: models; columns: issue 14's targets; cells: value (n): met / not met (or why not measured)."""
    results = target_results(records)
    if not results:
        return []
    lines = ["| model | " + " | ".join(header for _, header, _ in TARGETS) + " |", "|---|" + "---|" * len(TARGETS)]
    for model, by_key in results.items():
        lines.append(f"| {model} | " + " | ".join(target.markdown() for target in by_key.values()) + " |")
    return lines


def background_table(records: list[dict], methods: list[str], keys: list[str]) -> list[str]:
    header = " | ".join(f"{percent(k)}: spatial CoV % / ensemble noise % (n)" for k in keys)
    lines = [f"| method | {header} |", "|---|" + "---|" * len(keys)]
    for method in methods:
        cells = []
        for key in keys:
            groups = per_case(records, method, key, lambda d, _r: d["background"][1])
            ensemble = [r["methods"][method][key]["ensemble_noise_pct"] for r in records
                        if key in r["methods"].get(method, {})]
            ensemble = np.mean([v for v in ensemble if v is not None and np.isfinite(v)] or [np.nan])
            cells.append(f"{np.mean(np.concatenate(groups)):.1f} / {ensemble:.1f} ({n_label(groups)})"
                         if groups else "–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    nf = [r["background"]["noise_free"][1] for r in records]
    lines.append(f"| noise-free reconstruction | spatial CoV {np.mean(nf):.1f} % (texture and partial volume, "
                 f"no noise; {len(nf)} cases) |" + " |" * (len(keys) - 1))
    return lines


def ood_table(records: list[dict], methods: list[str]) -> list[str]:
    """Rows: out-of-distribution cases; cells: NRMSE vs noise-free, fidelity ratio, mean |lesion mean bias|."""
    lines = ["| case (what is unusual) | n | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for record in records:
        key = record["fractions"][0]
        cells = []
        for method in methods:
            draws = draws_of(record, method, key)
            if not draws:
                cells.append("–")
                continue
            nrmse = [d["vs_noise_free"]["nrmse"] for d in draws]
            biases = [abs(np.mean(relative_errors([d["regions"][n][0] for d in draws], info["noise_free"][0])))
                      for n, info in record["regions"].items() if not info["kind"].startswith("cold")]
            fidelity = np.mean([fidelity_ratio(d, record) for d in draws])
            cells.append(f"{np.mean(nrmse):.3f} / {fidelity:.2f} / "
                         f"{np.mean(biases):.1f} %" if biases else f"{np.mean(nrmse):.3f}")
        case = record["case"]
        lines.append(f"| {case['name']} ({case['ood']}) | 1×{record['draws']} | " + " | ".join(cells) + " |")
    return lines


def tuning_table(records: list[dict]) -> list[str]:
    lines = ["| filter | parameter | volumes tuned | chosen value interior to the values tried | "
             "chosen values (min–max) |", "|---|---|---|---|---|"]
    units = {"gaussian": "FWHM mm", "tv": "weight ÷ body mean", "nlm": "h ÷ noise SD",
             "bm4d": "× noise PSD amplitude"}
    for name in CLASSICAL:
        draws = [d for r in records for per_key in r["methods"].get(name, {}).values() for d in per_key["draws"]]
        if draws:
            chosen = [d["parameter"] for d in draws]
            inside = sum(d["interior"] for d in draws)
            lines.append(f"| {name} | {units[name]} | {len(draws)} | {inside} of {len(draws)} | "
                         f"{min(chosen):.3g}–{max(chosen):.3g} |")
    return lines


def probes_version_note(records: list[dict]) -> str:
    """Which probe definitions (``probes.py``) the records' probes were run with, and what changed since."""
    versions = sorted({record["config"].get("probes_version") or 1 for record in records if record.get("probes")})
    oldest = min(versions, default=PROBES_VERSION)
    note = "Probes version " + ", ".join(map(str, versions)) + "."
    for version in range(oldest + 1, PROBES_VERSION + 1):
        note += f" Changed in version {version}: {PROBE_CHANGES[version]}"
    return note + (" A rerun brings every case to the newest version (only the probes run)."
                   if oldest < PROBES_VERSION else "")


WHERE_ABOVE_PCT = 1.0
"""A probe cell whose largest |change| exceeds this names the case and region it comes from."""


def probe_table(records: list[dict]) -> list[str]:
    """One row per model, one column per probe: the largest |change| of a hot lesion's mean over the records
    (n lesions), with the case and region it comes from when above :data:`WHERE_ABOVE_PCT`."""
    shifts = defaultdict(lambda: defaultdict(list))
    for record in records:
        for model, probes in record.get("probes", {}).items():
            for probe, by_region in probes.items():
                shifts[model][probe] += [(abs(v), record["case"]["name"], region)
                                         for region, v in by_region.items()]
    if not shifts:
        return []

    def cell(changes: list[tuple[float, str, str]]) -> str:
        if not changes:
            return "–"
        worst, case, region = max(changes)
        where = f"; {case} {region}" if worst > WHERE_ABOVE_PCT else ""
        return f"{worst:.1f} % ({len(changes)}{where})"

    probes = list(dict.fromkeys(p for by_probe in shifts.values() for p in by_probe))
    lines = ["| model | " + " | ".join(probes) + " |", "|---|" + "---|" * len(probes)]
    for model, by_probe in shifts.items():
        lines.append(f"| {model} | " + " | ".join(cell(by_probe[p]) for p in probes) + " |")
    return lines


UNCERTAINTY_METRICS = ("coverage_1sigma_pct", "coverage_2sigma_pct", "error_ratio_variance",
                       "error_ratio_intensity", "error_ratio_quotient", "spearman_variance_vs_squared_error")


def diffusion_rows(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """{(method, count level): draw entries that carry the calibration metrics of stats.uncertainty_agreement}."""
    rows = defaultdict(list)
    for record in records:
        for method, per_key in record["methods"].items():
            for key, entry in per_key.items():
                rows[(method, key)] += [d for d in entry["draws"] if "coverage_2sigma_pct" in d]
    return {k: v for k, v in sorted(rows.items()) if v}


def calibration_fits(results: Path = RESULTS, written: bool = True) -> dict[str, dict]:
    """{model: the result of benchmarks/calibrate_variance.py} in ``results``: the fits its scale was written from
    (``written``), else the later checks of the stored scale."""
    fits = (json.loads(path.read_text()) for path in sorted(results.glob("calibration_*.json")))
    return {fit["model"]: fit for fit in fits if fit.get("written", True) == written}


def uncertainty_lines(records: list[dict], mode: str, images: Path, results: Path = RESULTS) -> list[str]:
    """The "Uncertainty (diffusion models)" subsection: coverage, error ranking against intensity, Spearman,
    reliability plot, and the variance scales fitted on validation cases."""
    lines = ["", "### Uncertainty (diffusion models)", ""]
    rows = diffusion_rows(records)
    if not rows:
        return lines + ["No diffusion model was run in this result set, so there is no variance map to judge."]
    lines += ["Does a diffusion model's variance map — the mean squared spread of its sampled refinements around "
              "the image it returns, times the model's calibration factor — describe that image's error against "
              "the noise-free reconstruction? In the body, per draw: **coverage**, the "
              "voxels within 1 σ / 2 σ of the noise-free image (calibrated: 68 / 95 %; targets "
              f"{ONE_SIGMA_RANGE[0]:.0f}–{ONE_SIGMA_RANGE[1]:.0f} % / {TWO_SIGMA_RANGE[0]:.0f}–"
              f"{TWO_SIGMA_RANGE[1]:.0f} %); **error ranking**, mean |error| in the 10 % voxels with the "
              "highest variance ÷ that in the lower half, beside the same ratio with voxels ranked by denoised "
              "intensity (what brightness alone tells a reader) and their quotient (target ≥ 1.25: the variance "
              "must say more than brightness); Spearman(variance, squared error). "
              "Means over draws [95 % CI] (n = cases × draws).",
              "", "| model | counts | 1 σ coverage % | 2 σ coverage % | error ratio by variance | by intensity | "
              "variance ÷ intensity | Spearman | n |", "|---|---|---|---|---|---|---|---|---|"]
    for (method, key), draws in rows.items():
        groups = {m: per_case(records, method, key, lambda d, _r, m=m: d.get(m)) for m in UNCERTAINTY_METRICS}
        one, two, quotient = (cell(*bootstrap_ci(groups[m]), digits) for m, digits in (
            ("coverage_1sigma_pct", 1), ("coverage_2sigma_pct", 1), ("error_ratio_quotient", 2)))
        by_variance, by_intensity, rho = (np.mean(np.concatenate(groups[m])) for m in
                                          ("error_ratio_variance", "error_ratio_intensity",
                                           "spearman_variance_vs_squared_error"))
        lines.append(f"| {method} | {percent(key)} | {one} | {two} | {by_variance:.2f} | {by_intensity:.2f} | "
                     f"{quotient} | {rho:.2f} | {n_label(groups['coverage_2sigma_pct'])} |")
    lines += [""] + [per_case_coverage_line(records, method, key) for method, key in rows]
    plot = images / f"benchmark_reliability_{mode}.png"
    reliability_plot(rows, plot)
    lines += ["", "Reliability: voxels binned into deciles of predicted σ per draw; per decile the RMS "
              "predicted σ against the RMS observed error, both in % of the noise-free body mean, RMS over draws. "
              "On the diagonal the variance is calibrated; below it, over-cautious; above it, over-confident.", "",
              f"![Reliability of the diffusion variance]({link(plot)})"]
    fits, checks = calibration_fits(results), calibration_fits(results, written=False)
    for method in dict.fromkeys(m for m, _ in rows):
        if any(reference_path(kind, method, results).exists() for kind in REFERENCE_KINDS):
            lines += ["", f"What `{method}`'s ranking quotient can be read against: section *Ranking references* "
                      "below."]
        if method in fits:
            fit = fits[method]
            chosen = fit["fit"][f"{fit['fit']['chosen']}_fit"]
            lines += ["", f"Variance scale of `{method}`: {fit['variance_scale']:.4g} ({fit['fit']['chosen']} fit "
                      f"on validation cases, `benchmarks/calibrate_variance.py`, {fit['date']}; n = "
                      f"{fit['n']['cases']}×{fit['n']['draws']} × {fit['n']['voxels']} body voxels at "
                      f"{percent(str(fit['fraction']))} counts; 1 σ / 2 σ coverage there with the previous scale "
                      f"{fit['previous_variance_scale']:.4g}: {fit['before']['coverage_1sigma_pct']:.0f} / "
                      f"{fit['before']['coverage_2sigma_pct']:.0f} %, with this one "
                      f"{chosen['coverage_1sigma_pct']:.0f} / {chosen['coverage_2sigma_pct']:.0f} %"
                      + (f"; {fit['fit']['note']}" if fit["fit"]["note"] else "") + ")."]
        if method in checks:
            check = checks[method]
            before = check["before"]
            lines += ["", f"Checked on {check['date']} (`{check['command']}`, n = {check['n']['cases']}×"
                      f"{check['n']['draws']} validation draws, {check['n']['voxels']} body voxels, weights "
                      f"{check['weights_sha256_12']}): with the stored scale "
                      f"{check['previous_variance_scale']:.4g}, {before['coverage_1sigma_pct']:.0f} / "
                      f"{before['coverage_2sigma_pct']:.0f} % within 1 σ / 2 σ; a new {check['fit']['chosen']} "
                      f"fit would multiply it by {check['fitted_factor']:.3f} (not written)."]
    return lines


def per_case_coverage_line(records: list[dict], method: str, key: str) -> str:
    """One sentence: the range over cases of ``method``'s 1 σ and 2 σ coverage at ``key`` (each a case's mean over
    its draws), naming the cases at the ends: is the variance calibrated scan by scan or only on average?"""
    by_case = {r["case"]["name"]: [d for d in draws_of(r, method, key) if "coverage_1sigma_pct" in d]
               for r in records}
    means = {name: (float(np.mean([d["coverage_1sigma_pct"] for d in draws])),
                    float(np.mean([d["coverage_2sigma_pct"] for d in draws]))) for name, draws in by_case.items()
             if draws}
    low, high = min(means, key=lambda n: means[n][0]), max(means, key=lambda n: means[n][0])
    ones = [one for one, _ in means.values()]
    outside = sum(not ONE_SIGMA_RANGE[0] <= one <= ONE_SIGMA_RANGE[1] for one in ones)
    on_average = ONE_SIGMA_RANGE[0] <= float(np.mean(ones)) <= ONE_SIGMA_RANGE[1]
    verdict = ("." if not outside else " (one scale per model: within the target on average over these cases, not "
               "scan by scan)." if on_average else " (outside the target on average over these cases too).")
    return (f"Per case ({method}, {percent(key)} counts): 1 σ coverage from {means[low][0]:.1f} % ({low}; 2 σ "
            f"{means[low][1]:.1f} %) to {means[high][0]:.1f} % ({high}; 2 σ {means[high][1]:.1f} %); {outside} of "
            f"{len(means)} cases outside the {ONE_SIGMA_RANGE[0]:.0f}–{ONE_SIGMA_RANGE[1]:.0f} % target"
            + verdict)


REFERENCE_KINDS = ("ranking", "conditional")
"""The scripts (``benchmarks/<kind>_reference.py``) whose results the "Ranking references" section prints."""


def reference_path(kind: str, method: str, results: Path = RESULTS) -> Path:
    """The result file of ``benchmarks/<kind>_reference.py`` for ``method`` in ``results``."""
    return results / f"{kind}_reference_{method}.json"


def ranking_reference_section(weights: dict[str, str], results: Path = RESULTS) -> list[str]:
    """The "Ranking references" section: :func:`ranking_reference_lines` and :func:`conditional_reference_lines`
    for every model with a ``ranking_reference_<model>.json`` or ``conditional_reference_<model>.json`` in
    ``results``, each checked against its benchmarked ``weights`` ({model: sha256 prefix}); empty when there is
    none."""
    methods = sorted({path.stem.split("_reference_", 1)[1] for kind in REFERENCE_KINDS
                      for path in results.glob(reference_path(kind, "*", results).name)})
    if not methods:
        return []
    lines = ["## Ranking references", "",
             "What a diffusion model's error-ranking quotient (section *Uncertainty*) can be read against, "
             "measured once on validation cases, whatever the mode."]
    for method in methods:
        lines += ranking_reference_lines(method, results, weights.get(method))
        lines += conditional_reference_lines(method, results, weights.get(method))
    return lines + [""]


def conditional_reference_lines(method: str, results: Path = RESULTS, weights: str | None = None) -> list[str]:
    """What a map learned from the scan's own features (``benchmarks/conditional_reference.py``'s result for
    ``method``, if there is one) reaches in the ranking; flagged when measured on other weights than
    ``weights``."""
    path = reference_path("conditional", method, results)
    if not path.exists():
        return []
    reference = json.loads(path.read_text())
    summary, n = reference["summary"], reference["n"]
    importance = sorted(reference["feature_importance"].items(), key=lambda item: -item[1])[:3]
    return ["", f"Scan-conditioned reference (`benchmarks/conditional_reference.py {method}`, "
            f"{reference['date']}; learned on {n['training_cases']} cases of run seed "
            f"{reference['run_seeds']['training']} × 1 draw, ranked on validation cases (run seed "
            f"{reference['run_seeds']['validation']}), n = {n['cases']}×{n['draws']} at "
            f"{percent(str(reference['fraction']))} counts; "
            f"{reference_conditions(reference, weights)}): a map of each voxel's |error| predicted from features "
            "of the scan in hand (its input, its image and the noise they show; gradient-boosted trees) gives a "
            f"quotient of {summary['quotient_mean']:.2f} "
            f"(range {summary['quotient_range'][0]:.2f}–{summary['quotient_range'][1]:.2f}; per case "
            + ", ".join(f"{case} {value:.2f}" for case, value in summary["per_case_mean"].items())
            + "); the features it leans on most: " + ", ".join(f"`{name}`" for name, _ in importance) + "."]


def reference_conditions(reference: dict, weights: str | None) -> str:
    """Threads and load of a reference run's result, and a warning when it was measured on other weights than the
    benchmarked ``weights`` (sha256 prefix)."""
    timing = reference["timing"]
    loads = (timing["load_before"][0], timing["load_after"][0])
    stale = weights is not None and not weights.startswith(reference["weights_sha256_12"])
    threads = timing["threads"]
    return (f"{threads} thread{'' if threads == 1 else 's'}, 1-minute load {min(loads):.1f}–{max(loads):.1f}"
            + (f"; **measured with weights {reference['weights_sha256_12']}, not the benchmarked {weights}: rerun "
               "it**" if stale else ""))


def ranking_reference_lines(method: str, results: Path = RESULTS, weights: str | None = None) -> list[str]:
    """What a map of each voxel's expected error (estimated on other draws) reaches in the ranking, and the most
    any map reaches (``benchmarks/ranking_reference.py``'s result for ``method``, if there is one); when it was
    measured on other weights than the benchmarked ``weights`` (sha256 prefix), the paragraph says so."""
    path = reference_path("ranking", method, results)
    if not path.exists():
        return []
    reference = json.loads(path.read_text())
    summary, n = reference["summary"], reference["n"]
    mse, spread, bound = summary["oracle_mse"], summary["oracle_spread"], summary.get("realised_error")
    extrapolated = mse.get("quotient_extrapolated_to_infinite_draws")
    return ["", f"References for the ranking quotient (`benchmarks/ranking_reference.py {method}`, "
            f"{reference['date']}; validation cases, n = {n['cases']}×{n['draws']} at "
            f"{percent(str(reference['fraction']))} counts; {reference_conditions(reference, weights)}): "
            "ranking each draw's voxels by their **expected squared "
            f"error**, estimated on the other {n['draws'] - 1} draws against the noise-free image (knowable only "
            f"in simulation), gives a quotient of {mse['quotient_mean']:.2f} (range "
            f"{mse['quotient_range'][0]:.2f}–{mse['quotient_range'][1]:.2f}"
            + (f"; {extrapolated:.2f} extrapolated linearly in 1 / draws used to infinitely many, a low estimate "
               "as the gain per draw falls off slower than 1 / draws" if extrapolated is not None else "")
            + f"), by the noise spread alone {spread['quotient_mean']:.2f}"
            + (f"; ranking by the draw's own |error|, the most any map can reach, {bound['quotient_mean']:.2f} "
               f"(range {bound['quotient_range'][0]:.2f}–{bound['quotient_range'][1]:.2f})" if bound else "")
            + ". Intensity is hard to beat because the image carries the draw's own error (its brightest voxels "
            "are partly those whose error is large and positive this time)."]


def reliability_plot(rows: dict[tuple[str, str], list[dict]], path: Path) -> None:
    """Observed against predicted RMS error per σ decile, one line per (model, count level), log-log."""
    figure, axis = plt.subplots(figsize=(5, 4.5))
    extremes = []
    for (method, key), draws in rows.items():
        sigma, error = (np.sqrt(np.mean(np.square([d["reliability"][m] for d in draws]), axis=0))
                        for m in ("sigma_rms", "error_rms"))
        axis.plot(sigma, error, marker="o", label=f"{method}, {percent(key)} (n draws {len(draws)})")
        extremes += [sigma.min(), sigma.max(), error.min(), error.max()]
    low, high = max(min(extremes), 1e-3), max(extremes)
    axis.plot([low, high], [low, high], color="k", linewidth=0.8, label="calibrated")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("predicted RMS σ (% of noise-free body mean)")
    axis.set_ylabel("observed RMS error (%)")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def case_table(records: list[dict]) -> list[str]:
    lines = ["| case | seed | collimator | voxel mm | protocol | counts | draws | lesion regions |",
             "|---|---|---|---|---|---|---|---|"]
    for record in records:
        case, p = record["case"], record["case"]["protocol"]
        recon = (f"FBP Butterworth {p['butterworth_cutoff']}/{p['butterworth_order']}"
                 if p["reconstruction"] == "fbp" else f"{p['reconstruction']} {p['iterations']}×{p['subsets']}")
        extras = [f"{p['angles']} views/{p['arc_deg']:.0f}°"]
        if p["postfilter_fwhm_mm"]:
            extras.append(f"post-filter {p['postfilter_fwhm_mm']} mm")
        if p["scatter_fraction"]:
            extras.append(f"scatter {p['scatter_fraction']:.0%} ({p['scatter_correction']})")
        if p["penetration_fraction"]:
            extras.append(f"penetration {p['penetration_fraction']:.0%}")
        if case["simulator"] != "ours":
            extras.append(f"simulator {case['simulator']}")
        if case.get("background_scale", 1.0) != 1.0:
            extras.append(f"background activity × {case['background_scale']:g}")
        lines.append(f"| {case['name']} | {case['seed']} | {case['collimator']} | {case['voxel_mm']} | {recon}, "
                     f"{', '.join(extras)} | {p['total_counts']:.3g} | {record['draws']} | "
                     f"{len(record['regions'])} |")
    return lines


def nrmse_plot(records: list[dict], methods: list[str], keys: list[str], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for method in methods:
        points = [(100 * float(k), np.mean(np.concatenate(g))) for k in keys
                  if (g := per_case(records, method, k, lambda d, _r: d["vs_noise_free"]["nrmse"]))]
        if points:
            axis.plot(*zip(*points), marker="o", label=method,
                      linestyle="--" if method in CLASSICAL or method == "input" else "-")
    full = per_case(records, FULL, "1", lambda d, _r: d["vs_noise_free"]["nrmse"])
    if full:
        axis.axhline(np.mean(np.concatenate(full)), color="k", linewidth=0.8, label="full count (100 %)")
    axis.set_xlabel("counts (% of full)")
    axis.set_ylabel("NRMSE in body vs noise-free reconstruction")
    axis.set_xscale("log")
    axis.minorticks_off()
    axis.set_xticks([100 * float(k) for k in keys], [f"{100 * float(k):.0f}" for k in keys])
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def sphere_plot(records: list[dict], methods: list[str], key: str, order: list[str], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for offset, method in enumerate(methods):
        groups = region_groups(records, method, key, hot_sphere, 0, "noise_free")
        points = [(float(label.split()[0]) + 0.25 * (offset - len(methods) / 2), *bootstrap_ci(groups[label]))
                  for label in order if label in groups]
        if points:
            x, estimate, low, high = map(np.array, zip(*points))
            axis.errorbar(x, estimate, yerr=[estimate - low, high - estimate], marker="o", capsize=2, label=method)
    axis.axhline(0, color="k", linewidth=0.8)
    axis.set_xlabel("IEC sphere diameter (mm)")
    axis.set_ylabel(f"bias of sphere mean vs noise-free, % ({percent(key)} counts)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def link(path: Path) -> str:
    """``path`` relative to the repository (as BENCHMARKS.md links it), or as is when outside it."""
    return str(path.relative_to(REPOSITORY)) if path.is_relative_to(REPOSITORY) else str(path)


def case_runs(record: dict) -> list[dict]:
    """The timings of every run that made rows of a case record: earlier runs whose rows it kept, then its own."""
    return [*record.get("earlier_runs", []), record["timing"]]


def planned_cases(config: dict) -> int:
    """How many cases the mode of a record's ``config`` runs: its in-distribution quota plus its protocol variants
    (all of them when the mode names none)."""
    variants = config.get("ood")
    return sum(config.get("quota", {}).values()) + (len(OOD_VARIANTS) if variants is None else len(variants))


def from_scratch_timing(mode: str, results: Path = RESULTS, section_models: list[str] = ()) -> str:
    """A sentence on the timed run of ``mode`` (``quality.py --timing-file
    benchmarks/results/<mode>_run_timing.json`` into an empty folder), or "" when there is none; it names the
    cases not run and the models of ``section_models`` (those of the section's tables) that the timed run left
    out."""
    path = results / f"{mode}_run_timing.json"
    if not path.exists():
        return ""
    run = json.loads(path.read_text())
    not_run = {what: len(run.get(f"cases_{what}", [])) for what in ("kept", "skipped", "failed")}
    left_out = [m for m in section_models if m not in run["models"]]
    return (f" Timed run (`{run['command']}`, {run['date']}; {len(run['cases_run'])} cases run"
            + "".join(f", {n} {what}" for what, n in not_run.items() if n)
            + f"): **{run['wall_s'] / 60:.1f} min wall**, "
            f"{run['cpu_s'] / 60:.1f} CPU minutes, {run['jobs']} jobs × {run['threads']} torch thread on "
            f"{run['cpu_cores']} cores, 1-minute load {run['load_before'][0]:.1f} before and "
            f"{run['load_after'][0]:.1f} after; models {', '.join(run['models'])}"
            + (f" (not timed: {', '.join(left_out)})." if left_out else "."))


def section(mode: str, title: str, records: list[dict], images: Path = IMAGES) -> list[str]:
    """The Markdown lines of one result set (a mode's case records); its plots are written to ``images``."""
    inside, ood = in_distribution(records), out_of_distribution(records)
    methods = methods_of(records)
    keys = list(dict.fromkeys(k for r in inside for k in r["fractions"]))
    config = records[0]["config"]
    planned = planned_cases(config)
    per_case = [case_runs(r) for r in records]
    runs = [run for case in per_case for run in case]
    walls = [sum(run["wall_s"] for run in case) for case in per_case]
    cores = records[0]["timing"].get("cpu_cores", 2)  # records of 1 Dec 2026 before it was recorded: 2 cores
    lines = [f"## {title}", "",
             f"Models (sha256 of weights): {', '.join(f'`{m}` ({h})' for m, h in config['models'].items())}. "
             f"Files: `benchmarks/results/{mode}/*.json` ({len(records)} cases"
             + (f" of the mode's {planned}: a **partial run**; the command resumes it" if len(records) < planned
                else "") + "). n = cases × noise draws. "
             "Classical filters are tuned per volume against the noise-free reconstruction (oracle). "
             + (f"NLM and BM4D run on the first {config['slow_draws']} draws at "
                f"{', '.join(percent(str(f)) for f in config['slow_fractions'])} only. " if config["slow_draws"]
                else "NLM and BM4D are not run in this mode. ")
             + f"Diffusion models run on the first {config['diffusion_draws']} draws "
             f"(protocol variants: {config.get('ood_diffusion_draws', config['diffusion_draws'])}) at "
             f"{', '.join(percent(str(f)) for f in config['slow_fractions'])} counts"
             + ("" if config.get("diffusion_probes", True) else ", without robustness probes") + ".", "",
             f"Compute: {sum(r['cpu_s'] for r in runs) / 60:.0f} CPU minutes in all (one torch "
             f"thread per process; {len(runs)} runs, a case's later runs adding only changed models or probes); "
             f"wall time per case {min(walls):.0f}–{max(walls):.0f} s at a 1-minute load average of "
             f"{min(min(r['load_before'][0], r['load_after'][0]) for r in runs):.1f}–"
             f"{max(max(r['load_before'][0], r['load_after'][0]) for r in runs):.1f} "
             f"on {cores} cores." + from_scratch_timing(mode, section_models=list(config["models"])), "",
             "### Cases", "",
             "In-distribution cases are drawn by the training data generator of `SPECTDenoiseLib/dataset.py` (v2, "
             "the data of the models retrained for issue 10) with the benchmark seeds; for models trained on the "
             "earlier v1 data (the models shipped before that retraining: 360° OSEM-RR only, ≤ 6 iterations, "
             "exact or no scatter, no penetration, no added lesions or texture) several of these settings are "
             "new.", ""]
    lines += case_table(records)
    if inside:
        ten = "0.1" if "0.1" in keys else keys[0]
        sphere_order = [f"{d} mm" for d in (10, 13, 17, 22, 28, 37)]
        kinds = sorted({info["kind"] for r in inside for info in r["regions"].values()} - {"hot sphere"})
        plot = images / f"benchmark_nrmse_{mode}.png"
        nrmse_plot(inside, methods, keys, plot)
        lines += ["", "### Image quality against the noise-free reconstruction (main table)", "",
                  f"In-distribution cases. NRMSE = RMSE ÷ reference mean in the body ({BODY_RULE}); PSNR with "
                  "peak = reference max in the body; SSIM 3D. The full-count row is the error of the full-count "
                  "scan itself: the floor earlier benchmarks hid by using it as the reference.", "",
                  f"![NRMSE against count level]({link(plot)})", ""]
        lines += quality_table(inside, methods, keys, "vs_noise_free")
        lines += ["", "### Against the full-count reconstruction (second table, the papers' reference)", ""]
        lines += quality_table(inside, methods, keys, "vs_full")
        lines += ["", "### Fidelity ratio", "",
                  "NRMSE(method on the low-count draw vs noise-free) ÷ NRMSE(the same draw's full-count scan vs "
                  "noise-free). Below 1: the denoised low-count scan is closer to the noise-free image than a "
                  "full-count scan is. [95 % CI] (n).", ""]
        lines += fidelity_table(inside, methods, keys)
        plot = images / f"benchmark_spheres_{mode}.png"
        sphere_plot(inside, methods, ten, sphere_order, plot)
        lines += ["", f"### Lesions at {percent(ten)} counts over repeated noise draws", "",
                  f"![Sphere bias by diameter]({link(plot)})", ""]
        lines += region_table(inside, methods, ten, hot_sphere, sphere_order, 0,
                              "Hot IEC spheres, **mean**: bias vs noise-free in % [95 % CI], SD over draws in %, "
                              "(n = cases × draws); – : no hot sphere of that size with ≥ 8 voxels in these cases")
        lines += [""] + region_table(inside, methods, ten, hot_sphere, sphere_order, 1,
                                     "Hot IEC spheres, **max**: bias vs noise-free in % [95 % CI], "
                                     "SD over draws in %")
        lines += ["", "Recovery against the truth (phantom activity): RCmean / RCmax (region mean or max ÷ true "
                      "mean) / NEMA contrast recovery (C_region ÷ C_background − 1) ÷ (A_region ÷ A_background "
                      "− 1) with the same image's background, means over cases × draws; the noise-free column is "
                      "what the reconstruction itself recovers:", ""]
        lines += recovery_table(inside, methods, ten, hot_sphere, sphere_order)
        if kinds:
            lines += [""] + region_table(inside, methods, ten, lesion_kind, kinds, 0, "Other lesion kinds, "
                                         "**mean**: bias vs noise-free in % [95 % CI], SD in %")
            lines += [""] + region_table(inside, methods, ten, lesion_kind, kinds, 1,
                                         "Other lesion kinds, **max**: bias vs noise-free in % [95 % CI], SD in %")
            lines += ["", "Recovery against the truth, RCmean / RCmax / contrast recovery:", ""]
            lines += recovery_table(inside, methods, ten, lesion_kind, kinds)
        lines += ["", "### Background noise", "",
                  "Spatial CoV: SD ÷ mean of the voxels of the background tissue (eroded 2 voxels), per image, "
                  "averaged over draws (includes the phantom's texture). Ensemble noise: √(mean over those voxels "
                  "of the variance across draws) ÷ mean: the noise alone.", ""]
        lines += background_table(inside, methods, keys)
        probes = probe_table(inside)
        if probes:
            lines += ["", "### Robustness probes", "",
                      "The first draw at 10 % counts of each in-distribution case, presented differently; "
                      "largest |change| of a hot lesion's mean against the plainly denoised scan (n lesions). "
                      "Units: the scan × factor, the output ÷ factor. Hot spot: a blob at 20 × the body mean "
                      "(a sphere up to 40 mm, blurred by a quarter of its diameter, sized so that the blur stays "
                      "one FWHM clear of every lesion, placed in the body farthest from the lesions), subtracted "
                      "again from the output, so the cell is the model's change net of the blob's. Air margin: 16 "
                      "voxels of air (−1000 HU) on each side where the scan shows air. Cropped: to the body's "
                      "bounding box + 1 voxel. A change above 1 % names its case and region. "
                      + probes_version_note(inside), ""]
            lines += probes
        lines += uncertainty_lines(inside, mode, images)
        lines += ["", "### Classical filter tuning", "",
                  "Each filter's parameter is tuned per volume against the noise-free reconstruction (body "
                  "NRMSE): a 3-value log grid, extended ×/÷ 2 while the best value is on its edge, then refined "
                  "once (`baselines.tune`). BM4D gets the coloured noise power spectrum of the "
                  "square-root-stabilised image, measured on one extra independent noise draw of the same scan "
                  "minus the noise-free reconstruction (possible only in simulation, and generous to BM4D).", ""]
        lines += tuning_table(records)
    if ood:
        lines += ["", "### Out-of-distribution cases", "",
                  "Each changes one setting of a plain protocol (IEC or torso, OSEM-RR 4 × 8, 120 views, no "
                  "scatter) to a value the training data did not use (v1: the data of the models shipped on 1 Dec "
                  "2026; v2: `SPECTDenoiseLib/dataset.py` after issue 10's retraining). Cells: NRMSE vs "
                  "noise-free / fidelity ratio / mean |bias| of hot-lesion means vs noise-free, at "
                  f"{percent(ood[0]['fractions'][0])} counts.", ""]
        lines += ood_table(ood, methods)
    preservation = preservation_table(records)
    if preservation:
        lines += ["", "### Standard-count lesion preservation", "",
                  "Denoising must not remove a lesion, also not from a standard-count scan (issue 14's first "
                  "target: every hot lesion's mean within ±5 % of the input's). On the first noise draw of every "
                  "case, in distribution and out of distribution, each model denoises the **full-count** "
                  "reconstruction; per hot lesion region (the phantom's label as the VOI: hot spheres, lesions, "
                  "striata, tumours) the ratio of the denoised mean to the full-count scan's own mean. Cells: "
                  "lowest ratio / share of regions within ±5 % (n regions; n in cases for all regions together, "
                  "whose worst region is named as case and label). `(bare)`: the same network without the uptake "
                  "guard.", ""]
        lines += preservation
    targets = targets_table(records)
    if targets:
        lines += ["", "### Targets (issue 14)", "",
                  "Issue 14's targets at 10 % counts, one row per model (`(bare)`: without the uptake guard), "
                  "each cell the measured value (n): met or not met. **a** the standard-count preservation above "
                  "(all cases): lowest ratio of a hot region's mean after denoising the full-count scan to that "
                  "scan's own mean, share of regions within ±5 %; met when all are. **b** in-distribution cases: "
                  "mean bias against the noise-free reconstruction of the means of the hot regions with a "
                  "diameter (spheres and lesions), pooled over cases and draws per diameter as in the lesion "
                  "tables; the diameter ≥ 17 mm with the largest |bias| is shown (n of that diameter); met when "
                  "every such diameter is within ±5 %. **c** the same for diameters < 17 mm, as the method's "
                  "bias minus the input's own (each over all its draws) in percentage points; met when every "
                  "such diameter is within ±5 pp. **d** all cases: per draw the distance |total − full-count "
                  f"total| of the sum over the body ({BODY_RULE}) in % of the full-count total, for the output "
                  "and for the input, each averaged over the model's draws of a case; shown is the case with the "
                  "largest output ÷ input distance ratio; met when the output is no farther than the input in "
                  "every case. **e** the fidelity ratio (table above): mean over in-distribution cases and "
                  "draws [95 % CI], met at ≤ 1.0; and per out-of-distribution case the mean over its draws, the "
                  "worst case and the median over cases, met when every case is ≤ 1.2. **f** per "
                  "out-of-distribution case and draw the model's NRMSE against the noise-free reconstruction ÷ "
                  "the lowest NRMSE of the oracle-tuned classical filters of that case (only on draws where "
                  "every one of them ran), averaged over the draws; worst case and median over cases, met when "
                  "every case is ≤ 0.8. \"Not measured in this mode\": the result files hold nothing to "
                  "measure it on. What was tried to meet them, and what each step did: "
                  "[benchmarks/training/experiments/README.md](benchmarks/training/experiments/README.md).", ""]
        lines += targets
    return lines


def speed_lines() -> list[str]:
    lines = []
    for path in sorted(RESULTS.glob("speed_*.json")):
        speed = json.loads(path.read_text())
        if "cpu_cores" not in speed:
            continue
        lines += ["", f"## Speed ({speed['device']})", "",
                  f"`{speed['command']}` on {speed['date']}: {speed['machine']}, {speed['cpu_cores']} CPU cores, "
                  f"Python {speed['python']}, torch {speed['torch']}. End to end `spectdenoise denoise` (process "
                  "start, model load, read, denoise, write), medians over repeats; CPU = user + system time of "
                  "the process and its worker; load = the machine's 1-minute load average before and after each "
                  "run (other work running slows the wall time; a load above the core count means the runs shared "
                  "the machine, so rerun on an idle one for the figures a user sees); threads = the "
                  "`OMP_NUM_THREADS` the CLI gives its worker; measured = the run the row comes from (rows of "
                  "models or volumes left out of a later run's `--models`/`--volumes` are kept). Volumes at 4 mm "
                  "with smooth random activity: `128^3` and `256x256x200` are tissue to their edges (the slice "
                  "models' slowest case: each slice gets 16 voxels of air beyond the tissue, so 128² runs as "
                  "168²); `128^3 body in air` is a 36 × 24 cm trunk in a 51 cm field of view, the typical scan.",
                  "",
                  "| model | volume | wall s (median) | CPU s (median) | threads | peak MiB | load during runs | "
                  "repeats | measured |", "|---|---|---|---|---|---|---|---|---|"]
        for row in speed["results"]:
            if "skipped" in row:
                cells = [f"skipped ({row['skipped']})"] + [""] * 5
            elif "failed" in row:
                cells = [f"failed: {row['failed']}"] + [""] * 5
            else:
                cells = [f"{row['median_wall_s']:.1f}", f"{row['median_cpu_s']:.1f}", str(row["threads"]),
                         f"{row['median_peak_rss_mib']:.0f}", f"{row['load_min']:.1f}–{row['load_max']:.1f}",
                         str(row["repeats"])]
            measured = row.get("date", speed["date"])
            lines.append("| " + " | ".join([row["model"], row["size"], *cells, measured]) + " |")
    return lines


def shipped_data_run_seeds(models: Path = REPOSITORY / "Resources" / "Models") -> list[int]:
    """The run seeds of the data sets the shipped models were trained on, as their cards' data lines give them
    (``made by `spectdenoise dataset -o DIR --n N --seed S```)."""
    cards = " ".join(path.read_text(encoding="utf-8") for path in sorted(models.glob("*/README.md")))
    made = re.findall(r"`spectdenoise dataset [^`]*?--seed (\d+)[^`]*`", " ".join(cards.split()))
    return sorted({int(seed) for seed in made})


def seed_lines() -> list[str]:
    """The "Seeds" section: which run seeds made the training, validation and benchmark scans."""
    started = "; ".join(f"`{name}` {low}–{high}" for name, (low, high) in STARTING_WEIGHTS_SEEDS.items())
    data = ", ".join(map(str, shipped_data_run_seeds()))
    return ["## Seeds", "",
            f"- Training: the shipped models' data, run seeds {data} (case seeds: run seed × 1 000 000 + i; each "
            f"model card gives its data sets and case counts, `benchmarks/training/*.json` the settings); the "
            f"weights the default model and `spect-unet3d` started from: {started}.",
            f"- Validation, for model selection only: run seed {VALIDATION_RUN_SEED}, case seeds "
            f"{VALIDATION_RUN_SEED}000000 + i (`python benchmarks/quality.py --validation`).",
            f"- Benchmark: run seed {BENCHMARK_RUN_SEED}, case seeds {BENCHMARK_RUN_SEED}000000 + i (in "
            f"distribution) and {BENCHMARK_RUN_SEED}001000 + j (protocol variants). Noise draw d of case seed s: "
            "`numpy.random.default_rng([s, d])`.",
            f"- Retired: {RETIRED_SEEDS[0]}–{RETIRED_SEEDS[-1]} (the benchmark before issue 10; used to select "
            "the default model's fine-tuning, so used by neither set).", ""]


SUMMARY_DIGITS = 6
"""Decimals of the summary's means: more than any document prints, so that a model card rounding them once
prints what BENCHMARKS.md prints (rounding an already rounded 0.3575 gives 0.357, the raw mean 0.358)."""


def summary(mode: str, records: list[dict]) -> dict:
    """Headline numbers per model and count level (in-distribution cases, vs the noise-free reconstruction):
    mean NRMSE, PSNR, SSIM, fidelity ratio, with n, and for diffusion models the means of
    :data:`UNCERTAINTY_METRICS`; per model the standard-count lesion preservation over all cases (lowest ratio,
    share within ±5 %, n regions and cases); for model cards and README."""
    inside = in_distribution(records)
    out = {"mode": mode, "cases": [r["case"]["name"] for r in inside], "methods": {}}
    for method in methods_of(inside):
        for key in dict.fromkeys(k for r in inside for k in r["fractions"]):
            draws = [(d, r) for r in inside for d in draws_of(r, method, key)]
            if not draws:
                continue
            out["methods"].setdefault(method, {})[key] = {
                **{m: round(float(np.mean([d["vs_noise_free"][m] for d, _ in draws])), SUMMARY_DIGITS)
                   for m in ("nrmse", "psnr_db", "ssim")},
                "fidelity_ratio": round(float(np.mean([fidelity_ratio(d, r) for d, r in draws])), 3),
                "cases": len({r["case"]["name"] for _, r in draws}), "draws": len(draws)}
            calibrated = [d for d, _ in draws if "coverage_2sigma_pct" in d]
            if calibrated:
                out["methods"][method][key]["uncertainty"] = {
                    m: round(float(np.mean([d[m] for d in calibrated])), SUMMARY_DIGITS)
                    for m in UNCERTAINTY_METRICS}
    out["standard_count"] = {model: {"lowest_ratio": round(min(by_label["all"])[0], 4),
                                     "within_5pct_pct": round(within_tolerance_pct(by_label["all"]), 1),
                                     "regions": len(by_label["all"]), "cases": preservation_cases(records, model)}
                             for model, by_label in preservation_ratios(records).items()}
    out["targets"] = {model: {key: {"value": None if t.value is None else round(float(t.value), 4), "n": t.n,
                                    "met": t.met} for key, t in by_key.items()}
                      for model, by_key in target_results(records).items()}
    return out


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    lines = ["# Benchmarks", "",
             "Regenerate: `python benchmarks/quality.py --quick --jobs 2` (timed in the quick section) or "
             "`nice -n 10 python benchmarks/quality.py --jobs 2` (full, hours; resumable), "
             "`python benchmarks/speed.py`, then `python benchmarks/report.py`. Add "
             "`--models ID|FOLDER|NAME=FOLDER[:bare] ...` to test other models (`:bare`: without the uptake "
             "guard). A rerun keeps the rows that still hold and runs only changed models (new weights, guard or "
             "variance scale) or probes; `--rerun NAME` forces a method after an inference-code change. "
             "A diffusion model's variance scale is "
             "fitted on validation cases by `python benchmarks/calibrate_variance.py MODEL --write`. "
             "Design, references and statistics: the docstrings of `benchmarks/quality.py`, `cases.py`, "
             "`stats.py`, `baselines.py`, `probes.py`.", "",
             "Main reference: the **noise-free reconstruction** (expected projections, same reconstruction "
             "settings); the full-count scan, itself noisy, is the second reference. Sphere bias and SD come from "
             "repeated independent noise draws. Intervals: 95 %, two-stage bootstrap over cases and draws.", ""]
    lines += seed_lines()
    weights = {}
    for mode, title in SECTIONS:
        records = load(mode)
        if records:
            lines += section(mode, title, records) + [""]
            (RESULTS / f"summary_{mode}.json").write_text(json.dumps(summary(mode, records), indent=1) + "\n")
            weights = {**records[0]["config"]["models"], **weights}
    lines += ranking_reference_section(weights)
    lines += speed_lines()
    (REPOSITORY / "BENCHMARKS.md").write_text("\n".join(lines) + "\n")
    print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
