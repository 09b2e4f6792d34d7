"""The packages the module installs into Slicer's Python: the same versions as the core's, checked by version."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

MODULE = Path(__file__).resolve().parents[1] / "SPECTDenoise"
sys.path.insert(0, str(MODULE))

from SPECTDenoiseLogic import dependencies  # noqa: E402

SHIPPED_WITH_SLICER = {"simpleitk", "numpy"}


def test_requirements_are_the_cores_dependencies_except_what_slicer_ships():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((MODULE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    core = {Requirement(line).name.lower(): str(Requirement(line)) for line in pyproject["project"]["dependencies"]}
    module = {r.name.lower(): str(r) for r in dependencies.read_requirements(MODULE / "Resources" / "requirements.txt")}
    assert module == {name: line for name, line in core.items() if name not in SHIPPED_WITH_SLICER}


def test_an_installed_package_of_a_too_old_version_is_unmet():
    installed = Requirement("pytest>=1")
    too_old = Requirement("pytest>=999")
    absent = Requirement("no-such-distribution-spectdenoise>=1")
    elsewhere = Requirement('pytest>=999; sys_platform == "no-such-platform"')
    assert dependencies.unmet([installed, too_old, absent, elsewhere]) == [too_old, absent]


def test_torch_is_taken_out_for_the_pytorch_extension():
    torch, others = dependencies.split_torch([Requirement("monai>=1.5"), Requirement("torch>=2.8")])
    assert str(torch) == "torch>=2.8" and [str(r) for r in others] == ["monai>=1.5"]
    assert dependencies.split_torch([Requirement("scipy")])[0] is None


def test_comments_and_pip_options_are_skipped(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# a comment\n\n-r other.txt\nscipy>=1.10\n  einops>=0.7  \n", encoding="utf-8")
    assert [str(r) for r in dependencies.read_requirements(path)] == ["scipy>=1.10", "einops>=0.7"]
