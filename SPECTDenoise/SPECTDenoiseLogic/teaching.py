"""Teaching: low-count versions of a full-count volume, laid out side by side so a class sees noise grow.

Each low-count volume is made by a background process, ``python -m SPECTDenoiseLib --events jsonl simulate``
(projection, binomial thinning, reconstruction — never image-domain noise); with *also denoise each*, the same job
then runs the worker on every low-count version. The whole series is one job of the module's
:class:`~SPECTDenoiseLogic.runner.BackgroundRunner`: it is imported at the end, or not at all when a step fails,
is cancelled or the scene closes. Slicer never imports torch and stays responsive.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import slicer

from SPECTDenoiseLib.errors import InputError

from .denoising import ModelOptions, worker_step
from .outputs import finish_output, output_name
from .runner import Step
from .volumes import read_node, require_same_frame, write_node

LAYOUT_ID = 5301  # custom layout numbers start here, outside Slicer's built-in ones
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
    """Low-count versions of ``full_node`` at ``fractions``, optionally denoised (a
    :class:`~SPECTDenoiseLogic.runner.Job`).

    Fraction ``i`` is simulated with seed ``seed + i``; ``ct_node`` (CT in HU) gives the attenuation map. With
    ``denoise`` (the model options), each low-count version is then denoised by the worker in the same job.
    """

    full_node: slicer.vtkMRMLScalarVolumeNode
    fractions: list[float]
    ct_node: slicer.vtkMRMLScalarVolumeNode | None = None
    seed: int = 0
    denoise: ModelOptions | None = None

    def __post_init__(self) -> None:
        """Raise InputError for a CT placed by another transform than the full-count volume."""
        require_same_frame(self.full_node, self.ct_node)

    def write_inputs(self, folder: Path) -> list[Step]:
        """Write the full-count volume (and CT) into ``folder``; one ``simulate`` step per fraction, then (with
        ``denoise``) one worker step per fraction."""
        full = write_node(self.full_node, folder / "full.nrrd")
        ct_path = write_node(self.ct_node, folder / "ct.nrrd") if self.ct_node is not None else None
        ct = ["--ct", str(ct_path)] if ct_path is not None else []
        count = len(self.fractions)
        steps = [
            Step(["-m", "SPECTDenoiseLib", "--events", "jsonl", "simulate", str(full), "-o",
                  str(self._path(folder, index)), "--fraction", repr(fraction), "--seed", str(self.seed + index),
                  *ct],
                 f"Simulating {series_label(fraction)} ({index + 1} of {count})…")
            for index, fraction in enumerate(self.fractions)
        ]
        if self.denoise is not None:
            steps += [
                worker_step(folder / f"request{index + 1}.json", self.denoise, self._path(folder, index),
                            self._path(folder, index, "denoised"), ct=ct_path,
                            message=f"Denoising {series_label(fraction)} ({index + 1} of {count})…")
                for index, fraction in enumerate(self.fractions)
            ]
        return steps

    def import_outputs(self, scene: slicer.vtkMRMLScene, folder: Path) -> tuple[dict[str, slicer.vtkMRMLNode], str]:
        """Read the low-count volumes into new nodes ``"<input> 50% counts"``, …, in the order of the fractions,
        then (with ``denoise``) their denoised versions ``"<input> 50% counts denoised"``, ….

        All carry the input's geometry, units, colour map and window/level and sit beside it in the subject
        hierarchy.
        """
        outputs = {}
        for index, fraction in enumerate(self.fractions):
            label = series_label(fraction)
            node = read_node(scene, self._path(folder, index), f"{self.full_node.GetName()} {label}")
            node.SetAndObserveTransformNodeID(self.full_node.GetTransformNodeID())
            finish_output(self.full_node, node, "denoised")  # displayed like the input, as a denoised volume is
            outputs[label] = node
        if self.denoise is not None:
            for index, fraction in enumerate(self.fractions):
                low = outputs[series_label(fraction)]
                node = read_node(scene, self._path(folder, index, "denoised"), output_name(low.GetName(), "denoised"))
                node.SetAndObserveTransformNodeID(self.full_node.GetTransformNodeID())
                finish_output(low, node, "denoised")
                outputs[output_name(series_label(fraction), "denoised")] = node
        return outputs, ""

    def view_rows(self, outputs: dict[str, slicer.vtkMRMLNode]) -> list[list[slicer.vtkMRMLNode]]:
        """The volumes to show, one list per row: the full-count volume, then the low-count versions; with
        ``denoise`` a second row of the full-count volume and the denoised versions."""
        rows = [[self.full_node] + [outputs[series_label(f)] for f in self.fractions]]
        if self.denoise is not None:
            rows.append([self.full_node] + [outputs[output_name(series_label(f), "denoised")] for f in self.fractions])
        return rows

    @staticmethod
    def _path(folder: Path, index: int, kind: str = "") -> Path:
        return folder / f"low{index + 1}{'-' + kind if kind else ''}.nrrd"


def view_names(count: int) -> list[str]:
    """Names of the slice views of the side-by-side layout."""
    return [f"{VIEW_PREFIX}{index + 1}" for index in range(count)]


def side_by_side_layout(rows: int, columns: int, orientation: str = "Axial") -> str:
    """Return the layout XML of ``rows`` × ``columns`` slice views (named by :func:`view_names`, row by row;
    ``orientation``: Axial, Coronal or Sagittal)."""
    if rows < 1 or columns < 1:
        raise ValueError("a layout needs at least one view")
    names = view_names(rows * columns)

    def view(index: int) -> str:
        return (f'<item><view class="vtkMRMLSliceNode" singletontag="{names[index]}">'
                f'<property name="orientation" action="default">{orientation}</property>'
                f'<property name="viewlabel" action="default">{index + 1}</property>'
                f'<property name="viewcolor" action="default">#E0E0E0</property></view></item>')

    row_layouts = "".join(
        '<item><layout type="horizontal">' + "".join(view(r * columns + c) for c in range(columns))
        + "</layout></item>" for r in range(rows))
    return f'<layout type="vertical">{row_layouts}</layout>'


def use_side_by_side_layout(layout_node: slicer.vtkMRMLLayoutNode, rows: int, columns: int) -> int:
    """Register the ``rows`` × ``columns`` teaching layout in ``layout_node``, switch to it, return its id."""
    layout_id = LAYOUT_ID + 100 * rows + columns
    description = side_by_side_layout(rows, columns)
    if layout_node.IsLayoutDescription(layout_id):
        layout_node.SetLayoutDescription(layout_id, description)
    else:
        layout_node.AddLayoutDescription(layout_id, description)
    layout_node.SetViewArrangement(layout_id)
    return layout_id


def show_side_by_side(scene: slicer.vtkMRMLScene, volumes: list[slicer.vtkMRMLScalarVolumeNode]) -> int:
    """Put ``volumes[i]`` in teaching view i (views created by the application for the layout, row by row); return
    the number of views set. Call after :func:`use_side_by_side_layout` once the views exist."""
    wanted = dict(zip(view_names(len(volumes)), volumes))
    shown = 0
    for composite in scene.GetNodesByClass("vtkMRMLSliceCompositeNode"):
        volume = wanted.get(composite.GetLayoutName())
        if volume is not None:
            composite.SetBackgroundVolumeID(volume.GetID())
            composite.SetForegroundVolumeID(None)
            shown += 1
    return shown


def show_in_standard_views(scene: slicer.vtkMRMLScene, volume: slicer.vtkMRMLScalarVolumeNode) -> int:
    """Put ``volume`` in the background of every slice view except the teaching views (which keep their series, so
    a finished denoising does not overwrite a teaching layout); return the number of views set."""
    shown = 0
    for composite in scene.GetNodesByClass("vtkMRMLSliceCompositeNode"):
        if not (composite.GetLayoutName() or "").startswith(VIEW_PREFIX):
            composite.SetBackgroundVolumeID(volume.GetID())
            shown += 1
    return shown
