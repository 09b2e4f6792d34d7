"""The background worker as a real subprocess: JSON-lines protocol, errors, cancel, leftovers of a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import SimpleITK as sitk
from conftest import REPOSITORY
from model_fixtures import SLOW_DIFFUSION, make_package, phantom

from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.io import PARTIAL_PREFIX, same_geometry
from SPECTDenoiseLib.worker import Request


def start_worker(tmp_path: Path, **request) -> subprocess.Popen:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request), encoding="utf-8")
    return subprocess.Popen([sys.executable, "-m", "SPECTDenoiseLib.worker", str(path)], cwd=REPOSITORY,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_worker(tmp_path: Path, **request) -> tuple[int, list[dict]]:
    process = start_worker(tmp_path, **request)
    stdout, _ = process.communicate(timeout=120)
    return process.returncode, [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture
def study(tmp_path: Path) -> dict:
    """A written phantom, a tiny U-Net package and an output folder."""
    spect = tmp_path / "spect.nrrd"
    sitk.WriteImage(phantom(), str(spect))
    (tmp_path / "out").mkdir()
    return {"input": str(spect), "output": str(tmp_path / "out" / "denoised.nrrd"),
            "model": str(make_package(tmp_path / "unet", "unet2d")), "device": "cpu"}


def test_worker_reports_progress_then_done_and_keeps_geometry(tmp_path, study):
    difference = str(tmp_path / "out" / "difference.nii.gz")
    code, events = run_worker(tmp_path, **study, difference=difference)
    assert code == 0
    assert {event["event"] for event in events[:-1]} == {"progress"}
    fractions = [event["fraction"] for event in events[:-1]]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {"loading", "preparing", "denoising", "writing"} <= {event["stage"] for event in events[:-1]}
    done = events[-1]
    assert done["event"] == "done" and done["device"] == "cpu" and done["model"] == study["model"]
    assert done["outputs"] == {"denoised": study["output"], "difference": difference}
    source = sitk.ReadImage(study["input"])
    for path in done["outputs"].values():
        assert same_geometry(sitk.ReadImage(path), source)


def test_output_over_the_input_is_refused(tmp_path, study):
    code, events = run_worker(tmp_path, **{**study, "output": study["input"]})
    assert code == 7
    assert events[-1]["event"] == "error" and events[-1]["exit_code"] == 7
    assert "is an input" in events[-1]["message"]


def test_missing_ct_for_a_ct_model_is_one_error_event(tmp_path, study):
    model = make_package(tmp_path / "u2net", "u2net")
    code, events = run_worker(tmp_path, **{**study, "model": str(model)})
    assert code == 3
    assert events[-1] == {"event": "error", "exit_code": 3,
                          "message": f"Model '{model}' needs the study's CT; give it with --ct."}
    assert not Path(study["output"]).exists()


def test_unreadable_request_is_an_error_event(tmp_path):
    (tmp_path / "request.json").write_text("{not json", encoding="utf-8")
    process = subprocess.run([sys.executable, "-m", "SPECTDenoiseLib.worker", str(tmp_path / "request.json")],
                             cwd=REPOSITORY, capture_output=True, text=True, timeout=60, check=False)
    assert process.returncode == 3
    assert json.loads(process.stdout)["event"] == "error"


def test_request_with_unknown_keys_is_refused():
    with pytest.raises(InputError, match="unknown keys"):
        Request.from_dict({"input": "a.nrrd", "output": "b.nrrd", "colour": "red"})


@pytest.mark.slow
def test_sigterm_stops_the_worker_quickly_and_leaves_nothing(tmp_path, study):
    model = make_package(tmp_path / "diffusion", "diffusion", diffusion=SLOW_DIFFUSION)
    variance = tmp_path / "out" / "variance.nrrd"
    process = start_worker(tmp_path, **{**study, "model": str(model)}, variance=str(variance))
    for line in process.stdout:
        if json.loads(line)["stage"] == "sampling":
            break
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    remaining, _ = process.communicate(timeout=30)
    assert time.monotonic() - sent < 5
    assert process.returncode == 130
    assert json.loads(remaining.splitlines()[-1]) == {"event": "error", "message": "Cancelled.", "exit_code": 130}
    assert os.listdir(tmp_path / "out") == []


def test_leftover_of_a_killed_writer_is_removed_by_the_next_run(tmp_path, study):
    writer = subprocess.Popen(
        [sys.executable, "-c", ("import sys, time; from SPECTDenoiseLib.io import atomic_output\n"
         "with atomic_output(sys.argv[1]) as partial:\n    print(partial, flush=True); time.sleep(60)"),
         study["output"]], cwd=REPOSITORY, stdout=subprocess.PIPE, text=True)
    leftover = Path(writer.stdout.readline().strip()).parent  # the writer's staging folder
    writer.kill()
    writer.communicate(timeout=30)
    assert leftover.exists() and leftover.name.startswith(PARTIAL_PREFIX)
    code, _ = run_worker(tmp_path, **study)
    assert code == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["denoised.nrrd"]
