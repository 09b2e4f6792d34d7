"""Benchmark cases (benchmarks/cases.py): seeds disjoint from training and validation, OOD cases named, regions."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from cases import (  # noqa: E402
    BENCHMARK_RUN_SEED,
    OOD_VARIANTS,
    RETIRED_SEEDS,
    STARTING_WEIGHTS_SEEDS,
    VALIDATION_RUN_SEED,
    background_region,
    case_phantom,
    in_distribution_cases,
    lesion_regions,
    ood_cases,
)

from SPECTDenoiseLib.dataset import SEED_STRIDE  # noqa: E402


def test_benchmark_validation_and_training_seeds_are_disjoint():
    benchmark = {c.seed for c in in_distribution_cases({"iec": 2, "torso": 2})} | {c.seed for c in ood_cases()}
    validation = {case.seed for case in in_distribution_cases({"iec": 2, "torso": 2}, VALIDATION_RUN_SEED)}
    training = {seed for low, high in STARTING_WEIGHTS_SEEDS.values() for seed in range(low, high + 1)}
    assert not benchmark & validation and not benchmark & training and not validation & training
    assert not (benchmark | validation) & set(RETIRED_SEEDS)
    assert all(seed // SEED_STRIDE == 9 for seed in benchmark)


def test_no_shipped_model_trained_on_the_validation_or_benchmark_run_seed():
    from report import shipped_data_run_seeds

    trained_on = shipped_data_run_seeds()
    assert trained_on, "the model cards name no `spectdenoise dataset ... --seed N` data set"
    assert VALIDATION_RUN_SEED not in trained_on and BENCHMARK_RUN_SEED not in trained_on


def test_in_distribution_cases_meet_the_family_quota_and_cost_cap():
    cases = in_distribution_cases({"iec": 1, "torso": 2}, max_cost=1.5)
    assert sorted(case.family for case in cases) == ["iec", "torso", "torso"]
    assert all(case.ood is None for case in cases)


def test_every_out_of_distribution_case_says_how_it_differs():
    cases = ood_cases()
    assert len(cases) == len(OOD_VARIANTS)
    assert all(case.name.startswith("ood-") and case.ood for case in cases)
    assert {case.simulator for case in cases} == {"ours", "pytomography"}
    assert len({case.seed for case in cases}) == len(cases)


def test_iec_regions_are_the_six_spheres_with_their_kind_and_diameter():
    case = in_distribution_cases({"iec": 1})[0]
    phantom = case_phantom(case)
    masks, info = lesion_regions(phantom)
    assert {i["diameter_mm"] for i in info.values()} <= {10.0, 13.0, 17.0, 22.0, 28.0, 37.0}
    assert {i["kind"] for i in info.values()} <= {"hot sphere", "cold sphere"}
    name, background = background_region(phantom)
    assert name == "background"
    assert not np.any(background & np.any(list(masks.values()), axis=0))


def test_cold_background_variant_empties_the_background_and_keeps_the_spheres_and_the_other_seeds():
    names = [variant.name for variant in OOD_VARIANTS]
    assert names[-1] == "cold-background"
    seeds = {case.name: case.seed for case in ood_cases()}
    assert (seeds["ood-osem-no-rr"], seeds["ood-pytomography"]) == (9 * SEED_STRIDE + 1000, 9 * SEED_STRIDE + 1010)
    cold = ood_cases(("cold-background",))[0]
    assert cold.seed == 9 * SEED_STRIDE + 1000 + len(OOD_VARIANTS) - 1
    assert cold.background_scale == 0.01 and cold.record()["background_scale"] == 0.01
    assert "almost empty background" in cold.ood
    plain, empty = case_phantom(dataclasses.replace(cold, background_scale=1.0)), case_phantom(cold)
    _, background = background_region(plain)
    assert empty.activity[background].mean() == pytest.approx(0.01 * plain.activity[background].mean(), rel=1e-5)
    masks, info = lesion_regions(empty)
    hot = [name for name, i in info.items() if i["kind"] == "hot sphere"]
    assert hot and all(np.array_equal(empty.activity[masks[n]], plain.activity[masks[n]]) for n in hot)
