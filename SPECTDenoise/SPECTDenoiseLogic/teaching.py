"""Teaching: low-count versions of a full-count volume, laid out side by side so a class sees noise grow.

Each low-count volume is made by a background process, ``python -m SPECTDenoiseLib simulate`` (projection,
binomial thinning, reconstruction — never image-domain noise), run by the module's
:class:`~SPECTDenoiseLogic.runner.BackgroundRunner`, so Slicer never imports torch and stays responsive. Each one
may then be denoised with the same runner.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import slicer

from SPECTDenoiseLib.errors import InputError

from .outputs import finish_output
from .runner import Step
from .volumes import read_node, write_node

LAYOUT_ID = 5301  # a custom layout number outside Slicer's built-in ones
VIEW_PREFIX = "Teaching"


def parse_fractions(text: str) -> list[float]:
    """Parse "0.5, 0.25, 10%" into distinct count fractions in (0, 1]; raise InputError naming a bad entry."""
    fractions = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part[:-1]) / 100.0 if part.endswith("%") else float(part)
        except ValueError:
            raise InputError(f"'{part}' is not a count fraction; write e.g. 0.5, 0.25, 10%.") from None
        if not 0.0 < value <= 1.0:
            raise InputError(f"Count fraction {part} is outside (0, 1]; write e.g. 0.5, 0.25, 10%.")
        if value not in fractions:
            fractions.append(value)
    if not fractions:
        raise InputError("Give at least one count fraction, e.g. 0.5, 0.25, 0.1.")
    return fractions


def series_label(fraction: float) -> str:
    """``"50% counts"`` for fraction 0.5: the name suffix of a low-count volume."""
    return f"{100 * fraction:g}% counts"


@dataclasses.dataclass
class LowCountRequest:
    """Low-count versions of ``full_node`` at ``fractions`` (a :class:`~SPECTDenoiseLogic.runner.Job`).

    Fraction ``i`` is simulated with seed ``seed + i``; ``ct_node`` (CT in HU) gives the attenuation map.
    """

    full_node: slicer.vtkMRMLScalarVolumeNode
    fractions: list[float]
    ct_node: slicer.vtkMRMLScalarVolumeNode | None = None
    seed: int = 0

    def write_inputs(self, folder: Path) -> list[Step]:
        """Write the full-count volume (and CT) into ``folder``; one ``simulate`` step per fraction."""
        full = write_node(self.full_node, folder / "full.nrrd")
        ct = ["--ct", str(write_node(self.ct_node, folder / "ct.nrrd"))] if self.ct_node is not None else []
        return [
            Step(["-m", "SPECTDenoiseLib", "simulate", str(full), "-o", str(self._path(folder, index)),
                  "--fraction", repr(fraction), "--seed", str(self.seed + index), *ct],
                 f"Simulating {series_label(fraction)} ({index + 1} of {len(self.fractions)})…")
            for index, fraction in enumerate(self.fractions)
        ]

    def import_outputs(self, scene: slicer.vtkMRMLScene, folder: Path) -> tuple[dict[str, slicer.vtkMRMLNode], str]:
        """Read the low-count volumes into new nodes ``"<input> 50% counts"``, …, in the order of the fractions.

        They carry the input's geometry, units, colour map and window/level and sit beside it in the subject
        hierarchy.
        """
        outputs = {}
        for index, fraction in enumerate(self.fractions):
            label = series_label(fraction)
            node = read_node(scene, self._path(folder, index), f"{self.full_node.GetName()} {label}")
            node.SetAndObserveTransformNodeID(self.full_node.GetTransformNodeID())
            finish_output(self.full_node, node, "denoised")  # displayed like the input, as a denoised volume is
            outputs[label] = node
        return outputs, ""

    @staticmethod
    def _path(folder: Path, index: int) -> Path:
        return folder / f"low{index + 1}.nrrd"


def view_names(count: int) -> list[str]:
    """Names of the slice views of the side-by-side layout."""
    return [f"{VIEW_PREFIX}{index + 1}" for index in range(count)]


def side_by_side_layout(count: int, orientation: str = "Axial") -> str:
    """Return the layout XML of ``count`` slice views in one row (``orientation``: Axial, Coronal or Sagittal)."""
    if count < 1:
        raise ValueError("a layout needs at least one view")
    items = "".join(
        f'<item><view class="vtkMRMLSliceNode" singletontag="{name}">'
        f'<property name="orientation" action="default">{orientation}</property>'
        f'<property name="viewlabel" action="default">{index + 1}</property>'
        f'<property name="viewcolor" action="default">#E0E0E0</property></view></item>'
        for index, name in enumerate(view_names(count))
    )
    return f'<layout type="horizontal">{items}</layout>'


def use_side_by_side_layout(layout_node: slicer.vtkMRMLLayoutNode, count: int) -> int:
    """Register the side-by-side layout for ``count`` views in ``layout_node``, switch to it, return its id."""
    layout_id = LAYOUT_ID + count
    description = side_by_side_layout(count)
    if layout_node.IsLayoutDescription(layout_id):
        layout_node.SetLayoutDescription(layout_id, description)
    else:
        layout_node.AddLayoutDescription(layout_id, description)
    layout_node.SetViewArrangement(layout_id)
    return layout_id


def show_side_by_side(scene: slicer.vtkMRMLScene, volumes: list[slicer.vtkMRMLScalarVolumeNode]) -> int:
    """Put ``volumes[i]`` in teaching view i (views created by the application for the layout); return the
    number of views set. Call after :func:`use_side_by_side_layout` once the views exist."""
    wanted = dict(zip(view_names(len(volumes)), volumes))
    shown = 0
    for composite in scene.GetNodesByClass("vtkMRMLSliceCompositeNode"):
        volume = wanted.get(composite.GetLayoutName())
        if volume is not None:
            composite.SetBackgroundVolumeID(volume.GetID())
            composite.SetForegroundVolumeID(None)
            shown += 1
    return shown
