"""The quality benchmark end to end on a tiny IEC case: simulator draws, a model loaded from a folder, oracle
baselines, probes, the per-case record and the report built from it."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality  # noqa: E402
import report  # noqa: E402
from cases import Case, CaseScans, case_phantom, lesion_regions  # noqa: E402
from checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from methods import BARE, default_specs, load_models, model_name, run_model  # noqa: E402
from model_fixtures import make_package  # noqa: E402
from stats import VoxelEnsemble, ct_body  # noqa: E402

from SPECTDenoiseLib.hub import read_catalogue  # noqa: E402
from SPECTDenoiseLib.simulate import ScanProtocol  # noqa: E402

TINY_CASE = Case("iec-tiny", "iec", 9000013, "Tc99m-LEHR", 12.0,
                 ScanProtocol(total_counts=2e6, angles=24, iterations=2, subsets=4))
TINY_MODE = dataclasses.replace(quality.MODES["quick"], draws=3, fractions=(0.1, 0.25),
                                baselines=("gaussian", "tv", "nlm", "bm4d"), slow_draws=1, diffusion_draws=1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folders = tmp_path_factory.mktemp("models")
    unet = make_package(folders / "tiny-unet25d", "unet25d")
    diffusion = make_package(folders / "diffusion", "diffusion")
    return load_models([str(unet), f"{unet}{BARE}", f"tiny-diffusion={diffusion}"])


@pytest.fixture(scope="module")
def record(models):
    return quality.run_case(TINY_CASE, TINY_MODE, models, {"mode": "test", "models": {"tiny-unet25d": "x"},
                                                           "slow_draws": 0, "slow_fractions": [0.1],
                                                           "diffusion_draws": 2}, probes=True)


def test_model_specs_accept_ids_folders_and_named_folders(tmp_path):
    assert model_name("spect-unet25d") == "spect-unet25d"
    assert model_name(str(tmp_path)) == tmp_path.name
    assert model_name(f"stage1={tmp_path}") == "stage1"
    assert model_name("spect-unet25d:bare") == "spect-unet25d (bare)"
    assert model_name(f"stage1={tmp_path}:bare") == "stage1 (bare)"


def test_every_mode_runs_the_default_model_also_without_its_uptake_guard():
    default = read_catalogue()["default"]
    assert default_specs(default_only=True) == [default, f"{default}:bare"]
    assert default_specs()[-1] == f"{default}:bare" and default in default_specs()


def test_a_bare_spec_runs_the_network_without_the_uptake_guard_and_says_so_in_its_fingerprint(models):
    """A hot 2-voxel blob in an almost empty noisy volume, which the tiny network changes beyond the noise."""
    rng = np.random.default_rng(4)
    spect = np.full((24, 48, 48), 0.05, np.float32)
    spect[6:18, 8:40, 8:40] = 1.0
    spect[11:13, 23:25, 23:25] = 40.0
    spect = rng.poisson(spect * 50).astype(np.float32) / 50
    ct, spacing = np.zeros_like(spect), (4.0, 4.0, 4.0)
    guarded, bare = models["tiny-unet25d"], models["tiny-unet25d (bare)"]
    assert guarded.model.folder == bare.model.folder and (guarded.uptake_guard, bare.uptake_guard) == (True, False)
    outputs = {tested.uptake_guard: tested.run(spect, ct, spacing)[0] for tested in (guarded, bare)}
    for guard, output in outputs.items():
        np.testing.assert_array_equal(output, run_model(guarded.model, spect, ct, spacing, uptake_guard=guard)[0])
    assert not np.allclose(outputs[True], outputs[False])
    assert quality.tested_fingerprint(bare) == quality.tested_fingerprint(guarded) + " bare"
    assert quality.tested_fingerprint(guarded) == quality.model_fingerprint(guarded.model)


def test_every_method_has_every_draw_against_both_references(record):
    methods = record["methods"]
    assert set(methods) == {"full-count", "input", "gaussian", "tv", "nlm", "bm4d", "tiny-unet25d",
                            "tiny-unet25d (bare)", "tiny-diffusion"}
    assert [d["draw"] for d in methods["full-count"]["1"]["draws"]] == [0, 1, 2]
    for method in ("input", "gaussian", "tv", "tiny-unet25d", "tiny-unet25d (bare)"):
        for key in ("0.1", "0.25"):
            draws = methods[method][key]["draws"]
            assert len(draws) == 3 and {"vs_noise_free", "vs_full", "regions", "background"} <= set(draws[0])
            assert np.isfinite(methods[method][key]["ensemble_noise_pct"])


def test_slow_filters_and_diffusion_models_run_on_the_first_draws_at_10_percent_only(record):
    methods = record["methods"]
    for method in ("nlm", "bm4d", "tiny-diffusion"):
        assert list(methods[method]) == ["0.1"] and len(methods[method]["0.1"]["draws"]) == 1
    draw = methods["tiny-diffusion"]["0.1"]["draws"][0]
    assert 0 <= draw["coverage_1sigma_pct"] <= draw["coverage_2sigma_pct"] <= 100
    assert draw["error_ratio_quotient"] == pytest.approx(draw["error_ratio_variance"]
                                                         / draw["error_ratio_intensity"])
    assert -1 <= draw["spearman_variance_vs_squared_error"] <= 1
    assert [len(draw["reliability"][k]) for k in ("sigma_rms", "error_rms")] == [10, 10]


def test_quick_mode_runs_a_diffusion_model_on_few_draws_without_probes(record):
    quick = quality.MODES["quick"]
    assert (quick.diffusion_draws, quick.ood_diffusion_draws, quick.diffusion_probes) == (2, 1, False)
    assert quick.slow_fractions == (0.1,) and quick.default_only
    assert "tiny-unet25d" in record["probes"] and "tiny-diffusion" not in record["probes"]


def test_quick_mode_runs_a_diffusion_model_on_the_first_draw_of_a_protocol_variant(tmp_path):
    variant = dataclasses.replace(TINY_CASE, name="ood-tiny", ood="a protocol variant")
    mode = dataclasses.replace(quality.MODES["quick"], ood_draws=2, baselines=())
    models = load_models([f"tiny-diffusion={make_package(tmp_path / 'diffusion', 'diffusion')}"])
    variant_record = quality.run_case(variant, mode, models, {}, probes=True)
    assert [d["draw"] for d in variant_record["methods"]["tiny-diffusion"]["0.1"]["draws"]] == [0]
    assert len(variant_record["methods"]["input"]["0.1"]["draws"]) == 2


def test_standard_count_preservation_is_the_hot_region_mean_ratio_on_the_first_full_count_draw(record, models):
    phantom = case_phantom(TINY_CASE)
    regions, info = lesion_regions(phantom)
    hot = {name: mask for name, mask in regions.items() if not info[name]["kind"].startswith("cold")}
    assert hot and set(record["standard_count"]) == set(models)
    assert all(set(ratios) == set(hot) for ratios in record["standard_count"].values())
    full = CaseScans(TINY_CASE, phantom, (0.1,), 1).draw(0)[1.0]
    for name in ("tiny-unet25d", "tiny-unet25d (bare)"):
        denoised = models[name].run(full, phantom.ct, phantom.spacing_mm)[0]
        for region, mask in hot.items():
            expected = denoised[mask].mean() / full[mask].mean()
            assert record["standard_count"][name][region] == pytest.approx(expected, rel=1e-6)


def test_quick_mode_includes_the_cold_background_variant():
    assert "cold-background" in quality.MODES["quick"].ood


def test_preservation_table_names_the_worst_region_and_counts_the_regions_within_5_percent():
    regions = {"sphere_10mm": {"kind": "hot sphere", "diameter_mm": 10.0},
               "hot_lesion_1": {"kind": "hot lesion", "diameter_mm": None}}
    records = [{"case": {"name": "a", "ood": None}, "regions": regions, "methods": {},
                "standard_count": {"m": {"sphere_10mm": 0.44, "hot_lesion_1": 1.01}}},
               {"case": {"name": "b", "ood": "x"}, "regions": regions, "methods": {},
                "standard_count": {"m": {"sphere_10mm": 0.97, "hot_lesion_1": 1.08}}}]
    lines = report.preservation_table(records)
    assert lines[0].endswith("| hot sphere 10 mm | hot lesion |")
    assert lines[2] == "| m | 0.44 (a sphere_10mm) / 50 % (4 in 2) | 0.44 / 50 % (2) | 1.01 / 50 % (2) |"
    assert report.summary("test", records)["standard_count"]["m"] == {
        "lowest_ratio": 0.44, "within_5pct_pct": 50.0, "regions": 4, "cases": 2}
    assert report.preservation_table([{**records[0], "standard_count": {}}]) == []
    with_other = [*records, {**records[1], "case": {"name": "c", "ood": "y"},
                             "standard_count": {"other": {"sphere_10mm": 1.0}}}]
    assert report.preservation_table(with_other)[2].startswith("| m | 0.44 (a sphere_10mm) / 50 % (4 in 2) |")
    assert report.summary("test", with_other)["standard_count"]["other"]["cases"] == 1


def test_body_totals_are_the_body_sums_of_the_noise_free_full_count_input_and_every_output(record):
    phantom = case_phantom(TINY_CASE)
    body = ct_body(phantom.ct)
    scans = CaseScans(TINY_CASE, phantom, (0.1, 0.25), 3)
    images = scans.draw(1)
    assert record["body"]["voxels"] == int(body.sum())
    assert record["body"]["noise_free_total"] == pytest.approx(scans.noise_free[body].sum(dtype=np.float64))
    methods = record["methods"]
    assert methods["full-count"]["1"]["draws"][1]["body_total"] == pytest.approx(images[1.0][body].sum())
    assert methods["input"]["0.25"]["draws"][1]["body_total"] == pytest.approx(images[0.25][body].sum())
    assert methods["input"]["0.1"]["draws"][1]["body_total"] == pytest.approx(images[0.1][body].sum())
    for method, per_key in methods.items():
        assert all(d["body_total"] > 0 for entry in per_key.values() for d in entry["draws"]), method


def test_a_record_without_the_current_record_version_is_run_again(models, tmp_path):
    config = quality.run_config("quick", TINY_MODE, models, probes=True)
    assert config["record_version"] == quality.RECORD_VERSION >= 2
    path = tmp_path / "case.json"
    assert not quality.done_earlier(path, config)
    path.write_text(json.dumps({"config": config}))
    assert quality.done_earlier(path, config)
    path.write_text(json.dumps({"config": {k: v for k, v in config.items() if k != "record_version"}}))
    assert not quality.done_earlier(path, config)


def test_a_record_made_with_other_uptake_guard_constants_is_run_again(models, tmp_path):
    config = quality.run_config("quick", TINY_MODE, models, probes=True)
    path = tmp_path / "case.json"
    older_guard = {**config["uptake_guard"]}
    older_guard.pop("COARSE_SIGMA_MM")  # the guard before it restored coarse-scale counts
    path.write_text(json.dumps({"config": {**config, "uptake_guard": older_guard}}))
    assert not quality.done_earlier(path, config)


def test_noise_free_reference_sits_below_the_noisy_scans(record):
    full = [d["vs_noise_free"]["nrmse"] for d in record["methods"]["full-count"]["1"]["draws"]]
    low = [d["vs_noise_free"]["nrmse"] for d in record["methods"]["input"]["0.1"]["draws"]]
    assert 0 < np.mean(full) < np.mean(low)


def test_regions_carry_truth_and_noise_free_values(record):
    assert record["regions"]
    for info in record["regions"].values():
        assert info["truth_mean"] >= 0 and len(info["noise_free"]) == 2


def test_baselines_record_their_tuning_and_the_model_its_probes(record):
    draw = record["methods"]["tv"]["0.1"]["draws"][0]
    assert isinstance(draw["interior"], bool) and len(draw["tried"]) >= 3
    assert "units x1000" in record["probes"]["tiny-unet25d"]


def test_report_section_renders_every_table(record, tmp_path):
    lines = "\n".join(report.section("test", "Test", [record], images=tmp_path))
    assert (tmp_path / "benchmark_spheres_test.png").exists()
    for heading in ("Image quality against the noise-free reconstruction", "Fidelity ratio", "Hot IEC spheres",
                    "Background noise", "Robustness probes", "Classical filter tuning",
                    "Standard-count lesion preservation", "Targets (issue 14)"):
        assert heading in lines
    assert "(1×3)" in lines
    targets = report.summary("test", [record])["targets"]
    assert set(targets) == {"tiny-unet25d", "tiny-unet25d (bare)", "tiny-diffusion"}
    assert all(targets[model]["body_total"]["met"] is not None for model in targets)
    summary = report.summary("test", [record])
    assert summary["methods"]["tiny-unet25d"]["0.1"]["draws"] == 3
    assert summary["methods"]["tiny-unet25d (bare)"]["0.1"]["draws"] == 3
    assert set(summary["standard_count"]) == {"tiny-unet25d", "tiny-unet25d (bare)", "tiny-diffusion"}
    assert next(line for line in lines.splitlines() if line.startswith("| tiny-unet25d (bare) | 0."))


def test_report_judges_the_diffusion_variance_with_its_fitted_scale(record, tmp_path):
    fit = {"model": "tiny-diffusion", "variance_scale": 2.5, "previous_variance_scale": 1.0,
           "date": "2026-12-01 19:00 UTC", "fraction": 0.1,
           "n": {"cases": 2, "draws": 2, "voxels": 1000}, "before": {"coverage_1sigma_pct": 40.0,
                                                                          "coverage_2sigma_pct": 70.0},
           "fit": {"chosen": "coverage", "note": "", "coverage_fit": {"coverage_1sigma_pct": 66.0,
                                                                      "coverage_2sigma_pct": 95.0}}}
    (tmp_path / "calibration_tiny-diffusion.json").write_text(json.dumps(fit))
    lines = "\n".join(report.uncertainty_lines([record], "test", tmp_path, results=tmp_path))
    assert "### Uncertainty (diffusion models)" in lines and (tmp_path / "benchmark_reliability_test.png").exists()
    row = next(line for line in lines.splitlines() if line.startswith("| tiny-diffusion | 10 %"))
    assert row.endswith("| 1×1 |")
    assert "Variance scale of `tiny-diffusion`: 2.5 (coverage fit" in lines and "with this one 66 / 95 %" in lines
    uncertainty = report.summary("test", [record])["methods"]["tiny-diffusion"]["0.1"]["uncertainty"]
    assert set(uncertainty) == set(report.UNCERTAINTY_METRICS)


def test_report_says_in_one_sentence_when_no_diffusion_model_ran(record, tmp_path):
    plain = {**record, "methods": {m: v for m, v in record["methods"].items() if m != "tiny-diffusion"}}
    lines = report.uncertainty_lines([plain], "test", tmp_path, results=tmp_path)
    assert lines[-1] == "No diffusion model was run in this result set, so there is no variance map to judge."
    assert not (tmp_path / "benchmark_reliability_test.png").exists()


def earlier_run(record: dict, config: dict, **changes) -> dict:
    """``record`` (deep-copied) as if an earlier run had made it with ``config`` changed by ``changes``."""
    return {**json.loads(json.dumps(record)), "config": {**config, **changes}}


def test_a_rerun_after_new_weights_runs_only_that_model_and_keeps_every_other_row(record, models, tmp_path):
    config = quality.run_config("quick", TINY_MODE, models, probes=True)
    earlier = earlier_run(record, config, models={**config["models"], "tiny-unet25d": "older-weights"})
    earlier["methods"]["gaussian"]["0.1"]["draws"][0]["parameter"] = -1.0  # marks a row that must be copied
    earlier["methods"]["tiny-unet25d"]["0.1"]["draws"][0]["seconds"] = -1.0  # marks a row that must be replaced
    kept = quality.kept_rows(earlier, config)
    assert set(kept["methods"]) == set(record["methods"]) - {"tiny-unet25d"}
    again = quality.run_case(TINY_CASE, TINY_MODE, models, config, probes=True, kept=kept)
    assert again["methods"]["gaussian"]["0.1"]["draws"][0]["parameter"] == -1.0
    rerun = again["methods"]["tiny-unet25d"]["0.1"]["draws"]
    assert [d["draw"] for d in rerun] == [0, 1, 2] and all(d["seconds"] >= 0 for d in rerun)
    assert again["methods"]["tiny-unet25d"]["0.1"]["ensemble_noise_pct"] > 0
    assert "units x1000" in again["probes"]["tiny-unet25d"] and "tiny-unet25d" in again["standard_count"]
    assert set(again["methods"]) == set(record["methods"])
    assert "tiny-unet25d" not in again["kept_from_earlier_run"] and "gaussian" in again["kept_from_earlier_run"]
    assert again["earlier_runs"] == [record["timing"]]  # the compute of the kept rows stays on record
    text = "\n".join(report.section("test", "Test", [again], images=tmp_path))
    assert f"{(record['timing']['cpu_s'] + again['timing']['cpu_s']) / 60:.0f} CPU minutes in all" in text
    assert "2 runs" in text
    # the same draws: the input rows are the earlier ones and the re-run model's are those of a fresh run
    assert again["methods"]["tiny-unet25d (bare)"] == record["methods"]["tiny-unet25d (bare)"]
    fresh = [d["vs_noise_free"]["nrmse"] for d in record["methods"]["tiny-unet25d"]["0.1"]["draws"]]
    assert [d["vs_noise_free"]["nrmse"] for d in rerun] == pytest.approx(fresh, rel=1e-5)


def test_another_uptake_guard_reruns_the_guarded_models_and_keeps_the_bare_network(record, models):
    config = quality.run_config("quick", TINY_MODE, models, probes=True)
    older_guard = {**config["uptake_guard"], "COARSE_SIGMA_MM": 0.0}
    kept = set(quality.kept_rows(earlier_run(record, config, uptake_guard=older_guard), config)["methods"])
    assert "tiny-unet25d" not in kept and "tiny-diffusion" not in kept
    assert {"tiny-unet25d (bare)", "input", "full-count", "gaussian", "bm4d"} <= kept


def test_another_variance_pooling_reruns_only_the_diffusion_model(record, models):
    config = quality.run_config("quick", TINY_MODE, models, probes=True)
    assert config["variance_pooling"] == {"tiny-diffusion": 0.0}
    kept = set(quality.kept_rows(earlier_run(record, config, variance_pooling={"tiny-diffusion": 1.0}),
                                 config)["methods"])
    assert kept == set(record["methods"]) - {"tiny-diffusion"}
    plain = {name: tested for name, tested in models.items() if tested.model.config.kind != "diffusion"}
    assert "variance_pooling" not in quality.run_config("quick", TINY_MODE, plain, probes=True)


def test_nothing_is_kept_when_the_draws_differ_and_named_methods_are_always_rerun(record, models):
    config = quality.run_config("quick", TINY_MODE, models, probes=True)
    assert quality.kept_rows(earlier_run(record, config, draws=config["draws"] + 1), config)["methods"] == {}
    kept = quality.kept_rows(earlier_run(record, config), config, rerun={"tv", "tiny-diffusion"})
    assert set(kept["methods"]) == set(record["methods"]) - {"tv", "tiny-diffusion"}


def test_a_diffusion_model_image_for_probes_is_its_sampled_run_image_without_the_sampling(models):
    spect = np.random.default_rng(3).poisson(20.0, (6, 24, 24)).astype(np.float32)
    ct = np.zeros_like(spect)
    tested = models["tiny-diffusion"]
    denoised, variance = tested.run(spect, ct, (4.0, 4.0, 4.0), seed=2)
    assert variance is not None
    np.testing.assert_array_equal(tested.image(spect, ct, (4.0, 4.0, 4.0)), denoised)


def test_a_partial_run_says_how_many_of_its_cases_it_holds(record, models, tmp_path):
    config = quality.run_config("quick", TINY_MODE, models, probes=True)
    header = report.section("quick", "Quick", [{**record, "config": config}], images=tmp_path)[2]
    assert "(1 cases of the mode's 7: a **partial run**; the command resumes it)" in header
    complete = [{**record, "config": config}] * 7
    assert "partial" not in report.section("quick", "Quick", complete, images=tmp_path)[2]


def test_new_probe_definitions_keep_every_row_and_run_only_the_probes_again(record, models):
    config = quality.run_config("quick", TINY_MODE, models, probes=True)
    assert config["probes_version"] == quality.PROBES_VERSION >= 2
    earlier = earlier_run(record, config, probes_version=1)
    for by_region in earlier["probes"]["tiny-unet25d"].values():
        by_region.update({name: 999.0 for name in by_region})  # marks probes that must not survive
    kept = quality.kept_rows(earlier, config)
    assert set(kept["methods"]) == set(record["methods"]) and kept["probes"] == {}
    again = quality.run_case(TINY_CASE, TINY_MODE, models, config, probes=True, kept=kept)
    assert again["methods"] == earlier["methods"]
    assert set(again["probes"]) == set(record["probes"])
    probed = again["probes"]["tiny-unet25d"]
    assert all(abs(v) < 999.0 for by_region in probed.values() for v in by_region.values())
    fresh = record["probes"]["tiny-unet25d"]["units x1000"]
    assert again["probes"]["tiny-unet25d"]["units x1000"] == pytest.approx(fresh)


def test_a_rerun_of_a_diffusion_model_alone_simulates_only_the_draws_it_runs_on(record, models, capsys):
    config = quality.run_config("quick", TINY_MODE, models, probes=True)
    kept = quality.kept_rows(earlier_run(record, config), config, rerun={"tiny-diffusion"})
    again = quality.run_case(TINY_CASE, TINY_MODE, models, config, probes=True, kept=kept)
    assert [d["draw"] for d in again["methods"]["tiny-diffusion"]["0.1"]["draws"]] == [0]
    assert again["methods"]["tiny-unet25d"] == record["methods"]["tiny-unet25d"]
    printed = capsys.readouterr().out
    assert "draw 1/3 done" in printed and "draw 2/3" not in printed


def test_a_protocol_variant_with_every_row_kept_is_brought_up_to_date_without_running(record, models, tmp_path):
    config = quality.run_config("quick", TINY_MODE, models, probes=True)
    variant = {**earlier_run(record, config, probes_version=1), "case": {**record["case"], "ood": "a variant"}}
    kept = quality.kept_rows(variant, config)
    updated = quality.refreshed(variant, kept, config, TINY_MODE, probes=True)
    assert updated["config"] == config and updated["methods"] == variant["methods"]
    (tmp_path / "case.json").write_text(json.dumps(updated))
    assert quality.done_earlier(tmp_path / "case.json", config)
    in_distribution = earlier_run(record, config, probes_version=1)  # its probes are due again
    assert quality.refreshed(in_distribution, quality.kept_rows(in_distribution, config), config, TINY_MODE,
                             probes=True) is None
    changed = earlier_run(record, config, models={**config["models"], "tiny-unet25d": "older-weights"})
    assert quality.refreshed(changed, quality.kept_rows(changed, config), config, TINY_MODE, probes=False) is None


class Killed(Exception):
    """Stands for the run being killed between two draws."""


def assert_same_record_part(resumed, uninterrupted, where: str = "") -> None:
    """Assert that two record parts agree but for per-run seconds (which differ between any two runs) and float
    rounding (BM4D's sums differ from the 8th digit on between runs)."""
    if isinstance(uninterrupted, dict):
        keys = set(uninterrupted) - {"seconds"}
        assert set(resumed) - {"seconds"} == keys, where
        for key in keys:
            assert_same_record_part(resumed[key], uninterrupted[key], f"{where}/{key}")
    elif isinstance(uninterrupted, list):
        assert len(resumed) == len(uninterrupted), where
        for index, (a, b) in enumerate(zip(resumed, uninterrupted)):
            assert_same_record_part(a, b, f"{where}/{index}")
    elif isinstance(uninterrupted, float):
        assert resumed == pytest.approx(uninterrupted, rel=1e-6, abs=1e-9, nan_ok=True), where
    else:
        assert resumed == uninterrupted, where


def test_a_case_killed_after_a_draw_resumes_from_its_checkpoint_and_gives_the_same_record(record, models, tmp_path,
                                                                                          monkeypatch):
    config = {"mode": "test", "models": {"tiny-unet25d": "x"}, "slow_draws": 0, "slow_fractions": [0.1],
              "diffusion_draws": 2}
    checkpoint = tmp_path / ".partial" / "iec-tiny.npz"
    draw = quality.CaseScans.draw

    def killed_at_the_third_draw(scans, index):
        if index == 2:
            raise Killed
        return draw(scans, index)

    monkeypatch.setattr(quality.CaseScans, "draw", killed_at_the_third_draw)
    with pytest.raises(Killed):
        quality.run_case(TINY_CASE, TINY_MODE, models, config, probes=True, checkpoint=checkpoint)
    assert checkpoint.exists()
    monkeypatch.setattr(quality.CaseScans, "draw", draw)
    resumed = quality.run_case(TINY_CASE, TINY_MODE, models, config, probes=True, checkpoint=checkpoint)
    assert resumed["timing"]["resumed_after_draws"] == [2]
    for part in ("methods", "probes", "standard_count", "regions", "body"):
        assert_same_record_part(resumed[part], record[part], part)


def test_a_checkpoint_made_under_another_configuration_is_not_resumed(record, models, tmp_path):
    checkpoint = tmp_path / "iec-tiny.npz"
    ensemble = VoxelEnsemble()
    ensemble.add(np.ones(4))
    save_checkpoint(checkpoint, {"config": {"mode": "test"}}, {"draws_done": 1}, {("input", "0.1"): ensemble})
    assert load_checkpoint(checkpoint, {"config": {"mode": "other"}}) is None
    state, ensembles = load_checkpoint(checkpoint, {"config": {"mode": "test"}})
    assert state == {"draws_done": 1} and ensembles[("input", "0.1")].count == 1


def test_a_case_run_with_a_scan_cache_fills_it_and_a_rerun_from_it_gives_the_same_rows(record, models, tmp_path):
    """The same case with every model's rows kept: only input, full count and filters run, first simulating into
    the cache, then reading from it; both give the rows of the uncached run."""
    config = quality.run_config("quick", TINY_MODE, models, probes=False)
    kept = {**quality.nothing_kept(), "methods": {name: record["methods"][name] for name in models}}
    cache = tmp_path / quality.CACHE_FOLDER
    runs = [quality.run_case(TINY_CASE, TINY_MODE, models, config, probes=False, kept=kept, cache_folder=cache)
            for _ in range(2)]
    assert sorted(path.name for path in next(cache.iterdir()).iterdir()) == [
        "draw-0.npz", "draw-1.npz", "draw-2.npz", "draw-3.npz", "noise_free.npz"]  # draw 3: BM4D's noise spectrum
    for run in runs:
        for method in ("input", "full-count", "gaussian"):
            assert run["methods"][method] == record["methods"][method]
        bm4d = [d["vs_noise_free"]["nrmse"] for d in run["methods"]["bm4d"]["0.1"]["draws"]]
        expected = [d["vs_noise_free"]["nrmse"] for d in record["methods"]["bm4d"]["0.1"]["draws"]]
        assert bm4d == pytest.approx(expected, rel=1e-6)  # BM4D's own arithmetic varies in the last digits


def coverage_record(name: str, one_sigma: list[float]) -> dict:
    """A case record whose diffusion model 'd' has draws with these 1 σ coverages (2 σ: 30 points more)."""
    draws = [{"coverage_1sigma_pct": c, "coverage_2sigma_pct": c + 30} for c in one_sigma]
    return {"case": {"name": name, "ood": None}, "methods": {"d": {"0.1": {"draws": draws}}}}


def test_per_case_coverage_names_the_extreme_cases_and_counts_those_outside_the_target():
    records = [coverage_record("a", [40.0, 46.0]), coverage_record("b", [70.0]), coverage_record("c", [97.0])]
    line = report.per_case_coverage_line(records, "d", "0.1")
    assert "from 43.0 % (a; 2 σ 73.0 %) to 97.0 % (c; 2 σ 127.0 %); 2 of 3 cases outside" in line
    assert "not scan by scan" in line
    inside = report.per_case_coverage_line(records[1:2], "d", "0.1")
    assert "0 of 1 cases outside" in inside and "not scan by scan" not in inside
    low = report.per_case_coverage_line([coverage_record("a", [40.0]), coverage_record("b", [50.0])], "d", "0.1")
    assert "2 of 2 cases outside" in low and "outside the target on average over these cases too" in low


def test_ranking_reference_cites_its_result_and_is_absent_without_one(tmp_path):
    assert report.ranking_reference_lines("d", tmp_path) == []
    result = {"date": "2026-12-02 12:00 UTC", "n": {"cases": 5, "draws": 10}, "fraction": 0.1,
              "weights_sha256_12": "abc123",
              "timing": {"threads": 1, "load_before": [3.8, 2, 1], "load_after": [5.2, 4, 3]},
              "summary": {"oracle_mse": {"quotient_mean": 0.8, "quotient_range": [0.52, 1.21],
                                         "quotient_extrapolated_to_infinite_draws": 0.91},
                          "oracle_spread": {"quotient_mean": 0.64, "quotient_range": [0.3, 0.99]},
                          "realised_error": {"quotient_mean": 1.6, "quotient_range": [1.2, 2.0]}}}
    (tmp_path / "ranking_reference_d.json").write_text(json.dumps(result))
    text = " ".join(report.ranking_reference_lines("d", tmp_path))
    assert "n = 5×10" in text and "other 9 draws" in text
    assert "quotient of 0.80 (range 0.52–1.21; 0.91 extrapolated linearly" in text
    assert "1-minute load 3.8–5.2" in text and "the most any map can reach, 1.60 (range 1.20–2.00)" in text
    same, other = (" ".join(report.ranking_reference_lines("d", tmp_path, w)) for w in ("abc123", "999999"))
    assert "rerun it" not in text and "rerun it" not in same and "not the benchmarked 999999: rerun it" in other
    assert report.ranking_reference_section({}, tmp_path / "empty") == []
    conditional = {"date": "2026-12-02 16:00 UTC", "fraction": 0.1, "weights_sha256_12": "abc123",
                   "n": {"training_cases": 35, "cases": 7, "draws": 10},
                   "run_seeds": {"training": 5, "validation": 8},
                   "timing": {"threads": 1, "load_before": [3.1, 2, 1], "load_after": [4.0, 4, 3]},
                   "summary": {"quotient_mean": 1.18, "quotient_range": [0.6, 1.7],
                               "per_case_mean": {"brain-8000000": 1.2, "torso-8000004": 0.68}},
                   "feature_importance": {"image": 0.1, "depth_mm": 0.3, "image_rank": 0.0,
                                          "scan_method_noise": 0.2}}
    (tmp_path / "conditional_reference_d.json").write_text(json.dumps(conditional))
    lines = report.conditional_reference_lines("d", tmp_path, "abc123")
    assert "learned on 35 cases of run seed 5 × 1 draw" in lines[1] and "n = 7×10" in lines[1]
    assert "quotient of 1.18 (range 0.60–1.70; per case brain-8000000 1.20, torso-8000004 0.68)" in lines[1]
    assert "leans on most: `depth_mm`, `scan_method_noise`, `image`." in lines[1] and "rerun it" not in lines[1]
    assert report.conditional_reference_lines("e", tmp_path) == []
    both = report.ranking_reference_section({"d": "abc123"}, tmp_path)
    assert sum("Scan-conditioned reference" in line for line in both) == 1
    assert sum("References for the ranking quotient" in line for line in both) == 1
    section = report.ranking_reference_section({"d": "999999"}, tmp_path)
    assert section[0] == "## Ranking references"
    assert sum("References for the ranking quotient" in line for line in section) == 1
    assert "not the benchmarked 999999: rerun it" in " ".join(section)
