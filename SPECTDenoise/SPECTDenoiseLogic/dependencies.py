"""The Python packages the background commands need, and which of them Slicer's Python lacks (version-checked).

Used where Slicer has no ``slicer.packaging.pip_ensure`` (before 5.12) and to pick torch out of the list, since
torch is installed through the PyTorch extension rather than pip.
"""

from __future__ import annotations

import importlib.metadata
import os

from packaging.requirements import Requirement


def read_requirements(path: str | os.PathLike) -> list[Requirement]:
    """The requirements of a requirements file (comments, blank lines and pip options skipped)."""
    with open(path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle]
    return [Requirement(line) for line in lines if line and not line.startswith(("#", "-"))]


def is_met(requirement: Requirement) -> bool:
    """True when the requirement's distribution is installed at a version it accepts (or its marker does not
    apply here)."""
    if requirement.marker is not None and not requirement.marker.evaluate():
        return True
    try:
        installed = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return requirement.specifier.contains(installed, prereleases=True)


def unmet(requirements: list[Requirement]) -> list[Requirement]:
    """The requirements that are not met, in order."""
    return [requirement for requirement in requirements if not is_met(requirement)]


def split_torch(requirements: list[Requirement]) -> tuple[Requirement | None, list[Requirement]]:
    """(the torch requirement or None, the others)."""
    torch = next((r for r in requirements if r.name.lower() == "torch"), None)
    return torch, [r for r in requirements if r is not torch]

