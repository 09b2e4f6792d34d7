"""The module's background runs: real worker and simulator subprocesses started, followed, imported and cancelled
through the MRML logic (BackgroundRunner) on a real vtkMRMLScene."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from model_fixtures import SLOW_DIFFUSION, diffusion_schedule, make_package

slicer = pytest.importorskip("slicer")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SPECTDenoise"))

from SPECTDenoiseLogic.denoising import DenoiseRequest
from SPECTDenoiseLogic.runner import BackgroundRunner, State
from SPECTDenoiseLogic.teaching import LowCountRequest


def _spect_node(scene, shape=(6, 16, 16)):
    rng = np.random.default_rng(0)
    _, y, x = np.indices(shape)
    body = (y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2 < (0.4 * shape[1]) ** 2
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "SPECT")
    node.SetSpacing(4.0, 4.0, 5.0)
    node.SetOrigin(10.0, -5.0, 3.0)
    slicer.util.updateVolumeFromArray(node, (np.where(body, 20.0, 0.0) + rng.poisson(5.0, shape) * body).astype(np.float32))
    node.CreateDefaultDisplayNodes()
    return node


def _group_alive(pgid: int, settle_s: float = 5.0) -> bool:
    """True while a process of group ``pgid`` exists after ``settle_s`` (killed processes need reaping)."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)


def _wait_for(runner: BackgroundRunner, condition, timeout_s: float) -> list:
    events, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events += runner.poll()
        if condition(events):
            return events
        time.sleep(0.05)
    raise AssertionError(f"condition not met in {timeout_s} s; state {runner.state}, events {events[-3:]}")


@pytest.mark.slow
def test_worker_run_imports_denoised_difference_and_variance_nodes(scene, tmp_path):
    model = make_package(tmp_path / "diffusion", "diffusion", perturb=False, diffusion=diffusion_schedule(2, 2))
    node = _spect_node(scene)
    runner = BackgroundRunner(scene, sys.executable)
    request = DenoiseRequest(node, model=str(model), device="cpu",
                             outputs={"denoised": None, "difference": None, "variance": None})
    assert [e.state for e in runner.start(request)] == [State.STARTING, State.RUNNING]
    folder = runner.folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    events = runner.wait(120)
    assert runner.state is State.DONE, runner.message
    assert any(e.state is State.RUNNING and 0 < (e.fraction or 0) < 1 for e in events)
    assert events[-1].state is State.DONE and events[-1].fraction == 1.0
    assert {kind: n.GetName() for kind, n in runner.outputs.items()} == {
        "denoised": "SPECT denoised", "difference": "SPECT difference", "variance": "SPECT variance"}
    denoised = runner.outputs["denoised"]
    assert denoised.GetSpacing() == node.GetSpacing() and denoised.GetOrigin() == node.GetOrigin()
    difference = slicer.util.arrayFromVolume(runner.outputs["difference"])
    np.testing.assert_allclose(difference, slicer.util.arrayFromVolume(denoised) - slicer.util.arrayFromVolume(node),
                               atol=1e-3)
    assert not folder.exists()


@pytest.mark.slow
def test_cancel_kills_the_worker_and_its_launcher_and_leaves_nothing(scene, tmp_path):
    model = make_package(tmp_path / "diffusion", "diffusion", perturb=False, diffusion=SLOW_DIFFUSION)
    launcher = tmp_path / "PythonSlicer"  # like Slicer's launcher: a parent process that starts Python
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\n')
    launcher.chmod(0o755)
    node = _spect_node(scene, shape=(8, 32, 32))
    nodes_before = scene.GetNumberOfNodes()
    runner = BackgroundRunner(scene, str(launcher), grace_s=5.0)
    runner.start(DenoiseRequest(node, model=str(model), device="cpu"))
    pgid, folder = runner.pid, runner.folder
    _wait_for(runner, lambda events: any((e.fraction or 0) > 0.05 for e in events), timeout_s=120)
    assert runner.state is State.RUNNING
    cancelled_at = time.monotonic()
    assert [e.state for e in runner.cancel()] == [State.CANCELLING]
    events = runner.wait(30)
    assert runner.state is State.IDLE and events[-1].message == "Cancelled."
    assert time.monotonic() - cancelled_at < 10
    assert not _group_alive(pgid)
    assert not folder.exists()
    assert scene.GetNumberOfNodes() == nodes_before


def test_worker_error_is_reported_as_one_sentence(scene, tmp_path):
    runner = BackgroundRunner(scene, sys.executable)
    runner.start(DenoiseRequest(_spect_node(scene), model=str(tmp_path / "no-such-model"), device="cpu"))
    events = runner.wait(120)
    assert runner.state is State.FAILED
    assert events[-1].state is State.FAILED and "Traceback" not in events[-1].message
    assert "no-such-model" in runner.message


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace_period(scene, tmp_path):
    stubborn = tmp_path / "stubborn"
    stubborn.write_text("#!/bin/sh\ntrap '' TERM\n"
                        "echo '{\"event\": \"progress\", \"fraction\": 0.1, \"stage\": \"x\", \"message\": \"busy\"}'\n"
                        "sleep 60\n")
    stubborn.chmod(0o755)
    runner = BackgroundRunner(scene, str(stubborn), grace_s=0.5)
    runner.start(DenoiseRequest(_spect_node(scene)))
    events = _wait_for(runner, lambda events: any(e.message == "busy" for e in events), timeout_s=10)
    assert events[-1].fraction == pytest.approx(0.1)
    pgid = runner.pid
    runner.cancel()
    runner.wait(5)
    assert runner.state is State.IDLE
    assert not _group_alive(pgid)


def test_a_crashing_worker_fails_with_its_last_stderr_line(scene, tmp_path):
    crash = tmp_path / "crash"
    crash.write_text("#!/bin/sh\necho 'not json'\necho 'Segmentation fault' >&2\nexit 139\n")
    crash.chmod(0o755)
    runner = BackgroundRunner(scene, str(crash))
    runner.start(DenoiseRequest(_spect_node(scene)))
    events = runner.wait(10)
    assert runner.state is State.FAILED
    assert events[-1].message == "The worker stopped unexpectedly (exit code 139): Segmentation fault"


def test_start_while_running_is_refused_and_a_new_run_may_follow_a_failure(scene, tmp_path):
    sleeper = tmp_path / "sleeper"
    sleeper.write_text("#!/bin/sh\nsleep 60\n")
    sleeper.chmod(0o755)
    runner = BackgroundRunner(scene, str(sleeper), grace_s=1.0)
    node = _spect_node(scene)
    runner.start(DenoiseRequest(node))
    with pytest.raises(RuntimeError, match="running to starting"):
        runner.start(DenoiseRequest(node))
    runner.cancel()
    runner.wait(5)
    assert runner.state is State.IDLE
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    runner.python = str(failing)
    runner.start(DenoiseRequest(node))
    runner.wait(5)
    assert runner.state is State.FAILED
    runner.python = str(sleeper)
    assert runner.start(DenoiseRequest(node))[-1].state is State.RUNNING
    runner.cancel()
    runner.wait(5)



class _ImportBreaks:
    """A job of one quick step whose import adds a node, then raises as Slicer's ``arrayFromVolume`` does for a
    node it cannot read (RuntimeError, R:util.py)."""

    def write_inputs(self, folder: Path) -> list:
        from SPECTDenoiseLogic.runner import Step

        return [Step(["-c", "pass"], "Quick step…")]

    def import_outputs(self, scene, folder: Path):
        scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "half imported")
        raise RuntimeError("Unsupported volume type")


def test_an_import_that_breaks_unexpectedly_fails_the_run_and_adds_nothing(scene):
    """Any error while importing ends the run as failed (not stuck in 'importing', where Cancel does nothing and
    Apply never comes back) and removes what the import had added."""
    runner = BackgroundRunner(scene, sys.executable)
    nodes = scene.GetNumberOfNodes()
    runner.start(_ImportBreaks())
    events = runner.wait(30)
    assert runner.state is State.FAILED and "Unsupported volume type" in events[-1].message
    assert scene.GetNumberOfNodes() == nodes and runner.folder is None

def _full_count_node(scene, shape=(24, 32, 32)):
    """A full-count phantom: a hot sphere (400) in a warm cylinder (40), air outside; 4 mm voxels."""
    z, y, x = np.indices(shape)
    body = (y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2 < (0.4 * shape[1]) ** 2
    sphere = (z - shape[0] / 2) ** 2 + (y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2 <= 25
    array = np.where(sphere, 400.0, np.where(body, 40.0, 0.0)).astype(np.float32)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "full")
    node.SetSpacing(4.0, 4.0, 4.0)
    slicer.util.updateVolumeFromArray(node, array)
    node.CreateDefaultDisplayNodes()
    return node, body & ~sphere


def test_teaching_series_runs_one_simulate_process_per_fraction_and_reports_each(scene, tmp_path):
    calls = tmp_path / "calls.txt"
    copier = tmp_path / "python"  # stands in for the simulator: records its arguments, copies INPUT to OUTPUT
    copier.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\ncp "$6" "$8"\n')
    copier.chmod(0o755)
    full, _ = _full_count_node(scene, shape=(4, 8, 8))
    runner = BackgroundRunner(scene, str(copier))
    assert runner.start(LowCountRequest(full, [0.5, 0.1], seed=3))[-1].message == "Simulating 50% counts (1 of 2)…"
    folder = runner.folder
    events = runner.wait(10)
    assert runner.state is State.DONE, runner.message
    assert [(e.fraction, e.message) for e in events[:-1]] == [(0.5, "Simulating 10% counts (2 of 2)…")]
    assert [line.split()[:5] + line.split()[6:] for line in calls.read_text().splitlines()] == [
        ["-m", "SPECTDenoiseLib", "--events", "jsonl", "simulate", "-o", str(folder / "low1.nrrd"), "--fraction",
         "0.5", "--seed", "3"],
        ["-m", "SPECTDenoiseLib", "--events", "jsonl", "simulate", "-o", str(folder / "low2.nrrd"), "--fraction",
         "0.1", "--seed", "4"]]
    assert [node.GetName() for node in runner.outputs.values()] == ["full 50% counts", "full 10% counts"]
    for node in runner.outputs.values():
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), slicer.util.arrayFromVolume(full))
        assert node.GetDisplayNode().GetColorNodeID() == full.GetDisplayNode().GetColorNodeID()
    assert not folder.exists()


@pytest.mark.slow
def test_teaching_series_simulates_one_named_volume_per_fraction_on_the_input_grid(scene):
    full, background = _full_count_node(scene)
    runner = BackgroundRunner(scene, sys.executable)
    runner.start(LowCountRequest(full, [0.5, 0.1], seed=3))
    runner.wait(240)
    assert runner.state is State.DONE, runner.message
    series = list(runner.outputs.values())
    assert [node.GetName() for node in series] == ["full 50% counts", "full 10% counts"]
    assert all(node.GetSpacing() == full.GetSpacing() for node in series)
    noise = [np.std(slicer.util.arrayFromVolume(node)[background]) for node in series]
    assert noise[1] > noise[0]


def test_cancel_stops_the_simulator_and_leaves_nothing(scene):
    full, _ = _full_count_node(scene)
    nodes_before = scene.GetNumberOfNodes()
    runner = BackgroundRunner(scene, sys.executable, grace_s=3.0)
    runner.start(LowCountRequest(full, [0.5, 0.1]))
    pgid, folder = runner.pid, runner.folder
    time.sleep(1.0)  # the simulator is under way
    runner.poll()
    assert runner.state is State.RUNNING and runner.pid == pgid
    assert [e.state for e in runner.cancel()] == [State.CANCELLING]
    events = runner.wait(10)
    assert runner.state is State.IDLE and events[-1].message == "Cancelled."
    assert not _group_alive(pgid)
    assert not folder.exists()
    assert scene.GetNumberOfNodes() == nodes_before


def test_cancel_when_idle_does_nothing(scene):
    runner = BackgroundRunner(scene, sys.executable)
    assert runner.cancel() == [] and runner.poll() == [] and runner.state is State.IDLE
