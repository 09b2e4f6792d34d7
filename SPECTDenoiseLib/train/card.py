"""The model card (``README.md`` of a model package): written at the end of training, refreshed after benchmarks.

A card is Hub-standard Markdown: YAML metadata (:func:`card_metadata`: licence, ``library_name``, tags, the
training data summary and, once benchmarked, a ``model-index`` of results) above the Markdown body
(:func:`model_card`). :func:`refresh_card` rewrites the metadata of an existing package's card from its
``config.json``, its body's data line and ``benchmarks/results``, and of the body only a diffusion model's
generated lines (:func:`variance_lines`: outputs, what the variance means, its measured coverage)
(``spectdenoise models card FOLDER``).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

from torch import nn

from ..errors import ModelError
from ..hub import CARD_TAGS, LIBRARY_NAME, LICENSE, VARIANCE_MEASURED
from ..io import atomic_output
from ..models.config import VARIANCE_MEANING, ModelConfig
from .settings import TrainSettings

REPOSITORY = Path(__file__).resolve().parents[2]
BENCHMARK_RESULTS = REPOSITORY / "benchmarks" / "results"
_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)  # the metadata block (any content, valid or not)
_DATA_LINE = re.compile(r"^- Data: (?P<data>.+)$", re.MULTILINE)
_VARIANCE_LINES = re.compile(r"^- Outputs: .*\n(?:- Variance.*\n)*", re.MULTILINE)  # what variance_lines writes


def model_card(settings: TrainSettings, config: ModelConfig, network: nn.Module, best_validation: float,
               log: list[dict]) -> str:
    """Return the Markdown model card: what the model is for, how it was trained and how to retrain it."""
    parameters = sum(p.numel() for p in network.parameters())
    seconds = _training_seconds(log)
    lines = [
        f"# {settings.name}",
        "",
        settings.description or config.description,
        "",
        "## Model",
        f"- Architecture: `{config.architecture}` ({parameters:,} parameters), kind: {config.kind}, "
        f"sampling: {config.sampling}" + (f" (2.5D, ±{config.context_slices} slices)" if config.context_slices else ""),
        f"- Inputs: {', '.join(config.input_channels)}; intensity normalisation: {config.normalisation}",
        f"- Trained voxel sizes: {config.voxel_mm_range[0]}–{config.voxel_mm_range[1]} mm; count fractions: "
        f"{', '.join(f'{f:g}' for f in config.count_fractions) or 'user data'}; tracers: "
        f"{', '.join(config.tracers) or 'unspecified'}",
        *variance_lines(config, settings.name),
        "",
        "## Training",
        f"- Data: {_describe_data(settings.data)}",
        "- Loss: " + (_diffusion_training(settings) if config.kind == "diffusion" else
                       f"L1 + {settings.ssim_weight:g}·(1 − SSIM), lesion attention β = {settings.lesion_weight:g}, "
                       f"lesion-mean term γ = {settings.mean_weight:g}; {settings.lesion_patch_fraction:.0%} of "
                       f"windows centred on lesions; intensity scale × {settings.scale_range[0]:g}–"
                       f"{settings.scale_range[1]:g} (log-uniform)"),
        f"- {settings.steps} steps, batch {settings.batch_size}, patch {settings.patch}, Adam lr "
        f"{settings.learning_rate:g} (cosine), seed {settings.seed}; {seconds / 60:.0f} min on {_where()}",
        f"- Best validation loss (held-out cases): {best_validation:.4f}",
        f"- Reproduce: {_reproduce(settings)} in the SPECTDenoise repository after making the data above (the data "
        "runs stopped at the case counts given); on a GPU raise `steps`, `batch_size` and the network width.",
        "",
        "## Evaluation",
        "See `BENCHMARKS.md` in the SPECTDenoise repository for RMSE/PSNR/SSIM and SUV bias on held-out simulated "
        "cases at 10–50 % counts against Gaussian, TV, NLM and BM4D filters.",
        "",
        "## Limits",
        "- Trained on simulated SPECT (analytic phantoms, parallel-hole collimators, OSEM). Real scans differ in "
        "scatter, reconstruction and anatomy: check denoised numbers against the input in the difference map.",
        "- Not a medical device; for research and teaching.",
        "",
        "## Licence",
        "Apache-2.0, as SPECTDenoise.",
        "",
    ]
    return with_metadata("\n".join(lines), card_metadata(settings.name, config, _describe_data(settings.data)))


def _diffusion_training(settings: TrainSettings) -> str:
    return ("v-prediction MSE of the residual (noise-free target − base estimate), base frozen"
            + (f" (started from `{Path(settings.base_model).name}`)" if settings.base_model else "")
            + (f"; EMA of the weights (decay {settings.ema_decay:g}) validated and exported"
               if settings.ema_decay else ""))


def variance_lines(config: ModelConfig, name: str, results: Path | None = None) -> list[str]:
    """A diffusion model's card lines (none for a deterministic one): its outputs, what the variance means
    (:data:`~SPECTDenoiseLib.models.config.VARIANCE_MEANING`) and, when ``results`` (a folder of
    ``summary_<mode>.json`` benchmark summaries) measured model ``name``'s variance, a
    :data:`~SPECTDenoiseLib.hub.VARIANCE_MEASURED` line per benchmark mode and count level."""
    if config.kind != "diffusion":
        return []
    d = config.diffusion
    pooling = config.diffusion_setting("variance_pooling_voxels")
    outputs = (f"- Outputs: the denoised image is the frozen U-Net's estimate after the uptake guard; the variance "
               f"map is the mean squared spread around that image of sampled refinements of the estimate (DDIM with "
               f"v-prediction, zero terminal SNR and trailing steps, "
               f"{d['schedule']} betas, {d['train_timesteps']} training steps; by default {d['default_samples']} "
               f"samples × {d['default_steps']} steps)"
               + (f", averaged over a Gaussian neighbourhood of σ = {pooling:g} voxel{'s' if pooling != 1 else ''},"
                  if pooling else "")
               + f" × {d['variance_scale']:g}"
               + (" (uncalibrated)" if d["variance_scale"] == 1 else " (calibrated on validation cases)"))
    return [outputs, f"- Variance: {VARIANCE_MEANING}",
            *(_variance_measured(results, name) if results is not None else [])]


def _variance_measured(results: Path, name: str) -> list[str]:
    """The measured coverage and error ranking of model ``name``'s variance, from the benchmark summaries."""
    lines = []
    for path in sorted(Path(results).glob("summary_*.json")):
        summary = json.loads(path.read_text(encoding="utf-8"))
        for fraction, values in sorted(summary["methods"].get(name, {}).items(), key=lambda item: float(item[0])):
            u = values.get("uncertainty")
            if u is None:
                continue
            quotient = round(u["error_ratio_quotient"], 2)  # the words follow the value printed
            ranks = "better than" if quotient > 1 else "worse than" if quotient < 1 else "as well as"
            lines.append(
                f"{VARIANCE_MEASURED} ({summary['mode']} benchmark: {values['cases']} simulated cases, "
                f"{values['draws']} noise draws in all, {100 * float(fraction):.0f} % counts; body voxels against "
                f"the noise-free image): {u['coverage_1sigma_pct']:.1f} % within 1 σ and "
                f"{u['coverage_2sigma_pct']:.1f} % within 2 σ (68 and 95 % if exactly calibrated). It ranks voxels "
                f"by error {ranks} the denoised brightness does (mean |error| in the top-decile variance voxels ÷ "
                f"bottom half {u['error_ratio_variance']:.2f}, ranking by brightness "
                f"{u['error_ratio_intensity']:.2f}: quotient {quotient:.2f})"
                + ("." if quotient > 1 else ": read it as a calibrated noise level, not as a map of where the "
                                            "model is wrong."))
    return lines


def card_metadata(name: str, config: ModelConfig, data_summary: str, results: Path | None = None):
    """The Hub metadata (``huggingface_hub.ModelCardData``) of model ``name``: licence, library, tags (the
    project's, ``spect``, ``denoising``, ``3d-slicer``, ``medical-imaging`` and the tracers), pipeline tag, the
    training data summary, inputs, kind and count fractions, and, when ``results`` (a folder of
    ``quality*.json`` benchmark files) holds rows of ``name``, a ``model-index`` of its NRMSE/PSNR/SSIM."""
    from huggingface_hub import ModelCardData

    tracers = [tracer.lower() for tracer in config.tracers]
    evaluations = benchmark_results(results, name) if results is not None else []
    return ModelCardData(
        model_name=name, license=LICENSE, library_name=LIBRARY_NAME, pipeline_tag="image-to-image",
        tags=[*CARD_TAGS, *tracers], eval_results=evaluations or None, training_data=data_summary,
        inputs=list(config.input_channels), kind=config.kind, count_fractions=list(config.count_fractions),
        tracers=list(config.tracers),
    )


def with_metadata(body: str, metadata) -> str:
    """The card text: ``metadata`` as YAML between ``---`` lines, then the Markdown ``body``."""
    return f"---\n{metadata.to_yaml()}\n---\n{body.lstrip()}"


def benchmark_results(results: Path, name: str) -> list:
    """``huggingface_hub.EvalResult`` rows of model ``name``: NRMSE, PSNR (dB) and SSIM in the body per count level,
    from the benchmark summaries (``summary_<mode>.json``: noise-free reference, repeated noise draws) when they
    hold ``name``, else from the retired ``quality*.json`` files (full-count reference, one draw per case)."""
    rows = []
    for path in sorted(Path(results).glob("summary_*.json")):
        summary = json.loads(path.read_text(encoding="utf-8"))
        for fraction, values in sorted(summary["methods"].get(name, {}).items(), key=lambda item: float(item[0])):
            counts = f"{100 * float(fraction):.0f} % counts"
            dataset = (f"SPECTDenoise benchmark ({summary['mode']}), noise-free reference ({values['cases']} cases, "
                       f"{values['draws']} noise draws, {counts})")
            rows += _eval_rows(dataset, counts, values, f"{summary['mode']}-")
    if rows:
        return rows
    records = [record for path in sorted(Path(results).glob("quality*.json"))
               for record in json.loads(path.read_text(encoding="utf-8"))["records"] if record["method"] == name]
    by_fraction = defaultdict(list)
    for record in records:
        by_fraction[record["fraction"]].append(record)
    for fraction, group in sorted(by_fraction.items()):
        counts = f"{100 * fraction:.0f} % counts"
        dataset = f"SPECTDenoise held-out simulated SPECT ({len({r['case'] for r in group})} cases, {counts})"
        means = {key: sum(r[key] for r in group) / len(group) for key in ("nrmse", "psnr_db", "ssim")}
        rows += _eval_rows(dataset, counts, means)
    return rows


def _eval_rows(dataset: str, counts: str, values: dict, config_prefix: str = "") -> list:
    """EvalResult rows of one benchmark table cell (``values`` holds nrmse, psnr_db and ssim); the dataset config is
    ``config_prefix`` + the count level (e.g. ``quick-10pct-counts``: the Hub groups results by config, so each
    benchmark mode needs its own)."""
    from huggingface_hub import EvalResult

    return [EvalResult(task_type="image-to-image", task_name="Low-count SPECT denoising",
                       dataset_type="simulated-spect", dataset_name=dataset,
                       dataset_config=config_prefix + counts.replace(" % ", "pct-"), dataset_split="test",
                       metric_type=metric,
                       metric_name=f"{metric.upper()} in the body at {counts}", metric_value=round(values[key], digits))
            for metric, key, digits in (("nrmse", "nrmse", 3), ("psnr", "psnr_db", 1), ("ssim", "ssim", 3))]


def refresh_card(folder: str | Path, results: Path | None = BENCHMARK_RESULTS) -> Path:
    """Rewrite the metadata of the card of the package in ``folder`` and return the card.

    The body is kept except, for a diffusion model, its ``- Outputs:`` line and the ``- Variance`` lines after it,
    rewritten by :func:`variance_lines` from the config and ``results`` (so the card follows a new
    ``variance_scale`` and benchmark). The training data summary is taken from the body's ``- Data:`` line;
    raises ModelError if the package has no card or its body has no such line.
    """
    folder = Path(folder)
    path = folder / "README.md"
    if not path.is_file():
        raise ModelError(f"The model package '{folder}' has no model card (README.md) to refresh.")
    body = _FRONT_MATTER.sub("", path.read_text(encoding="utf-8"), count=1)
    data = _DATA_LINE.search(body)
    if data is None:
        raise ModelError(f"The model card '{path}' has no '- Data:' line to take the training data summary from.")
    config = ModelConfig.load(folder / "config.json")
    name = _card_name(body, folder)
    generated = "".join(f"{line}\n" for line in variance_lines(config, name, results))
    body = _VARIANCE_LINES.sub(lambda _: generated, body, count=1) if generated else body
    metadata = card_metadata(name, config, data["data"], results)
    with atomic_output(path) as temporary:
        temporary.write_text(with_metadata(body, metadata), encoding="utf-8")
    return path


def _card_name(body: str, folder: Path) -> str:
    """The model's name: the card's first ``# `` title, else the folder's name."""
    title = re.search(r"^# (?P<name>\S+)", body, re.MULTILINE)
    return title["name"] if title else folder.name


def _reproduce(settings: TrainSettings) -> str:
    """The command that repeats this run: ``train`` with its shipped settings file (which names any starting
    weights), else ``finetune`` with its options."""
    shipped = Path("benchmarks", "training", f"{settings.name}.json")
    if (REPOSITORY / shipped).is_file():
        start = f" (starting weights: `{_shown(settings.initial_weights)}`)" if settings.initial_weights else ""
        return f"`spectdenoise train --config {shipped}`{start}"
    if not settings.initial_weights:
        return "`spectdenoise train --config SETTINGS.json` with the settings above"
    start = _shown(settings.initial_weights) if Path(settings.initial_weights).is_dir() else settings.initial_weights
    return (f"`spectdenoise finetune --model {start} --data {' '.join(map(_shown, settings.data))} -o OUTPUT "
            f"--steps {settings.steps} --learning-rate {settings.learning_rate:g} --batch-size {settings.batch_size} "
            f"--lesion-weight {settings.lesion_weight:g} --validation-cases {settings.validation_cases} "
            f"--seed {settings.seed}`")


def _training_seconds(log: list[dict]) -> float:
    """Total training time over resumed segments (each segment's clock restarts at 0)."""
    total, previous = 0.0, 0.0
    for record in log:
        if record["seconds"] < previous:
            total += previous
        previous = record["seconds"]
    return total + previous


def _shown(folder: str) -> str:
    """``folder`` relative to the repository when it lies inside it (the card's commands run there), else as given;
    a folder reached through a link inside the repository (``data -> /disk/data``) keeps its path there."""
    for path in (Path(os.path.abspath(folder)), Path(folder).resolve()):
        if path.is_relative_to(REPOSITORY):
            return str(path.relative_to(REPOSITORY))
    return folder


def _describe_data(folders: list[str]) -> str:
    descriptions = []
    for folder in folders:
        manifest = Path(folder) / "manifest.json"
        if not manifest.exists():
            descriptions.append(f"user pairs in '{Path(folder).name}'")
            continue
        cases = json.loads(manifest.read_text(encoding="utf-8"))["cases"]
        families = Counter(case.get("family", "?") for case in cases)
        collimators = sorted({case.get("collimator", "?") for case in cases})
        fractions = sorted({float(f) for case in cases for f in case.get("low", {})})
        voxels = [case["voxel_mm"] for case in cases if case.get("voxel_mm")]
        run_seeds = sorted({case["seed"] // 1_000_000 for case in cases if "seed" in case})
        descriptions.append(
            f"'{Path(folder).name}': {len(cases)} simulated cases "
            f"({', '.join(f'{n} {k}' for k, n in sorted(families.items()))}; made by `spectdenoise dataset -o "
            f"{_shown(folder)} --n {len(cases)} --seed {', '.join(map(str, run_seeds))}`); collimators "
            f"{', '.join(collimators)}; count fractions {', '.join(f'{f:g}' for f in fractions)}; voxel sizes "
            f"{min(voxels):g}–{max(voxels):g} mm"
        )
    return "; ".join(descriptions)


def _where() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else _cpu_threads(torch.get_num_threads())
    return f"{device}, Python {sys.version.split()[0]}, torch {torch.__version__}"


def _cpu_threads(threads: int) -> str:
    return f"CPU ({threads} thread{'s' if threads != 1 else ''})"
