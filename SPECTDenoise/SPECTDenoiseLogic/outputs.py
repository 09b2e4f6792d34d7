"""Output volume nodes of a denoising run: names, display (colour maps, window/level), units and placement.

* ``"<input> denoised"`` is shown like the input (same colour map and window/level),
* ``"<input> difference"`` (denoised − input) in a diverging blue–white–red map centred on zero,
* ``"<input> variance"`` (:data:`~SPECTDenoiseLib.models.config.VARIANCE_MEANING`) in a heat map of the variance
  itself (not its square root σ) from 0 to its :data:`VARIANCE_WINDOW_PERCENTILE` th percentile,
each tagged with the input's voxel units and placed under the input's study in the subject hierarchy. The
difference and the variance carry a colour legend in the slice views (the denoised volume, shown like the input,
has none).
"""

from __future__ import annotations

import numpy as np
import slicer

from .volumes import copy_voxel_units, squared_meaning

KINDS = ("denoised", "difference", "variance")
DIVERGING_COLOR_IDS = ("vtkMRMLColorTableNodeFileDivergingBlueRed.txt",)
DIVERGING_NAME = "SPECTDenoise diverging"
HEAT_COLOR_IDS = ("vtkMRMLPETProceduralColorNodePET-Heat", "vtkMRMLColorTableNodeRed")
VARIANCE_WINDOW_PERCENTILE = 99.5  # the variance's heat map ends here (a few extreme voxels would wash it out)
LEGEND_TITLES = {"difference": "Difference, denoised − input ({units})", "variance": "Variance ({units}, not σ)"}
LEGEND_LABEL_FORMAT = "%.3g"  # a variance may be far below 1: the legend's default '%.1f' would print 0.0


def output_name(input_name: str, kind: str) -> str:
    """Return the node name of output ``kind`` for an input volume called ``input_name``."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}; expected one of {KINDS}")
    return f"{input_name} {kind}"


def get_or_create_output(
    scene: slicer.vtkMRMLScene, input_node: slicer.vtkMRMLScalarVolumeNode, kind: str,
    node: slicer.vtkMRMLScalarVolumeNode | None = None,
) -> slicer.vtkMRMLScalarVolumeNode:
    """Return ``node`` or, when it is None or has left ``scene`` (deleted while the run went on), a new scalar volume
    node named after the input; either under the input's parent transform."""
    if node is None or node.GetScene() is not scene:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", output_name(input_node.GetName(), kind))
    node.SetAndObserveTransformNodeID(input_node.GetTransformNodeID())
    return node


def finish_output(
    input_node: slicer.vtkMRMLScalarVolumeNode, output: slicer.vtkMRMLScalarVolumeNode, kind: str
) -> None:
    """After ``output`` holds voxels: set its display for ``kind``, tag units, place it in the input's study."""
    copy_voxel_units(input_node, output, squared=kind == "variance")
    if output.GetDisplayNode() is None:
        output.CreateDefaultDisplayNodes()
    display = output.GetDisplayNode()
    values = slicer.util.arrayFromVolume(output)
    if kind == "denoised":
        source = input_node.GetDisplayNode()
        if source is not None:
            display.SetAndObserveColorNodeID(source.GetColorNodeID())
            display.SetAutoWindowLevel(False)
            display.SetWindowLevel(source.GetWindow(), source.GetLevel())
    elif kind == "difference":
        display.SetAndObserveColorNodeID(diverging_color_node(output.GetScene()).GetID())
        limit = float(np.max(np.abs(values))) if values.size else 0.0
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(2.0 * max(limit, 1e-6), 0.0)
    else:
        display.SetAndObserveColorNodeID(heat_color_node(output.GetScene()).GetID())
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0.0, max(float(np.percentile(values, VARIANCE_WINDOW_PERCENTILE)), 1e-12))
    show_color_legend(output, legend_title(output, kind) if kind in LEGEND_TITLES else None)
    place_beside(input_node, output)


def legend_title(output: slicer.vtkMRMLScalarVolumeNode, kind: str) -> str:
    """Return the colour legend's title for ``kind``: what it shows, in the units ``output`` is tagged with."""
    units = output.GetVoxelValueUnits()  # finish_output tagged it: the input's units, squared for the variance
    if units is not None:
        return LEGEND_TITLES[kind].format(units=units.GetCodeMeaning())
    return LEGEND_TITLES[kind].format(units=squared_meaning("image units") if kind == "variance" else "image units")


def show_color_legend(output: slicer.vtkMRMLScalarVolumeNode, title: str | None) -> None:
    """Show a colour legend titled ``title`` for ``output``'s colour map and window in the slice views (None:
    remove it).

    One legend per output: a later run on the same node retitles the legend it made before. The legend draws the
    colour map and range of its primary display node, for a scalar volume level ± window / 2, so it follows the
    display's window (vtkMRMLColorLegendDisplayableManager.cxx, UpdateActor).
    """
    display = output.GetDisplayNode()
    legend = color_legend(display)
    if title is None:
        if legend is not None:
            output.GetScene().RemoveNode(legend)
        return
    if legend is None:
        # AddNode, not AddNewNodeByClass: the class is registered by the Colors module's logic, which a bare
        # slicer-core scene lacks (vtkSlicerColorLogic.cxx, RegisterNodes).
        legend = slicer.vtkMRMLColorLegendDisplayNode()
        legend.SetName(f"{output.GetName()} color legend")
        output.GetScene().AddNode(legend)
        output.AddAndObserveDisplayNodeID(legend.GetID())
        legend.SetAndObservePrimaryDisplayNode(display)  # vtkMRMLColorLegendDisplayNode.h: colours, range from it
    was_modifying = legend.StartModify()
    legend.SetTitleText(title)
    legend.SetLabelFormat(LEGEND_LABEL_FORMAT)
    legend.SetVisibility(True)
    legend.SetVisibility2D(True)
    # In 3D a volume's legend shows wherever a slice showing the volume is
    # (vtkMRMLColorLegendDisplayableManager.cxx): keep it to the slice views, where the map is read.
    legend.SetVisibility3D(False)
    legend.EndModify(was_modifying)


def color_legend(display: slicer.vtkMRMLDisplayNode) -> slicer.vtkMRMLColorLegendDisplayNode | None:
    """Return the colour legend drawn for ``display`` (one of its volume's display nodes), or None."""
    volume = display.GetDisplayableNode()
    nodes = (volume.GetNthDisplayNode(index) for index in range(volume.GetNumberOfDisplayNodes()))
    return next((node for node in nodes if node is not None and node.IsA("vtkMRMLColorLegendDisplayNode")
                 and node.GetPrimaryDisplayNode() is display), None)


def diverging_color_node(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorNode:
    """Return Slicer's blue–white–red diverging colour table, or create an equivalent one in ``scene``."""
    for node_id in DIVERGING_COLOR_IDS:
        if scene.GetNodeByID(node_id) is not None:
            return scene.GetNodeByID(node_id)
    existing = scene.GetFirstNodeByName(DIVERGING_NAME)
    if existing is not None:
        return existing
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", DIVERGING_NAME)
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    for index in range(256):
        t = index / 255.0 * 2.0 - 1.0  # −1 (blue) … 0 (white) … +1 (red)
        red, blue = (1.0, 1.0 - t) if t >= 0 else (1.0 + t, 1.0)
        table.SetColor(index, f"{t:+.3f}", red, 1.0 - abs(t), blue, 1.0)
    table.SetHideFromEditors(False)
    return table


def heat_color_node(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorNode:
    """Return the PET heat colour map (Slicer's default colour nodes must be in ``scene``)."""
    for node_id in HEAT_COLOR_IDS:
        if scene.GetNodeByID(node_id) is not None:
            return scene.GetNodeByID(node_id)
    raise RuntimeError("the scene has no heat colour map; add the default colour nodes (vtkMRMLColorLogic)")


def place_beside(input_node: slicer.vtkMRMLNode, output: slicer.vtkMRMLNode) -> None:
    """Put ``output`` under the same subject hierarchy parent (the input's study) as ``input_node``."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(input_node.GetScene())
    if hierarchy is None:
        return
    input_item = hierarchy.GetItemByDataNode(input_node)
    if not input_item:
        return
    parent = hierarchy.GetItemParent(input_item)
    output_item = hierarchy.GetItemByDataNode(output)
    if output_item:
        hierarchy.SetItemParent(output_item, parent)
    else:  # without the application's subject hierarchy plugins, items are not created automatically
        hierarchy.CreateItem(parent, output)
