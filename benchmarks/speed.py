"""Speed benchmark: wall and CPU time of `spectdenoise denoise` per shipped model, repeated, with the conditions.

Each run is a fresh `spectdenoise denoise` process (start-up, model loading, reading, denoising, writing: what a
user waits for). Per run we record the wall time, the CPU time of the process and every descendant it waited for
(user + system, from ``os.wait4``'s resource usage), its peak resident memory, and the machine's 1-minute load
average just before and just after (other work on the machine slows the run; CPU time is less affected than wall
time). Each model and volume is run ``--repeats`` times (default 3); the table gives medians and the load range.
The CLI gives its worker ``OMP_NUM_THREADS`` = CPU cores ÷ jobs (one job here), recorded as ``threads``.

Rows of models left out of ``--models`` are kept from the previous result file of the same machine and device,
each with the date of its run, so one model can be re-measured without re-running the slow ones.

Volumes: 128³ and 256 × 256 × 200 voxels (4 mm) of smooth random activity filling the field of view: the slowest
case for the slice models, which pad each slice with 16 voxels of air beyond the tissue (``tiling.AIR_MARGIN``), so
here 128² slices run as 168² (a scan with air around the body pads less).
Diffusion models run with their default samples and steps and write their variance map (they sample only for
it) at 128³; on a CPU the large volume is skipped for them (minutes per volume) unless ``--all``; they run last. Results: ``benchmarks/results/speed_<device>.json``,
rewritten after every model and volume.

Usage: python benchmarks/speed.py [--device cpu|cuda] [--repeats 3] [--models ID ...] [--all]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy.ndimage import gaussian_filter

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from SPECTDenoiseLib.hub import read_catalogue, resolve_model  # noqa: E402
from SPECTDenoiseLib.models.config import ModelConfig  # noqa: E402

SIZES = {"128^3": (128, 128, 128), "256x256x200": (200, 256, 256)}


def make_volume(shape_zyx: tuple[int, int, int], path: Path) -> Path:
    """Write a smooth positive random volume (4 mm voxels) to ``path``."""
    rng = np.random.default_rng(0)
    array = gaussian_filter(rng.gamma(2.0, 1.0, shape_zyx).astype(np.float32), 2.0) * 100
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing((4.0, 4.0, 4.0))
    sitk.WriteImage(image, str(path))
    return path


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
    parser.add_argument("--all", action="store_true", help="also run diffusion models on the large volume")
    args = parser.parse_args()
    models = args.models or [entry["id"] for entry in read_catalogue()["models"] if "path" in entry]
    configs = {model: ModelConfig.load(resolve_model(model) / "config.json") for model in models}
    threads = max(1, os.cpu_count() or 1)
    out = REPOSITORY / "benchmarks" / "results" / f"speed_{args.device}.json"
    record = {"machine": platform.platform(), "processor": platform.processor() or platform.machine(),
              "cpu_cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
              "device": args.device, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:]),
              "results": earlier_rows(out, models, platform.platform(), args.device)}
    plan = [(size, model) for diffusion in (False, True) for size in SIZES for model in models
            if (configs[model].kind == "diffusion") == diffusion]  # slow diffusion runs last
    with tempfile.TemporaryDirectory() as folder:
        for size_name, model in plan:
            volume = Path(folder) / f"spect_{size_name}.nrrd"
            ct = Path(folder) / f"ct_{size_name}.nrrd"
            if not volume.exists():
                make_volume(SIZES[size_name], volume)
                sitk.WriteImage(sitk.ReadImage(str(volume)) * 0, str(ct))  # water everywhere: 0 HU
            config = configs[model]
            row = {"model": model, "size": size_name, "threads": threads, "date": record["date"]}
            if config.kind == "diffusion" and size_name != "128^3" and args.device == "cpu" and not args.all:
                record["results"].append({**row, "skipped": "diffusion on CPU"})
                continue
            diffusion = config.kind == "diffusion"
            runs = [time_denoise(model, volume, args.device, ct if config.needs_ct else None, variance=diffusion)
                    for _ in range(args.repeats)]
            record["results"].append({**row, **({"with": "variance map"} if diffusion else {}), **summarise(runs),
                                      "runs": runs})
            print({k: v for k, v in record["results"][-1].items() if k != "runs"}, flush=True)
            out.write_text(json.dumps(record, indent=1) + "\n")  # after every row: a partial run is usable
    print(f"wrote {out}")

def earlier_rows(path: Path, models: list[str], machine: str, device: str) -> list[dict]:
    """The rows of ``path`` (a previous run on the same ``machine`` and ``device``) for models not in ``models``,
    each dated (rows of files older than per-row dates get the file's date)."""
    if not path.exists():
        return []
    earlier = json.loads(path.read_text())
    if earlier.get("machine") != machine or earlier.get("device") != device:
        return []
    return [{**row, "date": row.get("date", earlier["date"])} for row in earlier["results"]
            if row["model"] not in models]


if __name__ == "__main__":
    main()
