"""A disk cache of simulated benchmark scans, so that re-running models does not re-run the simulator.

Simulating a case — projecting, drawing counts, thinning and reconstructing every count level of every noise draw
— is most of a benchmark case's cost (an OSEM 30 × 8 case: about 15 CPU minutes per draw), while a changed model
needs only a few seconds per volume. The simulator is deterministic per (case, draw), so the noise-free
reconstruction and each draw's images are saved once and read back by any later run of the same case.

A cache entry is named by the case and a key over everything that decides its images: the case's record (family,
seed, collimator, voxel size, protocol, simulator, background), the count fractions, and a fingerprint of the
simulator — the sha256 of the source files that make phantoms and scans (:data:`SIMULATOR_SOURCES`) and the
numpy, scipy and torch versions. Any change there gives a new key, so a stale entry is never read (delete the
folder to reclaim its space). Files are ``.npz`` arrays read without pickle, written atomically.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import scipy
import torch

from SPECTDenoiseLib.io import atomic_output

CACHE_FOLDER = ".draws"
"""Sub-folder of the results folder that holds the cache (git-ignored)."""
REPOSITORY = Path(__file__).resolve().parents[1]
SIMULATOR_SOURCES = ("SPECTDenoiseLib/simulate.py", "SPECTDenoiseLib/simulation", "SPECTDenoiseLib/phantoms",
                     "SPECTDenoiseLib/dataset.py", "benchmarks/cases.py", "benchmarks/independent_simulator.py")
"""Files and folders (their ``.py`` files) whose code decides a simulated scan."""


def simulator_fingerprint(root: Path = REPOSITORY) -> str:
    """sha256 (hex) of the simulator's sources under ``root`` and the numeric libraries' versions."""
    digest = hashlib.sha256(f"numpy {np.__version__} scipy {scipy.__version__} torch {torch.__version__}".encode())
    for source in SIMULATOR_SOURCES:
        path = root / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(root)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


class DrawCache:
    """The cached images of one case at ``fractions``, in ``folder`` (``<results>/.draws``)."""

    def __init__(self, folder: Path, case_record: dict, fractions: tuple[float, ...],
                 fingerprint: str | None = None) -> None:
        key = json.dumps({"case": case_record, "fractions": [float(f) for f in fractions],
                          "simulator": fingerprint or simulator_fingerprint()}, sort_keys=True)
        self.folder = Path(folder) / f"{case_record['name']}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.npz"

    def load_noise_free(self) -> tuple[np.ndarray, dict] | None:
        """(noise-free reconstruction, simulation settings) if cached, else None."""
        path = self._path("noise_free")
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as stored:
            return stored["image"], json.loads(str(stored["settings"]))

    def save_noise_free(self, image: np.ndarray, settings: dict) -> None:
        """Cache the noise-free reconstruction and the simulation settings."""
        self._save("noise_free", {"image": image, "settings": np.array(json.dumps(settings))})

    def has_draw(self, index: int) -> bool:
        """Whether draw ``index`` is cached (without reading it)."""
        return self._path(f"draw-{index}").exists()

    def load_draw(self, index: int) -> dict[float, np.ndarray] | None:
        """Draw ``index`` as {fraction: image} (1.0 included) if cached, else None."""
        path = self._path(f"draw-{index}")
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as stored:
            return {float(name): stored[name] for name in stored.files}

    def save_draw(self, index: int, images: dict[float, np.ndarray]) -> None:
        """Cache draw ``index`` ({fraction: image})."""
        self._save(f"draw-{index}", {repr(float(fraction)): image for fraction, image in images.items()})

    def _save(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_output(self._path(name)) as temporary, open(temporary, "wb") as stream:
            np.savez(stream, **arrays)
