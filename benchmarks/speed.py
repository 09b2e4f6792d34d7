"""Speed benchmark: end-to-end seconds and peak memory of `spectdenoise denoise` per shipped model.

Each run is a fresh `spectdenoise denoise` process (model loading, reading, denoising, writing: what a user
waits for), timed by wall clock; peak memory is the child's maximum resident set size. Volumes: 128³ and
256×256×200 voxels of smooth random activity (speed does not depend on content). Diffusion models run with
their default samples and steps at 128³; at 256×256×200 on a CPU they are skipped (minutes per volume) unless
``--all``. Results: benchmarks/results/speed_<device>.json.

Usage: python benchmarks/speed.py [--device cpu|cuda] [--all]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from SPECTDenoiseLib.hub import read_catalogue, resolve_model
from SPECTDenoiseLib.models.config import ModelConfig

SIZES = {"128^3": (128, 128, 128), "256x256x200": (200, 256, 256)}


def make_volume(shape_zyx: tuple[int, int, int], path: Path) -> Path:
    """Write a smooth positive random volume (4 mm voxels) to ``path``."""
    rng = np.random.default_rng(0)
    array = gaussian_filter(rng.gamma(2.0, 1.0, shape_zyx).astype(np.float32), 2.0) * 100
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing((4.0, 4.0, 4.0))
    sitk.WriteImage(image, str(path))
    return path


def time_denoise(model: str, volume: Path, device: str, ct: Path | None) -> dict:
    """Run one denoise in a child process; return seconds, the child's peak RSS in MiB and its exit code."""
    output = volume.parent / f"out_{model}.nrrd"
    command = [sys.executable, "-m", "SPECTDenoiseLib", "denoise", str(volume), "-o", str(output),
               "--model", model, "--device", device]
    if ct is not None:
        command += ["--ct", str(ct)]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPOSITORY)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    stderr = child.stderr.read()
    child.stderr.close()
    output.unlink(missing_ok=True)
    code = os.waitstatus_to_exitcode(status)
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "exit_code": code,
            "error": stderr.strip()[-300:] if code else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--all", action="store_true", help="also run diffusion models on the large volume")
    args = parser.parse_args()
    catalogue = read_catalogue()
    shipped = [entry for entry in catalogue["models"] if "path" in entry]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for size_name, shape in SIZES.items():
            volume = make_volume(shape, Path(folder) / f"spect_{size_name}.nrrd")
            ct = None
            for entry in shipped:
                config = ModelConfig.load(resolve_model(entry["id"]) / "config.json")
                needs_ct = config.needs_ct
                if needs_ct and ct is None:
                    ct = Path(folder) / f"ct_{size_name}.nrrd"
                    sitk.WriteImage(sitk.ReadImage(str(volume)) * 0, str(ct))  # water everywhere: 0 HU
                if config.kind == "diffusion" and size_name != "128^3" and args.device == "cpu" and not args.all:
                    results.append({"model": entry["id"], "size": size_name, "skipped": "diffusion on CPU"})
                    continue
                measured = time_denoise(entry["id"], volume, args.device, ct if needs_ct else None)
                results.append({"model": entry["id"], "size": size_name, **measured})
                print(results[-1], flush=True)
            ct = None
    out = REPOSITORY / "benchmarks" / "results" / f"speed_{args.device}.json"
    out.write_text(json.dumps({"machine": platform.platform(), "processor": platform.processor(),
                               "device": args.device, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
