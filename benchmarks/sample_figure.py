"""Figure of the shipped sample: low-count input, default model, difference, the diffusion model's uncertainty (σ =
√variance; its denoised image is the default model's), full-count reference.

Writes docs/images/sample_result.png (also the extension's screenshot). Usage: python benchmarks/sample_figure.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from SPECTDenoiseLib.hub import load_model, read_catalogue
from SPECTDenoiseLib.inference import denoise
from SPECTDenoiseLib.io import read_volume
from SPECTDenoiseLib.metrics import body_mask, nrmse

SAMPLE = REPOSITORY / "Resources" / "Samples"


def main() -> None:
    low = read_volume(SAMPLE / "iec_low10.nrrd")
    full = sitk.GetArrayFromImage(read_volume(SAMPLE / "iec_full.nrrd"))
    labels = sitk.GetArrayFromImage(read_volume(SAMPLE / "iec_labels.nrrd"))
    default = read_catalogue()["default"]
    diffusion = [e["id"] for e in read_catalogue()["models"] if e.get("kind") == "diffusion" and "path" in e]
    result = denoise(low, load_model(default), device="cpu")
    panels = [("10 % counts (input)", sitk.GetArrayFromImage(low)),
              (f"{default}", sitk.GetArrayFromImage(result.denoised)),
              ("difference (denoised − input)", sitk.GetArrayFromImage(result.difference))]
    if diffusion:
        sampled = denoise(low, load_model(diffusion[0]), device="cpu", want_variance=True, seed=0)
        panels.append((f"{diffusion[0]}\nσ = √variance", np.sqrt(sitk.GetArrayFromImage(sampled.variance))))
    panels.append(("full count (reference)", full))
    spheres = (labels >= 3) & (labels <= 8)  # the six spheres (Resources/Samples/README.md)
    z = int(np.argmax(spheres.sum(axis=(1, 2))))
    body = body_mask(full)
    top = float(np.percentile(full[body], 99.5))
    figure, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.6))
    for axis, (title, volume) in zip(axes, panels):
        if title.startswith("difference"):
            limit = float(np.percentile(np.abs(volume[body]), 99))
            axis.imshow(volume[z], cmap="RdBu_r", vmin=-limit, vmax=limit)
        elif "variance" in title:
            axis.imshow(volume[z], cmap="inferno", vmin=0, vmax=float(np.percentile(volume[body], 99)))
        else:
            axis.imshow(volume[z], cmap="hot", vmin=0, vmax=top)
            if "difference" not in title and "reference" not in title:
                title += f"\nNRMSE {nrmse(volume, full, body):.3f}"
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.tight_layout()
    output = REPOSITORY / "docs" / "images" / "sample_result.png"
    figure.savefig(output, dpi=110)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
