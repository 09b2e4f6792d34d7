"""Shared fixtures: small real volumes with oblique geometry, written to tmp_path, the real CLI and an MRML scene.

Tiny model packages come from ``model_fixtures.py`` (plain functions, usable outside fixtures too)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPOSITORY = Path(__file__).resolve().parents[1]


def oblique_direction(angle_rad: float = 0.35, axis: tuple[float, float, float] = (0.3, 0.2, 0.9)) -> tuple:
    """A right-handed rotation (row-major 3×3) that is not axis-aligned."""
    return sitk.VersorTransform(axis, angle_rad).GetMatrix()


@pytest.fixture
def make_image() -> Callable[..., sitk.Image]:
    """Factory of small float32 volumes: anisotropic spacing, off-origin, oblique direction, random values.

    ``make_image(shape_zyx=(10, 12, 14), spacing_xyz=(2.0, 2.5, 3.0), integer=False, seed=0, oblique=True)``
    """

    def make(
        shape_zyx: tuple[int, int, int] = (10, 12, 14),
        spacing_xyz: tuple[float, float, float] = (2.0, 2.5, 3.0),
        integer: bool = False,
        seed: int = 0,
        oblique: bool = True,
        origin_xyz: tuple[float, float, float] = (-20.5, 10.25, 5.0),
    ) -> sitk.Image:
        rng = np.random.default_rng(seed)
        values = rng.integers(0, 1000, shape_zyx) if integer else rng.gamma(2.0, 50.0, shape_zyx)
        image = sitk.GetImageFromArray(values.astype(np.float32))
        image.SetSpacing(spacing_xyz)
        image.SetOrigin(origin_xyz)
        if oblique:
            image.SetDirection(oblique_direction())
        return image

    return make


@pytest.fixture
def write_image(tmp_path: Path) -> Callable[[sitk.Image, str], Path]:
    """Write an image into tmp_path under ``name`` (format from the suffix) and return its path."""

    def write(image: sitk.Image, name: str) -> Path:
        path = tmp_path / name
        sitk.WriteImage(image, str(path))
        return path

    return write


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python -m SPECTDenoiseLib ARGS...`` in a real subprocess; return the completed process (text)."""

    def run(*args: str | Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "SPECTDenoiseLib", *map(str, args)],
            capture_output=True, text=True, cwd=REPOSITORY, timeout=120, check=False,
        )

    return run


@pytest.fixture
def scene():
    """An empty MRML scene from the slicer-core wheel holding Slicer's default colour nodes (skip without it)."""
    slicer = pytest.importorskip("slicer")
    scene = slicer.vtkMRMLScene()
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(scene)
    yield scene
    colors.SetMRMLScene(None)
