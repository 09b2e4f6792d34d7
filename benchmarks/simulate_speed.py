"""Speed and resolution of the simulator on this machine; writes benchmarks/results/simulate_speed.json.

Measures: ``spectdenoise simulate --fraction 0.1`` end to end on a 96×96×48 volume (real subprocess, default
settings: Tc99m-LEHR, 120 views, OSEM 4 × 8), projector forward/adjoint and one OSEM reconstruction on that grid,
seconds per dataset case, and the reconstructed FWHM of a point source in a 20 cm water cylinder (noise-free).
Everything runs on one torch thread: on this shared 2-core machine two threads were up to 20× slower.
Run: ``python benchmarks/simulate_speed.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from SPECTDenoiseLib.dataset import generate_dataset
from SPECTDenoiseLib.io import write_volume
from SPECTDenoiseLib.phantoms import make_phantom, phantom_images
from SPECTDenoiseLib.simulate import orbit_radius_mm, simulate_pair
from SPECTDenoiseLib.simulation import OSEM, PRESETS, SPECTProjector

RESULTS = Path(__file__).resolve().parent / "results" / "simulate_speed.json"


def timed(function, repeats: int = 3) -> float:
    """Best wall time (s) of ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def fwhm_mm(profile: np.ndarray, spacing: float) -> float:
    """FWHM (mm) of a peaked 1D profile by linear interpolation at half maximum."""
    peak = int(np.argmax(profile))
    half = profile[peak] / 2
    left = peak - np.argmax(profile[peak::-1] < half)
    right = peak + np.argmax(profile[peak:] < half)
    x_left = left + (half - profile[left]) / (profile[left + 1] - profile[left])
    x_right = right - 1 + (profile[right - 1] - half) / (profile[right - 1] - profile[right])
    return float((x_right - x_left) * spacing)


def point_source_fwhm(iterations: int = 4, subsets: int = 8) -> dict:
    """Reconstructed FWHM of a point source 5 cm off-centre in a 20 cm water cylinder (noise-free data)."""
    shape, spacing = (32, 96, 96), (4.0, 4.0, 4.0)
    y, x = np.mgrid[:96, :96]
    body = (((y - 47.5) ** 2 + (x - 47.5) ** 2) * 16 <= 100.0**2)
    mu = np.broadcast_to(body * PRESETS["Tc99m-LEHR"].mu_water_per_mm, shape).astype(np.float32).copy()
    activity = np.zeros(shape, np.float32)
    activity[16, 48, 60] = 1.0
    projector = SPECTProjector(shape, spacing, PRESETS["Tc99m-LEHR"], np.linspace(0, 360, 120, endpoint=False),
                               orbit_radius_mm(mu > 0, spacing), mu)
    data = projector.forward(torch.from_numpy(activity)) * 1e6
    image = OSEM(projector, subsets).reconstruct(data, iterations).numpy()
    return {"iterations": iterations, "subsets": subsets,
            "fwhm_x_mm": fwhm_mm(image[16, 48, :], 4.0), "fwhm_y_mm": fwhm_mm(image[16, :, 60], 4.0),
            "fwhm_z_mm": fwhm_mm(image[:, 48, 60], 4.0)}


def main() -> None:
    torch.set_num_threads(1)
    results: dict = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                 "python": platform.python_version(), "torch": torch.__version__,
                                 "load_average_1min": os.getloadavg()[0]}}
    phantom = make_phantom("torso", seed=990002, voxel_mm=4.0, size=96, slices=48)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "full.nrrd"
        write_volume(phantom_images(phantom)["activity"], source)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "SPECTDenoiseLib", "simulate", str(source), "-o",
                        str(Path(folder) / "low.nrrd"), "--fraction", "0.1"], check=True)
        results["cli_simulate_96x96x48_s"] = time.perf_counter() - start

    shape, spacing = phantom.activity.shape, phantom.spacing_mm
    projector = SPECTProjector(shape, spacing, PRESETS["Tc99m-LEHR"], np.linspace(0, 360, 120, endpoint=False),
                               orbit_radius_mm(phantom.mu_map > 0, spacing), phantom.mu_map)
    volume = torch.from_numpy(phantom.activity)
    projections = projector.forward(volume)
    with torch.inference_mode():
        results["forward_120_views_s"] = timed(lambda: projector.forward(volume))
        results["adjoint_120_views_s"] = timed(lambda: projector.adjoint(projections))
        osem = OSEM(projector, 8)
        results["osem_4x8_s"] = timed(lambda: osem.reconstruct(projections * 100, 4), repeats=1)
        results["simulate_pair_full_plus_3_fractions_s"] = timed(lambda: simulate_pair(
            phantom.activity, spacing, phantom.mu_map, fractions=(0.1, 0.25, 0.5)), repeats=1)
        results["point_source"] = point_source_fwhm()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        generate_dataset(folder, 6, seed=990003)
        results["dataset_s_per_case"] = (time.perf_counter() - start) / 6
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
