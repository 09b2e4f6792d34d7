"""Teaching: low-count versions of a full-count volume, laid out side by side so a class sees noise grow.

The low-count volumes come from :func:`SPECTDenoiseLib.simulate.simulate_low_count` (projection, binomial
thinning, reconstruction), never from image-domain noise. Each one may then be denoised with the runner.
"""

from __future__ import annotations

import slicer

from SPECTDenoiseLib.errors import InputError

from .outputs import place_beside
from .volumes import copy_voxel_units, image_to_node, node_to_image

LAYOUT_ID = 5301  # a custom layout number outside Slicer's built-in ones
VIEW_PREFIX = "Teaching"


def parse_fractions(text: str) -> list[float]:
    """Parse "0.5, 0.25, 10%" into count fractions in (0, 1]; raise InputError naming a bad entry."""
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
        fractions.append(value)
    if not fractions:
        raise InputError("Give at least one count fraction, e.g. 0.5, 0.25, 0.1.")
    return fractions


def low_count_series(
    full_node: slicer.vtkMRMLScalarVolumeNode, fractions: list[float],
    ct_node: slicer.vtkMRMLScalarVolumeNode | None = None, seed: int = 0,
) -> list[slicer.vtkMRMLScalarVolumeNode]:
    """Simulate one low-count volume per fraction; return new nodes named "<input> <percent>% counts".

    The nodes carry the input's geometry, units, colour map and window/level and sit beside it in the subject
    hierarchy. The fractions are simulated with seeds ``seed``, ``seed + 1``, ...
    """
    from SPECTDenoiseLib.simulate import simulate_low_count

    scene = full_node.GetScene()
    image = node_to_image(full_node)
    ct = node_to_image(ct_node) if ct_node is not None else None
    nodes = []
    for index, fraction in enumerate(fractions):
        low, _ = simulate_low_count(image, fraction, ct=ct, seed=seed + index)
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{full_node.GetName()} {100 * fraction:g}% counts")
        image_to_node(low, node)
        node.SetAndObserveTransformNodeID(full_node.GetTransformNodeID())
        copy_voxel_units(full_node, node)
        node.CreateDefaultDisplayNodes()
        source = full_node.GetDisplayNode()
        if source is not None:
            node.GetDisplayNode().SetAndObserveColorNodeID(source.GetColorNodeID())
            node.GetDisplayNode().SetAutoWindowLevel(False)
            node.GetDisplayNode().SetWindowLevel(source.GetWindow(), source.GetLevel())
        place_beside(full_node, node)
        nodes.append(node)
    return nodes


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
