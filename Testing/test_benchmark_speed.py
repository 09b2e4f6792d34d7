"""Speed benchmark summary (benchmarks/speed.py): medians over successful repeats, the load seen, failures, and the
rows a partial re-run keeps."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from speed import VOLUMES, earlier_rows, hardware_identity, make_volume, summarise  # noqa: E402
from stats import ct_body  # noqa: E402


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


def test_a_rerun_keeps_the_rows_it_does_not_repeat_of_the_same_hardware_with_their_date(tmp_path):
    path = tmp_path / "speed_cpu.json"
    hardware = {"cpu_model": "Xeon X", "cpu_cores": 2, "device": "cpu"}
    rows = [{"model": "slow", "size": "128^3"}, {"model": "fast", "size": "128^3", "date": "2026-12-02 10:00 UTC"},
            {"model": "fast", "size": "128^3 body in air", "date": "2026-12-02 11:00 UTC"}]
    path.write_text(json.dumps({"machine": "Linux-kernel-build-1", **hardware, "date": "2026-12-01 19:52 UTC",
                                "results": rows}))
    volumes = ["128^3"]
    assert earlier_rows(path, ["fast"], volumes, hardware) == [{"model": "slow", "size": "128^3",
                                                               "date": "2026-12-01 19:52 UTC"}, rows[2]]
    assert earlier_rows(path, ["fast"], volumes, {**hardware, "cpu_model": "Epyc Y"}) == []
    assert earlier_rows(path, ["fast"], volumes, {**hardware, "cpu_cores": 16}) == []
    assert earlier_rows(path, ["fast"], volumes, {**hardware, "device": "cuda"}) == []
    assert earlier_rows(tmp_path / "none.json", ["fast"], volumes, hardware) == []
    path.write_text(json.dumps({"machine": "m", "cpu_cores": 2, "device": "cpu", "date": "d", "results": rows}))
    assert earlier_rows(path, ["fast"], volumes, hardware) == []  # no CPU model recorded: nothing is kept


def test_the_hardware_identity_names_a_cpu_model_and_the_cores():
    identity = hardware_identity("cpu")
    assert identity["cpu_model"] and identity["cpu_cores"] == os.cpu_count() and identity["device"] == "cpu"


def test_the_body_in_air_volume_has_tissue_only_in_its_body_and_air_in_its_ct(tmp_path):
    make_volume(VOLUMES["128^3 body in air"], tmp_path / "spect.nrrd", tmp_path / "ct.nrrd")
    spect = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "spect.nrrd")))
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ct.nrrd")))
    body = ct_body(ct)
    assert spect.shape == ct.shape == (128, 128, 128)
    assert np.all(spect[~body] == 0) and np.all(spect[body] > 0)
    columns = np.flatnonzero(body[0].any(axis=0))  # left-right extent: 36 cm at 4 mm voxels
    assert 88 <= len(columns) <= 91 and columns[0] >= 16 and columns[-1] <= 127 - 16
