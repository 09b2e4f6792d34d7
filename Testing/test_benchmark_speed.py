"""Speed benchmark summary (benchmarks/speed.py): medians over successful repeats, the load seen, failures, and the
rows a partial re-run keeps."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from speed import earlier_rows, summarise  # noqa: E402


def run(wall: float, cpu: float, load: tuple[float, float] = (1.0, 2.0), code: int = 0) -> dict:
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": 100.0, "load_before": load[0], "load_after": load[1],
            "exit_code": code, "error": "boom" if code else None}


def test_summary_gives_medians_and_the_load_range():
    summary = summarise([run(3.0, 5.0), run(1.0, 2.0, (0.5, 4.0)), run(2.0, 9.0)])
    assert (summary["median_wall_s"], summary["median_cpu_s"]) == (2.0, 5.0)
    assert (summary["load_min"], summary["load_max"], summary["repeats"]) == (0.5, 4.0, 3)


def test_failed_runs_are_left_out_and_all_failed_is_reported():
    assert summarise([run(1.0, 1.0), run(50.0, 50.0, code=1)])["median_wall_s"] == 1.0
    assert summarise([run(1.0, 1.0, code=1)]) == {"failed": "boom"}


def test_a_rerun_keeps_the_other_models_rows_of_the_same_machine_with_their_date(tmp_path):
    path = tmp_path / "speed_cpu.json"
    rows = [{"model": "slow", "size": "128^3"}, {"model": "fast", "size": "128^3", "date": "2026-12-02 10:00 UTC"}]
    path.write_text(json.dumps({"machine": "m", "device": "cpu", "date": "2026-12-01 19:52 UTC", "results": rows}))
    assert earlier_rows(path, ["fast"], "m", "cpu") == [{"model": "slow", "size": "128^3",
                                                         "date": "2026-12-01 19:52 UTC"}]
    assert earlier_rows(path, ["fast"], "another machine", "cpu") == []
    assert earlier_rows(path, ["fast"], "m", "cuda") == []
    assert earlier_rows(tmp_path / "none.json", ["fast"], "m", "cpu") == []
