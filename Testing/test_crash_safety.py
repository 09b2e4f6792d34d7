"""Crashes and cancels lose nothing: a real worker killed mid-write, SIGTERM to the ``denoise`` CLI, and a worker
killed under the Slicer runner.

test_worker.py already shows a killed stand-in writer's partial file being removed by the next worker run and
SIGTERM stopping the worker; test_slicer_runner.py covers Cancel, the 0700 temp folder and a crashing script.
"""

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
from test_worker import run_worker, start_worker

from SPECTDenoiseLib.io import PARTIAL_PREFIX, same_geometry


@pytest.fixture
def study(tmp_path: Path) -> dict:
    """A 24 × 96 × 96 phantom (slow enough to write that a kill can land mid-write), a tiny U-Net, ``out/``."""
    spect = tmp_path / "spect.nrrd"
    sitk.WriteImage(phantom((24, 96, 96)), str(spect))
    (tmp_path / "out").mkdir()
    return {"input": str(spect), "output": str(tmp_path / "out" / "denoised.nrrd"),
            "difference": str(tmp_path / "out" / "difference.nii.gz"),
            "model": str(make_package(tmp_path / "unet", "unet2d")), "device": "cpu"}


def test_worker_killed_while_writing_leaves_no_truncated_output_and_the_next_run_cleans_up(tmp_path, study):
    worker = start_worker(tmp_path, **study)
    for line in worker.stdout:
        if json.loads(line).get("stage") == "writing":
            worker.send_signal(signal.SIGKILL)
            break
    worker.communicate(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    source = sitk.ReadImage(study["input"])
    for name in os.listdir(tmp_path / "out"):  # only partial files or complete outputs, never a torn final file
        if not name.startswith(PARTIAL_PREFIX):
            assert same_geometry(sitk.ReadImage(str(tmp_path / "out" / name)), source)
    code, events = run_worker(tmp_path, **study)
    assert code == 0 and events[-1]["event"] == "done"
    assert sorted(os.listdir(tmp_path / "out")) == ["denoised.nrrd", "difference.nii.gz"]


@pytest.mark.slow
def test_sigterm_to_the_denoise_cli_exits_130_and_leaves_nothing(tmp_path):
    spect = tmp_path / "spect.nrrd"
    sitk.WriteImage(phantom(), str(spect))
    (tmp_path / "out").mkdir()
    model = make_package(tmp_path / "diffusion", "diffusion", diffusion=SLOW_DIFFUSION)
    process = subprocess.Popen(
        [sys.executable, "-m", "SPECTDenoiseLib", "denoise", str(spect), "-o", str(tmp_path / "out" / "d.nrrd"),
         "--variance", str(tmp_path / "out" / "v.nrrd"), "--model", str(model), "--device", "cpu"],
        cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if "sampling:" in line:
            break
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, remaining = process.communicate(timeout=30)
    assert time.monotonic() - sent < 5
    assert process.returncode == 130
    assert remaining.splitlines()[-1] == "spectdenoise: error: Cancelled."
    assert "Traceback" not in remaining
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.slow
def test_slicer_runner_fails_cleanly_when_its_worker_is_killed_and_can_run_again(tmp_path):
    slicer = pytest.importorskip("slicer")
    sys.path.insert(0, str(REPOSITORY / "SPECTDenoise"))
    from SPECTDenoiseLogic.denoising import DenoiseRequest
    from SPECTDenoiseLogic.runner import BackgroundRunner, State
    from test_slicer_runner import _spect_node, _wait_for

    scene = slicer.vtkMRMLScene()
    node = _spect_node(scene)
    runner = BackgroundRunner(scene, sys.executable)
    slow = make_package(tmp_path / "diffusion", "diffusion", diffusion=SLOW_DIFFUSION)
    runner.start(DenoiseRequest(node, model=str(slow), device="cpu"))
    folder = runner.folder
    _wait_for(runner, lambda events: any((e.fraction or 0) > 0.05 for e in events), timeout_s=120)
    os.kill(runner.pid, signal.SIGKILL)  # what the out-of-memory killer does
    events = runner.wait(30)
    assert runner.state is State.FAILED and events[-1].state is State.FAILED
    assert runner.message.startswith("The worker was killed by SIGKILL") and "Traceback" not in runner.message
    assert not folder.exists() and runner.outputs == {}
    runner.start(DenoiseRequest(node, model=str(make_package(tmp_path / "unet", "unet2d")), device="cpu"))
    runner.wait(120)
    assert runner.state is State.DONE, runner.message
    assert set(runner.outputs) == {"denoised", "difference"}
