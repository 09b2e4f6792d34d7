"""Fine-tuning gain benchmark (benchmarks/finetune_gain.py) at tiny sizes: projections written as NM files read
back as the scanner made them, pairs in the layout ``finetune`` reads, a noise-free reference on ``simulate``'s
grid, a loadable fine-tuned package and a result file that holds every condition."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from cases import BENCHMARK_RUN_SEED, OOD_SEED_OFFSET, OOD_VARIANTS, VALIDATION_RUN_SEED  # noqa: E402
from finetune_gain import QUICK, Study, read_array, run, scanner_case, write_projections  # noqa: E402
from methods import load_models  # noqa: E402
from stats import ct_body  # noqa: E402

from SPECTDenoiseLib.dataset import SEED_STRIDE  # noqa: E402
from SPECTDenoiseLib.projections import read_nm_projections, thin_and_reconstruct  # noqa: E402
from SPECTDenoiseLib.train.data import find_cases  # noqa: E402

torch.set_num_threads(1)


def test_projections_round_trip_through_an_nm_file(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.poisson(5.0, (12, 6, 8)).astype(np.float32)
    angles = 30.0 + np.arange(12) * 30.0
    write_projections(tmp_path / "p.dcm", counts, angles, (4.0, 3.0), 150.0)
    read = read_nm_projections(tmp_path / "p.dcm")
    order = np.argsort(angles % 360.0)
    assert np.allclose(read.angles_deg, np.sort(angles % 360.0))
    assert np.array_equal(read.counts[:, ::-1, :], counts[order])  # rows stored head first
    assert read.pixel_spacing_mm == (4.0, 3.0) and read.orbit_radius_mm == pytest.approx(150.0)


def test_counts_beyond_uint16_are_refused(tmp_path):
    with pytest.raises(ValueError, match="65 535"):
        write_projections(tmp_path / "p.dcm", np.full((4, 2, 2), 7e4), np.arange(4) * 90.0, (4.0, 4.0), 150.0)


def test_seeds_are_the_validation_and_benchmark_ranges_beyond_the_benchmarks_cases():
    """cases.py uses run seed × 10⁶ + i (in distribution, i < 1000) and + 1000 + j (one per protocol variant)."""
    pairs = [scanner_case(VALIDATION_RUN_SEED, i, QUICK).seed for i in range(20)]
    held_out = [scanner_case(BENCHMARK_RUN_SEED, i, QUICK).seed for i in range(20)]
    assert {s // SEED_STRIDE for s in pairs} == {8} and {s // SEED_STRIDE for s in held_out} == {9}
    first_free = OOD_SEED_OFFSET + len(OOD_VARIANTS)
    assert min(s % SEED_STRIDE for s in pairs + held_out) >= first_free
    assert len(set(pairs + held_out)) == 40


@pytest.mark.slow
def test_noise_free_reference_matches_the_scanners_own(tmp_path):
    """The reference made on ``simulate``'s grid from an NM file is the scanner's noise-free reconstruction (up
    to the count units): geometry, angles and μ-map line up."""
    study = Study.make(scanner_case(BENCHMARK_RUN_SEED, 0, QUICK))
    study.projections(tmp_path / "p.dcm", study.scanner.expected)  # rounded to counts: almost noise-free
    reference, own = study.noise_free(tmp_path / "p.dcm"), study.scanner.noise_free()
    protocol = study.case.protocol
    from_file = sitk.GetArrayFromImage(thin_and_reconstruct(
        read_nm_projections(tmp_path / "p.dcm"), (), study.case.collimator, protocol.iterations, protocol.subsets,
        mu_map=study.phantom.mu_map)[0])
    body = ct_body(study.phantom.ct)
    assert reference.shape == own.shape == from_file.shape
    assert np.corrcoef(reference[body], own[body])[0, 1] > 0.999
    assert np.corrcoef(reference[body], from_file[body])[0, 1] > 0.999


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("finetune_gain")
    return work, run(work, QUICK, work / "result.json")


@pytest.mark.slow
def test_pairs_are_in_the_layout_finetune_reads(quick_run):
    work, _ = quick_run
    cases = find_cases(work / "pairs")
    assert len(cases) == QUICK.studies
    for case in cases:
        assert case.target.name == "full.nii.gz" and [p.name for p in case.low.values()] == ["low.nii.gz"]
        assert case.ct is not None and case.ct.name == "ct.nii.gz"
        low, full = read_array(case.low[0.0]), read_array(case.target)
        assert low.shape == full.shape and low.std() > full.std()  # the thinned scan is the noisier one


@pytest.mark.slow
def test_fine_tuned_package_loads_and_differs_from_the_start(quick_run):
    work, record = quick_run
    models = load_models([str(work / "model")])
    assert models["model"].model.config.architecture == "unet2d"
    assert record["models"]["fine-tuned"] != record["models"]["spect-unet25d"]


@pytest.mark.slow
def test_result_file_holds_every_condition(quick_run):
    work, record = quick_run
    assert json.loads((work / "result.json").read_text()) == json.loads(json.dumps(record))
    for key in ("scanner", "sizes", "seeds", "models", "finetune_command", "threads", "machine", "timing",
                "pair_studies", "summary", "held_out"):
        assert key in record, key
    assert set(record["timing"]) == {"pairs", "finetune", "held_out"}
    assert all({"wall_s", "cpu_s", "load_before", "load_after"} <= set(t) for t in record["timing"].values())
    assert record["sizes"]["steps"] == QUICK.steps and len(record["seeds"]["held_out"]) == QUICK.held_out
    summary = record["summary"]
    assert set(summary["input"]) >= {"nrmse_vs_noise_free", "nrmse_vs_full"}
    assert summary["n"] == {"studies": QUICK.held_out, "draws_per_study": QUICK.draws,
                            "hot_lesions": summary["n"]["hot_lesions"]}
    entry = record["held_out"][0]["methods"]["spect-unet25d"][0]
    assert entry["vs_noise_free"]["nrmse"] < record["held_out"][0]["methods"]["input"][0]["vs_noise_free"]["nrmse"]
