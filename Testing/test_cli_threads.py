"""``spectdenoise denoise --threads N`` in real subprocesses: the run uses N torch threads (one study and batch
mode), and a value that is not a whole number from 1 to 4096 is a usage error (exit code 2) in one sentence."""

from __future__ import annotations

import json

import pytest
import SimpleITK as sitk
from model_fixtures import make_package, phantom

from SPECTDenoiseLib.cli import USAGE_EXIT_CODE


def done_events(stdout: str) -> list[dict]:
    return [event for event in map(json.loads, stdout.splitlines()) if event["event"] == "done"]


@pytest.mark.parametrize("threads", [1, 3])
def test_one_study_runs_on_the_threads_asked_for(tmp_path, run_cli, threads):
    small = tmp_path / "small.nrrd"
    sitk.WriteImage(phantom(), str(small))
    model = make_package(tmp_path / "unet", "unet2d")
    result = run_cli("denoise", small, "-o", tmp_path / "out.nrrd", "--model", model, "--device", "cpu",
                     "--threads", str(threads), "--progress", "jsonl")
    assert result.returncode == 0, result.stderr
    assert [event["threads"] for event in done_events(result.stdout)] == [threads]


def test_batch_mode_gives_every_study_the_threads_asked_for(tmp_path, run_cli):
    studies = tmp_path / "studies"
    studies.mkdir()
    for seed in (0, 1):
        sitk.WriteImage(phantom(seed=seed), str(studies / f"study{seed}.nrrd"))
    model = make_package(tmp_path / "unet", "unet2d")
    result = run_cli("denoise", studies, "-o", tmp_path / "out", "--model", model, "--device", "cpu", "--jobs", "2",
                     "--threads", "1", "--progress", "jsonl")
    assert result.returncode == 0, result.stderr
    events = done_events(result.stdout)
    assert sorted(event["study"] for event in events) == ["study0", "study1"]
    assert all(event["threads"] == 1 for event in events)


@pytest.mark.parametrize("value", ["0", "many", "2.5", "5000"])
def test_a_bad_thread_count_is_a_usage_error_in_one_sentence(tmp_path, run_cli, value):
    small = tmp_path / "small.nrrd"
    sitk.WriteImage(phantom(), str(small))
    result = run_cli("denoise", small, "-o", tmp_path / "out.nrrd", "--threads", value)
    assert result.returncode == USAGE_EXIT_CODE
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"--threads: '{value}' is not a whole number of CPU threads from 1 to 4096" in result.stderr
    assert not (tmp_path / "out.nrrd").exists()
