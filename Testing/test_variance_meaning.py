"""What the variance map means, said once (``VARIANCE_MEANING``) and shown by the CLI and the model cards, and each
diffusion card's measured coverage written from the benchmark summaries by ``spectdenoise models card``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from model_fixtures import make_package

from SPECTDenoiseLib import hub
from SPECTDenoiseLib.cli import main
from SPECTDenoiseLib.models.config import VARIANCE_MEANING, ModelConfig
from SPECTDenoiseLib.train.card import BENCHMARK_RESULTS, card_metadata, refresh_card, with_metadata

SHIPPED = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "spect-diffusion-refine"
BODY = """# tiny-refine

A tiny predict-and-refine model.

## Model
- Architecture: `refine`
- Outputs: written before the scale was refitted × 1.5 (calibrated on validation cases)

## Training
- Data: 3 test pairs

## Limits
- Not a medical device.
"""


def _uncertainty(quotient: float) -> dict:
    return {"coverage_1sigma_pct": 70.245, "coverage_2sigma_pct": 91.807, "error_ratio_variance": 3.623,
            "error_ratio_intensity": 4.113, "error_ratio_quotient": quotient,
            "spearman_variance_vs_squared_error": 0.227}


def _diffusion_package(folder: Path, results: Path, quotient: float) -> Path:
    """A tiny diffusion package (variance_scale 0.75) with a hand-made card, and a quick benchmark summary that
    measured its variance at 10 % counts in ``results``."""
    make_package(folder, "diffusion", diffusion={"train_timesteps": 1000, "schedule": "linear", "default_steps": 2,
                                                 "default_samples": 2, "variance_scale": 0.75})
    metadata = card_metadata("tiny-refine", ModelConfig.load(folder / "config.json"), "3 test pairs")
    (folder / "README.md").write_text(with_metadata(BODY, metadata), encoding="utf-8")
    results.mkdir()
    summary = {"mode": "quick", "cases": ["a", "b"], "methods": {"tiny-refine": {"0.1": {
        "nrmse": 0.29, "psnr_db": 36.9, "ssim": 0.91, "fidelity_ratio": 1.2, "cases": 2, "draws": 4,
        "uncertainty": _uncertainty(quotient)}}}}
    (results / "summary_quick.json").write_text(json.dumps(summary), encoding="utf-8")
    return folder


def test_refreshing_a_diffusion_card_rewrites_its_variance_lines_from_the_config_and_the_benchmark(tmp_path):
    package = _diffusion_package(tmp_path / "tiny-refine", tmp_path / "results", quotient=0.888)
    refresh_card(package, tmp_path / "results")
    text = (package / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    outputs = next(line for line in lines if line.startswith("- Outputs:"))
    assert outputs.endswith("× 0.75 (calibrated on validation cases)")  # the config's scale, not the stale 1.5
    assert f"- Variance: {VARIANCE_MEANING}" in lines
    (measured,) = [line for line in lines if line.startswith(hub.VARIANCE_MEASURED)]
    assert ("(quick benchmark: 2 simulated cases, 4 noise draws in all, 10 % counts; body voxels against the "
            "noise-free image): 70.2 % within 1 σ and 91.8 % within 2 σ") in measured
    # the quotient with two decimals, as BENCHMARKS.md prints it
    assert "worse than the denoised brightness does" in measured and "quotient 0.89)" in measured
    assert "read it as a calibrated noise level" in measured
    assert "## Training\n- Data: 3 test pairs\n\n## Limits\n- Not a medical device.\n" in text  # the rest is kept
    refresh_card(package, tmp_path / "results")
    assert (package / "README.md").read_text(encoding="utf-8") == text  # a second refresh changes nothing


def test_a_variance_that_ranks_errors_better_than_brightness_is_said_to(tmp_path):
    package = _diffusion_package(tmp_path / "tiny-refine", tmp_path / "results", quotient=1.3)
    refresh_card(package, tmp_path / "results")
    (measured,) = hub.variance_measured(package)
    assert "better than the denoised brightness does" in measured and "noise level" not in measured


def test_the_shipped_diffusion_card_is_what_the_generator_writes_from_the_current_benchmark(tmp_path):
    """If this fails after a benchmark or a recalibration, run: spectdenoise models card
    Resources/Models/spect-diffusion-refine."""
    copy = tmp_path / SHIPPED.name
    copy.mkdir()
    for name in ("README.md", "config.json"):
        shutil.copy(SHIPPED / name, copy / name)
    refresh_card(copy, BENCHMARK_RESULTS)
    assert (copy / "README.md").read_text(encoding="utf-8") == (SHIPPED / "README.md").read_text(encoding="utf-8")
    assert any(line.startswith("Variance measured (quick benchmark") for line in hub.variance_measured(SHIPPED))


def test_a_card_without_measured_lines_has_none(tmp_path):
    make_package(tmp_path / "unet", "unet25d")
    assert hub.variance_measured(tmp_path / "unet") == [] and hub.variance_measured(tmp_path / "none") == []


def test_the_cli_help_of_variance_says_what_it_means(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["denoise", "--help"])
    assert stop.value.code == 0
    assert VARIANCE_MEANING in " ".join(capsys.readouterr().out.split())  # argparse wraps it; '%' shown as is
