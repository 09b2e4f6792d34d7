"""Montage of every phantom family at full count and at 50 %, 25 % and 10 % counts (central slices).

Writes docs/images/phantom_montage.png. Run: ``python benchmarks/phantom_montage.py`` (about a minute).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from SPECTDenoiseLib.phantoms import FAMILIES, make_phantom
from SPECTDenoiseLib.simulate import simulate_pair

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "phantom_montage.png"
FRACTIONS = (0.5, 0.25, 0.1)
SEED = 990101


def central_view(volume: np.ndarray, family: str, labels: np.ndarray) -> np.ndarray:
    """A representative slice [rows, cols]: coronal for the trunk, axial through the hottest structure otherwise."""
    if family == "torso":
        return volume[::-1, :, :][:, int(np.argwhere(labels == 6)[:, 1].mean()), :]
    z = int(np.argmax(volume.reshape(volume.shape[0], -1).sum(axis=1))) if family != "iec" else \
        int(np.argwhere(labels == 8)[:, 0].mean())
    if family in ("brain", "cardiac"):
        z = int(np.argwhere(labels >= 5 if family == "brain" else labels == 11)[:, 0].mean())
    return volume[z]


def main() -> None:
    torch.set_num_threads(1)
    columns = ["activity (truth)", "full count", *[f"{int(f * 100)} % counts" for f in FRACTIONS]]
    figure, axes = plt.subplots(len(FAMILIES), len(columns), figsize=(2.6 * len(columns), 2.6 * len(FAMILIES)))
    for row, family in enumerate(FAMILIES):
        phantom = make_phantom(family, seed=SEED)
        result = simulate_pair(phantom.activity, phantom.spacing_mm, phantom.mu_map, fractions=FRACTIONS,
                               total_counts=phantom.total_counts, collimator=phantom.collimator, iterations=4,
                               subsets=8, angles=120, scatter=True, seed=SEED)
        images = [phantom.activity, result.full, *[result.low[f] for f in FRACTIONS]]
        top = float(np.percentile(central_view(result.full, family, phantom.labels), 99.9))
        for col, volume in enumerate(images):
            axis = axes[row, col]
            axis.imshow(central_view(volume, family, phantom.labels), cmap="hot", vmin=0, vmax=top,
                        interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(columns[col], fontsize=10)
            if col == 0:
                axis.set_ylabel(f"{family}\n{phantom.collimator}, {phantom.total_counts / 1e6:g} M", fontsize=9)
    figure.tight_layout()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUTPUT, dpi=80, facecolor="black" if False else "white")
    print(OUTPUT)


if __name__ == "__main__":
    main()
