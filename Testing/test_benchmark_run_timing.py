"""Run timing of the benchmark scripts (benchmarks/run_timing.py, quality.py --timing-file): the CPU time of a
process pool's workers is counted, and a run's timing file says what ran under which conditions."""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from quality import write_run_timing  # noqa: E402
from run_timing import RunTiming  # noqa: E402


def busy_cpu_seconds(seconds: float) -> float:
    """Spin for ``seconds`` of this process's CPU time and return the CPU time it used."""
    started = time.process_time()
    while time.process_time() - started < seconds:
        pass
    return time.process_time() - started


def test_the_cpu_time_of_a_finished_process_pool_is_counted():
    timing = RunTiming(threads=1)
    with ProcessPoolExecutor(max_workers=2) as pool:
        used = sum(pool.map(busy_cpu_seconds, [0.3, 0.3]))
    result = timing.finish()
    assert result["cpu_s"] >= round(used, 1) - 0.1
    assert result["threads"] == 1 and len(result["load_before"]) == len(result["load_after"]) == 3


def test_a_run_timing_file_names_the_mode_cases_and_conditions(tmp_path):
    path = tmp_path / "timing.json"
    models = {"m": None, "m (bare)": None}
    write_run_timing(path, RunTiming(threads=1), "quick", 2, models, ["a", "b"], ["c"], ["d"], [])
    record = json.loads(path.read_text())
    assert record["mode"] == "quick" and record["jobs"] == 2 and record["models"] == ["m", "m (bare)"]
    assert record["cases_run"] == ["a", "b"] and record["cases_kept"] == ["c"] and record["cases_failed"] == []
    assert record["cases_skipped"] == ["d"]
    assert {"wall_s", "cpu_s", "cpu_cores", "load_before", "load_after", "command", "date"} <= set(record)


def test_the_report_quotes_a_modes_timed_run_with_what_it_left_out_and_nothing_without_one(tmp_path):
    import report

    assert report.from_scratch_timing("quick", tmp_path) == ""
    path = tmp_path / "quick_run_timing.json"
    write_run_timing(path, RunTiming(threads=1), "quick", 2, {"m": None}, ["a", "b"], [], [], [])
    sentence = report.from_scratch_timing("quick", tmp_path, section_models=["m"])
    assert "2 cases run)" in sentence and "2 jobs × 1 torch thread" in sentence
    assert "min wall" in sentence and sentence.endswith("models m.")
    write_run_timing(path, RunTiming(threads=1), "quick", 2, {"m": None}, ["a"], ["b"], ["c"], ["e"])
    sentence = report.from_scratch_timing("quick", tmp_path, section_models=["m", "diffusion"])
    assert "1 cases run, 1 kept, 1 skipped, 1 failed)" in sentence
    assert sentence.endswith("models m (not timed: diffusion).")
