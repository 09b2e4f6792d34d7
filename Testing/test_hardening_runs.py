"""Every way a run can end is a documented exit code: cancellation is never swallowed by a broad handler (SIGTERM
while a network is built, during ``simulate`` and ``dataset``), running out of memory is a device error with
advice, and ``serve`` shows a bug's traceback only when debugging.

test_crash_safety.py covers SIGTERM to ``denoise`` while sampling and a SIGKILLed worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch
from conftest import REPOSITORY
from model_fixtures import make_package, phantom

from SPECTDenoiseLib.errors import CancelledError, DeviceMemoryError, as_memory_error, cancellable
from SPECTDenoiseLib.io import PARTIAL_PREFIX
from SPECTDenoiseLib.models.config import ModelConfig
from SPECTDenoiseLib.models.registry import build_network
from SPECTDenoiseLib.worker import Request, serve

SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def test_sigterm_while_a_network_is_built_cancels_instead_of_becoming_a_model_error():
    config = ModelConfig.from_dict({"architecture": "unet2d", "context_slices": 0,
                                    "arguments": {"channels": [64, 128, 256, 512], "num_res_units": 8}})
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    with pytest.raises(CancelledError), cancellable():
        timer.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the signal lands inside the constructor (nearly all of the time)
            build_network(config)
    timer.join()


def _catches_sigterm(pid: int) -> bool:
    """True once the process has installed a SIGTERM handler (bit 15 of SigCgt in /proc/PID/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        caught = next(line for line in status if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & SIGTERM_BIT)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("command", ["simulate", "dataset"])
def test_sigterm_cancels_simulate_and_dataset_with_exit_code_130(tmp_path, command):
    source, out = tmp_path / "spect.nrrd", tmp_path / "out"
    sitk.WriteImage(phantom((32, 64, 64)), str(source))
    out.mkdir()
    arguments = {"simulate": ["simulate", source, "-o", out / "low.nrrd", "--fraction", "0.1", "--angles", "240"],
                 "dataset": ["dataset", "-o", out / "data", "--n", "50"]}[command]
    process = subprocess.Popen([sys.executable, "-m", "SPECTDenoiseLib", *map(str, arguments)], cwd=REPOSITORY,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _catches_sigterm(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the work
    process.send_signal(signal.SIGTERM)
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 130, errors
    assert errors.splitlines()[-1] == "spectdenoise: error: Cancelled."
    assert "Traceback" not in errors
    assert not [path for path in out.rglob(PARTIAL_PREFIX + "*")]
    assert not (out / "low.nrrd").exists()


MEMORY_HEADROOM = 1 << 30
LIMITED_CLI = """import resource, sys
from SPECTDenoiseLib import cli, inference  # the imports count, not the work
with open('/proc/self/status') as status:
    used = next(int(line.split()[1]) * 1024 for line in status if line.startswith('VmSize:'))
resource.setrlimit(resource.RLIMIT_AS, (used + int(sys.argv[1]), resource.RLIM_INFINITY))
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_running_out_of_memory_is_a_device_error_with_advice(tmp_path):
    spect = tmp_path / "spect.nrrd"
    sitk.WriteImage(phantom(), str(spect))
    model = make_package(tmp_path / "wide3d", "unet3d", arguments={"channels": [32, 64, 64, 128]},
                         patch_size=[128, 128, 256])  # one window's activations need several GB
    (tmp_path / "out").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", LIMITED_CLI, str(MEMORY_HEADROOM), "denoise", str(spect), "-o",
         str(tmp_path / "out" / "d.nrrd"), "--model", str(model), "--device", "cpu"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == DeviceMemoryError.exit_code, result.stderr
    assert result.stderr.splitlines()[-1].startswith("spectdenoise: error: The computer ran out of memory; ")
    assert "Traceback" not in result.stderr
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_out_of_memory_becomes_a_device_memory_error():
    free, _ = torch.cuda.mem_get_info()
    with pytest.raises(torch.cuda.OutOfMemoryError) as raised:
        torch.empty(2 * free, dtype=torch.uint8, device="cuda")
    error = as_memory_error(raised.value)
    assert isinstance(error, DeviceMemoryError) and str(error).startswith("The GPU ran out of memory; use --device cpu")


@pytest.mark.parametrize("debug", [False, True])
def test_serve_prints_a_bugs_traceback_only_when_debugging(tmp_path, capfd, debug):
    spect = tmp_path / "spect.nrrd"
    sitk.WriteImage(phantom(), str(spect))
    request = Request.from_dict({"input": str(spect), "output": str(tmp_path / "d.nrrd"), "device": "cpu",
                                 "model": str(make_package(tmp_path / "unet", "unet2d"))})
    events = []

    def emit(event: dict) -> None:  # a caller with a bug: its progress display fails
        if event["event"] == "progress":
            raise ValueError("the progress display failed")
        events.append(event)

    assert serve(request, emit, debug=debug) == 1
    assert events == [{"event": "error", "exit_code": 1,
                       "message": "Internal error: ValueError: the progress display failed."}]
    assert ("Traceback" in capfd.readouterr().err) is debug
