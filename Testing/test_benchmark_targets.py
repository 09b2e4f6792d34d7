"""The "Targets (issue 14)" table of BENCHMARKS.md: each target judged met or not met per model from small
synthetic case records (two draws each), and what it says when the records lack what a target needs."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import report  # noqa: E402

DRAWS = 2
FULL_TOTAL = 1000.0
SPHERES = {"sphere_13mm": 13.0, "sphere_22mm": 22.0}
# per method: (13 mm mean, 22 mm mean, NRMSE in distribution, NRMSE out of distribution, body total); the
# noise-free sphere means are 10, the full-count NRMSE 0.2 and body total 1000
OUTPUTS = {"input": (9.0, 10.0, 0.9, 0.9, 1010.0),
           "gaussian": (8.0, 9.0, 0.3, 0.3, 1000.0), "tv": (8.0, 9.0, 0.35, 0.35, 1000.0),
           "good": (8.8, 10.4, 0.18, 0.22, 1005.0),  # -2 pp from the input's bias, +4 %, 0.9, 1.1, 0.73, 0.5 %
           "bad": (7.0, 9.0, 0.3, 0.3, 1100.0)}  # -20 pp, -10 %, 1.5, 1.5, 1.0, 10 %
STANDARD_COUNT = {"good": 1.02, "bad": 0.9}


def entry(draw: int, sphere_means: tuple[float, float], nrmse: float, total: float | None) -> dict:
    values = {"draw": draw, "vs_noise_free": {"nrmse": nrmse, "psnr_db": 30.0, "ssim": 0.9},
              "background": [1.0, 10.0],
              "regions": {name: [mean, 1.5 * mean] for name, mean in zip(SPHERES, sphere_means)}}
    return values if total is None else {**values, "body_total": total}


def case_record(name: str, ood: str | None, body_totals: bool = True) -> dict:
    def per_draw(means, nrmse, total):
        return {"draws": [entry(d, means, nrmse, total if body_totals else None) for d in range(DRAWS)]}

    methods = {"full-count": {"1": per_draw((10.0, 10.0), 0.2, FULL_TOTAL)}}
    for method, (small, large, inside, outside, total) in OUTPUTS.items():
        methods[method] = {"0.1": per_draw((small, large), outside if ood else inside, total)}
    return {"case": {"name": name, "ood": ood}, "fractions": ["0.1"], "draws": DRAWS,
            "regions": {region: {"kind": "hot sphere", "diameter_mm": diameter, "truth_mean": 12.0,
                                 "noise_free": [10.0, 15.0]} for region, diameter in SPHERES.items()},
            "background": {"truth_mean": 1.0, "noise_free": [1.0, 10.0]}, "methods": methods,
            "standard_count": {model: dict.fromkeys(SPHERES, ratio) for model, ratio in STANDARD_COUNT.items()}}


def rows(records: list[dict]) -> dict[str, list[str]]:
    """{model: its cells} of the targets table."""
    lines = report.targets_table(records)
    assert len(lines[0].split(" | ")) == 1 + len(report.TARGETS)
    return {line.split(" | ")[0][2:]: line[:-2].split(" | ")[1:] for line in lines[2:]}


RECORDS = [case_record("iec-1", None), case_record("ood-x", "an unusual protocol")]


def test_every_target_is_met_by_the_good_model_and_missed_by_the_bad_one():
    table = rows(RECORDS)
    assert list(table) == ["good", "bad"]
    assert all(c.endswith(": met") for c in table["good"]), table["good"]
    assert all(c.endswith(": not met") for c in table["bad"]), table["bad"]


def test_each_cell_shows_the_value_it_is_judged_on_and_its_n():
    good, bad = rows(RECORDS)["good"], rows(RECORDS)["bad"]
    assert good[0] == "1.02 (iec-1 sphere_13mm) / 100 % (4 in 2): met"
    assert bad[0] == "0.90 (iec-1 sphere_13mm) / 0 % (4 in 2): not met"
    assert good[1] == "worst +4.0 % at 22 mm (1×2): met"
    assert bad[1] == "worst -10.0 % at 22 mm (1×2): not met"
    assert good[2] == "worst -2.0 pp at 13 mm: -12.0 % vs input -10.0 % (1×2): met"
    assert bad[2] == "worst -20.0 pp at 13 mm: -30.0 % vs input -10.0 % (1×2): not met"
    assert good[3] == ("worst 0.50× the input's distance in iec-1 (0.50 % vs 1.00 %); farthest from the "
                       "full-count total 0.50 % in iec-1 (input 1.00 %) (2×2): met")
    assert bad[4].startswith("1.50 [") and bad[4].endswith("(1×2): not met")
    assert good[5] == "worst 1.10 in ood-x, median 1.10 (1×2): met"
    assert good[6] == "worst 0.73 in ood-x, median 0.73 (1×2): met"
    assert bad[6] == "worst 1.00 in ood-x, median 1.00 (1×2): not met"


def test_the_summary_carries_each_target_with_its_verdict():
    targets = report.summary("test", RECORDS)["targets"]
    assert set(targets["good"]) == {key for key, _, _ in report.TARGETS}
    assert targets["bad"]["nrmse_vs_classical"] == {"value": 1.0, "n": "1×2", "met": False}
    assert targets["good"]["fidelity_in_distribution"]["met"] is True


def test_records_without_body_totals_say_not_recorded_and_keep_the_other_targets():
    old = [case_record("iec-1", None, body_totals=False), case_record("ood-x", "unusual", body_totals=False)]
    table = rows(old)
    assert table["good"][3] == table["bad"][3] == "not recorded (result files older than body totals)"
    assert table["good"][:3] == rows(RECORDS)["good"][:3] and table["bad"][4:] == rows(RECORDS)["bad"][4:]
    assert report.summary("test", old)["targets"]["good"]["body_total"] == {"value": None, "n": "", "met": None}


def test_a_mode_without_protocol_variants_does_not_measure_the_out_of_distribution_targets():
    table = rows(RECORDS[:1])
    for model in ("good", "bad"):
        assert table[model][5] == table[model][6] == "not measured in this mode"
        assert table[model][4].endswith("met")


def test_tables_list_models_in_the_order_the_configuration_names_them():
    config = {"models": {"spect-unet25d": "a", "spect-unet25d (bare)": "a bare", "spect-diffusion-refine": "b"}}
    rerun = {"config": config, "methods": {"spect-diffusion-refine": {}, "tv": {}, "spect-unet25d (bare)": {},
                                           "input": {}, "spect-unet25d": {}, "gaussian": {}}}
    assert report.methods_of([rerun]) == ["input", "gaussian", "tv", "spect-unet25d", "spect-unet25d (bare)",
                                          "spect-diffusion-refine"]


def test_a_report_on_older_probes_says_what_changed_since():
    older = {"config": {"probes_version": report.PROBES_VERSION - 1}, "probes": {"m": {}}}
    current = {"config": {"probes_version": report.PROBES_VERSION}, "probes": {"m": {}}}
    assert "Changed in version" in report.probes_version_note([older, current])
    assert "Changed" not in report.probes_version_note([current])


def test_a_check_of_the_variance_scale_does_not_replace_the_fit_it_was_written_from(tmp_path):
    import json

    fit = {"model": "m", "written": True, "variance_scale": 0.88}
    check = {"model": "m", "written": False, "variance_scale": 0.89}
    (tmp_path / "calibration_m.json").write_text(json.dumps(fit))
    (tmp_path / "calibration_check_m.json").write_text(json.dumps(check))
    assert report.calibration_fits(tmp_path) == {"m": fit}
    assert report.calibration_fits(tmp_path, written=False) == {"m": check}
