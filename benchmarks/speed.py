"""Speed benchmark: wall and CPU time of `spectdenoise denoise` per shipped model, repeated, with the conditions.

Each run is a fresh `spectdenoise denoise` process (start-up, model loading, reading, denoising, writing: what a
user waits for). Per run we record the wall time, the CPU time of the process and every descendant it waited for
(user + system, from ``os.wait4``'s resource usage), its peak resident memory, and the machine's 1-minute load
average just before and just after (other work on the machine slows the run; CPU time is less affected than wall
time). Each model and volume is run ``--repeats`` times (default 3); the table gives medians and the load range.
The CLI gives its worker ``OMP_NUM_THREADS`` = CPU cores ÷ jobs (one job here), recorded as ``threads``.

Rows of models and volumes left out of ``--models``/``--volumes`` are kept from the previous result file of the
same hardware (CPU model, cores) and device, each with the date of its run, so one model can be re-measured
without re-running the slow ones.

Volumes (4 mm voxels, smooth random activity; see :data:`VOLUMES`): ``128^3`` and ``256x256x200`` fill the field
of view with tissue, the slowest case for the slice models, which pad each slice with 16 voxels of air beyond the
tissue (``tiling.AIR_MARGIN``), so there 128² slices run as 168²; ``128^3 body in air`` is the typical clinical
scan, a 36 × 24 cm body (elliptic cylinder, CT 0 HU inside and −1000 HU outside) in a 51 cm field of view, whose
slices need no padding beyond the size multiple.
Diffusion models run with their default samples and steps and write their variance map (they sample only for
it) on the 128³ volumes; on a CPU the large volume is skipped for them (minutes per volume) unless ``--all``; they
run last. Results: ``benchmarks/results/speed_<device>.json``, rewritten after every model and volume.

Usage: python benchmarks/speed.py [--device cpu|cuda] [--repeats 3] [--models ID ...] [--volumes NAME ...] [--all]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy.ndimage import gaussian_filter

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from SPECTDenoiseLib.hub import read_catalogue, resolve_model  # noqa: E402
from SPECTDenoiseLib.io import atomic_output  # noqa: E402
from SPECTDenoiseLib.models.config import ModelConfig  # noqa: E402

VOXEL_MM = 4.0
BODY_SEMI_AXES_MM = (120.0, 180.0)
"""(anterior-posterior, left-right) semi-axes of the ``body in air`` volume's elliptic cylinder: a 36 × 24 cm
trunk."""


@dataclass(frozen=True)
class Volume:
    """A speed-test volume: its shape [z, y, x], whether tissue is only a body in air (else it fills it), and
    whether diffusion models run on it on a CPU without ``--all`` (minutes per volume)."""

    shape_zyx: tuple[int, int, int]
    body_in_air: bool = False
    diffusion_on_cpu: bool = True


VOLUMES = {"128^3": Volume((128, 128, 128)), "256x256x200": Volume((200, 256, 256), diffusion_on_cpu=False),
           "128^3 body in air": Volume((128, 128, 128), body_in_air=True)}


def body_mask(shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """The ``body in air`` elliptic cylinder (:data:`BODY_SEMI_AXES_MM`) centred in every slice, [z, y, x] bool."""
    y, x = np.ogrid[:shape_zyx[1], :shape_zyx[2]]
    semi_y, semi_x = (axis / VOXEL_MM for axis in BODY_SEMI_AXES_MM)
    ellipse = ((y - (shape_zyx[1] - 1) / 2) / semi_y) ** 2 + ((x - (shape_zyx[2] - 1) / 2) / semi_x) ** 2 <= 1
    return np.broadcast_to(ellipse, shape_zyx)


def make_volume(volume: Volume, path: Path, ct_path: Path) -> None:
    """Write ``volume``'s smooth positive random SPECT to ``path`` and its CT (0 HU tissue, −1000 HU air) to
    ``ct_path``, 4 mm voxels."""
    rng = np.random.default_rng(0)
    array = gaussian_filter(rng.gamma(2.0, 1.0, volume.shape_zyx).astype(np.float32), 2.0) * 100
    tissue = body_mask(volume.shape_zyx) if volume.body_in_air else np.ones(volume.shape_zyx, bool)
    for values, target in ((np.where(tissue, array, 0), path), (np.where(tissue, 0, -1000), ct_path)):
        image = sitk.GetImageFromArray(values.astype(np.float32))
        image.SetSpacing((VOXEL_MM,) * 3)
        sitk.WriteImage(image, str(target))


def time_denoise(model: str, volume: Path, device: str, ct: Path | None, variance: bool = False) -> dict:
    """Run one denoise in a child process (with ``variance``, also the variance map: diffusion models sample only
    then); return wall and CPU seconds, peak RSS (MiB), load, exit code."""
    output = volume.parent / "out.nrrd"
    command = [sys.executable, "-m", "SPECTDenoiseLib", "denoise", str(volume), "-o", str(output),
               "--model", model, "--device", device]
    if ct is not None:
        command += ["--ct", str(ct)]
    if variance:
        command += ["--variance", str(volume.parent / "variance.nrrd")]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPOSITORY)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    stderr = child.stderr.read()
    child.stderr.close()
    output.unlink(missing_ok=True)
    (volume.parent / "variance.nrrd").unlink(missing_ok=True)
    code = os.waitstatus_to_exitcode(status)
    return {"wall_s": round(seconds, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2), "exit_code": code,
            "error": stderr.strip()[-300:] if code else None}


def summarise(runs: list[dict]) -> dict:
    """Medians of wall and CPU time and peak memory over successful runs, and the load range seen."""
    good = [run for run in runs if run["exit_code"] == 0]
    if not good:
        return {"failed": runs[-1]["error"]}
    loads = [run[key] for run in good for key in ("load_before", "load_after")]
    return {"median_wall_s": statistics.median(r["wall_s"] for r in good),
            "median_cpu_s": statistics.median(r["cpu_s"] for r in good),
            "median_peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in good),
            "load_min": min(loads), "load_max": max(loads), "repeats": len(good)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="*", help="catalogue ids or folders (default: every shipped model)")
    parser.add_argument("--volumes", nargs="*", choices=list(VOLUMES), help="volumes to run (default: all)")
    parser.add_argument("--all", action="store_true", help="also run diffusion models on the large volume")
    args = parser.parse_args()
    models = args.models or [entry["id"] for entry in read_catalogue()["models"] if "path" in entry]
    volumes = args.volumes or list(VOLUMES)
    configs = {model: ModelConfig.load(resolve_model(model) / "config.json") for model in models}
    threads = max(1, os.cpu_count() or 1)
    out = REPOSITORY / "benchmarks" / "results" / f"speed_{args.device}.json"
    hardware = hardware_identity(args.device)
    record = {"machine": platform.platform(), "processor": platform.processor() or platform.machine(), **hardware,
              "python": platform.python_version(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": shlex.join(["python", "benchmarks/speed.py", *sys.argv[1:]]),
              "results": earlier_rows(out, models, volumes, hardware)}
    plan = [(size, model) for diffusion in (False, True) for size in volumes for model in models
            if (configs[model].kind == "diffusion") == diffusion]  # slow diffusion runs last
    with tempfile.TemporaryDirectory() as folder:
        for size_name, model in plan:
            stem = size_name.replace(" ", "_")
            volume, ct = Path(folder) / f"spect_{stem}.nrrd", Path(folder) / f"ct_{stem}.nrrd"
            if not volume.exists():
                make_volume(VOLUMES[size_name], volume, ct)
            config = configs[model]
            row = {"model": model, "size": size_name, "threads": threads, "date": record["date"]}
            if (config.kind == "diffusion" and not VOLUMES[size_name].diffusion_on_cpu and args.device == "cpu"
                    and not args.all):
                record["results"].append({**row, "skipped": "diffusion on CPU"})
                continue
            diffusion = config.kind == "diffusion"
            runs = [time_denoise(model, volume, args.device, ct if config.needs_ct else None, variance=diffusion)
                    for _ in range(args.repeats)]
            record["results"].append({**row, **({"with": "variance map"} if diffusion else {}), **summarise(runs),
                                      "runs": runs})
            print({k: v for k, v in record["results"][-1].items() if k != "runs"}, flush=True)
            with atomic_output(out) as temporary:  # after every row: a partial run is usable
                temporary.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")

def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_identity(device: str) -> dict:
    """What makes two runs' times comparable: the CPU model, the number of cores, the device and, on a GPU, its
    model. (The platform string is not: it changes with every kernel build, so a fresh VM of the same kind would
    look like another machine. A VM may name its CPU only generically, e.g. "Intel(R) Xeon(R) Processor".)"""
    identity = {"cpu_model": cpu_model(), "cpu_cores": os.cpu_count(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        identity["gpu_model"] = torch.cuda.get_device_name(torch.device(device))
    return identity


def earlier_rows(path: Path, models: list[str], volumes: list[str], hardware: dict) -> list[dict]:
    """The rows of ``path`` (a previous run on the same ``hardware``: :func:`hardware_identity`) that this run does
    not repeat (their model not in ``models`` or their volume not in ``volumes``), each dated (rows of files older
    than per-row dates get the file's date). A file that does not record its CPU model keeps nothing."""
    if not path.exists():
        return []
    earlier = json.loads(path.read_text())
    if any(earlier.get(key) != value for key, value in hardware.items()):
        return []
    return [{**row, "date": row.get("date", earlier["date"])} for row in earlier["results"]
            if row["model"] not in models or row["size"] not in volumes]


if __name__ == "__main__":
    main()
